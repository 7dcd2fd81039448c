"""Prediction settings as data: frozen dataclasses validated when made, each default stated once. A result records them
(:func:`settings_dict`).
"""

import dataclasses
import math
import warnings
from typing import Any, Dict, Optional, Tuple, Union

from ..faces import DETECTORS, FaceDetector

__all__ = ["ReadSettings", "FaceSettings", "WindowSettings", "split_settings", "legacy_settings", "settings_dict",
           "SETTINGS_ALIASES"]


def _number(name: str, value, low: float, allow_low: bool = True) -> None:
    try:
        ok = not isinstance(value, bool) and math.isfinite(value) and (value >= low if allow_low else value > low)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name}={value!r}: expected a finite number {'>=' if allow_low else '>'} {low:g}")


def _whole(name: str, value, low: int, unit: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r}: expected a whole number of {unit} >= {low}")


@dataclasses.dataclass(frozen=True)
class ReadSettings:
    """Which frames of a source are read.

    Attributes:
        fps: frames per second taken, on the ``k / fps`` grid of the source's timeline; None (or 0): every frame.
        start, end: the time range read, in seconds of the source; None: from its start, to its end.
        folder_fps: the frame rate of a folder of frames or a tensor (they have no timestamps).

    Raises:
        ValueError: a value out of its range (negative or not finite, ``end`` before ``start``), naming it.
    """
    fps: Optional[float] = 8.0
    start: Optional[float] = None
    end: Optional[float] = None
    folder_fps: float = 25.0

    def __post_init__(self):
        for name in ("fps", "start", "end"):
            if getattr(self, name) is not None:
                _number(name, getattr(self, name), 0)
        _number("folder_fps", self.folder_fps, 0, allow_low=False)
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"start={self.start} s, end={self.end} s: the end comes before the start; swap them")
        if self.fps == 0:
            object.__setattr__(self, "fps", None)  # 0 and None both mean every frame: one spelling in results


@dataclasses.dataclass(frozen=True)
class FaceSettings:
    """How faces are found, followed and cut out (:class:`clipdfer.faces.FaceTracker`'s settings, and the crop).

    Attributes:
        detect: find and follow faces; False scores the centre square of whole frames as one "face".
        detector: ``auto``, ``yunet``, ``haar``, or a :class:`clipdfer.faces.FaceDetector`.
        min_score: the detection score a face needs (None: the detector's default).
        detect_every: search every k-th frame (and at shot cuts); boxes in between are interpolated.
        min_track_frames: faces seen for fewer frames are dropped.
        max_missing: searches in a row a face may be missed before its track ends.
        cut_threshold: histogram distance of a shot cut, in (0, 1]; None: no cut detection.
        margin: context around each box, a fraction of its longer side on each side, in [0, 2] (None: the model's
            ``pretrained_cfg.crop_margin``).

    Raises:
        ValueError: a value out of its range, naming it.
    """
    detect: bool = True
    detector: Any = "auto"
    min_score: Optional[float] = None
    detect_every: int = 1
    min_track_frames: int = 4
    max_missing: int = 3
    cut_threshold: Optional[float] = 0.45
    margin: Optional[float] = None

    def __post_init__(self):
        if not isinstance(self.detect, bool):
            raise ValueError(f"detect={self.detect!r}: expected True or False")
        if not isinstance(self.detector, FaceDetector) and self.detector not in DETECTORS:
            raise ValueError(f"detector={self.detector!r}: expected one of {DETECTORS} or a FaceDetector")
        if self.min_score is not None:
            _number("min_score", self.min_score, 0)
            if self.min_score > 1:
                raise ValueError(f"min_score={self.min_score}: expected a detection score in [0, 1] (0.7 for YuNet)")
        _whole("detect_every", self.detect_every, 1, "frames")
        _whole("min_track_frames", self.min_track_frames, 1, "frames")
        _whole("max_missing", self.max_missing, 0, "searches")
        if self.cut_threshold is not None and (isinstance(self.cut_threshold, bool) or not isinstance(
                self.cut_threshold, (int, float)) or not 0 < self.cut_threshold <= 1):
            raise ValueError(f"cut_threshold={self.cut_threshold!r}: expected a histogram distance in (0, 1], or None "
                             f"for no shot-cut detection")
        if self.margin is not None and (isinstance(self.margin, bool) or not isinstance(self.margin, (int, float))
                                        or not 0 <= self.margin <= 2):
            raise ValueError(f"margin={self.margin!r}: expected a fraction of the face box's longer side in [0, 2] "
                             f"(e.g. 0.25), or leave it unset for the model's pretrained_cfg.crop_margin")

    def tracker_args(self) -> Dict[str, Any]:
        """The arguments of :class:`clipdfer.faces.FaceTracker` besides its detector."""
        return dict(detect_every=self.detect_every, min_track_frames=self.min_track_frames,
                    max_missing=self.max_missing, cut_threshold=self.cut_threshold)


