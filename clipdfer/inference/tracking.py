"""The second stage of prediction: frames -> faces -> tracks -> crops (:class:`TrackingStage`), optionally in a
background thread (:func:`background`).
"""

import collections
import queue
import threading
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from ..faces import Track, TrackBox, TrackerStep, crop_face

__all__ = ["FaceCrop", "TrackedFrame", "TrackingStage", "WholeFrames", "EarlyTracking", "track_frames", "background"]


class FaceCrop:
    """One face in one frame: its box, and its prepared crop until the crop's features are computed (then only those);
    shared by every window it is in. ``score``: the detector's score where the box was detected (None: interpolated, or
    whole frames)."""
    __slots__ = ("face_id", "index", "time", "box", "pixels", "feature", "score")

    def __init__(self, face_id: int, index: int, t: float, box: Optional[tuple], pixels: torch.Tensor,
                 score: Optional[float] = None):
        self.face_id, self.index, self.time, self.box, self.score = face_id, index, t, box, score
        self.pixels: Optional[torch.Tensor] = pixels  # (3, S, S)
        self.feature: Optional[torch.Tensor] = None  # (D,) once encoded


class TrackedFrame:
    """What the tracking stage learned with one frame.

    Attributes:
        index: the frame's index among the frames read (-1: the end of the stream).
        time: its time in seconds.
        image: the RGB (H, W, 3) uint8 frame (None at the end of the stream).
        crops: crops of the boxes that became final with this frame, in frame order per face (maybe of earlier frames,
            up to ``max_delay`` back).
        ended: the tracks that ended.
        final_until: every box of the frames up to this index has been given.
    """
    __slots__ = ("index", "time", "image", "crops", "ended", "final_until")

    def __init__(self, index: int, t: float, image: Optional[np.ndarray], crops: List[FaceCrop], ended: List[Track],
                 final_until: int):
        self.index, self.time, self.image, self.crops = index, t, image, crops
        self.ended, self.final_until = ended, final_until


class WholeFrames:
    """Stands in for the face tracker without face detection: one 'face', the whole frame, from the first frame."""
    max_delay = 0

    def __init__(self):
        self.index = -1

    def update(self, frame: np.ndarray) -> TrackerStep:
        self.index += 1
        return TrackerStep([TrackBox(1, self.index, None, True)], [], False, self.index)

    def finish(self) -> TrackerStep:
        ended = [Track(1, 0, self.index, self.index + 1)] if self.index >= 0 else []
        return TrackerStep([], ended, False, self.index)


class TrackingStage:
    """Frames -> final face boxes -> prepared crops, one :class:`TrackedFrame` per frame read and one at the end. Holds
    only the frames whose boxes are not final yet.

    Args:
        tracker: a fresh :class:`clipdfer.faces.FaceTracker` (or :class:`WholeFrames`).
        prepare: a (S, S, 3) uint8 crop -> the model's (3, S, S) input.
        margin: context around each box, a fraction of its longer side on each side.
        size: the crop's side in pixels.
        interpolation: how crops are resized to ``size``.

    Attributes:
        frames_read, frames_with_face: frames read, and those with a kept face's final box (after the stream).
        first_time, last_time: the times of the first and last frame read (s).
        seconds: ``{"decode_s", "detect_and_track_s", "crop_s"}``: reading the frames (decoding, waiting for a live
            source), finding and following faces, cutting and preparing crops.
    """

    def __init__(self, tracker, prepare: Callable[[np.ndarray], torch.Tensor], margin: float, size: int,
                 interpolation: str = "bicubic"):
        self.tracker, self.prepare, self.margin, self.size = tracker, prepare, margin, size
        self.interpolation = interpolation
        self.frames_read = self.frames_with_face = 0
        self.max_frame_side = 0  # the longest side (px) of the frames read: the no-face hint compares the detect size
        self.first_time: Optional[float] = None
        self.last_time: Optional[float] = None
        self.seconds = {"decode_s": 0.0, "detect_and_track_s": 0.0, "crop_s": 0.0}
        self._frames: Dict[int, Tuple[float, np.ndarray]] = {}  # frames that may still get a box
        self._boxes: Dict[int, int] = {}  # boxes given so far per frame not yet final
        self._counted = -1  # frames up to here are counted in frames_with_face

    def __call__(self, frames: Union[Iterable[Tuple[float, np.ndarray]], "EarlyTracking"]
                 ) -> Iterator[TrackedFrame]:
        """Track faces in ``(time in s, RGB (H, W, 3) uint8)`` frames; yields after each frame and once at the end.
        ``frames`` may be an :class:`EarlyTracking` of this stage's tracker: its frames were read and tracked already."""
        if isinstance(frames, EarlyTracking):
            if frames.tracker is not self.tracker:
                raise ValueError("an EarlyTracking is taken by the stage made with its tracker")
            steps = frames.steps(self.seconds)
        else:
            steps = track_frames(frames, self.tracker, self.seconds)
        index = -1
        for t, image, step in steps:
            index += 1
            self.frames_read += 1
            self.first_time = t if self.first_time is None else self.first_time
            self.last_time = t
            self.max_frame_side = max(self.max_frame_side, *image.shape[:2])
            self._frames[index] = (t, image)
            yield TrackedFrame(index, t, image, self._crops(step), step.ended, step.final_until)
            self._forget(step.final_until)
        yield self.finish()

    def finish(self) -> TrackedFrame:
        """End the stream: the last :class:`TrackedFrame` (``index`` -1). Call it after stopping a live source."""
        step = self.tracker.finish()
        event = TrackedFrame(-1, self.last_time or 0.0, None, self._crops(step), step.ended, step.final_until)
        self._forget(step.final_until)
        return event

    def _crops(self, step: TrackerStep) -> List[FaceCrop]:
        start = time.perf_counter()
        crops = []
        for b in step.boxes:
            t, image = self._frames[b.frame_index]
            crops.append(FaceCrop(b.track_id, b.frame_index, t, b.box,
                                  self.prepare(crop_face(image, b.box, self.margin, self.size, self.interpolation)),
                                  b.score if b.detected else None))
            self._boxes[b.frame_index] = self._boxes.get(b.frame_index, 0) + 1
        self.seconds["crop_s"] += time.perf_counter() - start
        return crops

    def _forget(self, final_until: int) -> None:
        """Frames up to ``final_until`` have all their boxes: count them and let them go."""
        for j in range(self._counted + 1, final_until + 1):
            self.frames_with_face += self._boxes.pop(j, 0) > 0
            self._frames.pop(j, None)
        self._counted = max(self._counted, final_until)

    @property
    def held(self) -> int:
        """Frames held because their boxes are not final yet."""
        return len(self._frames)


