"""DFER-CLIP's official files (github zengqunzhao/DFER-CLIP, MIT): functions over their state dicts, imported by the
family (``models/dferclip.py``: ``checkpoint_path`` and release URLs) and by ``clipdfer convert dferclip``; no model
is built here and no family is imported.
"""

import dataclasses
import os
import re
from typing import Dict, List, Optional, Tuple

import torch

from .._files import file_kind, html_title
from .._safe_load import UnsafeCheckpointError, load_inert
from ..data.labels import DFEW_CLASSES, MAFW_CLASSES
from ..data.texts import DFERCLIP_TEXT_TYPES, dferclip_texts
from ..layers import CLIP_ARCHS, get_clip_arch, tokenize
from ._loading import Checkpoint, ReleaseMismatchError, model_dir_config, strip_wrapper_prefixes
from ._pretrained import PretrainedCfg
from ._registry import get_pretrained_cfg

__all__ = ["read_official_release", "read_official_checkpoint", "convert_official_state_dict", "detect_text_type",
           "is_official_state_dict", "infer_clip_arch", "release_from_filename", "check_release_name",
           "official_notes", "training_data_terms", "NotOfficialCheckpointError", "PROMPT_HEAD_PARTS"]

PROMPT_HEAD_PARTS = ("prompt_learner", "text_encoder")  # the modules of DFER-CLIP's text-prompt classifier

_PAPER = ("arXiv:2308.13382",)
_ORIGIN = "https://github.com/zengqunzhao/DFER-CLIP"
# UAR / WAR (%) reported by the paper; DFEW and MAFW are 5-fold means.
_METRICS = {"dfew": (("uar_5fold_mean", 59.61), ("war_5fold_mean", 71.25)),
            "ferv39k": (("uar", 41.27), ("war", 51.65)),
            "mafw": (("uar_5fold_mean", 39.89), ("war_5fold_mean", 52.55))}
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
        classifier=base.classifier or PROMPT_HEAD_PARTS, finetuned=True, dataset=dataset,
        frame_sampling="segment", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear",
        paper_ids=_PAPER, origin_url=_ORIGIN, **record)
    config = model_dir_config(cfg, model_args, "finetuned", get_clip_arch(clip_arch).embed_dim)
    return Checkpoint(converted, path, "finetuned", tuple(texts), config)
