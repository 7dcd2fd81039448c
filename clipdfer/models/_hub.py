"""Saving and publishing models in timm's Hub format: ``save_pretrained``, ``push_to_hf_hub`` and the model card
(docs/weights.md, "Saving and publishing").
"""

import dataclasses
import math
import logging
import os
import shutil
import tempfile
from typing import Any, Dict, Optional

from torch import nn

from .._files import atomic_write
from ._download import hub_endpoint
from ._loading import CONFIG_NAME, WEIGHTS_NAME, Checkpoint, model_dir_config, read_model_config, write_model_dir
from ._pretrained import PretrainedCfg

__all__ = ["save_pretrained", "push_to_hf_hub", "push_folder_to_hf_hub", "model_config", "model_args", "model_card",
           "card_data", "HubMixin"]

_logger = logging.getLogger(__name__)


def model_config(model: nn.Module, **cfg_updates) -> Dict[str, Any]:
    """The ``config.json`` content of a registered model: enough to build it again and to prepare its input.

    Args:
        model: a model from ``clipdfer.create_model``.
        **cfg_updates: pretrained-cfg fields to record, e.g. ``finetuned=True, dataset="dfew", metrics=...``.

    Raises:
        ValueError: a model not built by ``create_model``; unknown cfg fields.
    """
    cfg: Optional[PretrainedCfg] = model.pretrained_cfg
    if cfg is None:
        raise ValueError(f"{type(model).__name__} was not built by clipdfer.create_model: it has no pretrained_cfg/"
                         "model_args to save; create it with clipdfer.create_model(name, ...)")
    unknown = set(cfg_updates) - {f.name for f in dataclasses.fields(PretrainedCfg)}
    if unknown:
        raise ValueError(f"unknown pretrained-cfg fields {sorted(unknown)}")
    if isinstance(cfg_updates.get("metrics"), dict):
        cfg_updates["metrics"] = tuple(cfg_updates["metrics"].items())
    for item in cfg_updates.get("metrics") or ():
        name, value = item if isinstance(item, (tuple, list)) and len(item) == 2 else (item, None)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"metrics: {name!r} is {value!r}: expected a finite number (e.g. metrics={{'uar': "
                             f"60.1}}); leave out a metric that was not measured")
    state = weights_state(model, cfg_updates.get("finetuned"))
    cfg_updates["finetuned"] = state == "finetuned"
    pcfg = dataclasses.replace(cfg, **cfg_updates)  # the model's pretrained_cfg follows its classes, T and head
    config = model_dir_config(pcfg, model_args(model), state, model.num_features)
    if getattr(model, "base_model", None):  # the Hub repo its weights were loaded from (a card's base_model)
        config["base_model"] = model.base_model
    return config


def model_args(model: nn.Module) -> Dict[str, Any]:
    """The arguments that build ``model`` again: the constructor's, those that changed since (the classes), and the
    classifier ``reset_classifier`` set."""
    args = {**model.model_args, **(model._class_args_before_reset or model._class_args())}
    rate = float(getattr(getattr(model, "head_drop", None), "p", 0.0) or 0.0)  # as it is now: head_drop.p = 0.2 too
    args.pop("drop_rate", None)
    if rate:
        args["drop_rate"] = rate
    if model._classifier_args is not None:
        args["classifier"] = dict(model._classifier_args)
    return args


def weights_state(model: nn.Module, finetuned: Optional[bool] = None) -> str:
    """What saved weights are recorded as: ``finetuned=True/False`` when the caller says, else ``model.weights``
    (``loaded`` stays ``loaded``, with a warning saying how to record them)."""
    state = getattr(model, "weights", "loaded")
    if finetuned is not None:
        return "finetuned" if finetuned else ("random" if state == "random" else "pretrained")
    if state == "loaded":
        _logger.warning(
            "saving weights of unknown training (changed since they were recorded: trained in your own loop, loaded "
            "with load_state_dict, or from a file that does not record it): they are recorded as such, not as "
            "fine-tuned. Pass finetuned=True (or set model.weights = 'finetuned') if they are fine-tuned")
    return state


def save_pretrained(model: nn.Module, save_directory: str, **cfg_updates) -> str:
    """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` (:func:`model_card`) into
    ``save_directory`` (made if needed), each atomically; reload with
    ``clipdfer.create_model("local-dir:" + save_directory)``, the card with ``huggingface_hub.ModelCard.load``.

    Args:
        model: a model from ``clipdfer.create_model``.
        save_directory: the directory.
        **cfg_updates: pretrained-cfg fields to record, e.g. ``finetuned=True, dataset="dfew", metrics={"uar": 60.1}``.
    """
    config = model_config(model, **cfg_updates)
    texts = getattr(model, "class_texts", None) if model.has_prompt_head else None
    checkpoint = Checkpoint(model.state_dict(), type(model).__name__, config["weights"],
                            tuple(texts) if texts is not None else None, config)
    write_model_dir(save_directory, checkpoint)
    card = model_card(config, directory=save_directory)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(card)
    atomic_write(os.path.join(save_directory, CARD_NAME), write)
    return save_directory


