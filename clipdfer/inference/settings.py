"""Prediction settings as data: frozen dataclasses validated when made, each default stated once. A result records them
(:func:`settings_dict`).
"""

import dataclasses
import inspect
import math
import numbers
import warnings
from typing import Any, Dict, Optional, Tuple, Union

from ..faces import DETECTORS, FaceDetector, FaceTracker

__all__ = ["ReadSettings", "FaceSettings", "WindowSettings", "split_settings", "legacy_settings", "settings_dict",
           "SETTINGS_ALIASES"]


def _real(settings, name: str, low: float, allow_low: bool = True, high: Optional[float] = None,
          expected: str = "") -> None:
    """Check ``settings.name`` (None is left alone) and store it as a Python float (numpy numbers included)."""
    value = getattr(settings, name)
    if value is None:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and (
        value >= low if allow_low else value > low) and (high is None or value <= high)
    if not ok:
        bound = f"in [{low:g}, {high:g}]" if high is not None else f"{'>=' if allow_low else '>'} {low:g}"
        raise ValueError(f"{name}={value!r}: expected {expected or 'a finite number'} {bound}")
    object.__setattr__(settings, name, float(value))


def _whole(settings, name: str, low: int, unit: str) -> None:
    """Check ``settings.name`` (None is left alone) and store it as a Python int (numpy integers included)."""
    value = getattr(settings, name)
    if value is None:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r}: expected a whole number of {unit} >= {low}")
    object.__setattr__(settings, name, int(value))


_TRACKER = inspect.signature(FaceTracker).parameters  # its defaults are the settings' defaults
_DETECT_SIZE = inspect.signature(FaceDetector).parameters["max_side"].default  # what detect_size=None means


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
            _real(self, name, 0)
        if self.folder_fps is None:
            raise ValueError("folder_fps=None: expected the frame rate of a folder of frames, e.g. 25")
        _real(self, "folder_fps", 0, allow_low=False)
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"start={self.start} s, end={self.end} s: the end comes before the start; swap them")
        if self.fps == 0:
            object.__setattr__(self, "fps", None)  # 0 and None both mean every frame: one spelling in results


