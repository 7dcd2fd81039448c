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
import torch

import clipdfer
from clipdfer.cli import main
from clipdfer.inference import FaceSettings, Predictor, expand_sources, output_names, parse_shard, sample_clip_path
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
    assert main(["predict", *sources, "--json", "--out", str(tmp_path / "out"), *MODEL]) == 2
    captured = capsys.readouterr()
    out = json.loads(captured.out)  # the finished entries, in a complete JSON list
    assert [os.path.basename(e["source"]) for e in out] == ["a.mp4", "b.mp4"]
    assert "clipdfer: error: the run stops here" in captured.err
    assert sorted(os.listdir(tmp_path / "out")) == ["a.json", "b.json", "summary.csv"]
    with open(tmp_path / "out" / "summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok", "ok", "pending"]


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
    pytest.importorskip("cv2")  # real faces: YuNet, through OpenCV
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
    proc = subprocess.run(cmd[:cmd.index("--out")] + MODEL, capture_output=True, text=True, env=env, timeout=600)
    report = ".mp4: 24 frames (2.88 s), a face in 24; 1 face(s) followed; model clip_zeroshot_test"
    reports = [line for line in proc.stdout.splitlines() if line.endswith(report)]
    assert len(reports) == 3 and proc.stdout.count("face 1: frames 0-23") == 3, proc.stdout  # rank 0 prints them all


