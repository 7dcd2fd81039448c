"""CLIP-Guided DFER: InterFIT + MSTA + BiEhPro.

Paper: J. Zhang, X. Liu, Y. Liang, X. Xian, W. Xie, L. Shen, S. Song, "CLIP-Guided Bidirectional Prompt and Semantic
Supervision for Dynamic Facial Expression Recognition", IJCB 2024, DOI 10.1109/IJCB62174.2024.10744485.

No official code or weights; this file follows ``shared/spec/clipdfer.md``. Inferred from the paper's FLOPs: InterFIT's
LSTM width and BiEhPro's fused q/k/v. Ours: the values marked so in the class's Args, frame features after ``ln_post``
and ``proj``, MSTA's channel-wise scores. docs/models/clipdfer.md gives the source of every value.
"""

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import DFEW_CLASSES, FERV39K_CLASSES, MAFW_CLASSES
from ..layers import (
    MSTA, BiEhPro, CLIPFrameEncoder, CLIPTextEncoder, InterFIT, build_open_clip, get_clip_arch, msta_output_lengths,
    msta_scales,
)
from ..layers.clip import (
    check_distinct_prompts, check_range, check_text_lengths, check_texts, require_bool, tokenize,
)
from ..layers.prompt import outside_inference_mode
from ._builder import build_model_with_cfg
from ._base import DFERModel
from ._pretrained import PretrainedCfg
from ._registry import generate_default_cfgs, register_model

__all__ = ["CLIPGuidedDFER"]


def _check_template(template: str) -> str:
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"prompt_template={template!r}: expected a string with one '{{}}' for the class name, e.g. "
                         f"'a face showing {{}}.' (without it every class would get the same prompt)")
    return template


def _msta_fits(num_frames: int, kernel_sizes, strides) -> bool:
    try:
        kernels, strides = [int(k) for k in kernel_sizes], [int(s) for s in strides]
    except (TypeError, ValueError, OverflowError):
        return True  # MSTA says what is wrong with them
    if not kernels or len(kernels) != len(strides) or min(kernels + strides) < 1:
        return True
    lengths = msta_output_lengths(num_frames, kernels, strides)
    return max(kernels) <= num_frames and min(lengths) >= 1 and len(set(lengths)) == 1


def _msta_advice(num_frames: int) -> str:
    kernels, strides = msta_scales(num_frames)
    return f"num_frames={num_frames}, msta_kernel_sizes={kernels}, msta_strides={strides}"


def _check_msta(num_frames: int, kernel_sizes, strides) -> None:
    """MSTA's scales must give one output length at this T (eq. 4 sums them): the error names the model's arguments
    and scales that fit (ours: the paper's pattern at T)."""
    check_range("num_frames", num_frames, 1, 1024, integer=True)
    if not _msta_fits(num_frames, kernel_sizes, strides):
        lengths = msta_output_lengths(num_frames, kernel_sizes, strides)
        raise ValueError(
            f"num_frames={num_frames} does not fit MSTA's msta_kernel_sizes={tuple(kernel_sizes)}, "
            f"msta_strides={tuple(strides)}: their output lengths (T - k) // s + 1 are {lengths}, which eq. 4 sums, "
            f"so they must be equal and >= 1 (MSTA scales disagree for num_frames={num_frames}). Build the model with "
            f"{_msta_advice(num_frames)} (ours: the paper's pattern at T={num_frames}), or msta=False (the mean over "
            f"time)")


