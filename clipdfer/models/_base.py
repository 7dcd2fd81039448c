"""What every clipdfer model shares: its CLIP shape, classes and T, gradient checkpointing, saving and loading."""

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from ..layers import get_clip_arch
from ._hub import HubMixin
from ._pretrained import PretrainedCfg

__all__ = ["DFERModel"]


def _clear_text_cache_after_load(module: "DFERModel", incompatible_keys) -> None:
    module.clear_text_cache()


class DFERModel(HubMixin, nn.Module):
    """Base of the model families.

    Sets ``clip_arch``, ``class_names``, ``num_classes``, ``num_frames`` and ``pretrained_cfg`` (attached by the
    builder), and drops cached text features after ``load_state_dict``. Subclasses hold their image encoder as
    ``self.image_encoder`` and define ``clear_text_cache()``.
    """

    def __init__(self, clip_arch, class_names: Optional[Sequence[str]], num_frames: int,
                 num_classes: Optional[int] = None):
        super().__init__()
        self.clip_arch = get_clip_arch(clip_arch)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.num_classes = len(self.class_names) if self.class_names is not None else num_classes
        self.num_frames = num_frames
        self.pretrained_cfg: Optional[PretrainedCfg] = None
        self.register_load_state_dict_post_hook(_clear_text_cache_after_load)

    def clear_text_cache(self) -> None:
        """Forget cached text features (models without any have nothing to forget)."""

    def export_model_args(self) -> Dict:
        """Constructor arguments that may have changed since construction (e.g. by ``set_classes``)."""
        return {"class_names": list(self.class_names)}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each visual layer in the backward pass instead of storing its activations."""
        self.image_encoder.grad_checkpointing = enable
