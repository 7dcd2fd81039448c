"""Loading: read a weight file, turn another code base's state dict or a release into a model's, and write a saved
model's directory (``config.json`` and ``model.safetensors``, as timm writes them). Models are known here only through
their state dicts.
"""

import dataclasses
import itertools
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .._files import atomic_write, write_json
from .._safe_load import UnsafeCheckpointError, load_inert
from ..version import __version__
from ._download import PretrainedWeightsError, check_sha256, fetch_url, hub_download, is_offline
from ._pretrained import CHECKPOINT_FORMATS, WEIGHT_STATES, PretrainedCfg

__all__ = [
    "Checkpoint", "read_checkpoint", "load_weights", "strip_wrapper_prefixes", "remap_open_clip_state_dict",
    "pretrained_checkpoint", "url_cache_entry", "write_model_dir", "model_dir_config", "read_model_config",
    "pretrained_cfg_from_config", "non_finite_tensors", "ReleaseMismatchError", "CHECKPOINT_FORMATS", "CONFIG_NAME",
    "WEIGHTS_NAME",
]

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_STATE_KEY = "clipdfer_weights"  # model.safetensors metadata: what the weights are (model.weights)
CLASS_TEXTS_KEY = "clipdfer_class_texts"  # and the class texts a text-prompt head was trained with (JSON list)

# Every family names its CLIP towers the same way, so one mapping serves them all.
VISUAL_PREFIX = "image_encoder.visual."
TEXT_PREFIX = "text_encoder."
_OPEN_CLIP_TEXT = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
_OPEN_CLIP_UNUSED = ("logit_scale", "logit_bias", "attn_mask")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile


class ReleaseMismatchError(ValueError):
    """A readable release file that is not the one a tag describes (another dataset's classes, ...)."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What a weight file holds.

    Attributes:
        state_dict: the tensors.
        source: where they come from (a path, a URL, ``repo/file``), for messages.
        weights: the weights state the file records, or its format implies (an official release); None: unknown.
        class_texts: the class texts a text-prompt head was trained with, when the file records them.
        config: the ``config.json`` of the model it makes (a converted release), else None.
    """
    state_dict: Dict[str, torch.Tensor]
    source: str
    weights: Optional[str] = None
    class_texts: Optional[Tuple[str, ...]] = None
    config: Optional[Dict[str, Any]] = None


# A family's adapter from a file's contents to its own state dict (timm's ``pretrained_filter_fn``, with what the
# file records): ``(checkpoint, model) -> checkpoint`` in the model's names.
FilterFn = Callable[[Checkpoint, torch.nn.Module], Checkpoint]
# A family's reader of its release files: ``(path, pretrained_cfg) -> checkpoint`` with ``config`` set.
ReleaseReader = Callable[[str, PretrainedCfg], Checkpoint]


# ---------------------------------------------------------------------------------------------------- reading files
def _read_safetensors(path: str) -> Checkpoint:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(
            f"{path!r} is not a readable safetensors file ({type(e).__name__}: {e}); it is probably truncated or "
            f"corrupt, e.g. by an interrupted download or copy. Delete it and get it again (a Hub download: delete "
            f"the file from the cache, or pass force_download through hub_download; your own: save it again)") from e
    state = metadata.get(WEIGHTS_STATE_KEY)
    texts = metadata.get(CLASS_TEXTS_KEY)
    return Checkpoint(state_dict, path, state if state in WEIGHT_STATES else None,
                      tuple(json.loads(texts)) if texts else None)


def read_checkpoint(path: str, source: Optional[str] = None) -> Checkpoint:
    """Read a weight file without running code: safetensors (and its metadata), or a torch file through a restricted
    unpickler; a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, truncated, or not a state dict of tensors.
        UnsafeCheckpointError: the file names code to run (nothing ran).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist: give the path of a .safetensors file")
    if path.endswith(".safetensors"):
        checkpoint = _read_safetensors(path)
        return dataclasses.replace(checkpoint, source=source or path)
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
    return Checkpoint(obj, source or path)


def strip_wrapper_prefixes(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Keys without ``module.`` (DDP, DataParallel) and ``_orig_mod.`` (``torch.compile``) prefixes, in any order and
    number, when every key has one."""
    out = dict(state_dict)
    while out:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in out)), None)
        if prefix is None:
            return out
        out = {k[len(prefix):]: v for k, v in out.items()}
    return out


