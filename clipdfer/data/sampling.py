"""Which frames of a clip to use: segment sampling (DFER-CLIP's, to the index) and uniform sampling."""

from typing import List, Optional

import torch

__all__ = ["segment_indices", "uniform_indices", "sample_indices", "SAMPLINGS"]

SAMPLINGS = ("segment", "uniform", "single")


def _pad(num_frames: int, t: int) -> List[int]:
    """All frames, the last one repeated up to t (short clips)."""
    return list(range(num_frames)) + [num_frames - 1] * (t - num_frames)


def segment_indices(num_frames: int, t: int, train: bool = False, generator: Optional[torch.Generator] = None
                    ) -> List[int]:
    """T indices from T equal segments: the middle frame of each (test) or a random frame in each (train).

    The same rule as DFER-CLIP's loader, index for index: test ``int(tick / 2 + tick * i)`` with ``tick = n / T`` when
    ``n > T``; train ``i * (n // T) + randint(n // T)`` when ``n >= T``; shorter clips (``n <= T`` in test, ``n < T``
    in training) give all their frames and repeat the last one.
    """
    if num_frames < 1:
        raise ValueError(f"a clip with {num_frames} frames cannot be sampled: it has no frames")
    if train:
        avg = num_frames // t
        if avg > 0:
            offsets = torch.randint(avg, (t,), generator=generator)
            return [i * avg + int(o) for i, o in enumerate(offsets)]
        return _pad(num_frames, t)
    if num_frames > t:
        tick = num_frames / float(t)
        return [int(tick / 2.0 + tick * i) for i in range(t)]
    return _pad(num_frames, t)


def uniform_indices(num_frames: int, t: int) -> List[int]:
    """T indices spread evenly from the first to the last frame (short clips repeat frames)."""
    if num_frames < 1:
        raise ValueError(f"a clip with {num_frames} frames cannot be sampled: it has no frames")
    if t == 1:
        return [num_frames // 2]
    return torch.linspace(0, num_frames - 1, t).round().long().tolist()


def sample_indices(num_frames: int, t: int, sampling: str = "segment", train: bool = False,
                   generator: Optional[torch.Generator] = None) -> List[int]:
    """Dispatch on a pretrained cfg's ``frame_sampling`` (``segment``, ``uniform``, or ``single`` for images)."""
    if sampling == "segment":
        return segment_indices(num_frames, t, train, generator)
    if sampling == "uniform":
        return uniform_indices(num_frames, t)
    if sampling == "single":
        return [num_frames // 2] * t
    raise ValueError(f"frame_sampling={sampling!r}: expected one of {SAMPLINGS}")
