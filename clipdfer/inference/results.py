"""What prediction gives back, one type from the stream to JSON: :class:`WindowResult`, :class:`FaceBox`,
:class:`FaceTimeline`, :class:`Prediction`, :class:`FailedSource`; ``to_dict()`` gives JSON-ready data, ``rows()`` and
``to_pandas()`` tables, :func:`load_results` the table of a whole ``--out`` folder.
"""

import dataclasses
import json
import logging
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["WindowResult", "FaceBox", "FaceTimeline", "Prediction", "FailedSource", "result_from_dict",
           "load_results", "FORMAT_VERSION", "WINDOW_COLUMNS", "BOX_COLUMNS"]

_logger = logging.getLogger(__name__)

# The version of Prediction.to_dict()'s layout: 1 (no "format_version" key): up to clipdfer 0.1.0; 2: every face's
# per-frame boxes under "boxes". A reader takes every version up to its own.
FORMAT_VERSION = 2
# The fixed columns of the tables (Prediction.rows / to_pandas); the windows' table has one column per class after
# these, named as the class.
WINDOW_COLUMNS = ("source", "model", "weights", "face_id", "start_s", "end_s", "start_frame", "end_frame",
                  "top_class", "top_probability")
BOX_COLUMNS = ("source", "model", "face_id", "frame", "time_s", "x0", "y0", "x1", "y1", "detected", "score")
TABLES = ("windows", "boxes")


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
class FaceBox:
    """Where one face is in one frame.

    Attributes:
        frame: the frame's index among the frames read (0: the first frame read).
        time: its time in seconds of the source.
        box: (x0, y0, x1, y1) in pixels of the frame as read (upright, as a player shows it).
        score: the detector's score in [0, 1] where it found the face in this frame; None where the box is interpolated
            between detections or extended past the last one (``detect_every`` > 1, a missed detection).
    """
    frame: int
    time: float
    box: Tuple[float, float, float, float]
    score: Optional[float] = None

    @property
    def detected(self) -> bool:
        """Whether the detector found the face in this frame (else the box is interpolated)."""
        return self.score is not None

    def to_dict(self) -> Dict:
        return {"frame": self.frame, "time": self.time, "box": [round(float(v), 2) for v in self.box],
                "score": None if self.score is None else round(float(self.score), 4)}

    @classmethod
    def from_dict(cls, d: Dict) -> "FaceBox":
        return cls(d["frame"], d["time"], tuple(d["box"]), d.get("score"))


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
        boxes: its box in every frame of its span, in frame order (empty with whole frames, and in results of format
            1, written before boxes were kept).
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
    boxes: List[FaceBox] = dataclasses.field(default_factory=list)

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
                "overall": dict(self.overall), "top_k": [list(kv) for kv in self.top_k],
                "boxes": [b.to_dict() for b in self.boxes]}

    @classmethod
    def from_dict(cls, d: Dict) -> "FaceTimeline":
        return cls(d["id"], d["first_frame"], d["last_frame"], d["start"], d["end"], d.get("detections", 0),
                   [WindowResult.from_dict(w, d["id"]) for w in d["windows"]], dict(d["overall"]),
                   [(c, p) for c, p in d["top_k"]], ended=True,
                   boxes=[FaceBox.from_dict(b) for b in d.get("boxes", [])])


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
        """JSON-ready data (layout :data:`FORMAT_VERSION`, in ``format_version``): the main face's ``windows``,
        ``overall`` and ``top_k`` at the top, every face under ``faces`` with its ``boxes``."""
        main = self.face(self.main_face).to_dict()
        return {"format_version": FORMAT_VERSION, "source": self.source, "model": self.model,
                "class_names": list(self.class_names),
                "windows": main["windows"], "overall": main["overall"], "top_k": main["top_k"],
                "frames_used": self.frames_used, "frames_with_face": self.frames_with_face, "seconds": self.seconds,
                "timings": dict(self.timings), "notice": self.notice, "faces": [f.to_dict() for f in self.faces],
                "main_face": self.main_face, "detector": self.detector, "notes": list(self.notes),
                "settings": self.settings}

    def rows(self, table: str = "windows") -> List[Dict]:
        """The prediction as table rows, one dict per row (what :meth:`to_pandas` makes a DataFrame of).

        Args:
            table: ``windows``: a row per face and window, :data:`WINDOW_COLUMNS` (``start_s``/``end_s`` in seconds of
                the source, ``weights`` the model's weights state, e.g. ``random``) then one column per class, named
                as the class, holding its probability; ``boxes``: a row per face and frame, :data:`BOX_COLUMNS` (the
                box in pixels; ``score`` None where the box is interpolated).

        Raises:
            ValueError: ``table`` is neither.
        """
        _check_table(table)
        weights = _weights_state(self.settings)
        if table == "boxes":
            return [{"source": self.source, "model": self.model, "face_id": f.id, "frame": b.frame, "time_s": b.time,
                     "x0": b.box[0], "y0": b.box[1], "x1": b.box[2], "y1": b.box[3], "detected": b.detected,
                     "score": b.score} for f in self.faces for b in f.boxes]
        rows = []
        for f in self.faces:
            for w in f.windows:
                top, p = w.top
                row = {"source": self.source, "model": self.model, "weights": weights, "face_id": f.id,
                       "start_s": w.start, "end_s": w.end, "start_frame": w.start_frame, "end_frame": w.end_frame,
                       "top_class": top, "top_probability": p}
                row.update((_class_column(c), w.probs[c]) for c in self.class_names)
                rows.append(row)
        return rows

    def to_pandas(self, table: str = "windows"):
        """The prediction as a ``pandas.DataFrame`` (needs pandas: ``pip install 'clipdfer[pandas]'``).

        Args:
            table: ``windows`` (a row per face and window) or ``boxes`` (a row per face and frame); the columns are
                :meth:`rows`'.

        Raises:
            ImportError: pandas is not installed.
            ValueError: an unknown ``table``.
        """
        _check_table(table)
        return _frame(self.rows(table), _columns(table, self.class_names))

    @classmethod
    def from_dict(cls, d: Dict) -> "Prediction":
        """The prediction that ``to_dict()`` (or a ``--json`` / ``--jsonl`` / ``--out`` file) describes, of any format
        up to :data:`FORMAT_VERSION`.

        Raises:
            ValueError: a format newer than this clipdfer reads.
        """
        version = d.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"format_version {version!r}: this clipdfer reads results up to format {FORMAT_VERSION}; "
                             f"the file was written by a newer clipdfer: pip install -U clipdfer")
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


