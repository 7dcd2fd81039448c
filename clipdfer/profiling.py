"""Counting a model's multiply-accumulates on the meta device: every matrix product (``"full"``), or the CLIP-Guided
DFER paper's convention (``"paper"``, as ``thop``; docs/benchmarks.md, "FLOPs and parameters", defines it).
"""

from typing import Dict

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .layers.attention import Attention
from .layers.interfit import InteractionLayer
from .layers.temporal import BiLSTM

__all__ = ["count_macs", "count_params"]


def count_params(model: nn.Module) -> Dict[str, int]:
    """Total and trainable parameter counts."""
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _rows(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1]


def _paper_macs(model: nn.Module, run) -> int:
    skip = set()  # Linear modules inside attention the convention leaves out
    clip_mlps = {}  # a CLIP block's ln_2 -> its MLP's MACs per token
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            skip.update(id(m) for m in module.modules())
        if isinstance(module, InteractionLayer):
            skip.update(id(m) for m in module.attn.modules())
        mlp = getattr(module, "mlp", None)
        if isinstance(getattr(module, "ln_2", None), nn.LayerNorm) and hasattr(mlp, "c_fc") and hasattr(mlp, "c_proj"):
            # clip_block_mlp runs the MLP on the Linears' weights without calling them: count it where its input, the
            # output of ln_2, is made (thop counts c_fc and c_proj as the Linears they are)
            fc, proj = mlp.c_fc, mlp.c_proj
            skip.update((id(fc), id(proj)))
            clip_mlps[id(module.ln_2)] = fc.in_features * fc.out_features + proj.in_features * proj.out_features
    total = [0]
    handles = []

    def clip_mlp_hook(m, inputs, output):
        total[0] += _rows(output) * clip_mlps[id(m)]

    def linear_hook(m, inputs, output):
        total[0] += _rows(inputs[0]) * m.in_features * m.out_features

    def conv_hook(m, inputs, output):
        k = m.in_channels // m.groups
        for s in m.kernel_size:
            k *= s
        total[0] += output.numel() * k

    def lstm_hook(m, inputs, output):  # 4 gates per step and direction, input and recurrent products
        b, t, d = inputs[0].shape
        total[0] += b * t * 2 * 4 * m.hidden_size * (d + m.hidden_size)

    def cross_attention_hook(m, args, kwargs, output):
        context = kwargs.get("context", args[1] if len(args) > 1 else None)
        if context is not None and id(m) not in skip:  # fused q/k/v on every query and key/value token
            total[0] += (_rows(args[0]) + _rows(context)) * m.dim * 3 * m.dim

    for module in model.modules():
        if id(module) in clip_mlps:
            handles.append(module.register_forward_hook(clip_mlp_hook))
        elif isinstance(module, nn.Linear) and id(module) not in skip:
            # no hooks on skipped Linears: a hook on c_fc / c_proj would turn off the fused MLP being counted
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, BiLSTM):
            handles.append(module.register_forward_hook(lstm_hook))
        elif isinstance(module, Attention):
            handles.append(module.register_forward_hook(cross_attention_hook, with_kwargs=True))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return total[0]


def count_macs(model: nn.Module, video: torch.Tensor, convention: str = "full") -> int:
    """Multiply-accumulates of one eval forward of ``model`` on ``video``.

    Args:
        model: any clipdfer model (its cached text features are filled first, as at inference).
        video: the input, e.g. ``torch.empty(1, 8, 3, 224, 224, device="meta")``.
        convention: ``"full"`` or ``"paper"``.
    """
    model.eval()
    with torch.no_grad():
        model(video)  # fills the text cache, as a deployed model's would be
        if convention == "paper":
            return _paper_macs(model, lambda: model(video))
        if convention != "full":
            raise ValueError(f"convention={convention!r}: expected 'full' or 'paper'")
        with FlopCounterMode(display=False) as counter:
            model(video)
        return counter.get_total_flops() // 2
