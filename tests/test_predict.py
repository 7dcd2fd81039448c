"""Prediction on real video: the sample clip, errors, and a face track that stays on one person."""

import json

import numpy as np
import pytest

import clipdfer
from clipdfer.data.io import read_video
from clipdfer.inference import FaceTracker, NoFaceError, sample_clip_path


def test_sample_clip_windows_cover_it_and_probabilities_sum_to_one():
    r = clipdfer.predict(sample_clip_path(), model="clipdfer_test", pretrained=False, window=8, stride=4)
    assert r.frames_used == 24 and r.frames_with_face == 24
    assert [w["first_frame"] for w in r.windows] == [0, 4, 8, 12, 16]
    assert r.windows[0]["start"] == 0.0 and r.windows[-1]["end"] == pytest.approx(23 / 8)
    for w in r.windows:
        assert sum(w["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(r.overall.values()) == pytest.approx(1.0, abs=1e-5)
    assert r.top_k[0][1] == max(r.overall.values()) and len(r.top_k) == 3
    assert r.notice and "NOT MEANINGFUL" in r.notice  # random weights say so


def test_cli_json_has_one_entry_per_window(capsys):
    from clipdfer.cli import main
    assert main(["predict", "--sample", "--model", "clipdfer_test", "--no-pretrained", "--json", "--window", "8",
                 "--stride", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["windows"]) == 3 and set(out["overall"]) == set(clipdfer.data.DFEW_CLASSES)
    assert main(["predict", "--sample", "--model", "clipdfer_test", "--no-pretrained"]) == 0
    text = capsys.readouterr().out
    assert "timeline" in text and "overall" in text and "NOT MEANINGFUL" in text


def test_short_clip_and_tensor_input():
    frames = read_video(sample_clip_path())[:5]  # shorter than the window: one window, the last frame repeated
    r = clipdfer.predict(frames, model="clipdfer_test", pretrained=False, folder_fps=8.0)
    assert len(r.windows) == 1 and r.frames_used == 5


def _write(path, frames, fps=8):
    import av
    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=fps)
        st.width, st.height, st.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    from clipdfer.cli import main
    with pytest.raises(FileNotFoundError, match="does not exist"):
        clipdfer.predict(str(tmp_path / "missing.mp4"), model="clipdfer_test", pretrained=False)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        clipdfer.predict(str(tmp_path / "empty.mp4"), model="clipdfer_test", pretrained=False)
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(ValueError, match="corrupt.mp4"):
        clipdfer.predict(str(tmp_path / "corrupt.mp4"), model="clipdfer_test", pretrained=False)
    _write(tmp_path / "noface.mp4", np.full((6, 64, 64, 3), 120, dtype=np.uint8))
    with pytest.raises(NoFaceError, match="no face found.*no-face-detection"):
        clipdfer.predict(str(tmp_path / "noface.mp4"), model="clipdfer_test", pretrained=False)
    r = clipdfer.predict(str(tmp_path / "noface.mp4"), model="clipdfer_test", pretrained=False, detect_faces=False)
    assert r.frames_used == 6
    assert main(["predict", str(tmp_path / "noface.mp4"), "--model", "clipdfer_test", "--no-pretrained"]) == 2
    assert "no face found" in capsys.readouterr().err


def test_track_stays_on_one_face_when_a_smaller_one_appears():
    from PIL import Image
    faces = read_video(sample_clip_path()).permute(0, 2, 3, 1).numpy()
    canvas = np.full((12, 240, 480, 3), 90, dtype=np.uint8)
    small = np.asarray(Image.fromarray(faces[0]).resize((120, 120)))
    for i in range(12):
        canvas[i, 24:216, 0:192] = faces[i]          # the person we follow, on the left
        if i >= 5:
            canvas[i, 60:180, 330:450] = small       # a second, smaller face appears on the right
    tracker = FaceTracker()
    centres = []
    for frame in canvas:
        box, _ = tracker.update(frame)
        centres.append((box[0] + box[2]) / 2)
    assert all(c < 192 for c in centres), centres
    assert len(tracker.detect(canvas[8])) >= 2, "the second face is detected, and not followed"
