"""DFER-CLIP.

Paper: Z. Zhao, I. Patras, "Prompting Visual-Language Models for Dynamic Facial Expression Recognition", BMVC 2023,
arXiv 2308.13382. Official code and checkpoints: github zengqunzhao/DFER-CLIP (MIT).

The structure, class texts, input pipeline and recipe ``dferclip`` are the official code's, so its checkpoints load and
give the same logits (``shared/spec/dferclip.md``). Ours, none changing the function: class texts looked up by class
name (``text_type``), ``set_classes``, cached prompt features; and the recipe ``dferclip_ours``.
"""

import dataclasses
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._files import file_kind, html_title
from .._safe_load import UnsafeCheckpointError, load_inert
from ..data.labels import DFEW_CLASSES, FERV39K_CLASSES, MAFW_CLASSES
from ..data.texts import DFERCLIP_TEXT_TYPES, dferclip_texts
from ..layers import CLIP_ARCHS, CLIPFrameEncoder, CLIPTextEncoder, build_open_clip, get_clip_arch, tokenize
from ..layers.clip import check_texts
from ..layers.prompt import PromptLearner, outside_inference_mode
from ..layers.temporal import TemporalTransformer
from ._base import DFERModel
from ._builder import build_model_with_cfg
from ._loading import (
    Checkpoint, ReleaseMismatchError, model_dir_config, read_state_dict_release, strip_wrapper_prefixes,
)
from ._pretrained import PretrainedCfg
from ._registry import generate_default_cfgs, get_pretrained_cfg, register_model

