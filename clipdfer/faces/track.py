"""Following every face through a video: detection, association frame to frame, track birth and death, shot cuts.

The rules are in docs/predict.md ("Tracking"). Every kept track has one box at every frame of its span; a box becomes
final at most :attr:`FaceTracker.max_delay` frames after its frame.
"""

import dataclasses
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from .detect import Box, Face, FaceDetector, _check_frame, make_detector

__all__ = ["FaceTracker", "TrackBox", "Track", "TrackerStep", "ShotCutDetector", "track_faces", "iou"]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class TrackBox:
    """The box of track ``track_id`` at frame ``frame_index``; ``detected`` is False where it was interpolated, and
    ``score`` is the detector's score of a detected box (None where interpolated)."""
    track_id: int
    frame_index: int
    box: Box
    detected: bool
    score: Optional[float] = None


@dataclasses.dataclass
class Track:
    """A kept track.

    Attributes:
        id: 1, 2, 3 ... in the order the tracks were kept (kept with the same frame: the oldest first).
        first_frame: index of its first frame (a detection).
        last_frame: its last detection's frame, or, when the last search before a cut or the end found it, the last
            frame before them.
        detections: how many of its frames had a detection (the others are interpolated or extrapolated).
        boxes: {frame index: (x0, y0, x1, y1)} at every frame of its span; filled by :func:`track_faces` only.
    """
    id: int
    first_frame: int
    last_frame: int
    detections: int
    boxes: Dict[int, Box] = dataclasses.field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.last_frame - self.first_frame + 1


@dataclasses.dataclass
class TrackerStep:
    """What one :meth:`FaceTracker.update` (or :meth:`FaceTracker.finish`) call learned.

    Attributes:
        boxes: boxes that became final, in frame order per track (maybe of earlier frames); each box of a kept track is
            given once, none of a dropped track.
        ended: kept tracks that ended; all their boxes have been given.
        cut: a shot cut was found at this frame.
        final_until: every box of every frame up to this index has been given (-1: none yet); never decreases; after
            :meth:`FaceTracker.finish`, the last frame's index.
    """
    boxes: List[TrackBox]
    ended: List[Track]
    cut: bool
    final_until: int


