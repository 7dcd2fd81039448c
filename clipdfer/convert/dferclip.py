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
from ..models._safe_load import load_inert

__all__ = ["is_official_state_dict", "convert_official_state_dict", "detect_text_type", "convert_checkpoint",
           "read_official_checkpoint", "infer_clip_arch"]

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


def read_official_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """The ``state_dict`` of an official DFER-CLIP ``.pth`` file, read without running any code."""
    obj, _ = load_inert(path)
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not is_official_state_dict(sd):
        raise ValueError(f"{path!r} is not an official DFER-CLIP checkpoint (no module.prompt_learner.ctx / "
                         f"temporal_net.temporal_transformer keys under 'state_dict')")
    return sd


_ORIGIN = "https://github.com/zengqunzhao/DFER-CLIP"


def _registered_cfg(dataset: str, tag: str):
    """The registered pretrained cfg of ``dferclip_vitb32_<dataset>.<tag>`` (or the dataset's first official tag)."""
    import clipdfer
    arch = f"dferclip_vitb32_{dataset}"
    if not clipdfer.is_model(arch):
        return None
    tags = [t for t in clipdfer.list_pretrained(f"{arch}.*") if t.split(".", 1)[1] != "openai"]
    name = f"{arch}.{tag}" if f"{arch}.{tag}" in tags else (tags[0] if tags else None)
    return clipdfer.get_pretrained_cfg(name) if name else None


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
    release's licence, paper, reported metrics and data terms (from the registered tag), and ``config["source"]``
    the file's name, sha256 and size.

    Args:
        dataset: ``dfew``, ``ferv39k`` or ``mafw`` (default: told from the class count: 11 is MAFW, 7 DFEW).
        fold: the fold of a DFEW / MAFW release (1-5), recorded in the tag.
        pretrained_cfg: the cfg of the tag this file should be (``pretrained=True`` passes it): its dataset and tag
            are used, and a checkpoint for other classes is an error.

    Returns:
        ``out_dir``; load it with ``clipdfer.create_model("local-dir:" + out_dir)``.

    Raises:
        ValueError: not an official checkpoint, prompts of no known text setting, or (with ``pretrained_cfg``)
            another dataset's classes.
        UnsafeCheckpointError: the file names code to run (nothing ran).
    """
    import clipdfer
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
            f"{name} is for {len(expected)} ({', '.join(expected)}): "
            f"the file is another dataset's release. Use the tag of its dataset (clipdfer.list_pretrained("
            f"'dferclip*')) or point this one at the right file")
    if pretrained_cfg is not None:
        dataset, tag = pretrained_cfg.dataset, pretrained_cfg.tag
    else:
        dataset = dataset or ("mafw" if num_classes == 11 else "dfew")
        tag = f"{dataset}_fold{fold}" if fold else dataset
    registered = pretrained_cfg or _registered_cfg(dataset, tag)
    depth = 1 + max(int(k.split(".")[2]) for k in converted if k.startswith("temporal_net.layers."))
    arch = infer_clip_arch(converted)
    model = clipdfer.create_model(
        "dferclip_test" if arch == "test" else f"dferclip_vitb32_{dataset}", clip_arch=arch,
        class_names=class_names, text_type=text_type, n_ctx=n_ctx,
        class_specific_contexts=ctx.dim() == 3, temporal_layers=depth,
        num_frames=converted["temporal_net.pos_embedding"].shape[1] - 1)
    model.load_state_dict(converted)
    model.weights = "finetuned"  # the authors' fine-tuned release (what the file is was checked above)
    record = ({k: getattr(registered, k) for k in ("license", "paper_ids", "metrics", "origin_url", "url", "notes")}
              if registered is not None else {"license": "mit", "origin_url": _ORIGIN})
    note = (f"Converted by clipdfer from the official DFER-CLIP checkpoint {os.path.basename(path)} (text: "
            f"{text_type}). Frames: 16 per clip, the middle frame of each of 16 equal segments, resized to 224x224, "
            f"scaled to [0, 1], no mean/std normalisation. Metrics: UAR / WAR (%) as the paper reports them (DFEW and "
            f"MAFW: the mean over 5 folds), not measured by clipdfer.")
    record["notes"] = f"{record['notes']} {note}" if record.get("notes") else note
    model.save_pretrained(out_dir, tag=tag, finetuned=True, dataset=dataset, num_frames=model.num_frames,
                          frame_sampling="segment", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                          interpolation="bilinear", **record)
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
