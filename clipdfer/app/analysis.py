"""What the demo page does with an upload, without Gradio: check it against the limits (:func:`check_uploads`), run the
predictor on it and write what the page shows and offers for download into a folder of its session
(:func:`analyse_video`): the timeline plot (PNG, a panel per face), the annotated video (MP4), the table of windows,
the result as JSON and CSV. :class:`SessionFiles` owns those folders and removes them.
"""

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shlex
import shutil
import signal
import tempfile
import threading
import time
import weakref
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .._files import write_json

__all__ = ["UploadLimits", "UploadError", "VIDEO_TYPES", "check_upload", "check_uploads", "VideoResult",
           "analyse_video", "window_table", "summary_markdown", "SessionFiles", "Predictors", "upload_names",
           "run_lock", "hide_paths", "sigterm_as_interrupt"]

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
        max_seconds: the longest video, in seconds, measured from its frames' timestamps (not from what its container
            says); a video is never read past this time.
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


def hide_paths(text: str, names: Dict[str, str]) -> str:
    """``text`` with each server path of ``names`` (path -> the name the user knows) replaced by its name: messages
    never show where the server keeps an upload."""
    for path in sorted(names, key=len, reverse=True):  # a longer path first: one may contain another
        if path:
            text = text.replace(path, names[path])
            real = os.path.realpath(path)
            if real != path:
                text = text.replace(real, names[path])
    return text


def _length(container, stream) -> Optional[float]:
    """The video's length in seconds from its packets' timestamps (the first's to the last's end), read without
    decoding; None when its packets have none. A read error after the first packets ends the count there (the reader
    reads up to it too)."""
    import av
    first = last = None
    try:
        for packet in container.demux(stream):
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None or packet.time_base is None:
                continue
            t = float(ts * packet.time_base)
            end = t + float((packet.duration or 0) * packet.time_base)
            first = t if first is None else min(first, t)
            last = end if last is None else max(last, end)
    except av.error.FFmpegError:
        if first is None:
            raise
    return None if first is None else last - first


def check_upload(path: str, limits: UploadLimits, name: Optional[str] = None) -> Optional[float]:
    """Check one uploaded file: its type (the name's ending, then that PyAV finds a video stream in it), size and
    length. The length is measured from the video's packets, not taken from what its container says (a camera's
    recording says nothing; an edited file can say less than it holds).

    Args:
        path: the file on the server.
        limits: what is accepted.
        name: the name the user knows it by (default: the file's); messages name it, never ``path``.

    Returns:
        The video's length in seconds: from its packets, else what its container says, else None.

    Raises:
        UploadError: naming the file, what is wrong, the limit and what to do.
    """
    name = name or os.path.basename(path)
    quoted = shlex.quote(name)
    ext = os.path.splitext(name)[1].lower()
    if ext not in limits.types:
        raise UploadError(f"{name}: {'a ' + ext if ext else 'a file without an extension'} file, expected a video "
                          f"({', '.join(limits.types)}); convert it first, e.g. ffmpeg -i {quoted} clip.mp4")
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise UploadError(f"{name}: cannot be read on the server ({type(e).__name__}): upload it again") from e
    if size > limits.max_mb * 1e6:
        raise UploadError(f"{name}: {size / 1e6:.1f} MB, over this demo's limit of {limits.max_mb:g} MB: upload a "
                          f"shorter or smaller cut (e.g. ffmpeg -i {quoted} -t 60 -vf scale=640:-2 short.mp4)")
    import av
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise UploadError(f"{name}: no video stream in it (audio only?): upload a video")
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                stated = float(stream.duration * stream.time_base)
            elif container.duration:
                stated = container.duration / 1e6
            else:
                stated = None
            seconds = _length(container, stream)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise UploadError(hide_paths(f"{name}: not a video that can be decoded ({type(e).__name__}: {e}); check that "
                                     f"the file plays, or convert it, e.g. ffmpeg -i {quoted} clip.mp4",
                                     {path: name})) from e
    if seconds is None:
        seconds = stated
    if seconds is not None and seconds > limits.max_seconds:
        said = (f" (its container says {stated:.1f} s)" if stated is not None and abs(stated - seconds) > 0.5
                else "")
        raise UploadError(f"{name}: {seconds:.1f} s long{said}, over this demo's limit of {limits.max_seconds:g} s: "
                          f"upload a shorter cut (e.g. ffmpeg -i {quoted} -t {limits.max_seconds:g} short.mp4)")
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


