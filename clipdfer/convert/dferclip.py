"""Official DFER-CLIP checkpoints (github zengqunzhao/DFER-CLIP) -> clipdfer.

Their files are ``torch.save({'epoch', 'state_dict', 'best_acc', 'optimizer', 'recorder'})`` of a model wrapped in
``DataParallel``; ``recorder`` is an object of a class of their training script, so the file is read with
:func:`clipdfer.convert.load_inert` (nothing in it runs). Key groups and their clipdfer names:

===========================================================  ===========================================
official (after ``module.``)                                  clipdfer
===========================================================  ===========================================
``image_encoder.*``                                           ``image_encoder.visual.*``
``text_encoder.{transformer, positional_embedding, ...}``     ``text_encoder.*``
``clip_model_.token_embedding.weight``                        ``text_encoder.token_embedding.weight``
``prompt_learner.ctx``                                        ``prompt_learner.ctx``
``temporal_net.{cls_token, pos_embedding}``                   the same
``temporal_net.temporal_transformer.layers.N.0.fn.norm``      ``temporal_net.layers.N.norm1``
``...layers.N.0.fn.fn.to_qkv`` / ``to_out.0``                 ``temporal_net.layers.N.attn.qkv`` / ``.proj``
``...layers.N.1.fn.norm`` / ``fn.fn.net.0`` / ``net.3``       ``temporal_net.layers.N.norm2`` / ``mlp.0`` / ``mlp.2``
===========================================================  ===========================================

``prompt_learner.token_prefix/suffix`` (embeddings of the prompt's fixed tokens) are not weights: clipdfer looks
them up from the current class texts, and uses the stored ones only to find which class texts the model was trained
with. The rest of ``clip_model_`` (a second reference to the same CLIP) is dropped.
"""

import json
import os
import re
from typing import Dict, List, Optional, Tuple

import torch

from ..data.labels import DFEW_CLASSES, MAFW_CLASSES
from ..data.texts import DFERCLIP_TEXT_TYPES, dferclip_texts
from ..models._hub import _atomic_write
from ..models._safe_load import UnsafeCheckpointError, load_inert

__all__ = ["is_official_state_dict", "convert_official_state_dict", "detect_text_type", "convert_checkpoint",
           "read_official_checkpoint", "infer_clip_arch", "release_from_filename", "NotOfficialCheckpointError"]

_TEMPORAL = [
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.0\.fn\.norm\.", r"temporal_net.layers.\1.norm1."),
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.0\.fn\.fn\.to_qkv\.", r"temporal_net.layers.\1.attn.qkv."),
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.0\.fn\.fn\.to_out\.0\.",
     r"temporal_net.layers.\1.attn.proj."),
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.1\.fn\.norm\.", r"temporal_net.layers.\1.norm2."),
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.0\.", r"temporal_net.layers.\1.mlp.0."),
    (r"temporal_net\.temporal_transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.3\.", r"temporal_net.layers.\1.mlp.2."),
]


