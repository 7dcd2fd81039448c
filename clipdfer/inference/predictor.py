"""One source through the pipeline: :class:`Predictor` builds the stages once; each run streams a source through them
(docs/architecture.md lists the stages).
"""

import collections
import dataclasses
import hashlib
import itertools
import logging
import os
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from ..data.transforms import build_transform
from ..faces import FaceTracker, make_detector
from ..models import create_model
from ..models._hub import model_args
from .outputs import FrameDrawer, Label, VideoOutput
from .results import FaceBox, FaceTimeline, Prediction, WindowResult
from .device import auto_dtype, dtype_name, resolve_device, resolve_dtype
from .scoring import WindowScorer
from .settings import FaceSettings, ReadSettings, WindowSettings, legacy_settings, settings_dict, split_settings
from .sources import EveryFrame, SourceFrames, is_live, source_name
from .tracking import EarlyTracking, TrackedFrame, TrackingStage, WholeFrames, background
from .windows import FaceWindows, Window

__all__ = ["Predictor", "predict", "NoFaceError", "DEFAULT_MODEL"]

_logger = logging.getLogger(__name__)

# What predict uses unless told: a video-trained expression model (DFER-CLIP's official FERV39k release, the largest
# and most varied of the three datasets; see docs/predict.md). `clip_zeroshot_vitb32` is the zero-shot alternative.
DEFAULT_MODEL = "dferclip_vitb32_ferv39k.ferv39k"


class NoFaceError(ValueError):
    """No face was found in the source."""


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a session needs of its predictor: the windows, resolved for the model, and when to score them."""
    window: int
    stride: int
    sampling: str
    batch_size: int
    top_k: int
    eager: bool  # score each window at once (live, or drawing waits on it)


class _Session:
    """One pass of a stream of tracked frames through windows, scores and timelines (see :meth:`Predictor.stream`).

    Holds the live tracks' crops (T per face at most), the windows waiting for a batch, the timelines and the frames not
    drawn yet. With ``keep`` a timeline keeps every window; without, only the last few, and an ended face is dropped.
    """

    def __init__(self, scorer: WindowScorer, plan: _Plan, draw: Optional[Callable] = None, keep: bool = True,
                 between: Optional["collections.deque"] = None):
        self.scorer, self.plan, self.keep = scorer, plan, keep
        self.live: Dict[int, FaceWindows] = {}  # faces on screen
        self.timelines: Dict[int, FaceTimeline] = {}  # every face seen
        self.due: List[Window] = []
        self.ending: List[int] = []  # faces that ended, finished once their last windows are scored
        self.drawer = FrameDrawer(draw, between) if draw is not None else None
        self.eager = plan.eager or draw is not None
        self.model_s = 0.0

    def take(self, event: TrackedFrame) -> List[WindowResult]:
        """Take one frame's tracking results; returns the windows scored with it."""
        plan = self.plan
        if self.drawer is not None and event.image is not None:
            self.drawer.add_frame(event.index, event.time, event.image)
        for crop in event.crops:
            faces = self.live.get(crop.face_id)
            if faces is None:
                faces = self.live[crop.face_id] = FaceWindows(crop.face_id, crop.index, plan.window, plan.stride,
                                                              plan.sampling)
                self.timelines[crop.face_id] = FaceTimeline(crop.face_id, crop.index, crop.index, crop.time,
                                                            crop.time)
            timeline = self.timelines[crop.face_id]
            timeline.last_frame, timeline.end = crop.index, crop.time
            if self.keep and crop.box is not None:
                timeline.boxes.append(FaceBox(crop.index, crop.time, tuple(crop.box), crop.score))
            if self.drawer is not None:
                self.drawer.add_box(crop.face_id, crop.index, crop.box)
            window = faces.add(crop)
            if window is not None:
                self.due.append(window)
        for track in event.ended:
            faces = self.live.pop(track.id, None)  # its crops go with it: only the timeline stays
            if faces is None:
                continue
            self.timelines[track.id].detections = track.detections
            window = faces.finish()
            if window is not None:
                self.due.append(window)
            self.ending.append(track.id)
        end = event.index < 0
        out = self._score() if end or len(self.due) >= plan.batch_size or (self.eager and self.due) else []
        if self.drawer is not None:
            self.drawer.draw_until(event.final_until, self._label)
            if end:
                self.drawer.finish()
        return out

    def _score(self) -> List[WindowResult]:
        start = time.perf_counter()
        windows, self.due = self.due, []
        probs = self.scorer(windows)
        names = self.scorer.class_names
        results = []
        for window, p in zip(windows, probs.tolist()):
            first, last = window.crops[0], window.crops[-1]
            r = WindowResult(window.face_id, first.time, last.time, first.index, last.index, dict(zip(names, p)))
            timeline = self.timelines[window.face_id].windows
            timeline.append(r)
            if not self.keep:
                del timeline[:-4]  # enough to label the frames around the newest window
            results.append(r)
        for face_id in self.ending:  # every window of these faces is scored now
            if self.keep:
                self.timelines[face_id].finish(self.plan.top_k)
            else:
                del self.timelines[face_id]
        self.ending = []
        self.model_s += time.perf_counter() - start
        return results

    def _label(self, face_id: int, frame: int) -> Label:
        faces = self.live.get(face_id)
        timeline = self.timelines[face_id]
        if faces is not None:
            covering = timeline.window_at(frame)
            if covering is not None:
                return True, covering
            if faces.may_cover(frame):
                return False, None
        return True, timeline.nearest_window(frame)

    def faces(self) -> List[FaceTimeline]:
        """The faces with at least one window, by id."""
        return [self.timelines[k] for k in sorted(self.timelines) if self.timelines[k].windows]


