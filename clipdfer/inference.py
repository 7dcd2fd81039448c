"""Predict expressions on your own videos: find and follow one face, crop it, score sliding windows of frames.

    import clipdfer
    result = clipdfer.predict("interview.mp4")            # zero-shot CLIP by default
    print(result.top_k, result.overall)                   # the clip's distribution
    for w in result.windows: print(w["start"], w["end"], w["probs"])   # the timeline

Faces: OpenCV's Haar cascade (``opencv-python-headless``, whose wheel carries the detector files). One person is
followed through the clip: the largest face of the first frame that has one, then in each frame the detection that
overlaps the previous box most (IoU >= 0.1), the box smoothed over time; never the union of several faces. Frames
without a usable detection keep the last box (frames before the first detection take the first one): the crop stays
on where the face was. A clip with no face at all is an error, unless ``detect_faces=False`` (the whole frame is used).
"""

import dataclasses
import os
import time
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

__all__ = ["predict", "Prediction", "FaceTracker", "sample_clip_path", "NoFaceError"]

_ASSETS = os.path.join(os.path.dirname(__file__), "assets")


def sample_clip_path() -> str:
    """The sample clip shipped with clipdfer: 3 s of astronaut Eileen Collins smiling (NASA, public domain)."""
    return os.path.join(_ASSETS, "sample_clip.mp4")


class NoFaceError(ValueError):
    """No face was found in the clip."""


