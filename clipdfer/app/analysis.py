"""What the demo page does with an upload, without Gradio: check it against the limits (:func:`check_uploads`), run the
predictor on it and write what the page shows and offers for download into a folder of its session
(:func:`analyse_video`): the timeline plot (PNG, a panel per face), the annotated video (MP4), the table of windows,
the result as JSON and CSV. :class:`SessionFiles` owns those folders and removes them.
"""

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .._files import write_json

__all__ = ["UploadLimits", "UploadError", "VIDEO_TYPES", "check_upload", "check_uploads", "VideoResult",
           "analyse_video", "window_table", "summary_markdown", "SessionFiles", "Predictors"]

_logger = logging.getLogger(__name__)

# containers PyAV decodes that browsers also record or play (a webcam recording is .webm)
VIDEO_TYPES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")


class UploadError(ValueError):
    """An upload the demo refuses: wrong type, too large, too long, unreadable, too many. The message names the file,
    the limit and what to do."""


@dataclasses.dataclass(frozen=True)
class UploadLimits:
    """What the demo accepts.

    Attributes:
        max_mb: the largest upload, in megabytes (10^6 bytes).
        max_seconds: the longest video, in seconds (a video that does not say how long it is is read up to this time).
        max_videos: videos per run.
        types: file name endings accepted (lower case, with the dot).

    Raises:
        ValueError: a limit that is not a positive number (naming it).
    """
    max_mb: float = 200.0
    max_seconds: float = 300.0
    max_videos: int = 4
    types: Tuple[str, ...] = VIDEO_TYPES

    def __post_init__(self):
        for name in ("max_mb", "max_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name}={value!r}: expected a finite number > 0")
        if isinstance(self.max_videos, bool) or not isinstance(self.max_videos, int) or self.max_videos < 1:
            raise ValueError(f"max_videos={self.max_videos!r}: expected a whole number >= 1")
        if not self.types or any(not (isinstance(t, str) and t.startswith(".")) for t in self.types):
            raise ValueError(f"types={self.types!r}: expected file endings such as ('.mp4', '.webm')")


def check_upload(path: str, limits: UploadLimits, name: Optional[str] = None) -> Optional[float]:
    """Check one uploaded file: its type (the name's ending, then that PyAV finds a video stream in it), size and
    duration.

    Args:
        path: the file on the server.
        limits: what is accepted.
        name: the name the user knows it by (default: the file's).

    Returns:
        The video's duration in seconds, or None when the file does not say (a browser's webcam recording).

    Raises:
        UploadError: naming the file, what is wrong, the limit and what to do.
    """
    name = name or os.path.basename(path)
    ext = os.path.splitext(name)[1].lower()
    if ext not in limits.types:
        raise UploadError(f"{name}: {'a ' + ext if ext else 'a file without an extension'} file, expected a video "
                          f"({', '.join(limits.types)}); convert it first, e.g. ffmpeg -i {name} clip.mp4")
    size = os.path.getsize(path)
    if size > limits.max_mb * 1e6:
        raise UploadError(f"{name}: {size / 1e6:.1f} MB, over this demo's limit of {limits.max_mb:g} MB: upload a "
                          f"shorter or smaller cut (e.g. ffmpeg -i {name} -t 60 -vf scale=640:-2 short.mp4)")
    import av
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise UploadError(f"{name}: no video stream in it (audio only?): upload a video")
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:
                seconds = container.duration / 1e6
            else:
                seconds = None
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise UploadError(f"{name}: not a video that can be decoded ({type(e).__name__}: {e}); check that the file "
                          f"plays, or convert it, e.g. ffmpeg -i {name} clip.mp4") from e
    if seconds is not None and seconds > limits.max_seconds:
        raise UploadError(f"{name}: {seconds:.1f} s long, over this demo's limit of {limits.max_seconds:g} s: upload a "
                          f"shorter cut (e.g. ffmpeg -i {name} -t {limits.max_seconds:g} short.mp4)")
    return seconds


