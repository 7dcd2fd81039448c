"""A scripted face detector for tests where the detector is not the point: it finds the marker squares that
:func:`face_frame` draws, on every platform (no OpenCV), also after lossy video coding.

Face k (1, 2, ...) of a frame is a square of the saturated colour ``MARKERS[k - 1]``; the detector returns the bounding
box of the pixels within a colour distance of each marker colour (ignoring a handful of stray pixels), largest first,
with score 1. Backgrounds are greys, far from every marker colour.
"""

from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from clipdfer.faces import Face, FaceDetector

Box = Tuple[int, int, int, int]
MARKERS = ((240, 10, 10), (10, 10, 240), (10, 220, 10), (240, 10, 240))


class ScriptedDetector(FaceDetector):
    """Finds :func:`face_frame`'s markers; ``calls`` counts the frames searched."""

    name = "scripted"

    def __init__(self, tolerance: int = 90, min_pixels: int = 12, min_score: float = 0.0):
        super().__init__(min_score=min_score, min_size=1, max_side=1 << 30)
        self.tolerance, self.min_pixels = tolerance, min_pixels
        self.calls = 0

    def _detect(self, frame: np.ndarray) -> List[Face]:
        self.calls += 1
        faces = []
        pixels = frame.astype(np.int32)
        for colour in MARKERS:
            mask = np.abs(pixels - np.asarray(colour)).sum(-1) < self.tolerance
            if mask.sum() < self.min_pixels:
                continue
            rows, cols = np.nonzero(mask.sum(1) >= 3)[0], np.nonzero(mask.sum(0) >= 3)[0]  # ignore stray pixels
            if len(rows) and len(cols):
                faces.append(Face((float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)),
                                  1.0))
        return faces


def face_frame(boxes: Iterable[Optional[Box]] = (), height: int = 120, width: int = 160,
               background: Sequence[int] = (90, 90, 90)) -> np.ndarray:
    """An RGB (H, W, 3) uint8 frame with the marker of face k at ``boxes[k - 1]`` (x0, y0, x1, y1); None: absent."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = np.asarray(background, dtype=np.uint8)
    for k, box in enumerate(boxes):
        if box is not None:
            x0, y0, x1, y1 = box
            frame[y0:y1, x0:x1] = MARKERS[k]
    return frame


def use_scripted_detector(monkeypatch) -> None:
    """Make ``detector="auto"`` (the CLI's default) give a :class:`ScriptedDetector` for the rest of a test."""
    import clipdfer.faces
    import clipdfer.inference.predictor
    real = clipdfer.faces.make_detector

    def make(detector="auto", min_score=None, **kwargs):
        if detector != "auto":
            return real(detector, min_score, **kwargs)
        return ScriptedDetector(min_score=0.0 if min_score is None else min_score)

    monkeypatch.setattr(clipdfer.faces, "make_detector", make)
    monkeypatch.setattr(clipdfer.inference.predictor, "make_detector", make)  # where the predictor looks it up
