"""Building a model from its factory arguments and pretrained cfg, and loading weights into it."""

import dataclasses
import inspect
import json
import logging
import os
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ._base import WEIGHT_STATES, DFERModel
from ._hub import CLASS_TEXTS_KEY, WEIGHTS_STATE_KEY, PretrainedWeightsError, download_weights
from ._pretrained import PretrainedCfg
from ._safe_load import UnsafeCheckpointError, load_inert

__all__ = [
    "build_model_with_cfg", "load_checkpoint", "load_pretrained", "load_weights", "load_state_dict_file",
    "remap_open_clip_state_dict", "CHECKPOINT_FORMATS",
]

_logger = logging.getLogger(__name__)

# Every family names its CLIP towers the same way, so one mapping serves them all.
VISUAL_PREFIX = "image_encoder.visual."
TEXT_PREFIX = "text_encoder."
_OPEN_CLIP_TEXT = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
_OPEN_CLIP_UNUSED = ("logit_scale", "logit_bias", "attn_mask")


def _load_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(
            f"{path!r} is not a readable safetensors file ({type(e).__name__}: {e}); it is probably truncated or "
            f"corrupt, e.g. by an interrupted download or copy. Delete it and get it again (a Hub download: delete "
            f"the file from the cache, or pass force_download through hub_download; your own: save it again)") from e


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """Read a state dict without running code: safetensors, or a torch file through a restricted unpickler.

    A torch file may hold objects of its training script's classes next to the weights (as DFER-CLIP's do); they
    are kept as inert data. A wrapping ``{"state_dict": ...}`` or ``{"model": ...}`` dict is unwrapped.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist: give the path of a .safetensors file")
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    try:
        obj, _ = load_inert(path)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # not a torch file, or a pickle the restricted unpickler cannot read: never retry unsafely
        raise ValueError(
            f"cannot read {path!r} as a checkpoint ({type(e).__name__}: {e}). clipdfer never unpickles arbitrary "
            f"objects: convert the file to safetensors first") from e
    for key in ("state_dict", "model"):  # training scripts' wrappers, as timm unwraps them
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path!r} does not hold a state dict of tensors (directly or under 'state_dict' or "
                         f"'model')")
    return obj


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile


def strip_wrapper_prefixes(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Keys without the prefixes wrappers add when a wrapped model is saved: ``module.`` (DDP, DataParallel) and
    ``_orig_mod.`` (``torch.compile``), in any order and number. Only when every key has one: a model whose own
    modules had such names keeps them."""
    out = dict(state_dict)
    while out:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in out)), None)
        if prefix is None:
            return out
        out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def is_open_clip_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("visual.") for k in state_dict) and not any(k.startswith(VISUAL_PREFIX) for k in state_dict)


