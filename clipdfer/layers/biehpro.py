"""BiEhPro: the Bidirectional Enhanced Prompt of CLIP-Guided DFER (Zhang et al., IJCB 2024, eqs. 10-11).

Text and visual tokens attend to each other in parallel for M blocks (paper):

    K̄ = K̃ + CroAtt(K̃, Ṽ);  K̃ = K̄ + FFN(K̄)        (text side)
    V̄ = Ṽ + CroAtt(Ṽ, K̃);  Ṽ = V̄ + FFN(V̄)        (visual side, reading the same previous K̃)
    K̂ = K + α·K̃⁽ᴹ⁾,  V̂ = V + β·Ṽ⁽ᴹ⁾

Inferred: a fused Linear(D, 3D) q/k/v per side. Ours (arguments): pre-LayerNorms, FFN Linear(D, 4D)-GELU-Linear, 8
heads, α = β = 0.1 at init, ``text_context`` (docs/models/clipdfer.md says why).
"""

from typing import Optional, Tuple

import torch
from torch import nn

from .attention import Attention

__all__ = ["BiEhPro", "BiEhProBlock", "CrossAttentionBlock"]


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention then pre-LN FFN, both residual: queries (N, Lq, D) read context (N, Lk, D)."""

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_q(x), self.norm_kv(context))
        return x + self.mlp(self.norm_mlp(x))


class BiEhProBlock(nn.Module):
    """One block of BiEhPro: the parallel update of both sides (eq. 10).

    Args:
        dim: feature width D.
        num_heads: attention heads per side.
        mlp_ratio: FFN hidden width / D.
        update_text: run the text side (K̃ attends to Ṽ).
        update_visual: run the visual side (Ṽ attends to K̃).
    """

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 4.0, update_text: bool = True,
                 update_visual: bool = True):
        super().__init__()
        self.text = CrossAttentionBlock(dim, num_heads, mlp_ratio) if update_text else None
        self.visual = CrossAttentionBlock(dim, num_heads, mlp_ratio) if update_visual else None

    def forward(self, text: torch.Tensor, visual: torch.Tensor, text_context: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """text (B, C, D), visual (B, L, D) -> both updated from the previous values of the other; with
        ``text_context`` (B, L', D) the text side attends to it instead of the visual features."""
        context = visual if text_context is None else text_context
        new_text = self.text(text, context) if self.text is not None else text
        new_visual = self.visual(visual, text) if self.visual is not None else visual
        return new_text, new_visual


class BiEhPro(nn.Module):
    """Bidirectional Enhanced Prompt: M blocks of two-way cross-attention between text and visual features.

    Args:
        dim: feature width D shared by both inputs.
        depth: number of blocks M (the paper's best: 2).
        num_heads: attention heads (8: ours; the paper does not give it).
        mlp_ratio: FFN hidden width / D.
        update_text: enhance the text features (the text prompt, TP).
        update_visual: enhance the visual features (the visual prompt, VP).
        init_scale: initial value of the learnable α and β.
    """

    def __init__(
            self,
            dim: int,
            depth: int = 2,
            num_heads: int = 8,
            mlp_ratio: float = 4.0,
            update_text: bool = True,
            update_visual: bool = True,
            init_scale: float = 0.1,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"BiEhPro depth={depth}: expected at least 1 block (leave the module out for none)")
        if not (update_text or update_visual):
            raise ValueError("BiEhPro with update_text=False and update_visual=False does nothing: enable a side")
        self.dim = dim
        self.blocks = nn.ModuleList([
            BiEhProBlock(dim, num_heads, mlp_ratio, update_text, update_visual) for _ in range(depth)])
        self.alpha = nn.Parameter(torch.tensor(float(init_scale))) if update_text else None
        self.beta = nn.Parameter(torch.tensor(float(init_scale))) if update_visual else None

    def _check(self, text: torch.Tensor, visual: torch.Tensor, text_context: Optional[torch.Tensor]) -> None:
        d = self.dim
        if text_context is not None and (text_context.dim() != 3 or text_context.shape[-1] != d
                                         or text_context.shape[0] != visual.shape[0]):
            raise ValueError(f"BiEhPro expected text_context (B, L, {d}) with B = {visual.shape[0]}, got "
                             f"{tuple(text_context.shape)}: pass token features per sample, e.g. frame features")
        if visual.dim() not in (2, 3) or visual.shape[-1] != d:
            raise ValueError(
                f"BiEhPro expected visual features (B, {d}) or (B, L, {d}), got {tuple(visual.shape)}: pass one "
                f"embedding per sample as (B, {d}) or a token sequence as (B, L, {d})")
        if text.dim() not in (2, 3) or text.shape[-1] != d:
            raise ValueError(
                f"BiEhPro expected text features (C, {d}) shared by the batch or (B, C, {d}) per sample, got "
                f"{tuple(text.shape)}: pass one feature per class")
        if text.dim() == 3 and text.shape[0] != visual.shape[0]:
            raise ValueError(
                f"BiEhPro batch sizes differ: text {tuple(text.shape)} vs visual {tuple(visual.shape)}; pass text "
                f"as (C, {d}) to share it across the batch")

    def forward(self, text: torch.Tensor, visual: torch.Tensor, text_context: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Enhance both sides.

        Args:
            text: class text features K, (C, D) shared by the batch or (B, C, D).
            visual: visual features V, (B, D) or (B, L, D).
            text_context: (B, L', D) that the text side attends to in every block instead of Ṽ (ours; e.g. frame
                features). None: the paper's Ṽ.

        Returns:
            ``(text_hat, visual_hat)``: K̂ (B, C, D) and V̂ shaped like ``visual``.
        """
        self._check(text, visual, text_context)
        v = visual.unsqueeze(1) if visual.dim() == 2 else visual  # (B, D) -> (B, 1, D)
        k = text.expand(v.shape[0], -1, -1) if text.dim() == 2 else text  # (C, D) -> (B, C, D)
        k_t, v_t = k, v
        for block in self.blocks:
            k_t, v_t = block(k_t, v_t, text_context)
        k_hat = k + self.alpha * k_t if self.alpha is not None else k  # eq. 11
        v_hat = v + self.beta * v_t if self.beta is not None else v
        return k_hat, v_hat.view_as(visual)