# ---------------------------------------------------------------------------------------------------- into a model
def is_open_clip_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("visual.") for k in state_dict) and not any(k.startswith(VISUAL_PREFIX) for k in state_dict)


def remap_open_clip_state_dict(state_dict: Dict[str, torch.Tensor], model: torch.nn.Module
                               ) -> Dict[str, torch.Tensor]:
    """An open_clip ``CLIP`` state dict in clipdfer names (``image_encoder.visual.*``, ``text_encoder.*``), without what
    the model lacks (a text tower, a logit scale or bias)."""
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


def _drop_mismatched_classifier(model, state_dict: Dict[str, torch.Tensor], source: str) -> set:
    """Shape conflicts: a class-dependent parameter (``model.classifier_keys``) is dropped with a warning; any other
    conflict is an error."""
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


def load_weights(model: torch.nn.Module, checkpoint: Checkpoint, checkpoint_format: str = "auto",
                 filter_fn: Optional[FilterFn] = None) -> Tuple[bool, Checkpoint]:
    """Load a full clipdfer state dict, or an open_clip backbone-only one (the new modules keep their init).

    Args:
        model: the model to load into.
        checkpoint: what the file holds.
        checkpoint_format: ``clipdfer``, ``open_clip`` (the backbone of an open_clip / OpenAI CLIP checkpoint), or
            ``auto`` (told from the keys).
        filter_fn: the family's adapter from another code base's state dict (:data:`FilterFn`).

    Returns:
        ``(backbone_only, checkpoint)``: whether only the CLIP backbone was loaded; the checkpoint as loaded.

    Raises:
        ValueError: a format other than ``checkpoint_format``.
        RuntimeError: keys or shapes that do not fit the model.
    """
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise ValueError(f"checkpoint_format={checkpoint_format!r}: expected one of {CHECKPOINT_FORMATS}")
    source = checkpoint.source
    checkpoint = dataclasses.replace(checkpoint, state_dict=strip_wrapper_prefixes(checkpoint.state_dict))
    if filter_fn is not None:
        checkpoint = filter_fn(checkpoint, model)
    state_dict = checkpoint.state_dict
    backbone_only = is_open_clip_state_dict(state_dict)
    if checkpoint_format != "auto" and backbone_only != (checkpoint_format == "open_clip"):
        found = "an open_clip CLIP checkpoint" if backbone_only else "not an open_clip CLIP checkpoint"
        raise ValueError(
            f"weights from {source} are {found}, but the pretrained cfg says checkpoint_format="
            f"{checkpoint_format!r}: fix the cfg's checkpoint_format (pretrained_cfg_overlay=dict(checkpoint_format="
            f"{'open_clip' if backbone_only else 'clipdfer'!r})) or point it at the right file")
    state_dict = remap_open_clip_state_dict(state_dict, model) if backbone_only else dict(state_dict)
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
    _logger.info("loaded %s from %s", "CLIP backbone (new modules keep their init)" if backbone_only
                 else "all weights", source)
    return backbone_only, checkpoint


def non_finite_tensors(model: torch.nn.Module) -> List[str]:
    """The names of the model's parameters and buffers that hold NaN or infinity."""
    # a sum is finite when every value is (one read, no mask: about 5x faster); a sum that is not, or that overflowed,
    # is checked value by value
    with torch.no_grad():
        return [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers())
                if t.is_floating_point() and not torch.isfinite(t.sum()) and not torch.isfinite(t).all()]


