"""Building a model: the family's module, its pretrained cfg, its weights (through :mod:`clipdfer.models._loading`) and
its weights state (docs/architecture.md gives the path).
"""

import dataclasses
import inspect
import logging
from typing import Callable, Dict, Optional

from torch import nn

from ._loading import FilterFn, ReleaseReader, load_weights, non_finite_tensors, pretrained_checkpoint, read_checkpoint
from ._pretrained import PretrainedCfg
from ._registry import family_loaders, get_pretrained_cfg

__all__ = ["build_model_with_cfg", "load_checkpoint", "load_pretrained"]

_logger = logging.getLogger(__name__)


def _filter_of(model: nn.Module) -> Optional[FilterFn]:
    cfg = getattr(model, "pretrained_cfg", None)
    return family_loaders(cfg.architecture)[0] if cfg is not None and cfg.architecture else None


def load_checkpoint(model: nn.Module, checkpoint_path: str, filter_fn: Optional[FilterFn] = None) -> None:
    """Load a local checkpoint into ``model`` (a torch file is read without running code) and record ``model.weights``:
    ``pretrained`` for an open_clip checkpoint, else what the file records or its format implies, else ``loaded``.

    Args:
        model: the model.
        checkpoint_path: the file (.safetensors, or a torch file).
        filter_fn: adapter from another code base's names (default: the family's ``checkpoint_filter_fn``).
    """
    checkpoint = read_checkpoint(checkpoint_path)
    backbone_only, checkpoint = load_weights(model, checkpoint, "auto", filter_fn or _filter_of(model))
    model.weights = "pretrained" if backbone_only else (checkpoint.weights or "loaded")


def load_pretrained(model: nn.Module, cfg: PretrainedCfg, cache_dir: Optional[str] = None,
                    filter_fn: Optional[FilterFn] = None, release_reader: Optional[ReleaseReader] = None) -> None:
    """Load the weights a pretrained cfg names (see :func:`clipdfer.models._loading.pretrained_checkpoint`).

    Raises:
        PretrainedWeightsError: the cfg names none, or they cannot be had.
    """
    loaders = family_loaders(cfg.architecture) if cfg.architecture else (None, None)
    checkpoint = pretrained_checkpoint(cfg, cache_dir, release_reader or loaders[1],
                                       getattr(model, "release_convert_command", None))
    backbone_only, checkpoint = load_weights(model, checkpoint, cfg.checkpoint_format, filter_fn or loaders[0])
    if cfg.hf_hub_id and not cfg.file and cfg.state_dict is None:  # from the Hub: a card's base_model
        model.base_model = cfg.hf_hub_id
    # a file saved by clipdfer records its own state, which wins over a cfg; else the cfg says what a tag's file is
    recorded = None if backbone_only else checkpoint.weights
    model.weights = recorded or ("finetuned" if cfg.finetuned and not backbone_only else "pretrained")
    notice = model.weights_notice()
    if notice:
        _logger.warning("%s: these weights are %s (pretrained_cfg.finetuned is False%s); fine-tune before trusting "
                        "its predictions", cfg.name, notice, f": {cfg.notes}" if cfg.notes else "")


def _take_num_classes(model_cls: Callable[..., nn.Module], variant: str, kwargs: Dict) -> Optional[int]:
    """timm's ``create_model(..., num_classes=N)`` for every family: ``0`` is applied after the weights load; a family
    without the argument (text-prompt heads) refuses a count other than its classes', saying what to do."""
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
        names = get_pretrained_cfg(variant).class_names
    if names is not None and n == len(names):
        return None
    raise ValueError(
        f"num_classes={n}: {variant} classifies by class texts, and has {len(names or ())} (class_names "
        f"{list(names or ())}). For {n} classes pass class_names=[...] with {n} names (the text-prompt head, "
        f"trainable as it is); for a new linear head over the embedding call "
        f"model.reset_classifier({n}, linear=True) after create_model; num_classes=0 gives the embedding")


# timm's generic arguments, which its scripts pass to every model: taken here for every family that does not take them
_TIMM_GENERIC = ("drop_rate", "drop_path_rate", "in_chans", "global_pool")
# timm's arguments that have no meaning here: accepted at their neutral values (what timm's train.py, validate.py and
# inference.py pass by default), refused otherwise with why and the values supported
_TIMM_NEUTRAL = {
    "scriptable": ((None, False), "clipdfer models have no layers that change for TorchScript"),
    "exportable": ((None, False), "clipdfer models have no layers that change for export (clipdfer.export exports "
                                  "them as they are)"),
    "no_jit": ((None, False), "clipdfer models use no jit-scripted layers"),
    "drop_block_rate": ((None, 0), "DropBlock drops regions of convolutional feature maps, and clipdfer's CLIP towers "
                                   "are transformers; for regularisation use drop_path_rate (stochastic depth) or "
                                   "drop_rate"),
    "bn_momentum": ((None,), "clipdfer models have no batch norm (CLIP's towers use LayerNorm)"),
    "bn_eps": ((None,), "clipdfer models have no batch norm (CLIP's towers use LayerNorm)"),
}


