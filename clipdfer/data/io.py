"""Reading clips: folders of face frames (natural order), video files and live streams (PyAV), cameras (OpenCV).

Every reader gives frames the way a player shows them: a video's display matrix (the mp4 ``tkhd`` matrix, or an
H.264/HEVC display-orientation SEI) and an image's EXIF orientation are applied, rotations and mirrorings alike.
Every reader that takes ``fps`` keeps frames on the ``k / fps`` grid of :class:`~clipdfer.data.sampling.FpsSampler`.
Video times are read onto one increasing timeline through every timestamp discontinuity (MPEG-TS files joined with
``cat``, a restarted clock, the 33-bit MPEG wrap), and the notes say so.
"""

import logging
import math
import os
import re
import struct
from typing import Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch

from .sampling import FpsSampler

__all__ = ["natural_key", "list_frames", "read_frames", "read_image", "read_video", "count_video_frames",
           "iter_video_frames", "estimate_frames", "iter_stream_frames", "iter_camera_frames", "iter_frame_folder",
           "iter_tensor_frames", "iter_image_frames", "apply_display_matrix", "to_rgb", "special_file", "LIVE_PREFIXES",
           "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "INTERPOLATIONS", "DEFAULT_FRAME_RATE", "is_video_file"]

_logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".apng", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
                    ".pbm", ".pnm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".3gp",
                    ".3g2", ".flv", ".wmv", ".asf", ".ogv", ".vob", ".mxf", ".y4m", ".h264", ".264", ".h265", ".hevc",
                    ".mjpeg", ".mjpg")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
DEFAULT_FRAME_RATE = 25.0  # fps assumed for frames without timestamps when the stream gives no rate (FFmpeg's too)

_warned: Set[Tuple[str, str]] = set()  # (source, what): warnings given once per source and process


def _warn_once(source: str, what: str, message: str, *args) -> None:
    if (source, what) not in _warned:
        _warned.add((source, what))
        _logger.warning(message, *args)


def natural_key(name: str):
    """Sort key that orders ``frame2.jpg`` before ``frame10.jpg``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_video_file(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS)


def special_file(path: str) -> Optional[str]:
    """What ``path`` is when it exists but is neither a regular file nor a folder, and what to do, as a sentence
    naming it; None otherwise (a file, a folder, or nothing)."""
    import stat
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return (f"{path!r} is a named pipe (FIFO), not a video file: clipdfer reads a file from its start to its end "
                f"and may read it twice; save what comes through the pipe first (cat {path} > clip.ts) and give "
                f"that file, or give the stream's URL (udp://, tcp://, rtsp://)")
    if stat.S_ISCHR(mode):
        return (f"{path!r} is a character device, not a video file: for a camera, read it live with --camera "
                f"{path} (Camera({path!r}) in Python)")
    if stat.S_ISBLK(mode):
        return f"{path!r} is a block device (a disk), not a video file: give a video file or folder on it"
    if stat.S_ISSOCK(mode):
        return (f"{path!r} is a socket, not a video file: give the stream it serves as a URL (tcp://, udp://, "
                f"rtsp://)")
    return f"{path!r} is not a regular file (mode {oct(mode)}): give a video file, a folder of frames or a URL"


# ---------------------------------------------------------------------------------------------------- frame folders
def list_frames(folder: str) -> List[str]:
    """The image files of a frame folder, in natural order; hidden files (macOS ``._*`` sidecars) are skipped.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: it is not a folder, or holds no image files.
    """
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise ValueError(special_file(folder) or f"clip {folder!r} is a file, not a folder of frames: give the "
                                                     f"folder its frames are in")
        raise FileNotFoundError(f"clip folder {folder!r} does not exist: check the annotation file's paths and "
                                f"the data root")
    names = sorted((n for n in os.listdir(folder) if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)),
                   key=natural_key)
    if not names:
        raise ValueError(f"clip folder {folder!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return [os.path.join(folder, n) for n in names]


def _pil_filter(interpolation: str):
    from PIL import Image
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r}: expected one of {INTERPOLATIONS} (a pretrained cfg's "
                         f"interpolation)")
    return getattr(Image.Resampling, interpolation.upper())


def _full_scale(img) -> Optional[float]:
    """The value of full intensity of a one-channel image of more than 8 bits, by its type: 65535 for 16-bit samples
    (``I;16*``; ``I`` holds them too: PNG before Pillow 10, 16-bit PGM/PPM scaled to 65535 by Pillow), the 32-bit
    range for 32-bit TIFF samples (TIFF tags BitsPerSample 258, SampleFormat 339), 1.0 for floats (``F``); None for
    the other modes, which Pillow converts itself (negative values of signed types are black)."""
    if img.mode.startswith("I;16"):
        return 65535.0
    if img.mode == "F":
        return 1.0
    if img.mode != "I":
        return None
    tags = getattr(img, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    bits = bits[0] if isinstance(bits, tuple) else bits
    if bits == 32:
        sample_format = tags.get(339)
        sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
        return float(2 ** 31 - 1) if sample_format == 2 else float(2 ** 32 - 1)  # 2: signed (what Pillow writes)
    return 65535.0


def to_rgb(img, full_scale: Optional[float] = None, name: str = "image") -> np.ndarray:
    """Any PIL image as 8-bit RGB (H, W, 3) uint8: the one place where clipdfer turns an image into an array.

    Samples of more than 8 bits are scaled by their type's range, ``round(v * 255 / full_scale)`` (16-bit: 65535;
    floats: 1.0), never clipped to 255; bilevel ``1`` gives 0 and 255; a palette is expanded; alpha is dropped (the
    colour channels as stored, as Pillow's ``convert("RGB")`` does for ``RGBA``, ``LA`` and ``PA`` alike; premultiplied
    ``RGBa`` / ``La`` are un-premultiplied first); ``CMYK``, ``YCbCr``, ``LAB`` and ``HSV`` are converted by Pillow.

    Args:
        img: the image (any mode Pillow reads).
        full_scale: the value of full intensity of a one-channel image of more than 8 bits; None: by its mode
            (see :func:`_full_scale`; give it for an ``I`` image whose file said 32 bits).
        name: the file, for errors.

    Raises:
        ValueError: a float image holds values outside [0, 1] or NaN (they have no place in 8 bits: scale them first);
            a deep image whose content is below one 8-bit level (it would be black).
    """
    if img.mode == "RGB":
        return np.array(img)  # a writable copy
    full_scale = full_scale or _full_scale(img)
    if full_scale is not None:
        values = np.asarray(img, dtype=np.float64)  # (H, W)
        if img.mode == "F":
            low, high = float(np.min(values)), float(np.max(values))  # NaN propagates: refused below
            if not (math.isfinite(low) and math.isfinite(high)) or low < -1e-3 or high > 1 + 1e-3:
                raise ValueError(f"{name}: a float image (mode F) with values from {low:g} to {high:g}, expected "
                                 f"[0, 1]: save frames as 8- or 16-bit images, or scale them to [0, 1]")
        grey = np.clip(np.round(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
        if grey.max() == 0 and values.max() > 0:  # content below one 8-bit level of the full scale: a black frame
            raise ValueError(f"{name}: a {img.mode} image whose values (up to {values.max():g}) are all below one "
                             f"8-bit level of its full scale {full_scale:g}: it would read as black; save the frames "
                             f"with their values scaled (e.g. as 8- or 16-bit images)")
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "La":  # premultiplied: Pillow converts it to LA only
        img = img.convert("LA")
    return np.array(img.convert("RGB"))


def _load_image(path: str, counts: Optional[List[int]] = None) -> np.ndarray:
    """An image file as RGB (H, W, 3) uint8 (:func:`to_rgb`), EXIF orientation applied; of an animation, its first
    frame (``counts`` receives how many frames it has).

    Raises:
        ValueError: the file cannot be read as an image (or is a named pipe, a device ...).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError
    special = special_file(path)
    if special is not None:  # opening a named pipe would wait for a writer
        raise ValueError(special)
    try:
        with Image.open(path) as img:
            if counts is not None:
                counts.append(getattr(img, "n_frames", 1))
            full_scale = _full_scale(img)  # from the file's tags, which a transposed copy no longer has
            return to_rgb(ImageOps.exif_transpose(img), full_scale, path)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read frame {path!r}: {e}; is it a complete image file?") from e