def test_sources_as_users_type_them(tmp_path, caplog):
    root = tmp_path / "corpus"
    for rel in ("s1/b.mp4", "s1/a10.mov", "s1/a2.mp4", "s2/deep/c.mkv", ".hidden/x.mp4", "s1/._a2.mp4",
                "s3/pi.h264", "s3/cam.ts", "s3/phone.3gp", "s3/old.MTS"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    frames = root / "s2" / "clip_frames"
    frames.mkdir()
    for name in ("00001.png", "00002.png", "._00001.png"):
        (frames / name).write_bytes(b"")
    (root / "s1" / "notes.txt").write_text("not a source")
    listed = expand_sources([str(root)])
    assert [os.path.relpath(p, root) for p in listed] == [  # natural order, hidden skipped, camera formats found
        "s1/a2.mp4", "s1/a10.mov", "s1/b.mp4", "s2/clip_frames", "s2/deep/c.mkv", "s3/cam.ts", "s3/old.MTS",
        "s3/phone.3gp", "s3/pi.h264"]
    assert expand_sources([str(frames)]) == [str(frames)]  # a frame folder is one source
    assert [os.path.basename(p) for p in expand_sources([str(root / "s1" / "*.mp4")])] == ["a2.mp4", "b.mp4"]
    assert len(expand_sources([str(root / "**" / "*.mkv")])) == 1
    paths = tmp_path / "paths.txt"
    paths.write_text("\ufeff# my corpus, saved by Notepad\ncorpus/s1/b.mp4  # the best one\n\n"
                     + str(root / "s1" / "a2.mp4") + "\ncorpus/s1/b.mp4\n", encoding="utf-8")
    assert [os.path.basename(p) for p in expand_sources([str(paths), str(root / "s1" / "a2.mp4")])] == [
        "b.mp4", "a2.mp4"]  # relative to the list, each once
    assert "given more than once" in caplog.text
    assert expand_sources(["rtsp://cam/1", 0]) == ["rtsp://cam/1", 0]
    take = root / "s1" / "take #2.mp4"  # a '#' in a file name is not a comment
    take.write_bytes(b"")
    (tmp_path / "takes.txt").write_text("corpus/s1/take #2.mp4\n")
    assert expand_sources([str(tmp_path / "takes.txt")]) == [str(take)]
    (tmp_path / "dir.txt").write_bytes("corpus/s1/b.mp4\r\n".encode("utf-16"))  # PowerShell's dir > dir.txt
    assert expand_sources([str(tmp_path / "dir.txt")]) == [str(root / "s1" / "b.mp4")]
    latin = os.fsdecode(b"caf\xe9.mp4")  # find > list.txt keeps a name that is not UTF-8 as its bytes
    (root / "s1" / latin).write_bytes(b"")
    (tmp_path / "find.txt").write_bytes(b"corpus/s1/caf\xe9.mp4\n")
    assert expand_sources([str(tmp_path / "find.txt")]) == [str(root / "s1" / latin)]
    covered = tmp_path / "covered"  # a cover picture beside folders of videos: read, and said, not dropped
    (covered / "interviews").mkdir(parents=True)
    (covered / "cover.png").write_bytes(b"")
    (covered / "interviews" / "i1.mp4").write_bytes(b"")
    assert expand_sources([str(covered)]) == [str(covered), str(covered / "interviews" / "i1.mp4")]
    assert "covered: its 1 image(s) are read as one clip (a frame folder) and its 1 subfolder(s)" in caplog.text
    with pytest.raises(ValueError, match="matches no file"):
        expand_sources([str(root / "*.avi")])
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no videos or frame folders"):
        expand_sources([str(root / "empty")])
    names = output_names([str(root / "s1" / "a2.mp4"), str(root / "s1" / "b.mp4"), str(root / "s2" / "b.mp4"),
                          str(root / "s1" / "x.mp4"), str(root / "s1" / "x.mov"), "rtsp://cam/1", "v/面试.mp4",
                          "v/Привет мир.mov"])
    assert names == ["a2", "s1__b", "s2__b", "x_mp4", "x_mov", "cam_1", "面试", "Привет_мир"]


def _frames(folder, n, x=10):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(face_frame([(x + i, 10, x + 40 + i, 60)])).save(folder / f"{i + 1:05d}.png")
    return str(folder)


def test_a_frame_folder_that_holds_a_subfolder_is_read_whole(tmp_path, capsys, caplog, scripted_faces):
    clip = _frames(tmp_path / "clip", 29)  # 29 frames, and the face crops a tool wrote next to them
    crops = _frames(tmp_path / "clip" / "crops", 12, x=30)
    assert expand_sources([clip]) == [clip, crops]  # it was [crops]: the folder's own 29 frames dropped, exit 0
    assert "clip: its 29 image(s) are read as one clip (a frame folder) and its 1 subfolder(s) as further sources" in (
        caplog.text)
    assert main(["predict", clip, "--json", "--folder-fps", "8", *MODEL]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(e["source"], e["frames_used"]) for e in out] == [(clip, 29), (crops, 12)]
    corpus = tmp_path / "corpus"  # and so below a folder of videos
    _face_video(corpus / "a.mp4")
    _frames(corpus / "b", 5)
    _frames(corpus / "b" / "c", 3)
    assert [os.path.relpath(p, corpus) for p in expand_sources([str(corpus)])] == ["a.mp4", "b", "b/c"]


def test_images_beside_videos_are_named_when_left_out(tmp_path, caplog):
    folder = tmp_path / "downloads"  # videos with their thumbnails, as yt-dlp --write-thumbnail leaves them
    folder.mkdir()
    for name in ("talk.mp4", "talk.webp", "panel.mp4", "panel.jpg", "notes.txt"):
        (folder / name).write_bytes(b"")
    assert [os.path.basename(p) for p in expand_sources([str(folder)])] == ["panel.mp4", "talk.mp4"]
    assert ("downloads: 2 image(s) beside its videos are left out (panel.jpg, talk.webp): a folder that holds videos "
            "is read as a folder of videos; to read the images as a clip, move them into a folder of their own") in (
        caplog.text)


def test_symbolic_link_loops_are_walked_once(tmp_path, caplog):
    root = tmp_path / "videos"
    (root / "day1").mkdir(parents=True)
    _face_video(root / "day1" / "clip.mp4")
    os.symlink("..", root / "day1" / "again")  # a loop: videos/day1/again -> videos
    # it warned 40 times (ELOOP) and gave videos/day1/again/day1/again/.../clip.mp4 as well
    assert expand_sources([str(root)]) == [str(root / "day1" / "clip.mp4")]
    warnings = [r.getMessage() for r in caplog.records if "already read" in r.getMessage()]
    assert warnings == [f"1 folder(s) already read by another path (a symbolic link loop, or two paths to one folder) "
                        f"skipped ({root / 'day1' / 'again'} -> {root}): each folder is read once"]
    assert expand_sources([str(root / "**" / "*.mp4")]) == [str(root / "day1" / "clip.mp4")]
    os.symlink(".", root / "day1" / "self")  # two loops: it never ended (folders and ** globs alike)
    script = ("import sys; from clipdfer.inference import expand_sources; "
              "print(len(expand_sources([sys.argv[1]])), len(expand_sources([sys.argv[1] + '/**/*.mp4'])))")
    done = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0 and done.stdout.split() == ["1", "1"], done.stderr[-2000:]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_named_pipes_devices_and_sockets_say_what_they_are(tmp_path, caplog):
    import socket

    import clipdfer
    from clipdfer.inference import iter_source
    pipe = tmp_path / "clip.mp4"
    os.mkfifo(pipe)  # it was "'.../clip.mp4' does not exist"
    with pytest.raises(ValueError, match=r"clip.mp4' is a named pipe \(FIFO\), not a video file: .* save what comes "
                                         r"through the pipe first \(cat .*clip.mp4 > clip.ts\)"):
        clipdfer.predict(str(pipe), model="clip_zeroshot_test", pretrained=False)
    with pytest.raises(ValueError, match=r"'/dev/null' is a character device, not a video file: for a camera, read it "
                                         r"live with --camera /dev/null"):
        next(iter_source("/dev/null"))
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "cam.sock"))
        with pytest.raises(ValueError, match=r"cam.sock' is a socket, not a video file: give the stream it serves"):
            next(iter_source(str(tmp_path / "cam.sock")))
    finally:
        server.close()
    frames = tmp_path / "frames"  # a pipe among frames: skipped and named, not waited on
    _frames(frames, 3)
    os.mkfifo(frames / "00004.png")
    notes = []
    assert len(list(iter_source(str(frames), fps=None, notes=notes))) == 3
    assert notes == ["frames: 1 frame(s) could not be read and were skipped (00004.png)"]
    assert [os.path.basename(p) for p in expand_sources([str(tmp_path)])] == ["frames"]  # the pipe clip.mp4: named
    assert "left out, not files: " in caplog.text and repr(str(pipe)) + " is a named pipe (FIFO)" in caplog.text


