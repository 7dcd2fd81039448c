"""``create_model``: a registered model by name, with or without weights."""

import dataclasses
from typing import Any, Dict, Optional

from torch import nn

from ._loading import pretrained_cfg_from_config, read_model_config
from ._registry import get_pretrained_cfg, model_entrypoint

__all__ = ["create_model"]


def create_model(
        model_name: str,
        pretrained: bool = False,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        checkpoint_path: Optional[str] = None,
        cache_dir: Optional[str] = None,
        **kwargs,
) -> nn.Module:
    """Create a registered model, in training mode, with ``model.pretrained_cfg`` set (docs/weights.md).

    Args:
        model_name: ``arch`` or ``arch.tag``; or a saved model, ``hf-hub:org/repo[@revision]`` or ``local-dir:PATH``
            (these always load their weights).
        pretrained: load the tag's weights (the architecture's default tag when none is given).
        pretrained_cfg_overlay: fields of the pretrained cfg to replace, e.g. ``dict(file="w.safetensors")``.
        checkpoint_path: a local checkpoint to load instead of the tag's weights.
        cache_dir: Hub cache directory (default: huggingface_hub's).
        **kwargs: model arguments, e.g. ``num_frames=16``, ``class_names=[...]``, ``interfit=False``.
    """
    base_model = None
    if model_name.startswith(("hf-hub:", "local-dir:")):
        config, location = read_model_config(model_name, cache_dir)
        base_model = config.get("base_model") if model_name.startswith("local-dir:") else None
        entrypoint = model_entrypoint(config["architecture"])
        try:
            cfg = pretrained_cfg_from_config(config, location)
        except (ValueError, TypeError) as e:  # a hand-edited or foreign config.json
            raise ValueError(f"{model_name}: its config.json holds a bad pretrained_cfg: {e}") from e
        kwargs = {**config["model_args"], **kwargs}
        pretrained = True
    else:
        entrypoint = model_entrypoint(model_name)
        cfg = get_pretrained_cfg(model_name)
    if pretrained_cfg_overlay:
        unknown = set(pretrained_cfg_overlay) - {f.name for f in dataclasses.fields(cfg)}
        if unknown:
            raise ValueError(
                f"pretrained_cfg_overlay has unknown fields {sorted(unknown)}: PretrainedCfg fields are "
                f"{[f.name for f in dataclasses.fields(cfg)]}")
        overlay = dict(pretrained_cfg_overlay)
        if {"file", "hf_hub_id", "hf_hub_filename", "url", "state_dict"} & set(overlay) \
                and "checkpoint_format" not in overlay:
            overlay["checkpoint_format"] = "auto"  # the format the cfg records is that of the file it named before
        if "url" in overlay and "hf_hub_id" not in overlay:
            overlay["hf_hub_id"] = None  # a mirror URL is where to look, not a fallback behind the tag's Hub copy
        cfg = dataclasses.replace(cfg, **overlay)
    model = entrypoint(
        pretrained=pretrained, pretrained_cfg=cfg, checkpoint_path=checkpoint_path, cache_dir=cache_dir, **kwargs)
    if base_model and not getattr(model, "base_model", None):  # a saved model keeps the Hub repo it started from
        model.base_model = base_model
    return model