class Predictor:
    """Expression timelines of every face in a source: the model, the face tracker and the stages, built once and used
    for any number of sources.

    Args:
        model: a registered name, a ``local-dir:``/``hf-hub:`` name, or a model instance (default
            :data:`DEFAULT_MODEL`).
        pretrained: load the model's default weights (False: random weights drawn with seed 0, with a notice).
        checkpoint: a weights file or saved directory instead.
        faces: how faces are found, followed and cut out (:class:`FaceSettings`).
        windows: how each face's crops are scored (:class:`WindowSettings`).
        device: ``"auto"`` (the default; None too): CUDA, else Apple's MPS, else the CPU; or ``cuda``, ``cuda:1``,
            ``mps``, ``cpu``. The model is moved there (a model instance in place, as ``.to()`` does).
        dtype: the dtype of the model's weights (the model is cast, no autocast): ``"auto"`` (the default) is bf16
            where the device computes in bf16 natively (a CUDA GPU of compute capability 8.0 or later; a CPU with
            AVX-512 BF16 or AMX), fp32 elsewhere, and a model instance's own dtype (set ``CLIPDFER_AUTO_DTYPE=fp32``
            or ``bf16`` to override the choice); ``"fp32"``, ``"bf16"``, ``"fp16"`` or a torch dtype cast the model
            (a model instance in place). :attr:`dtype` and :attr:`dtype_reason` say what ran and why.
        live: score each window as soon as it completes (a camera, a stream) instead of in batches.
        background: decode, detect and track in a background thread while the model scores.
        **settings: flat settings fields (deprecated: a FutureWarning; still applied).

    Raises:
        ValueError: a window the model cannot take, a model without classifier, an unknown dtype or device.
    """

    def __init__(
            self,
            model: Union[str, torch.nn.Module] = DEFAULT_MODEL,
            pretrained: bool = True,
            checkpoint: Optional[str] = None,
            *,
            faces: Optional[FaceSettings] = None,
            windows: Optional[WindowSettings] = None,
            device: Optional[str] = "auto",
            dtype: Union[None, str, torch.dtype] = "auto",
            live: bool = False,
            background: bool = True,
            **settings,
    ):
        _, faces, windows = legacy_settings("Predictor", settings, faces=faces, windows=windows)
        start = time.perf_counter()
        if isinstance(model, torch.nn.Module):
            net, self.model_name = model, type(model).__name__
        else:
            self.model_name = model
            if checkpoint and os.path.isdir(checkpoint):  # a saved model: its own config says what it is
                net = create_model(f"local-dir:{checkpoint}")
                if model != DEFAULT_MODEL and model.partition(".")[0] != net.pretrained_cfg.architecture:
                    _logger.warning("model %s is not used: %s holds a saved %s, which predicts", model, checkpoint,
                                    net.pretrained_cfg.architecture)
                self.model_name = f"local-dir:{checkpoint}"
            elif model.startswith(("local-dir:", "hf-hub:")):
                net = create_model(model)
            elif pretrained or checkpoint:
                net = create_model(model, pretrained=pretrained and not checkpoint, checkpoint_path=checkpoint)
            else:  # random weights check the pipeline: the same ones in every run and process, so results resume
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    net = create_model(model)
        self.device = resolve_device(device)
        self.dtype, self.dtype_reason = _choose_dtype(dtype, net, self.device, isinstance(model, torch.nn.Module))
        self.net = net.eval().to(self.device, self.dtype)  # frozen text features follow (their cache is cleared)
        self.load_seconds = time.perf_counter() - start
        if not self.net.num_classes:
            raise ValueError("the model has no classifier (reset_classifier(0)): predict needs class scores; give it "
                             "classes with model.set_classes([...]) or a linear head with reset_classifier(n)")
        # preprocessing travels with the weights: size, interpolation, mean/std, frame sampling and crop margin
        cfg = self.net.pretrained_cfg
        window, stride = windows.resolve(self.net.num_frames, self.net.required_num_frames, type(self.net).__name__,
                                         self.net.max_num_frames)
        self.faces = dataclasses.replace(faces, margin=cfg.crop_margin if faces.margin is None else faces.margin)
        self.windows = dataclasses.replace(windows, window=window, stride=stride)
        self.live, self.background = live, background
        self._plan = _Plan(window, stride, cfg.frame_sampling, windows.batch_size, windows.top_k, live)
        self.size, self.interpolation = cfg.input_size[-1], cfg.interpolation
        self._transform = build_transform(cfg, train=False)
        self.scorer = WindowScorer(self.net, self.device, windows.batch_size)
        # one detector, shared by every run (each stream gets its own tracker)
        self.detector = make_detector(faces.detector, **faces.detector_args()) if faces.detect else None
        self._digest: Optional[Tuple[tuple, str]] = None  # (the tensors' versions, their sha256)
        self._early: Optional[EarlyTracking] = None  # a source's reading and tracking, started before the model

    def _adopt_early(self, early: Optional[EarlyTracking]) -> None:
        """Take the reading and tracking of a source started before this predictor was built
        (:func:`start_tracking`): the next :meth:`run` of that source, with the same settings, goes on from it."""
        self._close_early()
        self._early = early

    def _close_early(self) -> None:
        """Stop an early reading that no run took."""
        early, self._early = self._early, None
        if early is not None and not early.taken:
            early.close()

    def _take_early(self, source, reading: ReadSettings) -> Optional[EarlyTracking]:
        """The early reading of ``source`` if it was started with these settings (else it is stopped): None if none."""
        early, self._early = self._early, None
        if early is None:
            return None
        same_source = early.source is source or (isinstance(source, str) and early.source == source)
        same = (same_source and early.reading == reading and self.faces.detect and self.background and not self.live
                and dataclasses.replace(early.faces, margin=None) == dataclasses.replace(self.faces, margin=None))
        if same and not early.taken:
            return early
        if not early.taken:
            early.close()
        return None

    # settings as they resolved for this model (earlier releases' attribute names)
    window = property(lambda self: self.windows.window)
    stride = property(lambda self: self.windows.stride)
    margin = property(lambda self: self.faces.margin)
    sampling = property(lambda self: self._plan.sampling)
    detector_name = property(lambda self: self.detector.name if self.detector is not None else None)

    def weights_sha256(self) -> str:
        """The sha256 of the model's tensors as they are now, after the cast to the run's dtype (every parameter and
        buffer: the weights and what the class texts became, names, dtypes and shapes included: the same weights in
        fp32 and bf16 have two); computed again after a tensor changed (its version
        counter, storage or a sample of its values: writes through ``.data`` bypass the counter)."""
        tensors = list(itertools.chain(self.net.named_parameters(), self.net.named_buffers()))
        try:
            with torch.no_grad():
                sample = torch.cat([t.detach().reshape(-1)[::max(1, t.numel() // 8)][:8].double() for _, t in tensors])
            key = (tuple((n, id(t), t._version, t.data_ptr(), t.dtype, t.device) for n, t in tensors),
                   sample.cpu().numpy().tobytes())
        except RuntimeError:  # an inference-mode tensor has no version counter: nothing to key on
            key = None
        if key is None or self._digest is None or self._digest[0] != key:
            h = hashlib.sha256()
            for name, t in tensors:
                h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
            self._digest = (key, h.hexdigest())
        return self._digest[1]

    @property
    def settings(self) -> Dict:
        """What the results depend on besides the source and the reading (JSON-ready): the model (its weights' sha256
        and state, classes, preprocessing, dtype), the faces' settings (with the detector's) and the windows'."""
        cfg = self.net.pretrained_cfg
        faces = settings_dict(self.faces)
        if self.detector is not None:
            faces.update(detector=self.detector.name, min_score=self.detector.min_score,
                         min_face_size=self.detector.min_size, detect_max_side=self.detector.max_side)
        model = {"name": self.model_name, "architecture": cfg.architecture, "args": model_args(self.net),
                 "weights": self.net.weights, "weights_sha256": self.weights_sha256(), "class_names": self.class_names,
                 "input_size": list(cfg.input_size), "mean": list(cfg.mean), "std": list(cfg.std),
                 "interpolation": self.interpolation, "frame_sampling": self._plan.sampling,
                 "dtype": str(self.scorer.dtype or self.scorer._input_dtype())}
        return {"model": model, "faces": faces, "windows": settings_dict(self.windows)}

    @property
    def class_names(self) -> List[str]:
        """The model's classes now (they follow ``model.set_classes``)."""
        return list(self.net.class_names)

    @property
    def notice(self) -> Optional[str]:
        """Set when the model's weights make its probabilities meaningless."""
        state = self.net.weights_notice()
        return (f"NOT MEANINGFUL: this model has {state}; these probabilities only show that the pipeline runs."
                if state else None)

    def _prepare(self, crop: np.ndarray) -> torch.Tensor:
        """A (S, S, 3) uint8 crop -> (3, S, S) prepared as the model's pretrained cfg says."""
        return self._transform(torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0))[0]

    def tracking_stage(self, tracker=None) -> TrackingStage:
        """A fresh tracking stage (its own tracker, or ``tracker``) for one stream."""
        if tracker is None:
            tracker = FaceTracker(self.detector, **self.faces.tracker_args()) if self.faces.detect else WholeFrames()
        return TrackingStage(tracker, self._prepare, self.faces.margin, self.size, self.interpolation)

    def _session(self, draw: Optional[Callable] = None, keep: bool = True,
                 between: Optional["collections.deque"] = None) -> _Session:
        return _Session(self.scorer, self._plan, draw, keep, between)

    def _events(self, stage: TrackingStage, frames: Iterable[Tuple[float, np.ndarray]]) -> Iterator[TrackedFrame]:
        events = stage(frames)
        return background(events) if self.background else events

    def stream(self, frames: Iterable[Tuple[float, np.ndarray]]) -> Iterator[WindowResult]:
        """Score a stream of ``(time in s, RGB (H, W, 3) uint8)`` frames; yields each face's windows as they complete.

        Works on an endless source (stop iterating at any time): each window is handed over as it is scored, and an
        ended face leaves nothing behind.
        """
        session = self._session(keep=False)
        events = self._events(self.tracking_stage(), frames)
        try:
            for event in events:
                yield from session.take(event)
        finally:
            events.close()

    def run(self, source, reading: Optional[ReadSettings] = None, progress: bool = False,
            annotate: Union[None, str, VideoOutput] = None, on_window: Optional[Callable[[WindowResult], None]] = None,
            **settings) -> Prediction:
        """Predict on a whole source (:func:`iter_source`) and collect every face's timeline; with ``live=True``, Ctrl-C
        ends the source and the faces seen so far are the result.

        Args:
            source: what :func:`iter_source` reads.
            reading: which frames are read (:class:`ReadSettings`).
            progress: show a progress bar of the frames read.
            annotate: write every frame of the source, at its times, with each face's box, id and top class, to this
                video file (:class:`~clipdfer.inference.outputs.FrameDrawer` says how frames between those used are
                drawn).
            on_window: called with each :class:`WindowResult` as it completes.
            **settings: flat :class:`ReadSettings` fields (deprecated: a FutureWarning; still applied).

        Raises:
            NoFaceError: no face was found (or followed long enough to score).
            FileNotFoundError, ValueError: the source cannot be read; ``annotate`` is not a writable video path (a
                missing folder, the source itself, not .mp4 / .mkv / .mov).
        """
        reading = legacy_settings("Predictor.run", settings, reading=reading)[0]
        if annotate is not None and not isinstance(annotate, VideoOutput):
            annotate = VideoOutput(annotate, "annotate", [source])
        early = self._take_early(source, reading) if annotate is None else None
        if early is not None:  # read and tracked since before the model was built: the same frames, the same steps
            frames = early.frames
        else:  # --annotate draws every frame of the source: the frames between those used are read too, and wait
            frames = EveryFrame(source, reading) if annotate is not None and reading.fps else SourceFrames(source,
                                                                                                         reading)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(desc="frames", unit="frame", total=frames.estimate())
        annotator = None
        if annotate is not None:
            from ..visualize import VideoAnnotator
            annotator = VideoAnnotator(annotate.path, notice=self.notice)  # its rate: from the frames' times
        stage = self.tracking_stage(early.tracker if early is not None else None)
        session = self._session(annotator.write if annotator is not None else None,
                                between=getattr(frames, "between", None))
        wall = time.perf_counter()
        if early is not None:
            early.on_item = bar.update if bar is not None else None
            events = self._events(stage, early)
        else:
            events = self._events(stage, frames.counted(bar) if bar is not None else frames)

        def take(event: TrackedFrame) -> None:
            for r in session.take(event):
                if on_window is not None:
                    on_window(r)

        finished = False
        try:
            try:
                for event in events:
                    take(event)
            except KeyboardInterrupt:
                if not self.live:
                    raise
                events.close()  # a live source runs until it is stopped: what was seen so far is the result
                take(stage.finish())
            finished = True
        finally:
            events.close()  # stops the reading thread and closes the source, whatever happened
            if annotator is not None:
                if finished:
                    _close_or_remove(annotator)
                else:  # keep what went wrong (an error, Ctrl-C) as the error, not a failure to close the video
                    _close_after_error(annotator)
            if bar is not None:
                bar.total = bar.n  # what was read, whatever the estimate said
                bar.refresh()
                bar.close()
        timings = {"load_model_s": self.load_seconds, **stage.seconds, "model_s": session.model_s,
                   "total_s": time.perf_counter() - wall}
        return self._prediction(source, stage, session, timings, frames.notes,
                                {**self.settings, "reading": settings_dict(reading)})

    def _prediction(self, source, stage: TrackingStage, session: _Session, timings: Dict[str, float],
                    notes: List[str], settings: Dict) -> Prediction:
        name = source_name(source)
        faces = session.faces()
        if not faces:
            if self.faces.detect:
                side, searched = stage.max_frame_side, getattr(self.detector, "max_side", None)
                small = (f"small faces: frames of {side} px are searched at {searched} px, so faces under about "
                         f"{max(1, round(12 * side / searched))} px are missed; search them larger with "
                         f"detect_size={min(side, 1920)} (--detect-size {min(side, 1920)}), " if searched and
                         side > searched else "")
                raise NoFaceError(
                    f"no face found in {name} ({stage.frames_read} frames read, a face in {stage.frames_with_face}): "
                    f"check the video; {small}lower min_track_frames if faces appear only briefly, or pass "
                    f"detect_faces=False (--no-face-detection) to use whole frames")
            raise ValueError(f"no frames in {name}: nothing to predict")
        main = max(faces, key=lambda f: (f.last_frame - f.first_frame, -f.id))
        seconds = (stage.last_time - stage.first_time) if stage.frames_read else 0.0
        return Prediction(source=name, model=self.model_name, class_names=self.class_names, faces=faces,
                          main_face=main.id, frames_used=stage.frames_read, frames_with_face=stage.frames_with_face,
                          seconds=seconds, timings=timings, notice=self.notice, detector=self.detector_name,
                          notes=list(notes), settings=settings)


def _choose_dtype(dtype: Union[None, str, torch.dtype], net: torch.nn.Module, device: torch.device, instance: bool
                  ) -> Tuple[torch.dtype, str]:
    """The dtype the model's weights get, and why: ``dtype`` itself, or what ``"auto"`` (None too) means for it."""
    own = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)
    if dtype is not None and not (isinstance(dtype, str) and dtype.strip().lower() == "auto"):
        chosen = resolve_dtype(dtype)
        return chosen, "as given"
    if instance:  # a model the caller built keeps the dtype the caller gave it
        return own, f"auto: the model instance's own dtype ({dtype_name(own)})"
    chosen, why = auto_dtype(device)
    return chosen, f"auto: {why}"


def _close_or_remove(annotator) -> None:
    """Finish an annotated video; one that cannot be finished (a full disk) is removed, not left unplayable."""
    try:
        annotator.close()
    except Exception as e:
        if os.path.exists(annotator.path):
            os.remove(annotator.path)
        raise OSError(f"cannot finish the annotated video {annotator.path} ({e}): it was removed; free space and "
                      f"run again") from e


def _close_after_error(annotator) -> None:
    """Finish an annotated video after the run stopped; one that cannot be finished is removed, with a warning."""
    try:
        annotator.close()
    except Exception as e:  # the run's own error is what the caller sees
        _logger.warning("the annotated video %s could not be finished (%s): removed", annotator.path, e)
        if os.path.exists(annotator.path):
            os.remove(annotator.path)


def predict(
        source,
        model: Union[str, torch.nn.Module] = DEFAULT_MODEL,
        pretrained: bool = True,
        checkpoint: Optional[str] = None,
        *,
        device: Optional[str] = "auto",
        dtype: Union[None, str, torch.dtype] = "auto",
        progress: bool = False,
        annotate: Optional[str] = None,
        live: bool = False,
        background: bool = True,
        reading: Optional[ReadSettings] = None,
        faces: Optional[FaceSettings] = None,
        windows: Optional[WindowSettings] = None,
        **settings,
) -> Prediction:
    """Expression probabilities over time for every face of a source (see :class:`Predictor`, whose arguments it takes).

    Args:
        source: a video file, a folder of frames, a (T, 3, H, W) tensor (uint8, or float in [0, 1]), a stream URL, or a
            camera index.
        progress: show a progress bar of the frames read.
        annotate: also write the video with each face's box, id and current top class to this file.
        reading, faces, windows: the settings objects (:class:`ReadSettings`, :class:`FaceSettings`,
            :class:`WindowSettings`).
        **settings: their fields as keywords (``fps``, ``start``, ``margin``, ``window`` ...), over those objects.

    Raises:
        NoFaceError: no face in the source.
        FileNotFoundError, ValueError: the source cannot be read, or a setting is out of range.
        TypeError: a keyword that is no setting.
    """
    reading, faces, windows = split_settings(settings, reading, faces, windows)
    # the source is read and its faces tracked while the model is built (the same frames and steps as after)
    early = start_tracking(source, reading, faces) if (annotate is None and background and not live
                                                       and faces.detect and not is_live(source)) else None
    try:
        predictor = Predictor(model, pretrained, checkpoint, faces=faces, windows=windows, device=device, dtype=dtype,
                              live=live, background=background)
    except BaseException:
        if early is not None:
            early.close()
        raise
    predictor._adopt_early(early)
    try:
        return predictor.run(source, reading, progress=progress, annotate=annotate)
    finally:
        predictor._close_early()


def start_tracking(source, reading: Optional[ReadSettings] = None, faces: Optional[FaceSettings] = None
                   ) -> EarlyTracking:
    """Start reading ``source`` and tracking its faces in a thread, before the model is built: a
    :class:`Predictor` given it (``_adopt_early``) takes it over in its next ``run`` of that source with these settings
    (a source whose settings differ is read again); the model's build (imports, weights) and the detector then overlap.

    Raises:
        ImportError: the detector's packages are missing.
    """
    reading = reading if reading is not None else ReadSettings()
    faces = faces if faces is not None else FaceSettings()
    tracker = FaceTracker(make_detector(faces.detector, **faces.detector_args()), **faces.tracker_args())
    early = EarlyTracking(SourceFrames(source, reading), tracker)
    early.source, early.reading, early.faces = source, reading, faces
    return early
