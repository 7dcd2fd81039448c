"""Training checkpoints: weights in the Hub format plus the training state, each replaced as a whole.

A checkpoint directory holds ``config.json`` + ``model.safetensors`` (what ``create_model("local-dir:...")`` loads)
and ``state.pt`` (optimizer, schedule position, RNG state, the EMA weights when there are any), read back with
``torch.load(weights_only=True)``. It is written beside its final place and moved there in one rename, so a crash
at any moment leaves either the old checkpoint or the new one, never a mix.
"""

import os
import shutil
from typing import Any, Dict, Optional

import torch

__all__ = ["save_checkpoint", "load_training_state", "STATE_NAME"]

STATE_NAME = "state.pt"


def save_checkpoint(model: torch.nn.Module, directory: str, state: Dict[str, Any],
                    optimizer: Optional[torch.optim.Optimizer] = None, ema: Optional[torch.nn.Module] = None,
                    **cfg_updates) -> str:
    """Write ``model`` (``save_pretrained``) and the training state into ``directory``, atomically.

    Args:
        model: a clipdfer model; its weights are what the directory loads as.
        directory: the checkpoint directory (replaced as a whole).
        state: JSON-like training state (step, epoch, best score ...).
        optimizer: its state is saved for resuming.
        ema: an EMA copy of the model whose weights are saved for resuming.
        **cfg_updates: pretrained-cfg fields to record (``finetuned``, ``notes`` ...).
    """
    tmp = directory.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, **cfg_updates)
    extra: Dict[str, Any] = {"rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        extra["rng_cuda"] = torch.cuda.get_rng_state()
    if optimizer is not None:
        extra["optimizer"] = optimizer.state_dict()
    if ema is not None:
        extra["ema"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
    torch.save({**state, **extra}, os.path.join(tmp, STATE_NAME))
    old = directory.rstrip("/") + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def load_training_state(directory: str) -> Dict[str, Any]:
    """The state saved by :func:`save_checkpoint` (tensors and plain data only: ``weights_only=True``); restores the
    RNG state it recorded."""
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
