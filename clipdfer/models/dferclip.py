"""DFER-CLIP.

Paper: Z. Zhao, I. Patras, "Prompting Visual-Language Models for Dynamic Facial Expression Recognition", BMVC 2023,
arXiv 2308.13382. Official code and checkpoints: github zengqunzhao/DFER-CLIP (MIT).

The structure, class texts, input pipeline and recipe ``dferclip`` are the official code's, so its checkpoints load and
give the same logits (``shared/spec/dferclip.md``). Ours, none changing the function: class texts looked up by class
name (``text_type``), ``set_classes``, cached prompt features; and the recipe ``dferclip_ours``.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import DFEW_CLASSES, FERV39K_CLASSES, MAFW_CLASSES
from ..data.texts import DFERCLIP_DESCRIPTORS, DFERCLIP_TEXT_TYPES, dferclip_texts
from ..layers import CLIPFrameEncoder, CLIPTextEncoder, build_open_clip
from ..layers.clip import check_range, check_texts, require_bool
from ..layers.prompt import PromptLearner, outside_inference_mode
from ..layers.temporal import TemporalTransformer
from ._base import DFERModel
from ._builder import build_model_with_cfg
from ._loading import Checkpoint, read_state_dict_release
from ._pretrained import PretrainedCfg
from ._registry import generate_default_cfgs, register_model
from .dferclip_official import (
    _METRICS, _ORIGIN, _PAPER, PROMPT_HEAD_PARTS, NotOfficialCheckpointError, check_release_name,
    convert_official_state_dict, detect_text_type, is_official_state_dict, official_notes, read_official_release,
)

__all__ = ["DFERCLIP", "checkpoint_filter_fn", "read_release"]


class DFERCLIP(DFERModel):
    """DFER-CLIP: CLIP frame features, a class-token temporal transformer, learnable class-specific prompts.

    (B, T, 3, H, W) frames in [0, 1], without mean/std normalisation (official pipeline) -> logits (B, C). Pre-logits:
    the temporal class token (B, D), before normalisation.

    Args:
        clip_arch: CLIP shape (``vitb32`` as the paper, or ``test``).
        class_names: class names in label order.
        text_type: ``class_descriptor`` (the paper's best), ``class_names`` or ``class_names_with_context``.
        class_texts: explicit text per class (overrides ``text_type``).
        num_frames: T (16); any T up to it works.
        temporal_layers: depth of the temporal transformer (1).
        n_ctx: learnable context vectors per prompt (8).
        class_specific_contexts: one set of contexts per class (True, the official setting) or one shared set.
        temperature: logits = cos / temperature (0.01).
        freeze_text: keep CLIP's text transformer frozen (the paper).
        temporal_heads, temporal_mlp_dim: the temporal blocks' shape (8 heads, MLP 2 x width).
        truncate: cut class texts longer than the text encoder's budget instead of raising ``ValueError`` (ours).
        cache_text: reuse prompt features while the prompts are unchanged (False: re-encode every call, as the official
            code).
    """
    family = "dferclip"
    prompt_head_parts = PROMPT_HEAD_PARTS
    release_convert_command = "clipdfer convert dferclip FILE OUT_DIR"

    def __init__(
            self,
            clip_arch: str = "vitb32",
            class_names: Sequence[str] = DFEW_CLASSES,
            text_type: str = "class_descriptor",
            class_texts: Optional[Sequence[str]] = None,
            num_frames: int = 16,
            temporal_layers: int = 1,
            n_ctx: int = 8,
            class_specific_contexts: bool = True,
            temperature: float = 0.01,
            freeze_text: bool = True,
            temporal_heads: int = 8,
            temporal_mlp_dim: Optional[int] = None,
            cache_text: bool = True,
            truncate: bool = False,
    ):
        for name, value, low, high in (("temporal_layers", temporal_layers, 1, 64), ("n_ctx", n_ctx, 1, 64),
                                       ("temporal_heads", temporal_heads, 1, 256)):
            check_range(name, value, low, high, integer=True)
        check_range("temporal_mlp_dim", temporal_mlp_dim, 1, 16384, integer=True, optional=True)
        check_range("temperature", temperature, 0, 100, open_low=True)
        for name, value in (("class_specific_contexts", class_specific_contexts), ("freeze_text", freeze_text),
                            ("cache_text", cache_text)):
            require_bool(name, value)
        super().__init__(clip_arch, class_names, num_frames)
        arch, class_names = self.clip_arch, self.class_names
        class_texts = list(check_texts(class_texts, "class_texts")) if class_texts is not None else dferclip_texts(
            class_names, text_type)
        if len(class_texts) != len(class_names):
            raise ValueError(f"{len(class_texts)} class_texts for {len(class_names)} class_names: give one per class")
        self.class_texts = tuple(class_texts)
        self.text_type = text_type
        self.temperature = temperature
        self.cache_text = cache_text

        clip = build_open_clip(arch)
        dim = arch.embed_dim
        self.image_encoder = CLIPFrameEncoder(clip.visual)
        self.temporal_net = TemporalTransformer(dim, num_frames, temporal_layers, temporal_heads,
                                                temporal_mlp_dim or 2 * dim)
        self.text_encoder = CLIPTextEncoder(clip)
        self.text_encoder.requires_grad_(not freeze_text)
        self.prompt_learner = PromptLearner(self.text_encoder, class_texts, n_ctx, class_specific_contexts,
                                            truncate=truncate)

    # ------------------------------------------------------------------ text side
    def _encode_prompts(self) -> torch.Tensor:
        prompts = self.prompt_learner(self.text_encoder.token_embedding)  # (C, L, W)
        return self.text_encoder.forward_embeddings(prompts, self.prompt_learner.eot_index)

    def text_features(self) -> torch.Tensor:
        """Prompt text features (C, D), cached while nothing they come from changes and no gradient must reach them."""
        return self.text_cache(self._encode_prompts, self.prompt_learner, self.text_encoder)

    @outside_inference_mode
    def set_classes(self, class_names: Sequence[str], class_texts: Optional[Sequence[str]] = None,
                    truncate: Optional[bool] = None) -> None:
        """Use other classes (texts from ``text_type`` unless given). Class-specific contexts keep their count.

        Raises:
            ValueError: another class count with class-specific contexts (the message gives the ``create_model`` call
                that builds the model for them); classes without a DFER-CLIP descriptor under
                ``text_type='class_descriptor'`` and no ``class_texts`` (the message gives them); a text longer than
                its budget (context length - 2 - ``n_ctx`` tokens) unless ``truncate`` (None: as constructed; kept
                after).
        """
        self._require_prompt_head("set_classes")
        class_names = check_texts(class_names)
        if self.prompt_learner.class_specific and len(class_names) != self.prompt_learner.ctx.shape[0]:
            raise ValueError(
                f"{type(self).__name__}'s prompt contexts are class-specific, learned for "
                f"{self.prompt_learner.ctx.shape[0]} classes, so {len(class_names)} classes need a model built for "
                f"them: {self._build_advice(self.build_kwargs_for_classes(class_names))}")
        missing = [n for n in class_names if n not in DFERCLIP_DESCRIPTORS]
        if class_texts is None and self.text_type == "class_descriptor" and missing:
            raise ValueError(
                f"no DFER-CLIP descriptor for classes {missing} (text_type='class_descriptor'; known are "
                f"{sorted(DFERCLIP_DESCRIPTORS)}): give a text per class, e.g. set_classes({list(class_names)!r}, "
                f"class_texts={[f'{n}.' for n in class_names]!r}) (the texts of text_type='class_names'), or build "
                f"the model for them: {self._build_advice(self.build_kwargs_for_classes(class_names))}")
        texts = list(check_texts(class_texts, "class_texts")) if class_texts is not None else dferclip_texts(
            class_names, self.text_type)
        if len(texts) != len(class_names):
            raise ValueError(f"{len(texts)} class_texts for {len(class_names)} class_names: give one per class")
        self.prompt_learner.set_class_texts(texts, truncate)
        if truncate is not None:
            self.prompt_learner.truncate = truncate
        self.class_names, self.class_texts, self.num_classes = class_names, tuple(texts), len(class_names)
        self.clear_text_cache()

    def build_kwargs_for_classes(self, class_names: Sequence[str]) -> Optional[Dict]:
        """None where ``set_classes`` takes ``class_names`` in place; else ``class_names`` and, where a class has no
        DFER-CLIP descriptor, ``text_type='class_names'`` (the class name as its text): class-specific contexts for
        another class count are built anew."""
        if not self.has_prompt_head:
            return None
        missing = self.text_type == "class_descriptor" and any(n not in DFERCLIP_DESCRIPTORS for n in class_names)
        if not missing and not (self.prompt_learner.class_specific and
                                len(class_names) != self.prompt_learner.ctx.shape[0]):
            return None
        return {"class_names": list(class_names), "text_type": "class_names" if missing else self.text_type}

    @property
    def max_num_frames(self) -> int:
        """The temporal transformer holds positions for ``num_frames`` frames: any T up to it."""
        return self.num_frames

    # ------------------------------------------------------------------ visual side and head
    def features_from_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Video feature (the temporal class token, before normalisation): (B, T, D) frame features -> (B, D)."""
        return self.temporal_net(frames)

    def _prompt_logits(self, features: torch.Tensor) -> torch.Tensor:
        """cos(video, prompt_j) / temperature: (B, D) -> (B, C)."""
        text = F.normalize(self.text_features().to(features.dtype), dim=-1)
        return F.normalize(features, dim=-1) @ text.t() / self.temperature

    # ------------------------------------------------------------------ loading, saving, training helpers
    def _prompt_classifier_keys(self) -> tuple:
        return ("prompt_learner.ctx",) if self.prompt_learner.class_specific else ()

    def _class_args(self) -> Dict:
        return {"class_names": list(self.class_names), "class_texts": list(self.class_texts),
                "truncate": self.prompt_learner.truncate}

    @torch.jit.ignore
    def group_parameters(self) -> Dict[str, List[nn.Parameter]]:
        """Trainable parameters: ``backbone`` (image encoder), ``new`` (temporal transformer), ``prompt`` (contexts)."""
        groups: Dict[str, List[nn.Parameter]] = {"backbone": [], "new": [], "prompt": []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                key = "backbone" if name.startswith(("image_encoder.", "text_encoder.")) else (
                    "prompt" if name.startswith("prompt_learner.") else "new")
                groups[key].append(p)
        return groups

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return super().no_weight_decay() | {"temporal_net.cls_token", "temporal_net.pos_embedding"}


def _check_class_texts(model: DFERCLIP, texts: Sequence[str], source: str) -> None:
    """Class-specific contexts trained with other texts for the same classes would load silently and predict wrongly: an
    error (shared contexts carry over)."""
    ours = tuple(model.class_texts)
    if not model.prompt_learner.class_specific or len(texts) != len(ours) or tuple(texts) == ours:
        return
    i = next(i for i, (a, b) in enumerate(zip(texts, ours)) if a != b)
    found = [t for t in DFERCLIP_TEXT_TYPES if tuple(dferclip_texts(model.class_names, t)) == tuple(texts)]
    how = f"text_type={found[0]!r}" if found else f"class_texts={list(texts)!r}"
    raise ValueError(
        f"the weights from {source} were trained with other class texts than the model's (class {i}: {texts[i]!r} "
        f"in the weights, {ours[i]!r} in the model), and its prompt contexts are class-specific: build the model "
        f"with {how}")


def checkpoint_filter_fn(checkpoint: Checkpoint, model: DFERCLIP) -> Checkpoint:
    """A file's state dict -> this model's: an official one renamed (the authors' fine-tuned weights).

    Raises:
        ValueError: the file's class texts (official prompts, or those a clipdfer file records) differ from the model's
            with class-specific contexts; names the ``text_type`` or classes to build the model with.
    """
    if checkpoint.class_texts and model.has_prompt_head:
        _check_class_texts(model, checkpoint.class_texts, checkpoint.source)
    if not is_official_state_dict(checkpoint.state_dict):
        return checkpoint
    converted, extras = convert_official_state_dict(checkpoint.state_dict)
    suffix = extras.get("token_suffix")
    if suffix is not None and model.prompt_learner is not None:
        learner = model.prompt_learner
        emb = converted["text_encoder.token_embedding.weight"].float()
        own = F.embedding(learner.tokens, emb)[:, 1 + learner.n_ctx:]
        if own.shape != suffix.shape or not torch.allclose(own, suffix.float(), atol=1e-3):
            found = detect_text_type(suffix, emb, learner.n_ctx)
            if found and tuple(found[1]) != tuple(model.class_names):
                hint = (f"it was trained for {len(found[1])} classes {list(found[1])} (text_type={found[0]!r}): "
                        f"create the model with those classes (the dferclip_vitb32_"
                        f"{'mafw' if len(found[1]) == 11 else 'dfew'} architecture)")
            elif found:
                hint = f"it was trained with text_type={found[0]!r}: create the model with text_type={found[0]!r}"
            else:
                hint = "pass the class_texts it was trained with"
            raise ValueError(f"this DFER-CLIP checkpoint's prompts differ from the model's class texts; {hint}, "
                             f"or convert it with `clipdfer convert dferclip`, which reads them from the file")
    return dataclasses.replace(checkpoint, state_dict=converted, weights=checkpoint.weights or "finetuned")


def read_release(path: str, pretrained_cfg: PretrainedCfg) -> Checkpoint:
    """A file downloaded for a tag (``pretrained_cfg.url``) -> a saved model's checkpoint: an official release
    (:func:`read_official_release`), or a safetensors file or plain state dict in our names (a mirror).

    Raises:
        ReleaseMismatchError: a file named or made for another release; see :func:`read_official_release`.
    """
    check_release_name(path, pretrained_cfg)  # whatever its format, a file named as another release is refused
    if not path.endswith(".safetensors"):
        try:
            return read_official_release(path, pretrained_cfg)
        except NotOfficialCheckpointError:
            pass
    return read_state_dict_release(path, pretrained_cfg)


# ---------------------------------------------------------------------------------------------------- registry
_DATASETS = {"dfew": DFEW_CLASSES, "ferv39k": FERV39K_CLASSES, "mafw": MAFW_CLASSES}
# Where the official README links each released checkpoint.
_DRIVE = "https://drive.google.com/file/d/{}/view"
_RELEASES = {
    ("dfew", 1): "1tH1d2zZv2HtcQFPrGuVWJHXmD9sTeddQ", ("dfew", 2): "1w6yESY3cNwcOCwQa-dTxIHNWBv57PRUR",
    ("dfew", 3): "1kmI1XlZdQIr6R33tBdteyrmYl0UgyXv8", ("dfew", 4): "10pxe7fCtASuKaxpZSGb7nR6EAjN7YSR6",
    ("dfew", 5): "161pNBUgR_uPSvptzN4ZI4_L7-tvF9SD8", ("ferv39k", None): "1lRUw5eTa7TGSEombjHqCPE76oP2c_3fz",
    ("mafw", 1): "1vaICPQ9g3gfYpEcRwej6Se5qRb0LzbP6", ("mafw", 2): "1NCJU33j7yr6t_RXJeR1pO_znrN_jV5EC",
    ("mafw", 3): "12MS8ZVh582n2j37zy2Z7V85IwcnxuKC4", ("mafw", 4): "1Zs6pkzPU2Wkqb5ykrTU-csiu_c8Tpggh",
    ("mafw", 5): "1txju5MPe2eODw98Uz16iG3vxTR1GLMrx",
}


def _official_cfg(dataset: str, fold: Optional[int]) -> PretrainedCfg:
    classes = _DATASETS[dataset]
    return PretrainedCfg(
        url=_DRIVE.format(_RELEASES[(dataset, fold)]), checkpoint_format="clipdfer",
        num_classes=len(classes), class_names=classes, num_frames=16, frame_sampling="segment",
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear", finetuned=True, license="mit",
        paper_ids=_PAPER, dataset=dataset, metrics=_METRICS[dataset], origin_url=_ORIGIN,
        notes=official_notes(dataset, fold))


def _openai_cfg(dataset: str) -> PretrainedCfg:
    classes = _DATASETS[dataset]
    return PretrainedCfg(
        hf_hub_id="timm/vit_base_patch32_clip_224.openai", hf_hub_filename="open_clip_model.safetensors",
        checkpoint_format="open_clip", num_classes=len(classes), class_names=classes, num_frames=16,
        frame_sampling="segment", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear",
        license="mit", paper_ids=_PAPER + ("arXiv:2103.00020",), dataset=dataset, origin_url=_ORIGIN,
        notes="OpenAI CLIP initialisation; temporal model and prompts at their init. Not fine-tuned.")


default_cfgs = generate_default_cfgs({
    **{f"dferclip_vitb32_dfew.dfew_fold{i}": _official_cfg("dfew", i) for i in range(1, 6)},
    "dferclip_vitb32_dfew.openai": _openai_cfg("dfew"),
    "dferclip_vitb32_ferv39k.ferv39k": _official_cfg("ferv39k", None),
    "dferclip_vitb32_ferv39k.openai": _openai_cfg("ferv39k"),
    **{f"dferclip_vitb32_mafw.mafw_fold{i}": _official_cfg("mafw", i) for i in range(1, 6)},
    "dferclip_vitb32_mafw.openai": _openai_cfg("mafw"),
    "dferclip_test": PretrainedCfg(
        num_classes=7, class_names=DFEW_CLASSES, num_frames=16, input_size=(3, 32, 32), mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0), dataset="dfew", license="apache-2.0", paper_ids=_PAPER, notes="Tiny random model."),
})


def _entry(variant: str, arch: str, dataset: str, pretrained: bool, kwargs) -> DFERCLIP:
    args = dict(clip_arch=arch, class_names=_DATASETS[dataset], num_frames=16)
    args.update(kwargs)
    return build_model_with_cfg(DFERCLIP, variant, pretrained, **args)


@register_model
def dferclip_vitb32_dfew(pretrained: bool = False, **kwargs) -> DFERCLIP:
    """DFER-CLIP, ViT-B/32, DFEW's 7 classes, T = 16; tags ``.dfew_fold1``-``5`` load the official weights."""
    return _entry("dferclip_vitb32_dfew", "vitb32", "dfew", pretrained, kwargs)


@register_model
def dferclip_vitb32_ferv39k(pretrained: bool = False, **kwargs) -> DFERCLIP:
    """DFER-CLIP, ViT-B/32, FERV39k's 7 classes, T = 16; tag ``.ferv39k`` loads the official weights."""
    return _entry("dferclip_vitb32_ferv39k", "vitb32", "ferv39k", pretrained, kwargs)


@register_model
def dferclip_vitb32_mafw(pretrained: bool = False, **kwargs) -> DFERCLIP:
    """DFER-CLIP, ViT-B/32, MAFW's 11 classes, T = 16; tags ``.mafw_fold1``-``5`` load the official weights."""
    return _entry("dferclip_vitb32_mafw", "vitb32", "mafw", pretrained, kwargs)


@register_model
def dferclip_test(pretrained: bool = False, **kwargs) -> DFERCLIP:
    """Tiny DFER-CLIP (32x32 frames) for tests."""
    return _entry("dferclip_test", "test", "dfew", pretrained, kwargs)
