"""Prediction on one source: every face with its timeline, memory bounded by the faces on screen, drawing that never
stalls, the model's state read at each run, dtypes, the sources users have (tensors, files, folders, cameras).

The pipeline's logic is tested with a scripted detector (tests/scripted.py) on every platform; the real-face cases
run YuNet (OpenCV) where OpenCV is installed.
"""

import copy
import csv
import dataclasses
import io
import json

import numpy as np
import pytest
import torch

import clipdfer
from clipdfer.data.io import iter_stream_frames, read_video
from clipdfer.data.sampling import FpsSampler
from clipdfer.data.transforms import build_transform
from clipdfer.faces import crop_face
from clipdfer.inference import (
    Camera, FaceTimeline, NoFaceError, Prediction, Predictor, WindowResult, sample_clip_path,
)
from clipdfer.inference import FaceSettings, ReadSettings, WindowSettings
from clipdfer.inference.settings import split_settings
from clipdfer.visualize import face_colour
from scripted import ScriptedDetector, face_frame, use_scripted_detector
from videos import joined, write_video


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)  # the same weights whichever test comes first
    return clipdfer.create_model("clip_zeroshot_test").eval()


@pytest.fixture(scope="module")
def clip():
    return list(read_video(sample_clip_path()).permute(0, 2, 3, 1).numpy())


def _scripted(model, *, background=True, dtype=None, **settings):
    """A predictor whose faces come from the scripted detector; ``settings``: face and window settings."""
    _, faces, windows = split_settings(settings, faces=FaceSettings(detector=ScriptedDetector()))
    return Predictor(model, faces=faces, windows=windows, background=background, dtype=dtype)


def _tensor(frames) -> torch.Tensor:
    return torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames])


def _two_faces(n=30, leaves=12):
    """Face 1 moves right 1 px per frame for the whole clip; face 2 leaves after ``leaves`` frames."""
    return [face_frame([(10 + i, 10, 40 + i, 50), (100, 60, 130, 100) if i < leaves else None]) for i in range(n)]


# ------------------------------------------------------------------------------------------------ the pipeline
def test_every_face_has_its_timeline_and_stream_and_run_give_the_same_windows(model):
    frames = _two_faces()
    r = _scripted(model).run(_tensor(frames), ReadSettings(folder_fps=8.0))
    assert isinstance(r, Prediction) and len(r.faces) == 2 and all(isinstance(f, FaceTimeline) for f in r.faces)
    stays, leaves = r.faces
    assert (stays.first_frame, stays.last_frame, leaves.first_frame, leaves.last_frame) == (0, 29, 0, 11)
    assert [(w.start_frame, w.end_frame) for w in leaves.windows] == [(0, 7), (4, 11)]  # none scores what it left
    assert [(w.start_frame, w.end_frame) for w in stays.windows][-1] == (22, 29)  # the last window ends at its end
    assert r.main_face == stays.id and r.windows is stays.windows and r.overall == stays.overall
    assert r.frames_used == 30 and r.frames_with_face == 30 and r.seconds == pytest.approx(29 / 8)
    for face in r.faces:
        assert sum(face.overall.values()) == pytest.approx(1.0, abs=1e-5) and len(face.top_k) == 3
        assert all(isinstance(w, WindowResult) and sum(w.probs.values()) == pytest.approx(1, abs=1e-5)
                   for w in face.windows)
    streamed = list(_scripted(model).stream((i / 8, f) for i, f in enumerate(frames)))
    assert sorted(streamed, key=lambda w: (w.face_id, w.start_frame)) == stays.windows + leaves.windows
    unthreaded = _scripted(model, background=False).run(_tensor(frames), ReadSettings(folder_fps=8.0))
    assert unthreaded.to_dict()["faces"] == r.to_dict()["faces"]  # the background thread changes nothing
    assert Prediction.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()


