"""The last stage of prediction: timelines -> what users read: text, JSON, CSV, and annotated video frames.

:class:`FrameDrawer` decides when each frame can be drawn with its faces' labels (the window that covers it, else the
nearest one once no window can cover it any more), so drawing never waits on a window that will not come and holds at
most about ``window + the tracker's delay`` frames. The writers print results as soon as each source is done.
"""

import csv
import json
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from .results import Prediction, WindowResult

__all__ = ["FrameDrawer", "JsonListWriter", "CsvWriter", "format_prediction", "check_output_path", "VideoOutput",
           "CSV_COLUMNS", "VIDEO_OUTPUTS"]

CSV_COLUMNS = ("source", "face_id", "start_frame", "end_frame", "start_s", "end_s")
Label = Tuple[bool, Optional[WindowResult]]  # (resolved, the window whose label to draw)


class FrameDrawer:
    """Draws each frame once the labels of the faces in it are known.

    Args:
        draw: called as ``draw(index, time, frame, [(face_id, box, (top class, probability) or None)])`` for every
            frame, in order (e.g. :meth:`clipdfer.visualize.VideoAnnotator.write`).
    """

    def __init__(self, draw: Callable):
        self.draw = draw
        self.frames: Dict[int, Tuple[float, np.ndarray]] = {}
        self.boxes: Dict[int, List[Tuple[int, Optional[tuple]]]] = {}
        self.drawn = -1

    def add_frame(self, index: int, t: float, image: np.ndarray) -> None:
        self.frames[index] = (t, image)

    def add_box(self, face_id: int, index: int, box: Optional[tuple]) -> None:
        if index > self.drawn:
            self.boxes.setdefault(index, []).append((face_id, box))

    def draw_until(self, final_until: int, label: Callable[[int, int], Label]) -> None:
        """Draw the frames up to ``final_until`` (every box of them given) whose faces' labels are resolved, in order;
        ``label(face_id, frame)`` says whether a face's label at a frame is known and which window gives it."""
        j = self.drawn + 1
        while j <= final_until and j in self.frames:
            faces = []
            for face_id, box in self.boxes.get(j, []):
                resolved, window = label(face_id, j)
                if not resolved:
                    return  # a window that may still cover this frame is to come
                faces.append((face_id, box, window.top if window is not None else None))
            t, image = self.frames.pop(j)
            self.boxes.pop(j, None)
            self.draw(j, t, image, faces)
            self.drawn = j
            j += 1

    @property
    def held(self) -> int:
        """Frames waiting to be drawn."""
        return len(self.frames)


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


class JsonListWriter:
    """Writes one JSON list, an entry at a time, flushed as each is added: an interrupted run leaves every finished
    entry readable. Use as a context manager (the closing bracket is written at exit)."""

    def __init__(self, out: TextIO):
        self.out, self.count = out, 0

    def __enter__(self) -> "JsonListWriter":
        self.out.write("[")
        self.out.flush()
        return self

    def add(self, entry: Dict) -> None:
        text = json.dumps(entry, indent=2)
        self.out.write(("," if self.count else "") + "\n" + "\n".join("  " + line for line in text.splitlines()))
        self.out.flush()
        self.count += 1

    def __exit__(self, *exc) -> None:
        self.out.write("\n]\n" if self.count else "]\n")
        self.out.flush()


class CsvWriter:
    """One CSV row per face and window: ``source, face_id, start_frame, end_frame, start_s, end_s``, then one column
    per class; the header is written with the first rows."""

    def __init__(self, out: TextIO, class_names: Sequence[str]):
        self.out, self.class_names = out, list(class_names)
        self.writer = csv.writer(out)
        self.header = False

    def write_header(self) -> None:
        """Write the header now if it is not written yet (a run whose sources all failed still gives it)."""
        if not self.header:
            self.writer.writerow([*CSV_COLUMNS, *self.class_names])
            self.header = True
            self.out.flush()

    def add(self, r: Dict) -> None:
        """Write the rows of one prediction's dict (``Prediction.to_dict()``); a failed source writes none."""
        if "error" in r:
            return
        self.write_header()
        for face in r["faces"]:
            for w in face["windows"]:
                self.writer.writerow([r["source"], face["id"], w["start_frame"], w["end_frame"], f"{w['start']:.3f}",
                                      f"{w['end']:.3f}", *[f"{w['probs'][c]:.4f}" for c in self.class_names]])
        self.out.flush()


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
