"""Model families and the registry machinery. Importing this package registers every family."""

from . import a3lign, baselines, clipdfer, dferclip, pmfer  # noqa: F401  (importing a family file registers its models)
from ._base import DFERModel, PromptHead
from ._builder import build_model_with_cfg, load_checkpoint
from ._download import PretrainedWeightsError
from ._factory import create_model
from ._hub import push_folder_to_hf_hub, push_to_hf_hub, save_pretrained
from ._loading import Checkpoint
from ._pretrained import DefaultCfg, PretrainedCfg
from ._registry import (
    UnknownModelError, get_pretrained_cfg, is_model, list_models, list_pretrained, model_entrypoint, register_model,
)
from .a3lign import A3lignDFER
from .baselines import CoCoOp, CoOp, ZeroShotCLIP
from .clipdfer import CLIPGuidedDFER
from .dferclip import DFERCLIP
from .pmfer import PMFER

__all__ = [
    "DFERModel", "PromptHead", "build_model_with_cfg", "load_checkpoint", "create_model", "PretrainedWeightsError",
    "Checkpoint",
    "push_to_hf_hub", "push_folder_to_hf_hub", "save_pretrained", "DefaultCfg", "PretrainedCfg",
    "UnknownModelError", "get_pretrained_cfg", "is_model", "list_models", "list_pretrained", "model_entrypoint",
    "register_model", "CLIPGuidedDFER", "DFERCLIP", "ZeroShotCLIP", "CoOp", "CoCoOp", "A3lignDFER", "PMFER",
]
