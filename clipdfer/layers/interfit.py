"""InterFIT: the Inter-Frame Interaction Transformer of CLIP-Guided DFER (Zhang et al., IJCB 2024, section 3.2).

Every layer of a pretrained CLIP ViT gains an interaction token per frame that carries information between frames:

1. ``i_t = Linear(cls_t)`` from each frame's class token;
2. ``Î = I + MHSA(LN(BiLSTM(I)))`` over the T interaction tokens of a clip (eq. 2);
3. ``î_t`` is appended to its own frame's tokens for the pretrained block's self-attention, then dropped before the
   block's MLP (eq. 3). The pretrained block's weights are reused unchanged.

Ours (constructor arguments): new Linear/LSTM weights normal(std=0.02) with zero biases, the interaction MHSA's
output projection zero-initialised, so that step 0 stays close to the pretrained CLIP.
"""

from typing import Optional

import torch
from torch import nn

from .attention import Attention
from .clip import CLIPFrameEncoder, clip_block_attention, clip_block_mlp
from .temporal import BiLSTM

__all__ = ["InteractionLayer", "InterFIT"]


class InteractionLayer(nn.Module):
    """The per-layer temporal exchange of InterFIT: class tokens (B, T, W) -> interaction tokens Î (B, T, W).

    Args:
        width: visual width D_v.
        num_heads: heads of the MHSA over interaction tokens (the paper: D_v / 64).
        lstm_hidden: hidden width per LSTM direction (the paper's FLOPs pin D_v).
        init_std: std of the normal init of new Linear and LSTM weights.
        lstm_impl: see :class:`BiLSTM`.
    """

    def __init__(
            self,
            width: int,
            num_heads: Optional[int] = None,
            lstm_hidden: Optional[int] = None,
            init_std: float = 0.02,
            lstm_impl: str = "auto",
    ):
        super().__init__()
        num_heads = num_heads or max(1, width // 64)
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

    Frame features are the class tokens after the last layer through CLIP's ``ln_post`` and ``proj`` (ours: the paper
    matches them to D-dim text features). Works for any T.

    Args:
        visual: an open_clip ``VisionTransformer``; its blocks are reused, not copied.
        num_heads: heads of the interaction MHSA; default width / 64.
        lstm_hidden: LSTM hidden width per direction; default the visual width (as the paper's FLOPs require).
        init_std: std of the normal init of the new weights.
        lstm_impl: ``"auto"``, ``"native"`` or ``"unrolled"`` (see :class:`BiLSTM`).
    """

    def __init__(
            self,
            visual: nn.Module,
            num_heads: Optional[int] = None,
            lstm_hidden: Optional[int] = None,
            init_std: float = 0.02,
            lstm_impl: str = "auto",
    ):
        super().__init__(visual)
        self.interaction = nn.ModuleList([
            InteractionLayer(self.width, num_heads, lstm_hidden, init_std, lstm_impl) for _ in self.blocks])

    def run_block(self, i: int, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Layer i with the interaction token: x (B*T, 1 + P, W) -> (B*T, 1 + P, W)."""
        block = self.blocks[i]
        n, length, w = x.shape
        inter = self.interaction[i](x[:, 0].view(n // num_frames, num_frames, w))  # (B, T, W)
        xi = torch.cat([x, inter.reshape(n, 1, w)], dim=1)  # (B*T, 1 + P + 1, W)
        xi = xi + block.ls_1(clip_block_attention(block.attn, block.ln_1(xi)))  # eq. 3, spatio-temporal attention
        x = xi[:, :length]  # drop the interaction token
        return x + block.ls_2(clip_block_mlp(block.mlp, block.ln_2(x)))
