"""MSTA: Multi-Scale Temporal Aggregation of CLIP-Guided DFER (Zhang et al., IJCB 2024, eqs. 4-8).

Frame features Z (B, T, D) are max-pooled over time at several scales and summed (eq. 4); each scale gets scores from
its own Linear(D, D) over the sum (eq. 5), softmax-normalised across scales (eq. 6), that weight the scales (eq. 7); the
weighted sequence is flattened and projected to V (eq. 8). Ours (arguments): the score Linears act on channels at every
step, the flatten is channel-major, ``fc_v`` starts as the mean over steps.
"""

import numbers
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MSTA", "msta_output_lengths", "msta_scales"]


def msta_output_lengths(num_frames: int, kernel_sizes: Sequence[int], strides: Sequence[int]) -> list:
    """Length of each scale's max-pooled sequence, ``(T - k) // s + 1`` (no padding)."""
    return [(num_frames - k) // s + 1 for k, s in zip(kernel_sizes, strides)]


def msta_scales(num_frames: int) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """``(kernel_sizes, strides)`` of the paper's pattern at another T (ours): two scales of stride 3 and one of stride
    1 whose outputs have the same length L = max(1, T // 4); T = 8 gives the paper's (5, 5, 7) / (3, 3, 1)."""
    length = max(1, num_frames // 4)
    kernel = num_frames - 3 * (length - 1)
    return (kernel, kernel, num_frames - length + 1), (3, 3, 1)


class MSTA(nn.Module):
    """Multi-scale temporal aggregation: (B, T, D) frame features -> (B, D) video embedding.

    Args:
        dim: feature width D.
        num_frames: T; the flattened projection depends on it, so the module accepts only this T.
        kernel_sizes: max-pool kernel per scale (the paper: 5, 5, 7).
        strides: max-pool stride per scale (the paper: 3, 3, 1).
        fc_v_init: ``"mean"`` (V starts as the mean over steps of Z_w) or ``"normal"`` (std 0.02).
    """

    def __init__(
            self,
            dim: int,
            num_frames: int = 8,
            kernel_sizes: Sequence[int] = (5, 5, 7),
            strides: Sequence[int] = (3, 3, 1),
            fc_v_init: str = "mean",
    ):
        super().__init__()
        for name, values in (("kernel_sizes", kernel_sizes), ("strides", strides)):
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not all(
                    isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
                raise ValueError(f"MSTA {name}={values!r}: expected a sequence of whole numbers, one per scale, e.g. "
                                 f"(5, 5, 7) and (3, 3, 1)")
        kernel_sizes, strides = tuple(int(k) for k in kernel_sizes), tuple(int(s) for s in strides)
        if len(kernel_sizes) != len(strides) or not kernel_sizes:
            raise ValueError(f"MSTA needs one stride per kernel, got kernel_sizes={kernel_sizes}, strides={strides}")
        if min(kernel_sizes) < 1 or min(strides) < 1:
            raise ValueError(f"MSTA kernel sizes and strides must be >= 1, got {kernel_sizes} and {strides}")
        if max(kernel_sizes) > num_frames:
            raise ValueError(
                f"MSTA kernel {max(kernel_sizes)} is longer than num_frames={num_frames}: use kernels <= {num_frames} "
                f"or more frames")
        lengths = msta_output_lengths(num_frames, kernel_sizes, strides)
        if len(set(lengths)) != 1:
            raise ValueError(
                f"MSTA scales disagree for num_frames={num_frames}: kernels {kernel_sizes} with strides {strides} give "
                f"output lengths {lengths}, which cannot be summed (eq. 4). Choose kernels/strides with equal "
                f"(T - k) // s + 1, e.g. T=8 with kernels (5, 5, 7) and strides (3, 3, 1), T=16 with kernels "
                f"(7, 7, 13) and strides (3, 3, 1), or disable MSTA (msta=False) for mean pooling")
        if fc_v_init not in ("mean", "normal"):
            raise ValueError(f"MSTA fc_v_init={fc_v_init!r}: expected 'mean' or 'normal'")
        self.dim = dim
        self.num_frames = num_frames
        self.kernel_sizes = kernel_sizes
        self.strides = strides
        self.out_len = lengths[0]
        n = len(kernel_sizes)
        # U_i = FC_i(Ẑ) for all scales at once: one Linear(D, n*D) holds the n Linear(D, D) of eq. 5.
        self.scale_fc = nn.Linear(dim, n * dim)
        self.fc_v = nn.Linear(dim * self.out_len, dim)
        nn.init.normal_(self.scale_fc.weight, std=0.02)
        nn.init.zeros_(self.scale_fc.bias)
        nn.init.zeros_(self.fc_v.bias)
        with torch.no_grad():
            if fc_v_init == "mean":  # flat index d * T' + t  ->  output d, weight 1 / T'
                self.fc_v.weight.copy_(torch.eye(dim).repeat_interleave(self.out_len, dim=1) / self.out_len)
            else:
                nn.init.normal_(self.fc_v.weight, std=0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D)."""
        if z.dim() != 3 or z.shape[1] != self.num_frames or z.shape[2] != self.dim:
            raise ValueError(
                f"MSTA expected frame features (B, T={self.num_frames}, D={self.dim}), got {tuple(z.shape)}: sample "
                f"{self.num_frames} frames per clip, or build MSTA with "
                f"num_frames={z.shape[1] if z.dim() == 3 else '?'}")
        b = z.shape[0]
        zt = z.transpose(1, 2)  # (B, T, D) -> (B, D, T)
        scales = torch.stack([F.max_pool1d(zt, k, s) for k, s in zip(self.kernel_sizes, self.strides)], dim=1)
        z_hat = scales.sum(dim=1)  # (B, n, D, T') -> (B, D, T'), eq. 4
        u = self.scale_fc(z_hat.transpose(1, 2))  # (B, T', n*D), eq. 5
        u = u.view(b, self.out_len, len(self.kernel_sizes), self.dim).permute(0, 2, 3, 1)  # (B, n, D, T')
        z_w = (u.softmax(dim=1) * scales).sum(dim=1)  # (B, D, T'), eqs. 6-7
        return self.fc_v(z_w.flatten(1))  # (B, D*T') -> (B, D), eq. 8
