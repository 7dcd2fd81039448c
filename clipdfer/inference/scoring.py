"""The fourth stage of prediction: windows -> class probabilities, the windows of every face batched; a model with
``frames_independent`` encodes each crop once for all its windows (docs/predict.md, "Windows").
"""

import contextlib
from typing import List, Optional, Union

import torch

from ..models._loading import non_finite_tensors
from .device import DTYPES, resolve_dtype
from .windows import Window

__all__ = ["WindowScorer", "resolve_dtype", "DTYPES"]


def _non_finite_cause(net: torch.nn.Module, dtype: Optional[torch.dtype]) -> str:
    names = non_finite_tensors(net)
    if dtype is None:
        dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), None)
        dtype = None if dtype is torch.float32 else dtype
    if names:
        return (f"its weights hold non-finite values ({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}, "
                f"{len(names)} tensors): load other weights")
    return (f"its weights are finite, so a computation overflowed{f' in {dtype}' if dtype is not None else ''}: "
            f"try --dtype fp32 (dtype='fp32')")


class WindowScorer:
    """Class probabilities of windows, ``batch_size`` windows per forward pass.

    Args:
        net: a clipdfer model (in eval mode).
        device: where the model is.
        batch_size: windows per forward pass.
        dtype: ``torch.autocast`` dtype (``torch.bfloat16``, ``torch.float16``); None or float32: none. Crops are cast
            to the weights' dtype either way (a ``model.to(torch.bfloat16)`` works).
    """

    def __init__(self, net: torch.nn.Module, device: torch.device, batch_size: int = 8,
                 dtype: Union[None, str, torch.dtype] = None):
        self.net, self.device, self.batch_size = net, torch.device(device), max(1, int(batch_size))
        self.dtype = resolve_dtype(dtype)
        if self.dtype is torch.float32:
            self.dtype = None

    @property
    def class_names(self) -> List[str]:
        """The model's classes now, in the order of the probabilities' columns."""
        return list(self.net.class_names)

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _input_dtype(self) -> torch.dtype:
        for p in self.net.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def __call__(self, windows: List[Window]) -> torch.Tensor:
        """``windows`` -> their probabilities, (N, C) float32 on the CPU, in the model's class order."""
        out = []
        net = self.net
        dtype = self._input_dtype()
        for i in range(0, len(windows), self.batch_size):
            batch = windows[i:i + self.batch_size]
            with torch.inference_mode(), self._autocast():
                if net.frames_independent:
                    self._encode([c for w in batch for c in w.crops], dtype)
                    feats = torch.stack([torch.stack([c.feature for c in w.crops]) for w in batch])  # (B, T, D)
                    logits = net.forward_head(net.features_from_frames(feats))  # (B, T, D) -> (B, C)
                else:
                    clips = torch.stack([torch.stack([c.pixels for c in w.crops]) for w in batch])  # (B, T, 3, S, S)
                    logits = net(clips.to(self.device, dtype))  # (B, T, 3, S, S) -> (B, C)
            probs = logits.float().softmax(-1).cpu()
            if not torch.isfinite(probs).all():
                raise ValueError(f"the model gave non-finite scores (NaN or infinity) for "
                                 f"{int((~torch.isfinite(probs)).any(-1).sum())} of {len(batch)} windows: "
                                 f"{_non_finite_cause(net, self.dtype)}; no probabilities are given for them")
            out.append(probs)
        return torch.cat(out) if out else torch.empty(0, len(net.class_names))

    def _encode(self, crops, dtype: torch.dtype) -> None:
        """Encode the crops that have no features yet, each once (a crop may be in several windows)."""
        todo = list({id(c): c for c in crops if c.feature is None}.values())
        chunk = self.batch_size * 16
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            pixels = torch.stack([c.pixels for c in part]).to(self.device, dtype)  # (N, 3, S, S)
            for c, feat in zip(part, self.net.encode_frame_batch(pixels)):  # (N, D)
                c.feature, c.pixels = feat, None