def _weights_state(settings: Dict) -> str:
    """The weights' state in a result's settings: ``settings["model"]["weights"]`` (format 2), the flat
    ``settings["weights"]`` beside ``settings["model"]``, the model's name (format 1, clipdfer 0.1.0), else
    ``unknown``."""
    model = settings.get("model")
    weights = model.get("weights") if isinstance(model, dict) else settings.get("weights")
    return weights if isinstance(weights, str) and weights else "unknown"


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise ValueError(f"table={table!r}: expected 'windows' (a row per face and window) or 'boxes' (a row per face "
                         f"and frame)")


def _class_column(name: str) -> str:
    """A class's column in the windows' table: its name, or ``p(name)`` where that is a fixed column's."""
    return f"p({name})" if name in WINDOW_COLUMNS else name


def _columns(table: str, class_names: Sequence[str]) -> List[str]:
    return list(BOX_COLUMNS) if table == "boxes" else [*WINDOW_COLUMNS, *(_class_column(c) for c in class_names)]


def _frame(rows: List[Dict], columns: List[str]):
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError("tables of results need pandas: pip install 'clipdfer[pandas]' (or pip install "
                          "pandas)") from e
    return pd.DataFrame.from_records(rows, columns=columns)


_EXPECTED = "the folder of clipdfer predict --out DIR, or a file of its --json or --jsonl output"


def _result_dicts(path: str) -> Iterable[Tuple[str, Dict]]:
    """(where, dict) of every result in a ``--out`` folder (``*.json``), a ``--json`` file (a list, also one cut
    short by a kill: its finished entries, with a warning) or a ``--jsonl`` file (an object per line), whatever the
    file's extension."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".json") and not n.startswith("."))
        for name in names:
            where = os.path.join(path, name)
            try:
                with open(where, encoding="utf-8") as f:
                    data = json.load(f)
            except ValueError as e:
                raise ValueError(f"{where} is not JSON ({e}): remove it, or run clipdfer predict with the same "
                                 f"--out again to rewrite it") from e
            yield where, data
    elif os.path.isfile(path):
        yield from _file_dicts(path)
    elif os.path.exists(path):
        raise ValueError(f"{path!r} is not a regular file or a folder (a pipe, a device or /dev/stdin): load_results "
                         f"reads {_EXPECTED}; save the output first (clipdfer predict ... --jsonl > results.jsonl) "
                         f"and give that file")
    else:
        raise FileNotFoundError(f"{path!r} does not exist: give {_EXPECTED}")


def _file_dicts(path: str) -> Iterable[Tuple[str, Dict]]:
    """The entries of a ``--json`` or ``--jsonl`` file, told apart by their content."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a text file ({e}): give {_EXPECTED}") from e
    body = text.strip()
    if not body:
        raise ValueError(f"{path} is empty: expected {_EXPECTED} (was the run stopped before its first result?)")
    try:
        data = json.loads(body)
    except ValueError as whole:
        if body.startswith("["):
            yield from _cut_list(path, body, whole)
        else:
            yield from _json_lines(path, text)
        return
    for i, entry in enumerate(data if isinstance(data, list) else [data]):
        yield f"{path}[{i}]", entry


