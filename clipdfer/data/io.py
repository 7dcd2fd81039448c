"""Reading clips: folders of face frames (natural order) and video files (PyAV)."""

import os
import re
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["natural_key", "list_frames", "read_frames", "read_video", "count_video_frames", "iter_video_frames",
           "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "is_video_file"]

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


def iter_video_frames(path: str, fps: Optional[float] = None) -> Iterator[Tuple[float, np.ndarray]]:
    """(time in s, RGB (H, W, 3) uint8) for each frame of a video file, at most ``fps`` per second if given."""
    import av
    container = _open(path)
    got = False
    try:
        last = -1e9
        for frame in container.decode(video=0):
            t = float(frame.time) if frame.time is not None else 0.0
            if fps and t - last < 1.0 / fps - 1e-6:
                continue
            last, got = t, True
            yield t, frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise ValueError(f"video {path!r} is corrupt: decoding failed ({e})") from e
    finally:
        container.close()
    if not got:
        raise ValueError(f"video {path!r} has no decodable frames")


def read_video(path: str) -> torch.Tensor:
    """Every frame of a video file as (N, 3, H, W) uint8 RGB."""
    return torch.stack([torch.from_numpy(f).permute(2, 0, 1) for _, f in iter_video_frames(path)])


def count_video_frames(path: str) -> int:
    """Number of decodable frames of a video file."""
    return int(read_video(path).shape[0])
