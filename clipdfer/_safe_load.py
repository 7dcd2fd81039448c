"""Reading torch checkpoints with objects of unknown classes (DFER-CLIP's ``RecorderMeter``) without running code:
torch's restricted unpickler, each unknown global an inert placeholder; a file that names system callables is refused
before anything is unpickled.
"""

import logging
from typing import Any, List, Tuple

import torch

__all__ = ["UnsafeCheckpointError", "InertObject", "load_inert", "unknown_globals"]

_logger = logging.getLogger(__name__)

# Modules whose globals a model checkpoint never needs and a hostile one uses to run code.
_DANGEROUS_MODULES = {
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "shutil", "socket", "importlib", "runpy",
    "code", "codeop", "pty", "ctypes", "pickle", "_pickle", "marshal", "types", "webbrowser", "multiprocessing",
    "signal", "platform", "asyncio", "threading", "tempfile", "pathlib", "io", "operator", "functools", "inspect",
    "pdb", "timeit", "cProfile", "profile", "commands", "popen2", "posixpath", "ntpath", "urllib", "http", "ftplib",
    "smtplib", "telnetlib", "zipimport", "pkgutil", "site",
}


class UnsafeCheckpointError(ValueError):
    """The file references callables that could run code; nothing was loaded and nothing was run."""


class InertObject:
    """Stands in for an object of a class that is not loaded: keeps its constructor arguments and state as data."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<inert {type(self).__module__}.{type(self).__qualname__}>"


def unknown_globals(path: str) -> List[str]:
    """The globals a torch checkpoint names that torch's restricted unpickler does not allow."""
    return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))


def _is_dangerous(name: str) -> bool:
    parts = name.split(".")
    return parts[0] in _DANGEROUS_MODULES or parts[-1] in {"system", "popen", "exec", "eval", "spawn", "__import__"}


def _placeholder(name: str) -> type:
    module, _, qualname = name.rpartition(".")
    return type(qualname, (InertObject,), {"__module__": module, "__qualname__": qualname})


def load_inert(path: str) -> Tuple[Any, List[str]]:
    """``torch.load`` with ``weights_only=True``, objects of unknown classes replaced by :class:`InertObject`.

    Returns:
        ``(obj, replaced)``: the loaded object and the names of the globals that were replaced.

    Raises:
        UnsafeCheckpointError: the file names system callables; it is not unpickled.
    """
    names = unknown_globals(path)
    dangerous = [n for n in names if _is_dangerous(n)]
    if dangerous:
        raise UnsafeCheckpointError(
            f"{path!r} references {', '.join(dangerous)}, which a model checkpoint has no reason to contain and "
            f"which would run code if unpickled normally. clipdfer refused to load it: nothing was loaded and nothing "
            f"was run. Get the checkpoint from its official source")
    placeholders = [_placeholder(n) for n in names]
    with torch.serialization.safe_globals(placeholders):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if names:
        _logger.info("%s: kept objects of %s as inert data (not executed)", path, ", ".join(names))
    return obj, names
