"""What prediction gives back, one type from the stream to JSON: :class:`WindowResult`, :class:`FaceTimeline`,
:class:`Prediction`, :class:`FailedSource`; ``to_dict()`` gives JSON-ready data.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["WindowResult", "FaceTimeline", "Prediction", "FailedSource", "result_from_dict"]


@dataclasses.dataclass
class WindowResult:
    """The class probabilities of one face over one window of frames.

    Attributes:
        face_id: the face's id.
        start, end: times of the window's first and last frame, in seconds of the source.
        start_frame, end_frame: indices of those frames among the frames read (0: the first frame read).
        probs: class name -> probability (summing to 1), in the model's class order.
    """
    face_id: int
    start: float
    end: float
    start_frame: int
    end_frame: int
    probs: Dict[str, float]

    @property
    def top(self) -> Tuple[str, float]:
        """The most probable class and its probability."""
        name = max(self.probs, key=self.probs.get)
        return name, self.probs[name]

    def to_dict(self) -> Dict:
        return {"start": self.start, "end": self.end, "start_frame": self.start_frame, "end_frame": self.end_frame,
                "probs": dict(self.probs)}

    @classmethod
    def from_dict(cls, d: Dict, face_id: int) -> "WindowResult":
        return cls(face_id, d["start"], d["end"], d["start_frame"], d["end_frame"], dict(d["probs"]))


@dataclasses.dataclass
class FaceTimeline:
    """One face followed through a source: its span, its windows and its overall distribution.

    Attributes:
        id: the face's id.
        first_frame, last_frame: its track's first and last frame (indices among the frames read).
        start, end: their times in seconds.
        detections: frames in which the detector found it (the others of its span are interpolated).
        windows: its windows in order.
        overall, top_k: the mean of its windows' probabilities and its best classes (set when the face ends).
    """
    id: int
    first_frame: int
    last_frame: int
    start: float
    end: float
    detections: int = 0
    windows: List[WindowResult] = dataclasses.field(default_factory=list)
    overall: Dict[str, float] = dataclasses.field(default_factory=dict)
    top_k: List[Tuple[str, float]] = dataclasses.field(default_factory=list)
    ended: bool = False

    def _locate(self, frame: int) -> Tuple[Optional[WindowResult], Optional[WindowResult]]:
        """(the first window that covers ``frame``, the last window that ends before it), each None where there is none;
        scanned back from the newest window."""
        covering = None
        for w in reversed(self.windows):
            if w.start_frame > frame:
                continue
            if w.end_frame >= frame:
                covering = w
                continue
            return covering, w
        return covering, None

    def window_at(self, frame: int) -> Optional[WindowResult]:
        """The first window that covers frame ``frame`` (None if none does)."""
        return self._locate(frame)[0]

    def nearest_window(self, frame: int) -> Optional[WindowResult]:
        """The first window that covers frame ``frame``, else the last one before it, else the first one (None: no
        window yet)."""
        covering, before = self._locate(frame)
        return covering or before or (self.windows[0] if self.windows else None)

    def finish(self, top_k: int) -> None:
        """Mark the face ended and compute ``overall`` and ``top_k`` from its windows."""
        self.ended = True
        if not self.windows:
            return
        names = list(self.windows[0].probs)
        mean = np.mean([[w.probs[c] for c in names] for w in self.windows], axis=0)
        self.overall = {c: float(p) for c, p in zip(names, mean)}
        self.top_k = sorted(self.overall.items(), key=lambda kv: -kv[1])[:top_k]

    def to_dict(self) -> Dict:
        return {"id": self.id, "first_frame": self.first_frame, "last_frame": self.last_frame, "start": self.start,
                "end": self.end, "detections": self.detections, "windows": [w.to_dict() for w in self.windows],
                "overall": dict(self.overall), "top_k": [list(kv) for kv in self.top_k]}

    @classmethod
    def from_dict(cls, d: Dict) -> "FaceTimeline":
        return cls(d["id"], d["first_frame"], d["last_frame"], d["start"], d["end"], d.get("detections", 0),
                   [WindowResult.from_dict(w, d["id"]) for w in d["windows"]], dict(d["overall"]),
                   [(c, p) for c, p in d["top_k"]], ended=True)


@dataclasses.dataclass
class Prediction:
    """Every face of one source, each with its timeline; what :func:`clipdfer.predict` returns.

    ``windows``, ``overall`` and ``top_k`` are the main face's: the longest track (the lowest id among equals).

    Attributes:
        source: the source's name (its path, URL, ``camera N`` or ``tensor``).
        model, class_names: the model's name and its classes in order.
        faces: every face with at least one window, by id.
        main_face: the main face's id.
        frames_used: frames read from the source (after ``fps`` sampling and the time range).
        frames_with_face: frames read in which a kept face has a box (detected or interpolated).
        seconds: from the first to the last frame read, in seconds of the source.
        timings: seconds spent loading the model, detecting and tracking, in the model, in all.
        notice: set when the weights make the probabilities meaningless (random, untrained head).
        detector: the face detector that ran (None: whole frames).
        notes: what the reader had to assume about the source (e.g. frame times from its rate).
        settings: what made it besides the source (``Predictor.settings`` with ``reading``).
    """
    source: str
    model: str
    class_names: List[str]
    faces: List[FaceTimeline]
    main_face: int
    frames_used: int
    frames_with_face: int
    seconds: float
    timings: Dict[str, float]
    notice: Optional[str] = None
    detector: Optional[str] = None
    notes: List[str] = dataclasses.field(default_factory=list)
    settings: Dict = dataclasses.field(default_factory=dict)

    def face(self, face_id: int) -> FaceTimeline:
        """The face with id ``face_id`` (KeyError naming the ids there are)."""
        for f in self.faces:
            if f.id == face_id:
                return f
        raise KeyError(f"no face {face_id} in {self.source}: its faces are {[f.id for f in self.faces]}")

    @property
    def windows(self) -> List[WindowResult]:
        return self.face(self.main_face).windows

    @property
    def overall(self) -> Dict[str, float]:
        return self.face(self.main_face).overall

    @property
    def top_k(self) -> List[Tuple[str, float]]:
        return self.face(self.main_face).top_k

    def to_dict(self) -> Dict:
        """JSON-ready data: the main face's ``windows``, ``overall`` and ``top_k`` at the top, every face under
        ``faces``."""
        main = self.face(self.main_face).to_dict()
        return {"source": self.source, "model": self.model, "class_names": list(self.class_names),
                "windows": main["windows"], "overall": main["overall"], "top_k": main["top_k"],
                "frames_used": self.frames_used, "frames_with_face": self.frames_with_face, "seconds": self.seconds,
                "timings": dict(self.timings), "notice": self.notice, "faces": [f.to_dict() for f in self.faces],
                "main_face": self.main_face, "detector": self.detector, "notes": list(self.notes),
                "settings": self.settings}

    @classmethod
    def from_dict(cls, d: Dict) -> "Prediction":
        """The prediction that ``to_dict()`` (or a ``--json`` / ``--out`` file) describes."""
        return cls(d["source"], d["model"], list(d["class_names"]), [FaceTimeline.from_dict(f) for f in d["faces"]],
                   d["main_face"], d["frames_used"], d["frames_with_face"], d.get("seconds", 0.0), dict(d["timings"]),
                   d.get("notice"), d.get("detector"), list(d.get("notes", [])), dict(d.get("settings") or {}))


@dataclasses.dataclass
class FailedSource:
    """A source that could not be predicted (no face, corrupt, no video stream, unreadable ...).

    Attributes:
        source: the source's name.
        error: what went wrong and what to do, as the exception said.
        error_type: the exception's class name (``NoFaceError``, ``ValueError`` ...).
    """
    source: str
    error: str
    error_type: str = "Error"

    def to_dict(self) -> Dict:
        return {"source": self.source, "error": self.error, "error_type": self.error_type}

    @classmethod
    def from_dict(cls, d: Dict) -> "FailedSource":
        return cls(d["source"], d["error"], d.get("error_type", "Error"))


def result_from_dict(d: Dict):
    """A :class:`Prediction` or a :class:`FailedSource` from its ``to_dict()``.

    Raises:
        ValueError: the dict is neither.
    """
    if not isinstance(d, dict) or "source" not in d:
        raise ValueError(f"expected a prediction's or a failed source's dict, got {type(d).__name__}")
    if "error" in d:
        return FailedSource.from_dict(d)
    try:
        return Prediction.from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a prediction's dict ({type(e).__name__}: {e})") from e
