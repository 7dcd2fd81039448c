"""The last stage of prediction: timelines -> text, JSON, CSV (:class:`ResultWriter`) and annotated frames
(:class:`FrameDrawer`, which holds at most about ``window + the tracker's delay`` frames).
"""

import collections
import csv
import json
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from .results import Prediction, WindowResult

__all__ = ["FrameDrawer", "ResultWriter", "JsonListWriter", "CsvWriter", "format_prediction", "check_output_path",
           "VideoOutput", "CSV_COLUMNS", "VIDEO_OUTPUTS"]

CSV_COLUMNS = ("source", "face_id", "start_frame", "end_frame", "start_s", "end_s")
Label = Tuple[bool, Optional[WindowResult]]  # (resolved, the window whose label to draw)


class FrameDrawer:
    """Draws each frame once the labels of the faces in it are known, and the source's frames between the frames used
    (``between``), so that an annotated video has every frame of the source.

    A frame between two frames used, at time ``t`` between theirs, shows the faces that are in both: each box
    interpolated linearly in time between the two frames' boxes, and the label of the first window that covers both
    frames (where none does, the label of the nearer of the two). A face in only one of them (its track starts or
    ends there) is not drawn. The frames after the last frame used keep its boxes and labels.

    Args:
        draw: called as ``draw(index, time, frame, [(face_id, box, (top class, probability) or None)])`` for every
            frame, in order (e.g. :meth:`clipdfer.visualize.VideoAnnotator.write`); a frame between two frames used
            gets the index of the one before it.
        between: ``(index of the frame used before it, time, frame)`` of the frames between those used, in order
            (:attr:`clipdfer.inference.sources.EveryFrame.between`), each there before the frame used after it is
            added; None: only the frames used are drawn.
    """

    def __init__(self, draw: Callable, between: Optional["collections.deque"] = None):
        self.draw, self.between = draw, between
        self.frames: Dict[int, Tuple[float, np.ndarray]] = {}
        self.boxes: Dict[int, List[Tuple[int, Optional[tuple]]]] = {}
        self.drawn = -1
        self._last: Optional[Tuple[float, Dict[int, tuple]]] = None  # the last frame drawn: time, face -> (box, window)

    def add_frame(self, index: int, t: float, image: np.ndarray) -> None:
        self.frames[index] = (t, image)

    def add_box(self, face_id: int, index: int, box: Optional[tuple]) -> None:
        if index > self.drawn:
            self.boxes.setdefault(index, []).append((face_id, box))

    def draw_until(self, final_until: int, label: Callable[[int, int], Label]) -> None:
        """Draw, in order, the frames up to ``final_until`` whose faces' labels are resolved; ``label(face_id, frame)``
        says whether a label is known and which window gives it (the covering one, else the nearest once none can cover
        it). The frames between the last one drawn and the next are drawn just before it."""
        j = self.drawn + 1
        while j <= final_until and j in self.frames:
            faces = {}
            for face_id, box in self.boxes.get(j, []):
                resolved, window = label(face_id, j)
                if not resolved:
                    return  # a window that may still cover this frame is to come
                faces[face_id] = (box, window)
            t, image = self.frames.pop(j)
            self.boxes.pop(j, None)
            self._draw_between(j, t, faces)
            self.draw(j, t, image, [(k, box, w.top if w is not None else None) for k, (box, w) in faces.items()])
            self.drawn, self._last = j, (t, faces)
            j += 1

    def finish(self) -> None:
        """Draw the frames after the last one drawn (the end of the stream), with its boxes and labels."""
        self._draw_between(None, None, None)

    def _draw_between(self, index: Optional[int], t: Optional[float], faces: Optional[Dict[int, tuple]]) -> None:
        """Draw the waiting frames that come before frame ``index`` (None: all), between the last frame drawn and it."""
        while self.between and (index is None or self.between[0][0] < index):
            before, tb, image = self.between.popleft()
            shown = []
            if self._last is not None and before == self.drawn:
                t0, faces0 = self._last
                for face_id, (box0, w0) in faces0.items():
                    if faces is None:  # after the last frame used
                        shown.append((face_id, box0, w0.top if w0 is not None else None))
                    elif face_id in faces:
                        box1, w1 = faces[face_id]
                        a = (tb - t0) / (t - t0) if t > t0 else 0.0  # 0 at the frame before, 1 at the frame after
                        box = None if box0 is None or box1 is None else tuple(
                            (1 - a) * u + a * v for u, v in zip(box0, box1))
                        shown.append((face_id, box, _label_between(index, w0, w1, a)))
            self.draw(before, tb, image, shown)

    @property
    def held(self) -> int:
        """Frames waiting to be drawn (the frames between those used not counted)."""
        return len(self.frames)


def _label_between(index: int, w0: Optional[WindowResult], w1: Optional[WindowResult],
                   a: float) -> Optional[Tuple[str, float]]:
    """The label between frame ``index - 1`` (window ``w0``) and ``index`` (``w1``), ``a`` of the way: the first window
    that covers both, else the nearer frame's."""
    if w1 is not None and w1.start_frame <= index - 1 <= w1.end_frame:
        return w1.top
    if w0 is not None and w0.start_frame <= index <= w0.end_frame:
        return w0.top
    w = w0 if a < 0.5 else w1
    return w.top if w is not None else None


