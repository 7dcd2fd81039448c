"""Reading clips: folders of face frames (natural order) and video files (PyAV)."""

import os
import re
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["natural_key", "list_frames", "read_frames", "read_video", "count_video_frames", "iter_video_frames",
           "estimate_frames", "iter_stream_frames", "iter_camera_frames", "LIVE_PREFIXES", "IMAGE_EXTENSIONS",
           "VIDEO_EXTENSIONS", "is_video_file"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def natural_key(name: str):
    """Sort key that orders ``frame2.jpg`` before ``frame10.jpg``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_video_file(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS)


def list_frames(folder: str) -> List[str]:
    """The image files of a frame folder, in natural order."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"clip folder {folder!r} does not exist: check the annotation file's paths and "
                                f"the data root")
    names = sorted((n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)), key=natural_key)
    if not names:
        raise ValueError(f"clip folder {folder!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return [os.path.join(folder, n) for n in names]


def read_frames(paths: Sequence[str], indices: Sequence[int]) -> torch.Tensor:
    """Frames ``paths[i]`` for i in ``indices`` as a (T, 3, H, W) uint8 RGB tensor (every frame the same size)."""
    from PIL import Image, UnidentifiedImageError
    cache, frames = {}, []
    for i in indices:
        if i not in cache:
            try:
                with Image.open(paths[i]) as img:
                    cache[i] = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"cannot read frame {paths[i]!r}: {e}") from e
        frames.append(cache[i])
    sizes = {tuple(f.shape) for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"frames of {os.path.dirname(paths[0])!r} differ in size: {sorted(sizes)}")
    return torch.stack(frames)


def _open(path: str):
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading video files needs PyAV: pip install 'clipdfer[video]' (or pip install av)") from e
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


def _keep(t: float, last: float, fps: Optional[float]) -> bool:
    """Whether a frame at time ``t`` is taken when the last one taken was at ``last``, for at most ``fps`` per s."""
    return not fps or t - last >= 1.0 / fps - 1e-6


def iter_video_frames(path: str, fps: Optional[float] = None, start: Optional[float] = None,
                      end: Optional[float] = None) -> Iterator[Tuple[float, np.ndarray]]:
    """(time in s, RGB (H, W, 3) uint8) for each frame of a video file, at most ``fps`` per second if given,
    between ``start`` and ``end`` seconds if given (the decoder seeks to ``start``)."""
    import av
    container = _open(path)
    got = False
    try:
        if start:
            container.seek(int(start * av.time_base), backward=True, any_frame=False)  # the key frame before it
        last = -1e9
        for frame in container.decode(video=0):
            t = float(frame.time) if frame.time is not None else 0.0
            if start and t < start - 1e-6:
                continue
            if end is not None and t > end + 1e-6:
                break
            if not _keep(t, last, fps):
                continue
            last, got = t, True
            yield t, frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise ValueError(f"video {path!r} is corrupt: decoding failed ({e})") from e
    finally:
        container.close()
    if not got:
        where = f" between {start or 0} s and {end} s" if start or end is not None else ""
        raise ValueError(f"video {path!r} has no decodable frames{where}")


def estimate_frames(path: str, fps: Optional[float] = None, start: Optional[float] = None,
                    end: Optional[float] = None) -> Optional[int]:
    """About how many frames :func:`iter_video_frames` yields (for a progress bar); None when unknown."""
    try:
        container = _open(path)
    except (ValueError, FileNotFoundError, ImportError):
        return None
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 0)
        duration = float(stream.duration * stream.time_base) if stream.duration else (
            container.duration / 1e6 if container.duration else 0.0)
        if not rate or not duration:
            return None
        span = max(0.0, min(duration, end if end is not None else duration) - (start or 0.0))
        return max(1, int(span * min(rate, fps) if fps else span * rate))
    finally:
        container.close()


LIVE_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def iter_stream_frames(url: str, fps: Optional[float] = None) -> Iterator[Tuple[float, np.ndarray]]:
    """Frames of a live stream (RTSP, RTMP, HTTP, UDP ...) through PyAV, as they arrive: (time in s from the
    first frame, RGB (H, W, 3) uint8), at most ``fps`` per second. Runs until the stream ends or the caller stops."""
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading streams needs PyAV: pip install 'clipdfer[predict]'") from e
    try:
        container = av.open(url, timeout=10.0)
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot open stream {url!r}: {e}") from e
    try:
        first, last = None, -1e9
        for frame in container.decode(video=0):
            t = float(frame.time) if frame.time is not None else 0.0
            first = t if first is None else first
            if _keep(t - first, last, fps):
                last = t - first
                yield last, frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise ValueError(f"stream {url!r} broke off: {e}") from e
    finally:
        container.close()


def iter_camera_frames(camera: Union[int, str], fps: Optional[float] = None) -> Iterator[Tuple[float, np.ndarray]]:
    """Frames of a camera through OpenCV (``0`` for the first one, or a device path such as ``/dev/video0``): (time
    in s since the first frame, RGB (H, W, 3) uint8), at most ``fps`` per second, until the camera stops.

    Times are the wall clock, as frames arrive; a video file given here (for tests) is read through the same path
    with its own timestamps."""
    import time
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading a camera needs OpenCV: pip install 'clipdfer[predict]'") from e
    capture = cv2.VideoCapture(camera)
    if not capture.isOpened():
        raise ValueError(f"cannot open camera {camera!r}: check the index or device path (0 is the first camera) "
                         f"and that no other program holds it")
    media_time = isinstance(camera, str) and os.path.isfile(camera)
    try:
        start, last = time.monotonic(), -1e9
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if media_time else time.monotonic() - start
            if _keep(t, last, fps):
                last = t
                yield t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def read_video(path: str) -> torch.Tensor:
    """Every frame of a video file as (N, 3, H, W) uint8 RGB."""
    return torch.stack([torch.from_numpy(f).permute(2, 0, 1) for _, f in iter_video_frames(path)])


def count_video_frames(path: str) -> int:
    """Number of decodable frames of a video file."""
    return int(read_video(path).shape[0])
