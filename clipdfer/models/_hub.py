"""The Hugging Face Hub: downloading weight files, reading and writing models in timm's Hub format.

A model on the Hub (or in a local directory) is two files, as timm writes them:

- ``config.json``: ``{"architecture", "num_classes", "label_names", "model_args", "pretrained_cfg"}``;
- ``model.safetensors``: the state dict.

Downloads go through ``huggingface_hub.hf_hub_download``: its cache (``HF_HOME`` / ``HF_HUB_CACHE`` or
``cache_dir``), its progress bar, pinned revisions, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` (both also read when a
download is asked for, so setting them after import works). Nothing is unpickled.
"""

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Dict, Optional, Tuple

from torch import nn

from ..version import __version__
from ._pretrained import PretrainedCfg

__all__ = [
    "PretrainedWeightsError", "download_weights", "hub_download", "save_pretrained", "push_to_hf_hub",
    "push_folder_to_hf_hub",
    "load_model_config", "HubMixin", "CONFIG_NAME", "WEIGHTS_NAME",
]

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_STATE_KEY = "clipdfer_weights"  # model.safetensors metadata: what the weights are (model.weights)
CLASS_TEXTS_KEY = "clipdfer_class_texts"  # and the class texts a text-prompt head was trained with (JSON list)
_TRUE = {"1", "ON", "YES", "TRUE"}


class PretrainedWeightsError(RuntimeError):
    """Weights were asked for and cannot be had; the message says why and what to do. Never a silent fallback."""


def _endpoint() -> str:
    from huggingface_hub import constants
    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def _offline() -> bool:
    from huggingface_hub import constants
    is_offline_mode = getattr(constants, "is_offline_mode", None)  # huggingface_hub >= 1.2.1; a constant before
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE or bool(
        is_offline_mode() if is_offline_mode is not None else constants.HF_HUB_OFFLINE)


