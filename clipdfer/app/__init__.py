"""A local web demo of prediction (``clipdfer demo``, ``python -m clipdfer.app``): drop videos into a page and see every
face's timeline. Needs ``pip install 'clipdfer[demo]'`` (Gradio); docs/demo.md is the user's guide.

    from clipdfer.app import Demo
    Demo("clip_zeroshot_vitb32").launch()            # http://127.0.0.1:7860, until Ctrl-C

:mod:`clipdfer.app.analysis` (checks, runs, outputs; no Gradio) and :mod:`clipdfer.app.page` (the page) are imported
when first used, so that ``clipdfer --help`` loads neither Gradio nor torch.
"""

import importlib
from typing import Any, List

_EXPORTS = {
    **dict.fromkeys(("UploadLimits", "UploadError", "check_upload", "check_uploads", "analyse_video", "window_table",
                     "SessionFiles"), "analysis"),
    "Demo": "page",
    **dict.fromkeys(("add_arguments", "run", "main"), "serve"),
}
__all__ = sorted(_EXPORTS)
_SUBMODULES = ("analysis", "page", "serve")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