class ShotCutDetector:
    """A shot cut: a frame whose colour histogram (``bins``^3 bins, on a thumbnail) differs from the previous frame's by
    more than ``threshold`` in total variation distance (0: the same, 1: disjoint). Ours."""

    def __init__(self, threshold: float = 0.45, bins: int = 4):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold={threshold}: expected a distance in (0, 1]")
        self.threshold, self.bins = threshold, bins
        self._previous: Optional[np.ndarray] = None

    def reset(self) -> None:
        """Forget the previous frame (the next one starts no shot)."""
        self._previous = None

    def histogram(self, frame: np.ndarray) -> np.ndarray:
        step = max(1, max(frame.shape[:2]) // 64)
        q = frame[::step, ::step].reshape(-1, 3).astype(np.int64) * self.bins // 256
        h = np.bincount((q[:, 0] * self.bins + q[:, 1]) * self.bins + q[:, 2], minlength=self.bins ** 3)
        return h / max(1, h.sum())

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Total variation distance between the histograms of two frames."""
        return 0.5 * float(np.abs(self.histogram(a) - self.histogram(b)).sum())

    def update(self, frame: np.ndarray) -> bool:
        """True when ``frame`` starts a new shot."""
        h = self.histogram(frame)
        cut = self._previous is not None and 0.5 * float(np.abs(h - self._previous).sum()) > self.threshold
        self._previous = h
        return cut


@dataclasses.dataclass
class _Live:
    first_frame: int
    last_frame: int  # last detection (or last frame of a shot, when extended over unsearched frames)
    box: Box  # box at last_frame (smoothed)
    velocity: Box = (0.0, 0.0, 0.0, 0.0)  # per frame, from the last detections
    detections: int = 1
    misses: int = 0  # searches in a row without it
    id: Optional[int] = None  # given when the track is kept
    # boxes of a track not yet kept: (frame, box, detected, detector score or None)
    pending: List[Tuple[int, Box, bool, Optional[float]]] = dataclasses.field(default_factory=list)


def _lerp(a: Box, b: Box, w: float) -> Box:
    return tuple(x + (y - x) * w for x, y in zip(a, b))


def _predict(t: _Live, i: int) -> Box:
    """Where track ``t`` should be at frame ``i``: its last box moved at its recent velocity."""
    return tuple(b + v * (i - t.last_frame) for b, v in zip(t.box, t.velocity))


class FaceTracker:
    """Follows every face of a stream of frames, each with a stable id.

    Args:
        detector: ``auto``, ``yunet``, ``haar`` or a :class:`FaceDetector`.
        min_score: score a detection needs (see :func:`make_detector`).
        detect_every: search every k-th frame (and at shot cuts); boxes in between are interpolated.
        match_iou: IoU a detection needs with the track's expected box (last box moved at its velocity) or last box.
        max_missing: searches in a row a track may miss before it ends at its last detection.
        min_track_frames: tracks whose detections span fewer frames are dropped (frames extended over at a cut or the
            end do not count).
        smoothing: weight of the expected box against the detection, in [0, 1); 0 keeps the detector's boxes.
        cut_threshold: histogram distance of a shot cut (:class:`ShotCutDetector`); None: no cut detection.

    Attributes:
        frames_with_face: searched frames with at least one detection (with ``detect_every > 1``, not the frames with a
            box).

    Raises:
        ValueError: an argument out of its range.
    """

    def __init__(self, detector: Union[str, FaceDetector] = "auto", min_score: Optional[float] = None,
                 detect_every: int = 1, match_iou: float = 0.3, max_missing: int = 3, min_track_frames: int = 4,
                 smoothing: float = 0.0, cut_threshold: Optional[float] = 0.45):
        for name, value, low in (("detect_every", detect_every, 1), ("max_missing", max_missing, 0),
                                 ("min_track_frames", min_track_frames, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: expected an integer >= {low}")
        if not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
            raise ValueError(f"smoothing={smoothing}: expected a weight in [0, 1)")
        self.detector = make_detector(detector, min_score)
        self.detect_every, self.match_iou, self.max_missing = detect_every, match_iou, max_missing
        self.min_track_frames, self.smoothing = min_track_frames, smoothing
        self.cuts = ShotCutDetector(cut_threshold) if cut_threshold is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget every track (ids start again at 1)."""
        self._live: List[_Live] = []
        self._index = -1
        self._last_search = None
        self._next_id = 1
        self.frames_with_face = 0
        if self.cuts is not None:
            self.cuts.reset()

    @property
    def max_delay(self) -> int:
        """Most frames a box is late: frame j's box is given by the :meth:`update` of frame j + max_delay at the latest
        (or by :meth:`finish`), so a buffer of the last max_delay + 1 frames holds the frame of every box still to come.
        """
        return self.min_track_frames + (self.max_missing + 1) * self.detect_every

    # ------------------------------------------------------------------------------------------ stepping
    def update(self, frame: np.ndarray) -> TrackerStep:
        """Take the next frame; returns what became final with it.

        Args:
            frame: RGB (H, W, 3) uint8.

        Raises:
            ValueError: the frame is not an RGB (H, W, 3) uint8 array.
        """
        _check_frame(frame)
        self._index += 1
        i = self._index
        boxes: List[TrackBox] = []
        ended: List[Track] = []
        cut = bool(self.cuts.update(frame)) if self.cuts is not None else False
        if cut:  # the last shot ends at the previous frame
            boxes += self._extend_unsearched(i - 1)
            ended += self._end_all()
        if cut or self._last_search is None or i - self._last_search >= self.detect_every:
            self._last_search = i
            faces = self.detector.detect(frame)
            self.frames_with_face += bool(faces)
            found, lost = self._associate(i, faces)
            boxes += found
            ended += lost
        return TrackerStep(boxes, ended, cut, self._final_until())

    def finish(self) -> TrackerStep:
        """End of the stream: every live track ends (extended over the unsearched frames at the end, as at a cut).

        Short tracks are dropped, unless the whole stream is shorter than ``min_track_frames``.

        Returns:
            The last boxes and every kept track still live; ``final_until`` is the last frame's index.
        """
        boxes = self._extend_unsearched(self._index)
        if self._index + 1 < self.min_track_frames:
            for t in self._live:
                if t.id is None:
                    t.id, self._next_id = self._next_id, self._next_id + 1
                    boxes += [TrackBox(t.id, *p) for p in t.pending]
                    t.pending = []
        return TrackerStep(boxes, self._end_all(), False, self._index)

    def _extend_unsearched(self, until: int) -> List[TrackBox]:
        """Tracks found at the last search go on at their velocity over the unsearched frames after it, up to frame
        ``until`` (the last of the stream or shot). The frames added do not count towards ``min_track_frames``."""
        boxes: List[TrackBox] = []
        for t in self._live:
            # found at the last search <=> t.last_frame == self._last_search (a miss leaves it at an earlier frame);
            # the frames after that search up to `until` (fewer than detect_every) were all unsearched
            if t.last_frame != self._last_search or t.last_frame >= until:
                continue
            extra = [(j, _predict(t, j), False, None) for j in range(t.last_frame + 1, until + 1)]
            t.last_frame, t.box = until, extra[-1][1]
            if t.id is not None:
                boxes += [TrackBox(t.id, *p) for p in extra]
            else:
                t.pending += extra
        return boxes

    def _final_until(self) -> int:
        # a kept live track may still give boxes after its last frame, one not kept yet all of its frames; a track
        # born later starts after the current frame (extension and interpolation never reach before a track's start)
        limit = self._index
        for t in self._live:
            limit = min(limit, t.last_frame if t.id is not None else t.first_frame - 1)
        return limit

    def _associate(self, i: int, faces: List[Face]) -> Tuple[List[TrackBox], List[Track]]:
        expected = [_predict(t, i) for t in self._live]
        # overlap with where the track should be, or where it was last (a face that stops or turns back)
        # ties: the older track and the larger face first
        pairs = sorted(((-max(iou(expected[ti], f.box), iou(t.box, f.box)), ti, fi)
                        for ti, t in enumerate(self._live) for fi, f in enumerate(faces)))
        matched_t, matched_f = set(), set()
        boxes: List[TrackBox] = []
        for negative, ti, fi in pairs:  # greedy: the best overlaps first (a handful of faces: as good as optimal)
            if -negative < self.match_iou:
                break
            if ti in matched_t or fi in matched_f:
                continue
            matched_t.add(ti)
            matched_f.add(fi)
            boxes += self._continue(self._live[ti], i, faces[fi].box, faces[fi].score)
        ended: List[Track] = []
        survivors = []
        for ti, t in enumerate(self._live):
            if ti not in matched_t:
                t.misses += 1
                if t.misses > self.max_missing:
                    track = self._end(t)
                    if track is not None:
                        ended.append(track)
                    continue
            survivors.append(t)
        self._live = survivors
        for fi, f in enumerate(faces):
            if fi not in matched_f:
                self._live.append(_Live(first_frame=i, last_frame=i, box=f.box, pending=[(i, f.box, True, f.score)]))
        for t in self._live:  # oldest first: tracks confirmed with the same frame get ids in the order of their birth
            boxes += self._maybe_keep(t)
        return boxes, ended

    def _continue(self, t: _Live, i: int, box: Box, score: Optional[float] = None) -> List[TrackBox]:
        a = self.smoothing  # around where the track was expected, so a face moving steadily is not lagged behind
        new = tuple(a * p + (1 - a) * n for p, n in zip(_predict(t, i), box))
        dt = i - t.last_frame
        gap = [(j, _lerp(t.box, new, (j - t.last_frame) / dt), False, None) for j in range(t.last_frame + 1, i)]
        step = tuple((n - o) / dt for n, o in zip(new, t.box))
        t.velocity = step if t.detections == 1 else tuple(0.5 * v + 0.5 * s for v, s in zip(t.velocity, step))
        t.box, t.last_frame, t.misses = new, i, 0
        t.detections += 1
        if t.id is not None:
            return [TrackBox(t.id, *p) for p in gap + [(i, new, True, score)]]
        t.pending += gap + [(i, new, True, score)]  # until it is kept (see _maybe_keep)
        return []

    def _maybe_keep(self, t: _Live) -> List[TrackBox]:
        if t.id is not None or t.last_frame - t.first_frame + 1 < self.min_track_frames:
            return []
        t.id, self._next_id = self._next_id, self._next_id + 1
        out = [TrackBox(t.id, *p) for p in t.pending]
        t.pending = []
        return out

    def _end(self, t: _Live) -> Optional[Track]:
        if t.id is None:  # never kept: too short
            return None
        return Track(t.id, t.first_frame, t.last_frame, t.detections)

    def _end_all(self) -> List[Track]:
        ended = [track for track in map(self._end, self._live) if track is not None]
        self._live = []
        return ended


def track_faces(frames: Iterable[np.ndarray], detector: Union[str, FaceDetector] = "auto", **kwargs) -> List[Track]:
    """Every kept face track of a sequence of RGB (H, W, 3) uint8 frames, with its box at each frame of its span.

    Args:
        frames: the frames, in order (a list, or a generator: they are read once).
        detector: see :class:`FaceTracker`; ``**kwargs`` are its other arguments.

    Returns:
        The tracks, by id, each with ``boxes`` {frame index: (x0, y0, x1, y1)}.
    """
    tracker = FaceTracker(detector, **kwargs)
    boxes: Dict[int, Dict[int, Box]] = {}
    tracks: Dict[int, Track] = {}

    def take(step: TrackerStep) -> None:
        for b in step.boxes:
            boxes.setdefault(b.track_id, {})[b.frame_index] = b.box
        for t in step.ended:
            tracks[t.id] = t

    for frame in frames:
        take(tracker.update(frame))
    take(tracker.finish())
    for t in tracks.values():
        t.boxes = dict(sorted(boxes.get(t.id, {}).items()))
    return [tracks[k] for k in sorted(tracks)]
