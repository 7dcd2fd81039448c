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

import os
import re
from typing import Dict, List, Optional, Tuple

import torch

from ..data.labels import DFEW_CLASSES, MAFW_CLASSES
from ..data.texts import DFERCLIP_TEXT_TYPES, dferclip_texts
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


def convert_checkpoint(path: str, out_dir: str, dataset: Optional[str] = None, fold: Optional[int] = None) -> str:
    """Convert an official ``.pth`` into ``out_dir`` (``config.json`` + ``model.safetensors``).

    The model arguments (classes, text setting, contexts, temporal depth, T) are read from the checkpoint; the
    pretrained cfg records the official input pipeline: 16 frames, segment sampling, no mean/std normalisation.

    Returns:
        ``out_dir``; load it with ``clipdfer.create_model("local-dir:" + out_dir)``.
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
    dataset = dataset or ("mafw" if num_classes == 11 else "dfew")
    depth = 1 + max(int(k.split(".")[2]) for k in converted if k.startswith("temporal_net.layers."))
    arch = infer_clip_arch(converted)
    model = clipdfer.create_model(
        "dferclip_test" if arch == "test" else f"dferclip_vitb32_{dataset}", clip_arch=arch,
        class_names=class_names, text_type=text_type, n_ctx=n_ctx,
        class_specific_contexts=ctx.dim() == 3, temporal_layers=depth,
        num_frames=converted["temporal_net.pos_embedding"].shape[1] - 1)
    model.load_state_dict(converted)
    model.weights = "finetuned"  # the authors' fine-tuned release (what the file is was checked above)
    tag = f"{dataset}_fold{fold}" if fold else dataset
    model.save_pretrained(out_dir, tag=tag, finetuned=True, dataset=dataset, num_frames=model.num_frames,
                          frame_sampling="segment", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                          interpolation="bilinear", license="mit",
                          origin_url="https://github.com/zengqunzhao/DFER-CLIP",
                          notes=f"Converted from the official DFER-CLIP checkpoint {os.path.basename(path)} "
                                f"(text: {text_type}). Frames: 16 per clip, the middle frame of each of 16 equal "
                                f"segments, resized to 224x224, scaled to [0, 1], no mean/std normalisation.")
    return out_dir