def test_single_source_errors_name_the_problem(tmp_path):
    import clipdfer
    with pytest.raises(FileNotFoundError, match="does not exist"):
        clipdfer.predict(str(tmp_path / "missing.mp4"), model="clipdfer_test", pretrained=False)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        clipdfer.predict(str(tmp_path / "empty.mp4"), model="clipdfer_test", pretrained=False)
    assert main(["predict", sample_clip_path(), sample_clip_path() + "x", "--plot", str(tmp_path / "p.png"),
                 *MODEL]) == 2


def test_resume_follows_the_settings_and_the_source_not_its_spelling(tmp_path, capsys, runs, scripted_faces,
                                                                     monkeypatch):
    corpus = tmp_path / "corpus"
    _face_video(corpus / "a" / "clip.mp4")
    out = str(tmp_path / "out")
    assert main(["predict", str(corpus), "--out", out, *MODEL]) == 0 and runs == ["clip.mp4"]
    runs.clear()
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "./corpus", "--out", out, *MODEL]) == 0 and runs == []  # the same file, spelled otherwise
    capsys.readouterr()
    assert main(["predict", "corpus", "--out", out, "--fps", "4", "--json", *MODEL]) == 0  # other settings: run again
    assert runs == ["clip.mp4"] and json.loads(capsys.readouterr().out)[0]["frames_used"] == 8
    runs.clear()
    _face_video(corpus / "b" / "clip.mp4")  # a second clip.mp4: the names now collide
    assert main(["predict", "corpus", "--out", out, "--fps", "4", *MODEL]) == 0
    assert runs == ["clip.mp4"] and sorted(os.listdir(out)) == ["b__clip.json", "clip.json", "summary.csv"]
    with open(os.path.join(out, "summary.csv")) as f:  # the first result stays where it is: no orphan, no rerun
        assert [(r["status"], r["result"]) for r in csv.DictReader(f)] == [("ok", "clip.json"), ("ok", "b__clip.json")]
    runs.clear()
    assert main(["predict", "corpus", "--out", out, "--fps", "4", "--min-face-score", "0.5", *MODEL]) == 0
    assert runs == ["clip.mp4", "clip.mp4"]  # the detector's settings are settings too
    runs.clear()
    _face_video(corpus / "b" / "clip.mp4", n=24)  # the same path, another video
    capsys.readouterr()
    assert main(["predict", "corpus", "--out", out, "--fps", "4", "--min-face-score", "0.5", "--json", *MODEL]) == 0
    assert runs == ["clip.mp4"] and json.loads(capsys.readouterr().out)[1]["frames_used"] == 12


