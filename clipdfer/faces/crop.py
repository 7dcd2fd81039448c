"""Square face crops with context, resized for a model."""

from typing import Optional

import numpy as np

from .detect import Box

__all__ = ["crop_face"]


_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def crop_face(frame: np.ndarray, box: Optional[Box], margin: float = 0.25, size: int = 224,
              interpolation: str = "bicubic") -> np.ndarray:
    """A square crop around ``box`` enlarged by ``margin`` (a fraction of the box's longer side) on each side,
    resized to ``size`` x ``size`` with ``interpolation`` (a pretrained cfg's: PIL's filter of that name, antialiased
    when shrinking); parts outside the frame repeat its edge. ``box=None``: the centre square of the whole frame.
    (H, W, 3) uint8 -> (size, size, 3) uint8.

    Raises:
        ValueError: an interpolation PIL does not have.
    """
    from PIL import Image
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r}: expected one of {_INTERPOLATIONS} (a pretrained cfg's)")
    resample = Image.Resampling[interpolation.upper()]
    h, w = frame.shape[:2]
    if box is None:
        side = min(h, w)
        x0, y0 = (w - side) // 2, (h - side) // 2
        region = frame[y0:y0 + side, x0:x0 + side]
    else:
        x0, y0, x1, y1 = box
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * (1 + 2 * margin)
        half = side / 2
        left, top = int(round(cx - half)), int(round(cy - half))
        right, bottom = int(round(cx + half)), int(round(cy + half))
        pad = max(0, -left, -top, right - w, bottom - h)
        if pad:
            frame = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
            left, top, right, bottom = left + pad, top + pad, right + pad, bottom + pad
        region = frame[top:bottom, left:right]
    return np.array(Image.fromarray(np.ascontiguousarray(region)).resize((size, size), resample))