def _take_generic(model_cls: Callable[..., nn.Module], kwargs: Dict) -> Dict:
    """Take timm's generic arguments out of ``kwargs``: ``drop_rate`` and ``drop_path_rate`` (applied by
    ``set_drop_rates``), ``in_chans`` (3 only) and ``global_pool`` (None only); and those with no meaning here at their
    neutral values: ``scriptable``, ``exportable``, ``no_jit`` (None or False), ``drop_block_rate`` (None or 0),
    ``bn_momentum``, ``bn_eps`` (None).

    Raises:
        ValueError: an ``in_chans`` other than 3, a ``global_pool`` other than None, another value of the others.
    """
    accepted = inspect.signature(model_cls).parameters
    for name, (neutral, why) in _TIMM_NEUTRAL.items():
        if name in kwargs and name not in accepted:
            value = kwargs.pop(name)
            if not any(value is v or (type(value) in (int, float) and v is not None and value == v) for v in neutral):
                supported = f"value{'s are' if len(neutral) > 1 else ' is'} {' or '.join(map(repr, neutral))}"
                raise ValueError(f"{name}={value!r}: {why}; the supported {supported} (leave it out)")
    taken = {k: kwargs.pop(k) for k in _TIMM_GENERIC if k in kwargs and k not in accepted}
    if taken.get("in_chans", 3) != 3:
        raise ValueError(f"in_chans={taken['in_chans']!r}: clipdfer models take RGB frames, in_chans=3 (CLIP's "
                         f"input); give grey frames 3 channels, e.g. video.expand(-1, -1, 3, -1, -1)")
    if taken.get("global_pool") is not None:
        raise ValueError(f"global_pool={taken['global_pool']!r}: clipdfer models pool frames as their architecture "
                         f"defines; the supported value is None (leave it out)")
    return {k: taken[k] for k in ("drop_rate", "drop_path_rate") if taken.get(k)}


def build_model_with_cfg(
        model_cls: Callable[..., nn.Module],
        variant: str,
        pretrained: bool = False,
        pretrained_cfg: Optional[PretrainedCfg] = None,
        checkpoint_path: Optional[str] = None,
        cache_dir: Optional[str] = None,
        pretrained_filter_fn: Optional[FilterFn] = None,
        release_reader: Optional[ReleaseReader] = None,
        **kwargs,
) -> nn.Module:
    """Instantiate ``model_cls(**kwargs)``, attach the pretrained cfg of ``variant`` and load weights as asked.

    Args:
        pretrained_filter_fn, release_reader: the family's adapters (default: its module's ``checkpoint_filter_fn`` and
            ``read_release``).
        **kwargs: the family's arguments, ``num_classes`` (timm's; ``0``: the embedding), ``classifier`` (a head set
            by ``reset_classifier``, from a saved ``config.json``) and timm's generic ``drop_rate``, ``drop_path_rate``
            (:meth:`~clipdfer.models._base.DFERModel.set_drop_rates`), ``in_chans`` (3) and ``global_pool`` (None).

    Raises:
        ValueError: ``in_chans`` other than 3, ``global_pool`` other than None, a drop rate outside [0, 1).
    """
    if pretrained_cfg is None:
        pretrained_cfg = get_pretrained_cfg(variant)
    classifier = kwargs.pop("classifier", None)
    # timm code passes generic arguments as None to mean "the default" (global_pool=None, drop_rate=None): those that
    # this family does not take are dropped; None stays meaningful for the arguments it does take
    accepted = inspect.signature(model_cls).parameters
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k in accepted}
    num_classes = _take_num_classes(model_cls, variant, kwargs)
    drops = _take_generic(model_cls, kwargs)
    model = model_cls(**kwargs)
    if drops:
        model.set_drop_rates(**drops)
    size = getattr(getattr(model, "image_encoder", None), "image_size", None)
    if size is not None and tuple(pretrained_cfg.input_size[1:]) != (size, size):
        if tuple(pretrained_cfg.input_size) == tuple(get_pretrained_cfg(variant).input_size):
            # the registered size, and the model built at another (create_model(name, clip_arch=...)): the cfg says
            # what the model takes, as for num_frames below
            pretrained_cfg = dataclasses.replace(pretrained_cfg, input_size=(3, size, size))
        else:  # a size the caller or a saved config gave: every source would fail later
            raise ValueError(f"{pretrained_cfg.name}: pretrained cfg input_size={tuple(pretrained_cfg.input_size)}, "
                             f"but the model takes {size}x{size} frames: fix input_size (3, {size}, {size}) or the "
                             f"model")
    if getattr(model, "num_frames", None) not in (None, pretrained_cfg.num_frames):
        # an override (create_model(name, num_frames=4)): the cfg says what the model takes, as input pipelines read it
        pretrained_cfg = dataclasses.replace(pretrained_cfg, num_frames=model.num_frames)
    if pretrained_cfg.classifier is None and hasattr(model, "classifier_modules"):
        # timm's cfg["classifier"]: the module(s) holding the class-dependent weights, as built
        pretrained_cfg = dataclasses.replace(pretrained_cfg, classifier=model.classifier_modules)
    model.pretrained_cfg = pretrained_cfg
    model.model_args = {**kwargs, **drops}  # what config.json records to build the model again
    model.weights = "random"  # until weights load; any later change of them shows (see DFERModel.weights)
    if classifier:
        model.reset_classifier(**classifier)
    if checkpoint_path:
        load_checkpoint(model, checkpoint_path, pretrained_filter_fn)
    elif pretrained:
        load_pretrained(model, pretrained_cfg, cache_dir, pretrained_filter_fn, release_reader)
    if checkpoint_path or pretrained:
        broken = non_finite_tensors(model)
        if broken:
            _logger.warning("%s: the weights loaded hold NaN or infinity in %d tensors (%s%s): its outputs will not "
                            "be numbers; load other weights", pretrained_cfg.name, len(broken), ", ".join(broken[:5]),
                            " ..." if len(broken) > 5 else "")
    if num_classes is not None:
        model.reset_classifier(num_classes)
    return model