@pytest.mark.parametrize("bad", [["--fps", "-1"], ["--fps", "nan"], ["--start", "12", "--end", "10"],
                                 ["--window", "0"], ["--stride", "-2"], ["--folder-fps", "0"], ["--shard", "3/2"],
                                 ["--min-face-score", "2"]])
def test_bad_arguments_stop_the_run_before_any_source(tmp_path, capsys, runs, bad):
    face = _face_video(tmp_path / "a.mp4")
    assert main(["predict", face, "--out", str(tmp_path / "out"), *MODEL, *bad]) == 2
    assert runs == [] and not (tmp_path / "out" / "a.json").exists()
    assert bad[-1].lstrip("-") in capsys.readouterr().err or "shard" in bad[0]


def test_output_paths_are_checked_before_the_run(tmp_path, capsys, runs, scripted_faces):
    face = _face_video(tmp_path / "a.mp4")
    for args, message in ([["--annotate", face], "is the source itself"],
                          [["--annotate", str(tmp_path / "missing" / "x.mp4")], "does not exist"],
                          [["--annotate", str(tmp_path / "x.txt")], "expected a file ending in .mp4"],
                          [["--out", face], "is a file: give a folder"],
                          [["--plot", str(tmp_path / "plot.txt")], "expected a file ending in"]):
        assert main(["predict", face, *MODEL, *args]) == 2, args
        assert message in capsys.readouterr().err and runs == []
    (tmp_path / "out" / "a.json").mkdir(parents=True)  # a result that cannot be written (as on a full disk)
    assert main(["predict", face, "--out", str(tmp_path / "out"), *MODEL]) == 2
    assert "a.json" in capsys.readouterr().err and not [p for p in os.listdir(tmp_path / "out") if ".tmp" in p]
    out, drawn = str(tmp_path / "out2"), str(tmp_path / "drawn.mp4")
    assert main(["predict", face, "--out", out, *MODEL]) == 0
    runs.clear()
    assert main(["predict", face, "--out", out, "--annotate", drawn, *MODEL]) == 0  # drawing needs the frames: run
    assert runs == ["a.mp4"] and os.path.isfile(drawn) and f"wrote {drawn}" in capsys.readouterr().out