def _resized(rgb: np.ndarray, size: Tuple[int, int], resample) -> np.ndarray:
    """RGB (H, W, 3) uint8 resized to ``size`` (H, W) with PIL."""
    from PIL import Image
    if rgb.shape[:2] == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), resample))


def read_image(path: str, size: Optional[Tuple[int, int]] = None, interpolation: str = "bilinear") -> np.ndarray:
    """One image file as a viewer shows it (EXIF orientation applied): RGB (H, W, 3) uint8.

    Args:
        path: the image file.
        size: (H, W) to resize it to, in pixels; None keeps its size.
        interpolation: one of :data:`INTERPOLATIONS`.

    Raises:
        ValueError: the file is not a readable image, or ``interpolation`` is unknown.
    """
    resample = _pil_filter(interpolation)
    rgb = _load_image(path)
    return np.array(rgb if size is None else _resized(rgb, size, resample))  # a writable copy


def read_frames(paths: Sequence[str], indices: Sequence[int], size: Optional[Tuple[int, int]] = None,
                interpolation: str = "bilinear") -> torch.Tensor:
    """Frames ``paths[i]`` for i in ``indices`` as a (T, 3, H, W) uint8 RGB tensor, EXIF orientation applied.

    Each frame is resized to ``size`` when given (as DFER-CLIP's loader); otherwise to the first frame's size.

    Args:
        paths: the clip's frame files, e.g. from :func:`list_frames`.
        indices: which of them, in order (repeats allowed; each file is read once).
        size: (H, W) in pixels, or None.
        interpolation: one of :data:`INTERPOLATIONS`.

    Raises:
        ValueError: a frame is not a readable image or is an animation (GIF, WebP, APNG of several frames: one
            frame of a clip cannot be many), or ``interpolation`` is unknown.
    """
    resample = _pil_filter(interpolation)
    target = (int(size[0]), int(size[1])) if size is not None else None
    cache, frames, resized = {}, [], 0
    for i in indices:
        if i not in cache:
            counts: List[int] = []
            rgb = _load_image(paths[i], counts)
            if counts[0] > 1:
                raise ValueError(f"frame {paths[i]!r} is an animation of {counts[0]} frames, not one frame of the "
                                 f"clip: extract its frames into the folder, one file each, or list the file itself "
                                 f"as the clip")
            if target is None:
                target = rgb.shape[:2]
            elif size is None and rgb.shape[:2] != target:
                resized += 1
            cache[i] = torch.from_numpy(np.array(_resized(rgb, target, resample))).permute(2, 0, 1)
        frames.append(cache[i])
    if resized:
        _logger.debug("%s: %d frames resized to the first frame's size %s", os.path.dirname(paths[0]), resized, target)
    return torch.stack(frames)


