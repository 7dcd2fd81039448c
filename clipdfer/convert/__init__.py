"""Converting checkpoints of other code bases, executing nothing in a file: ``clipdfer.convert.dferclip`` (imported when
first used, so ``import clipdfer.convert`` loads no model family).
"""

import importlib
from typing import Any

from .._safe_load import InertObject, UnsafeCheckpointError, load_inert

__all__ = ["InertObject", "UnsafeCheckpointError", "load_inert", "dferclip"]
_SUBMODULES = ("dferclip",)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
