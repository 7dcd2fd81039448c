"""Baselines the DFER papers compare against: zero-shot CLIP, CoOp and CoCoOp, run on video.

- Zero-shot CLIP: A. Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021,
  arXiv 2103.00020.
- CoOp: K. Zhou, J. Yang, C. C. Loy, Z. Liu, "Learning to Prompt for Vision-Language Models", IJCV 2022, arXiv
  2109.01134.
- CoCoOp: K. Zhou, J. Yang, C. C. Loy, Z. Liu, "Conditional Prompt Learning for Vision-Language Models", CVPR 2022,
  arXiv 2203.05557.

Follows ``shared/spec/baselines.md``. Ours: the zero-shot templates, the class words and what CoCoOp's meta-net reads
(docs/models/baselines.md).
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import DFEW_CLASSES, FERV39K_CLASSES, MAFW_CLASSES
from ..data.texts import EXPRESSION_ADJECTIVES, ZERO_SHOT_TEMPLATES
from ..layers import CLIPFrameEncoder, CLIPTextEncoder, build_open_clip, tokenize
from ..layers.clip import check_distinct_prompts, check_range, check_text_lengths, check_texts, require_bool
from ..layers.prompt import PromptLearner, outside_inference_mode
from ._builder import build_model_with_cfg
from ._base import DFERModel
from ._pretrained import PretrainedCfg
from ._registry import generate_default_cfgs, register_model

__all__ = ["ZeroShotCLIP", "CoOp", "CoCoOp", "class_words"]


def class_words(class_names: Sequence[str]) -> List[str]:
    """The word for each class in a prompt: an adjective for the known expressions, else the name itself."""
    return [EXPRESSION_ADJECTIVES.get(n, n) for n in class_names]


class _CLIPVideoModel(DFERModel):
    """Frozen CLIP towers, frame features averaged over time, CLIP's logit scale x cosine. Pre-logits: the normalised
    mean frame feature (B, D)."""

    def __init__(self, clip_arch: str, class_names: Sequence[str], num_frames: int, logit_scale: float):
        check_range("logit_scale", logit_scale, 0, 1000, open_low=True)
        super().__init__(clip_arch, class_names, num_frames)
        clip = build_open_clip(self.clip_arch)
        self.image_encoder = CLIPFrameEncoder(clip.visual)
        self.text_encoder = CLIPTextEncoder(clip)
        self.image_encoder.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        # stored in log space under CLIP's own name, so open_clip checkpoints set it (OpenAI's: log 100)
        self.register_buffer("logit_scale", torch.tensor(math.log(logit_scale)))

    def features_from_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """The clip's feature: the frame features averaged over time, L2-normalised. (B, T, D) -> (B, D)."""
        return F.normalize(frames.mean(dim=1), dim=-1)

    @torch.jit.ignore
    def group_parameters(self) -> Dict[str, List[nn.Parameter]]:
        """Trainable parameters: the prompt learner (and CoCoOp's meta-net) under ``prompt``; CLIP is frozen."""
        return {"prompt": [p for p in self.parameters() if p.requires_grad]}


def _words(words: Optional[Sequence[str]], class_names: Sequence[str]) -> Tuple[str, ...]:
    """One distinct word per class: given, or :func:`class_words` of the names."""
    words = check_texts(words, "words") if words is not None else tuple(class_words(class_names))
    if len(words) != len(class_names):
        raise ValueError(f"{len(words)} words for {len(class_names)} classes: give one per class")
    return words


