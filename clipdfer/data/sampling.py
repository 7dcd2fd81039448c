"""Which frames to use: of a clip, segment sampling (DFER-CLIP's, to the index) and uniform sampling; of a video
as it is read, :class:`FpsSampler` (frames on a ``k / fps`` grid)."""

import math
from typing import List, Optional

import torch

__all__ = ["segment_indices", "uniform_indices", "sample_indices", "SAMPLINGS", "FpsSampler"]

SAMPLINGS = ("segment", "uniform", "single")


def _pad(num_frames: int, t: int) -> List[int]:
    """All frames, the last one repeated up to t (short clips)."""
    return list(range(num_frames)) + [num_frames - 1] * (t - num_frames)


def segment_indices(num_frames: int, t: int, train: bool = False, generator: Optional[torch.Generator] = None
                    ) -> List[int]:
    """T indices from T equal segments: the middle frame of each (test) or a random frame in each (train).

    DFER-CLIP's loader, index for index (official code): test ``int(tick / 2 + tick * i)``, ``tick = n / T``, when
    ``n > T``; train ``i * (n // T) + randint(n // T)`` when ``n >= T``; shorter clips give all their frames, the last
    one repeated.
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


class FpsSampler:
    """Decides, frame by frame as a video is read, which frames to keep for ``fps`` frames per second (ours).

    A grid ``t0 + k / fps`` is anchored at the first frame. A frame is kept when the next grid point not yet served is
    at most half a source interval (the shorter of the last two gaps) after it; it then serves every grid point up to
    that time (ties go to the earlier frame). A frame after a gap of more than 1.5 grid intervals anchors a new grid.
    docs/predict.md compares the rule with FFmpeg's ``fps`` filter.

    Args:
        fps: frames per second to keep; None or 0 keeps every frame.

    Raises:
        ValueError: ``fps`` is negative or not finite.

    Example:
        >>> sampler = FpsSampler(8)
        >>> [t for t in (i / 25 for i in range(13)) if sampler.take(t)]  # 25 fps source: one frame per 1/8 s
        [0.0, 0.12, 0.24, 0.36, 0.48]
    """

    tolerance = 1e-6  # s: times this close count as equal (so rounding of timestamps never flips a decision)

    def __init__(self, fps: Optional[float] = None):
        if fps is not None and (not math.isfinite(fps) or fps < 0):
            raise ValueError(f"fps={fps!r}: expected a positive number of frames per second, or None (or 0) to keep "
                             f"every frame")
        self.fps = float(fps) if fps else None
        self.reset()

    def reset(self) -> None:
        """Forget every frame seen: the next one anchors a new grid."""
        self._t0: Optional[float] = None
        self._next = 0  # index of the first grid point not yet served
        self._last: Optional[float] = None  # time of the last frame offered
        self._gaps: List[float] = []  # the last two intervals between frames offered (s)

    def take(self, t: float) -> bool:
        """Whether to keep the frame at time ``t`` (in s; frames in the order they are shown)."""
        gap = None
        if self._last is not None:
            gap = max(0.0, t - self._last)
            self._gaps = (self._gaps + [gap])[-2:]
        self._last = t
        if self.fps is None:
            return True
        half = min(self._gaps) / 2.0 if self._gaps else 0.0
        reach = t + half + self.tolerance  # the latest time this frame stands for
        if self._t0 is None or (gap is not None and gap > 1.5 / self.fps + self.tolerance):
            self._t0 = t  # the first frame, or the first after a gap: the grid starts here
        elif self._t0 + self._next / self.fps > reach:
            return False
        self._next = math.floor((reach - self._t0) * self.fps) + 1
        return True