def remap_open_clip_state_dict(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Rename an open_clip ``CLIP`` state dict to clipdfer names (``image_encoder.visual.*``, ``text_encoder.*``).

    Text-tower weights are dropped for models without a text encoder; logit scale and bias are kept only for models
    that have them.
    """
    own = model.state_dict()
    has_text = any(k.startswith(TEXT_PREFIX) for k in own)
    out = {}
    for k, v in state_dict.items():
        if k.startswith("visual."):
            out[VISUAL_PREFIX + k[len("visual."):]] = v
        elif k.startswith(_OPEN_CLIP_TEXT):
            if has_text:
                out[TEXT_PREFIX + k] = v
        elif k.startswith(_OPEN_CLIP_UNUSED):
            if k in own:  # e.g. the zero-shot model uses CLIP's logit scale
                out[k] = v
        else:
            out[k] = v  # left for load_weights to report as unexpected
    return out


def _drop_mismatched_classifier(model: DFERModel, state_dict: Dict[str, torch.Tensor], source: str) -> set:
    """Shape conflicts: a class-dependent parameter (``model.classifier_keys``) is dropped with a warning, so that a
    model built for other classes keeps its fresh one; any other conflict is an error."""
    own = model.state_dict()
    classifier = set(model.classifier_keys)
    dropped = set()
    for k in [k for k in state_dict if k in own and state_dict[k].shape != own[k].shape]:
        if k in classifier:
            _logger.warning(
                "%s: %s has shape %s in the checkpoint but %s in the model (num_classes=%s): left at its "
                "initialisation; fine-tune it, or build the model with the checkpoint's classes",
                source, k, tuple(state_dict[k].shape), tuple(own[k].shape), model.num_classes)
            del state_dict[k]
            dropped.add(k)
        else:
            raise RuntimeError(
                f"weights from {source} do not fit {type(model).__name__}: {k} is {tuple(state_dict[k].shape)} in the "
                f"checkpoint but {tuple(own[k].shape)} in the model. Check that the model name and arguments "
                f"(backbone, num_frames, depth, widths) match the checkpoint")
    return dropped


CHECKPOINT_FORMATS = ("auto", "clipdfer", "open_clip")


def load_weights(model: DFERModel, state_dict: Dict[str, torch.Tensor], source: str,
                 checkpoint_format: str = "auto") -> bool:
    """Load a full clipdfer state dict, or an open_clip backbone-only one (the new modules keep their init).

    Args:
        checkpoint_format: ``clipdfer`` (our names, or those the family's ``checkpoint_filter_fn`` converts),
            ``open_clip`` (an open_clip/OpenAI CLIP checkpoint: the backbone), or ``auto`` to tell from the keys.

    Returns:
        True when only the CLIP backbone was loaded (an open_clip checkpoint).
    """
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise ValueError(f"checkpoint_format={checkpoint_format!r}: expected one of {CHECKPOINT_FORMATS}")
    state_dict = model.checkpoint_filter_fn(strip_wrapper_prefixes(state_dict))
    backbone_only = is_open_clip_state_dict(state_dict)
    if checkpoint_format != "auto" and backbone_only != (checkpoint_format == "open_clip"):
        found = "an open_clip CLIP checkpoint" if backbone_only else "not an open_clip CLIP checkpoint"
        raise ValueError(
            f"weights from {source} are {found}, but the pretrained cfg says checkpoint_format="
            f"{checkpoint_format!r}: fix the cfg's checkpoint_format (pretrained_cfg_overlay=dict(checkpoint_format="
            f"{'open_clip' if backbone_only else 'clipdfer'!r})) or point it at the right file")
    if backbone_only:
        state_dict = remap_open_clip_state_dict(state_dict, model)
    else:
        state_dict = dict(state_dict)
    dropped = _drop_mismatched_classifier(model, state_dict, source)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if backbone_only:
        missing = [k for k in missing if k.startswith((VISUAL_PREFIX, TEXT_PREFIX))]
    else:
        missing = [k for k in missing if k not in dropped]
    if missing or unexpected:
        raise RuntimeError(
            f"weights from {source} do not fit {type(model).__name__}: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''} ({len(missing)} in all), unexpected {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)} in all). Check that the model name and "
            f"arguments match the checkpoint")
    kind = "CLIP backbone (new modules keep their init)" if backbone_only else "all weights"
    _logger.info("loaded %s from %s", kind, source)
    return backbone_only


def _metadata(path: str) -> Dict[str, str]:
    """The metadata of a safetensors file ({} for other or unreadable files: the loader reports those)."""
    if not path.endswith(".safetensors"):
        return {}
    from safetensors import safe_open
    try:
        with safe_open(path, framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # unreadable files are reported by the loader
        return {}


def recorded_weights_state(path: str) -> Optional[str]:
    """The weights state a clipdfer safetensors file records (``save_pretrained`` writes it), or None."""
    state = _metadata(path).get(WEIGHTS_STATE_KEY)
    return state if state in WEIGHT_STATES else None


def check_recorded_class_texts(model: DFERModel, path: str, source: str) -> None:
    """The class texts a clipdfer safetensors file records (``save_pretrained`` writes those of text-prompt models)
    against the model's, by the family's rule (``DFERModel.check_class_texts``)."""
    recorded = _metadata(path).get(CLASS_TEXTS_KEY)
    if recorded and getattr(model, "class_texts", None) is not None and model.has_prompt_head:
        model.check_class_texts(json.loads(recorded), source)


def load_checkpoint(model: DFERModel, checkpoint_path: str) -> None:
    """Load a local checkpoint (.safetensors preferred) into ``model``.

    ``model.weights`` becomes what is known: ``pretrained`` for an open_clip CLIP checkpoint (the backbone), the state
    a clipdfer file records (``save_pretrained``), else ``loaded`` (unknown: assign ``model.weights = "finetuned"``
    for your own fine-tuned weights).
    """
    state_dict = load_state_dict_file(checkpoint_path)
    check_recorded_class_texts(model, checkpoint_path, checkpoint_path)
    known = model.checkpoint_weights_state(state_dict)  # a release format the family recognises
    backbone_only = load_weights(model, state_dict, checkpoint_path)
    model.weights = "pretrained" if backbone_only else (
        recorded_weights_state(checkpoint_path) or known or "loaded")


def load_pretrained(model: DFERModel, cfg: PretrainedCfg, cache_dir: Optional[str] = None) -> None:
    """Load the weights a pretrained cfg names; raise if it names none."""
    name = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    if not cfg.has_weights:
        origin = f" {cfg.notes}" if cfg.origin_url and cfg.notes else ""
        raise PretrainedWeightsError(
            f"{name!r} has no published weights.{origin} Otherwise: pretrained=False for a randomly "
            f"initialised model, checkpoint_path='weights.safetensors' for your own weights, or "
            f"pretrained_cfg_overlay=dict(file=...) (or hf_hub_id=..., url=...) to say where they are. "
            f"clipdfer.list_pretrained() lists what can be downloaded")
    path = None
    if cfg.state_dict is not None:
        state_dict, source = cfg.state_dict, f"the pretrained cfg's state_dict ({name})"
    else:
        path, source = _pretrained_file(model, cfg, name, cache_dir)
        state_dict = load_state_dict_file(path)
        check_recorded_class_texts(model, path, source)
    backbone_only = load_weights(model, state_dict, source, cfg.checkpoint_format)
    recorded = None if backbone_only or path is None else recorded_weights_state(path)
    # a file saved by clipdfer records its own state, which wins over a cfg; else the cfg says what a tag's file is
    model.weights = recorded or ("finetuned" if cfg.finetuned and not backbone_only else "pretrained")
    notice = model.weights_notice()
    if notice:
        _logger.warning("%s: these weights are %s (pretrained_cfg.finetuned is False%s); fine-tune before trusting "
                        "its predictions", name, notice, f": {cfg.notes}" if cfg.notes else "")


def _pretrained_file(model: DFERModel, cfg: PretrainedCfg, name: str, cache_dir: Optional[str]) -> Tuple[str, str]:
    """``(path, source)`` of the weight file a cfg names: ``file``, else ``hf_hub_id``, else ``url`` (also when the
    Hub copy cannot be had)."""
    if cfg.file:
        return cfg.file, cfg.file
    hub_error = None
    if cfg.hf_hub_id:
        try:
            return download_weights(cfg, cache_dir), f"{cfg.hf_hub_id}/{cfg.hf_hub_filename}"
        except PretrainedWeightsError as e:
            if not cfg.url:
                raise
            _logger.warning("%s: the Hub copy cannot be had (%s); trying the release URL %s", name, e, cfg.url)
            hub_error = e
    from ._url import url_weights
    try:
        path, _ = url_weights(model, cfg, cache_dir)
    except PretrainedWeightsError as e:
        if hub_error is None:
            raise
        raise PretrainedWeightsError(f"{e} (The Hub copy failed before: {hub_error})") from e
    return path, cfg.url


def _take_num_classes(model_cls: Callable[..., nn.Module], variant: str, kwargs: Dict) -> Optional[int]:
    """timm's ``create_model(..., num_classes=N)`` for every family.

    ``0`` (the embedding, no classifier) is applied after the weights load; a family whose constructor takes
    ``num_classes`` gets the rest; for the others (text-prompt heads, whose classes are their class texts) a count
    that differs from their classes is an error that says what to do instead.
    """
    if "num_classes" not in kwargs:
        return None
    n = kwargs["num_classes"]
    if n == 0:
        del kwargs["num_classes"]
        return 0
    if "num_classes" in inspect.signature(model_cls).parameters:
        return None
    del kwargs["num_classes"]
    names = kwargs.get("class_names")
    if names is None:
        from ._registry import get_pretrained_cfg
        names = get_pretrained_cfg(variant).class_names
    if names is not None and n == len(names):
        return None
    raise ValueError(
        f"num_classes={n}: {variant} classifies by class texts, and has {len(names or ())} (class_names "
        f"{list(names or ())}). For {n} classes pass class_names=[...] with {n} names (the text-prompt head, "
        f"trainable as it is); for a new linear head over the embedding call "
        f"model.reset_classifier({n}, linear=True) after create_model; num_classes=0 gives the embedding")


def build_model_with_cfg(
        model_cls: Callable[..., nn.Module],
        variant: str,
        pretrained: bool = False,
        pretrained_cfg: Optional[PretrainedCfg] = None,
        checkpoint_path: Optional[str] = None,
        cache_dir: Optional[str] = None,
        **kwargs,
) -> nn.Module:
    """Instantiate ``model_cls(**kwargs)``, attach the pretrained cfg of ``variant`` and load weights as asked.

    Beside the family's arguments, ``kwargs`` may hold ``num_classes`` (timm's: ``0`` for the embedding) and
    ``classifier`` (a head set by ``reset_classifier``, as a saved model's ``config.json`` records it: applied
    before its weights load).
    """
    if pretrained_cfg is None:
        from ._registry import get_pretrained_cfg
        pretrained_cfg = get_pretrained_cfg(variant)
    classifier = kwargs.pop("classifier", None)
    # timm code passes generic arguments as None to mean "the default" (global_pool=None, drop_rate=None): those that
    # this family does not take are dropped; None stays meaningful for the arguments it does take
    accepted = inspect.signature(model_cls).parameters
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k in accepted}
    num_classes = _take_num_classes(model_cls, variant, kwargs)
    model = model_cls(**kwargs)
    if getattr(model, "num_frames", None) not in (None, pretrained_cfg.num_frames):
        # an override (create_model(name, num_frames=4)): the cfg says what the model takes, as input pipelines read it
        pretrained_cfg = dataclasses.replace(pretrained_cfg, num_frames=model.num_frames)
    if pretrained_cfg.classifier is None and isinstance(model, DFERModel):
        # timm's cfg["classifier"]: the module(s) holding the class-dependent weights, as built
        pretrained_cfg = dataclasses.replace(pretrained_cfg, classifier=model.classifier_modules)
    model.pretrained_cfg = pretrained_cfg
    model.model_args = dict(kwargs)  # what config.json records to build the model again
    if classifier:
        model.reset_classifier(**classifier)
    if checkpoint_path:
        load_checkpoint(model, checkpoint_path)
    elif pretrained:
        load_pretrained(model, pretrained_cfg, cache_dir)
    if num_classes is not None:
        model.reset_classifier(num_classes)
    return model