def test_memory_is_bounded_by_the_faces_on_screen_not_the_faces_seen(model):
    """A shot cut every 20 frames, a new face in each shot: 20 faces seen, one on screen at a time."""
    p = _scripted(model, background=False)
    frames = ((i / 8, face_frame([(20 + i % 20, 20, 60 + i % 20, 70)],
                                 background=(40, 40, 40) if (i // 20) % 2 else (200, 200, 200))) for i in range(400))
    stage, session = p.tracking_stage(), p._session()
    held = {}
    for event in stage(frames):
        session.take(event)
        crops = {id(c) for f in session.live.values() for c in f.crops} | {id(c) for w in session.due for c in w.crops}
        if event.index + 1 in (100, 200, 300, 400):
            held[event.index + 1] = (len(crops), len(session.live), stage.held)
    # the live face's last T crops and the windows waiting for a batch; it was 40/80/120/160 crops, growing
    assert all(n <= p.window * (1 + p.windows.batch_size) and live <= 1 and frames_held <= stage.tracker.max_delay + 1
               for n, live, frames_held in held.values()), held
    assert len(session.faces()) == 20 and all(len(f.windows) == 4 and f.ended for f in session.faces())


def test_drawing_never_waits_on_a_window_that_will_not_come(model):
    """Detect every 3rd frame, stride > window (frames no window covers), a second face seen for 7 frames."""
    p = _scripted(model, detect_every=3, window=4, stride=6, background=False)
    frames = ((i / 8, face_frame([(10, 10, 50, 60), (90, 20, 130, 70) if 20 <= i < 27 else None])) for i in range(200))
    drawn = []
    stage = p.tracking_stage()
    session = p._session(lambda index, t, frame, faces: drawn.append((index, faces)))
    bound = p.window + stage.tracker.max_delay + 1
    held = []
    for event in stage(frames):
        session.take(event)
        held.append(session.drawer.held)
    assert max(held) <= bound, (max(held), bound)  # it was 40/80/179 frames at frames 60/100/199
    assert [index for index, _ in drawn] == list(range(200))
    assert {face_id for _, faces in drawn for face_id, _, _ in faces} == {1, 2}
    for index, faces in drawn:
        for face_id, box, top in faces:
            timeline = session.timelines[face_id]
            assert top == timeline.nearest_window(index).top and box is not None
    gaps = [i for i in range(200) if session.timelines[1].window_at(i) is None]
    assert gaps, "stride > window leaves frames that no window covers"


def test_the_predictor_reads_the_model_at_each_run():
    net = clipdfer.create_model("clip_zeroshot_test").eval()
    predictor = _scripted(net)
    video = _tensor(_two_faces(16))
    assert predictor.run(video).class_names == list(net.class_names)
    net.set_classes(["calm", "joy", "pain"])
    r = predictor.run(video)
    assert r.class_names == ["calm", "joy", "pain"] and set(r.windows[0].probs) == {"calm", "joy", "pain"}
    assert "NOT MEANINGFUL" in r.notice


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_runs_close_to_fp32(model, dtype):
    video = _tensor(_two_faces(16))
    ref = _scripted(model).run(video)
    got = _scripted(copy.deepcopy(model), dtype=dtype).run(video)  # an instance is cast in place, as .to() does
    diff = max(abs(a.probs[c] - b.probs[c]) for a, b in zip(ref.windows, got.windows) for c in a.probs)
    assert diff < {"bf16": 0.05, "fp16": 0.02}[dtype], diff  # bf16 keeps 8 bits of mantissa, fp16 11
    half = copy.deepcopy(model).to(torch.bfloat16)  # a model converted to bf16: crops follow its dtype
    assert len(_scripted(half).run(video).windows) == len(ref.windows)
    with pytest.raises(ValueError, match="dtype='int8'"):
        _scripted(model, dtype="int8")


def test_frames_with_a_face_count_every_frame_with_a_box(model):
    frames = [face_frame([(10, 10, 50, 60) if i < 25 else None]) for i in range(32)]
    for k in (1, 3):
        r = _scripted(model, detect_every=k).run(_tensor(frames), ReadSettings(folder_fps=8.0))
        assert r.frames_with_face == 25 and r.frames_used == 32, k  # with k = 3 it counted 9 (the searched frames)


def test_each_frame_is_encoded_once_and_windows_equal_the_model_on_them(clip):
    net = clipdfer.create_model("clip_zeroshot_test").eval()
    calls = []
    net.image_encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0] * args[0].shape[1]))
    r = clipdfer.predict(sample_clip_path(), model=net, detect_faces=False, window=8, stride=2)
    assert len(r.windows) == 9 and sum(calls) == 24, calls  # 9 windows of 8 frames, 24 frames encoded
    transform = build_transform(net.pretrained_cfg)
    crops = torch.stack([transform(torch.from_numpy(crop_face(f, None, size=32)).permute(2, 0, 1)[None])[0]
                         for f in clip])
    with torch.no_grad():
        for w in r.windows:
            ref = net(crops[w.start_frame:w.end_frame + 1][None]).softmax(-1)[0]
            assert torch.allclose(torch.tensor(list(w.probs.values())), ref, atol=1e-5)


def test_interfit_models_score_whole_windows(clip):
    net = clipdfer.create_model("clipdfer_test").eval()
    assert not net.frames_independent
    r = clipdfer.predict(sample_clip_path(), model=net, detect_faces=False)
    transform = build_transform(net.pretrained_cfg)
    crops = torch.stack([transform(torch.from_numpy(crop_face(f, None, size=32)).permute(2, 0, 1)[None])[0]
                         for f in clip])
    with torch.no_grad():
        ref = net(torch.stack([crops[w.start_frame:w.end_frame + 1] for w in r.windows])).softmax(-1)
    assert torch.allclose(torch.tensor([list(w.probs.values()) for w in r.windows]), ref, atol=1e-5)


def _probs(r):
    return torch.tensor([list(w.probs.values()) for w in r.windows])


def test_preprocessing_travels_with_the_weights():
    """Resize filter, frame sampling and crop margin come from the model's pretrained cfg (issue 20, item 2)."""
    from clipdfer.data.sampling import sample_indices
    cfg = dict(interpolation="bilinear", frame_sampling="uniform", crop_margin=0.1)
    net = clipdfer.create_model("dferclip_test", pretrained_cfg_overlay=cfg).eval()
    video = (torch.rand(10, 3, 48, 64) * 255).to(torch.uint8)  # one track shorter than T = 16: sampled to T
    r = clipdfer.predict(video, model=net, detect_faces=False, folder_fps=8.0)
    frames = list(video.permute(0, 2, 3, 1).numpy())

    def expected(interpolation, sampling):
        transform = build_transform(net.pretrained_cfg)
        crops = torch.stack([transform(torch.from_numpy(crop_face(f, None, size=32, interpolation=interpolation))
                                       .permute(2, 0, 1)[None])[0] for f in frames])
        with torch.no_grad():
            return net(crops[sample_indices(10, 16, sampling)][None]).softmax(-1)

    assert len(r.windows) == 1 and torch.allclose(_probs(r), expected("bilinear", "uniform"), atol=1e-5)
    assert not torch.allclose(_probs(r), expected("bicubic", "segment"), atol=1e-5)  # what was used before

    p = _scripted(net, background=False)
    assert (p.margin, p.interpolation, p.sampling) == (0.1, "bilinear", "uniform")
    assert p.settings["faces"]["margin"] == 0.1
    frames = [face_frame([(60, 30, 90, 70)], background=(60 + 5 * i, 60, 60)) for i in range(6)]
    events = list(p.tracking_stage()(((i / 8, f) for i, f in enumerate(frames))))
    crop = next(c for e in events for c in e.crops)
    ref = build_transform(net.pretrained_cfg)(
        torch.from_numpy(crop_face(frames[crop.index], crop.box, 0.1, 32, "bilinear")).permute(2, 0, 1)[None])[0]
    assert torch.equal(crop.pixels, ref)
    assert _scripted(net, margin=0.5).margin == 0.5
    for bad in (-0.1, "wide", True):
        with pytest.raises(ValueError, match="margin=.*pretrained_cfg.crop_margin"):
            FaceSettings(margin=bad)
    with pytest.raises(ValueError, match="interpolation='cubic'"):
        crop_face(frames[0], None, interpolation="cubic")


def test_the_default_model_is_a_fine_tuned_release(capsys):
    """predict's default is DFER-CLIP's official FERV39k release; offline without it, the error says what to do."""
    from clipdfer.cli import main
    from clipdfer.inference import DEFAULT_MODEL
    cfg = clipdfer.get_pretrained_cfg(DEFAULT_MODEL)
    assert cfg.finetuned and cfg.url and cfg.architecture.startswith("dferclip_") and cfg.dataset == "ferv39k"
    assert main(["predict", "--sample"]) == 2  # the tests run offline with an empty cache
    err = capsys.readouterr().err
    assert DEFAULT_MODEL in err and "--model clip_zeroshot_vitb32" in err and "--no-pretrained" in err


def test_time_range_short_clips_tensors_and_errors(model):
    video = _tensor(_two_faces(24, leaves=0))
    r = _scripted(model).run(video, ReadSettings(start=1.0, end=2.0, folder_fps=8.0))
    assert r.frames_used == 9 and r.windows[0].start == 1.0 and r.windows[-1].end == 2.0
    r = _scripted(model).run(video[:5], ReadSettings(folder_fps=8.0))  # shorter than the window: frames repeated
    assert len(r.windows) == 1 and r.frames_used == 5
    with pytest.raises(ValueError, match="window=6.*exactly T=8"):
        Predictor("clipdfer_test", pretrained=False, windows=WindowSettings(window=6))
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        _scripted(model).run(video[0])
    with pytest.raises(NoFaceError, match="no face found.*24 frames read.*no-face-detection"):
        _scripted(model).run(_tensor([face_frame([]) for _ in range(24)]), ReadSettings(folder_fps=8.0))


def test_a_source_that_fails_part_way_closes_the_reader_and_keeps_the_error(model):
    def frames():
        for i in range(40):
            if i == 30:
                raise ValueError("video 'x.mp4' is corrupt: decoding failed")
            yield i / 8, face_frame([(10, 10, 50, 60)])

    with pytest.raises(ValueError, match="corrupt"):
        list(_scripted(model).stream(frames()))


def test_reading_and_tracking_started_before_the_model_give_the_same_result(model, tmp_path):
    from clipdfer.inference.predictor import start_tracking
    frames, reading = _two_faces(), ReadSettings(folder_fps=8.0)
    faces = FaceSettings(detector=ScriptedDetector())
    plain = _scripted(model).run(_tensor(frames), reading)
    predictor = Predictor(model, faces=faces)
    early = start_tracking(frames_src := _tensor(frames), reading, faces)
    predictor._adopt_early(early)
    r = predictor.run(frames_src, reading)
    assert early.taken and r.to_dict()["faces"] == plain.to_dict()["faces"]  # the same steps: the same windows
    assert r.frames_used == plain.frames_used == 30 and r.timings["detect_and_track_s"] > 0
    # started with other settings, or for another source: stopped, and the source read again
    for other, settings in ((frames_src, ReadSettings(folder_fps=4.0)), (_tensor(frames[:10]), reading)):
        early = start_tracking(other, settings, faces)
        predictor._adopt_early(early)
        assert predictor.run(frames_src, reading).to_dict()["faces"] == plain.to_dict()["faces"]
        assert not early.taken and not early._thread.is_alive()
    # one never taken is stopped by _close_early; an error in its thread is the run's
    early = start_tracking(frames_src, reading, faces)
    predictor._adopt_early(early)
    predictor._close_early()
    assert not early._thread.is_alive()

    source = str(tmp_path / "missing.mp4")
    with pytest.raises(Exception) as plain_error:
        predictor.run(source, reading)
    predictor._adopt_early(start_tracking(source, reading, faces))
    with pytest.raises(type(plain_error.value), match="missing.mp4"):
        predictor.run(source, reading)
    # predict() starts it itself, before building the model
    assert clipdfer.predict(frames_src, model, reading=reading, faces=faces).to_dict()["faces"] == \
        plain.to_dict()["faces"]


def test_early_tracking_holds_at_most_its_budget_of_frames():
    from clipdfer.inference.tracking import EarlyTracking, WholeFrames
    import time
    frames = [(i / 8, np.zeros((10, 10, 3), np.uint8)) for i in range(50)]
    early = EarlyTracking(frames, WholeFrames(), max_bytes=1000)  # 3 frames of 300 bytes
    deadline = time.monotonic() + 5
    while len(early._items) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert len(early._items) == 3 and early._held == 900
    assert [t for t, _, _ in early.steps()] == [t for t, _ in frames]  # then every frame, in order
    assert early.seconds["decode_s"] >= 0 and not early._thread.is_alive()


# ------------------------------------------------------------------------------------------------ real faces
def _two_real_faces(clip, tmp_path):
    """24 frames at 8 fps: the sample clip's face, and its mirror image leaving after 12 frames (1.5 s)."""
    frames = []
    for i in range(24):
        f = np.full((240, 480, 3), 90, dtype=np.uint8)
        f[24:216, 0:192] = clip[i]
        if i < 12:
            f[24:216, 280:472] = clip[i][:, ::-1]
        frames.append(f)
    return write_video(tmp_path / "two_faces.mp4", frames)


def test_sample_clip_windows_cover_it_and_probabilities_sum_to_one():
    r = clipdfer.predict(sample_clip_path(), model="clipdfer_test", pretrained=False, window=8, stride=4)
    assert r.frames_used == 24 and r.frames_with_face == 24 and r.detector in ("yunet", "haar")
    assert [(w.start_frame, w.end_frame) for w in r.windows] == [(0, 7), (4, 11), (8, 15), (12, 19), (16, 23)]
    assert r.windows[0].start == 0.0 and r.windows[-1].end == pytest.approx(23 / 8)
    assert sum(r.overall.values()) == pytest.approx(1.0, abs=1e-5)
    assert r.top_k[0][1] == max(r.overall.values()) and len(r.top_k) == 3
    assert len(r.faces) == 1 and r.main_face == 1 and r.notice and "NOT MEANINGFUL" in r.notice


def test_cli_outputs_json_csv_text_plot_and_annotated_video(clip, tmp_path, capsys):
    pytest.importorskip("cv2")
    from PIL import Image

    from clipdfer.cli import main
    two_faces = _two_real_faces(clip, tmp_path)
    args = ["predict", two_faces, "--model", "clip_zeroshot_test", "--no-pretrained"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 1 and len(out[0]["faces"]) == 2 and out[0]["detector"] == "yunet"
    assert set(out[0]["faces"][0]) >= {"id", "first_frame", "last_frame", "windows", "overall", "top_k"}
    assert {"start", "end", "start_frame", "end_frame", "probs"} <= set(out[0]["windows"][0])
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


def test_camera_and_stream_paths_read_a_file_like_a_live_source(clip, tmp_path):
    pytest.importorskip("cv2")
    two_faces = _two_real_faces(clip, tmp_path)
    r = Predictor("clip_zeroshot_test", pretrained=False, live=True).run(Camera(two_faces))
    assert r.source == f"camera {two_faces}" and len(r.faces) == 2 and r.frames_used == 24
    times = [t for t, _ in iter_stream_frames(two_faces, fps=4)]
    assert times[:3] == pytest.approx([0.0, 0.25, 0.5]) and len(times) == 12


# ------------------------------------------------------------------------------------------------ sources users have
def test_a_phone_clip_stored_sideways_is_predicted_and_drawn_upright(model, tmp_path):
    from videos import with_display_matrix
    upright = [face_frame([(10 + i, 10, 50 + i, 60)]) for i in range(16)]  # 120 x 160, the face top left
    stored = write_video(tmp_path / "stored.mp4", [np.ascontiguousarray(np.rot90(f)) for f in upright])
    with_display_matrix(tmp_path / "stored.mp4", tmp_path / "phone.mp4", 0, 1, -1, 0)  # as rotate=270 stores it
    assert read_video(stored).shape[-2:] == (160, 120)
    r = _scripted(model).run(str(tmp_path / "phone.mp4"), ReadSettings(fps=None), annotate=str(tmp_path / "drawn.mp4"))
    assert r.frames_with_face == 16 and len(r.faces) == 1
    drawn = read_video(str(tmp_path / "drawn.mp4"))
    assert drawn.shape == (16, 3, 120, 160)  # as a player shows it
    colour = torch.tensor(face_colour(1)).view(3, 1, 1)
    box = (drawn[0].int() - colour).abs().sum(0) < 60  # the face's box, drawn where the face is upright
    ys, xs = torch.nonzero(box, as_tuple=True)
    assert xs.min() < 20 and ys.max() < 70 and xs.max() < 100  # top left, under its label


def test_a_raw_h264_stream_is_timed_by_its_rate_and_says_so(model, tmp_path, capsys, monkeypatch):
    frames = [face_frame([(10, 10, 50, 60)]) for _ in range(24)]
    path = write_video(tmp_path / "camera.h264", frames, rate=8, fmt="h264")
    r = _scripted(model).run(path)
    assert r.frames_used == 24 and r.seconds == pytest.approx(2.875)  # it was 1 frame at 0.00 s
    assert r.windows[-1].end == pytest.approx(2.875) and len(r.windows) == 5
    assert any("no timestamps" in n and "8 fps" in n for n in r.notes)
    from clipdfer.cli import main
    use_scripted_detector(monkeypatch)
    assert main(["predict", path, "--model", "clip_zeroshot_test", "--no-pretrained"]) == 0
    assert "note: camera.h264 carries no timestamps" in capsys.readouterr().out


def test_ts_files_joined_with_cat_are_predicted_whole_and_say_so(model, tmp_path):
    # two 3 s recordings at 8 fps whose timestamps each start at 0 (ffmpeg -vf fps=4 reads 24 frames of them)
    parts = [write_video(tmp_path / f"{k}.ts", [face_frame([(10 + i, 10, 50 + i, 60)]) for i in range(24)], rate=8)
             for k in ("a", "b")]
    r = _scripted(model).run(joined(tmp_path / "joined.ts", *parts), ReadSettings(fps=4))
    assert r.frames_used == 24 and r.seconds == pytest.approx(5.75)  # it was 12 frames, 2.75 s: the first file
    assert len(r.notes) == 1 and "timestamps jump 1 time(s) (at 3.00 s, 2.88 s -> 0.00 s)" in r.notes[0]


def _animation(path, n=24, durations=None, **save):
    """An animated image of a moving face marker (Pillow): frame i lasts ``durations[i]`` ms."""
    from PIL import Image
    frames = [Image.fromarray(face_frame([(10 + 2 * i, 10, 50 + 2 * i, 60)])) for i in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, **save)
    return str(path)


def test_animated_images_are_read_as_videos_timed_by_their_durations(model, tmp_path):
    from clipdfer.inference import iter_source
    durations = [40, 50, 60] * 8  # ms: frame i starts at the sum of the durations before it
    starts = [sum(durations[:i]) / 1000 for i in range(24)]
    webp = _animation(tmp_path / "reaction.webp", durations=durations, lossless=True)
    r = _scripted(model).run(webp, ReadSettings(fps=None))  # it was "has no decodable frames" (FFmpeg: no animation)
    assert r.frames_used == 24 and r.frames_with_face == 24 and r.seconds == pytest.approx(starts[-1]) and not r.notes
    for path in (_animation(tmp_path / "reaction.gif", durations=durations),
                 _animation(tmp_path / "reaction.png", durations=durations)):  # GIF and APNG take the same path
        frames = list(iter_source(path, fps=None))
        assert [t for t, _ in frames] == pytest.approx(starts) and frames[5][1].shape == (120, 160, 3)
        sampler = FpsSampler(8)  # on the k / 8 grid, as a video's frames
        assert [t for t, _ in iter_source(path, fps=8)] == pytest.approx([t for t in starts if sampler.take(t)])
    gif = _animation(tmp_path / "fast.gif", n=6, durations=0)  # no delay: browsers show each frame 100 ms
    notes = []
    assert [t for t, _ in iter_source(gif, fps=None, notes=notes)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert notes == ["fast.gif: 6 frame(s) of the animation have no duration or one of 10 ms or less (frame 0 ...): "
                     "each is shown for 100 ms, as browsers do"]


@pytest.mark.parametrize("rate", [10, 25, 30])
def test_fps_sampling_does_not_depend_on_the_source_rate(model, tmp_path, rate):
    from clipdfer.data.io import iter_video_frames
    from clipdfer.inference.sources import estimate_frames
    path = write_video(tmp_path / f"clip{rate}.mp4", [face_frame([(10, 10, 50, 60)]) for _ in range(3 * rate)],
                       rate=rate)
    r = _scripted(model).run(path, ReadSettings(fps=8), annotate=str(tmp_path / "drawn.mp4"))
    assert abs(r.frames_used - 24) <= 1, r.frames_used  # it was 19 / 15 / 23 frames from 25 / 10 / 30 fps
    assert estimate_frames(path, 8) == r.frames_used  # the progress bar's total
    source = [t for t, _ in iter_video_frames(path)]
    drawn = [t for t, _ in iter_video_frames(str(tmp_path / "drawn.mp4"))]
    assert drawn == pytest.approx(source, abs=1e-3)  # the annotated video has every frame, at the source's times
    every = _scripted(model).run(path, ReadSettings(fps=None), annotate=str(tmp_path / "all.mp4"))
    assert every.frames_used == 3 * rate
    last = [t for t, _ in iter_video_frames(str(tmp_path / "all.mp4"))][-1]
    assert last == pytest.approx((3 * rate - 1) / rate, abs=1e-3)


def test_the_annotated_video_draws_every_source_frame_with_boxes_between_the_frames_used(model, tmp_path):
    """Issue 28, item 5: a 25 fps video read at 8 fps: the annotated video has all 75 frames at 25 fps, and on the
    frames between those used the box is interpolated (the face moves 2 px a frame: a held box would lag 2-4 px); the
    frames after the last one used keep its box."""
    import av

    from clipdfer.data.io import iter_video_frames
    xs = [5 + 2 * i for i in range(75)]
    path = write_video(tmp_path / "moving.mp4", [face_frame([(x, 30, x + 40, 80)], width=240) for x in xs], rate=25)
    drawn = str(tmp_path / "drawn.mp4")
    r = _scripted(model, window=4, stride=2).run(path, ReadSettings(fps=8), annotate=drawn)
    plain = _scripted(model, window=4, stride=2).run(path, ReadSettings(fps=8))
    assert r.frames_used == plain.frames_used == 24  # the frames used are the same, and so is the prediction
    assert [(w.start_frame, w.end_frame) for w in r.windows] == [(w.start_frame, w.end_frame) for w in plain.windows]
    for a, b in zip(r.windows, plain.windows):  # drawing scores each window at once, not in batches: float rounding
        assert a.probs == pytest.approx(b.probs, rel=1e-4, abs=1e-6)
    with av.open(drawn) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 25
        frames = [(f.time, f.to_ndarray(format="rgb24").astype(int)) for f in container.decode(stream)]
    assert len(frames) == 75 and [t for t, _ in frames] == pytest.approx([i / 25 for i in range(75)], abs=1e-3)
    used = {round(t * 25) for t, _ in iter_video_frames(path, fps=8)}
    between = [i for i in range(75) if i not in used]
    assert len(between) == 51
    colour = np.array(face_colour(1))
    for i in between:
        box = np.abs(frames[i][1] - colour).sum(-1) < 60  # the box (and its label above it) in face 1's colour
        ys, cols = np.nonzero(box)
        x = xs[min(i, max(used))]  # interpolated; held after the last frame used (72)
        assert len(cols) > 100 and abs(cols.min() - x) <= 1.5 and abs(ys.max() - 79) <= 1.5, (i, cols.min(), x)


def test_frames_between_those_used_take_the_window_covering_both_and_only_faces_in_both():
    """FrameDrawer's rule for a frame between frames 1 and 2: faces in both, box interpolated in time, the label of the
    window that covers both frames, else the nearer frame's; after the last frame, its boxes and labels."""
    import collections

    from clipdfer.inference.outputs import FrameDrawer
    a = WindowResult(1, 0.0, 0.1, 0, 1, {"happiness": 0.9, "anger": 0.1})  # frames 0-1
    b = WindowResult(1, 0.2, 0.3, 2, 3, {"happiness": 0.2, "anger": 0.8})  # frames 2-3: no window covers 1 and 2
    c = WindowResult(2, 0.0, 0.3, 0, 3, {"happiness": 0.3, "anger": 0.7})  # face 2: one window over all
    windows = {1: [a, a, b, b], 2: [c, c, c, c]}
    drawn, between = [], collections.deque()
    drawer = FrameDrawer(lambda i, t, image, faces: drawn.append((round(t, 3), faces)), between)
    for j, t in enumerate((0.0, 0.1, 0.2, 0.3)):
        if j == 2:
            between.extend([(1, 0.12, None), (1, 0.18, None)])  # read after frame 1, before frame 2
        drawer.add_frame(j, t, None)
        for face_id, box in ((1, (0, 0, 10, 10 + 10 * j)), (2, (50, 50, 60, 60)), (3, (90, 90, 99, 99))):
            if face_id != 3 or j < 2:  # face 3 ends at frame 1
                drawer.add_box(face_id, j, box)
    between.append((3, 0.35, None))  # after the last frame
    drawer.draw_until(3, lambda face_id, j: (True, windows.get(face_id, [None] * 4)[j]))
    drawer.finish()
    assert [t for t, _ in drawn] == [0.0, 0.1, 0.12, 0.18, 0.2, 0.3, 0.35]
    near1, near2 = drawn[2][1], drawn[3][1]
    assert [f[0] for f in near1] == [1, 2]  # face 3 is in frame 1 only: not drawn between
    assert near1[0][1] == pytest.approx((0, 0, 10, 22)) and near2[0][1] == pytest.approx((0, 0, 10, 28))
    assert near1[0][2] == ("happiness", 0.9) and near2[0][2] == ("anger", 0.8)  # the nearer frame's window
    assert near1[1][2] == near2[1][2] == ("anger", 0.7)  # the window covering both
    assert drawn[-1][1] == [(1, (0, 0, 10, 40), ("anger", 0.8)), (2, (50, 50, 60, 60), ("anger", 0.7))]


def test_a_frame_folder_as_users_have_it(model, tmp_path, monkeypatch, capsys):
    from PIL import Image
    folder = tmp_path / "crops"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):  # per-frame face crops of slightly different sizes, and macOS sidecar files
        h, w = int(rng.integers(87, 94)), int(rng.integers(68, 76))
        Image.fromarray(face_frame([(8, 8, w - 8, h - 8)], height=h, width=w)).save(folder / f"{i:05d}.png")
        (folder / f"._{i:05d}.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    r = _scripted(model).run(str(folder), ReadSettings(folder_fps=8.0))
    assert r.frames_used == 24 and r.frames_with_face == 24 and r.seconds == pytest.approx(23 / 8)
    from clipdfer.cli import main
    use_scripted_detector(monkeypatch)
    assert main(["predict", str(folder), "--folder-fps", "8", "--json", "--model", "clip_zeroshot_test",
                 "--no-pretrained"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["frames_used"] == 24  # at 25 frames/s it would take 8 of them
    (folder / "00005.png").write_bytes(b"\x89PNG broken in a copy")  # a damaged frame is skipped, as a packet is
    r = _scripted(model).run(str(folder), ReadSettings(folder_fps=8.0))
    assert r.frames_used == 23 and r.notes == ["crops: 1 frame(s) could not be read and were skipped (00005.png)"]


def test_stream_keeps_nothing_of_the_windows_it_has_handed_over(model):
    """A camera running for days: a new face every 20 frames, windows consumed and dropped."""
    import gc
    import weakref
    p = _scripted(model, background=False)
    frames = ((i / 8, face_frame([(20 + i % 20, 20, 60 + i % 20, 70)],
                                 background=(40, 40, 40) if (i // 20) % 2 else (200, 200, 200))) for i in range(2000))
    stage, session = p.tracking_stage(), p._session(keep=False)
    refs, timelines, windows = [], 0, 0
    for event in stage(frames):
        for w in session.take(event):
            refs.append(weakref.ref(w))
        timelines = max(timelines, len(session.timelines))
        windows = max(windows, sum(len(t.windows) for t in session.timelines.values()))
    del w, event
    gc.collect()
    assert len(refs) == 400 and all(r() is None for r in refs)  # it kept every window it yielded
    # 100 faces seen: held are the face on screen and those whose last windows wait for a batch; none at the end
    held = 1 + p.windows.batch_size
    assert timelines <= held and windows <= 4 * held and len(session.timelines) == 0


def test_a_stopped_run_does_not_blame_its_source_for_the_video_it_was_drawing(tmp_path, monkeypatch, capsys):
    from clipdfer.cli import main
    from clipdfer.visualize import VideoAnnotator
    use_scripted_detector(monkeypatch)
    path = write_video(tmp_path / "a.mp4", [face_frame([(10, 10, 50, 60)]) for _ in range(16)])
    written = []

    def write(self, index, *args):
        written.append(index)
        if index == 5:
            raise KeyboardInterrupt  # Ctrl-C while drawing
        return real_write(self, index, *args)

    def close(self):  # the container was cut off mid-write (PyAV: "Invalid argument ... returned 22")
        real_close(self)
        raise ValueError("Invalid argument: 'drawn.mp4' returned 22")

    real_write, real_close = VideoAnnotator.write, VideoAnnotator.close
    monkeypatch.setattr(VideoAnnotator, "write", write)
    monkeypatch.setattr(VideoAnnotator, "close", close)
    drawn, out = tmp_path / "drawn.mp4", tmp_path / "out"
    assert main(["predict", path, "--annotate", str(drawn), "--out", str(out), "--model", "clip_zeroshot_test",
                 "--no-pretrained"]) == 130  # it was exit 1 with the source recorded as failed
    assert not drawn.exists() and written[-1] == 5  # a video that could not be finished is removed
    summary = (out / "summary.csv").read_text()
    assert "Invalid argument" not in summary and ",pending," in summary


def test_settings_are_validated_data_that_a_result_records(model):
    """Issue 26, item 2: reading, face and window settings are frozen objects, validated once when made, each default
    stated once; Predictor / BatchRun take them, the flat keywords of earlier releases still work (with a warning),
    and a result records them as data."""
    import dataclasses
    for bad, match in ((dict(fps=-1), "fps=-1"), (dict(start=3, end=1), "end comes before the start"),
                       (dict(folder_fps=0), "folder_fps=0")):
        with pytest.raises(ValueError, match=match):
            ReadSettings(**bad)
    for bad, match in ((dict(detect_every=0), "detect_every=0"), (dict(cut_threshold=2), "cut_threshold=2"),
                       (dict(detector="mtcnn"), "detector='mtcnn'"), (dict(min_score=1.5), "min_score=1.5")):
        with pytest.raises(ValueError, match=match):
            FaceSettings(**bad)
    with pytest.raises(ValueError, match="batch_size=0"):
        WindowSettings(batch_size=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ReadSettings().fps = 4
    assert ReadSettings(fps=0).fps is None  # 0 and None both mean every frame
    with pytest.raises(TypeError, match="unexpected keyword argument 'frame_rate'.*'folder_fps'"):
        clipdfer.predict(torch.zeros(8, 3, 32, 32), model=model, frame_rate=4)

    video = _tensor(_two_faces(24))
    p = _scripted(model, window=4, stride=2)
    r = p.run(video, ReadSettings(folder_fps=8.0))
    assert r.settings["windows"] == {"window": 4, "stride": 2, "batch_size": 8, "top_k": 3}
    assert r.settings["reading"] == {"fps": 8.0, "start": None, "end": None, "folder_fps": 8.0}
    assert r.settings["faces"]["detector"] == "scripted" and r.settings["model"]["weights"] == model.weights
    assert Prediction.from_dict(r.to_dict()).settings == r.settings  # a saved result says what made it
    with pytest.warns(FutureWarning, match=r"Predictor\(window=..., stride=...\).*WindowSettings"):
        old = Predictor(model, faces=FaceSettings(detector=ScriptedDetector()), window=4, stride=2)
    with pytest.warns(FutureWarning, match=r"Predictor.run\(folder_fps=...\)"):
        again = old.run(video, folder_fps=8.0)
    assert [w.probs for w in again.windows] == [w.probs for w in r.windows] and again.settings == r.settings


def test_settings_and_the_command_line_help_need_no_torch():
    """`clipdfer --help` and the settings objects load neither torch nor the models (the CLI starts at once)."""
    import subprocess
    import sys
    code = ("import sys\nfrom clipdfer.inference import FaceSettings, ReadSettings, WindowSettings\n"
            "from clipdfer.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


def test_settings_keywords_are_applied_or_refused_never_dropped(model):
    """A fresh user's review of issue 26: `Predictor(fps=4)` warned and then ignored the value; numpy numbers passed
    validation and then broke the JSON; a settings object of the wrong type failed deep inside."""
    import json

    import numpy as np
    for call, match in ((lambda: Predictor(model, fps=4), r"ReadSettings.fps belongs to Predictor.run"),
                        (lambda: _scripted(model).run(torch.zeros(8, 3, 32, 32), margin=1.5),
                         r"FaceSettings.margin belongs to Predictor \(faces="),
                        (lambda: Predictor(model, faces=ReadSettings()), r"faces=ReadSettings.*expected a .*FaceSet")):
        with pytest.raises(TypeError, match=match):
            call()
    settings = ReadSettings(fps=np.float32(4)), FaceSettings(detect_every=np.int64(2), cut_threshold=np.float32(.5))
    assert type(settings[0].fps) is float and type(settings[1].detect_every) is int
    json.dumps([dataclasses.asdict(s) for s in settings], allow_nan=False)
    with pytest.raises(ValueError, match="detector='haar' with detect=False"):
        FaceSettings(detect=False, detector="haar")


def test_detect_size_is_validated_reaches_the_detector_and_is_recorded(model, capsys):
    """Issue 28, item 2: the size frames are scaled to before faces are searched is a face setting (--detect-size)."""
    instance = "detect_size=1920 with a FaceDetector.*max_side"
    for bad, match in ((dict(detect_size=16), "detect_size=16: expected a whole number of pixels >= 32"),
                       (dict(detect_size=1920, detector=ScriptedDetector()), instance),
                       (dict(detect_size=1920, detect=False), "detect_size=1920 with detect=False")):
        with pytest.raises(ValueError, match=match):
            FaceSettings(**bad)
    assert FaceSettings().detect_size is None and FaceSettings(detect_size=np.int64(960)).detect_size == 960
    assert FaceSettings(detect_size=640) == FaceSettings()  # the detectors' own size, given: results are reused
    pytest.importorskip("cv2")
    from clipdfer.cli import main
    assert main(["predict", "--sample", "--model", "clipdfer_test", "--no-pretrained", "--window", "8",
                 "--detect-size", "1920", "--json"]) == 0
    faces = json.loads(capsys.readouterr().out)[0]["settings"]["faces"]
    assert faces["detect_size"] == 1920 and faces["detect_max_side"] == 1920 and faces["detector"] == "yunet"
    assert Predictor(model, faces=FaceSettings()).detector.max_side == 640  # the default: the detector's own
