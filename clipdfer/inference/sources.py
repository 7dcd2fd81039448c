"""The first stage of prediction: sources -> ``(time in s, RGB (H, W, 3) uint8)`` frames (:func:`iter_source`), and what
a user types -> the list of sources (:func:`expand_sources`).
"""

import collections
import dataclasses
import logging
import os
import re
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .settings import ReadSettings

__all__ = ["Camera", "sample_clip_path", "iter_source", "SourceFrames", "EveryFrame", "expand_sources", "source_name",
           "is_live", "estimate_frames", "check_run_args", "LIST_EXTENSIONS"]

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
        source: a video file, a folder of frames, an image file (a still image is one frame at 0 s; an animated GIF,
            WebP or APNG its frames, timed by their durations), a (T, 3, H, W) tensor (uint8, or float in [0, 1]), a
            stream URL (``rtsp://``, ``http://`` ...: read live through PyAV), or a camera (:class:`Camera`, or an
            int index: read through OpenCV).
        fps: frames per second to take, on the ``k / fps`` grid (None or 0: every frame).
        start, end: the time range to read, in seconds of the source.
        folder_fps: the frame rate of a folder of frames or a tensor.
        notes: receives what the reader had to assume (e.g. frame times from the stream's rate).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the source cannot be read (corrupt, no video stream, no frames in the range, bad tensor shape), or
            is a named pipe, a device or a socket (the message says which, and what to give instead).
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
    special = io.special_file(path)
    if special is not None:
        raise ValueError(special)
    if os.path.isdir(path):
        yield from io.iter_frame_folder(path, fps, start, end, folder_fps, notes=notes)
        return
    if path.lower().endswith(io.IMAGE_EXTENSIONS):  # a still image, or an animation (GIF, WebP, APNG): Pillow
        yield from io.iter_image_frames(path, fps, start, end, notes=notes)
        return
    yield from io.iter_video_frames(path, fps, start, end, notes=notes)


def estimate_frames(source, fps: Optional[float] = ReadSettings.fps, start: Optional[float] = None,
                    end: Optional[float] = None) -> Optional[int]:
    """How many frames :func:`iter_source` yields for a video file (a progress bar's total); None when unknown."""
    from ..data.io import IMAGE_EXTENSIONS
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(source) and not _is_url(os.fspath(source)) and (
            not os.fspath(source).lower().endswith(IMAGE_EXTENSIONS)):  # an animation's frames are read by Pillow
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
class EveryFrame(SourceFrames):
    """The frames of :class:`SourceFrames` (the same frames: the same :class:`~clipdfer.data.sampling.FpsSampler` rule
    on the same times), read from every frame of the source so that the others can be drawn too (``--annotate``):
    each frame between two frames used waits in :attr:`between` until it is taken.

    Attributes:
        between: ``(index of the frame used before it, time in s, RGB (H, W, 3) uint8)``, in order; appended before
            the next frame used is yielded, so a consumer that has that frame finds them all.
    """

    def __init__(self, source, reading: Optional[ReadSettings] = None):
        super().__init__(source, reading)
        self.between: "collections.deque" = collections.deque()

    def __iter__(self) -> Iterator[Tuple[float, np.ndarray]]:
        from ..data.sampling import FpsSampler
        r = self.reading
        sampler, index = FpsSampler(r.fps), -1
        for t, image in iter_source(self.source, None, r.start, r.end, r.folder_fps, self.notes):
            if sampler.take(t):
                index += 1
                yield t, image
            else:
                self.between.append((index, t, image))


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


class _Walk:
    """What expanding sources found in folders, and what it left out or skipped, said once at the end."""

    def __init__(self, recursive: bool):
        self.recursive = recursive
        self.repeated: List[Tuple[str, str]] = []  # (link, the folder it leads to) not read again
        self.beside_videos: List[Tuple[str, List[str]]] = []  # (folder, its images) left out
        self.with_folders: List[Tuple[str, int, int]] = []  # (frame folder, images, subfolders)
        self.special: List[str] = []  # named pipes, devices, sockets in folders

    def first_visit(self, folder: str, visited: set) -> bool:
        """Whether ``folder`` (followed through links) is not in ``visited`` (st_dev, st_ino) yet; adds it."""
        try:
            st = os.stat(folder)
        except OSError:  # a link loop the OS refuses to follow (ELOOP), or a folder gone meanwhile
            self.repeated.append((folder, "(unreadable)"))
            return False
        key = (st.st_dev, st.st_ino)
        if key in visited:
            self.repeated.append((folder, os.path.realpath(folder)))
            return False
        visited.add(key)
        return True

    def report(self) -> None:
        def few(items) -> str:
            return ", ".join(items[:3]) + (" ..." if len(items) > 3 else "")

        for folder, images in self.beside_videos:
            _logger.warning("%s: %d image(s) beside its videos are left out (%s): a folder that holds videos is read "
                            "as a folder of videos; to read the images as a clip, move them into a folder of their "
                            "own, or give an image file by name", folder, len(images), few(images))
        for folder, images, folders in self.with_folders:
            _logger.warning("%s: its %d image(s) are read as one clip (a frame folder) and its %d subfolder(s) as "
                            "further sources", folder, images, folders)
        if self.special:
            _logger.warning("left out, not files: %s", few(self.special))
        if self.repeated:
            links = [f"{link} -> {real}" for link, real in self.repeated]
            _logger.warning("%d folder(s) already read by another path (a symbolic link loop, or two paths to one "
                            "folder) skipped (%s): each folder is read once", len(links), few(links))


def _entries(folder: str) -> List[str]:
    """The names in ``folder``, hidden ones (``.*``) skipped, in natural order."""
    from ..data.io import natural_key
    return sorted((n for n in os.listdir(folder) if not n.startswith(".")), key=natural_key)


def _walk(folder: str, walk: _Walk, visited: set) -> List[str]:
    """The sources in ``folder``: itself when it holds images and no videos (a frame folder), its videos, and, with
    ``walk.recursive``, the sources in its subfolders; in natural order, each real folder once (``visited``: the
    (st_dev, st_ino) of the folders read)."""
    from ..data.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, special_file
    names = _entries(folder)
    paths = [os.path.join(folder, n) for n in names]
    kinds = {}  # path -> "image", "video", "folder", "special" or "other"
    for name, path in zip(names, paths):
        if os.path.isdir(path):
            kinds[path] = "folder"
        elif not os.path.isfile(path):
            kinds[path] = "special" if special_file(path) is not None else "other"  # a broken link: other
        else:
            lower = name.lower()
            kinds[path] = "video" if lower.endswith(VIDEO_EXTENSIONS) else "image" if lower.endswith(
                IMAGE_EXTENSIONS) else "other"
    images = [n for n, p in zip(names, paths) if kinds[p] == "image"]
    videos = [p for p in paths if kinds[p] == "video"]
    folders = [p for p in paths if kinds[p] == "folder"]
    found: List[str] = []
    if images and videos:
        walk.beside_videos.append((folder, images))
    elif images:
        found.append(folder)
        if folders and walk.recursive:
            walk.with_folders.append((folder, len(images), len(folders)))
    skipped = []
    for name, path in zip(names, paths):
        kind = kinds[path]
        if kind == "video":
            found.append(path)
        elif kind == "folder":
            if walk.recursive and walk.first_visit(path, visited):
                found.extend(_walk(path, walk, visited))
        elif kind == "special":
            walk.special.append(special_file(path))
        elif kind == "other" and os.path.isfile(path):
            skipped.append(name)
    if skipped:
        _logger.info("%s: %d file(s) that are not videos nor images skipped (%s); give a file by name to read it "
                     "anyway", folder, len(skipped), ", ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else ""))
    return found


def _glob(pattern: str, walk: _Walk) -> List[str]:
    """``glob.glob(pattern, recursive=True)``, but ``**`` reads each real folder once (with symbolic link loops,
    glob's ``**`` runs without end); as glob, a name starting with ``.`` is matched only by a part that starts with
    one, and ``**`` enters no such folder."""
    import fnmatch
    parts = pattern.split(os.sep)
    first = next(i for i, part in enumerate(parts) if _has_glob(part))
    prefix = os.sep.join(parts[:first]) or (os.sep if pattern.startswith(os.sep) else "")
    found: List[str] = []
    visited: set = set()

    def names(folder: str) -> List[str]:
        try:
            return os.listdir(folder or os.curdir)
        except OSError:
            return []

    def match(folder: str, rest: List[str]) -> None:
        if not rest:
            found.append(folder)
            return
        part, rest = rest[0], rest[1:]
        if part == "**":
            if rest:
                match(folder, rest)  # zero folders
            elif folder:
                found.append(folder)
            for name in names(folder):
                path = os.path.join(folder, name)
                if name.startswith("."):
                    continue
                if os.path.isdir(path):
                    if walk.first_visit(path, visited):
                        match(path, ["**"] + rest)
                elif not rest:
                    found.append(path)  # a trailing ** matches files too
        elif _has_glob(part):
            for name in names(folder):
                if fnmatch.fnmatch(name, part) and (part.startswith(".") or not name.startswith(".")):
                    path = os.path.join(folder, name)
                    if not rest or os.path.isdir(path):
                        match(path, rest)
        else:
            path = os.path.join(folder, part)
            if (not rest and os.path.lexists(path)) or (rest and os.path.isdir(path)):
                match(path, rest)

    if not prefix or os.path.isdir(prefix):
        if prefix:
            walk.first_visit(prefix, visited)
        match(prefix, parts[first:])
    return list(dict.fromkeys(found))


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
    walk = _Walk(recursive)

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
            visited: set = set()
            walk.first_visit(path, visited)
            found = _walk(path, walk, visited)
            if not found:
                raise ValueError(f"folder {path!r} holds no videos or frame folders (nor images): give video files "
                                 f"(.mp4, .mov ...), a folder of frames, or a folder of those")
            for p in found:
                add(p)
        elif os.path.isfile(path) and path.lower().endswith(LIST_EXTENSIONS) and not from_list:
            for entry in _read_list(path):
                expand(entry, True)
        elif not os.path.exists(path) and _has_glob(path):
            from ..data.io import natural_key
            matches = sorted(_glob(path, walk), key=natural_key)
            if not matches:
                raise ValueError(f"{path!r} matches no file: check the pattern (quote it so the shell leaves it to "
                                 f"clipdfer, e.g. 'videos/**/*.mp4')")
            for p in matches:
                if not os.path.basename(p).startswith("."):
                    expand(p, True)
        else:
            add(path)

    try:
        for item in items:
            expand(item, False)
    finally:
        walk.report()
    return out