def _check_rate(folder_fps: float) -> None:
    if not folder_fps or not math.isfinite(folder_fps) or folder_fps <= 0:
        raise ValueError(f"folder_fps={folder_fps!r}: expected the frame rate of the frames, a positive number "
                         f"(e.g. 25.0)")


def _within(t: float, start: Optional[float], end: Optional[float]) -> bool:
    return (start is None or t >= start - 1e-9) and (end is None or t <= end + 1e-9)


def iter_frame_folder(folder: str, fps: Optional[float] = None, start: Optional[float] = None,
                      end: Optional[float] = None, folder_fps: float = DEFAULT_FRAME_RATE,
                      notes: Optional[List[str]] = None) -> Iterator[Tuple[float, np.ndarray]]:
    """(time in s, RGB (H, W, 3) uint8) for the frames of a folder (:func:`list_frames`), EXIF orientation applied.

    Frame i is at ``i / folder_fps`` s; the frames from ``start`` to ``end`` s (both included) are sampled to ``fps``,
    and only those kept are read. An unreadable frame is skipped and noted in ``notes``.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: it holds no image files, none can be read, or ``fps`` / ``folder_fps`` is not positive.
    """
    _check_rate(folder_fps)
    sampler = FpsSampler(fps)
    got, bad, animated = False, [], []
    name = os.path.basename(folder.rstrip(os.sep))
    for i, path in enumerate(list_frames(folder)):
        t = i / folder_fps
        if end is not None and t > end + 1e-9:
            break
        if _within(t, start, end) and sampler.take(t):
            counts: List[int] = []
            try:
                frame = _load_image(path, counts)
            except ValueError as e:
                if not bad:
                    first_error = e
                bad.append(os.path.basename(path))
                continue
            if counts[0] > 1:
                animated.append(f"{os.path.basename(path)}: {counts[0]} frames")
            got = True
            yield t, frame
    if bad and not got:
        raise ValueError(f"no frame of {folder!r} can be read ({len(bad)} tried): {first_error}")
    if bad:
        _note(folder, notes, "frames", f"{name}: {len(bad)} frame(s) could not be read and were skipped "
                                       f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})")
    if animated:
        _note(folder, notes, "animated", f"{name}: {len(animated)} of its images are animations ("
                                         f"{'; '.join(animated[:3])}{' ...' if len(animated) > 3 else ''}): each is "
                                         f"one frame of this folder, its first; give such a file by itself to read "
                                         f"its frames")


BROWSER_MIN_DURATION = 10  # ms: browsers (and FFmpeg's GIF demuxer) show a frame of this duration or less for 100 ms