class CLIPGuidedDFER(DFERModel):
    """CLIP-Guided DFER: a clip (B, T, 3, H, W) -> class logits (B, C), cos(V̂, K̂_j) / τ (eq. 12).

    The paper's ablations (Tables 2-5) are argument settings, listed in docs/models/clipdfer.md. Pre-logits: V (B, D),
    or [V, Z_1..Z_T] flattened, (B, (1 + T) * D), with ``biehpro_visual_tokens="frames"``.

    Args:
        clip_arch: ``vitb32``, ``vitb16``, ``vitl14`` or ``test``.
        class_names: class texts in label order; C is their count.
        num_frames: T; MSTA accepts only this T.
        interfit: InterFIT in every visual layer (False: plain CLIP per frame).
        msta: MSTA over time (False: the mean over time).
        biehpro_depth: BiEhPro blocks M (paper: 2); 0 for none.
        visual_prompt: BiEhPro also updates V (False: the text prompt only).
        text_head: cosine to the text features; False: a random-init Linear on V.
        num_classes: for ``text_head=False`` without class names, else a check of ``len(class_names)``.
        prompt_template: format string with one ``{}`` for the class name (ours: ``"{}"``, the noun alone).
        truncate: cut prompts longer than the context (L - 2 tokens) instead of raising (ours).
        temperature: τ (ours: 0.01, DFER-CLIP's).
        freeze_text: freeze the text encoder (paper); its features are then cached.
        interfit_heads: InterFIT's MHSA heads (ours: width / 64).
        interfit_lstm_hidden: InterFIT's LSTM width per direction (inferred: the visual width).
        interfit_init_std: std of InterFIT's new weights (ours: 0.02).
        lstm_impl: ``auto``, ``native`` or ``unrolled`` (:class:`~clipdfer.layers.BiLSTM`).
        msta_kernel_sizes, msta_strides: MSTA's max-pool scales over time (paper: (5, 5, 7), (3, 3, 1)).
        msta_fc_v_init: ``mean`` (ours) or ``normal``.
        biehpro_heads, biehpro_mlp_ratio, biehpro_init_scale: BiEhPro's heads, FFN width ratio and α = β at init (ours:
            8, 4, 0.1).
        interfit_gate: a zero-initialised gate on the interaction tokens, exactly CLIP at init (ours).
        biehpro_visual_tokens: what BiEhPro's text side attends to: ``embedding`` (V, eq. 10) or ``frames`` (the T frame
            features, ours).

    Raises:
        ValueError: an argument out of its range or in conflict with another (the message says which), a template
            without one ``{}``, MSTA scales that disagree at T.
    """
    family = "clipdfer"
    prompt_head_parts = ("text_encoder", "biehpro")
    text_only_parts = ("text_tokens",)

    def __init__(
            self,
            clip_arch: str = "vitb32",
            class_names: Optional[Sequence[str]] = DFEW_CLASSES,
            num_frames: int = 8,
            interfit: bool = True,
            msta: bool = True,
            biehpro_depth: int = 2,
            visual_prompt: bool = True,
            text_head: bool = True,
            num_classes: Optional[int] = None,
            prompt_template: str = "{}",
            truncate: bool = False,
            temperature: float = 0.01,
            freeze_text: bool = True,
            interfit_heads: Optional[int] = None,
            interfit_lstm_hidden: Optional[int] = None,
            interfit_init_std: float = 0.02,
            lstm_impl: str = "auto",
            msta_kernel_sizes: Sequence[int] = (5, 5, 7),
            msta_strides: Sequence[int] = (3, 3, 1),
            msta_fc_v_init: str = "mean",
            biehpro_heads: int = 8,
            biehpro_mlp_ratio: float = 4.0,
            biehpro_init_scale: float = 0.1,
            interfit_gate: bool = False,
            biehpro_visual_tokens: str = "embedding",
    ):
        arch = get_clip_arch(clip_arch)
        class_names = check_texts(class_names) if class_names is not None else None
        _check_template(prompt_template)
        if class_names is None and (text_head or num_classes is None):
            raise ValueError("class_names=None: give the class texts in label order, or use text_head=False with "
                             "num_classes=N for a plain linear classifier")
        if class_names is not None and num_classes is not None and num_classes != len(class_names):
            raise ValueError(
                f"num_classes={num_classes} conflicts with {len(class_names)} class_names {list(class_names)}: pass "
                f"class_names with {num_classes} entries (the text head has one class per name), or drop num_classes; "
                f"for a linear head over the embedding "
                f"use text_head=False, biehpro_depth=0 or model.reset_classifier({num_classes}, linear=True)")
        if not text_head and biehpro_depth:
            raise ValueError(f"biehpro_depth={biehpro_depth} needs text features, but text_head=False: "
                             "use biehpro_depth=0 for the paper's w/o-text variant, or text_head=True")
        for name, value in (("interfit", interfit), ("msta", msta), ("visual_prompt", visual_prompt),
                            ("text_head", text_head), ("freeze_text", freeze_text), ("interfit_gate", interfit_gate)):
            require_bool(name, value)
        check_range("biehpro_depth", biehpro_depth, 0, 16, integer=True)
        check_range("biehpro_heads", biehpro_heads, 1, 256, integer=True)
        check_range("interfit_heads", interfit_heads, 1, 256, integer=True, optional=True)
        check_range("interfit_lstm_hidden", interfit_lstm_hidden, 1, 16384, integer=True, optional=True)
        check_range("interfit_init_std", interfit_init_std, 0, 1)
        check_range("biehpro_init_scale", biehpro_init_scale, 0, 10)
        check_range("temperature", temperature, 0, 100, open_low=True)
        check_range("biehpro_mlp_ratio", biehpro_mlp_ratio, 0, 64, open_low=True)
        if msta:
            _check_msta(num_frames, msta_kernel_sizes, msta_strides)
        if biehpro_visual_tokens not in ("embedding", "frames"):
            raise ValueError(f"biehpro_visual_tokens={biehpro_visual_tokens!r}: expected 'embedding' (the paper's V) "
                             f"or 'frames' (the frame features)")
        if biehpro_visual_tokens == "frames" and not biehpro_depth:
            raise ValueError("biehpro_visual_tokens='frames' gives BiEhPro frame features, but biehpro_depth=0: "
                             "use biehpro_depth >= 1")

        super().__init__(arch, class_names, num_frames, num_classes)
        self.prompt_template = prompt_template
        self.truncate = require_bool("truncate", truncate)
        self.temperature = temperature
        self.text_head = text_head
        self.freeze_text = freeze_text

        clip = build_open_clip(arch)
        if interfit:
            self.image_encoder = InterFIT(clip.visual, interfit_heads, interfit_lstm_hidden, interfit_init_std,
                                          lstm_impl, gate=interfit_gate)
        else:
            self.image_encoder = CLIPFrameEncoder(clip.visual)
        dim = arch.embed_dim
        self.msta = MSTA(dim, num_frames, msta_kernel_sizes, msta_strides, msta_fc_v_init) if msta else None
        self.biehpro = BiEhPro(dim, biehpro_depth, biehpro_heads, biehpro_mlp_ratio, update_visual=visual_prompt,
                               init_scale=biehpro_init_scale) if biehpro_depth else None
        self.frame_tokens = biehpro_visual_tokens == "frames"
        if self.frame_tokens:
            self.head_hidden_size = (1 + num_frames) * dim  # the video token and the frame tokens, flattened
        if text_head:
            self.text_encoder = CLIPTextEncoder(clip)
            self.text_encoder.requires_grad_(not freeze_text)
            self.register_buffer("text_tokens", self._tokenize(class_names), persistent=False)
        else:
            self.text_encoder = None
            self.text_tokens = None
            self.head = nn.Linear(self.head_hidden_size, self.num_classes)

    # ------------------------------------------------------------------ text side
    def _tokenize(self, class_names: Sequence[str], template: Optional[str] = None,
                  truncate: Optional[bool] = None) -> torch.Tensor:
        texts = [(template or self.prompt_template).format(name) for name in class_names]
        truncate = self.truncate if truncate is None else truncate
        if not truncate:
            check_text_lengths(texts, self.clip_arch.context_length, what="class prompt")
        tokens = tokenize(texts, self.clip_arch.context_length, truncate=True)
        check_distinct_prompts(tokens, list(class_names), "class", truncate)
        return tokens

    def text_features(self) -> torch.Tensor:
        """Class text features K (C, D), cached while the text encoder is frozen.

        Raises:
            RuntimeError: the model has no text encoder (``text_head=False`` or a replaced head).
        """
        if self.text_encoder is None:
            raise RuntimeError("this model has no text encoder (text_head=False or reset_classifier)")
        return self.text_cache(lambda: self.text_encoder(self.text_tokens), self.text_encoder, self.text_tokens)

    @outside_inference_mode
    def set_classes(self, class_names: Sequence[str], prompt_template: Optional[str] = None,
                    truncate: Optional[bool] = None) -> None:
        """Use another list of classes (open vocabulary); only the cached text features change.

        Args:
            class_names: class texts in the new label order.
            prompt_template: optionally a new format string, e.g. ``"a face showing {}."``.
            truncate: cut prompts longer than the context (None: as constructed); kept for later calls.

        Raises:
            ValueError: a prompt longer than the context (L - 2 tokens), naming it, unless ``truncate``; two classes
                whose prompts tokenize the same.
        """
        self._require_prompt_head("set_classes")
        class_names = check_texts(class_names)
        template = self.prompt_template if prompt_template is None else _check_template(prompt_template)
        truncate = self.truncate if truncate is None else require_bool("truncate", truncate)
        tokens = self._tokenize(class_names, template, truncate)  # checked before anything changes
        self.prompt_template, self.truncate = template, truncate
        self.text_tokens = tokens.to(self.text_tokens.device)
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.clear_text_cache()

    # ------------------------------------------------------------------ visual side and heads
    @property
    def required_num_frames(self) -> Optional[int]:
        return self.num_frames if self.msta is not None or self.frame_tokens else None

    def _frames_advice(self, num_frames: int) -> Optional[str]:
        advice = super()._frames_advice(num_frames)
        if advice and self.msta is not None and not _msta_fits(num_frames, self.msta.kernel_sizes, self.msta.strides):
            return _msta_advice(num_frames)
        return advice

    def pool_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Video embedding V from frame features: MSTA, or the mean over time. (B, T, D) -> (B, D)."""
        return self.msta(frames) if self.msta is not None else frames.mean(dim=1)

    def features_from_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Video embedding V before the prompt head (also the pre-logits): (B, T, D) frame features -> (B, D); with
        ``biehpro_visual_tokens="frames"``, V and the frame features: (B, 1 + T, D)."""
        video = self.pool_frames(frames)
        return torch.cat([video.unsqueeze(1), frames], dim=1) if self.frame_tokens else video

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        return features.flatten(1) if self.frame_tokens else features  # (B, 1 + T, D) -> (B, (1 + T) * D)

    def _prompt_logits(self, features: torch.Tensor) -> torch.Tensor:
        """cos(V̂, K̂_j) / τ, with BiEhPro enhancing both sides first (eq. 12). (B, D) -> (B, C)."""
        text = self.text_features().to(features.dtype)  # (C, D)
        context = None
        if self.frame_tokens:
            tokens = features.view(features.shape[0], -1, text.shape[-1])  # (B, 1 + T, D)
            features, context = tokens[:, 0], tokens[:, 1:]
        if self.biehpro is not None:
            text, features = self.biehpro(text, features, text_context=context)  # (B, C, D), (B, D)
            text = F.normalize(text, dim=-1)
            return torch.einsum("bd,bcd->bc", F.normalize(features, dim=-1), text) / self.temperature
        return F.normalize(features, dim=-1) @ F.normalize(text, dim=-1).t() / self.temperature

    # ------------------------------------------------------------------ saving and training helpers
    def _class_args(self) -> Dict:
        if self.text_encoder is None:
            return {"num_classes": self.num_classes,
                    "class_names": list(self.class_names) if self.class_names is not None else None}
        return {"class_names": list(self.class_names), "prompt_template": self.prompt_template,
                "truncate": self.truncate}

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return super().no_weight_decay() | {"biehpro.alpha", "biehpro.beta"}


