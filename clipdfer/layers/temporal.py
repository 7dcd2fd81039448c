"""Temporal building blocks shared by the DFER models."""

import math

import torch
from torch import nn

from .attention import Attention

__all__ = ["BiLSTM", "bilstm_unrolled", "TemporalTransformer", "TemporalBlock"]

_IMPLS = ("auto", "native", "unrolled")
_DIRS = ("", "_reverse")


def bilstm_unrolled(
        x: torch.Tensor,
        weight_ih: torch.Tensor,
        weight_hh_t: torch.Tensor,
        bias_ih: torch.Tensor,
        bias_hh: torch.Tensor,
) -> torch.Tensor:
    """A one-layer bidirectional LSTM with zero initial state, both directions in the same batched ops (ours).

    PyTorch's gate order (i, f, g, o) and equations: one matmul for all input projections, one ``baddbmm`` per step over
    both directions. Faster than ``nn.LSTM`` on CPU at batch 1 (docs/benchmarks.md).

    Args:
        x: (B, T, D) batch-first input.
        weight_ih: (2, 4H, D), direction 0 forward, 1 reverse (``nn.LSTM``'s ``weight_ih_l0`` stacked).
        weight_hh_t: (2, H, 4H), the recurrent weights transposed (``weight_hh_l0.T`` stacked).
        bias_ih, bias_hh: (2, 4H).

    Returns:
        (B, T, 2H): forward and reverse hidden states concatenated, in input time order (as ``nn.LSTM``).
    """
    b, t, d = x.shape
    hidden = weight_hh_t.shape[1]
    # the reverse direction reads time backwards: both directions then step through s = 0..T-1 together
    xs = torch.stack([x, x.flip(1)]).view(2, b * t, d)
    # the weight as the left operand streams it once: (2, 4H, D) @ (2, D, B*T) -> (2, 4H, B, T) -> (T, 2, B, 4H)
    bias = (bias_ih + bias_hh).unsqueeze(-1)
    gates_x = torch.baddbmm(bias, weight_ih, xs.transpose(1, 2))
    gates_x = gates_x.view(2, 4 * hidden, b, t).permute(3, 0, 2, 1).contiguous()
    h = x.new_zeros(2, b, hidden)
    c = x.new_zeros(2, b, hidden)
    outs = []
    for s in range(t):
        gates = torch.baddbmm(gates_x[s], h, weight_hh_t)  # (2, B, 4H)
        i, f, _, o = torch.sigmoid(gates).chunk(4, dim=-1)  # one pass for the three sigmoid gates (g's is unused)
        g = torch.tanh(gates[..., 2 * hidden:3 * hidden])
        c = torch.addcmul(f * c, i, g)
        h = o * torch.tanh(c)
        outs.append(h)
    hs = torch.stack(outs)  # (T, 2, B, H), the reverse direction in its own (backward) time order
    return torch.cat([hs[:, 0], hs[:, 1].flip(0)], dim=-1).transpose(0, 1)