def _iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Detects faces and follows one of them through a clip (see the module docstring for the policy).

    Args:
        min_size: smallest face side in pixels of the detection image.
        max_side: frames are downscaled so that their longer side is at most this for detection.
        smoothing: weight of the previous box in the box's moving average (0: none).
        min_iou: the overlap a detection needs with the previous box to continue the track.
    """

    def __init__(self, min_size: int = 24, max_side: int = 640, smoothing: float = 0.6, min_iou: float = 0.1):
        try:
            import cv2
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("face detection needs OpenCV: pip install 'clipdfer[predict]'") from e
        self._cv2 = cv2
        self.cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades,
                                                          "haarcascade_frontalface_default.xml"))
        if self.cascade.empty():
            raise RuntimeError("OpenCV's frontal face cascade could not be loaded from its package data")
        self.min_size, self.max_side, self.smoothing, self.min_iou = min_size, max_side, smoothing, min_iou
        self.box: Optional[Tuple[float, float, float, float]] = None

    def detect(self, frame: np.ndarray) -> List[Tuple[float, float, float, float]]:
        """Face boxes (x0, y0, x1, y1) in frame pixels, largest first."""
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        gray = self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = self._cv2.resize(gray, (int(w * scale), int(h * scale)), interpolation=self._cv2.INTER_AREA)
        found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                              minSize=(self.min_size, self.min_size))
        boxes = [(x / scale, y / scale, (x + bw) / scale, (y + bh) / scale) for x, y, bw, bh in found]
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)

    def update(self, frame: np.ndarray) -> Tuple[Optional[Tuple[float, float, float, float]], bool]:
        """Track one frame: ``(box, detected)``; the box is None until a face was first seen."""
        boxes = self.detect(frame)
        if self.box is None:
            if boxes:
                self.box = boxes[0]
            return self.box, bool(boxes)
        best = max(boxes, key=lambda b: _iou(b, self.box), default=None)
        if best is None or _iou(best, self.box) < self.min_iou:
            return self.box, False  # keep the last box
        a = self.smoothing
        self.box = tuple(a * p + (1 - a) * n for p, n in zip(self.box, best))
        return self.box, True


def _crop(frame: np.ndarray, box, margin: float, size: int) -> np.ndarray:
    """A square crop around ``box`` enlarged by ``margin`` on each side, resized to size x size (edges padded)."""
    from PIL import Image
    h, w = frame.shape[:2]
    if box is None:  # whole frame, centre square
        side = min(h, w)
        x0, y0 = (w - side) // 2, (h - side) // 2
        region = frame[y0:y0 + side, x0:x0 + side]
    else:
        x0, y0, x1, y1 = box
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * (1 + 2 * margin)
        half = side / 2
        l, t, r, b = int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half))
        pad = max(0, -l, -t, r - w, b - h)
        if pad:
            frame = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
            l, t, r, b = l + pad, t + pad, r + pad, b + pad
        region = frame[t:b, l:r]
    return np.asarray(Image.fromarray(np.ascontiguousarray(region)).resize((size, size), Image.BICUBIC))


def _frames(source, fps: Optional[float], folder_fps: float) -> Iterator[Tuple[float, np.ndarray]]:
    """(time in s, RGB frame) pairs, subsampled to at most ``fps`` frames per second."""
    from .data.io import list_frames
    if isinstance(source, torch.Tensor):
        x = source
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a video tensor (T, 3, H, W), got {tuple(x.shape)}")
        if x.is_floating_point():
            x = (x.clamp(0, 1) * 255).round()
        arr = x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        step = max(1, round(folder_fps / fps)) if fps else 1
        for i in range(0, len(arr), step):
            yield i / folder_fps, arr[i]
        return
    path = str(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist: give a video file, a folder of frames, or a tensor")
    if os.path.isdir(path):
        from PIL import Image
        paths = list_frames(path)
        step = max(1, round(folder_fps / fps)) if fps else 1
        for i in range(0, len(paths), step):
            with Image.open(paths[i]) as img:
                yield i / folder_fps, np.array(img.convert("RGB"))
        return
    from .data.io import iter_video_frames
    yield from iter_video_frames(path, fps)


@dataclasses.dataclass
class Prediction:
    """What :func:`predict` returns; ``to_dict()`` gives JSON-ready data."""
    source: str
    model: str
    class_names: List[str]
    windows: List[Dict]
    overall: Dict[str, float]
    top_k: List[Tuple[str, float]]
    frames_used: int
    frames_with_face: int
    timings: Dict[str, float]
    notice: Optional[str] = None

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


def _window_starts(n: int, window: int, stride: int) -> List[int]:
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:  # the last window ends at the last frame
        starts.append(n - window)
    return starts


def predict(
        source: Union[str, torch.Tensor],
        model: Union[str, torch.nn.Module] = "clip_zeroshot_vitb32",
        pretrained: bool = True,
        checkpoint: Optional[str] = None,
        window: Optional[int] = None,
        stride: Optional[int] = None,
        fps: Optional[float] = 8.0,
        folder_fps: float = 25.0,
        detect_faces: bool = True,
        margin: float = 0.25,
        top_k: int = 3,
        batch_size: int = 8,
        device: Optional[str] = None,
        progress: bool = False,
) -> Prediction:
    """Expression probabilities over time for one clip.

    Args:
        source: a video file, a folder of frames, or a (T, 3, H, W) tensor (uint8, or float in [0, 1]).
        model: a registered name (default zero-shot CLIP, which needs no fine-tuning), ``local-dir:``/``hf-hub:``
            name, or a model instance.
        pretrained: load the model's default weights (False: random weights, with a notice).
        checkpoint: a weights file or saved directory instead.
        window: frames per window (default: the model's T); stride: frames between window starts (default window/2).
        fps: frames per second taken from the video (default 8; None: every frame).
        folder_fps: the frame rate of a folder of frames or a tensor.
        detect_faces: find and follow one face; False uses the centre square of the whole frame.
        margin: context around the face box, as a fraction of its size on each side.
        top_k: how many classes ``top_k`` lists.
        batch_size: windows per forward pass.
        device: ``cuda`` / ``cpu`` (default: CUDA when available).
        progress: show a progress bar while reading frames.
    """
    import clipdfer
    from .data.transforms import build_transform
    times = {}
    t0 = time.perf_counter()
    if isinstance(model, torch.nn.Module):
        net, name = model, type(model).__name__
    else:
        name = model
        if checkpoint and os.path.isdir(checkpoint):
            net = clipdfer.create_model(f"local-dir:{checkpoint}")
        elif model.startswith(("local-dir:", "hf-hub:")):
            net = clipdfer.create_model(model)
        else:
            net = clipdfer.create_model(model, pretrained=pretrained and not checkpoint, checkpoint_path=checkpoint)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = net.eval().to(device)
    cfg = net.pretrained_cfg
    times["load_model_s"] = time.perf_counter() - t0
    state = net.weights_notice()
    notice = (f"NOT MEANINGFUL: this model has {state}; these probabilities only show that the pipeline runs."
              if state else None)

    size = cfg.input_size[-1]
    t0 = time.perf_counter()
    tracker = FaceTracker() if detect_faces else None
    raw, boxes, times_s, detected = [], [], [], 0
    frames = _frames(source, fps, folder_fps)
    if progress:
        from tqdm.auto import tqdm
        frames = tqdm(frames, desc="reading frames", unit="frame")
    first_box_index = None
    for t, frame in frames:
        box = None
        if tracker is not None:
            box, hit = tracker.update(frame)
            detected += int(hit)
            if box is not None and first_box_index is None:
                first_box_index = len(raw)
        raw.append(frame)
        boxes.append(box)
        times_s.append(t)
    if tracker is not None and first_box_index is None:
        raise NoFaceError(f"no face found in {source if isinstance(source, str) else 'the given frames'} "
                          f"({len(raw)} frames read): check the video, or pass detect_faces=False "
                          f"(--no-face-detection) to use whole frames")
    if tracker is not None:  # frames before the first detection take the first box
        boxes = [b if b is not None else boxes[first_box_index] for b in boxes]
    crops = np.stack([_crop(f, b, margin, size) for f, b in zip(raw, boxes)])
    del raw
    times["read_and_track_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    clip = build_transform(cfg, train=False)(torch.from_numpy(crops).permute(0, 3, 1, 2))  # (N, 3, S, S)
    n = clip.shape[0]
    window = window or net.num_frames
    stride = stride or max(1, window // 2)
    starts = _window_starts(n, window, stride)
    from .data.sampling import segment_indices
    batches = []
    for s in starts:
        idx = list(range(s, s + window)) if n >= window else segment_indices(n, window)
        batches.append(clip[idx])
    probs = []
    with torch.inference_mode():
        for i in range(0, len(batches), batch_size):
            probs.append(net(torch.stack(batches[i:i + batch_size]).to(device)).float().softmax(-1).cpu())
    probs = torch.cat(probs)
    times["model_s"] = time.perf_counter() - t0
    names = list(net.class_names)
    end_of = lambda i: times_s[min(n - 1, i)]  # noqa: E731
    windows = [{"start": times_s[s], "end": end_of(s + window - 1), "first_frame": s,
                "probs": {c: float(p) for c, p in zip(names, pr)}} for s, pr in zip(starts, probs)]
    mean = probs.mean(0)
    overall = {c: float(p) for c, p in zip(names, mean)}
    order = mean.argsort(descending=True)[:top_k]
    return Prediction(
        source=str(source) if isinstance(source, str) else "tensor", model=name, class_names=names, windows=windows,
        overall=overall, top_k=[(names[i], float(mean[i])) for i in order], frames_used=n,
        frames_with_face=detected if tracker is not None else n, timings=times, notice=notice)