def iter_image_frames(path: str, fps: Optional[float] = None, start: Optional[float] = None,
                      end: Optional[float] = None, notes: Optional[List[str]] = None
                      ) -> Iterator[Tuple[float, np.ndarray]]:
    """(time in s, RGB (H, W, 3) uint8) for the frames of an image file through Pillow: one frame at 0 s for a still
    image, every frame for an animation (GIF, WebP, APNG), frame by frame as a viewer shows them (:func:`to_rgb`,
    EXIF orientation applied).

    An animated frame starts where the durations of the frames before it end (``info["duration"]``, ms); a duration
    of :data:`BROWSER_MIN_DURATION` ms or less counts as 100 ms, as browsers show it, and ``notes`` says so.
    ``start`` / ``end`` (s, both included) and ``fps`` (:class:`~clipdfer.data.sampling.FpsSampler`) as
    :func:`iter_video_frames`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not a readable image (or is a named pipe, a device ...), or has no frame in the range.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError
    if not os.path.exists(path):
        raise FileNotFoundError(f"image {path!r} does not exist")
    special = special_file(path)
    if special is not None:
        raise ValueError(special)
    sampler, got, t, short = FpsSampler(fps), False, 0.0, []
    try:
        with Image.open(path) as img:
            count = getattr(img, "n_frames", 1)
            full_scale = _full_scale(img)
            for i in range(count):
                if i:
                    img.seek(i)
                img.load()  # the frame's duration is known once it is loaded (WebP)
                duration = img.info.get("duration")
                if end is not None and t > end + 1e-9:
                    break
                if _within(t, start, end) and sampler.take(t):
                    got = True
                    yield t, to_rgb(ImageOps.exif_transpose(img), full_scale, path)
                if count > 1 and (duration is None or duration <= BROWSER_MIN_DURATION):
                    short.append(i)
                    duration = 100
                t += float(duration or 0) / 1000.0
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as e:
        raise ValueError(f"cannot read image {path!r}: {e}; is it a complete image file?") from e
    finally:
        if short:
            _note(path, notes, "durations", f"{os.path.basename(path)}: {len(short)} frame(s) of the animation have "
                                            f"no duration or one of {BROWSER_MIN_DURATION} ms or less (frame "
                                            f"{short[0]} ...): each is shown for 100 ms, as browsers do")
    if not got:
        raise ValueError(f"image {path!r} has no frame{_range_text(start, end)} (it has {count} frame(s) over "
                         f"{t:.2f} s)")


def _range_text(start: Optional[float], end: Optional[float]) -> str:
    """`` between 1.0 and 2.0 s`` and the like, for errors."""
    if not start and end is None:
        return ""
    return f" from {start} s" if end is None else f" up to {end} s" if not start else f" between {start} and {end} s"


def iter_tensor_frames(video: torch.Tensor, fps: Optional[float] = None, start: Optional[float] = None,
                       end: Optional[float] = None, folder_fps: float = DEFAULT_FRAME_RATE
                       ) -> Iterator[Tuple[float, np.ndarray]]:
    """(time in s, RGB (H, W, 3) uint8) for the frames of a video tensor, like :func:`iter_frame_folder`.

    Args:
        video: (T, 3, H, W), uint8 or float in [0, 1] (clamped, scaled by 255 and rounded).
        fps: frames per second to keep (None or 0: every frame).
        start, end: the time range in s (frame i is at ``i / folder_fps`` s).
        folder_fps: the frame rate of the tensor.

    Raises:
        ValueError: ``video`` is not (T, 3, H, W), or ``fps`` / ``folder_fps`` is not positive.
    """
    if not isinstance(video, torch.Tensor) or video.dim() != 4 or video.shape[1] != 3:
        shape = tuple(video.shape) if hasattr(video, "shape") else type(video).__name__
        raise ValueError(f"expected a video tensor (T, 3, H, W), got {shape}: for one frame use "
                         f"frame.unsqueeze(0); channels-last video: video.permute(0, 3, 1, 2)")
    _check_rate(folder_fps)
    sampler = FpsSampler(fps)
    for i in range(video.shape[0]):
        t = i / folder_fps
        if end is not None and t > end + 1e-9:
            return
        if _within(t, start, end) and sampler.take(t):
            frame = video[i]
            if frame.is_floating_point():
                frame = (frame.clamp(0, 1) * 255).round()
            yield t, frame.to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # (3, H, W) -> (H, W, 3)


# ---------------------------------------------------------------------------------------------------- orientation
def _orientation(matrix: Sequence[int]) -> Optional[Tuple[bool, bool, bool]]:
    """(transpose, flip rows, flip columns), applied in that order, for a display matrix; None when it is not a multiple
    of 90 degrees."""
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    scale = max(abs(a), abs(b), abs(c), abs(d))
    tol = scale * 1e-3
    if scale == 0:
        return None
    if abs(b) <= tol and abs(c) <= tol and abs(a) > tol and abs(d) > tol:
        return False, d < 0, a < 0
    if abs(a) <= tol and abs(d) <= tol and abs(b) > tol and abs(c) > tol:
        return True, b < 0, c < 0
    return None


def apply_display_matrix(frame: np.ndarray, matrix: Sequence[int]) -> np.ndarray:
    """A decoded frame as a player shows it, given its display matrix.

    FFmpeg's matrix (``AV_FRAME_DATA_DISPLAYMATRIX``, the mp4 ``tkhd`` layout): ``a, b, c, d`` (16.16 fixed point) at
    indices 0, 1, 3, 4 put pixel (column p, row q) at column ``a p + c q``, row ``b p + d q``, as FFmpeg's autorotation.

    Args:
        frame: (H, W, C) or (H, W).
        matrix: the 9 int32 values.

    Returns:
        (H, W, C), or (W, H, C) for a quarter turn or a transposition; C-contiguous (``frame`` itself for the identity).

    Raises:
        ValueError: the matrix is not a multiple of 90 degrees, with or without a mirroring.
    """
    ops = _orientation(matrix)
    if ops is None:
        raise ValueError(f"display matrix {list(matrix)} is not a rotation by a multiple of 90 degrees (with or "
                         f"without a mirroring)")
    transpose, flip_rows, flip_cols = ops
    if not (transpose or flip_rows or flip_cols):
        return frame
    if transpose:
        frame = frame.swapaxes(0, 1)
    if flip_rows:
        frame = frame[::-1]
    if flip_cols:
        frame = frame[:, ::-1]
    return np.ascontiguousarray(frame)


def _rotation_matrix(degrees: float) -> Tuple[int, ...]:
    """FFmpeg's display matrix of an anticlockwise rotation (``av_display_rotation_set``), 16.16 fixed point."""
    rad = math.radians(degrees)
    cos, sin = round(math.cos(rad) * 65536), round(math.sin(rad) * 65536)
    return cos, -sin, 0, sin, cos, 0, 0, 0, 1 << 30


def _frame_display_matrix(frame) -> Optional[Tuple[int, ...]]:
    """The display matrix a decoded PyAV frame carries (from the container or the bitstream), or None."""
    try:
        side_data = frame.side_data
    except ValueError:  # a side data type this PyAV does not know (FFmpeg 8's EXIF, from MJPEG): the rotation alone
        rotation = getattr(frame, "rotation", 0) or 0
        return _rotation_matrix(rotation) if rotation else None
    for data in side_data:
        if getattr(data.type, "name", None) == "DISPLAYMATRIX":
            raw = bytes(data)
            if len(raw) >= 36:
                return struct.unpack("=9i", raw[:36])  # native int32, as FFmpeg stores it
    return None