class BiLSTM(nn.Module):
    """A bidirectional one-layer LSTM followed by ``Linear(2 * hidden -> out_features)``: (B, T, D) -> (B, T, out).

    ``nn.LSTM(bidirectional=True, batch_first=True)``'s function, init and parameters, stacked by direction
    (``weight_ih`` (2, 4H, D), ``weight_hh_t`` (2, H, 4H), ``bias_ih``, ``bias_hh`` (2, 4H)); ``nn.LSTM`` state dicts
    under ``lstm.`` load too, and :meth:`from_lstm` / :meth:`to_lstm` convert.

    Args:
        input_size: input width D.
        hidden_size: hidden width H per direction.
        out_features: output width of the projection.
        impl: ``"native"`` (PyTorch's fused kernel, cuDNN on GPUs), ``"unrolled"`` (:func:`bilstm_unrolled`), or
            ``"auto"``: native on CUDA, unrolled elsewhere.
    """

    def __init__(self, input_size: int, hidden_size: int, out_features: int, impl: str = "auto"):
        super().__init__()
        if impl not in _IMPLS:
            raise ValueError(f"BiLSTM impl={impl!r}: expected one of {_IMPLS}")
        self.impl = impl
        self.input_size = input_size
        self.hidden_size = hidden_size
        h4 = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(2, h4, input_size))
        self.weight_hh_t = nn.Parameter(torch.empty(2, hidden_size, h4))
        self.bias_ih = nn.Parameter(torch.empty(2, h4))
        self.bias_hh = nn.Parameter(torch.empty(2, h4))
        self.proj = nn.Linear(2 * hidden_size, out_features)
        bound = 1.0 / math.sqrt(hidden_size)
        for p in (self.weight_ih, self.weight_hh_t, self.bias_ih, self.bias_hh):
            nn.init.uniform_(p, -bound, bound)
        self._register_load_state_dict_pre_hook(self._load_nn_lstm_keys)

    @staticmethod
    def _load_nn_lstm_keys(state_dict, prefix, *args):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            keys = [f"{prefix}lstm.{name}_l0{d}" for d in _DIRS]
            if all(k in state_dict for k in keys):
                stacked = torch.stack([state_dict.pop(k) for k in keys])
                if name == "weight_hh":
                    name, stacked = "weight_hh_t", stacked.transpose(1, 2).contiguous()
                state_dict[prefix + name] = stacked

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, proj: nn.Linear, impl: str = "auto") -> "BiLSTM":
        """Build from an ``nn.LSTM`` (one layer, bidirectional, with biases) and its output Linear."""
        if lstm.num_layers != 1 or not lstm.bidirectional or not lstm.bias or lstm.proj_size:
            raise ValueError("BiLSTM.from_lstm needs nn.LSTM(num_layers=1, bidirectional=True, bias=True, proj_size=0)")
        module = cls(lstm.input_size, lstm.hidden_size, proj.out_features, impl)
        state = {f"lstm.{k}": v for k, v in lstm.state_dict().items()}
        state.update({f"proj.{k}": v for k, v in proj.state_dict().items()})
        module.load_state_dict(state)
        return module

    def to_lstm(self) -> nn.LSTM:
        """An equivalent ``nn.LSTM(batch_first=True, bidirectional=True)`` with copies of the weights (no proj)."""
        lstm = nn.LSTM(self.input_size, self.hidden_size, bidirectional=True, batch_first=True)
        with torch.no_grad():
            for name, ours in (("weight_ih", self.weight_ih), ("weight_hh", self.weight_hh_t.transpose(1, 2)),
                               ("bias_ih", self.bias_ih), ("bias_hh", self.bias_hh)):
                for i, d in enumerate(_DIRS):
                    getattr(lstm, f"{name}_l0{d}").copy_(ours[i])
        return lstm.to(self.weight_ih)

    def _flat_weights(self):
        w_hh = self.weight_hh_t.transpose(1, 2)
        return [w[i] for i in range(2) for w in (self.weight_ih, w_hh, self.bias_ih, self.bias_hh)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, input_size) -> (B, T, out_features)."""
        if self.impl == "native" or (self.impl == "auto" and x.is_cuda):
            zeros = x.new_zeros(2, x.shape[0], self.hidden_size)
            out = torch.lstm(x, (zeros, zeros), self._flat_weights(), True, 1, 0.0, self.training, True, True)[0]
        else:
            out = bilstm_unrolled(x, self.weight_ih, self.weight_hh_t, self.bias_ih, self.bias_hh)
        return self.proj(out)


class TemporalBlock(nn.Module):
    """Pre-LN transformer block over time: x + Attn(LN(x)), then x + MLP(LN(x)); tokens (B, L, D).

    Args:
        dim: width D.
        num_heads: attention heads (head width D / heads).
        mlp_dim: hidden width of the MLP.
        qkv_bias: bias on the fused q/k/v projection.
        approximate_gelu: ``"tanh"`` for the tanh approximation of GELU, ``"none"`` for the exact one.
    """

    def __init__(self, dim: int, num_heads: int = 8, mlp_dim: int = 1024, qkv_bias: bool = False,
                 approximate_gelu: str = "tanh"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(approximate=approximate_gelu),
                                 nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TemporalTransformer(nn.Module):
    """A class-token transformer over frame features (DFER-CLIP's temporal model): (B, T, D) -> (B, D).

    A learnable class token is prepended and a learnable positional embedding added (its first T + 1 rows: any T up to
    ``num_frames``), then ``depth`` pre-LN blocks; no final LayerNorm; the class token is the output.

    Args:
        dim: feature width D.
        num_frames: the largest T.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_dim: MLP hidden width.
        qkv_bias: bias on the q/k/v projection (DFER-CLIP: none).
        approximate_gelu: ``"tanh"`` (DFER-CLIP) or ``"none"``.
    """

    def __init__(self, dim: int = 512, num_frames: int = 16, depth: int = 1, num_heads: int = 8, mlp_dim: int = 1024,
                 qkv_bias: bool = False, approximate_gelu: str = "tanh"):
        super().__init__()
        self.num_frames = num_frames
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))  # DFER-CLIP initialises both with a standard normal
        self.pos_embedding = nn.Parameter(torch.randn(1, num_frames + 1, dim))
        self.layers = nn.ModuleList([
            TemporalBlock(dim, num_heads, mlp_dim, qkv_bias, approximate_gelu) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) frame features -> (B, D)."""
        b, t, d = x.shape
        if t > self.num_frames:
            raise ValueError(f"TemporalTransformer holds positions for up to {self.num_frames} frames, got T={t}: "
                             f"sample {self.num_frames} frames, or build the model with num_frames={t}")
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + T, D)
        x = x + self.pos_embedding[:, :t + 1].to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return x[:, 0]
