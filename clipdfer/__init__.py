"""clipdfer: a model zoo for CLIP-based dynamic facial expression recognition.

    import clipdfer
    model = clipdfer.create_model("clipdfer_vitb32_dfew")
    logits = model(video)  # video: (B, T, 3, 224, 224) normalised as model.pretrained_cfg says
"""

from . import layers, optim
from .models import (
    PretrainedCfg, PretrainedWeightsError, UnknownModelError, create_model, get_pretrained_cfg, is_model, list_models,
    list_pretrained, push_to_hf_hub, register_model, save_pretrained,
)
from .inference import Prediction, predict
from .version import __version__

__all__ = [
    "create_model", "list_models", "list_pretrained", "get_pretrained_cfg", "is_model", "register_model",
    "PretrainedCfg", "PretrainedWeightsError", "UnknownModelError", "push_to_hf_hub", "save_pretrained", "layers",
    "optim", "predict", "Prediction", "__version__",
]
