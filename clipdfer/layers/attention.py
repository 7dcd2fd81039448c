"""Multi-head attention on ``F.scaled_dot_product_attention``, for self- and cross-attention."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "multi_head_attention"]


def multi_head_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_heads: int,
        is_causal: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention over heads: projected q (N, Lq, D), k and v (N, Lk, D) -> (N, Lq, D), before the
    output projection; ``num_heads`` must divide D; ``is_causal``: query i sees keys 0..i."""
    n, lq, d = q.shape
    lk = k.shape[1]
    hd = d // num_heads
    # (N, L, D) -> (N, H, L, hd)
    q = q.reshape(n, lq, num_heads, hd).transpose(1, 2)
    k = k.reshape(n, lk, num_heads, hd).transpose(1, 2)
    v = v.reshape(n, lk, num_heads, hd).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    return out.transpose(1, 2).reshape(n, lq, d)  # (N, H, Lq, hd) -> (N, Lq, D)


class Attention(nn.Module):
    """Multi-head attention with one fused ``Linear(dim, 3 * dim)`` for q, k and v, and an output projection.

    Self-attention when ``context`` is None, else cross-attention (only the q rows applied to ``x``, the k, v rows to
    ``context``: the same result at less cost).

    Args:
        dim: token width.
        num_heads: number of heads; must divide ``dim``.
        qkv_bias: bias on the fused q/k/v projection.
        zero_init_proj: zero-initialise the output projection (the block starts as its residual's identity).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, zero_init_proj: bool = False):
        super().__init__()
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(
                f"Attention: dim={dim} is not divisible by num_heads={num_heads}; "
                f"choose num_heads from the divisors of {dim} (e.g. {max(1, dim // 64)})")
        self.dim = dim
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if zero_init_proj:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Query tokens ``x`` (N, Lq, dim), key/value tokens ``context`` (N, Lk, dim) or None (self) -> (N, Lq, dim)."""
        if context is None:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            d = self.dim
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x, w[:d], None if b is None else b[:d])
            k, v = F.linear(context, w[d:], None if b is None else b[d:]).chunk(2, dim=-1)
        return self.proj(multi_head_attention(q, k, v, self.num_heads))
