"""The model registry: entry points by architecture name, and their pretrained cfgs by tag."""

import dataclasses
import difflib
import fnmatch
import sys
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ._pretrained import DefaultCfg, PretrainedCfg, join_model_name_tag, split_model_name_tag

__all__ = [
    "register_model", "list_models", "list_pretrained", "is_model", "model_entrypoint", "get_pretrained_cfg",
    "get_arch_pretrained_cfgs", "generate_default_cfgs", "family_loaders", "UnknownModelError",
]

_model_entrypoints: Dict[str, Callable] = {}
_model_to_module: Dict[str, str] = {}
_model_default_cfgs: Dict[str, DefaultCfg] = {}


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered; the message lists the nearest registered names."""


def generate_default_cfgs(cfgs: Mapping[str, PretrainedCfg]) -> Dict[str, DefaultCfg]:
    """Group ``{'arch.tag': PretrainedCfg}`` by architecture, in order (the first tag is the default; ``'arch'``: the
    empty tag)."""
    out: Dict[str, DefaultCfg] = {}
    for name, cfg in cfgs.items():
        arch, tag = split_model_name_tag(name)
        entry = out.setdefault(arch, DefaultCfg(tags=[], cfgs={}))
        if tag in entry.cfgs:
            raise ValueError(f"pretrained cfg {name!r} is defined twice")
        entry.tags.append(tag)
        entry.cfgs[tag] = dataclasses.replace(cfg, architecture=arch, tag=tag)
    return out


def register_model(fn: Callable) -> Callable:
    """Decorator: register a model factory under its function name (once); its module's ``default_cfgs`` entry, if any,
    gives its pretrained cfgs, and its ``checkpoint_filter_fn`` and ``read_release`` its loading adapters."""
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(
            f"model {name!r} is already registered (by {_model_to_module[name]}): give the new factory another name")
    if "." in name:
        raise ValueError(f"model name {name!r} must not contain '.', which separates the architecture from the tag")
    module = sys.modules[fn.__module__]
    _model_entrypoints[name] = fn
    _model_to_module[name] = fn.__module__.split(".")[-1]
    default_cfgs = getattr(module, "default_cfgs", {})
    _model_default_cfgs[name] = default_cfgs.get(name) or DefaultCfg(
        tags=[""], cfgs={"": PretrainedCfg(architecture=name)})
    if hasattr(module, "__all__") and name not in module.__all__:
        module.__all__.append(name)
    return fn


def _all_names(include_tags: bool) -> List[str]:
    names = []
    for arch in _model_entrypoints:
        tags = [t for t in _model_default_cfgs[arch].tags if t] if include_tags else []
        names.extend([join_model_name_tag(arch, t) for t in tags] or [arch])
    return names


def _match(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def list_models(
        filter: Union[str, Sequence[str]] = "",
        exclude_filters: Union[str, Sequence[str]] = (),
        pretrained: bool = False,
        include_tags: Optional[bool] = None,
        module: str = "",
) -> List[str]:
    """Registered model names, sorted.

    Args:
        filter: shell wildcard(s) a name must match, e.g. ``'clipdfer_vitb32_*'``; empty for all.
        exclude_filters: wildcard(s) that remove names.
        pretrained: only names with published weights.
        include_tags: list ``arch.tag`` names for every tag (default: True when ``pretrained``).
        module: only the models of one family file, e.g. ``'clipdfer'``.
    """
    if include_tags is None:
        include_tags = pretrained
    names = _all_names(include_tags)
    if module:
        names = [n for n in names if _model_to_module[split_model_name_tag(n)[0]] == module]
    if filter:
        patterns = [filter] if isinstance(filter, str) else list(filter)
        # a pattern without a tag matches every tag of the architectures it names
        names = [n for n in names if _match(n, patterns) or _match(split_model_name_tag(n)[0], patterns)]
    if exclude_filters:
        patterns = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
        names = [n for n in names if not _match(n, patterns)]
    if pretrained:
        names = [n for n in names if _resolve_cfg(n).has_weights]
    return sorted(names)


def list_pretrained(filter: Union[str, Sequence[str]] = "", exclude_filters: Union[str, Sequence[str]] = ()
                    ) -> List[str]:
    """``arch.tag`` names whose weights are published."""
    return list_models(filter, exclude_filters, pretrained=True, include_tags=True)


def is_model(name: str) -> bool:
    """True if the architecture of ``name`` (tag ignored) is registered."""
    return split_model_name_tag(name)[0] in _model_entrypoints


def _unknown(name: str, what: str = "model") -> UnknownModelError:
    candidates = _all_names(include_tags=True) + list(_model_entrypoints)
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnknownModelError(
        f"unknown {what} {name!r}{hint} clipdfer.list_models() lists the architectures and "
        f"clipdfer.list_models(include_tags=True) every weight tag")


def model_entrypoint(name: str) -> Callable:
    """The factory function of a registered architecture (tag ignored)."""
    arch = split_model_name_tag(name)[0]
    if arch not in _model_entrypoints:
        raise _unknown(name)
    return _model_entrypoints[arch]


def get_arch_pretrained_cfgs(arch: str) -> DefaultCfg:
    """All tags and cfgs of an architecture."""
    if arch not in _model_default_cfgs:
        raise _unknown(arch)
    return _model_default_cfgs[arch]


def _resolve_cfg(name: str) -> PretrainedCfg:
    arch, tag = split_model_name_tag(name)
    entry = get_arch_pretrained_cfgs(arch)
    if not tag:
        return entry.default
    if tag not in entry.cfgs:
        tags = ", ".join(repr(join_model_name_tag(arch, t)) for t in entry.tags if t) or "none"
        raise UnknownModelError(f"unknown weight tag {tag!r} for {arch!r}: its tags are {tags}")
    return entry.cfgs[tag]


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The pretrained cfg of ``arch.tag``, or of the architecture's default tag when ``name`` has no tag."""
    return _resolve_cfg(name)


def family_loaders(name: str) -> Tuple[Optional[Callable], Optional[Callable]]:
    """``(checkpoint_filter_fn, read_release)`` of a registered architecture's family module (None for each it lacks,
    and for an unregistered name)."""
    arch = split_model_name_tag(name)[0]
    if arch not in _model_entrypoints:
        return None, None
    module = sys.modules[_model_entrypoints[arch].__module__]
    return getattr(module, "checkpoint_filter_fn", None), getattr(module, "read_release", None)


def iter_registered() -> Iterable[str]:
    return iter(_model_entrypoints)