# characters no file name may hold on a common system (path separators, Windows' reserved ones), and control characters
_NOT_IN_NAMES = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]')


def _safe_name(name: str, max_bytes: int = 150) -> str:
    """``name`` as a file name: without folders, path separators, characters invalid in file names, leading or trailing
    dots and spaces; at most ``max_bytes`` in UTF-8 (its extension kept); any other character (unicode) stays."""
    stem, ext = os.path.splitext(_NOT_IN_NAMES.sub("", re.split(r"[/\\]", name)[-1]).strip())
    if not ext and stem.startswith(".") and stem.count(".") == 1:  # ".mp4": an ending without a name
        stem, ext = "", stem
    ext = ext.rstrip(" .") if len(ext.rstrip(" .")) > 1 else ""
    stem = stem.strip(" .")
    room = max(1, max_bytes - len(ext.encode()))
    stem = stem.encode()[:room].decode(errors="ignore").rstrip(" .") or "video"
    return stem + ext


def upload_names(names: Sequence[str]) -> List[str]:
    """The names the results use for a run's uploads: each a valid file name (see :func:`_safe_name`: unicode kept,
    path separators and characters invalid in file names left out), duplicates made distinct as a file manager does
    (``video.mp4``, ``video (2).mp4``, ...)."""
    out: List[str] = []
    taken = set()
    for name in names:
        name = _safe_name(name)
        stem, ext = os.path.splitext(name)
        unique, n = name, 1
        while unique.lower() in taken:  # distinct where file names ignore case too
            n += 1
            unique = f"{stem} ({n}){ext}"
        taken.add(unique.lower())
        out.append(unique)
    return out


_LOCKS: "weakref.WeakKeyDictionary[object, threading.Lock]" = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def run_lock(predictor) -> threading.Lock:
    """The lock :func:`analyse_video` holds while ``predictor`` runs: one run at a time per predictor (its model's
    memory is shared), however many pages, queues or API calls use it."""
    with _LOCKS_LOCK:
        lock = _LOCKS.get(predictor)
        if lock is None:
            lock = _LOCKS[predictor] = threading.Lock()
        return lock


def _runs_past(path: str, seconds: float) -> bool:
    """Whether the video has a frame timed after ``seconds`` from its first (its packets, not decoded)."""
    import av
    try:
        with av.open(path) as container:
            first = None
            for packet in container.demux(container.streams.video[0]):
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None or packet.time_base is None:
                    continue
                t = float(ts * packet.time_base)
                first = t if first is None else min(first, t)
                if t - first > seconds + 1e-6:
                    return True
    except (av.error.FFmpegError, IndexError):
        pass
    return False