class _Orienter:
    """Applies the display matrix of a video's frames. A matrix holds until the next one (an SEI may come with a
    sequence's first frame only), so every decoded frame is :meth:`seen`, kept or not."""

    def __init__(self, name: str):
        self.name = name
        self.matrix: Optional[Tuple[int, ...]] = None

    def seen(self, frame) -> None:
        matrix = _frame_display_matrix(frame)
        if matrix is not None:
            self.matrix = matrix

    def __call__(self, frame) -> np.ndarray:
        """The frame (already :meth:`seen`) as RGB (H, W, 3) uint8, as a player shows it."""
        rgb = frame.to_ndarray(format="rgb24")
        if self.matrix is None:
            return rgb
        try:
            return apply_display_matrix(rgb, self.matrix)
        except ValueError:
            rotation = getattr(frame, "rotation", None)
            _warn_once(self.name, "orientation", "%s is to be shown rotated by %s degrees (display matrix %s), not "
                       "a multiple of 90: its frames are used as stored", self.name, rotation, list(self.matrix))
            return rgb


# ---------------------------------------------------------------------------------------------------- frame times
def _stream_rate(stream) -> Tuple[float, str]:
    """The rate to time frames without timestamps by, and its origin (for the note): the decoder's rate (a raw H.264
    stream's VUI), else ``guessed_rate`` (may double it), ``average_rate`` (the raw demuxer's default 25),
    ``base_rate``."""
    decoder = getattr(getattr(stream, "codec_context", None), "framerate", None)
    rates = (decoder, getattr(stream, "guessed_rate", None), stream.average_rate, getattr(stream, "base_rate", None))
    for rate in rates:
        if rate and float(rate) > 0:
            return float(rate), "the stream's rate"
    return DEFAULT_FRAME_RATE, "assumed: the stream gives no rate"


class _Clock:
    """Frame times in s: each frame's own timestamp; one without follows the last known time by one interval of the
    stream's rate (frame index / rate when none has one). Says so once per video."""

    def __init__(self, name: str, stream, notes: Optional[List[str]]):
        self.name, self.stream, self.notes = name, stream, notes
        self.rate: Optional[float] = None
        self.anchor: Optional[float] = None  # last known time
        self.since = 0  # frames since it
        self.index = 0

    def __call__(self, t: Optional[float]) -> float:
        index, self.index = self.index, self.index + 1
        if t is not None:
            self.anchor, self.since = float(t), 0
            return float(t)
        if self.rate is None:
            self.rate, source = _stream_rate(self.stream)
            name = self.name if "://" in self.name else os.path.basename(self.name.rstrip("/")) or self.name
            if self.anchor is None:
                note = f"{name} carries no timestamps: frame times are frame index / {self.rate:g} fps ({source})"
            else:
                note = (f"{name}: frame {index} and others carry no timestamp: each is timed 1/{self.rate:g} s after "
                        f"the frame before it ({self.rate:g} fps, {source})")
            _warn_once(self.name, "timestamps", "%s", note)
            if self.notes is not None:
                self.notes.append(note)
        self.since += 1
        if self.anchor is None:
            return index / self.rate
        return self.anchor + self.since / self.rate


MPEG_WRAP = 2 ** 33 / 90000  # s: MPEG-TS / MPEG-PS timestamps are 33 bits of a 90 kHz clock (about 26.5 h)
JUMP_THRESHOLD = 10.0  # s: a jump forward this long is a discontinuity where the format allows them (FFmpeg's
# -dts_delta_threshold); a shorter one is a gap in the recording
_TS_DISCONT = 0x200  # AVFMT_TS_DISCONT: the format allows timestamp discontinuities (MPEG-TS, MPEG-PS ...)
_WRAPPING_FORMATS = ("mpegts", "mpegtsraw", "mpeg", "vob")