def hub_download(repo_id: str, filename: str, revision: Optional[str] = None, cache_dir: Optional[str] = None,
                 what: str = "") -> str:
    """Local path of ``filename`` from Hub repo ``repo_id``, downloaded into the cache when needed.

    Raises:
        PretrainedWeightsError: with the repo, file, revision, URL and cache path, and what to do.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    endpoint = _endpoint()
    rev = revision or "main"
    url = f"{endpoint}/{repo_id}/resolve/{rev}/{filename}"
    cache = str(cache_dir or constants.HF_HUB_CACHE)
    where = f"{repo_id}/{filename} at revision {rev!r}{f' ({what})' if what else ''}"
    offline = _offline()
    try:
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                               local_files_only=offline, library_name="clipdfer", library_version=__version__)
    except LocalEntryNotFoundError as e:
        reason = ("offline mode is on (HF_HUB_OFFLINE)" if offline else f"{endpoint} cannot be reached")
        raise PretrainedWeightsError(
            f"cannot get {where}: it is not in the cache {cache} and {reason}. Download it once while online "
            f"({url}), point HF_HOME / cache_dir at a cache that has it, or pass checkpoint_path= a local "
            f".safetensors file") from e
    except RevisionNotFoundError as e:
        raise PretrainedWeightsError(
            f"{where}: revision {rev!r} does not exist ({url}); pin an existing branch, tag or commit with "
            f"pretrained_cfg_overlay=dict(hf_hub_revision=...)") from e
    except RepositoryNotFoundError as e:
        raise PretrainedWeightsError(
            f"{where}: repository {repo_id!r} not found at {endpoint} ({url}); check the id, or log in with "
            f"`hf auth login` if it is private or gated") from e
    except EntryNotFoundError as e:
        raise PretrainedWeightsError(
            f"{where}: no such file in the repository ({url}); check the file name, or set it with "
            f"pretrained_cfg_overlay=dict(hf_hub_filename=...)") from e
    except (HfHubHTTPError, OSError) as e:
        raise PretrainedWeightsError(
            f"download of {where} from {url} failed ({type(e).__name__}: {e}); retry, or pass checkpoint_path= "
            f"a local file") from e
    except RuntimeError as e:
        # huggingface_hub 1.2.1 - 1.26 report an unreachable endpoint as "Cannot send a request, as the client has
        # been closed" (their HTTP client is fetched once, outside the retry loop; fixed in 1.27)
        if "client has been closed" not in str(e):
            raise
        raise PretrainedWeightsError(
            f"cannot get {where}: {endpoint} cannot be reached ({url}). Retry when online, point HF_HOME / cache_dir "
            f"at a cache that has it, or pass checkpoint_path= a local .safetensors file") from e


def download_weights(cfg: PretrainedCfg, cache_dir: Optional[str] = None) -> str:
    """Local path of the weight file a pretrained cfg names on the Hub."""
    name = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    return hub_download(cfg.hf_hub_id, cfg.hf_hub_filename, cfg.hf_hub_revision, cache_dir, what=f"weights of {name}")


# ------------------------------------------------------------------------------------------------- timm Hub format
def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def model_config(model: nn.Module, **cfg_updates) -> Dict[str, Any]:
    """The ``config.json`` content of a registered model: enough to build it again and to prepare its input.

    Args:
        model: a model from ``clipdfer.create_model``.
        **cfg_updates: pretrained-cfg fields to record, e.g. ``finetuned=True, dataset="dfew", metrics=...``.
    """
    cfg: PretrainedCfg = model.pretrained_cfg
    args = model.model_args
    if cfg is None:
        raise ValueError(f"{type(model).__name__} was not built by clipdfer.create_model: it has no pretrained_cfg/"
                         "model_args to save; create it with clipdfer.create_model(name, ...)")
    args = {**args, **model.export_model_args()}
    class_names = list(model.class_names) if model.class_names is not None else None
    num_classes = model.num_classes
    unknown = set(cfg_updates) - {f.name for f in dataclasses.fields(PretrainedCfg)}
    if unknown:
        raise ValueError(f"unknown pretrained-cfg fields {sorted(unknown)}")
    if isinstance(cfg_updates.get("metrics"), dict):
        cfg_updates["metrics"] = tuple(cfg_updates["metrics"].items())
    state = weights_state(model, cfg_updates.get("finetuned"))
    cfg_updates["finetuned"] = state == "finetuned"
    current = dict(num_classes=num_classes, num_frames=model.num_frames, classifier=model.classifier_modules,
                   class_names=tuple(class_names) if class_names is not None else cfg.class_names)
    pcfg = dataclasses.replace(cfg, **{**current, **cfg_updates})
    pcfg_dict = {k: v for k, v in pcfg.to_dict().items()
                 if k not in ("architecture", "hf_hub_id", "hf_hub_filename", "hf_hub_revision", "file",
                              "checkpoint_format")}
    return _jsonable({
        "architecture": cfg.architecture,
        "num_classes": num_classes,
        "num_features": model.num_features,
        "label_names": list(class_names) if class_names else None,
        "model_args": args,
        "pretrained_cfg": pcfg_dict,
        "weights": state,
        "clipdfer_version": __version__,
    })


def weights_state(model: nn.Module, finetuned: Optional[bool] = None) -> str:
    """What saved weights are recorded as: ``finetuned=True/False`` when the caller says, else ``model.weights``.

    Never guessed: weights of unknown training (``loaded``) stay ``loaded``, with a warning saying how to record them.
    """
    state = getattr(model, "weights", "loaded")
    if finetuned is not None:
        return "finetuned" if finetuned else ("random" if state == "random" else "pretrained")
    if state == "loaded":
        _logger.warning(
            "saving weights of unknown training (loaded with load_state_dict or from a file that does not record "
            "it): they are recorded as such, not as fine-tuned. Pass finetuned=True (or set model.weights = "
            "'finetuned') if they are fine-tuned")
    return state


def _atomic_write(path: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_pretrained(model: nn.Module, save_directory: str, **cfg_updates) -> str:
    """Write ``config.json`` and ``model.safetensors`` into ``save_directory`` (each written atomically).

    ``clipdfer.create_model("local-dir:" + save_directory)`` builds the same model with the same weights.

    Args:
        model: a model from ``clipdfer.create_model``.
        save_directory: created if needed.
        **cfg_updates: pretrained-cfg fields to record with the weights, e.g. ``finetuned=True, dataset="dfew",
            metrics={"uar": 60.1, "war": 72.0}, notes="..."``.
    """
    from safetensors.torch import save_file
    config = model_config(model, **cfg_updates)
    os.makedirs(save_directory, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "clipdfer_version": __version__, WEIGHTS_STATE_KEY: config["weights"]}
    if getattr(model, "class_texts", None) is not None and model.has_prompt_head:
        metadata[CLASS_TEXTS_KEY] = json.dumps(list(model.class_texts))
    _atomic_write(os.path.join(save_directory, WEIGHTS_NAME), lambda p: save_file(state, p, metadata=metadata))

    def write_json(p):
        with open(p, "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
    _atomic_write(os.path.join(save_directory, CONFIG_NAME), write_json)
    return save_directory


_CARD_STATES = {
    "finetuned": "fine-tuned",
    "pretrained": "not fine-tuned for expression recognition",
    "random": "random weights, not trained",
    "loaded": "weights of unrecorded training: not known to be fine-tuned",
}


def _paper_link(paper_id: str) -> str:
    return f"[{paper_id}](https://arxiv.org/abs/{paper_id[len('arXiv:'):]})" if paper_id.startswith("arXiv:") \
        else paper_id


def model_card(config: Dict[str, Any], repo_id: str) -> str:
    """A README.md for the Hub from a model's config: what the weights are, where they come from and under which
    terms (licence, source file, notes: e.g. the training data's terms), the paper and its metrics, the label order
    and the preprocessing."""
    pcfg = config["pretrained_cfg"]
    state = config.get("weights") or ("finetuned" if pcfg.get("finetuned") else "pretrained")  # older configs
    metrics = "".join(f"| {k} | {v} |\n" for k, v in (pcfg.get("metrics") or []))
    source = config.get("source") or {}
    origin = [f"- Licence: {pcfg.get('license') or 'not stated'}"
              + (f" (from {pcfg['origin_url']})" if pcfg.get("origin_url") else "")]
    if source:
        origin.append(f"- Converted from `{source.get('file') or source.get('url')}` (sha256 `{source.get('sha256')}`, "
                      f"{source.get('size')} bytes)" + (f", published at {pcfg['url']}" if pcfg.get("url") else ""))
    elif pcfg.get("url"):
        origin.append(f"- Published at {pcfg['url']}")
    labels = "".join(f"| {i} | {name} |\n" for i, name in enumerate(config.get("label_names") or []))
    papers = ", ".join(_paper_link(p) for p in pcfg.get("paper_ids") or [])
    return (
        f"---\nlibrary_name: clipdfer\nlicense: {pcfg.get('license') or 'other'}\ntags:\n- video-classification\n"
        f"- facial-expression-recognition\n- clipdfer\n---\n\n"
        f"# {repo_id}\n\n"
        f"A `{config['architecture']}` model of [clipdfer](https://pypi.org/project/clipdfer/) "
        f"({_CARD_STATES[state]}"
        f"{', on ' + pcfg['dataset'] if pcfg.get('dataset') else ''}).\n\n"
        f"```python\nimport clipdfer\nmodel = clipdfer.create_model(\"hf-hub:{repo_id}\", pretrained=True)"
        f".eval()\n```\n\n"
        f"## Origin and terms\n\n" + "\n".join(origin) + "\n\n"
        + (f"{pcfg['notes']}\n\n" if pcfg.get("notes") else "")
        + f"## Input\n\n- {pcfg['num_frames']} frames per clip, `{pcfg['frame_sampling']}` sampling\n"
        f"- each frame resized whole to {pcfg['input_size'][1]}x{pcfg['input_size'][2]} ({pcfg['interpolation']}), "
        f"scaled to [0, 1], then mean {pcfg['mean']}, std {pcfg['std']}\n"
        f"- face crops: {pcfg.get('crop_margin', 0.25)} of the face box's longer side added on each side "
        f"(`clipdfer predict`)\n\n"
        f"## Classes (label order)\n\n| index | class |\n|---|---|\n{labels}\n"
        + (f"## Metrics\n\n| metric | value |\n|---|---|\n{metrics}\n" if metrics else "")
        + (f"Papers: {papers}\n" if papers else "")
    )


def push_to_hf_hub(
        model: nn.Module,
        repo_id: str,
        commit_message: str = "Add clipdfer model",
        revision: Optional[str] = None,
        private: Optional[bool] = None,
        token: Optional[str] = None,
        create_pr: bool = False,
        **cfg_updates,
) -> str:
    """Upload ``config.json``, ``model.safetensors`` and a generated ``README.md`` model card to ``repo_id``.

    ``**cfg_updates`` are recorded in the config as for :func:`save_pretrained` (``finetuned``, ``metrics`` ...).

    Returns:
        The URL of the commit.
    """
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, **cfg_updates)
        return push_folder_to_hf_hub(tmp, repo_id, commit_message, revision, private, token, create_pr)


def push_folder_to_hf_hub(
        directory: str,
        repo_id: str,
        commit_message: str = "Add clipdfer model",
        revision: Optional[str] = None,
        private: Optional[bool] = None,
        token: Optional[str] = None,
        create_pr: bool = False,
) -> str:
    """Upload a saved model directory (``config.json`` + ``model.safetensors``, as ``save_pretrained`` or
    ``clipdfer convert`` write it) with a model card generated from its config; the directory is not modified.

    Returns:
        The URL of the commit.

    Raises:
        FileNotFoundError: the directory lacks one of the two files.
    """
    from huggingface_hub import HfApi
    config, _ = load_model_config("local-dir:" + directory)
    api = HfApi(endpoint=_endpoint(), token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copyfile(os.path.join(directory, name), os.path.join(tmp, name))
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write(model_card(config, repo_id))
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message,
                                 revision=revision, create_pr=create_pr)
    return str(info)


def load_model_config(source: str, cache_dir: Optional[str] = None) -> Tuple[Dict[str, Any], str]:
    """Read ``config.json`` of ``hf-hub:org/repo[@revision]`` or ``local-dir:PATH``.

    Returns:
        ``(config, weights)``: the parsed config, and a description of where the weights are:
        ``"file:<path>"`` for a local directory, ``"hub:<repo>@<revision>"`` for the Hub.
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


class HubMixin:
    """``save_pretrained`` and ``push_to_hub`` for clipdfer models."""

    def save_pretrained(self, save_directory: str, **cfg_updates) -> str:
        """Write ``config.json`` + ``model.safetensors``; reload with ``create_model("local-dir:" + directory)``.

        ``**cfg_updates``: pretrained-cfg fields to record, e.g. ``finetuned=True, metrics={"uar": 60.1}``.
        """
        return save_pretrained(self, save_directory, **cfg_updates)

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload to the Hub (see :func:`clipdfer.push_to_hf_hub`)."""
        return push_to_hf_hub(self, repo_id, **kwargs)
