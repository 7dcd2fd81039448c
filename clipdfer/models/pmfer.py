"""PMFER: fine-grained vision-language alignment by prompt masking.

Paper: W. Ren, Y. Gao, et al., "Facial Expression Monitoring via Fine-Grained Vision-Language Alignment", IEEE
Transactions on Automation Science and Engineering, 2024, DOI 10.1109/TASE.2024.3464519.

Closed access, no code: from the abstract come AU-phrase prompts, prompt masking and a modal-adversarial loss.
Everything else is ours, each an argument (``shared/spec/pmfer.md``; docs/models/pmfer.md lists them).
"""

from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import DFEW_CLASSES, FERV39K_CLASSES, MAFW_CLASSES, RAFDB_CLASSES
from ..data.texts import au_prompt_bank, au_phrases as _au_phrases
from ..layers import CLIPFrameEncoder, CLIPTextEncoder, build_open_clip, tokenize
from ..layers.adversarial import dann_lambda, grad_reverse
from ..layers.biehpro import CrossAttentionBlock
from ..layers.clip import check_range, check_texts, check_video
from ..layers.prompt import CachedTextFeatures, PromptLearner
from ._builder import build_model_with_cfg
from ._base import DFERModel
from ._pretrained import PretrainedCfg
from ._registry import generate_default_cfgs, register_model

__all__ = ["PMFER", "class_prompt"]


def class_prompt(name: str, phrases: Sequence[str]) -> str:
    """The text after the context: ``"<class> face, p1, p2, ..., pK."``."""
    return f"{name} face, {', '.join(phrases)}." if phrases else f"{name} face."