@pytest.mark.parametrize("signum,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stopped_run_keeps_its_results_valid_and_resumes(tmp_path, capsys, monkeypatch, scripted_faces, signum,
                                                           code, request):
    import signal
    import threading
    import time
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # pytest started in the background by a non-interactive shell inherits SIGINT ignored; a terminal delivers it
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request.addfinalizer(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    sources = [_face_video(tmp_path / f"{name}.mp4") for name in "abc"]
    out = tmp_path / "out"
    real = Predictor.run

    def run(self, source, *args, **kwargs):
        if source.endswith("b.mp4"):
            threading.Timer(0.2, os.kill, (os.getpid(), getattr(signal, signum))).start()
            time.sleep(30)  # a long video: Slurm's time limit (SIGTERM) or Ctrl-C (SIGINT) comes first
        return real(self, source, *args, **kwargs)

    monkeypatch.setattr(Predictor, "run", run)
    before = signal.getsignal(signal.SIGTERM)
    start = time.monotonic()
    assert main(["predict", *sources, "--json", "--out", str(out), *MODEL]) == code
    assert time.monotonic() - start < 20 and signal.getsignal(signal.SIGTERM) == before
    captured = capsys.readouterr()
    assert [os.path.basename(e["source"]) for e in json.loads(captured.out)] == ["a.mp4"]  # valid JSON, a's result
    assert f"stopped ({signum}) after 1 of 3" in captured.err and "Traceback" not in captured.err
    with open(out / "summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok", "pending", "pending"]
    monkeypatch.setattr(Predictor, "run", real)
    assert main(["predict", *sources, "--json", "--out", str(out), *MODEL]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_names_and_environments_users_have(tmp_path, capsys, monkeypatch, scripted_faces):
    import sys
    latin = tmp_path / "latin"
    latin.mkdir()
    name = os.fsdecode(b"caf\xe9.mp4")  # a file name that is not UTF-8 (Latin-1, from an old camera)
    shutil.copy(_face_video(tmp_path / "a.mp4"), latin / name)
    assert main(["predict", str(latin), "--out", str(tmp_path / "out"), *MODEL]) == 0
    summary = (tmp_path / "out" / "summary.csv").read_text(encoding="utf-8")
    assert "caf\\udce9.mp4" in summary and ",ok," in summary
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV missing: one clear line, not a traceback per source
    assert main(["predict", str(tmp_path / "a.mp4"), *MODEL]) == 2
    assert "pip install 'clipdfer[predict]'" in capsys.readouterr().err  # the extra of the command


def test_csv_has_its_header_when_every_source_fails(tmp_path, capsys, scripted_faces):
    no_face = write_video(tmp_path / "no_face.mp4", [face_frame([]) for _ in range(8)])
    assert main(["predict", no_face, "--csv", *MODEL]) == 1
    assert capsys.readouterr().out.splitlines()[0].startswith("source,face_id,start_frame")


def test_shards_do_not_depend_on_how_many_processes_run_them():
    from clipdfer.inference.batch import share_indices
    for n in (1, 2, 3):
        for i in range(n):
            shard = share_indices(11, (i, n))
            for world in (1, 2, 4):  # the same shard, run by 1, 2 or 4 processes: the same sources
                parts = [share_indices(11, (i, n), rank, world) for rank in range(world)]
                assert sorted(sum(parts, [])) == shard
        assert sorted(sum((share_indices(11, (i, n)) for i in range(n)), [])) == list(range(11))


def test_tensors_are_always_run(tmp_path):
    import torch

    from clipdfer.inference import BatchRun
    predictor = Predictor("clip_zeroshot_test", pretrained=False, faces=FaceSettings(detect=False))
    videos = [torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.full((8, 3, 32, 32), 200, dtype=torch.uint8)]
    first = [item.result for item in BatchRun(predictor, videos, str(tmp_path / "out"))]
    again = list(BatchRun(predictor, videos[::-1], str(tmp_path / "out")))
    assert not any(item.reused for item in again) and len(os.listdir(tmp_path / "out")) == 2
    assert again[0].result.windows[0].probs == first[1].windows[0].probs
    run = BatchRun(predictor, videos + [torch.zeros(1, 3, 8)], str(tmp_path / "out2"))
    list(run)
    with open(run.write_summary()) as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok", "ok", "failed"]


@pytest.mark.skipif(sys.platform == "win32", reason="signals and torchrun's gloo rendezvous")
def test_torchrun_stopped_by_sigterm_keeps_its_results(tmp_path):
    pytest.importorskip("cv2")
    import signal
    import time

    from clipdfer.data.io import read_video
    face = list(read_video(sample_clip_path()).permute(0, 2, 3, 1).numpy())
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(6):  # 30 s each: far longer than the wait for the first result
        write_video(videos / f"v{i}.mp4", face * 10, rate=8, pix_fmt="yuv420p", options={"preset": "ultrafast"})
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "clipdfer",
           "predict", str(videos), "--out", str(out), "--json", *MODEL]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not (out.exists() and any(p.suffix == ".json" for p in out.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # Slurm's time limit
    stdout, stderr = proc.communicate(timeout=300)
    results = json.loads(stdout)  # rank 0 closed its list: every result written so far, in order
    assert results and all(len(e["faces"]) == 1 for e in results), stderr
    with open(out / "summary.csv") as f:
        statuses = [r["status"] for r in csv.DictReader(f)]
    assert statuses.count("ok") == len(results) and "pending" in statuses, (statuses, stderr)
    assert "stopped (SIGTERM)" in stderr


def test_the_launchers_environment_is_read_in_one_place(monkeypatch):
    """RANK / WORLD_SIZE / LOCAL_RANK are read by clipdfer.distributed.launch_env only; bad values are one clear
    error, not a wrong share."""
    from clipdfer.distributed import launch_env
    from clipdfer.inference import process_share
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert launch_env() == (1, 3, 0) and process_share() == ((0, 1), (1, 3))
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="RANK=3, WORLD_SIZE=3: expected 0 <= RANK < WORLD_SIZE"):
        process_share()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="must be whole numbers"):
        launch_env()


def test_results_are_reused_only_for_the_same_weights_and_the_summary_lists_every_result(
        tmp_path, capsys, caplog, runs, scripted_faces):
    """Issue 27, item 1: a result records the sha256 of the weights that made it; other weights (another checkpoint,
    other weights re-saved into the same local-dir) are run again, never served from an earlier run; summary.csv
    lists every result in the folder, also those of sources this run was not given."""
    video = _face_video(tmp_path / "v.mp4")
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        clipdfer.create_model("clipdfer_test").save_pretrained(str(tmp_path / name), finetuned=True)
    out = str(tmp_path / "out")

    def predict(*args):
        assert main(["predict", video, "--out", out, "--json", *args]) == 0
        captured = capsys.readouterr()
        return json.loads(captured.out)[0], captured.err

    first, _ = predict("--model", "clipdfer_test", "--checkpoint", str(tmp_path / "a" / "model.safetensors"))
    second, err = predict("--model", "clipdfer_test", "--checkpoint", str(tmp_path / "b" / "model.safetensors"))
    assert runs == ["v.mp4", "v.mp4"] and "from an earlier run" not in err
    assert "other settings (model.weights_sha256" in caplog.text
    assert first["settings"]["model"]["weights_sha256"] != second["settings"]["model"]["weights_sha256"]
    assert first["windows"][0]["probs"] != second["windows"][0]["probs"]
    again, err = predict("--model", "clipdfer_test", "--checkpoint", str(tmp_path / "b" / "model.safetensors"))
    assert runs == ["v.mp4", "v.mp4"] and again == second  # the same weights: reused
    torch.manual_seed(2)  # other weights saved into the same folder: run again
    clipdfer.create_model("clipdfer_test").save_pretrained(str(tmp_path / "b"), finetuned=True)
    predict("--model", "local-dir:" + str(tmp_path / "b"))
    assert runs == ["v.mp4"] * 3

    other = _face_video(tmp_path / "w.mp4", x=30)
    assert main(["predict", other, "--out", out, *MODEL]) == 0  # a run on another source only
    with open(os.path.join(out, "summary.csv")) as f:
        rows = [(os.path.basename(r["source"]), r["status"], r["settings"]) for r in csv.DictReader(f)]
    assert rows == [("w.mp4", "ok", "same"), ("v.mp4", "ok", "other")]


def test_nan_weights_fail_each_source_with_the_reason_and_every_json_is_strict(tmp_path, capsys, caplog,
                                                                               scripted_faces):
    """Issue 27, item 3: weights with NaN gave status ok, a bare NaN in the JSON and the first class as top; in text
    mode the run crashed. Now non-finite weights are named at load and each source fails saying why."""
    video = _face_video(tmp_path / "v.mp4")
    model = clipdfer.create_model("clipdfer_test")
    with torch.no_grad():
        model.msta.fc_v.weight[0, 0] = float("nan")
    model.save_pretrained(str(tmp_path / "nan"), finetuned=True)

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))

    model_args = ["--model", "local-dir:" + str(tmp_path / "nan")]
    for mode in ([], ["--json"], ["--csv"], ["--out", str(tmp_path / "out")]):
        caplog.clear()
        assert main(["predict", video, *mode, *model_args]) == 1, mode
        captured = capsys.readouterr()
        assert "non-finite scores" in captured.err and "msta.fc_v.weight" in captured.err, mode
        assert "msta.fc_v.weight" in caplog.text and "NaN or infinity" in caplog.text  # named at load
        if mode == ["--json"]:
            assert "error" in strict(captured.out)[0]
    saved = strict((tmp_path / "out" / "v.json").read_text())
    assert saved["error_type"] == "ValueError" and "load other weights" in saved["error"]