class ZeroShotCLIP(_CLIPVideoModel):
    """Zero-shot CLIP: no training; class text features from a template ensemble averaged in embedding space.

    Args:
        clip_arch: CLIP shape.
        class_names: class names in label order (any list: open vocabulary).
        templates: prompt templates with one ``{}`` for the class word (ours: five).
        words: the word per class (default :func:`class_words`, ours).
        num_frames: T of the pretrained cfg (any T works).
        logit_scale: initial CLIP logit scale (OpenAI's weights set their own, 100).
        truncate: cut prompts longer than the context (L - 2 tokens) instead of raising ``ValueError`` (ours).
    """
    family = "clip_zeroshot"
    zero_shot = True
    prompt_head_parts = ("text_encoder", "logit_scale")
    text_only_parts = ("text_tokens",)

    def __init__(self, clip_arch: str = "vitb32", class_names: Sequence[str] = DFEW_CLASSES,
                 templates: Sequence[str] = ZERO_SHOT_TEMPLATES, words: Optional[Sequence[str]] = None,
                 num_frames: int = 8, logit_scale: float = 100.0, truncate: bool = False):
        super().__init__(clip_arch, class_names, num_frames, logit_scale)
        if isinstance(templates, (str, bytes)) or not isinstance(templates, Sequence):
            raise ValueError(f"templates={templates!r}: expected a list of strings, each with a '{{}}' for the class")
        self.templates = tuple(templates)
        self.truncate = require_bool("truncate", truncate)
        if not self.templates or not all("{}" in t for t in self.templates):
            raise ValueError(f"templates={templates!r}: give one or more strings, each with a '{{}}' for the class")
        self.words, tokens = self._tokens(words, self.class_names, truncate)
        self.register_buffer("text_tokens", tokens, persistent=False)

    def _tokens(self, words: Optional[Sequence[str]], class_names: Sequence[str],
                truncate: bool) -> Tuple[Tuple[str, ...], torch.Tensor]:
        class_names = check_texts(class_names)
        words = list(check_texts(words, "words")) if words is not None else class_words(class_names)
        if len(words) != len(class_names):
            raise ValueError(f"{len(words)} words for {len(class_names)} classes: give one per class")
        texts = [t.format(w) for w in words for t in self.templates]
        if not truncate:
            check_text_lengths(texts, self.clip_arch.context_length, what="prompt")
        tokens = tokenize(texts, self.clip_arch.context_length, truncate=True)
        check_distinct_prompts(tokens.reshape(len(words), -1), words, "class word", truncate)  # a class's prompts
        return tuple(words), tokens

    @outside_inference_mode
    def set_classes(self, class_names: Sequence[str], words: Optional[Sequence[str]] = None,
                    truncate: Optional[bool] = None) -> None:
        """Classify among other classes.

        Raises:
            ValueError: not one word per class; a prompt longer than the context unless ``truncate`` (None: as
                constructed; kept after).
        """
        self._require_prompt_head("set_classes")
        truncate = self.truncate if truncate is None else require_bool("truncate", truncate)
        self.words, tokens = self._tokens(words, class_names, truncate)  # checked before anything changes
        self.class_names, self.num_classes, self.truncate = tuple(class_names), len(class_names), truncate
        self.text_tokens = tokens.to(self.text_tokens.device)
        self.clear_text_cache()

    def _encode_classes(self) -> torch.Tensor:
        feats = F.normalize(self.text_encoder(self.text_tokens), dim=-1)  # (C*K, D)
        return F.normalize(feats.view(self.num_classes, len(self.templates), -1).mean(dim=1), dim=-1)

    def text_features(self) -> torch.Tensor:
        """Normalised class features (C, D), computed once and cached."""
        return self.text_cache(self._encode_classes, self.text_encoder, self.text_tokens)

    def _prompt_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale.exp() * features @ self.text_features().to(features.dtype).t()

    def _class_args(self) -> Dict:
        return {"class_names": list(self.class_names), "words": list(self.words), "templates": list(self.templates),
                "truncate": self.truncate}


