"""Face detectors through OpenCV: YuNet (the default) and the frontal-face Haar cascade, only when asked for
(docs/predict.md, "Faces", has the comparison).
"""

import dataclasses
import threading
from typing import List, Optional, Tuple, Union

import numpy as np

__all__ = ["Face", "FaceDetector", "YuNetDetector", "HaarDetector", "make_detector", "detect_faces", "DETECTORS",
           "yunet_model_path", "YUNET_SHA256"]


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
    """Base of the detectors: ``detect(frame)`` -> faces, largest first. Calls from several threads take turns (one
    detector may serve several predictions at once: OpenCV's detectors keep each call's state in the detector, so two
    calls at once mixed their faces).

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
        self._lock = threading.Lock()

    def _detect(self, frame: np.ndarray) -> List[Face]:
        raise NotImplementedError

    def detect(self, frame: np.ndarray) -> List[Face]:
        """Faces in an RGB (H, W, 3) uint8 frame, largest first."""
        small, scale = _downscale(_check_frame(frame), self.max_side)
        with self._lock:
            found = self._detect(small)
        faces = [Face(tuple(v / scale for v in f.box), f.score) for f in found]
        h, w = frame.shape[:2]
        faces = [Face((max(0.0, f.box[0]), max(0.0, f.box[1]), min(float(w), f.box[2]), min(float(h), f.box[3])),
                      f.score) for f in faces]
        faces = [f for f in faces if f.score >= self.min_score
                 and min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= self.min_size]
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_score={self.min_score}, min_size={self.min_size}, max_side={self.max_side})"


YUNET_FILE = "face_detection_yunet_2023mar.onnx"  # OpenCV Zoo's YuNet (MIT), shipped in clipdfer/assets
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
_OPENCV_FIX = "pip install 'clipdfer[predict]' (or pip install 'opencv-python-headless>=4.10,<5')"


def yunet_model_path() -> str:
    """The path of the YuNet model file shipped with clipdfer (``clipdfer/assets``; README.md there says where it is
    from)."""
    import os
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", YUNET_FILE)


def _check_model_file(path: str, sha256: str) -> None:
    """Raise if the file at ``path`` is missing or its sha256 is not ``sha256``."""
    import hashlib
    try:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        raise FileNotFoundError(f"the YuNet model file {path} cannot be read ({e}): it ships with clipdfer; reinstall "
                                f"it (pip install --force-reinstall clipdfer)") from e
    if digest != sha256:
        raise RuntimeError(f"the YuNet model file {path} has sha256 {digest}, expected {sha256} (OpenCV Zoo's "
                           f"{YUNET_FILE}): it is damaged or was replaced; reinstall clipdfer (pip install "
                           f"--force-reinstall clipdfer)")


def _opencv(what: str):
    """OpenCV 4 (``cv2``), or an ImportError that says how to install it."""
    try:
        import cv2
    except ImportError as e:
        raise ImportError(f"{what} needs OpenCV: {_OPENCV_FIX}") from e
    return cv2


class YuNetDetector(FaceDetector):
    """YuNet (Wu, Peng and Yu, "YuNet: A Tiny Millisecond-level Face Detector", Machine Intelligence Research 2023)
    through OpenCV's ``cv2.FaceDetectorYN``, with OpenCV Zoo's ``face_detection_yunet_2023mar.onnx`` that ships with
    clipdfer (its sha256 is checked here). Frames are searched at their size after ``max_side``; OpenCV releases the
    GIL while it runs. One thread at a time per detector.

    Args:
        min_score, min_size, max_side: see :class:`FaceDetector`.

    Raises:
        ImportError: OpenCV is not installed (the message says how to install it).
        RuntimeError: the model file's sha256 differs; this OpenCV cannot load the model.
        FileNotFoundError: the model file is missing.
    """

    name = "yunet"

    def __init__(self, min_score: float = 0.7, min_size: int = 12, max_side: int = 640):
        super().__init__(min_score, min_size, max_side)
        cv2 = _opencv("the YuNet face detector")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise ImportError(f"OpenCV {cv2.__version__} has no FaceDetectorYN (clipdfer's YuNet needs OpenCV 4.10 or "
                              f"newer, as its extra says): {_OPENCV_FIX}")
        path = yunet_model_path()
        _check_model_file(path, YUNET_SHA256)
        try:
            # score threshold as ours; OpenCV's defaults for the rest (NMS IoU 0.3, 5000 candidates)
            self._net = cv2.FaceDetectorYN.create(path, "", (320, 320), float(min_score), 0.3, 5000)
        except cv2.error as e:
            raise RuntimeError(f"OpenCV {cv2.__version__} cannot load {path} ({e}): {_OPENCV_FIX}") from e
        self._cv2, self._size = cv2, (320, 320)

    def _detect(self, frame: np.ndarray) -> List[Face]:
        h, w = frame.shape[:2]
        if self._size != (w, h):
            self._net.setInputSize((w, h))
            self._size = (w, h)
        bgr = np.ascontiguousarray(frame[..., ::-1])  # (H, W, 3) RGB -> BGR, what the network was trained on
        _, rows = self._net.detect(bgr)  # (N, 15) float32: x, y, w, h, 5 landmarks (unused), score; None: no face
        if rows is None:
            return []
        return [Face((float(x), float(y), float(x + bw), float(y + bh)), float(score))
                for x, y, bw, bh, score in rows[:, [0, 1, 2, 3, 14]].tolist()]


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (in ``opencv-python-headless`` 4); every face it keeps has score 1."""

    name = "haar"

    def __init__(self, min_score: float = 0.0, min_size: int = 24, max_side: int = 640, min_neighbors: int = 5):
        super().__init__(min_score, min_size, max_side)
        cv2 = _opencv("the Haar cascade face detector")
        if not hasattr(cv2, "CascadeClassifier"):
            raise ImportError(f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 dropped them): pip install "
                              f"'opencv-python-headless>=4.10,<5', or use the default YuNet detector (--detector auto)")
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
    """A face detector by name: ``yunet`` (``auto`` is YuNet too) or ``haar``; a ``FaceDetector`` is passed through.

    Args:
        detector: the name, or a detector.
        min_score: the score a face needs (default: 0.7 for YuNet; Haar has no score).
        **kwargs: ``min_size``, ``max_side`` of :class:`FaceDetector`.

    Raises:
        ValueError: an unknown name.
        ImportError: OpenCV is not installed (``pip install 'clipdfer[predict]'``).
    """
    if isinstance(detector, FaceDetector):
        return detector
    if detector not in DETECTORS:
        raise ValueError(f"detector={detector!r}: expected one of {DETECTORS} or a FaceDetector")
    if detector == "haar":
        return HaarDetector(**kwargs)
    try:
        return YuNetDetector(**({} if min_score is None else {"min_score": min_score}), **kwargs)
    except ImportError as e:
        if detector != "auto" or not isinstance(e.__cause__, ModuleNotFoundError):
            raise  # a detector the user chose, or an OpenCV too old: its own message says what to install
        # no detector was chosen and OpenCV is absent: name none, name the extra
        raise ImportError("finding faces needs the packages of clipdfer's predict extra: pip install "
                          "'clipdfer[predict]' (or detect_faces=False to score whole frames)") from e


def detect_faces(frame: np.ndarray, detector: Union[str, FaceDetector] = "auto", **kwargs) -> List[Face]:
    """The faces of one RGB (H, W, 3) uint8 frame, largest first; builds a detector per call (:func:`make_detector`)."""
    return make_detector(detector, **kwargs).detect(frame)