class _Timeline:
    """Puts a video's frame times (s, as displayed) on one increasing timeline, through every discontinuity.

    A time that goes back (files joined end to end, ``cat a.ts b.ts``; a recorder that restarted its clock) or, in a
    format that allows discontinuities (MPEG-TS / PS), jumps forward by more than :data:`JUMP_THRESHOLD` starts a new
    part, placed one frame interval after the last frame (the shorter of the last two intervals, else the stream's
    rate), as FFmpeg does. A jump back by the 33-bit wrap of MPEG timestamps (:data:`MPEG_WRAP`) is the clock going
    on: it adds the wrap. :meth:`report` says what was done, once, when the reading ends.
    """

    def __init__(self, name: str, container=None, stream=None):
        fmt = getattr(container, "format", None)
        self.name, self.stream = name, stream
        self.jump = JUMP_THRESHOLD if fmt is not None and int(fmt.flags) & _TS_DISCONT else None
        names = set(getattr(fmt, "name", "").split(","))
        self.wrap = MPEG_WRAP if names & set(_WRAPPING_FORMATS) else None
        self.offset = 0.0
        self.raw: Optional[float] = None  # the last frame's own time
        self.last: Optional[float] = None  # ... on the timeline
        self.gaps: List[float] = []  # the last two intervals between frames within a part
        self.jumps: List[Tuple[float, float, float]] = []  # (time on the timeline, from, to): own times
        self.wraps: List[float] = []  # times on the timeline where the clock wrapped

    def state(self) -> Tuple[float, int, int]:
        """What :meth:`restore` needs to time frames from here on (the offset of the current part)."""
        return self.offset, len(self.jumps), len(self.wraps)

    def restore(self, state: Tuple[float, int, int]) -> None:
        """Back to ``state``, the frames before it forgotten: the next time is taken as it comes, in that part."""
        self.offset, jumps, wraps = state
        del self.jumps[jumps:], self.wraps[wraps:]
        self.raw = self.last = None
        self.gaps = []

    @property
    def discontinuous(self) -> bool:
        """Whether the times were moved (a part was placed after another)."""
        return bool(self.jumps)

    def _interval(self) -> float:
        if self.gaps:
            return min(self.gaps)
        return 1.0 / (_stream_rate(self.stream)[0] if self.stream is not None else DEFAULT_FRAME_RATE)

    def __call__(self, t: float) -> float:
        """The time on the timeline of a frame whose own time is ``t`` (s)."""
        t = float(t)
        if self.raw is not None:
            step = t - self.raw
            if self.wrap is not None and (self.raw < 0.0 <= t or self.raw < self.wrap <= t):
                self.wraps.append(t + self.offset)  # the demuxer has unwrapped it (FFmpeg does the first wrap)
            if self.wrap is not None and abs(step + self.wrap) <= JUMP_THRESHOLD:
                self.offset += self.wrap  # the clock wrapped: time went on
                self.wraps.append(t + self.offset)
            elif step < -1e-6 or (self.jump is not None and step > self.jump):
                at = self.last + self._interval()
                self.jumps.append((at, self.raw, t))
                self.offset = at - t
            elif step > 1e-6:
                self.gaps = (self.gaps + [step])[-2:]
        self.raw, self.last = t, t + self.offset
        return self.last

    def report(self, notes: Optional[List[str]], origin: float = 0.0) -> None:
        """Note what was done (once per reading; ``origin``: where the reader's times count from, s)."""
        name = self.name if "://" in self.name else os.path.basename(self.name.rstrip("/")) or self.name
        if self.jumps:
            where = "; ".join(f"at {at - origin:.2f} s, {a - origin:.2f} s -> {b - origin:.2f} s"
                              for at, a, b in self.jumps[:3]) + ("; ..." if len(self.jumps) > 3 else "")
            _note(self.name, notes, "discontinuity",
                  f"{name}: its timestamps jump {len(self.jumps)} time(s) ({where}), as in files joined end to end "
                  f"(cat a.ts b.ts) or a recorder that restarted its clock: each part is read after the one before it, "
                  f"one frame interval after its last frame, on one increasing timeline")
        if self.wraps:
            where = ", ".join(f"{at - origin:.2f} s" for at in self.wraps[:3])
            where += ", ..." if len(self.wraps) > 3 else ""
            _note(self.name, notes, "wrap",
                  f"{name} crosses the wrap of its 33-bit MPEG timestamps (2^33 / 90 kHz, every 26.5 h) at {where}: "
                  f"its times go on across it")


# ---------------------------------------------------------------------------------------------------- video files
def _open(path: str):
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading video files needs PyAV: pip install 'clipdfer[video]' (or pip install av)") from e
    special = special_file(path)
    if special is not None:  # a named pipe, a device: say what it is (it exists)
        raise ValueError(special)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise ValueError(f"video {path!r} is empty (0 bytes)")
    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot read video {path!r}: {e}; is it a complete, supported video file?") from e
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path!r} has no video stream")
    return container


def _video_stream(container, threads: bool = True):
    stream = container.streams.video[0]
    if threads:
        stream.thread_type = "AUTO"  # frame and slice threads; frames still come out in order
    return stream