def check_uploads(files: Sequence[Tuple[str, str]], limits: UploadLimits) -> List[Optional[float]]:
    """Check every upload (see :func:`check_upload`) before any is run.

    Args:
        files: (path on the server, name the user knows it by) per upload.

    Returns:
        Each video's duration in seconds (None: unknown).

    Raises:
        UploadError: no file, too many, or one or more refused (every refusal on its own line).
    """
    if not files:
        raise UploadError("no video: upload one or more videos, record one with the camera, or try the sample clip")
    if len(files) > limits.max_videos:
        raise UploadError(f"{len(files)} videos: this demo takes at most {limits.max_videos} at a time; upload fewer")
    durations, errors = [], []
    for path, name in files:
        try:
            durations.append(check_upload(path, limits, name))
        except UploadError as e:
            errors.append(str(e))
    if errors:
        raise UploadError("\n".join(errors))
    return durations


@dataclasses.dataclass
class VideoResult:
    """One upload's outcome.

    Attributes:
        name: the upload's name.
        prediction: the :class:`~clipdfer.inference.Prediction` (None when it failed).
        error: what went wrong and what to do (None when it worked).
        json, csv, video, plot: the files written (None when it failed).
        notes: what the demo itself did to the upload (e.g. read only its first seconds).
    """
    name: str
    prediction: object = None
    error: Optional[str] = None
    json: Optional[str] = None
    csv: Optional[str] = None
    video: Optional[str] = None
    plot: Optional[str] = None
    notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def files(self) -> List[str]:
        """The downloads: JSON, CSV, annotated video."""
        return [p for p in (self.json, self.csv, self.video) if p]


def _stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(name))[0]).strip("._")
    return stem[:60] or "video"


def analyse_video(predictor, path: str, name: str, folder: str, duration: Optional[float], limits: UploadLimits,
                  on_window: Optional[Callable] = None) -> VideoResult:
    """Run ``predictor`` on one upload and write its outputs into ``folder`` (made if missing).

    Args:
        predictor: a :class:`~clipdfer.inference.Predictor`.
        path: the upload on the server; ``name``: its name for the user (it replaces the path in the results).
        duration: what :func:`check_upload` found (None: the video is read up to ``limits.max_seconds``).
        on_window: called with each :class:`~clipdfer.inference.WindowResult` as it completes (progress).

    Returns:
        A :class:`VideoResult`; an error of the source (no face, undecodable frames) is its ``error``, not raised.

    Raises:
        Any error that is not the source's (a bug, a full disk writing the outputs).
    """
    from ..inference import NoFaceError, ReadSettings
    from ..inference.outputs import ResultWriter
    from ..visualize import plot_prediction

    os.makedirs(folder, exist_ok=True)
    stem = _stem(name)
    result = VideoResult(name)
    reading = ReadSettings()
    if duration is None:
        reading = ReadSettings(end=limits.max_seconds)
        result.notes.append(f"{name} does not say how long it is: at most its first {limits.max_seconds:g} s are read")
    video = os.path.join(folder, f"{stem}-annotated.mp4")
    try:
        prediction = predictor.run(path, reading, annotate=video, on_window=on_window)
    except (NoFaceError, ValueError, OSError, RuntimeError) as e:
        result.error = str(e).replace(path, name)
        if os.path.exists(video):
            os.remove(video)
        return result
    prediction = dataclasses.replace(prediction, source=name,
                                     notes=[n.replace(os.path.basename(path), name) for n in prediction.notes])
    entry = prediction.to_dict()
    result.prediction, result.video = prediction, video
    result.json = os.path.join(folder, f"{stem}.json")
    write_json(result.json, entry)
    result.csv = os.path.join(folder, f"{stem}.csv")
    with open(result.csv, "w", newline="", encoding="utf-8") as f:
        with ResultWriter(f, "csv", prediction.class_names) as writer:
            writer.add(entry)
    result.plot = plot_prediction(prediction, os.path.join(folder, f"{stem}-timeline.png"))
    return result


