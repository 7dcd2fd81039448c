"""clipdfer: a model zoo for CLIP-based dynamic facial expression recognition.

    import clipdfer
    model = clipdfer.create_model("clipdfer_vitb32_dfew")
    logits = model(video)  # video: (B, T, 3, 224, 224) normalised as model.pretrained_cfg says

The names below are imported when first used, so ``import clipdfer`` and ``clipdfer --help`` do not load torch and
the model registry until they are needed.
"""

import importlib
from typing import TYPE_CHECKING, Any, List

from .version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "create_model": "models", "list_models": "models", "list_pretrained": "models", "get_pretrained_cfg": "models",
    "is_model": "models", "register_model": "models", "PretrainedCfg": "models", "PretrainedWeightsError": "models",
    "UnknownModelError": "models", "push_to_hf_hub": "models", "save_pretrained": "models",
    "predict": "inference", "Prediction": "inference", "load_results": "inference",
}
_SUBMODULES = ("layers", "models", "optim", "data", "recipes", "train", "eval", "inference", "export", "profiling",
               "metrics", "convert", "schedule", "checkpoint", "distributed", "faces", "visualize")

__all__ = [
    "create_model", "list_models", "list_pretrained", "get_pretrained_cfg", "is_model", "register_model",
    "PretrainedCfg", "PretrainedWeightsError", "UnknownModelError", "push_to_hf_hub", "save_pretrained", "layers",
    "optim", "predict", "Prediction", "load_results", "__version__",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from . import layers, optim
    from .inference import Prediction, load_results, predict
    from .models import (
        PretrainedCfg, PretrainedWeightsError, UnknownModelError, create_model, get_pretrained_cfg, is_model,
        list_models, list_pretrained, push_to_hf_hub, register_model, save_pretrained,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'clipdfer' has no attribute {name!r}")
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