def iter_video_frames(path: str, fps: Optional[float] = None, start: Optional[float] = None,
                      end: Optional[float] = None, notes: Optional[List[str]] = None
                      ) -> Iterator[Tuple[float, np.ndarray]]:
    """(time in s, RGB (H, W, 3) uint8) for the frames of a video file, as a player shows them.

    A display matrix that is not a multiple of 90 degrees is logged once and the frames are left as stored.

    Args:
        path: the video file.
        fps: frames per second to keep (None or 0: every frame), on the grid of
            :class:`~clipdfer.data.sampling.FpsSampler` anchored at the first frame in range.
        start / end: the time range in s, both included (the decoder seeks to the key frame before ``start``; in a
            format whose timestamps may restart, MPEG-TS / PS, where a time may be in several parts, the packets
            before that key frame are read from the beginning without decoding them).
        notes: receives a sentence for each assumption made, e.g. that frames without timestamps (a raw H.264
            stream) are timed by the stream's rate, or that the timestamps restart; the same sentence is logged
            once per file as a warning.

    Yields:
        The frame's time: its timestamp in s from the start of the file's timeline, each part after a timestamp
        discontinuity placed one frame interval after the part before it (see :class:`_Timeline`); for a frame
        without one, the last known time plus one interval of the stream's rate, or frame index / rate. And the
        frame.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is empty, unreadable or corrupt, has no video stream, or has no frame in the range.
    """
    sampler = FpsSampler(fps)
    container = _open(path)
    import av
    got, damaged, last, duration, origin, past_end, timeline = False, [0], None, None, 0.0, False, None
    try:
        stream = _video_stream(container)
        origin = _origin(container, stream)
        duration = container.duration / 1e6 if container.duration else None  # what the container announces (s)
        timeline = _Timeline(path, container, stream)
        # a stream without timestamps cannot be sought in; nor one whose timestamps may restart (MPEG-TS: a time
        # can be in several parts, and where each part lies is known only from the ones before it): its packets
        # before start are read without decoding them
        seek = bool(start) and stream.start_time is not None and timeline.jump is None
        skip = bool(start) and stream.start_time is not None and timeline.jump is not None
        while True:
            clock, orient, timeline = _Clock(path, stream, notes), _Orienter(path), _Timeline(path, container, stream)
            if seek:
                container.seek(int((start + origin) * av.time_base), backward=True, any_frame=False)  # the key frame
            packets = _packets_from(container, stream, timeline, start + origin) if skip else container.demux(stream)
            decoded = past_end = False  # before start: decoding goes on from there
            for frame in _decode(packets, damaged):
                t = clock(timeline(frame.time) - origin if frame.time is not None else None)
                if seek and not decoded and t > start + 1e-6:
                    break  # the seek landed after start: read from the beginning instead
                decoded = True
                orient.seen(frame)
                if start and t < start - 1e-6:
                    continue
                if end is not None and t > end + 1e-6:
                    past_end = True
                    break
                if not sampler.take(t):
                    continue
                got, last = True, t
                yield t, orient(frame)
            if not seek or decoded or past_end:
                break
            container.close()  # some containers (a short MPEG-TS) seek to nowhere: decode from the start
            container, seek, damaged[0] = _open(path), False, 0
            stream = _video_stream(container)
    except av.error.FFmpegError as e:
        if not got:
            raise ValueError(f"video {path!r} is corrupt: decoding failed ({e})") from e
        _note(path, notes, "broken", f"{os.path.basename(path)} could not be read past {last:.2f} s ({e}): the rest "
                                     f"is left out")
    finally:
        container.close()
        if timeline is not None:
            timeline.report(notes, origin)
        if damaged[0] and got:
            _note(path, notes, "damaged", f"{os.path.basename(path)}: {damaged[0]} damaged packet(s) could not be "
                                          f"decoded and were skipped")
    if not got:
        raise ValueError(f"video {path!r} has no decodable frames{_range_text(start, end)}")
    # the container's duration is the length from its start time (MPEG-TS, mp4) or the end time (Matroska): short
    # only when short of both; a file whose timestamps restart has no duration that describes its timeline
    short = duration and last is not None and max(last, last + origin) < duration - max(1.0, 0.1 * duration)
    if end is None and not past_end and short and not (timeline is not None and timeline.discontinuous):
        _note(path, notes, "truncated", f"{os.path.basename(path)} ends at {last:.2f} s of the {duration:.2f} s its "
                                        f"container announces: the file may be truncated")


def _packets_from(container, stream, timeline: "_Timeline", start: float, most: int = 2000):
    """The packets of ``stream`` from the key frame that begins the group of pictures holding time ``start`` (s on
    ``timeline``, which follows the packets before it to learn the offset of each part), without decoding the ones
    before it; when ``most`` packets come without a key frame (a stream with few or none), every packet from the
    last key frame on.

    ``timeline`` is left as it was at that key frame, to time the decoded frames from there.
    """
    held, at_key, waiting = [], None, True  # the packets since the last key frame; the timeline's state there
    top = None  # the latest display time (own, s) of the part so far
    for packet in container.demux(stream):
        if waiting:
            ts = packet.dts if packet.dts is not None else packet.pts
            jumps = len(timeline.jumps)
            now = timeline(float(ts * packet.time_base)) if ts is not None else None  # in decoding order: dts
            pts = float(packet.pts * packet.time_base) if packet.pts is not None and ts is not None else None
            shown = now + pts - float(ts * packet.time_base) if pts is not None else now
            if len(timeline.jumps) > jumps and pts is not None and top is not None:  # as the frames would say it
                timeline.jumps[-1] = (shown, top, pts)
                top = None
            if pts is not None:
                top = pts if top is None else max(top, pts)
            if packet.is_keyframe and now is not None:
                if at_key is not None and shown > start + 1e-6:
                    waiting = False  # the group before this key frame holds start
                else:
                    held, at_key = [], timeline.state()
            if waiting and len(held) < most:
                held.append(packet)
                continue
            waiting = False
            if at_key is not None:
                timeline.restore(at_key)
            yield from held
            held = []
        yield packet
    if held:  # start is in the last group, or after the end
        if at_key is not None:
            timeline.restore(at_key)
        yield from held


def _decode(packets, damaged: List[int]):
    """The decoded frames of ``packets`` (of one stream, ending with its flush packet); a packet the decoder rejects
    as invalid is skipped (as players do) and counted in ``damaged[0]``."""
    import av
    for packet in packets:
        if packet is None:
            continue
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            damaged[0] += 1
            continue
        yield from frames


def _note(source: str, notes: Optional[List[str]], what: str, message: str) -> None:
    """Log ``message`` once per source and add it to ``notes``."""
    _warn_once(source, what, "%s", message)
    if notes is not None:
        notes.append(message)


def _origin(container, stream) -> float:
    """Where a player's timeline starts, in s: the container's start time (a camera's MPEG-TS may start at 1.65 s), else
    the stream's."""
    if container.start_time is not None:
        return container.start_time / 1e6  # AV_TIME_BASE units
    if stream.start_time is not None and stream.time_base:
        return float(stream.start_time * stream.time_base)
    return 0.0