class CoOp(_CLIPVideoModel):
    """CoOp: learnable context vectors before each class word, ``[SOS] ctx <word>. [EOS]``; both CLIP encoders frozen.

    Args:
        clip_arch: CLIP shape.
        class_names: class names in label order.
        n_ctx: context vectors M (16).
        ctx_init: initialise the context from a phrase instead (``"a photo of a"``: M = 4).
        class_specific_contexts: one context per class (CoOp's CSC variant) instead of one shared.
        words: the word per class (default :func:`class_words`).
        num_frames: T of the pretrained cfg (any T works).
        logit_scale: initial CLIP logit scale (OpenAI's weights set their own).
        truncate: cut class words longer than their budget (L - 2 - M tokens) instead of raising ``ValueError`` (ours).
    """
    family = "coop"
    prompt_head_parts = ("prompt_learner", "text_encoder", "logit_scale")

    def __init__(self, clip_arch: str = "vitb32", class_names: Sequence[str] = DFEW_CLASSES, n_ctx: int = 16,
                 ctx_init: Optional[str] = None, class_specific_contexts: bool = False,
                 words: Optional[Sequence[str]] = None, num_frames: int = 8, logit_scale: float = 100.0,
                 truncate: bool = False):
        check_range("n_ctx", n_ctx, 1, 64, integer=True)
        require_bool("class_specific_contexts", class_specific_contexts)
        super().__init__(clip_arch, class_names, num_frames, logit_scale)
        self.words = _words(words, self.class_names)
        self.prompt_learner = PromptLearner(self.text_encoder, [f"{w}." for w in self.words], n_ctx,
                                            class_specific_contexts, ctx_init, truncate=truncate)

    def _encode_prompts(self, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        prompts = self.prompt_learner(self.text_encoder.token_embedding, bias)  # (C, L, W) or (B, C, L, W)
        eot = self.prompt_learner.eot_index
        if bias is None:
            return F.normalize(self.text_encoder.forward_embeddings(prompts, eot), dim=-1)
        b, c = prompts.shape[:2]
        feats = self.text_encoder.forward_embeddings(prompts.flatten(0, 1), eot.repeat(b))  # B*C prompts
        return F.normalize(feats.view(b, c, -1), dim=-1)

    def text_features(self) -> torch.Tensor:
        """Normalised prompt features (C, D); cached while the contexts are unchanged and no gradient is needed."""
        return self.text_cache(self._encode_prompts, self.prompt_learner, self.text_encoder)

    @outside_inference_mode
    def set_classes(self, class_names: Sequence[str], words: Optional[Sequence[str]] = None,
                    truncate: Optional[bool] = None) -> None:
        """Other classes; shared contexts carry over, class-specific ones need the same number of classes.

        Raises:
            ValueError: another class count with class-specific contexts; a word longer than its budget unless
                ``truncate`` (None: as constructed; kept after).
        """
        self._require_prompt_head("set_classes")
        class_names = check_texts(class_names)
        kwargs = self.build_kwargs_for_classes(class_names)
        if kwargs is not None:
            raise ValueError(f"{type(self).__name__}'s prompt contexts are class-specific, learned for "
                             f"{self.prompt_learner.ctx.shape[0]} classes, so {len(class_names)} classes need a model "
                             f"built for them: {self._build_advice(kwargs)}")
        words = _words(words, class_names)
        self.prompt_learner.set_class_texts([f"{w}." for w in words], truncate)
        if truncate is not None:
            self.prompt_learner.truncate = truncate
        self.class_names, self.words, self.num_classes = tuple(class_names), tuple(words), len(class_names)
        self.clear_text_cache()

    def _prompt_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale.exp() * features @ self.text_features().to(features.dtype).t()

    def _prompt_classifier_keys(self) -> tuple:
        return ("prompt_learner.ctx",) if self.prompt_learner.class_specific else ()

    def build_kwargs_for_classes(self, class_names: Sequence[str]) -> Optional[Dict]:
        """None where ``set_classes`` takes ``class_names``; class-specific contexts for another class count: the
        arguments that build the model for them."""
        if not self.has_prompt_head or not (self.prompt_learner.class_specific and
                                            len(class_names) != self.prompt_learner.ctx.shape[0]):
            return None
        return {"class_names": list(class_names), "class_specific_contexts": True}

    def _class_args(self) -> Dict:
        return {"class_names": list(self.class_names), "words": list(self.words),
                "truncate": self.prompt_learner.truncate}


class CoCoOp(CoOp):
    """CoCoOp: CoOp with a meta-net whose output, from the clip's mean frame feature, is added to every context vector.

    Args:
        clip_arch, class_names, n_ctx, ctx_init, words, num_frames, logit_scale, truncate: as :class:`CoOp`; by default
            4 context vectors initialised from ``"a photo of a"``.
        meta_ratio: the meta-net's hidden width is D / ``meta_ratio`` (16).
    """
    family = "cocoop"
    prompt_head_parts = ("prompt_learner", "meta_net", "text_encoder", "logit_scale")

    def __init__(self, clip_arch: str = "vitb32", class_names: Sequence[str] = DFEW_CLASSES, n_ctx: int = 4,
                 ctx_init: Optional[str] = "a photo of a", words: Optional[Sequence[str]] = None,
                 num_frames: int = 8, logit_scale: float = 100.0, meta_ratio: int = 16, truncate: bool = False):
        check_range("meta_ratio", meta_ratio, 1, 4096, integer=True)
        super().__init__(clip_arch, class_names, n_ctx, ctx_init, False, words, num_frames, logit_scale, truncate)
        dim, width = self.clip_arch.embed_dim, self.clip_arch.text_width
        hidden = max(1, dim // meta_ratio)
        self.meta_net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width))

    def _prompt_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Per-clip prompts: (B, D) normalised clip features -> (B, C) logits."""
        text = self._encode_prompts(bias=self.meta_net(features))  # (B, C, D)
        return self.logit_scale.exp() * torch.einsum("bd,bcd->bc", features, text.to(features.dtype))


# ---------------------------------------------------------------------------------------------------- registry
_DATASETS = {"dfew": DFEW_CLASSES, "ferv39k": FERV39K_CLASSES, "mafw": MAFW_CLASSES}
_OPENAI_HUB = {"vitb32": "timm/vit_base_patch32_clip_224.openai", "vitb16": "timm/vit_base_patch16_clip_224.openai",
               "vitl14": "timm/vit_large_patch14_clip_224.openai"}


def _openai(arch: str, dataset: str, paper: str, notes: str) -> PretrainedCfg:
    classes = _DATASETS[dataset]
    return PretrainedCfg(
        hf_hub_id=_OPENAI_HUB[arch], hf_hub_filename="open_clip_model.safetensors", checkpoint_format="open_clip",
        num_classes=len(classes), class_names=classes, num_frames=8, dataset=dataset, license="mit",
        paper_ids=(paper, "arXiv:2103.00020"), origin_url="https://github.com/openai/CLIP", notes=notes)


def _test_cfg(paper: str) -> PretrainedCfg:
    return PretrainedCfg(num_classes=7, class_names=DFEW_CLASSES, num_frames=8, input_size=(3, 32, 32),
                         dataset="dfew", license="apache-2.0", paper_ids=(paper,), notes="Tiny random model.")


_ZS, _COOP, _COCOOP = "arXiv:2103.00020", "arXiv:2109.01134", "arXiv:2203.05557"
default_cfgs = generate_default_cfgs({
    **{f"clip_zeroshot_{a}.openai": _openai(a, "dfew", _ZS, "OpenAI CLIP, used zero-shot: meaningful predictions "
                                            "without fine-tuning.") for a in _OPENAI_HUB},
    "clip_zeroshot_test": _test_cfg(_ZS),
    **{f"coop_vitb32_{d}.openai": _openai("vitb32", d, _COOP, "OpenAI CLIP; contexts at their init. Not trained.")
       for d in _DATASETS},
    "coop_test": _test_cfg(_COOP),
    **{f"cocoop_vitb32_{d}.openai": _openai("vitb32", d, _COCOOP, "OpenAI CLIP; contexts and meta-net at their "
                                            "init. Not trained.") for d in _DATASETS},
    "cocoop_test": _test_cfg(_COCOOP),
})


def _entry(cls, variant: str, arch: str, dataset: str, pretrained: bool, kwargs):
    args = dict(clip_arch=arch, class_names=_DATASETS[dataset], num_frames=8)
    args.update(kwargs)
    return build_model_with_cfg(cls, variant, pretrained, **args)


@register_model
def clip_zeroshot_vitb32(pretrained: bool = False, **kwargs) -> ZeroShotCLIP:
    """Zero-shot CLIP ViT-B/32 over the frames of a clip (7 DFEW classes by default; pass class_names=...)."""
    return _entry(ZeroShotCLIP, "clip_zeroshot_vitb32", "vitb32", "dfew", pretrained, kwargs)


@register_model
def clip_zeroshot_vitb16(pretrained: bool = False, **kwargs) -> ZeroShotCLIP:
    """Zero-shot CLIP ViT-B/16 over the frames of a clip."""
    return _entry(ZeroShotCLIP, "clip_zeroshot_vitb16", "vitb16", "dfew", pretrained, kwargs)


@register_model
def clip_zeroshot_vitl14(pretrained: bool = False, **kwargs) -> ZeroShotCLIP:
    """Zero-shot CLIP ViT-L/14 over the frames of a clip."""
    return _entry(ZeroShotCLIP, "clip_zeroshot_vitl14", "vitl14", "dfew", pretrained, kwargs)


@register_model
def clip_zeroshot_test(pretrained: bool = False, **kwargs) -> ZeroShotCLIP:
    """Tiny zero-shot CLIP for tests."""
    return _entry(ZeroShotCLIP, "clip_zeroshot_test", "test", "dfew", pretrained, kwargs)


@register_model
def coop_vitb32_dfew(pretrained: bool = False, **kwargs) -> CoOp:
    """CoOp on CLIP ViT-B/32, DFEW's 7 classes (16 shared contexts)."""
    return _entry(CoOp, "coop_vitb32_dfew", "vitb32", "dfew", pretrained, kwargs)