class PMFER(DFERModel):
    """PMFER: images (B, 3, H, W) or clips (B, T, 3, H, W) -> (B, C) logits (per-frame logits averaged over time).

    ``forward_features``: normalised frame features (B, T, D); pre-logits: their time mean (B, D). The masking head and
    the discriminator serve only :meth:`training_losses`.

    Args:
        clip_arch: CLIP shape (ours: ``vitb16``).
        class_names: class names in label order; each needs AU phrases (the bank, or ``phrases``).
        phrases: optional ``{class: [phrase, ...]}`` replacing or adding to the bank.
        num_frames: frames per clip of the pretrained cfg (1 for a static model; any T works).
        n_ctx, ctx_init: learnable context (ours: 4 vectors initialised from "a photo of a").
        mask_layers, mask_heads: the masking head's cross-attention (ours: 2, 8).
        mask_temperature: temperature of the phrase scores (ours: 0.07).
        loss_weights: weights of the classification, masking and adversarial losses (ours: 1, 0.5, 0.1).
        logit_scale: multiplies the cosine logits (100).
        truncate: cut class prompts and phrases longer than their budget instead of raising ``ValueError`` (ours).
    """
    family = "pmfer"
    prompt_head_parts = ("prompt_learner", "text_encoder")
    text_only_parts = ("mask_query", "mask_blocks", "mask_out", "discriminator", "phrase_targets", "phrase_tokens")
    # Used only by ``training_losses``: a model trained by its forward alone leaves them without a gradient
    training_only_parts = ("mask_query", "mask_blocks", "mask_out", "discriminator")

    def __init__(
            self,
            clip_arch: str = "vitb16",
            class_names: Sequence[str] = RAFDB_CLASSES,
            phrases: Optional[Mapping[str, Sequence[str]]] = None,
            num_frames: int = 1,
            n_ctx: int = 4,
            ctx_init: Optional[str] = "a photo of a",
            mask_layers: int = 2,
            mask_heads: int = 8,
            mask_temperature: float = 0.07,
            loss_weights: Sequence[float] = (1.0, 0.5, 0.1),
            logit_scale: float = 100.0,
            truncate: bool = False,
    ):
        for name, value, low, high in (("n_ctx", n_ctx, 1, 64), ("mask_layers", mask_layers, 0, 16),
                                       ("mask_heads", mask_heads, 1, 256)):
            check_range(name, value, low, high, integer=True)
        check_range("mask_temperature", mask_temperature, 0, 100, open_low=True)
        check_range("logit_scale", logit_scale, 0, 1000, open_low=True)
        super().__init__(clip_arch, class_names, num_frames)
        arch = self.clip_arch
        self.mask_temperature = mask_temperature
        if isinstance(loss_weights, (str, bytes)) or not isinstance(loss_weights, Sequence) or len(loss_weights) != 3:
            raise ValueError(f"loss_weights={loss_weights!r}: expected three weights (classification, masking, "
                             f"adversarial), e.g. (1.0, 0.5, 0.1)")
        for i, w in enumerate(loss_weights):
            check_range(f"loss_weights[{i}]", w, 0, 1000)
        if phrases is not None and not isinstance(phrases, Mapping):
            raise ValueError(f"phrases={phrases!r}: expected a mapping from class name to its phrases, or None for "
                             f"the built-in AU phrases")
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.logit_scale = logit_scale
        given = {k: list(check_texts(v, f"phrases[{k!r}]")) for k, v in (phrases or {}).items()}
        bank = au_prompt_bank([n for n in self.class_names if n not in given])
        self.phrases = {n: given.get(n, bank.get(n)) for n in self.class_names}
        self.vocab = sorted({p for ps in self.phrases.values() for p in ps})  # the phrase vocabulary P

        clip = build_open_clip(arch)
        dim = arch.embed_dim
        self.image_encoder = CLIPFrameEncoder(clip.visual)
        self.text_encoder = CLIPTextEncoder(clip)
        self.text_encoder.requires_grad_(False)
        self.prompt_learner = PromptLearner(
            self.text_encoder, [class_prompt(n, self.phrases[n]) for n in self.class_names], n_ctx, False, ctx_init,
            truncate=truncate)
        empty = [n for n in self.class_names if not self.phrases[n]]
        if empty:
            raise ValueError(f"classes {empty} have no phrases: give phrases={{class: [...]}} for them")
        # the masking target of each class: which phrases of the vocabulary its prompt holds (C, |P|), multi-hot
        cpu = torch.device("cpu")  # label data, also when the model is built on the meta device
        targets = torch.tensor([[float(p in self.phrases[n]) for p in self.vocab] for n in self.class_names],
                               device=cpu)
        self.register_buffer("phrase_targets", targets, persistent=False)
        self.register_buffer("phrase_tokens", tokenize(self.vocab, arch.context_length, truncate), persistent=False)

        self.mask_query = nn.Parameter(torch.empty(1, 1, dim))  # the [MASK] embedding added to every phrase query
        nn.init.normal_(self.mask_query, std=0.02)
        self.mask_blocks = nn.ModuleList([CrossAttentionBlock(dim, mask_heads, 4.0) for _ in range(mask_layers)])
        self.mask_out = nn.Linear(dim, dim)
        self.discriminator = nn.Sequential(nn.Linear(dim, max(1, dim // 2)), nn.ReLU(inplace=True),
                                           nn.Linear(max(1, dim // 2), 1))
        self.phrase_cache = CachedTextFeatures()

    # ------------------------------------------------------------------ text side
    def _encode_classes(self) -> torch.Tensor:
        prompts = self.prompt_learner(self.text_encoder.token_embedding)
        return F.normalize(self.text_encoder.forward_embeddings(prompts, self.prompt_learner.eot_index), dim=-1)

    def text_features(self) -> torch.Tensor:
        """Normalised class prompt features (C, D); cached while the context is unchanged and no gradient is needed."""
        return self.text_cache(self._encode_classes, self.prompt_learner, self.text_encoder)

    def phrase_features(self) -> torch.Tensor:
        """E_P (|P|, D): each phrase encoded alone by the frozen text encoder, normalised; computed once."""
        return self.phrase_cache(lambda: F.normalize(self.text_encoder(self.phrase_tokens), dim=-1),
                                 self.text_encoder, self.phrase_tokens)

    # ------------------------------------------------------------------ inference path
    def _as_clip(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.unsqueeze(1)  # (B, 3, H, W) images -> clips of one frame
        check_video(x, self.image_encoder.image_size, name="images or video")
        return x

    def encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP image features per frame: (B, T, 3, H, W) or (B, 3, H, W) -> (B, T, D)."""
        return self.image_encoder(self._as_clip(x))

    def features_from_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised per-frame features (B, T, D)."""
        return F.normalize(frames, dim=-1)

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, D) normalised frame features -> their time mean (B, D), the pre-logits."""
        return features.mean(dim=1)

    def _prompt_logits(self, pre_logits: torch.Tensor) -> torch.Tensor:
        """The mean over frames of the per-frame cosine logits: 100 * mean_t(f_t) . text_c. (B, D) -> (B, C)."""
        return self.logit_scale * pre_logits @ self.text_features().to(pre_logits.dtype).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) or clips (B, T, 3, H, W), CLIP-normalised -> (B, C). Only the classification path."""
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ training
    def phrase_logits(self, patches: torch.Tensor) -> torch.Tensor:
        """The masking head (ours): image patch tokens (N, P, D) -> one logit per phrase of the vocabulary (N, |P|).

        A phrase's frozen text feature plus the learned [MASK] embedding queries the patches; the output's cosine with
        the phrase's feature, over ``mask_temperature``, is the logit.
        """
        phrases = self.phrase_features().to(patches.dtype)  # (|P|, D), normalised
        q = (phrases + self.mask_query[0].to(patches.dtype)).expand(patches.shape[0], -1, -1)  # (N, |P|, D)
        for block in self.mask_blocks:
            q = block(q, patches)
        q = F.normalize(self.mask_out(q), dim=-1)
        return (q * phrases).sum(dim=-1) / self.mask_temperature

    def training_losses(self, x: torch.Tensor, labels: torch.Tensor, progress: float = 0.0) -> Dict[str, torch.Tensor]:
        """The three losses of a training step.

        Args:
            x: images (B, 3, H, W) or clips (B, T, 3, H, W); each frame of a clip is an image with the clip's label.
            labels: (B,) class indices.
            progress: fraction of training done, in [0, 1] (sets the gradient-reversal weight).

        Returns:
            ``{"cls", "mask", "adv", "total"}`` and ``"mask_logits"``, ``"mask_targets"`` (N, |P|) for the N = B x T
            frames; only ``{"cls", "total"}`` once ``reset_classifier`` replaced the text side.
        """
        if not self.has_prompt_head:
            return super().training_losses(x, labels, progress)
        clips = self._as_clip(x)
        b, t = clips.shape[:2]
        y = labels.repeat_interleave(t)  # (B*T,)
        tokens = self.image_encoder.encode_tokens(clips.flatten(0, 1))  # (N, 1 + P, D)
        image = F.normalize(tokens[:, 0], dim=-1)
        text = self.text_features()  # (C, D), with gradient into the context
        loss_cls = F.cross_entropy(self.logit_scale * image @ text.t(), y)

        # prompt masking (ours; docs/models/pmfer.md says why): each phrase's presence in the face, multi-label
        # against the phrases of the label's prompt
        mask_logits = self.phrase_logits(tokens[:, 1:])  # (N, |P|)
        targets = self.phrase_targets[y].to(mask_logits.dtype)
        loss_mask = F.binary_cross_entropy_with_logits(mask_logits, targets)

        # modal-adversarial: the discriminator tells image (0) from text (1) embeddings through a reversed gradient
        weight = dann_lambda(progress)
        emb = torch.cat([grad_reverse(image, weight), grad_reverse(text[y], weight)])
        domain = torch.cat([torch.zeros(len(y)), torch.ones(len(y))]).to(emb)
        loss_adv = F.binary_cross_entropy_with_logits(self.discriminator(emb).squeeze(-1), domain)

        w_cls, w_mask, w_adv = self.loss_weights
        total = w_cls * loss_cls + w_mask * loss_mask + w_adv * loss_adv
        return {"cls": loss_cls, "mask": loss_mask, "adv": loss_adv, "total": total,
                "mask_logits": mask_logits, "mask_targets": targets}

    # ------------------------------------------------------------------ helpers
    def build_kwargs_for_classes(self, class_names: Sequence[str]) -> Optional[Dict]:
        """PMFER's classes are fixed when it is built: ``class_names``, and ``phrases`` for the classes whose phrases
        are not the built-in ones (those this model was given).

        Raises:
            ValueError: classes with no built-in action-unit phrases (nor given ones): the message gives the
                arguments with a placeholder phrase per such class, to replace by the facial actions it shows.
        """
        if not self.has_prompt_head:
            return None
        bank = _au_phrases()
        phrases = {n: list(self.phrases[n]) for n in class_names
                   if n in self.phrases and list(self.phrases[n]) != bank.get(n)}
        missing = [n for n in class_names if n not in bank and n not in phrases]
        kwargs: Dict = {"class_names": list(class_names)}
        if not missing:
            return dict(kwargs, phrases=phrases) if phrases else kwargs
        kwargs["phrases"] = dict(phrases, **{n: [f"{n} expression"] for n in missing})
        raise ValueError(
            f"PMFER's classes are fixed when it is built, and each needs action-unit phrases (its masking head learns "
            f"them); classes {missing} have none built in (built in: {sorted(bank)}): build it with "
            f"{self._build_advice(kwargs)}, replacing each placeholder phrase ('{missing[0]} expression') by the "
            f"facial actions the class shows (e.g. 'raised cheeks', 'lip corners pulled up')")

    def _class_args(self) -> Dict:
        return {"class_names": list(self.class_names), "phrases": {k: list(v) for k, v in self.phrases.items()},
                "truncate": self.prompt_learner.truncate}

    @torch.jit.ignore
    def group_parameters(self) -> Dict[str, List[nn.Parameter]]:
        """``backbone`` (the image encoder: lr 1e-5 in our recipe) and ``new`` (context, heads: 1e-3)."""
        groups: Dict[str, List[nn.Parameter]] = {"backbone": [], "new": []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups["backbone" if name.startswith("image_encoder.") else "new"].append(p)
        return groups


# ---------------------------------------------------------------------------------------------------- registry
_PAPER = ("doi:10.1109/TASE.2024.3464519",)
_DATASETS = {"rafdb": (RAFDB_CLASSES, 1), "dfew": (DFEW_CLASSES, 8), "ferv39k": (FERV39K_CLASSES, 8),
             "mafw": (MAFW_CLASSES, 8)}


def _openai_cfg(dataset: str) -> PretrainedCfg:
    classes, frames = _DATASETS[dataset]
    return PretrainedCfg(
        hf_hub_id="timm/vit_base_patch16_clip_224.openai", hf_hub_filename="open_clip_model.safetensors",
        checkpoint_format="open_clip", num_classes=len(classes), class_names=classes, num_frames=frames,
        frame_sampling="single" if frames == 1 else "segment", dataset=dataset, license="mit",
        paper_ids=_PAPER + ("arXiv:2103.00020",), origin_url="https://github.com/openai/CLIP",
        notes="OpenAI CLIP initialisation; context, masking head and discriminator at their init. Not trained.")


default_cfgs = generate_default_cfgs({
    **{f"pmfer_vitb16_{d}.openai": _openai_cfg(d) for d in _DATASETS},
    "pmfer_test": PretrainedCfg(num_classes=7, class_names=DFEW_CLASSES, num_frames=2, input_size=(3, 32, 32),
                                dataset="dfew", license="apache-2.0", paper_ids=_PAPER, notes="Tiny random model."),
})


def _entry(variant: str, arch: str, dataset: str, pretrained: bool, kwargs) -> PMFER:
    classes = _DATASETS[dataset][0]
    cfg = default_cfgs[variant]
    args = dict(clip_arch=arch, class_names=classes, num_frames=cfg.cfgs[cfg.tags[0]].num_frames)  # T as the cfg's
    args.update(kwargs)
    return build_model_with_cfg(PMFER, variant, pretrained, **args)


@register_model
def pmfer_vitb16_rafdb(pretrained: bool = False, **kwargs) -> PMFER:
    """PMFER, CLIP ViT-B/16, static images, RAF-DB's 7 basic classes."""
    return _entry("pmfer_vitb16_rafdb", "vitb16", "rafdb", pretrained, kwargs)


@register_model
def pmfer_vitb16_dfew(pretrained: bool = False, **kwargs) -> PMFER:
    """PMFER on DFEW's 7 classes: per-frame logits averaged over T = 8."""
    return _entry("pmfer_vitb16_dfew", "vitb16", "dfew", pretrained, kwargs)


@register_model
def pmfer_vitb16_ferv39k(pretrained: bool = False, **kwargs) -> PMFER:
    """PMFER on FERV39k's 7 classes (video, T = 8)."""
    return _entry("pmfer_vitb16_ferv39k", "vitb16", "ferv39k", pretrained, kwargs)


@register_model
def pmfer_vitb16_mafw(pretrained: bool = False, **kwargs) -> PMFER:
    """PMFER on MAFW's 11 classes (video, T = 8)."""
    return _entry("pmfer_vitb16_mafw", "vitb16", "mafw", pretrained, kwargs)


@register_model
def pmfer_test(pretrained: bool = False, **kwargs) -> PMFER:
    """Tiny PMFER (32x32 frames, T = 2) for tests."""
    return _entry("pmfer_test", "test", "dfew", pretrained, kwargs)