def _strip_module(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def is_official_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """True for a state dict of the official DFER-CLIP ``GenerateModel`` (with or without ``module.``)."""
    keys = _strip_module(state_dict)
    return "prompt_learner.ctx" in keys and any(k.startswith("temporal_net.temporal_transformer.") for k in keys)


def convert_official_state_dict(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """Rename an official state dict to clipdfer's.

    Returns:
        ``(converted, extras)``: the clipdfer state dict, and ``extras`` with the official ``token_suffix`` (if
        present) for :func:`detect_text_type`.
    """
    sd = _strip_module(state_dict)
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
    from ..layers.clip import tokenize
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
    from ..layers.clip import CLIP_ARCHS
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
    from ..models._safe_load import file_kind, html_title
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


_ORIGIN = "https://github.com/zengqunzhao/DFER-CLIP"
_CLASS_COUNTS = {"dfew": 7, "ferv39k": 7, "mafw": 11}
_FOLDED = ("dfew", "mafw")  # released per fold (1-5); FERV39k has one split


def release_from_filename(filename: str) -> Tuple[Optional[str], Optional[int]]:
    """``(dataset, fold)`` as an official file name says them (the official script names its checkpoints
    ``<DATASET>-<time>-set<N>-model_best.pth``); None for what it does not say."""
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
    from ..models._url import ReleaseMismatchError
    named_dataset, named_fold = release_from_filename(filename)
    name = ".".join(filter(None, (pretrained_cfg.architecture, pretrained_cfg.tag)))
    dataset, fold = pretrained_cfg.dataset, _tag_fold(pretrained_cfg.tag)
    if named_dataset and dataset and named_dataset != dataset or named_fold and fold and named_fold != fold:
        said = f"{named_dataset.upper()}{f' fold {named_fold}' if named_fold else ''}"
        raise ReleaseMismatchError(
            f"the file is named {os.path.basename(filename)!r}, a {said} release, but {name} is "
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


def _file_record(path: str) -> Dict:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"file": os.path.basename(path), "sha256": h.hexdigest(), "size": os.path.getsize(path)}


def convert_checkpoint(path: str, out_dir: str, dataset: Optional[str] = None, fold: Optional[int] = None,
                       pretrained_cfg=None) -> str:
    """Convert an official ``.pth`` into ``out_dir`` (``config.json`` + ``model.safetensors``).

    The model arguments (classes, text setting, contexts, temporal depth, T) are read from the checkpoint; the
    pretrained cfg records the official input pipeline (16 frames, segment sampling, no mean/std normalisation), the
    release's licence, paper, reported metrics and data terms, its URL when the file is a known release (dataset and
    fold), and ``config["source"]`` the file's name, sha256 and size.

    Args:
        dataset: ``dfew``, ``ferv39k`` or ``mafw`` (default: from the file name, e.g. ``DFEW-...-set1-model_best.pth``,
            else MAFW for 11 classes; 7 classes with a name that does not say are an error).
        fold: the fold of a DFEW / MAFW release (1-5; default: from the file name).
        pretrained_cfg: the cfg of the tag this file should be (``pretrained=True`` passes it): its dataset and fold
            are used, and a file of other classes, or named as another release, is an error.

    Returns:
        ``out_dir``; load it with ``clipdfer.create_model("local-dir:" + out_dir)``.

    Raises:
        ValueError: not a readable official checkpoint, prompts of no known text setting, a dataset or fold that
            contradicts the file or cannot be told.
        UnsafeCheckpointError: the file names code to run (nothing ran).
    """
    import clipdfer
    from ..models.dferclip import official_notes, training_data_terms
    sd = read_official_checkpoint(path)
    converted, extras = convert_official_state_dict(sd)
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
        from ..models._url import ReleaseMismatchError
        name = ".".join(filter(None, (pretrained_cfg.architecture, pretrained_cfg.tag)))
        raise ReleaseMismatchError(
            f"it is a DFER-CLIP checkpoint for {num_classes} classes ({', '.join(class_names)}), but "
            f"{name} is for {len(expected)} ({', '.join(expected)}): the file is another dataset's release. Use the "
            f"tag of its dataset (clipdfer.list_pretrained('dferclip*')) or point this one at the right file")
    dataset, fold = _release(num_classes, path, dataset, fold, pretrained_cfg)
    tag = pretrained_cfg.tag if pretrained_cfg is not None else (f"{dataset}_fold{fold}" if fold else dataset)
    depth = 1 + max(int(k.split(".")[2]) for k in converted if k.startswith("temporal_net.layers."))
    arch = infer_clip_arch(converted)
    model = clipdfer.create_model(
        "dferclip_test" if arch == "test" else f"dferclip_vitb32_{dataset}", clip_arch=arch,
        class_names=class_names, text_type=text_type, n_ctx=n_ctx,
        class_specific_contexts=ctx.dim() == 3, temporal_layers=depth,
        num_frames=converted["temporal_net.pos_embedding"].shape[1] - 1)
    model.load_state_dict(converted)
    model.weights = "finetuned"  # a DFER-CLIP training checkpoint: trained for expressions
    dataset_cfg = clipdfer.get_pretrained_cfg(f"dferclip_vitb32_{dataset}")
    size = "x".join(str(s) for s in model.pretrained_cfg.input_size[1:])
    note = (f"Converted by clipdfer from the DFER-CLIP checkpoint {os.path.basename(path)} (official release "
            f"format, text: {text_type}). Frames: {model.num_frames} per clip, the middle frame of each of "
            f"{model.num_frames} equal segments, resized to {size}, scaled to [0, 1], no mean/std normalisation.")
    if pretrained_cfg is not None:
        # the authors' release: downloaded from the tag's URL, or named by the caller (`--release`)
        record = dict(license="mit", metrics=dataset_cfg.metrics, url=pretrained_cfg.url,
                      notes=f"{official_notes(dataset, fold)} {note} Metrics: UAR / WAR (%) as the paper reports them "
                            f"(DFEW and MAFW: the mean over 5 folds), not measured by clipdfer.")
    else:  # the official script names everyone's runs alike: nothing claims this file is the authors' release
        record = dict(license=None, metrics=(), url=None,
                      notes=f"A DFER-CLIP checkpoint trained on {dataset.upper()}{f' fold {fold}' if fold else ''}, "
                            f"not known to be the authors' release (convert with --release TAG to record that it "
                            f"is). {training_data_terms(dataset)}. {note}")
    model.save_pretrained(
        out_dir, tag=tag, finetuned=True, dataset=dataset, num_frames=model.num_frames, frame_sampling="segment",
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear", paper_ids=dataset_cfg.paper_ids,
        origin_url=_ORIGIN, **record)
    config_path = os.path.join(out_dir, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["source"] = _file_record(path)

    def write(p):
        with open(p, "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
    _atomic_write(config_path, write)
    return out_dir
