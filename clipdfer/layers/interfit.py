"""InterFIT: the Inter-Frame Interaction Transformer of CLIP-Guided DFER (Zhang et al., IJCB 2024, section 3.1).

Every layer of a pretrained CLIP ViT gains an interaction token per frame (paper, eqs. 2-3):

1. ``i_t = Linear(cls_t)`` from each frame's class token;
2. ``Î = I + MHSA(LN(BiLSTM(I)))`` over the T interaction tokens of a clip (eq. 2);
3. ``î_t`` is appended to its own frame's tokens for the pretrained block's self-attention, then dropped before the
   block's MLP (eq. 3). The pretrained block's weights are reused unchanged.

Inferred (from the paper's FLOPs): the BiLSTM's width, D_v per direction, and a Linear(2 D_v -> D_v). Ours (arguments):
D_v / 64 heads, the init (normal(0.02), zero biases, a zero MHSA output projection; not the identity, see
docs/models/clipdfer.md) and the optional ``gate``.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention
from .clip import CLIPFrameEncoder, _drop_path, clip_block_attention, clip_block_mlp
from .temporal import BiLSTM

__all__ = ["InteractionLayer", "InterFIT", "gated_token_attention"]


def gated_token_attention(attn: nn.MultiheadAttention, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Self-attention of a CLIP block over tokens (N, L, W) with the last token's weight scaled by ``gate`` before the
    softmax normalisation (ours): e^{s_j} for the others, ``gate`` * e^{s_last} for it. ``gate`` = 0 ignores the last
    token exactly, 1 is plain attention; differentiable in ``gate``, 0 included."""
    if type(attn) is not nn.MultiheadAttention or attn._forward_hooks or attn._forward_pre_hooks:
        raise TypeError(f"the InterFIT gate reads the block's nn.MultiheadAttention weights; got {type(attn).__name__}"
                        f" (wrapped or hooked): build the model with interfit_gate=False to use adapters or hooks")
    n, length, w = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(n, length, heads, w // heads).transpose(1, 2) for t in (q, k, v))  # (N, H, L, hd)
    scores = (q @ k.transpose(-1, -2)) * (w // heads) ** -0.5  # (N, H, L, L)
    e = (scores - scores.amax(dim=-1, keepdim=True)).exp()
    e = torch.cat([e[..., :-1], e[..., -1:] * gate.to(e.dtype)], dim=-1)
    out = (e / e.sum(dim=-1, keepdim=True)) @ v  # (N, H, L, hd)
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, w))


class InteractionLayer(nn.Module):
    """The per-layer temporal exchange of InterFIT: class tokens (B, T, W) -> interaction tokens Î (B, T, W).

    Args:
        width: visual width D_v.
        num_heads: heads of the MHSA over interaction tokens (default D_v / 64: ours, the paper gives none).
        lstm_hidden: hidden width per LSTM direction (default D_v: inferred from the paper's FLOPs).
        init_std: std of the normal init of new Linear and LSTM weights.
        lstm_impl: see :class:`BiLSTM`.
        gate: add the zero-initialised attention gate of the interaction token (:func:`gated_token_attention`).
    """

    def __init__(
            self,
            width: int,
            num_heads: Optional[int] = None,
            lstm_hidden: Optional[int] = None,
            init_std: float = 0.02,
            lstm_impl: str = "auto",
            gate: bool = False,
    ):
        super().__init__()
        num_heads = num_heads or max(1, width // 64)
        self.gate = nn.Parameter(torch.zeros(())) if gate else None
        self.token = nn.Linear(width, width)
        self.bilstm = BiLSTM(width, lstm_hidden or width, width, impl=lstm_impl)
        self.norm = nn.LayerNorm(width)
        self.attn = Attention(width, num_heads, zero_init_proj=True)
        for module in (self.token, self.bilstm.proj, self.attn.qkv):
            nn.init.normal_(module.weight, std=init_std)
            nn.init.zeros_(module.bias)
        for w, b in ((self.bilstm.weight_ih, self.bilstm.bias_ih), (self.bilstm.weight_hh_t, self.bilstm.bias_hh)):
            nn.init.normal_(w, std=init_std)
            nn.init.zeros_(b)

    def forward(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, W) class tokens -> (B, T, W) interaction tokens after the temporal exchange."""
        i = self.token(cls_tokens)
        return i + self.attn(self.norm(self.bilstm(i)))  # eq. 2


class InterFIT(CLIPFrameEncoder):
    """A CLIP visual transformer turned into the Inter-Frame Interaction Transformer: (B, T, 3, H, W) -> (B, T, D).

    Frame features: the last layer's class tokens through CLIP's ``ln_post`` and ``proj`` (ours). Any T.

    Args:
        visual: an open_clip ``VisionTransformer``; its blocks are reused, not copied.
        num_heads: heads of the interaction MHSA; default width / 64.
        lstm_hidden: LSTM hidden width per direction; default the visual width (as the paper's FLOPs require).
        init_std: std of the normal init of the new weights.
        lstm_impl: ``"auto"``, ``"native"`` or ``"unrolled"`` (see :class:`BiLSTM`).
        gate: a zero-initialised gate on each layer's interaction token: exactly CLIP at init (ours).
    """

    def __init__(
            self,
            visual: nn.Module,
            num_heads: Optional[int] = None,
            lstm_hidden: Optional[int] = None,
            init_std: float = 0.02,
            lstm_impl: str = "auto",
            gate: bool = False,
    ):
        super().__init__(visual)
        self.interaction = nn.ModuleList([
            InteractionLayer(self.width, num_heads, lstm_hidden, init_std, lstm_impl, gate) for _ in self.blocks])

    def run_block(self, i: int, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Layer i with the interaction token: x (B*T, 1 + P, W) -> (B*T, 1 + P, W)."""
        block = self.blocks[i]
        n, length, w = x.shape
        inter = self.interaction[i](x[:, 0].view(n // num_frames, num_frames, w))  # (B, T, W)
        xi = torch.cat([x, inter.reshape(n, 1, w)], dim=1)  # (B*T, 1 + P + 1, W)
        gate = self.interaction[i].gate
        rate, training = self.drop_path_rates[i], self.training
        if gate is None:  # eq. 3, spatio-temporal attention
            xi = xi + _drop_path(block.ls_1(clip_block_attention(block.attn, block.ln_1(xi))), rate, training)
        else:
            xi = xi + _drop_path(block.ls_1(gated_token_attention(block.attn, block.ln_1(xi), gate)), rate, training)
        x = xi[:, :length]  # drop the interaction token
        return x + _drop_path(block.ls_2(clip_block_mlp(block.mlp, block.ln_2(x))), rate, training)
