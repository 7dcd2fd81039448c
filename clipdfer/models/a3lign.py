"""A³lign-DFER.

Paper: Z. Tao, Y. Wang, J. Lin, et al., "A³lign-DFER: Pioneering Comprehensive Dynamic Affective Alignment for Dynamic
Facial Expression Recognition with CLIP", arXiv 2403.04294 (2024).

No official code; this file follows ``shared/spec/a3lign_dfer.md``. Paper: MAT, JAS, BAP, frozen CLIP encoders. Inferred
from third-party notes: S = T = 16, L = 64, the stages' content and epochs. Ours, each an argument: MAT's init, the
dynamic encoders, the per-step similarity, the stage-2 synchronization. docs/models/a3lign.md gives the source of every
value.
"""

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import DFEW_CLASSES, FERV39K_CLASSES, MAFW_CLASSES
from ..layers import CLIPFrameEncoder, CLIPTextEncoder, build_open_clip
from ..layers.clip import check_range, require_bool
from ..layers.temporal import TemporalBlock
from ._builder import build_model_with_cfg
from ._base import DFERModel
from ._pretrained import PretrainedCfg
from ._registry import generate_default_cfgs, register_model

__all__ = ["A3lignDFER", "DynamicEncoder"]

_SOT, _EOT = 49406, 49407  # CLIP's start- and end-of-text token ids