__all__ = ["DFERCLIP", "checkpoint_filter_fn", "read_release", "read_official_release", "convert_official_state_dict",
           "detect_text_type", "is_official_state_dict", "read_official_checkpoint", "infer_clip_arch",
           "release_from_filename", "check_release_name", "NotOfficialCheckpointError"]


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
    prompt_head_parts = ("prompt_learner", "text_encoder")
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
            ValueError: another class count with class-specific contexts; a text longer than its budget (context length
                - 2 - ``n_ctx`` tokens) unless ``truncate`` (None: as constructed; kept after).
        """
        self._require_prompt_head("set_classes")
        class_names = check_texts(class_names)
        texts = list(check_texts(class_texts, "class_texts")) if class_texts is not None else dferclip_texts(
            class_names, self.text_type)
        if len(texts) != len(class_names):
            raise ValueError(f"{len(texts)} class_texts for {len(class_names)} class_names: give one per class")
        self.prompt_learner.set_class_texts(texts, truncate)
        if truncate is not None:
            self.prompt_learner.truncate = truncate
        self.class_names, self.class_texts, self.num_classes = class_names, tuple(texts), len(class_names)
        self.clear_text_cache()

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


# ---------------------------------------------------------------------------------------------------- official files
# Official checkpoints (github zengqunzhao/DFER-CLIP) are ``torch.save({'epoch', 'state_dict', 'best_acc', 'optimizer',
# 'recorder'})`` of a ``DataParallel`` model; ``recorder`` is an object of their script's class (kept inert). Their
# keys map to ours one to one (image_encoder.* -> image_encoder.visual.*, clip_model_.token_embedding ->
# text_encoder.token_embedding, the temporal transformer's PreNorm blocks -> norm1/attn/norm2/mlp); their stored
# token_prefix / token_suffix are not weights: they tell which class texts the prompts were trained with.
_TEMPORAL = [
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.0\.fn\.norm\.", r"temporal_net.layers.\1.norm1."),
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.0\.fn\.fn\.to_qkv\.", r"temporal_net.layers.\1.attn.qkv."),
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.0\.fn\.fn\.to_out\.0\.",
     r"temporal_net.layers.\1.attn.proj."),
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.1\.fn\.norm\.", r"temporal_net.layers.\1.norm2."),
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.0\.", r"temporal_net.layers.\1.mlp.0."),
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.3\.", r"temporal_net.layers.\1.mlp.2."),
]


def is_official_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """True for a state dict of the official DFER-CLIP ``GenerateModel`` (with or without ``module.``)."""
    keys = strip_wrapper_prefixes(state_dict)
    return "prompt_learner.ctx" in keys and any(k.startswith("temporal_net.temporal_transformer.") for k in keys)


def convert_official_state_dict(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """Rename an official state dict to clipdfer's.

    Returns:
        ``(converted, extras)``: the clipdfer state dict, and ``extras`` with the official ``token_suffix`` (if
        present) for :func:`detect_text_type`.
    """
    sd = strip_wrapper_prefixes(state_dict)
    out, extras = {}, {}
    for k, v in sd.items():
        if k.startswith("image_encoder."):
            out["image_encoder.visual." + k[len("image_encoder."):]] = v
        elif k.startswith("text_encoder."):
            out[k] = v
        elif k == "clip_model_.token_embedding.weight":
            out["text_encoder.token_embedding.weight"] = v
        elif k == "prompt_learner.ctx" or k in ("temporal_net.cls_token", "temporal_net.pos_embedding"):
            out[k] = v
        elif k in ("prompt_learner.token_prefix", "prompt_learner.token_suffix"):
            extras[k.split(".")[1]] = v
        elif k.startswith("temporal_net.temporal_transformer."):
            for pattern, repl in _TEMPORAL:
                new, n = re.subn("^" + pattern, repl, k)
                if n:
                    out[new] = v
                    break
            else:
                raise ValueError(f"unexpected DFER-CLIP temporal key {k!r}")
        elif not k.startswith("clip_model_."):
            raise ValueError(f"unexpected key {k!r} in a DFER-CLIP checkpoint")
    if "text_encoder.token_embedding.weight" not in out:
        raise ValueError("the DFER-CLIP checkpoint has no clip_model_.token_embedding.weight: it cannot build prompts")
    return out, extras


def _suffix_for(texts: List[str], token_embedding: torch.Tensor, n_ctx: int) -> torch.Tensor:
    tokens = tokenize([" ".join(["X"] * n_ctx) + " " + t for t in texts])
    return torch.nn.functional.embedding(tokens, token_embedding)[:, 1 + n_ctx:]


def detect_text_type(token_suffix: torch.Tensor, token_embedding: torch.Tensor, n_ctx: int,
                     class_names_options=(DFEW_CLASSES, MAFW_CLASSES)) -> Optional[Tuple[str, Tuple[str, ...]]]:
    """Which of DFER-CLIP's text settings (and class list) produced a checkpoint's stored ``token_suffix``."""
    for names in class_names_options:
        if len(names) != token_suffix.shape[0]:
            continue
        for text_type in DFERCLIP_TEXT_TYPES:
            ours = _suffix_for(dferclip_texts(names, text_type), token_embedding.float(), n_ctx)
            if ours.shape == token_suffix.shape and torch.allclose(ours, token_suffix.float(), atol=1e-3):
                return text_type, tuple(names)
    return None


def infer_clip_arch(state_dict: Dict[str, torch.Tensor]) -> str:
    """The name in ``CLIP_ARCHS`` whose shapes the converted state dict has (``vitb32`` for real checkpoints)."""
    sd = state_dict
    width, _, patch, _ = sd["image_encoder.visual.conv1.weight"].shape
    layers = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("image_encoder.visual.transformer.resblocks."))
    text_width = sd["text_encoder.token_embedding.weight"].shape[1]
    for name, a in CLIP_ARCHS.items():
        if (a.width, a.patch_size, a.layers, a.text_width, a.embed_dim) == (
                width, patch, layers, text_width, sd["image_encoder.visual.proj"].shape[1]):
            return name
    raise ValueError(f"no known CLIP shape has width {width}, patch {patch}, {layers} layers, text width {text_width}")


class NotOfficialCheckpointError(ValueError):
    """A readable checkpoint that is not in the official release format (e.g. a plain state dict)."""


def read_official_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """The ``state_dict`` of an official DFER-CLIP ``.pth`` file, read without running any code.

    Raises:
        ValueError: a web page saved in place of the file, or a file torch cannot read (truncated, not a checkpoint).
        NotOfficialCheckpointError: a readable checkpoint of another format (a safetensors file, a plain state dict).
        UnsafeCheckpointError: the file names code to run (nothing ran).
    """
    size = os.path.getsize(path)
    kind = file_kind(path)
    if kind == "html":
        title = html_title(path)
        raise ValueError(
            f"{path!r} is an HTML page{f' ({title!r})' if title else ''}, not a checkpoint: the download got a web "
            f"page instead of the file (Google Drive: its quota, login or virus-scan page). Download it again, e.g. "
            f"in a browser from the link in {_ORIGIN}")
    if kind == "safetensors":
        raise NotOfficialCheckpointError(
            f"{path!r} is a safetensors file, not an official DFER-CLIP release (a torch.save .pth): load it with "
            f"create_model(name, checkpoint_path=...)")
    try:
        obj, _ = load_inert(path)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # torch's own reasons are long and name no file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path!r} ({size} bytes) is not a readable PyTorch checkpoint ({reason}): it is probably truncated (an "
            f"interrupted download or copy) or not a checkpoint. Download it again") from e
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not is_official_state_dict(sd):
        raise NotOfficialCheckpointError(
            f"{path!r} is not an official DFER-CLIP checkpoint (no module.prompt_learner.ctx / "
            f"temporal_net.temporal_transformer keys under 'state_dict')")
    return sd


_CLASS_COUNTS = {"dfew": 7, "ferv39k": 7, "mafw": 11}
_FOLDED = ("dfew", "mafw")  # released per fold (1-5); FERV39k has one split


def release_from_filename(filename: str) -> Tuple[Optional[str], Optional[int]]:
    """``(dataset, fold)`` as an official file name (``<DATASET>-<time>-set<N>-model_best.pth``) says them; None for
    what it does not say."""
    name = os.path.basename(filename).lower()
    dataset = next((d for d in ("ferv39k", "dfew", "mafw") if d in name), None)
    match = re.search(r"(?:set|fold)[ _-]?(\d+)", name)
    fold = int(match.group(1)) if match and dataset in _FOLDED else None
    return dataset, fold


def _tag_fold(tag: str) -> Optional[int]:
    match = re.search(r"_fold(\d+)$", tag or "")
    return int(match.group(1)) if match else None


def check_release_name(filename: str, pretrained_cfg) -> None:
    """Refuse a file whose official-style name says another dataset or fold than the tag it is loaded for.

    Raises:
        ReleaseMismatchError: naming the file, what its name says and the tag.
    """
    named_dataset, named_fold = release_from_filename(filename)
    dataset, fold = pretrained_cfg.dataset, _tag_fold(pretrained_cfg.tag)
    if named_dataset and dataset and named_dataset != dataset or named_fold and fold and named_fold != fold:
        said = f"{named_dataset.upper()}{f' fold {named_fold}' if named_fold else ''}"
        raise ReleaseMismatchError(
            f"the file is named {os.path.basename(filename)!r}, a {said} release, but {pretrained_cfg.name} is "
            f"{(dataset or '?').upper()}{f' fold {fold}' if fold else ''}: it is another release. Use that release's "
            f"tag (clipdfer.list_pretrained('dferclip*')) or point this one at the right file")


def _release(num_classes: int, filename: str, dataset: Optional[str], fold: Optional[int], pretrained_cfg):
    """The dataset and fold a release file is, from the caller, the tag it is loaded for and its file name; a
    contradiction or what cannot be told is an error."""
    named_dataset, named_fold = release_from_filename(filename)
    if pretrained_cfg is not None:
        check_release_name(filename, pretrained_cfg)
        return pretrained_cfg.dataset, _tag_fold(pretrained_cfg.tag)
    if dataset and named_dataset and dataset != named_dataset or fold is not None and named_fold and fold != named_fold:
        given = " ".join(f"--{k} {v}" for k, v in (("dataset", dataset), ("fold", fold)) if v is not None)
        raise ValueError(f"{given} contradicts the file name {os.path.basename(filename)!r} ({named_dataset} fold "
                         f"{named_fold}): check which release the file is")
    dataset = dataset or named_dataset or ("mafw" if num_classes == 11 else None)
    if dataset is None:
        raise ValueError(f"{os.path.basename(filename)!r} is a 7-class release, which DFEW's and FERV39k's both are, "
                         f"and its name does not say which: pass the dataset (--dataset dfew or --dataset ferv39k)")
    if _CLASS_COUNTS.get(dataset) != num_classes:
        raise ValueError(f"dataset {dataset!r} has {_CLASS_COUNTS.get(dataset)} classes but the checkpoint has "
                         f"{num_classes}: it is not a {dataset.upper()} release; check --dataset")
    fold = fold if fold is not None else named_fold
    if dataset not in _FOLDED and fold is not None:
        raise ValueError(f"--fold {fold}: {dataset.upper()} has one split and one release; leave --fold out")
    if fold is not None and not 1 <= fold <= 5:
        raise ValueError(f"--fold {fold}: {dataset.upper()}'s releases are folds 1-5")
    return dataset, fold


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


def read_official_release(path: str, pretrained_cfg: Optional[PretrainedCfg] = None, dataset: Optional[str] = None,
                          fold: Optional[int] = None) -> Checkpoint:
    """An official ``.pth`` -> a saved model's checkpoint (our state dict, the class texts, ``config.json``), as
    ``clipdfer convert dferclip`` writes it; nothing in the file runs and no model is built.

    The model arguments are read from the file; the config records the official input pipeline. Licence, URL and the
    paper's metrics are recorded only with ``pretrained_cfg``.

    Args:
        path: the official file.
        pretrained_cfg: the tag this file is the release of.
        dataset: ``dfew``, ``ferv39k`` or ``mafw`` (default: the tag's, the file name's, else MAFW for 11 classes).
        fold: the fold of a DFEW / MAFW release (1-5; default: the tag's or the file name's).

    Raises:
        NotOfficialCheckpointError: a readable file of another format (safetensors, a plain state dict).
        ValueError: not a readable checkpoint, prompts of no known text setting, a dataset or fold that contradicts the
            file or cannot be told.
        ReleaseMismatchError: another dataset's classes or another release's file name than ``pretrained_cfg``'s.
        UnsafeCheckpointError: the file names code to run (nothing ran).
    """
    state_dict = read_official_checkpoint(path)
    converted, extras = convert_official_state_dict(state_dict)
    ctx = converted["prompt_learner.ctx"]
    n_ctx = ctx.shape[-2]
    num_classes = ctx.shape[0] if ctx.dim() == 3 else extras["token_suffix"].shape[0]
    found = detect_text_type(extras["token_suffix"], converted["text_encoder.token_embedding.weight"], n_ctx) \
        if "token_suffix" in extras else None
    if found is None:
        raise ValueError(f"{path!r}: its prompts match none of DFER-CLIP's text settings for 7 or 11 classes; "
                         f"build the model with create_model('dferclip_vitb32_...', class_texts=[...], "
                         f"checkpoint_path=...) instead")
    text_type, class_names = found
    expected = pretrained_cfg.class_names if pretrained_cfg is not None else None
    if expected is not None and tuple(class_names) != tuple(expected):
        raise ReleaseMismatchError(
            f"it is a DFER-CLIP checkpoint for {num_classes} classes ({', '.join(class_names)}), but "
            f"{pretrained_cfg.name} is for {len(expected)} ({', '.join(expected)}): the file is another dataset's "
            f"release. Use the tag of its dataset (clipdfer.list_pretrained('dferclip*')) or point this one at the "
            f"right file")
    dataset, fold = _release(num_classes, path, dataset, fold, pretrained_cfg)
    tag = pretrained_cfg.tag if pretrained_cfg is not None else (f"{dataset}_fold{fold}" if fold else dataset)
    clip_arch = infer_clip_arch(converted)
    num_frames = converted["temporal_net.pos_embedding"].shape[1] - 1
    texts = dferclip_texts(class_names, text_type)
    model_args = dict(
        clip_arch=clip_arch, class_names=list(class_names), num_frames=num_frames, text_type=text_type, n_ctx=n_ctx,
        class_specific_contexts=ctx.dim() == 3,
        temporal_layers=1 + max(int(k.split(".")[2]) for k in converted if k.startswith("temporal_net.layers.")),
        class_texts=list(texts), truncate=False)
    architecture = "dferclip_test" if clip_arch == "test" else f"dferclip_vitb32_{dataset}"
    base = get_pretrained_cfg(architecture)
    size = "x".join(str(s) for s in base.input_size[1:])
    note = (f"Converted by clipdfer from the DFER-CLIP checkpoint {os.path.basename(path)} (official release "
            f"format, text: {text_type}). Frames: {num_frames} per clip, the middle frame of each of "
            f"{num_frames} equal segments, resized to {size}, scaled to [0, 1], no mean/std normalisation.")
    if pretrained_cfg is not None:  # the authors' release: downloaded from the tag's URL, or named (`--release`)
        record = dict(license="mit", metrics=_METRICS[dataset], url=pretrained_cfg.url,
                      notes=f"{official_notes(dataset, fold)} {note} Metrics: UAR / WAR (%) as the paper reports them "
                            f"(DFEW and MAFW: the mean over 5 folds), not measured by clipdfer.")
    else:  # the official script names everyone's runs alike: nothing claims this file is the authors' release
        record = dict(license=None, metrics=(), url=None,
                      notes=f"A DFER-CLIP checkpoint trained on {dataset.upper()}{f' fold {fold}' if fold else ''}, "
                            f"not known to be the authors' release (convert with --release TAG to record that it "
                            f"is). {training_data_terms(dataset)}. {note}")
    cfg = dataclasses.replace(
        base, tag=tag, num_classes=len(class_names), class_names=tuple(class_names), num_frames=num_frames,
        classifier=base.classifier or DFERCLIP.prompt_head_parts, finetuned=True, dataset=dataset,
        frame_sampling="segment", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear",
        paper_ids=_PAPER, origin_url=_ORIGIN, **record)
    config = model_dir_config(cfg, model_args, "finetuned", get_clip_arch(clip_arch).embed_dim)
    return Checkpoint(converted, path, "finetuned", tuple(texts), config)


# ---------------------------------------------------------------------------------------------------- registry
_DATASETS = {"dfew": DFEW_CLASSES, "ferv39k": FERV39K_CLASSES, "mafw": MAFW_CLASSES}
_PAPER = ("arXiv:2308.13382",)
_ORIGIN = "https://github.com/zengqunzhao/DFER-CLIP"
# UAR / WAR (%) reported by the paper; DFEW and MAFW are 5-fold means.
_METRICS = {"dfew": (("uar_5fold_mean", 59.61), ("war_5fold_mean", 71.25)),
            "ferv39k": (("uar", 41.27), ("war", 51.65)),
            "mafw": (("uar_5fold_mean", 39.89), ("war_5fold_mean", 52.55))}
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
# The training data's terms travel with the weights (the card, these notes, the first download's log line).
_DATA_TERMS = {
    "dfew": "DFEW is released for non-commercial research only (its licence agreement, dfew-dataset.github.io)",
    "ferv39k": "FERV39k is released for non-commercial research only (its licence agreement, "
               "wangyanckxx.github.io/Proj_CVPR2022_FERV39k.html)",
    "mafw": "MAFW is released for non-commercial research only (its licence agreement, mafw-database.github.io/MAFW)",
}


def training_data_terms(dataset: str) -> str:
    """The terms of a dataset DFER-CLIP weights were trained on, which the weights inherit."""
    return f"Trained on {dataset.upper()}: {_DATA_TERMS[dataset]}; use these weights accordingly"


def official_notes(dataset: str, fold: Optional[int]) -> str:
    """What an official release is and under which terms (its licence, its training data's)."""
    return (f"Official DFER-CLIP weights, {dataset.upper()}{f' fold {fold}' if fold else ''} (MIT licence, {_ORIGIN}). "
            f"{training_data_terms(dataset)}.")


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