def window_table(prediction, digits: int = 3) -> Tuple[List[str], List[list]]:
    """The windows of every face as a table: (headers, rows), a row per face and window in time order.

    Columns: ``face``, ``start (s)``, ``end (s)``, ``frames`` (first-last, among the frames read), ``top``, ``p`` (its
    probability), then each class's probability, rounded to ``digits``.
    """
    names = list(prediction.class_names)
    headers = ["face", "start (s)", "end (s)", "frames", "top", "p", *names]
    rows = []
    for face in prediction.faces:
        for w in face.windows:
            top, p = w.top
            rows.append([face.id, round(w.start, 2), round(w.end, 2), f"{w.start_frame}-{w.end_frame}", top,
                         round(p, digits), *[round(w.probs[c], digits) for c in names]])
    return headers, rows


def summary_markdown(result: VideoResult) -> str:
    """What the page says about one upload: its faces and their overall top classes, or its error."""
    if result.error is not None:
        return f"**{result.name}**: {result.error}"
    r = result.prediction
    lines = [f"**{result.name}**: {r.frames_used} frames ({r.seconds:.1f} s), {len(r.faces)} face(s) followed, "
             f"model `{r.model}`" + (f", faces found by {r.detector}" if r.detector else ", whole frames")]
    for face in r.faces:
        top = ", ".join(f"{c} {p:.2f}" for c, p in face.top_k)
        main = " (main)" if face.id == r.main_face and len(r.faces) > 1 else ""
        lines.append(f"- face {face.id}{main}: {face.start:.1f}-{face.end:.1f} s, {len(face.windows)} window(s); "
                     f"overall {top}")
    lines += [f"- note: {n}" for n in [*result.notes, *r.notes]]
    return "\n".join(lines)


class SessionFiles:
    """The demo's temporary files: a root folder, one folder per browser session in it (named by a hash of Gradio's
    session id), one folder per run in that.

    A new run of a session removes the session's earlier runs (the page shows only the latest); :meth:`remove` drops a
    session's folder (when its page is closed); :meth:`close` removes everything (when the app stops, and at exit).

    Args:
        root: the folder to use (default: a new one in the system's temporary folder).
    """

    def __init__(self, root: Optional[str] = None):
        if root is None:
            root = tempfile.mkdtemp(prefix="clipdfer-demo-")
        else:
            os.makedirs(root, exist_ok=True)
        self.root = root
        self._lock = threading.Lock()
        import atexit
        atexit.register(self.close)

    def folder(self, session: str) -> str:
        """The folder of session id ``session`` (not made)."""
        if not session:
            raise ValueError("session='': expected the id of a browser or API session")
        return os.path.join(self.root, "session-" + hashlib.sha256(session.encode()).hexdigest()[:32])

    def new_run(self, session: str) -> str:
        """A new, empty run folder of session id ``session``; the session's earlier runs are removed."""
        folder = self.folder(session)
        with self._lock:
            os.makedirs(folder, exist_ok=True)
            for old in os.listdir(folder):
                shutil.rmtree(os.path.join(folder, old), ignore_errors=True)
            return tempfile.mkdtemp(prefix="run-", dir=folder)

    def remove(self, session: str) -> None:
        """Remove the folder of session id ``session`` and its runs."""
        with self._lock:
            shutil.rmtree(self.folder(session), ignore_errors=True)

    def close(self) -> None:
        """Remove the root folder and everything in it."""
        shutil.rmtree(self.root, ignore_errors=True)


class Predictors:
    """The demo's predictors: one per (model, random weights), built on first use; only the latest is kept (each holds
    a model in memory).

    Args:
        make: ``make(model, pretrained) -> Predictor``.
    """

    def __init__(self, make: Callable):
        self.make = make
        self._lock = threading.Lock()
        self._current: Optional[Tuple[Tuple[str, bool], object]] = None

    def get(self, model: str, pretrained: bool):
        with self._lock:
            key = (model, bool(pretrained))
            if self._current is None or self._current[0] != key:
                self._current = None  # the old model is freed before the new one is built
                self._current = (key, self.make(model, bool(pretrained)))
            return self._current[1]

    @property
    def loaded(self) -> Dict[Tuple[str, bool], object]:
        return {} if self._current is None else {self._current[0]: self._current[1]}
