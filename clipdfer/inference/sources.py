"""The first stage of prediction: sources -> ``(time in s, RGB (H, W, 3) uint8)`` frames (:func:`iter_source`), and what
a user types -> the list of sources (:func:`expand_sources`).
"""

import dataclasses
import glob
import logging
import os
import re
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .settings import ReadSettings

__all__ = ["Camera", "sample_clip_path", "iter_source", "SourceFrames", "expand_sources", "source_name", "is_live",
           "estimate_frames", "check_run_args", "LIST_EXTENSIONS"]

_logger = logging.getLogger(__name__)

_ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
Source = Union[str, int, "Camera", torch.Tensor]


def sample_clip_path() -> str:
    """The sample clip shipped with clipdfer: 3 s of astronaut Eileen Collins smiling (NASA, public domain)."""
    return os.path.join(_ASSETS, "sample_clip.mp4")


@dataclasses.dataclass(frozen=True)
class Camera:
    """A camera to read live through OpenCV: ``Camera(0)``, or a device path such as ``/dev/video0`` (or a video file,
    for tests)."""
    device: Union[int, str] = 0


def _is_url(source) -> bool:
    from ..data.io import LIVE_PREFIXES
    return isinstance(source, str) and source.lower().startswith(LIVE_PREFIXES)


def is_live(source) -> bool:
    """Whether a source is live (a camera or a stream URL): read as it comes, ended by the user."""
    return isinstance(source, (int, Camera)) or _is_url(source)


def source_name(source) -> str:
    """How a source is named in results and messages: its path or URL, ``camera N``, or ``tensor``."""
    if isinstance(source, (int, Camera)):
        return f"camera {source.device if isinstance(source, Camera) else source}"
    if isinstance(source, torch.Tensor):
        return "tensor"
    return str(source)


def check_run_args(fps: Optional[float] = None, start: Optional[float] = None, end: Optional[float] = None,
                   folder_fps: float = ReadSettings.folder_fps) -> None:
    """Check reading arguments as :class:`~clipdfer.inference.ReadSettings` does (it raises the same errors)."""
    ReadSettings(fps, start, end, folder_fps)


def iter_source(source, fps: Optional[float] = ReadSettings.fps, start: Optional[float] = None,
                end: Optional[float] = None, folder_fps: float = ReadSettings.folder_fps,
                notes: Optional[List[str]] = None) -> Iterator[Tuple[float, np.ndarray]]:
    """``(time in s, RGB (H, W, 3) uint8)`` frames of a source, ``fps`` per second, from ``start`` to ``end``.

    Args:
        source: a video file, a folder of frames, a (T, 3, H, W) tensor (uint8, or float in [0, 1]), a stream URL (read
            live through PyAV), or a camera (:class:`Camera` or an int index: OpenCV).
        fps: frames per second to take, on the ``k / fps`` grid (None or 0: every frame).
        start, end: the time range to read, in seconds of the source.
        folder_fps: the frame rate of a folder of frames or a tensor.
        notes: receives what the reader had to assume (e.g. frame times from the stream's rate).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the source cannot be read (corrupt, no video stream, no frames in the range, bad tensor shape).
    """
    from ..data import io

    if isinstance(source, (int, Camera)):
        yield from io.iter_camera_frames(source.device if isinstance(source, Camera) else source, fps)
        return
    if isinstance(source, torch.Tensor):
        yield from io.iter_tensor_frames(source, fps, start, end, folder_fps)
        return
    path = os.fspath(source)
    if _is_url(path):
        for t, frame in io.iter_stream_frames(path, fps, notes=notes):
            if end is not None and t > end + 1e-9:
                return
            if start is None or t >= start - 1e-9:
                yield t, frame
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist: give a video file, a folder of frames, a stream URL, a "
                                f"camera index or a tensor")
    if os.path.isdir(path):
        yield from io.iter_frame_folder(path, fps, start, end, folder_fps, notes=notes)
        return
    yield from io.iter_video_frames(path, fps, start, end, notes=notes)


def estimate_frames(source, fps: Optional[float] = ReadSettings.fps, start: Optional[float] = None,
                    end: Optional[float] = None) -> Optional[int]:
    """How many frames :func:`iter_source` yields for a video file (a progress bar's total); None when unknown."""
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(source) and not _is_url(os.fspath(source)):
        from ..data.io import estimate_frames as estimate_video
        return estimate_video(os.fspath(source), fps, start, end)
    return None