CARD_NAME = "README.md"
_CARD_STATES = {
    "finetuned": "fine-tuned",
    "pretrained": "not fine-tuned for expression recognition",
    "random": "random weights, not trained",
    "loaded": "weights of unrecorded training: not known to be fine-tuned",
}


def _paper_link(paper_id: str) -> str:
    return f"[{paper_id}](https://arxiv.org/abs/{paper_id[len('arXiv:'):]})" if paper_id.startswith("arXiv:") \
        else paper_id


def card_data(config: Dict[str, Any], repo_id: Optional[str] = None):
    """The card's metadata as ``huggingface_hub.ModelCardData``: library_name ``clipdfer``, pipeline_tag
    ``video-classification``, license, base_model (the config's: the Hub repo the weights were loaded from, when it is
    another), datasets and metric names from the config's pretrained cfg."""
    from huggingface_hub import EvalResult, ModelCardData
    pcfg = config["pretrained_cfg"]
    base = config.get("base_model")
    dataset = _hub_dataset(pcfg.get("dataset"))
    metrics = list(pcfg.get("metrics") or [])
    results = [EvalResult(task_type="video-classification", dataset_type=dataset, dataset_name=dataset,
                          metric_type=name, metric_value=value) for name, value in metrics] if dataset else None
    return ModelCardData(
        library_name="clipdfer", pipeline_tag="video-classification", license=pcfg.get("license") or "other",
        base_model=base if base and base != repo_id else None,
        datasets=[dataset] if dataset else None,
        metrics=[name for name, _ in metrics] or None,
        model_name=(repo_id or config["architecture"]) if results else None, eval_results=results or None,
        tags=["video-classification", "facial-expression-recognition", "clipdfer"])


def _hub_dataset(name: Optional[str]) -> Optional[str]:
    """``name`` where it is a Hugging Face Hub dataset id (``org/name``), else None: a name such as ``dfew`` is named
    in the card's text, not claimed as a Hub id in its metadata."""
    return name if isinstance(name, str) and name.count("/") == 1 and all(name.split("/")) else None


def model_card(config: Dict[str, Any], repo_id: Optional[str] = None, directory: Optional[str] = None) -> str:
    """A README.md (Hub model card) from a model's config: its metadata (:func:`card_data`), then what the weights are,
    origin and terms, paper and metrics, label order and preprocessing; loading from ``hf-hub:repo_id``, else from
    ``local-dir:PATH`` (``directory`` is not written: a card holds no local path of the machine that saved it)."""
    from huggingface_hub import ModelCard
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
    name = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH"  # no local path of the machine that saved it
    body = (
        f"# {repo_id or config['architecture']}\n\n"
        f"A `{config['architecture']}` model of [clipdfer](https://pypi.org/project/clipdfer/) "
        f"({_CARD_STATES[state]}"
        f"{', on ' + pcfg['dataset'] if pcfg.get('dataset') else ''}).\n\n"
        f"```python\nimport clipdfer\nmodel = clipdfer.create_model(\"{name}\", pretrained=True)"
        f".eval(){'  # PATH: this folder' if not repo_id else ''}\n```\n\n"
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
    return str(ModelCard(f"---\n{card_data(config, repo_id).to_yaml()}\n---\n\n{body}"))


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
    """Upload ``config.json``, ``model.safetensors`` and a generated ``README.md`` model card to ``repo_id``; returns
    the commit's URL. ``**cfg_updates`` as :func:`save_pretrained`."""
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
    """Upload a saved model directory as it is, with a model card from its config; returns the commit's URL.

    Raises:
        FileNotFoundError: the directory lacks ``config.json`` or ``model.safetensors``.
    """
    from huggingface_hub import HfApi
    config, _ = read_model_config("local-dir:" + directory)
    api = HfApi(endpoint=hub_endpoint(), token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copyfile(os.path.join(directory, name), os.path.join(tmp, name))
        with open(os.path.join(tmp, CARD_NAME), "w", encoding="utf-8") as f:
            f.write(model_card(config, repo_id))
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message,
                                 revision=revision, create_pr=create_pr)
    return str(info)


class HubMixin:
    """``save_pretrained`` and ``push_to_hub`` for clipdfer models."""

    def save_pretrained(self, save_directory: str, **cfg_updates) -> str:
        """Write ``config.json`` + ``model.safetensors`` (:func:`save_pretrained`)."""
        return save_pretrained(self, save_directory, **cfg_updates)

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload to the Hub (see :func:`clipdfer.push_to_hf_hub`)."""
        return push_to_hf_hub(self, repo_id, **kwargs)