def estimate_frames(path: str, fps: Optional[float] = None, start: Optional[float] = None,
                    end: Optional[float] = None) -> Optional[int]:
    """How many frames :func:`iter_video_frames` yields for these arguments (a progress bar's total): exact for
    constant-rate files; None when the file gives no rate or no frame count or duration."""
    try:
        container = _open(path)
    except (ValueError, FileNotFoundError, ImportError):
        return None
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 0)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = container.duration / 1e6 if container.duration else 0.0
        counts = [n for n in (stream.frames, int(round(duration * rate))) if n]  # an edit list hides frames
        count = min(counts) if counts else 0
        if not rate or not count:
            return None
        first = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        first -= _origin(container, stream)
    finally:
        container.close()
    sampler, n = FpsSampler(fps), 0
    for i in range(count):
        t = first + i / rate
        if start and t < start - 1e-6:
            continue
        if end is not None and t > end + 1e-6:
            break
        n += sampler.take(t)
    return n


def read_video(path: str) -> torch.Tensor:
    """Every frame of a video file, as a player shows it (see :func:`iter_video_frames`), as (N, 3, H, W) uint8 RGB;
    of an image file (:data:`IMAGE_EXTENSIONS`: an animated GIF, WebP or APNG), its frames (:func:`iter_image_frames`).

    Raises:
        FileNotFoundError, ValueError: as :func:`iter_video_frames`.
    """
    frames = iter_image_frames(path) if path.lower().endswith(IMAGE_EXTENSIONS) else iter_video_frames(path)
    return torch.stack([torch.from_numpy(f).permute(2, 0, 1) for _, f in frames])


def count_video_frames(path: str) -> int:
    """Number of decodable frames of a video file (as many as :func:`read_video` gives), without converting them; of
    an image file, its frames (1 for a still image).

    Raises:
        FileNotFoundError, ValueError: as :func:`iter_video_frames`.
    """
    if path.lower().endswith(IMAGE_EXTENSIONS):
        from PIL import Image, UnidentifiedImageError
        special = special_file(path)
        if special is not None:
            raise ValueError(special)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path!r} does not exist")
        try:
            with Image.open(path) as img:
                return getattr(img, "n_frames", 1)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"cannot read image {path!r}: {e}; is it a complete image file?") from e
    container = _open(path)
    import av
    try:
        n = sum(1 for _ in container.decode(_video_stream(container)))
    except av.error.FFmpegError as e:
        raise ValueError(f"video {path!r} is corrupt: decoding failed ({e})") from e
    finally:
        container.close()
    if not n:
        raise ValueError(f"video {path!r} has no decodable frames")
    return n


# ---------------------------------------------------------------------------------------------------- live sources
LIVE_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def iter_stream_frames(url: str, fps: Optional[float] = None, notes: Optional[List[str]] = None
                       ) -> Iterator[Tuple[float, np.ndarray]]:
    """Frames of a live stream (RTSP, RTMP, HTTP, UDP ...) through PyAV as they arrive, until it ends or the caller
    stops.

    Args:
        url: the stream (any input PyAV opens; a file is read like a stream).
        fps: frames per second to keep (None or 0: every frame).
        notes: as :func:`iter_video_frames`.

    Yields:
        (time in s from the first frame, on one increasing timeline as :func:`iter_video_frames` gives, RGB (H, W, 3)
        uint8).

    Raises:
        ValueError: the stream cannot be opened, has no video, or breaks off.
    """
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading streams needs PyAV: pip install 'clipdfer[predict]'") from e
    try:
        container = av.open(url, timeout=10.0)
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot open stream {url!r}: {e}") from e
    sampler, timeline = FpsSampler(fps), None
    try:
        if not container.streams.video:
            raise ValueError(f"stream {url!r} has no video")
        stream = _video_stream(container)
        clock, orient, timeline = _Clock(url, stream, notes), _Orienter(url), _Timeline(url, container, stream)
        first = None
        for frame in container.decode(stream):
            t = clock(timeline(frame.time) if frame.time is not None else None)
            orient.seen(frame)
            first = t if first is None else first
            if sampler.take(t - first):
                yield t - first, orient(frame)
    except av.error.FFmpegError as e:
        raise ValueError(f"stream {url!r} broke off: {e}") from e
    finally:
        container.close()
        if timeline is not None:
            timeline.report(notes, first or 0.0)


def iter_camera_frames(camera: Union[int, str], fps: Optional[float] = None) -> Iterator[Tuple[float, np.ndarray]]:
    """Frames of a camera through OpenCV (``0``, or a device path such as ``/dev/video0``) until it stops: (wall-clock
    time in s since the first frame, RGB (H, W, 3) uint8), ``fps`` per second (None or 0: every frame).

    Raises:
        ValueError: the camera cannot be opened.
    """
    import time
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading a camera needs OpenCV: pip install 'clipdfer[predict]'") from e
    sampler = FpsSampler(fps)
    capture = cv2.VideoCapture(camera)
    if not capture.isOpened():
        raise ValueError(f"cannot open camera {camera!r}: check the index or device path (0 is the first camera) "
                         f"and that no other program holds it")
    media_time = isinstance(camera, str) and os.path.isfile(camera)
    rate = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FRAME_RATE
    try:
        start, index, last = time.monotonic(), -1, None
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            index += 1
            t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if media_time else time.monotonic() - start
            if media_time and last is not None and t <= last:  # a file without timestamps: its rate
                t = index / rate
            last = t
            if sampler.take(t):
                yield t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
