"""The third stage of prediction: each face's crops -> windows of T frames, due every ``stride`` frames (a track shorter
than T: one window sampled to T). A :class:`FaceWindows` holds its track's last T crops and ends with it.
"""

import collections
from typing import Deque, List, NamedTuple, Optional

from .tracking import FaceCrop

__all__ = ["Window", "FaceWindows"]


class Window(NamedTuple):
    """T crops of one face, to score together."""
    face_id: int
    crops: List[FaceCrop]


class FaceWindows:
    """The window schedule of one live track.

    Args:
        face_id: the track's id.
        first_frame: the frame index of its first crop (its crops come one per frame, in order).
        window: T, crops per window.
        stride: crops between window starts.
        sampling: how a track shorter than T is sampled to T (the model's ``pretrained_cfg.frame_sampling``).
    """

    def __init__(self, face_id: int, first_frame: int, window: int, stride: int, sampling: str = "segment"):
        self.face_id, self.first_frame, self.window, self.stride = face_id, first_frame, window, stride
        self.sampling = sampling
        self.crops: Deque[FaceCrop] = collections.deque(maxlen=window)
        self.count = 0  # crops added
        self.next_start = 0  # position of the next regular window's first crop
        self.last_end = -1  # position of the last crop of the last window given

    def add(self, crop: FaceCrop) -> Optional[Window]:
        """Take the track's next crop; returns a window when one is due."""
        expected = self.first_frame + self.count
        if crop.index != expected:
            raise RuntimeError(f"face {self.face_id}: got the crop of frame {crop.index}, expected frame {expected} "
                               f"(a track gives one box per frame, in order)")
        self.crops.append(crop)
        self.count += 1
        if self.count - self.next_start == self.window:
            self.next_start += self.stride
            self.last_end = self.count - 1
            return Window(self.face_id, list(self.crops))
        return None

    def finish(self) -> Optional[Window]:
        """The track ended: its last window, if its last crops are in none yet."""
        from ..data.sampling import sample_indices
        if self.count == 0:
            return None
        crops = list(self.crops)
        if self.last_end < 0:  # shorter than a window: its crops sampled to T, as a short clip is
            return Window(self.face_id, [crops[i] for i in sample_indices(len(crops), self.window, self.sampling)])
        if self.last_end < self.count - 1:  # the last window ends at the track's last frame
            return Window(self.face_id, crops)
        return None

    def may_cover(self, frame: int) -> bool:
        """Whether a window not given yet may still cover ``frame`` (one of this track's frames); False once T more
        crops have come."""
        return self.count <= (frame - self.first_frame) + self.window