@register_model
def coop_vitb32_ferv39k(pretrained: bool = False, **kwargs) -> CoOp:
    """CoOp on CLIP ViT-B/32, FERV39k's 7 classes."""
    return _entry(CoOp, "coop_vitb32_ferv39k", "vitb32", "ferv39k", pretrained, kwargs)


@register_model
def coop_vitb32_mafw(pretrained: bool = False, **kwargs) -> CoOp:
    """CoOp on CLIP ViT-B/32, MAFW's 11 classes."""
    return _entry(CoOp, "coop_vitb32_mafw", "vitb32", "mafw", pretrained, kwargs)


@register_model
def coop_test(pretrained: bool = False, **kwargs) -> CoOp:
    """Tiny CoOp for tests."""
    return _entry(CoOp, "coop_test", "test", "dfew", pretrained, kwargs)


@register_model
def cocoop_vitb32_dfew(pretrained: bool = False, **kwargs) -> CoCoOp:
    """CoCoOp on CLIP ViT-B/32, DFEW's 7 classes (4 contexts from "a photo of a", meta-net D -> D/16 -> W)."""
    return _entry(CoCoOp, "cocoop_vitb32_dfew", "vitb32", "dfew", pretrained, kwargs)


@register_model
def cocoop_vitb32_ferv39k(pretrained: bool = False, **kwargs) -> CoCoOp:
    """CoCoOp on CLIP ViT-B/32, FERV39k's 7 classes."""
    return _entry(CoCoOp, "cocoop_vitb32_ferv39k", "vitb32", "ferv39k", pretrained, kwargs)


@register_model
def cocoop_vitb32_mafw(pretrained: bool = False, **kwargs) -> CoCoOp:
    """CoCoOp on CLIP ViT-B/32, MAFW's 11 classes."""
    return _entry(CoCoOp, "cocoop_vitb32_mafw", "vitb32", "mafw", pretrained, kwargs)


@register_model
def cocoop_test(pretrained: bool = False, **kwargs) -> CoCoOp:
    """Tiny CoCoOp for tests."""
    return _entry(CoCoOp, "cocoop_test", "test", "dfew", pretrained, kwargs)