def analyse_video(predictor, path: str, name: str, folder: str, duration: Optional[float], limits: UploadLimits,
                  on_window: Optional[Callable] = None) -> VideoResult:
    """Run ``predictor`` on one upload and write its outputs into ``folder`` (made if missing), named after ``name``
    (``NAME.json``, ``NAME.csv``, ``NAME-annotated.mp4``, ``NAME-timeline.png``).

    The video is read up to ``limits.max_seconds`` whatever its container says; when it holds more, the result's notes
    say it was cut. Runs of one predictor take turns (:func:`run_lock`).

    Args:
        predictor: a :class:`~clipdfer.inference.Predictor`.
        path: the upload on the server; ``name``: its name for the user (it replaces the path in the results and
            messages; see :func:`upload_names`).
        duration: what :func:`check_upload` found (None: unknown).
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
    stem = os.path.splitext(_safe_name(name))[0]
    result = VideoResult(name)
    reading = ReadSettings(end=limits.max_seconds)  # whatever the container says: it may say less than it holds
    if duration is None:
        result.notes.append(f"{name} does not say how long it is: at most its first {limits.max_seconds:g} s are read")
    video = os.path.join(folder, f"{stem}-annotated.mp4")
    paths = {path: name}
    try:
        with run_lock(predictor):
            prediction = predictor.run(path, reading, annotate=video, on_window=on_window)
    except (NoFaceError, ValueError, OSError, RuntimeError) as e:
        result.error = hide_paths(str(e), paths).replace(os.path.basename(path), name)
        if os.path.exists(video):
            os.remove(video)
        return result
    if duration is not None and _runs_past(path, limits.max_seconds):
        result.notes.append(f"{name} is longer than this demo's limit of {limits.max_seconds:g} s (not "
                            f"{duration:.1f} s as it says): only its first {limits.max_seconds:g} s were read; upload "
                            f"the rest as a cut of its own (e.g. ffmpeg -i {shlex.quote(name)} -ss "
                            f"{limits.max_seconds:g} rest.mp4)")
    prediction = dataclasses.replace(prediction, source=name, notes=[
        hide_paths(n, paths).replace(os.path.basename(path), name) for n in prediction.notes])
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
    """The demo's temporary files: a root folder, one folder per browser or API session in it (named by a hash of
    Gradio's session id), one folder per run in that.

    A new run of a session removes the session's earlier runs (the page shows only the latest); :meth:`remove` drops a
    session's folder (when its page is closed); :meth:`close` removes everything (when the app stops, and at exit).
    A session that never says it ended (an API client) is aged out: each new run first removes the folders of sessions
    untouched (no run, no :meth:`touch`) for more than ``max_age`` seconds, then the least recently touched beyond
    ``max_sessions``.

    Args:
        root: the folder to use (default: a new one in the system's temporary folder).
        max_age: seconds a session's folder is kept after its last use.
        max_sessions: session folders kept at most (the new run's included).

    Raises:
        ValueError: ``max_age`` not > 0 or ``max_sessions`` < 1 (naming it).
    """

    def __init__(self, root: Optional[str] = None, max_age: float = 3600.0, max_sessions: int = 32):
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not max_age > 0:
            raise ValueError(f"max_age={max_age!r}: expected a number of seconds > 0")
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions={max_sessions!r}: expected a whole number >= 1")
        if root is None:
            root = tempfile.mkdtemp(prefix="clipdfer-demo-")
        else:
            os.makedirs(root, exist_ok=True)
        self.root, self.max_age, self.max_sessions = root, float(max_age), max_sessions
        self._lock = threading.Lock()
        import atexit
        atexit.register(self.close)

    def folder(self, session: str) -> str:
        """The folder of session id ``session`` (not made)."""
        if not session:
            raise ValueError("session='': expected the id of a browser or API session")
        return os.path.join(self.root, "session-" + hashlib.sha256(session.encode()).hexdigest()[:32])

    def sessions(self) -> List[str]:
        """The session folders there are, least recently touched first."""
        found = []
        for entry in os.scandir(self.root) if os.path.isdir(self.root) else []:
            if entry.name.startswith("session-") and entry.is_dir(follow_symlinks=False):
                try:
                    found.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
                except FileNotFoundError:
                    continue
        return [path for _, path in sorted(found)]

    def _expire(self, keep: str) -> None:
        folders = [f for f in self.sessions() if f != keep]
        now = time.time()
        for i, folder in enumerate(folders):
            try:
                old = now - os.stat(folder).st_mtime > self.max_age
            except FileNotFoundError:
                continue
            if old or len(folders) - i >= self.max_sessions:  # the oldest go first, leaving room for ``keep``
                shutil.rmtree(folder, ignore_errors=True)

    def new_run(self, session: str) -> str:
        """A new, empty run folder of session id ``session``; the session's earlier runs are removed, and other
        sessions' folders aged out (see the class)."""
        folder = self.folder(session)
        with self._lock:
            self._expire(folder)
            os.makedirs(folder, exist_ok=True)
            for old in os.listdir(folder):
                shutil.rmtree(os.path.join(folder, old), ignore_errors=True)
            run = tempfile.mkdtemp(prefix="run-", dir=folder)
            os.utime(folder)
            return run

    def touch(self, session: str) -> bool:
        """Mark session ``session`` as used now (it is aged from now on); False when its folder is gone."""
        with self._lock:
            try:
                os.utime(self.folder(session))
                return True
            except FileNotFoundError:
                return False

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


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While it lasts, SIGTERM (``kill``, a service manager stopping the demo) raises KeyboardInterrupt as Ctrl-C does,
    so that the demo stops the same way and removes its files. Only in the main thread (where Python runs signal
    handlers); elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)
