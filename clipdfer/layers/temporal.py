"""Temporal building blocks shared by the DFER models."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BiLSTM", "lstm_direction"]

_IMPLS = ("auto", "native", "unrolled")


def lstm_direction(
        x: torch.Tensor,
        w_ih: torch.Tensor,
        w_hh: torch.Tensor,
        b_ih: torch.Tensor,
        b_hh: torch.Tensor,
        reverse: bool = False,
) -> torch.Tensor:
    """One direction of a one-layer LSTM, with PyTorch's gate order (i, f, g, o) and zero initial state.

    The input projection of all time steps is one matmul; the recurrence is T small ``addmm`` calls. On the CPU this
    is several times faster than ``nn.LSTM`` for the short sequences of DFER (T = 8-16), and it unrolls cleanly under
    ``torch.compile``.

    Args:
        x: (B, T, D) batch-first input.
        w_ih, w_hh, b_ih, b_hh: the direction's parameters as ``nn.LSTM`` stores them.
        reverse: run from the last step to the first (the backward direction).

    Returns:
        (B, T, H) hidden states in input time order.
    """
    b, t, _ = x.shape
    hidden = w_hh.shape[1]
    gates_x = F.linear(x, w_ih, b_ih + b_hh)  # (B, T, 4H)
    h = x.new_zeros(b, hidden)
    c = x.new_zeros(b, hidden)
    w_hh_t = w_hh.t()
    outs = [None] * t
    steps = range(t - 1, -1, -1) if reverse else range(t)
    for s in steps:
        gates = torch.addmm(gates_x[:, s], h, w_hh_t)  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs[s] = h
    return torch.stack(outs, dim=1)


class BiLSTM(nn.Module):
    """A bidirectional one-layer ``nn.LSTM`` followed by ``Linear(2 * hidden -> out_features)``.

    The parameters are a standard ``nn.LSTM`` (state-dict names ``lstm.weight_ih_l0`` ...), so weights move freely
    between implementations.

    Args:
        input_size: input width.
        hidden_size: hidden width per direction.
        out_features: output width of the projection.
        impl: ``"native"`` runs ``nn.LSTM`` (cuDNN on GPUs); ``"unrolled"`` runs :func:`lstm_direction`; ``"auto"``
            picks native on CUDA and unrolled elsewhere.
    """

    def __init__(self, input_size: int, hidden_size: int, out_features: int, impl: str = "auto"):
        super().__init__()
        if impl not in _IMPLS:
            raise ValueError(f"BiLSTM impl={impl!r}: expected one of {_IMPLS}")
        self.impl = impl
        self.lstm = nn.LSTM(input_size, hidden_size, bidirectional=True, batch_first=True)
        self.proj = nn.Linear(2 * hidden_size, out_features)

    def _use_native(self, x: torch.Tensor) -> bool:
        return self.impl == "native" or (self.impl == "auto" and x.is_cuda)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, input_size) -> (B, T, out_features)."""
        if self._use_native(x):
            out, _ = self.lstm(x)
        else:
            m = self.lstm
            out = torch.cat([
                lstm_direction(x, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0),
                lstm_direction(x, m.weight_ih_l0_reverse, m.weight_hh_l0_reverse, m.bias_ih_l0_reverse,
                               m.bias_hh_l0_reverse, reverse=True),
            ], dim=-1)  # (B, T, 2H)
        return self.proj(out)