# ---------------------------------------------------------------------------------------------------- registry
_DATASETS = {"dfew": DFEW_CLASSES, "ferv39k": FERV39K_CLASSES, "mafw": MAFW_CLASSES}
_OPENAI_HUB = {
    "vitb32": "timm/vit_base_patch32_clip_224.openai",
    "vitb16": "timm/vit_base_patch16_clip_224.openai",
    "vitl14": "timm/vit_large_patch14_clip_224.openai",
}
_PAPER = ("doi:10.1109/IJCB62174.2024.10744485",)


def _openai_cfg(arch: str, dataset: str) -> PretrainedCfg:
    classes = _DATASETS[dataset]
    return PretrainedCfg(
        hf_hub_id=_OPENAI_HUB[arch], hf_hub_filename="open_clip_model.safetensors", checkpoint_format="open_clip",
        num_classes=len(classes), class_names=classes, num_frames=8, dataset=dataset, license="mit",
        paper_ids=_PAPER + ("arXiv:2103.00020",), origin_url="https://github.com/openai/CLIP",
        notes="OpenAI CLIP initialisation of the backbone; InterFIT, MSTA and BiEhPro at their init. Not fine-tuned.")


default_cfgs = generate_default_cfgs({
    **{f"clipdfer_{arch}_{ds}.openai": _openai_cfg(arch, ds) for arch in _OPENAI_HUB for ds in _DATASETS},
    "clipdfer_test": PretrainedCfg(
        num_classes=len(DFEW_CLASSES), class_names=DFEW_CLASSES, num_frames=8, input_size=(3, 32, 32),
        dataset="dfew", license="apache-2.0", paper_ids=_PAPER, notes="Tiny random model for tests."),
})