@dataclasses.dataclass(frozen=True)
class FaceSettings:
    """How faces are found, followed and cut out (:class:`clipdfer.faces.FaceTracker`'s settings, and the crop).

    Attributes:
        detect: find and follow faces; False scores the centre square of whole frames as one "face".
        detector: ``yunet`` (``auto``, the default, is YuNet), ``haar``, or a :class:`clipdfer.faces.FaceDetector`.
        min_score: the detection score a face needs (None: the detector's default).
        detect_size: frames are scaled down so that their longer side is at most this many pixels before faces are
            searched (None: the detector's ``max_side``, 640); raise it for small faces in large frames (a 51 px face
            in a 3840x2160 frame needs about 1920).
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
    detector: Any = _TRACKER["detector"].default
    min_score: Optional[float] = None
    detect_size: Optional[int] = None
    detect_every: int = _TRACKER["detect_every"].default
    min_track_frames: int = _TRACKER["min_track_frames"].default
    max_missing: int = _TRACKER["max_missing"].default
    cut_threshold: Optional[float] = _TRACKER["cut_threshold"].default
    margin: Optional[float] = None

    def __post_init__(self):
        if not isinstance(self.detect, bool):
            raise ValueError(f"detect={self.detect!r}: expected True or False")
        if not isinstance(self.detector, FaceDetector) and self.detector not in DETECTORS:
            raise ValueError(f"detector={self.detector!r}: expected one of {DETECTORS} or a FaceDetector")
        if not self.detect and self.detector != _TRACKER["detector"].default:
            raise ValueError(f"detector={self.detector!r} with detect=False (--no-face-detection): whole frames are "
                             f"scored and no detector runs; leave one of the two out")
        _real(self, "min_score", 0, high=1, expected="a detection score")
        _whole(self, "detect_size", 32, "pixels")
        if self.detect_size is not None and isinstance(self.detector, FaceDetector):
            raise ValueError(f"detect_size={self.detect_size} with a FaceDetector instance ({self.detector!r}): set "
                             f"its max_side instead, or give the detector by name")
        if self.detect_size is not None and not self.detect:
            raise ValueError(f"detect_size={self.detect_size} with detect=False (--no-face-detection): no detector "
                             f"runs; leave one of the two out")
        if self.detect_size == _DETECT_SIZE:  # the detectors' own size, given: the same settings as leaving it out
            object.__setattr__(self, "detect_size", None)
        _whole(self, "detect_every", 1, "frames")
        _whole(self, "min_track_frames", 1, "frames")
        _whole(self, "max_missing", 0, "searches")
        if self.cut_threshold is not None and not (isinstance(self.cut_threshold, numbers.Real)
                                                   and not isinstance(self.cut_threshold, bool)
                                                   and 0 < self.cut_threshold <= 1):
            raise ValueError(f"cut_threshold={self.cut_threshold!r}: expected a histogram distance in (0, 1], or None "
                             f"for no shot-cut detection")
        _real(self, "cut_threshold", 0, allow_low=False, high=1)
        if self.margin is not None and not (isinstance(self.margin, numbers.Real) and not isinstance(self.margin, bool)
                                            and 0 <= self.margin <= 2):
            raise ValueError(f"margin={self.margin!r}: expected a fraction of the face box's longer side in [0, 2] "
                             f"(e.g. 0.25), or leave it unset for the model's pretrained_cfg.crop_margin")
        _real(self, "margin", 0, high=2)

    def detector_args(self) -> Dict[str, Any]:
        """The keyword arguments of :func:`clipdfer.faces.make_detector` besides the detector."""
        return dict(min_score=self.min_score, **({} if self.detect_size is None else {"max_side": self.detect_size}))

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
            if getattr(self, name) is None and name in ("batch_size", "top_k"):
                raise ValueError(f"{name}=None: expected a whole number of {unit} >= 1")
            _whole(self, name, 1, unit)

    def resolve(self, num_frames: int, required: Optional[int], model_name: str,
                most: Optional[int] = None) -> Tuple[int, int]:
        """``(window, stride)`` for a model of T ``num_frames`` that needs exactly ``required`` frames, or at most
        ``most`` (None: any).

        Raises:
            ValueError: a window the model cannot take.
        """
        window = self.window if self.window is not None else num_frames
        if required is not None and window != required:
            raise ValueError(f"window={window}: {model_name} scores clips of exactly T={required} frames (its weights "
                             f"are for that T); leave window unset")
        if most is not None and window > most:
            raise ValueError(f"window={window}: {model_name} scores clips of at most {most} frames; give a window "
                             f"<= {most}, or leave it unset")
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
        TypeError: a settings object of another type; a keyword that is no field of any settings, naming the fields.
        ValueError: a value out of its range.
    """
    out = []
    for given, cls, name in zip((reading, faces, windows), _CLASSES, ("reading", "faces", "windows")):
        if given is not None and not isinstance(given, cls):
            raise TypeError(f"{name}={given!r}: expected a clipdfer.inference.{cls.__name__}, e.g. "
                            f"{name}={cls.__name__}(...)")
        out.append(given if given is not None else cls())
    changes = [{}, {}, {}]
    for key, value in kwargs.items():
        changes[_owner(key)][SETTINGS_ALIASES.get(key, key)] = value
    return tuple(dataclasses.replace(s, **c) if c else s for s, c in zip(out, changes))


def _owner(key: str) -> int:
    """The index in (reading, faces, windows) of the settings that has the field ``key`` (or its alias)."""
    name = SETTINGS_ALIASES.get(key, key)
    for i, cls in enumerate(_CLASSES):
        if name in {f.name for f in dataclasses.fields(cls)}:
            return i
    known = sorted(f.name for cls in _CLASSES for f in dataclasses.fields(cls))
    raise TypeError(f"unexpected keyword argument {key!r}: the prediction settings are {known}")


_TAKEN_BY = ("Predictor.run / BatchRun (reading=ReadSettings(...))", "Predictor (faces=FaceSettings(...))",
             "Predictor (windows=WindowSettings(...))")


def legacy_settings(what: str, kwargs: Dict[str, Any], **settings) -> Tuple[ReadSettings, FaceSettings, WindowSettings]:
    """Flat keywords given to a class that takes settings objects (``settings``: the ones it takes, by name): still
    applied, with a FutureWarning.

    Raises:
        TypeError: a keyword of a settings object ``what`` does not take (it would be dropped), naming who takes it.
    """
    taken = [name in settings for name in ("reading", "faces", "windows")]
    for key in kwargs:
        if not taken[_owner(key)]:
            raise TypeError(f"{what}() got {key}=...: {_CLASSES[_owner(key)].__name__}.{SETTINGS_ALIASES.get(key, key)}"
                            f" belongs to {_TAKEN_BY[_owner(key)]}, not to {what}")
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
