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
) -> List[Dict]:
    """Parameter groups with one learning rate for the pretrained CLIP backbone and another for the new modules.

    Biases, norm weights, scalars and the names in ``model.no_weight_decay()`` get no weight decay. Frozen
    parameters (the text encoder by default) are left out.

    Args:
        model: a clipdfer model (it has ``group_parameters()``).
        lr: learning rate of the new modules (InterFIT, MSTA, BiEhPro, heads, prompts).
        backbone_lr: learning rate of the pretrained CLIP weights; default ``lr``.
        weight_decay: weight decay of the matrices.
        group_lr: learning rates of other groups a model defines, e.g. ``{"prompt": 1e-3}`` for DFER-CLIP's contexts
            (default ``lr``).

    Returns:
        A list for ``torch.optim.AdamW(param_groups(...))``; each group also has a ``name``.

    Example::

        opt = torch.optim.AdamW(clipdfer.optim.param_groups(model, lr=1e-3, backbone_lr=1e-5, weight_decay=5e-4))
    """
    if not hasattr(model, "group_parameters"):
        raise TypeError(f"{type(model).__name__} has no group_parameters(): pass a clipdfer model")
    names = {id(p): n for n, p in model.named_parameters()}
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    rates = {"backbone": lr if backbone_lr is None else backbone_lr, **(group_lr or {})}
    groups = []
    for origin, params in model.group_parameters().items():
        decay = [p for p in params if p.ndim > 1 and names[id(p)] not in skip]
        no_decay = [p for p in params if not (p.ndim > 1 and names[id(p)] not in skip)]
        for suffix, ps, wd in (("", decay, weight_decay), ("_no_decay", no_decay, 0.0)):
            if ps:
                groups.append({"name": origin + suffix, "params": ps, "lr": rates.get(origin, lr), "weight_decay": wd})
    return groups