def _entry(variant: str, arch: str, dataset: str, pretrained: bool, kwargs) -> CLIPGuidedDFER:
    args = dict(clip_arch=arch, class_names=_DATASETS[dataset], num_frames=8)
    args.update(kwargs)
    return build_model_with_cfg(CLIPGuidedDFER, variant, pretrained, **args)


@register_model
def clipdfer_vitb32_dfew(pretrained: bool = False, **kwargs) -> CLIPGuidedDFER:
    """CLIP-Guided DFER, ViT-B/32, DFEW's 7 classes, T = 8 (the paper's main model)."""
    return _entry("clipdfer_vitb32_dfew", "vitb32", "dfew", pretrained, kwargs)


@register_model
def clipdfer_vitb32_ferv39k(pretrained: bool = False, **kwargs) -> CLIPGuidedDFER:
    """CLIP-Guided DFER, ViT-B/32, FERV39k's 7 classes, T = 8."""
    return _entry("clipdfer_vitb32_ferv39k", "vitb32", "ferv39k", pretrained, kwargs)


@register_model
def clipdfer_vitb32_mafw(pretrained: bool = False, **kwargs) -> CLIPGuidedDFER:
    """CLIP-Guided DFER, ViT-B/32, MAFW's 11 classes, T = 8."""
    return _entry("clipdfer_vitb32_mafw", "vitb32", "mafw", pretrained, kwargs)


