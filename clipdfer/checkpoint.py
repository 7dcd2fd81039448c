"""Training checkpoints: ``config.json`` + ``model.safetensors`` (loadable with ``local-dir:``) and ``state.pt``
(optimizer, schedule position, RNG and EMA state), replaced as a whole.

A checkpoint is written to ``DIR.tmp``, marked complete, and moved into place by renames (the previous one kept as
``DIR.old`` until then), so a crash leaves a complete checkpoint for :func:`latest_checkpoint`.
"""

import logging
import os
import shutil
from typing import Any, Dict, Optional

import torch

__all__ = ["save_checkpoint", "load_training_state", "latest_checkpoint", "CheckpointWriteError", "STATE_NAME"]

_logger = logging.getLogger(__name__)
STATE_NAME = "state.pt"
_COMPLETE = "complete"  # written last into DIR.tmp: every file before it is whole
_FILES = ("config.json", "model.safetensors", STATE_NAME)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, permissions); the one before it is left as it was."""


def save_checkpoint(model: torch.nn.Module, directory: str, state: Dict[str, Any],
                    optimizer: Optional[torch.optim.Optimizer] = None, ema: Optional[torch.nn.Module] = None,
                    **cfg_updates) -> str:
    """Write ``model`` (``save_pretrained``) and the training state into ``directory``, replacing it as a whole.

    Args:
        model: a clipdfer model; its weights are what the directory loads as.
        directory: the checkpoint directory.
        state: JSON-like training state (step, epoch, best score ...).
        optimizer: its state is saved for resuming.
        ema: an EMA copy of the model whose weights are saved for resuming.
        **cfg_updates: pretrained-cfg fields to record (``finetuned``, ``notes`` ...).

    Raises:
        CheckpointWriteError: a file could not be written (``DIR.tmp`` is removed; ``DIR`` is untouched).
    """
    directory = directory.rstrip("/")
    tmp, old = directory + ".tmp", directory + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    extra: Dict[str, Any] = {"rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        extra["rng_cuda"] = torch.cuda.get_rng_state()
    if optimizer is not None:
        extra["optimizer"] = optimizer.state_dict()
    if ema is not None:
        extra["ema"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
    try:
        model.save_pretrained(tmp, **cfg_updates)
        torch.save({**state, **extra}, os.path.join(tmp, STATE_NAME))
        for name in _FILES:  # on disk before the marker says so
            with open(os.path.join(tmp, name), "rb+") as f:
                os.fsync(f.fileno())
        with open(os.path.join(tmp, _COMPLETE), "w") as f:
            os.fsync(f.fileno())
    except Exception as e:  # a full disk (safetensors' own error type too), permissions: DIR stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        before = (f"the checkpoint before it in {directory} is intact and --resume continues from it"
                  if _complete(directory, marked=False) else "there is no earlier checkpoint")
        raise CheckpointWriteError(f"cannot write the checkpoint {directory} ({type(e).__name__}: {reason}); {before}. "
                                   f"Free space (or fix the folder's permissions) and run again") from e
    if os.path.isdir(directory):  # the current checkpoint becomes the fallback (an older fallback can go)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)  # a crash before this leaves DIR.tmp (complete) and DIR.old
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _complete(path: str, marked: bool) -> bool:
    return (all(os.path.isfile(os.path.join(path, name)) for name in _FILES)
            and (not marked or os.path.isfile(os.path.join(path, _COMPLETE))))


def latest_checkpoint(directory: str) -> Optional[str]:
    """The newest complete checkpoint for ``directory``: itself, else a complete ``directory.tmp``, else
    ``directory.old``; None when there is none. A fallback is logged."""
    directory = directory.rstrip("/")
    for path, marked in ((directory, False), (directory + ".tmp", True), (directory + ".old", False)):
        if _complete(path, marked):
            if path != directory:
                _logger.warning("%s is missing or incomplete (a crash while it was saved): using %s", directory, path)
            return path
    return None


def load_training_state(directory: str) -> Dict[str, Any]:
    """The state saved by :func:`save_checkpoint` (``weights_only=True``); restores the RNG state it recorded."""
    path = os.path.join(directory, STATE_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist: {directory!r} is not a checkpoint written by clipdfer train "
                                f"(it needs {STATE_NAME} beside config.json and model.safetensors)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    torch.set_rng_state(state.pop("rng_cpu"))
    rng_cuda = state.pop("rng_cuda", None)
    if rng_cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng_cuda)
    return state
