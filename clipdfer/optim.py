"""Optimizer parameter groups for fine-tuning in your own training loop."""

from typing import Dict, List, Optional

from torch import nn

__all__ = ["param_groups"]


def param_groups(
        model: nn.Module,
        lr: float,
        backbone_lr: Optional[float] = None,
        weight_decay: float = 0.0,
        group_lr: Optional[Dict[str, float]] = None,
        layer_decay: Optional[float] = None,
        decay_all: bool = False,
) -> List[Dict]:
    """Optimizer parameter groups: one learning rate for the pretrained CLIP backbone, another for the new modules.

    Biases, norm weights, scalars and ``model.no_weight_decay()`` get no weight decay; frozen parameters are left out.
    docs/finetuning.md has examples.

    Args:
        model: a clipdfer model (its ``group_parameters()`` and ``group_matcher()``).
        lr: learning rate of the new modules (InterFIT, MSTA, BiEhPro, heads, prompts).
        backbone_lr: learning rate of the pretrained CLIP weights; default ``lr``.
        weight_decay: weight decay of the matrices.
        group_lr: rates of other groups a model defines, e.g. ``{"prompt": 1e-3}`` (default ``lr``).
        layer_decay: BEiT's layer-wise decay in (0, 1], computed by ``timm.optim.param_groups_layer_decay``: block i of
            L gets ``layer_decay ** (L - i)`` of its group's rate, the stem ``layer_decay ** (L + 1)``, the modules
            after the backbone the full rate. None: no decay.
        decay_all: weight decay on every parameter, biases, norms and embeddings included (DFER-CLIP's official SGD).

    Returns:
        Groups for ``torch.optim.AdamW(...)``, each with a ``name``; with ``layer_decay`` also ``layer_id`` and
        ``layer_scale``, and the scale already in ``lr`` (no ``lr_scale`` key, which timm's schedulers would apply
            again).

    Raises:
        TypeError: ``model`` is not a clipdfer model.
        ValueError: ``layer_decay`` outside (0, 1], or ``group_parameters()`` leaves out a trainable parameter.
    """
    from .models import DFERModel
    if not isinstance(model, DFERModel):
        raise TypeError(f"param_groups needs a clipdfer model (its group_parameters() and group_matcher()), got "
                        f"{type(model).__name__}; for other modules use timm.optim.param_groups_layer_decay")
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay={layer_decay}: expected a factor in (0, 1], e.g. 0.75 (1: no decay)")
    names = {id(p): n for n, p in model.named_parameters()}
    skip = set(model.no_weight_decay())
    rates = {"backbone": lr if backbone_lr is None else backbone_lr, **(group_lr or {})}
    origin = {id(p): o for o, params in model.group_parameters().items() for p in params}
    # (layer id, lr scale) of every trainable parameter
    if layer_decay is None:
        placement = {id(p): (None, 1.0) for p in model.parameters() if p.requires_grad}
    else:
        from timm.models import group_parameters
        from timm.optim import param_groups_layer_decay
        layer_of = group_parameters(model, model.group_matcher(coarse=False), reverse=True)  # name -> layer id
        placement = {}
        for g in param_groups_layer_decay(model, weight_decay=weight_decay, no_weight_decay_list=sorted(skip),
                                          layer_decay=layer_decay):
            for p in g["params"]:
                placement[id(p)] = (layer_of[names[id(p)]], g["lr_scale"])
    groups: Dict[tuple, Dict] = {}
    for o, params in model.group_parameters().items():
        for p in params:
            layer, scale = placement[id(p)]
            decay = decay_all or (p.ndim > 1 and names[id(p)] not in skip)  # timm's rule: no decay on 1-d, listed
            key = (o, layer, decay)
            if key not in groups:
                name = o + ("" if layer is None else f"_layer{layer}") + ("" if decay else "_no_decay")
                groups[key] = {"name": name, "params": [], "lr": rates.get(o, lr) * scale,
                               "weight_decay": weight_decay if decay else 0.0}
                if layer is not None:
                    groups[key].update(layer_id=layer, layer_scale=scale)
            groups[key]["params"].append(p)
    missing = [names[i] for i in placement if i not in origin]
    if missing:
        raise ValueError(f"{type(model).__name__}.group_parameters() leaves out trainable parameters {missing[:5]}")
    return list(groups.values())
