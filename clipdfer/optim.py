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
    """Parameter groups with one learning rate for the pretrained CLIP backbone and another for the new modules.

    Biases, norm weights, scalars and the names in ``model.no_weight_decay()`` get no weight decay. Frozen
    parameters (the text encoder by default) are left out.

    Args:
        model: a clipdfer model (``group_parameters()`` says which parameters are backbone, new, prompt ...).
        lr: learning rate of the new modules (InterFIT, MSTA, BiEhPro, heads, prompts).
        backbone_lr: learning rate of the pretrained CLIP weights; default ``lr``.
        weight_decay: weight decay of the matrices.
        group_lr: learning rates of other groups a model defines, e.g. ``{"prompt": 1e-3}`` for DFER-CLIP's contexts
            (default ``lr``).
        layer_decay: layer-wise learning-rate decay (BEiT's, as ``timm.optim.param_groups_layer_decay`` computes it
            from ``model.group_matcher()``): with L visual blocks, block i (0-based) gets ``layer_decay ** (L - i)``
            of its group's rate, the stem (patch, class and positional embeddings) ``layer_decay ** (L + 1)``, and
            everything after the backbone (temporal modules, prompts, heads) the full rate. None: no decay.
        decay_all: weight decay on every parameter, biases, norms and embeddings included (as DFER-CLIP's official
            SGD, and plain ``torch.optim.SGD(model.parameters(), weight_decay=...)``).

    Returns:
        A list for ``torch.optim.AdamW(param_groups(...))``; each group has a ``name`` and, with ``layer_decay``, its
        ``layer_id`` and ``layer_scale``. Its ``lr`` already includes the layer scale, so any scheduler that scales
        each group's initial rate (torch's, timm's, clipdfer's) keeps the decay; the groups deliberately carry no
        ``lr_scale`` key, which timm's schedulers would apply a second time.

    Example::

        opt = torch.optim.AdamW(clipdfer.optim.param_groups(model, lr=1e-3, backbone_lr=1e-5, weight_decay=5e-4))
        opt = torch.optim.AdamW(clipdfer.optim.param_groups(model, lr=1e-4, layer_decay=0.75))
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