def _json_lines(path: str, text: str) -> Iterable[Tuple[str, Dict]]:
    """JSON Lines: an object per line; a last line cut short (a killed run) is left out with a warning."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    for k, (n, line) in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError as e:
            if k == len(lines) - 1 and k:
                _logger.warning("%s:%d is cut short (%s), as a killed run leaves it: read the %d line(s) before it",
                                path, n, e, k)
                return
            raise ValueError(f"{path}:{n} is not JSON ({e}): expected {_EXPECTED} (--jsonl: one JSON object per "
                             f"line; --json: one list)") from e
        yield f"{path}:{n}", entry


def _cut_list(path: str, body: str, whole: ValueError) -> Iterable[Tuple[str, Dict]]:
    """The finished entries of a ``--json`` list cut short (a run killed before it closed the list), with a warning;
    a list broken elsewhere: ValueError naming the file and the place."""
    decoder, pos, entries = json.JSONDecoder(), 1, []

    def skip(at: int) -> int:
        while at < len(body) and body[at] in " \t\r\n":
            at += 1
        return at

    while True:
        pos = skip(pos)
        if pos >= len(body):
            break  # cut after a finished entry
        if body[pos] == "]":
            raise ValueError(f"{path} is not JSON ({whole}): text follows the list's end; expected {_EXPECTED}")
        try:
            entry, pos = decoder.raw_decode(body, pos)
        except ValueError as e:
            if "\n" in body[getattr(e, "pos", 0):]:  # not the last line: broken, not cut short
                raise ValueError(f"{path} is not JSON ({e}): expected {_EXPECTED}") from e
            break  # the last entry is cut short
        entries.append(entry)
        pos = skip(pos)
        if pos < len(body) and body[pos] == ",":
            pos += 1
        elif pos < len(body) and body[pos] != "]":
            raise ValueError(f"{path} is not JSON ({whole}): expected {_EXPECTED}")
    if not entries:
        raise ValueError(f"{path} is a list cut short before its first entry was finished ({whole}): run clipdfer "
                         f"predict again (with --out DIR, a killed run keeps every result done)")
    _logger.warning("%s is a --json list cut short (a run killed before it closed the list): read its %d finished "
                    "entr%s", path, len(entries), "y" if len(entries) == 1 else "ies")
    for i, entry in enumerate(entries):
        yield f"{path}[{i}]", entry


def load_results(path: str, table: str = "windows"):
    """The table of every result in a ``clipdfer predict --out DIR`` folder (its ``<name>.json`` files), or in a file
    of ``--json`` (a list) or ``--jsonl`` (an object per line) output, as one ``pandas.DataFrame``.

    A file is read as a ``--json`` list or as JSON Lines by its content, whatever its extension (``.json``,
    ``.jsonl``, ``.ndjson``, ``.txt``); a ``--json`` list cut short by a killed run gives its finished entries (and a
    JSON Lines file its whole lines), with a warning. Failed sources have no rows (a warning counts them; in a folder
    ``summary.csv`` lists them). Results of models with other classes have empty (NaN) cells in each other's class
    columns. Results of clipdfer 0.1.0 (format 1) have ``weights`` from their settings (else ``unknown``) and no
    boxes (a warning says so with ``table="boxes"``).

    Args:
        path: the folder or file.
        table: ``windows`` or ``boxes``, as :meth:`Prediction.rows`.

    Raises:
        ImportError: pandas is not installed (``pip install 'clipdfer[pandas]'``), before anything is read.
        FileNotFoundError: ``path`` does not exist.
        ValueError: a file that is not a clipdfer result, not JSON or JSON Lines, not a regular file
            (``/dev/stdin``), or no result at all; each names the file.
    """
    _check_table(table)
    _frame([], [])  # ImportError before the corpus is read
    rows: List[Dict] = []
    columns: List[str] = []
    found = failed = boxless = 0
    for where, data in _result_dicts(path):
        try:
            result = result_from_dict(data)
        except ValueError as e:
            raise ValueError(f"{where} is not a clipdfer result ({e}): "
                             + ("move other files out of the folder" if os.path.isdir(path) else
                                f"give {_EXPECTED}")) from e
        found += 1
        if isinstance(result, FailedSource):
            failed += 1
            continue
        boxless += table == "boxes" and data.get("format_version", 1) < 2
        rows += result.rows(table)
        columns += [c for c in _columns(table, result.class_names) if c not in columns]
    if not found:
        raise ValueError(f"no results in {path!r}: expected the <name>.json files of clipdfer predict --out DIR (or a "
                         f"--json / --jsonl file)")
    folder = os.path.isdir(path)
    if failed:
        _logger.warning("%d of %d source(s) in %s failed and have no rows (%s)", failed, found, path,
                        "see summary.csv" if folder else "their entries say why")
    if boxless:
        _logger.warning("%d of %d result(s) in %s are of format 1 (clipdfer 0.1.0) and hold no boxes: %s", boxless,
                        found - failed, path, "run clipdfer predict again with the same --out to add them" if folder
                        else "run clipdfer predict again (with --out DIR, it remakes format-1 results with boxes)")
    return _frame(rows, columns)