@register_model
def clipdfer_vitb16_dfew(pretrained: bool = False, **kwargs) -> CLIPGuidedDFER:
    """CLIP-Guided DFER, ViT-B/16, DFEW's 7 classes, T = 8."""
    return _entry("clipdfer_vitb16_dfew", "vitb16", "dfew", pretrained, kwargs)


@register_model
def clipdfer_vitb16_ferv39k(pretrained: bool = False, **kwargs) -> CLIPGuidedDFER:
    """CLIP-Guided DFER, ViT-B/16, FERV39k's 7 classes, T = 8."""
    return _entry("clipdfer_vitb16_ferv39k", "vitb16", "ferv39k", pretrained, kwargs)


@register_model
def clipdfer_vitb16_mafw(pretrained: bool = False, **kwargs) -> CLIPGuidedDFER:
    """CLIP-Guided DFER, ViT-B/16, MAFW's 11 classes, T = 8."""
    return _entry("clipdfer_vitb16_mafw", "vitb16", "mafw", pretrained, kwargs)


@register_model
def clipdfer_vitl14_dfew(pretrained: bool = False, **kwargs) -> CLIPGuidedDFER:
    """CLIP-Guided DFER, ViT-L/14, DFEW's 7 classes, T = 8."""
    return _entry("clipdfer_vitl14_dfew", "vitl14", "dfew", pretrained, kwargs)


@register_model
def clipdfer_vitl14_ferv39k(pretrained: bool = False, **kwargs) -> CLIPGuidedDFER:
    """CLIP-Guided DFER, ViT-L/14, FERV39k's 7 classes, T = 8."""
    return _entry("clipdfer_vitl14_ferv39k", "vitl14", "ferv39k", pretrained, kwargs)


@register_model
def clipdfer_vitl14_mafw(pretrained: bool = False, **kwargs) -> CLIPGuidedDFER:
    """CLIP-Guided DFER, ViT-L/14, MAFW's 11 classes, T = 8."""
    return _entry("clipdfer_vitl14_mafw", "vitl14", "mafw", pretrained, kwargs)


@register_model
def clipdfer_test(pretrained: bool = False, **kwargs) -> CLIPGuidedDFER:
    """Tiny CLIP-Guided DFER (32x32 frames, width 64, 2 layers) for tests; every module of the full model."""
    return _entry("clipdfer_test", "test", "dfew", pretrained, kwargs)