class SourceFrames:
    """The frames of one source as ``reading`` says, ``(time in s, RGB (H, W, 3) uint8)``; iterate once.

    Attributes:
        notes: what the reader had to assume or skip, one sentence each; complete once the iteration has ended.
    """

    def __init__(self, source, reading: Optional[ReadSettings] = None):
        self.source, self.reading = source, reading or ReadSettings()
        self.notes: List[str] = []

    def __iter__(self) -> Iterator[Tuple[float, np.ndarray]]:
        r = self.reading
        return iter_source(self.source, r.fps, r.start, r.end, r.folder_fps, self.notes)

    def estimate(self) -> Optional[int]:
        """How many frames the iteration yields (a video file's estimate; None when unknown)."""
        return estimate_frames(self.source, self.reading.fps, self.reading.start, self.reading.end)

    def counted(self, bar) -> Iterator[Tuple[float, np.ndarray]]:
        """The frames, each counted on a progress bar (``bar.update()``)."""
        for item in self:
            yield item
            bar.update()


# ---------------------------------------------------------------------------------------------------- many sources
def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _frame_folder(path: str) -> bool:
    """A folder of frames (one clip): images, and no videos nor folders beside them."""
    from ..data.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
    names = [n for n in os.listdir(path) if not n.startswith(".")]
    if any(os.path.isdir(os.path.join(path, n)) for n in names):
        return False
    names = [n.lower() for n in names]
    return any(n.endswith(IMAGE_EXTENSIONS) for n in names) and not any(n.endswith(VIDEO_EXTENSIONS) for n in names)


def _walk(folder: str, recursive: bool) -> List[str]:
    """The videos and frame folders under ``folder`` (hidden entries skipped), in natural order."""
    from ..data.io import VIDEO_EXTENSIONS, natural_key
    found, skipped = [], []
    for name in sorted(os.listdir(folder), key=natural_key):
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        if os.path.isfile(path) and name.lower().endswith(VIDEO_EXTENSIONS):
            found.append(path)
        elif os.path.isdir(path) and recursive:
            found.extend([path] if _frame_folder(path) else _walk(path, recursive))
        elif os.path.isfile(path):
            skipped.append(name)
    if skipped:
        _logger.info("%s: %d file(s) that are not videos skipped (%s); give a file by name to read it anyway",
                     folder, len(skipped), ", ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else ""))
    return found


def _read_list(path: str) -> List[str]:
    """The paths of a text file of paths (docs/predict.md, "Many videos"): relative ones under the file's folder.

    Raises:
        ValueError: the file is neither UTF-8 nor UTF-16 with its byte-order mark.
    """
    import codecs
    base = os.path.dirname(os.path.abspath(path))
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise ValueError(f"list of paths {path!r}: not readable as UTF-16 ({e}); save it as UTF-8") from e
    else:
        text = data.decode("utf-8", "surrogateescape").lstrip("\ufeff")
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        full = line if os.path.isabs(line) or _is_url(line) else os.path.join(base, line)
        if not os.path.exists(full) and not _has_glob(line) and re.search(r"\s#", line):
            bare = re.sub(r"\s+#.*$", "", line)  # 'clip.mp4  # the best one'
            full = bare if os.path.isabs(bare) or _is_url(bare) else os.path.join(base, bare)
        entries.append(full)
    return entries


def expand_sources(items: Sequence[Source], recursive: bool = True) -> List[Source]:
    """The sources that ``items`` name (docs/predict.md, "Many videos"), in order, each once (a repeat warns).

    Args:
        items: video files (kept even when missing: each fails as its source), folders of frames or videos, globs, text
            files of paths, stream URLs, cameras, tensors.
        recursive: also the videos and frame folders below a folder.

    Raises:
        ValueError: a glob matches nothing, or a folder holds no videos or frame folders.
    """
    out: List[Source] = []
    seen = set()

    def add(source) -> None:
        key = os.path.realpath(source) if isinstance(source, str) and not _is_url(source) else id(source)
        if isinstance(source, (int, Camera)):
            key = ("camera", source.device if isinstance(source, Camera) else source)
        if key in seen:
            _logger.warning("%s is given more than once: it is predicted once", source_name(source))
            return
        seen.add(key)
        out.append(source)

    def expand(item, from_list: bool) -> None:
        if not isinstance(item, (str, os.PathLike)) or _is_url(os.fspath(item)):
            add(item)
            return
        path = os.fspath(item)
        if os.path.isdir(path):
            if _frame_folder(path):
                add(path)
                return
            found = _walk(path, recursive)
            if not found:
                raise ValueError(f"folder {path!r} holds no videos or frame folders: give video files "
                                 f"(.mp4, .mov ...), a folder of frames, or a folder of those")
            for p in found:
                add(p)
        elif os.path.isfile(path) and path.lower().endswith(LIST_EXTENSIONS) and not from_list:
            for entry in _read_list(path):
                expand(entry, True)
        elif not os.path.exists(path) and _has_glob(path):
            from ..data.io import natural_key
            matches = sorted(glob.glob(path, recursive=True), key=natural_key)
            if not matches:
                raise ValueError(f"{path!r} matches no file: check the pattern (quote it so the shell leaves it to "
                                 f"clipdfer, e.g. 'videos/**/*.mp4')")
            for p in matches:
                if not os.path.basename(p).startswith("."):
                    expand(p, True)
        else:
            add(path)

    for item in items:
        expand(item, False)
    return out