@dataclasses.dataclass(frozen=True)
class WindowSettings:
    """How each face's crops are scored.

    Attributes:
        window: frames per window (None: the model's T).
        stride: frames between window starts (None: window // 2).
        batch_size: windows per forward pass, of every face on screen.
        top_k: how many classes each face's ``top_k`` lists.

    Raises:
        ValueError: a value that is not a positive whole number.
    """
    window: Optional[int] = None
    stride: Optional[int] = None
    batch_size: int = 8
    top_k: int = 3

    def __post_init__(self):
        for name, unit in (("window", "frames"), ("stride", "frames"), ("batch_size", "windows"),
                           ("top_k", "classes")):
            value = getattr(self, name)
            if value is not None or name in ("batch_size", "top_k"):
                _whole(name, value, 1, unit)

    def resolve(self, num_frames: int, required: Optional[int], model_name: str) -> Tuple[int, int]:
        """``(window, stride)`` for a model of T ``num_frames`` that needs exactly ``required`` frames (or None).

        Raises:
            ValueError: a window the model cannot take.
        """
        window = self.window if self.window is not None else num_frames
        if required is not None and window != required:
            raise ValueError(f"window={window}: {model_name} scores clips of exactly T={required} frames; leave window "
                             f"unset (or build the model with num_frames={window})")
        return window, self.stride if self.stride is not None else max(1, window // 2)


# Keyword names of the flat API (predict(), the command line's options, earlier releases) -> settings fields
SETTINGS_ALIASES = {"detect_faces": "detect", "min_face_score": "min_score"}
_CLASSES = (ReadSettings, FaceSettings, WindowSettings)


def split_settings(kwargs: Dict[str, Any], reading: Optional[ReadSettings] = None,
                   faces: Optional[FaceSettings] = None, windows: Optional[WindowSettings] = None
                   ) -> Tuple[ReadSettings, FaceSettings, WindowSettings]:
    """Flat keywords (``fps=4, window=8, margin=0.5``; aliases ``detect_faces``, ``min_face_score``) over the given
    settings objects (default: the defaults) -> the three settings.

    Raises:
        TypeError: a keyword that is no field of any settings, naming the fields.
        ValueError: a value out of its range.
    """
    out = [reading or ReadSettings(), faces or FaceSettings(), windows or WindowSettings()]
    changes = [{}, {}, {}]
    for key, value in kwargs.items():
        name = SETTINGS_ALIASES.get(key, key)
        owner = next((i for i, cls in enumerate(_CLASSES) if name in {f.name for f in dataclasses.fields(cls)}), None)
        if owner is None:
            known = sorted(f.name for cls in _CLASSES for f in dataclasses.fields(cls))
            raise TypeError(f"unexpected keyword argument {key!r}: the prediction settings are {known}")
        changes[owner][name] = value
    return tuple(dataclasses.replace(s, **c) if c else s for s, c in zip(out, changes))


def legacy_settings(what: str, kwargs: Dict[str, Any], **settings) -> Tuple[ReadSettings, FaceSettings, WindowSettings]:
    """Flat keywords given to a class that takes settings objects: still applied, with a FutureWarning."""
    if kwargs:
        warnings.warn(f"{what}({', '.join(f'{k}=...' for k in kwargs)}): pass the settings as objects instead "
                      f"(clipdfer.inference.ReadSettings / FaceSettings / WindowSettings: reading=, faces=, windows=); "
                      f"flat keywords stay for clipdfer.predict and predict_many", FutureWarning, stacklevel=3)
    return split_settings(kwargs, **settings)


def settings_dict(settings: Union[ReadSettings, FaceSettings, WindowSettings]) -> Dict[str, Any]:
    """A settings object as JSON-ready data (a detector instance by its ``name``)."""
    out = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}  # asdict would copy a detector
    if "detector" in out and not isinstance(out["detector"], str):
        out["detector"] = getattr(settings.detector, "name", type(settings.detector).__name__)
    return out