class DynamicEncoder(nn.Module):
    """JAS's temporal encoder (ours): ``z = x + u``, ``u`` the update one pre-LN block makes to ``x + pos``; (B, S, D)
    -> (B, S, D).

    Args:
        dim: feature width D.
        steps: sequence length (T = S).
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / D.
    """

    def __init__(self, dim: int, steps: int = 16, num_heads: int = 8, mlp_ratio: float = 2.0):
        super().__init__()
        self.steps = steps
        self.pos_embedding = nn.Parameter(torch.zeros(1, steps, dim))
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        self.block = TemporalBlock(dim, num_heads, int(dim * mlp_ratio), qkv_bias=True, approximate_gelu="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, steps, D) -> (N, steps, D)."""
        if x.shape[1] != self.steps:
            raise ValueError(f"DynamicEncoder expects {self.steps} steps, got {tuple(x.shape)}: sample "
                             f"{self.steps} frames (S = T)")
        y = x + self.pos_embedding.to(x.dtype)
        return x + (self.block(y) - y)


class A3lignDFER(DFERModel):
    """A³lign-DFER: a clip (B, T, 3, H, W) -> (B, C) logits against learned class "sentences".

    ``forward_features`` is the video sequence Z_v (B, T, D); pre-logits: see :meth:`_pool`.

    Args:
        clip_arch: CLIP shape (``vitb32``, ``vitl14``, ``test``).
        class_names: class names in label order (labels only: MAT replaces the text).
        num_frames: T; also the number of sentences S per class.
        mat_tokens: L, learned tokens per sentence (64); a sentence is [SOT] + L tokens + [EOT] (ours).
        mat_init_std: std of MAT's normal init (ours: 0.02).
        num_heads, mlp_ratio: the dynamic encoders' block (ours).
        pooled_similarity: pool both sequences over time, then cosine, instead of the per-step similarity (ours).
        logit_scale: multiplies the similarity (100).
        sync_on_stage2: copy the text dynamic encoder into the video one when stage 2 starts (ours).
    """
    family = "a3lign"
    prompt_head_parts = ("mat", "text_dynamic", "text_encoder")

    def __init__(
            self,
            clip_arch: str = "vitb32",
            class_names: Sequence[str] = DFEW_CLASSES,
            num_frames: int = 16,
            mat_tokens: int = 64,
            mat_init_std: float = 0.02,
            num_heads: int = 8,
            mlp_ratio: float = 2.0,
            pooled_similarity: bool = False,
            logit_scale: float = 100.0,
            sync_on_stage2: bool = True,
    ):
        for name, value, low, high, integer in (("mat_tokens", mat_tokens, 1, 1024, True),
                                                ("mat_init_std", mat_init_std, 0, 1, False),
                                                ("num_heads", num_heads, 1, 256, True)):
            check_range(name, value, low, high, integer)
        check_range("mlp_ratio", mlp_ratio, 0, 64, open_low=True)
        check_range("logit_scale", logit_scale, 0, 1000, open_low=True)
        require_bool("pooled_similarity", pooled_similarity)
        require_bool("sync_on_stage2", sync_on_stage2)
        super().__init__(clip_arch, class_names, num_frames)
        arch = self.clip_arch
        if mat_tokens + 2 > arch.context_length:
            raise ValueError(f"mat_tokens={mat_tokens}: a sentence of [SOT] + L + [EOT] must fit CLIP's "
                             f"{arch.context_length} positions; use mat_tokens <= {arch.context_length - 2}")
        self.pooled_similarity = pooled_similarity
        self.logit_scale = logit_scale
        self.sync_on_stage2 = sync_on_stage2
        clip = build_open_clip(arch)
        self.image_encoder = CLIPFrameEncoder(clip.visual)
        self.text_encoder = CLIPTextEncoder(clip)
        self.image_encoder.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        dim, width = arch.embed_dim, arch.text_width
        self.mat = nn.Parameter(torch.empty(self.num_classes, num_frames, mat_tokens, width))  # (C, S, L, D_w)
        nn.init.normal_(self.mat, std=mat_init_std)
        self.text_dynamic = DynamicEncoder(dim, num_frames, num_heads, mlp_ratio)
        self.video_dynamic = DynamicEncoder(dim, num_frames, num_heads, mlp_ratio)
        self.head_hidden_size = dim if pooled_similarity else num_frames * dim
        self.stage = 3
        self.set_stage(3)

    # ------------------------------------------------------------------ BAP
    def set_stage(self, stage: int, sync: Optional[bool] = None) -> None:
        """Set BAP's training stage; CLIP's encoders stay frozen in every stage.

        1: MAT and the text dynamic encoder train; the video side is the frame mean. 2: only the video dynamic encoder
        (copied from the text one first, with ``sync_on_stage2``). 3: MAT and both dynamic encoders (the inference
        setting).
        """
        if not self.has_prompt_head:  # a linear head (reset_classifier) has no text side to align in stages
            return super().set_stage(stage, sync)
        if stage not in (1, 2, 3):
            raise ValueError(f"stage={stage}: BAP has stages 1, 2 and 3")
        sync = self.sync_on_stage2 if sync is None else sync
        if stage == 2 and self.stage != 2 and sync:
            self.video_dynamic.load_state_dict(self.text_dynamic.state_dict())
        trains = {1: ("mat", "text_dynamic"), 2: ("video_dynamic",), 3: ("mat", "text_dynamic", "video_dynamic")}[stage]
        for name, p in self.named_parameters():
            p.requires_grad_(name.split(".")[0] in trains)
        self.stage = stage

    # ------------------------------------------------------------------ text side (MAT)
    def _encode_mat(self) -> torch.Tensor:
        c, s, length, width = self.mat.shape
        emb = self.text_encoder.token_embedding
        sot = emb.weight[_SOT].expand(c * s, 1, width)
        eot = emb.weight[_EOT].expand(c * s, 1, width)
        mat = self.mat.to(emb.weight.dtype)  # in the text tower's dtype, also when only the tower was converted
        # the causal mask makes positions after [EOT] irrelevant to its output: stop the sequence there
        x = torch.cat([sot, mat.reshape(c * s, length, width), eot], dim=1)  # (C*S, L + 2, D_w)
        eot_index = torch.full((c * s,), length + 1, device=x.device)
        return self.text_encoder.forward_embeddings(x, eot_index).view(c, s, -1)  # (C, S, D)

    def sentence_features(self) -> torch.Tensor:
        """F_t (C, S, D): MAT through the frozen text encoder; cached while MAT is unchanged and needs no gradient."""
        return self.text_cache(self._encode_mat, self.mat, self.text_encoder)

    @property
    def num_stages(self) -> int:
        """BAP's three stages (one once ``reset_classifier`` replaced the text side)."""
        return 3 if self.has_prompt_head else 1

    # ------------------------------------------------------------------ forward
    @property
    def required_num_frames(self) -> Optional[int]:
        return self.num_frames

    def features_from_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Video sequence Z_v (B, T, D) after the video dynamic encoder; stage 1: the frame mean repeated."""
        if self.stage == 1:
            return frames.mean(dim=1, keepdim=True).expand_as(frames)
        return self.video_dynamic(frames)

    def _pool(self, video_seq: torch.Tensor) -> torch.Tensor:
        """(B, T, D) video sequence -> pre-logits: each step normalised, flattened, / sqrt(T): (B, T * D), in which the
        per-step similarity is linear; with ``pooled_similarity``, the normalised time mean (B, D)."""
        if self.pooled_similarity:
            return F.normalize(video_seq.mean(dim=1), dim=-1)
        return F.normalize(video_seq, dim=-1).flatten(1) * video_seq.shape[1] ** -0.5

    def _prompt_logits(self, pre_logits: torch.Tensor) -> torch.Tensor:
        """Pre-logits -> (B, C) logits against the dynamic class sequences (the per-step mean similarity)."""
        text_seq = self.text_dynamic(self.sentence_features().to(pre_logits.dtype))  # (C, S, D)
        if self.pooled_similarity:
            text = F.normalize(text_seq.mean(dim=1), dim=-1)  # (C, D)
        else:
            text = F.normalize(text_seq, dim=-1).flatten(1) * text_seq.shape[1] ** -0.5  # (C, S * D)
        return self.logit_scale * pre_logits @ text.t()

    # ------------------------------------------------------------------ helpers
    def _prompt_classifier_keys(self) -> tuple:
        return ("mat",)

    @torch.jit.ignore
    def group_parameters(self) -> Dict[str, List[nn.Parameter]]:
        """Trainable parameters: ``prompt`` (MAT) and ``new`` (the dynamic encoders)."""
        groups: Dict[str, List[nn.Parameter]] = {"prompt": [], "new": []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups["prompt" if name == "mat" else "new"].append(p)
        return groups

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return super().no_weight_decay() | {"text_dynamic.pos_embedding", "video_dynamic.pos_embedding"}


# ---------------------------------------------------------------------------------------------------- registry
_DATASETS = {"dfew": DFEW_CLASSES, "ferv39k": FERV39K_CLASSES, "mafw": MAFW_CLASSES}
_HUB = {"vitb32": "timm/vit_base_patch32_clip_224.openai", "vitl14": "timm/vit_large_patch14_clip_224.openai"}
_PAPER = ("arXiv:2403.04294",)
# ViT-L/14 results reported by the authors' survey (arXiv 2408.15777), UAR / WAR %
_REPORTED = {"dfew": (64.09, 74.20), "ferv39k": (41.87, 51.77), "mafw": (42.07, 53.22)}


def _openai_cfg(arch: str, dataset: str) -> PretrainedCfg:
    classes = _DATASETS[dataset]
    return PretrainedCfg(
        hf_hub_id=_HUB[arch], hf_hub_filename="open_clip_model.safetensors", checkpoint_format="open_clip",
        num_classes=len(classes), class_names=classes, num_frames=16, dataset=dataset, license="mit",
        paper_ids=_PAPER + ("arXiv:2103.00020",), origin_url="https://github.com/openai/CLIP",
        notes="OpenAI CLIP encoders (frozen in A3lign-DFER); MAT and JAS at their init. Not trained. "
              f"Reported (ViT-L/14) UAR/WAR: {_REPORTED[dataset][0]}/{_REPORTED[dataset][1]}.")


default_cfgs = generate_default_cfgs({
    **{f"a3lign_{a}_{d}.openai": _openai_cfg(a, d) for a in _HUB for d in _DATASETS},
    "a3lign_test": PretrainedCfg(num_classes=7, class_names=DFEW_CLASSES, num_frames=4, input_size=(3, 32, 32),
                                 dataset="dfew", license="apache-2.0", paper_ids=_PAPER, notes="Tiny random model."),
})


def _entry(variant: str, arch: str, dataset: str, pretrained: bool, kwargs) -> A3lignDFER:
    args = dict(clip_arch=arch, class_names=_DATASETS[dataset], num_frames=16)
    if arch == "test":
        args.update(num_frames=4, mat_tokens=4)
    args.update(kwargs)
    return build_model_with_cfg(A3lignDFER, variant, pretrained, **args)


@register_model
def a3lign_vitb32_dfew(pretrained: bool = False, **kwargs) -> A3lignDFER:
    """A³lign-DFER, CLIP ViT-B/32, DFEW's 7 classes, T = S = 16."""
    return _entry("a3lign_vitb32_dfew", "vitb32", "dfew", pretrained, kwargs)


@register_model
def a3lign_vitb32_ferv39k(pretrained: bool = False, **kwargs) -> A3lignDFER:
    """A³lign-DFER, CLIP ViT-B/32, FERV39k's 7 classes."""
    return _entry("a3lign_vitb32_ferv39k", "vitb32", "ferv39k", pretrained, kwargs)


@register_model
def a3lign_vitb32_mafw(pretrained: bool = False, **kwargs) -> A3lignDFER:
    """A³lign-DFER, CLIP ViT-B/32, MAFW's 11 classes."""
    return _entry("a3lign_vitb32_mafw", "vitb32", "mafw", pretrained, kwargs)


@register_model
def a3lign_vitl14_dfew(pretrained: bool = False, **kwargs) -> A3lignDFER:
    """A³lign-DFER, CLIP ViT-L/14 (the paper's reported backbone), DFEW's 7 classes."""
    return _entry("a3lign_vitl14_dfew", "vitl14", "dfew", pretrained, kwargs)


@register_model
def a3lign_vitl14_ferv39k(pretrained: bool = False, **kwargs) -> A3lignDFER:
    """A³lign-DFER, CLIP ViT-L/14, FERV39k's 7 classes."""
    return _entry("a3lign_vitl14_ferv39k", "vitl14", "ferv39k", pretrained, kwargs)


@register_model
def a3lign_vitl14_mafw(pretrained: bool = False, **kwargs) -> A3lignDFER:
    """A³lign-DFER, CLIP ViT-L/14, MAFW's 11 classes."""
    return _entry("a3lign_vitl14_mafw", "vitl14", "mafw", pretrained, kwargs)


@register_model
def a3lign_test(pretrained: bool = False, **kwargs) -> A3lignDFER:
    """Tiny A³lign-DFER (32x32 frames, T = S = 4, L = 4) for tests."""
    return _entry("a3lign_test", "test", "dfew", pretrained, kwargs)