def track_frames(frames: Iterable[Tuple[float, np.ndarray]], tracker, seconds: Dict[str, float]
                 ) -> Iterator[Tuple[float, np.ndarray, TrackerStep]]:
    """Read frames and run the tracker on each: ``(time, image, tracker step)``; adds the time spent reading to
    ``seconds["decode_s"]`` and tracking to ``seconds["detect_and_track_s"]``."""
    frames = iter(frames)
    try:
        while True:
            start = time.perf_counter()
            try:
                t, image = next(frames)
            except StopIteration:
                return
            finally:
                seconds["decode_s"] += time.perf_counter() - start
            start = time.perf_counter()
            step = tracker.update(image)
            seconds["detect_and_track_s"] += time.perf_counter() - start
            yield t, image, step
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


class EarlyTracking:
    """Reading and face tracking of one source, started in a thread before the model is ready, so that building the
    model (imports, weights: mostly one core) and finding faces (decoding and the detector: native code) overlap.

    The thread runs ``tracker`` on ``frames`` and holds what it found, with the frames, up to about ``max_bytes`` of
    frames ahead of the consumer; a :class:`TrackingStage` made with the same tracker takes them (``stage(early)``) as
    if it had read and tracked them itself: the same steps, so the same results. :meth:`close` stops the thread (an
    EarlyTracking never taken must be closed).

    Attributes:
        frames: what is read (its ``notes`` are complete once the thread has ended).
        tracker: the tracker that runs in the thread.
        seconds: ``{"decode_s", "detect_and_track_s"}`` spent in the thread.
    """

    def __init__(self, frames: Iterable[Tuple[float, np.ndarray]], tracker, max_bytes: int = 256 << 20):
        self.frames, self.tracker, self.max_bytes = frames, tracker, max(1, int(max_bytes))
        self.seconds = {"decode_s": 0.0, "detect_and_track_s": 0.0}
        self.taken = False
        self.on_item: Optional[Callable[[], object]] = None  # called as each step is taken (a progress bar)
        self._items: "collections.deque" = collections.deque()
        self._held = 0  # bytes of the frames held
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._work, name="clipdfer-early-tracking", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        steps = track_frames(self.frames, self.tracker, self.seconds)
        try:
            for t, image, step in steps:
                size = getattr(image, "nbytes", 0)
                with self._cond:
                    while not self._stop and self._items and self._held + size > self.max_bytes:
                        self._cond.wait()
                    if self._stop:
                        return
                    self._items.append((True, (t, image, step)))
                    self._held += size
                    self._cond.notify_all()
            item = (True, _END)
        except BaseException as e:  # raised where the steps are taken
            item = (False, e)
        finally:
            steps.close()  # the source is closed in this thread, also when stopped early
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def steps(self, seconds: Optional[Dict[str, float]] = None) -> Iterator[Tuple[float, np.ndarray, TrackerStep]]:
        """The thread's ``(time, image, tracker step)``, in order, waiting for them; taken once. ``seconds`` gets the
        thread's times when it has ended."""
        if self.taken:
            raise RuntimeError("an EarlyTracking's steps are taken once")
        self.taken = True
        try:
            while True:
                with self._cond:
                    while not self._items:
                        self._cond.wait()
                    ok, item = self._items.popleft()
                    if ok and item is not _END:
                        self._held -= getattr(item[1], "nbytes", 0)
                    self._cond.notify_all()
                if not ok:
                    raise item
                if item is _END:
                    if seconds is not None:
                        seconds.update(self.seconds)
                    return
                if self.on_item is not None:
                    self.on_item()
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the thread (at its next frame) and let go of what it holds."""
        with self._cond:
            self._stop = True
            self._items.clear()
            self._held = 0
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)


_END = object()


def background(items: Iterable, depth: int = 8, name: str = "clipdfer-reader") -> Iterator:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead of the caller.

    An exception in the thread is raised in the caller; when the caller stops early, the thread stops at its next item
    and ``items`` is closed.
    """
    box: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((True, item)):
                    return
            put((True, _END))
        except BaseException as e:  # handed to the caller, who raises it
            put((False, e))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = box.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)