# ---------------------------------------------------------------------------------------------------- saved models
def model_dir_config(pretrained_cfg: PretrainedCfg, model_args: Dict[str, Any], weights: str,
                     num_features: Optional[int], source: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The ``config.json`` of a saved model (timm's fields, and ours: ``weights``, ``source``).

    Args:
        pretrained_cfg: what the weights expect (its ``num_classes`` and ``class_names`` are the model's).
        model_args: the constructor arguments that build the model again.
        weights: its weights state (:data:`WEIGHT_STATES`).
        num_features: the width of ``forward_features``.
        source: a converted release's file (``file`` or ``url``, ``sha256``, ``size``).
    """
    location = ("architecture", "hf_hub_id", "hf_hub_filename", "hf_hub_revision", "file", "checkpoint_format")
    names = pretrained_cfg.class_names
    config = {
        "architecture": pretrained_cfg.architecture,
        "num_classes": pretrained_cfg.num_classes,
        "num_features": num_features,
        "label_names": list(names) if names else None,
        "model_args": model_args,
        "pretrained_cfg": {k: v for k, v in pretrained_cfg.to_dict().items() if k not in location},
        "weights": weights,
        "clipdfer_version": __version__,
    }
    if source:
        config["source"] = source
    return json.loads(json.dumps(config))  # tuples as lists: what reading the file back gives


def write_model_dir(directory: str, checkpoint: Checkpoint) -> str:
    """Write ``checkpoint`` (its ``config`` set) as a saved model: ``model.safetensors`` and ``config.json``, each
    written once, atomically. Returns ``directory`` (made if needed).

    Raises:
        ValueError: ``directory`` is a file. OSError: a file cannot be written (permissions, a full disk).
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file
    if checkpoint.config is None:
        raise ValueError(f"{checkpoint.source}: a saved model needs its config (model_dir_config)")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"{directory!r} is a file: give a folder for the saved model (it is made if needed)")
    os.makedirs(directory, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in checkpoint.state_dict.items()}
    metadata = {"format": "pt", "clipdfer_version": __version__, WEIGHTS_STATE_KEY: checkpoint.config["weights"]}
    if checkpoint.class_texts is not None:  # the class texts the weights were trained with travel with them
        metadata[CLASS_TEXTS_KEY] = json.dumps(list(checkpoint.class_texts))
    try:
        atomic_write(os.path.join(directory, WEIGHTS_NAME), lambda tmp: save_file(tensors, tmp, metadata=metadata))
    except SafetensorError as e:  # its own type for what the OS refused (a full disk, permissions)
        raise OSError(f"cannot write {os.path.join(directory, WEIGHTS_NAME)}: {e}") from e
    write_json(os.path.join(directory, CONFIG_NAME), checkpoint.config)
    return directory


def read_model_config(source: str, cache_dir: Optional[str] = None) -> Tuple[Dict[str, Any], str]:
    """Read ``config.json`` of ``hf-hub:org/repo[@revision]`` or ``local-dir:PATH``.

    Returns:
        ``(config, weights)``: the config, and ``"file:<path>"`` or ``"hub:<repo>@<revision>"``.

    Raises:
        FileNotFoundError: a directory without its two files.
        ValueError: a malformed name or config.
        PretrainedWeightsError: the Hub's config cannot be had.
    """
    if source.startswith("local-dir:"):
        directory = os.path.expanduser(source[len("local-dir:"):])
        path = os.path.join(directory, CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{source!r}: no {CONFIG_NAME} in {directory!r}. A model directory holds {CONFIG_NAME} and "
                f"{WEIGHTS_NAME}, as model.save_pretrained(directory) writes them")
        weights = os.path.join(directory, WEIGHTS_NAME)
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{source!r}: {WEIGHTS_NAME} is missing from {directory!r}")
        location = "file:" + weights
    elif source.startswith("hf-hub:"):
        repo_id, _, revision = source[len("hf-hub:"):].partition("@")
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(f"{source!r}: expected 'hf-hub:organisation/repository' (optionally '@revision')")
        path = hub_download(repo_id, CONFIG_NAME, revision or None, cache_dir, what="model config")
        location = f"hub:{repo_id}@{revision}"
    else:
        raise ValueError(f"{source!r}: expected a name starting with 'hf-hub:' or 'local-dir:'")
    with open(path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
    for key in ("architecture", "model_args", "pretrained_cfg"):
        if key not in config:
            raise ValueError(f"{path}: missing {key!r}; it does not look like a clipdfer/timm model config")
    return config, location


def pretrained_cfg_from_config(config: Dict[str, Any], location: str) -> PretrainedCfg:
    """The pretrained cfg of a saved model, pointing at its weights."""
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    missing = [k for k in ("num_frames", "frame_sampling", "input_size", "mean", "std", "interpolation")
               if k not in config["pretrained_cfg"]]
    if missing:  # their defaults are CLIP's, not necessarily the weights': never guessed
        raise ValueError(f"pretrained_cfg lacks {missing}: how the weights' frames are prepared must be recorded "
                         f"(save the model again with save_pretrained)")
    values = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
              for k, v in config["pretrained_cfg"].items() if k in fields}
    values["architecture"] = config["architecture"]
    values["checkpoint_format"] = "clipdfer"  # save_pretrained writes our state dict
    if location.startswith("file:"):
        values["file"] = location[len("file:"):]
    else:
        repo_id, _, revision = location[len("hub:"):].partition("@")
        values.update(hf_hub_id=repo_id, hf_hub_filename=WEIGHTS_NAME, hf_hub_revision=revision or None)
    return PretrainedCfg(**values)


# ---------------------------------------------------------------------------------------------------- release URLs
def url_cache_entry(cfg: PretrainedCfg, cache_dir: Optional[str] = None) -> str:
    """The directory that holds (or will hold) the converted weights of ``cfg.url``:
    ``<cache_dir or HF_HUB_CACHE>/clipdfer-url/<arch.tag>-<hash of the URL>``."""
    import hashlib

    from huggingface_hub import constants
    root = os.path.join(os.path.expanduser(str(cache_dir or constants.HF_HUB_CACHE)), "clipdfer-url")
    return os.path.join(root, f"{cfg.name}-{hashlib.sha256(cfg.url.encode()).hexdigest()[:16]}")


def _manual_route(cfg: PretrainedCfg, convert_command: Optional[str]) -> str:
    convert = (f", or convert it once with `{convert_command}` and load create_model('local-dir:OUT_DIR')"
               if convert_command else "")
    return (f"download {cfg.url} yourself (a browser works for Google Drive), then "
            f"create_model({cfg.name!r}, checkpoint_path='FILE'){convert}")


def _cached(entry: str, url: str, sha256: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The record of a complete cache entry for ``url`` (made from a file of ``sha256`` when given), or None."""
    try:
        with open(os.path.join(entry, CONFIG_NAME)) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    source = config.get("source") or {}
    if source.get("url") != url or not os.path.isfile(os.path.join(entry, WEIGHTS_NAME)):
        return None
    if sha256 and source.get("sha256") != sha256:
        _logger.info("%s was made from a file with sha256 %s, but %s is expected: downloading again", entry,
                     source.get("sha256"), sha256)
        return None
    return config


def read_state_dict_release(path: str, cfg: PretrainedCfg) -> Checkpoint:
    """The default release reader: a state dict file in a family's names, recorded as the tag's weights."""
    checkpoint = read_checkpoint(path)
    state_dict = strip_wrapper_prefixes(checkpoint.state_dict)
    weights = checkpoint.weights or ("finetuned" if cfg.finetuned else "loaded")
    proj = state_dict.get(VISUAL_PREFIX + "proj")
    config = model_dir_config(cfg, {}, weights, int(proj.shape[-1]) if proj is not None else None)
    return dataclasses.replace(checkpoint, state_dict=state_dict, weights=weights, config=config)


def _convert(reader: ReleaseReader, path: str, cfg: PretrainedCfg, route: str) -> Checkpoint:
    """The family's reader on a downloaded file; a file it cannot read is reported as a bad download."""
    try:
        return reader(path, cfg)
    except (UnsafeCheckpointError, PretrainedWeightsError):
        raise
    except ReleaseMismatchError as e:
        raise PretrainedWeightsError(
            f"the file downloaded from {cfg.url} is not the weights of {cfg.name}: {e}. Nothing was cached") from e
    except (ValueError, RuntimeError, KeyError) as e:
        raise PretrainedWeightsError(
            f"the file downloaded from {cfg.url} ({os.path.getsize(path)} bytes) is not the weights of {cfg.name}: "
            f"{e}. A truncated or interrupted download looks like this too. Nothing was cached; retry, check the URL "
            f"(pretrained_cfg_overlay=dict(url=...)), or {route}") from e


def url_checkpoint(cfg: PretrainedCfg, cache_dir: Optional[str] = None, reader: Optional[ReleaseReader] = None,
                   convert_command: Optional[str] = None) -> Checkpoint:
    """The weights of ``cfg.url``: from the cache, else downloaded, checked, read by ``reader`` and cached as a saved
    model (docs/weights.md, "Release files at a URL").

    Raises:
        PretrainedWeightsError: offline without a cached copy, gdown missing, a failed download, a file that is not the
            tag's weights; each names the URL, the cache path and the manual route. Nothing is cached then.
        UnsafeCheckpointError: the file names code to run (nothing ran).
    """
    from filelock import FileLock

    sha256 = check_sha256(cfg.url_sha256)
    entry = url_cache_entry(cfg, cache_dir)
    route = _manual_route(cfg, convert_command)
    weights = os.path.join(entry, WEIGHTS_NAME)
    if _cached(entry, cfg.url, sha256) is not None:
        return read_checkpoint(weights, cfg.url)
    if is_offline():
        other = _cached(entry, cfg.url)  # an entry made from another file than the pinned one
        where = (f"are in the cache ({entry}) only as made from a file of sha256 {other['source'].get('sha256')}, "
                 f"not the pinned {sha256}," if other is not None else f"are not in the cache ({entry})")
        raise PretrainedWeightsError(
            f"the weights of {cfg.name} {where} and offline mode is on (HF_HUB_OFFLINE), so "
            f"{cfg.url} cannot be downloaded. Run once online (or unset HF_HUB_OFFLINE), point cache_dir / "
            f"HF_HUB_CACHE at a cache that has them, or {route}")
    root = os.path.dirname(entry)
    try:
        os.makedirs(root, exist_ok=True)
        lock = FileLock(entry + ".lock")
        lock.acquire()
    except OSError as e:
        raise PretrainedWeightsError(
            f"cannot write the cache {root} for the weights of {cfg.name} ({type(e).__name__}: {e}). Point cache_dir= "
            f"(or HF_HUB_CACHE) at a writable directory, or {route}") from e
    try:  # one download per entry, also across processes (torchrun ranks)
        if _cached(entry, cfg.url, sha256) is not None:
            return read_checkpoint(weights, cfg.url)
        prefix = f".tmp-{os.path.basename(entry)}-"
        for stale in os.listdir(root):  # left by a killed download of this entry (the lock says none is running)
            if stale.startswith(prefix):
                shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=prefix, dir=root) as tmp:
            raw, sha = fetch_url(cfg.url, os.path.join(tmp, "download"), cfg.name, route, sha256)
            size = os.path.getsize(raw)
            release = _convert(reader or read_state_dict_release, raw, cfg, route)
            # what was downloaded, not what it became
            release = dataclasses.replace(release, source=cfg.url,
                                          config={**release.config, "source": {"url": cfg.url, "sha256": sha,
                                                                               "size": size}})
            out = write_model_dir(os.path.join(tmp, "converted"), release)
            if os.path.isdir(entry):  # an incomplete entry (a crash of an older version): replaced
                shutil.rmtree(entry)
            os.replace(out, entry)  # the entry appears complete or not at all
        _logger.warning("%s: downloaded %s (sha256 %s, %d bytes), converted and cached in %s. Licence: %s (%s).%s",
                        cfg.name, cfg.url, sha, size, entry, cfg.license or "not stated", cfg.origin_url or cfg.url,
                        f" {cfg.notes}" if cfg.notes else "")
    finally:
        lock.release()
    return release


def pretrained_checkpoint(cfg: PretrainedCfg, cache_dir: Optional[str] = None, reader: Optional[ReleaseReader] = None,
                          convert_command: Optional[str] = None) -> Checkpoint:
    """The weights a pretrained cfg names, in timm's order: ``state_dict``, ``file``, ``hf_hub_id``, ``url`` (also when
    the Hub copy cannot be had).

    Raises:
        PretrainedWeightsError: the cfg names no weights, or they cannot be had (the message says what to do).
    """
    if not cfg.has_weights:
        origin = f" {cfg.notes}" if cfg.origin_url and cfg.notes else ""
        raise PretrainedWeightsError(
            f"{cfg.name!r} has no published weights.{origin} Otherwise: pretrained=False for a randomly "
            f"initialised model, checkpoint_path='weights.safetensors' for your own weights, or "
            f"pretrained_cfg_overlay=dict(file=...) (or hf_hub_id=..., url=...) to say where they are. "
            f"clipdfer.list_pretrained() lists what can be downloaded")
    if cfg.state_dict is not None:
        return Checkpoint(cfg.state_dict, f"the pretrained cfg's state_dict ({cfg.name})")
    if cfg.file:
        return read_checkpoint(cfg.file)
    hub_error = None
    if cfg.hf_hub_id:
        try:
            path = hub_download(cfg.hf_hub_id, cfg.hf_hub_filename, cfg.hf_hub_revision, cache_dir,
                                what=f"weights of {cfg.name}")
            return read_checkpoint(path, f"{cfg.hf_hub_id}/{cfg.hf_hub_filename}")
        except PretrainedWeightsError as e:
            if not cfg.url:
                raise
            _logger.warning("%s: the Hub copy cannot be had (%s); trying the release URL %s", cfg.name, e, cfg.url)
            hub_error = e
    try:
        return url_checkpoint(cfg, cache_dir, reader, convert_command)
    except PretrainedWeightsError as e:
        if hub_error is None:
            raise
        raise PretrainedWeightsError(f"{e} (The Hub copy failed before: {hub_error})") from e