def format_prediction(r: Prediction) -> str:
    """The terminal report of one prediction: the source, each face's span, timeline and overall top classes."""
    def bar(p: float, width: int = 30) -> str:
        return "#" * int(round(width * p))

    lines = []
    if r.notice:
        lines += ["=" * 100, r.notice, "=" * 100]
    lines.append(f"{r.source}: {r.frames_used} frames ({r.seconds:.2f} s), a face in {r.frames_with_face}; "
                 f"{len(r.faces)} face(s) followed; model {r.model}")
    lines += [f"note: {n}" for n in r.notes]
    for face in r.faces:
        main = " (main: the longest)" if face.id == r.main_face and len(r.faces) > 1 else ""
        lines.append(f"face {face.id}: frames {face.first_frame}-{face.last_frame} ({face.start:.2f}-{face.end:.2f} "
                     f"s), {len(face.windows)} window(s){main}")
        for w in face.windows:
            top, p = w.top
            lines.append(f"  {w.start:6.2f}-{w.end:6.2f} s  {top:<16} {p:.3f}  {bar(p)}")
        lines.append("  overall: " + ", ".join(f"{c} {p:.3f}" for c, p in face.top_k))
    lines.append("time: " + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.2f} s" for k, v in r.timings.items()))
    return "\n".join(lines)


class ResultWriter:
    """Writes each source's result as it comes, flushed: ``text`` (failed sources left out), ``json`` (one list whose
    finished entries stay readable when interrupted; ``]`` at :meth:`close`), ``jsonl`` (one JSON object per source
    per line, failed sources included: a stream other tools read line by line) or ``csv`` (:data:`CSV_COLUMNS` and a
    column per class, a row per face and window).

    Raises:
        ValueError: a format that is not one of ``FORMATS``.
    """
    FORMATS = ("text", "json", "jsonl", "csv")

    def __init__(self, out: TextIO, fmt: str, class_names: Sequence[str]):
        if fmt not in self.FORMATS:
            raise ValueError(f"output format {fmt!r}: expected one of {', '.join(self.FORMATS)}")
        self.out, self.fmt, self.class_names = out, fmt, list(class_names)
        self.csv, self.count = csv.writer(out), 0  # count: entries written (json), rows written or the header (csv)
        if fmt == "json":
            self._write("[")

    def add(self, entry: Dict) -> None:
        """Write one result: ``Prediction.to_dict()`` or a failed source's dict (with ``error``)."""
        if self.fmt == "json":
            lines = json.dumps(entry, indent=2, allow_nan=False).splitlines()  # strict JSON
            self._write(("," if self.count else "") + "\n" + "\n".join("  " + line for line in lines))
            self.count += 1
        elif self.fmt == "jsonl":
            self._write(json.dumps(entry, allow_nan=False) + "\n")
            self.count += 1
        elif "error" in entry:
            return
        elif self.fmt == "text":
            self._write(format_prediction(Prediction.from_dict(entry)) + "\n")
        else:
            rows = [[entry["source"], face["id"], w["start_frame"], w["end_frame"], f"{w['start']:.3f}",
                     f"{w['end']:.3f}", *[f"{w['probs'][c]:.4f}" for c in self.class_names]]
                    for face in entry["faces"] for w in face["windows"]]
            self._csv_rows(rows)

    def close(self) -> None:
        """End the output: the JSON list's ``]``, the CSV header if no row gave it."""
        if self.fmt == "json":
            self._write("\n]\n" if self.count else "]\n")
        elif self.fmt == "csv":
            self._csv_rows([])

    def _csv_rows(self, rows: List[list]) -> None:
        if not self.count:
            rows.insert(0, [*CSV_COLUMNS, *self.class_names])
        self.csv.writerows(rows)
        self.count += len(rows)
        self.out.flush()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write_header(self) -> None:
        """Earlier releases' ``CsvWriter.write_header``: the CSV header if no row gave it (ends the output)."""
        self.close()

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def JsonListWriter(out: TextIO) -> ResultWriter:
    """Earlier releases' JSON list writer: ``ResultWriter(out, "json", ())``."""
    return ResultWriter(out, "json", ())


def CsvWriter(out: TextIO, class_names: Sequence[str]) -> ResultWriter:
    """Earlier releases' CSV writer: ``ResultWriter(out, "csv", class_names)``."""
    return ResultWriter(out, "csv", class_names)


VIDEO_OUTPUTS = (".mp4", ".mkv", ".mov")


class VideoOutput:
    """A video file to write (``--annotate``), checked once when made (see :func:`check_output_path`)."""

    def __init__(self, path: str, what: str = "annotate", sources: Sequence = ()):
        check_output_path(path, what, sources, VIDEO_OUTPUTS)
        self.path = path

    def __repr__(self) -> str:
        return f"VideoOutput({self.path!r})"


def check_output_path(path: str, what: str, sources: Sequence = (), extensions: Sequence[str] = ()) -> None:
    """Check, before any source is read, that a file can be written at ``path`` for ``what`` (``--annotate`` ...).

    Raises:
        ValueError: its folder does not exist, it is a folder, it is one of ``sources`` (it would be overwritten),
            or its extension is not one of ``extensions``.
    """
    import os
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{what} {path!r}: the folder {folder!r} does not exist; create it first")
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder: give a file name, e.g. {os.path.join(path, 'out.mp4')!r}")
    real = os.path.realpath(path)
    for source in sources:
        if isinstance(source, (str, os.PathLike)) and os.path.realpath(source) == real:
            raise ValueError(f"{what} {path!r} is the source itself: it would be overwritten; give another file name")
    if extensions and not path.lower().endswith(tuple(extensions)):
        raise ValueError(f"{what} {path!r}: expected a file ending in {', '.join(extensions)}")