def test_a_bug_inside_one_source_shows_its_traceback(tmp_path, capsys, caplog, scripted_faces, monkeypatch):
    """A TypeError of ours inside one source became a one-line failed source, even with -v: the others still go on,
    but its traceback is logged whatever the verbosity."""
    from clipdfer.inference.scoring import WindowScorer

    def broken(self, windows):
        raise TypeError("simulated bug")

    monkeypatch.setattr(WindowScorer, "__call__", broken)
    video = _face_video(tmp_path / "v.mp4")
    assert main(["predict", video, *MODEL]) == 1
    assert "simulated bug" in capsys.readouterr().err
    bug = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert bug and bug[0].exc_info and bug[0].exc_info[0] is TypeError


def test_resume_sees_model_arguments_frames_rewritten_in_place_and_data_writes(tmp_path, capsys, runs,
                                                                               scripted_faces):
    """A second review of issue 27: a temperature edited in a saved config.json, frames overwritten in place (the
    folder's mtime unchanged) and weights written through .data reused results made otherwise."""
    import json as json_module

    from clipdfer.inference import BatchRun, Predictor, ReadSettings
    video = _face_video(tmp_path / "v.mp4")
    clipdfer.create_model("clipdfer_test").save_pretrained(str(tmp_path / "m"), finetuned=True)
    out = str(tmp_path / "out")
    args = ["predict", video, "--out", out, "--model", "local-dir:" + str(tmp_path / "m")]
    assert main(args) == 0
    config = json_module.loads((tmp_path / "m" / "config.json").read_text())
    config["model_args"]["temperature"] = 0.5  # no tensor changes: only the arguments say so
    (tmp_path / "m" / "config.json").write_text(json_module.dumps(config))
    assert main(args) == 0 and runs == ["v.mp4", "v.mp4"]

    folder = tmp_path / "frames"
    folder.mkdir()
    frames = [face_frame([(10 + i, 10, 50 + i, 60)]) for i in range(12)]
    from PIL import Image
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    predictor = Predictor("clipdfer_test", pretrained=False)
    reading = ReadSettings(folder_fps=8.0)
    assert not list(BatchRun(predictor, [str(folder)], out, reading=reading))[0].reused
    stat = os.stat(folder)
    for i, f in enumerate(frames):  # the same names, other pixels; the folder's mtime put back
        Image.fromarray(255 - f).save(folder / f"{i:03d}.png")
    os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not list(BatchRun(predictor, [str(folder)], out, reading=reading))[0].reused
    assert list(BatchRun(predictor, [str(folder)], out, reading=reading))[0].reused
    with torch.no_grad():
        for p in predictor.net.parameters():
            p.data.mul_(1.5)  # bypasses the version counters
    assert not list(BatchRun(predictor, [str(folder)], out, reading=reading))[0].reused
