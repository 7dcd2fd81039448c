"""The web demo (clipdfer.app): upload checks, each upload's outputs and the session folders without Gradio; with
Gradio, the page's HTTP API through gradio_client (the sample clip, bad uploads, two clients at once, nothing fetched
from the internet); the command line."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from clipdfer.app.analysis import (Predictors, SessionFiles, UploadError, UploadLimits, analyse_video, check_upload,
                                   check_uploads, run_lock, summary_markdown, upload_names, window_table)
from clipdfer.cli import main
from clipdfer.inference import Predictor, sample_clip_path
from videos import write_video

MODEL = "clipdfer_test"


@pytest.fixture(scope="module")
def predictor():
    return Predictor(MODEL, pretrained=False)


def _copy(tmp_path, name: str, source: str = None) -> str:
    path = str(tmp_path / name)
    shutil.copy(source or sample_clip_path(), path)
    return path


def _no_face_video(tmp_path) -> str:
    path = str(tmp_path / "grey.mp4")
    write_video(path, [np.full((64, 64, 3), 128, np.uint8)] * 16)
    return path


def _sample_frames():
    import av
    with av.open(sample_clip_path()) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _lying_video(path, frames, rate=8, says: float = 1.0) -> str:
    """A Matroska file whose header says it lasts ``says`` seconds, whatever its frames hold (as an edited or
    damaged file can): its segment's Duration element (ID 0x4489, an 8-byte float in ms) is rewritten."""
    write_video(path, frames, rate=rate)
    data = open(path, "rb").read()
    at = data.index(b"\x44\x89\x88") + 3
    open(path, "wb").write(data[:at] + struct.pack(">d", says * 1000) + data[at + 8:])
    return str(path)


# --- without Gradio ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,expected", [("max_mb", 0, "max_mb=0: expected a finite number > 0"),
                                                  ("max_seconds", float("nan"), "max_seconds=nan"),
                                                  ("max_videos", 0, "max_videos=0: expected a whole number >= 1"),
                                                  ("types", ("mp4",), "expected file endings such as")])
def test_limits_refuse_bad_values(field, value, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        UploadLimits(**{field: value})


def test_check_upload_gives_the_duration_and_names_what_is_wrong(tmp_path):
    limits = UploadLimits()
    assert check_upload(sample_clip_path(), limits) == pytest.approx(3.0, abs=0.01)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UploadError, match=r"notes.txt: a \.txt file, expected a video \(\.mp4, .*ffmpeg -i notes.txt"):
        check_upload(str(text), limits)
    fake = tmp_path / "upload-5d1e.mp4"
    fake.write_bytes(b"this is no video" * 100)
    with pytest.raises(UploadError, match="my fake.mp4: not a video that can be decoded") as info:
        check_upload(str(fake), limits, name="my fake.mp4")
    assert "ffmpeg -i 'my fake.mp4' clip.mp4" in str(info.value)  # a command that runs as shown
    assert str(tmp_path) not in str(info.value) and "upload-5d1e" not in str(info.value)  # PyAV's text named it
    with pytest.raises(UploadError, match=r"my clip.mp4: 0.1 MB, over this demo's limit of 0.01 MB: .*"
                                          r"ffmpeg -i 'my clip.mp4' -t 60 "):
        check_upload(sample_clip_path(), UploadLimits(max_mb=0.01), name="my clip.mp4")
    with pytest.raises(UploadError, match=r"sample_clip.mp4: 3.0 s long, over this demo's limit of 1 s: .* -t 1 "):
        check_upload(sample_clip_path(), UploadLimits(max_seconds=1))


def test_check_upload_refuses_a_file_without_video(tmp_path):
    import av
    path = str(tmp_path / "sound.mkv")
    with av.open(path, "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(UploadError, match="sound.mkv: no video stream in it"):
        check_upload(path, UploadLimits())


def test_check_uploads_reports_every_refusal_at_once(tmp_path):
    limits = UploadLimits(max_seconds=1, max_videos=2)
    with pytest.raises(UploadError, match="no video: upload one or more videos"):
        check_uploads([], limits)
    with pytest.raises(UploadError, match="3 videos: this demo takes at most 2 at a time"):
        check_uploads([(sample_clip_path(), "a.mp4")] * 3, limits)
    with pytest.raises(UploadError) as info:
        check_uploads([(sample_clip_path(), "a.mp4"), (sample_clip_path(), "b.gif")], limits)
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith("a.mp4: 3.0 s long") and lines[1].startswith("b.gif: a .gif file")
    assert check_uploads([(sample_clip_path(), "a.mp4")], UploadLimits()) == [pytest.approx(3.0, abs=0.01)]


def test_analyse_video_writes_the_outputs_under_the_uploads_name(predictor, tmp_path):
    path = _copy(tmp_path, "upload-3f9a.mp4")
    r = analyse_video(predictor, path, "my clip.mp4", str(tmp_path / "out"), 3.0, UploadLimits())
    assert r.error is None and r.notes == []
    assert r.files == [r.json, r.csv, r.video] and all(os.path.getsize(f) > 0 for f in r.files + [r.plot])
    assert [os.path.basename(f) for f in r.files + [r.plot]] == [
        "my clip.json", "my clip.csv", "my clip-annotated.mp4", "my clip-timeline.png"]
    saved = json.load(open(r.json))
    assert saved["source"] == "my clip.mp4" and "upload-3f9a" not in open(r.json).read()  # no server path
    assert saved == r.prediction.to_dict() and saved["notice"].startswith("NOT MEANINGFUL")
    rows = open(r.csv).read().splitlines()
    windows = [w for face in r.prediction.faces for w in face.windows]
    assert rows[0].startswith("source,face_id,") and len(rows) == 1 + len(windows) == 6
    headers, table = window_table(r.prediction)
    assert headers[:6] == ["face", "start (s)", "end (s)", "frames", "top", "p"] and headers[6:] == saved["class_names"]
    assert [row[3] for row in table] == [f"{w.start_frame}-{w.end_frame}" for w in windows] == [
        "0-7", "4-11", "8-15", "12-19", "16-23"]
    assert all(row[4] == w.top[0] and abs(sum(row[6:]) - 1) < 0.01 for row, w in zip(table, windows))
    import av
    with av.open(r.video) as container:
        assert container.streams.video[0].codec_context.name == "h264"  # browsers play it
    text = summary_markdown(r)
    assert text.startswith("**my clip.mp4**: 24 frames") and "- face 1: 0.0-2.9 s, 5 window(s); overall " in text


def test_analyse_video_reports_the_source_error_under_its_name(predictor, tmp_path):
    r = analyse_video(predictor, _no_face_video(tmp_path), "holiday.mp4", str(tmp_path / "out"), 2.0, UploadLimits())
    assert r.prediction is None and r.files == [] and r.plot is None
    assert r.error.startswith("no face found in holiday.mp4 (16 frames read") and str(tmp_path) not in r.error
    assert not os.listdir(tmp_path / "out")  # no half-written video left
    assert summary_markdown(r) == f"**holiday.mp4**: {r.error}"


def test_a_video_of_unknown_length_is_read_up_to_the_limit(predictor, tmp_path):
    r = analyse_video(predictor, sample_clip_path(), "camera.webm", str(tmp_path), None, UploadLimits(max_seconds=1.5))
    assert r.notes == ["camera.webm does not say how long it is: at most its first 1.5 s are read"]
    assert r.prediction.settings["reading"]["end"] == 1.5 and r.prediction.seconds <= 1.5
    assert "- note: camera.webm does not say how long" in summary_markdown(r)


def test_a_video_is_measured_by_its_frames_and_never_read_past_the_limit(predictor, tmp_path):
    frames = _sample_frames()
    liar = _lying_video(tmp_path / "edited.mkv", frames + frames[:16], says=1.0)  # 5 s of frames; it says 1 s
    with pytest.raises(UploadError, match=r"edited.mkv: 5.0 s long \(its container says 1.0 s\), over this demo's "
                                          r"limit of 2 s: upload a shorter cut \(e.g. ffmpeg -i edited.mkv -t 2 "):
        check_upload(liar, UploadLimits(max_seconds=2))
    assert check_upload(liar, UploadLimits(max_seconds=6)) == pytest.approx(5.0, abs=0.01)
    # run on what the container says (a caller that trusted it): still cut at the limit, and the result says so
    r = analyse_video(predictor, liar, "edited.mkv", str(tmp_path / "out"), 1.0, UploadLimits(max_seconds=2))
    assert r.prediction.settings["reading"]["end"] == 2 and r.prediction.seconds <= 2
    assert r.notes == ["edited.mkv is longer than this demo's limit of 2 s (not 1.0 s as it says): only its first 2 s "
                       "were read; upload the rest as a cut of its own (e.g. ffmpeg -i edited.mkv -ss 2 rest.mp4)"]
    r = analyse_video(predictor, liar, "edited.mkv", str(tmp_path / "out2"), 5.0, UploadLimits(max_seconds=6))
    assert r.notes == [] and r.prediction.seconds > 4.5  # a video within the limit is read whole


def test_upload_names_keep_unicode_and_tell_duplicates_apart():
    assert upload_names(["видео.mp4", "ünïcödé clip 😀.mp4", "видео.mp4", "ВИДЕО.mp4", "видео.mp4"]) == [
        "видео.mp4", "ünïcödé clip 😀.mp4", "видео (2).mp4", "ВИДЕО (3).mp4", "видео (4).mp4"]
    assert upload_names(["../a/b.mp4", "c\\d.mp4", 'what?: "x" <y>|*.mp4', " .hidden.mp4 ", "?.mp4", "\x07"]) == [
        "b.mp4", "d.mp4", "what x y.mp4", "hidden.mp4", "video.mp4", "video"]
    long = upload_names(["é" * 200 + ".webm"])[0]
    assert long.endswith(".webm") and len(long.encode()) <= 150 and long.startswith("éé")


def test_a_predictor_shared_by_threads_gives_each_run_its_own_result(predictor):
    # two runs at once used to share the face detector's state (OpenCV's YuNet): faces and probabilities mixed
    def key(prediction):
        return [(f.id, [b.box for b in f.boxes], [w.probs for w in f.windows]) for f in prediction.faces]

    alone = key(predictor.run(sample_clip_path()))
    together = {}

    def run(i):
        together[i] = key(predictor.run(sample_clip_path()))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert together == {0: alone, 1: alone}


def test_runs_of_one_predictor_take_turns(tmp_path):
    class Slow:  # counts the runs at once
        active, most = 0, 0

        def run(self, *args, **kwargs):
            Slow.active += 1
            Slow.most = max(Slow.most, Slow.active)
            time.sleep(0.2)
            Slow.active -= 1
            raise ValueError("no frames")

    slow = Slow()
    threads = [threading.Thread(target=analyse_video, args=(slow, sample_clip_path(), f"{i}.mp4",
                                                            str(tmp_path / str(i)), 3.0, UploadLimits()))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert Slow.most == 1 and run_lock(slow) is run_lock(slow) is not run_lock(Slow())


def test_session_files_keep_the_latest_run_and_go_with_their_session(tmp_path):
    files = SessionFiles(str(tmp_path / "root"))
    first = files.new_run("session-a")
    open(os.path.join(first, "x.json"), "w").close()
    other = files.new_run("session-b")
    second = files.new_run("session-a")
    assert not os.path.exists(first) and os.path.isdir(second) and os.path.isdir(other)
    assert os.path.dirname(second) == files.folder("session-a") != files.folder("session-b")
    assert os.path.dirname(files.folder("../../etc")) == files.root  # an id is hashed, never a path
    files.remove("session-a")
    assert not os.path.exists(files.folder("session-a")) and os.path.isdir(other)
    with pytest.raises(ValueError, match="expected the id of a browser or API session"):
        files.new_run("")
    files.close()
    assert not os.path.exists(files.root)


def test_session_files_of_sessions_that_never_end_are_aged_out(tmp_path):
    files = SessionFiles(str(tmp_path / "root"), max_age=60, max_sessions=3)
    for name in ("a", "b", "c"):  # API clients: no page to close, so no end of session
        files.new_run(name)
    now = time.time()
    os.utime(files.folder("a"), (now - 120, now - 120))  # untouched for 2 minutes
    os.utime(files.folder("b"), (now - 30, now - 30))
    files.new_run("d")  # each run ages the others out
    assert not os.path.exists(files.folder("a")) and all(os.path.isdir(files.folder(n)) for n in "bcd")
    assert files.touch("b") and not files.touch("a")  # showing results keeps a session
    files.new_run("e")  # four would be kept: the least recently touched goes
    assert [os.path.basename(f) for f in files.sessions()] == [os.path.basename(files.folder(n)) for n in "dbe"]
    with pytest.raises(ValueError, match="max_age=0: expected a number of seconds > 0"):
        SessionFiles(str(tmp_path / "x"), max_age=0)
    with pytest.raises(ValueError, match="max_sessions=0: expected a whole number >= 1"):
        SessionFiles(str(tmp_path / "x"), max_sessions=0)
    files.close()


def test_predictors_build_once_and_keep_only_the_latest():
    made = []
    predictors = Predictors(lambda model, pretrained: made.append((model, pretrained)) or object())
    a = predictors.get("m", True)
    assert predictors.get("m", True) is a and made == [("m", True)]
    b = predictors.get("m", False)
    assert b is not a and list(predictors.loaded) == [("m", False)]
    assert predictors.get("m", True) is not a and len(made) == 3


def test_cli_demo_options_and_refusals(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith("usage: clipdfer demo ")
    for option in ("--model", "--no-pretrained", "--host", "--port", "--share", "--max-upload-mb", "--max-seconds",
                   "--max-videos"):
        assert option in out
    assert main(["demo", "--max-seconds", "0"]) == 2
    assert capsys.readouterr().err == "clipdfer: error: --max-seconds 0: expected a number of seconds > 0\n"
    assert main(["demo", "--max-upload-mb", "-1"]) == 2
    assert capsys.readouterr().err == "clipdfer: error: --max-upload-mb -1: expected a number of MB > 0\n"
    assert main(["demo", "--port", "70000", "--model", MODEL, "--no-pretrained"]) == 2
    assert capsys.readouterr().err == "clipdfer: error: --port 70000: expected a port number in 1-65535\n"


def test_cli_demo_names_a_port_in_use(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port), "--model", MODEL, "--no-pretrained"]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing said about serving: it does not
    assert err.startswith(f"clipdfer: error: --port {port}: cannot listen on 127.0.0.1:{port} (")
    assert err.endswith(f"choose another port (e.g. --port {port + 1}), or leave --port out for the first free one "
                        f"from 7860\n")


def test_help_imports_neither_gradio_nor_torch():
    code = ("import sys\nfrom clipdfer.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    main(['demo', '--help'])\nexcept SystemExit:\n    pass\n"
            "loaded = [m for m in ('gradio', 'torch') if m in sys.modules]\nassert not loaded, loaded\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "demo " in out.stdout and "--max-upload-mb" in out.stdout


# --- the page, through its HTTP API (needs Gradio: clipdfer[demo]) ------------------------------------------------


class _Outbound:
    """Records and refuses connections to any address but the loopback's, made in this process."""

    def __init__(self):
        self.attempts = []
        self._real = socket.socket.connect

    def __enter__(self):
        real, attempts = self._real, self.attempts

        def connect(sock, address):
            host = address[0] if isinstance(address, tuple) else address
            if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
                attempts.append(address)
                raise ConnectionRefusedError(f"test: no connection to {address} allowed")
            return real(sock, address)

        socket.socket.connect = connect
        return self

    def __exit__(self, *exc):
        socket.socket.connect = self._real


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo on the loopback with the tiny model and random weights (module-wide: it takes seconds to start)."""
    pytest.importorskip("gradio", reason="the page needs Gradio: pip install 'clipdfer[demo]'")
    pytest.importorskip("gradio_client", reason="the API tests need gradio_client: pip install 'clipdfer[test]'")
    from clipdfer.app import Demo
    with _Outbound() as outbound:
        demo = Demo(MODEL, pretrained=False, temp_dir=str(tmp_path_factory.mktemp("demo")),
                    limits=UploadLimits(max_mb=1, max_seconds=60, max_videos=2))
        url = demo.launch(block=False, quiet=True)
        demo.outbound, demo.url = outbound, url
        try:
            yield demo
        finally:
            demo.close()


def _client(served, tmp_path):
    from gradio_client import Client
    return Client(served.url, verbose=False, analytics_enabled=False, download_files=str(tmp_path))


def _analyse(client, *paths, **kwargs):
    from gradio_client import handle_file
    args = dict(files=[handle_file(p) for p in paths], camera=None, model=MODEL, random_weights=True)
    return client.predict(**{**args, **kwargs}, api_name="/analyse")


def test_api_runs_the_sample_clip_with_the_notice_table_and_downloads(served, tmp_path):
    client = _client(served, tmp_path)
    status, notice, choice, plot, video, table, downloads = client.predict(model=MODEL, random_weights=True,
                                                                           api_name="/sample")
    assert status.startswith("**sample_clip.mp4**: 24 frames") and "1 face(s) followed" in status
    assert notice["visible"] and notice["value"].startswith("**NOT MEANINGFUL: this model has random weights")
    assert choice["value"] == "sample_clip.mp4" and not choice["visible"]  # one video: nothing to choose
    from PIL import Image
    assert plot.endswith("sample_clip-timeline.png") and Image.open(plot).size[0] > 500
    assert video.endswith("sample_clip-annotated.mp4") and os.path.getsize(video) > 1000
    assert [os.path.basename(f) for f in downloads] == ["sample_clip.json", "sample_clip.csv",
                                                        "sample_clip-annotated.mp4"]
    saved = json.load(open(downloads[0]))
    assert saved["source"] == "sample_clip.mp4" and saved["notice"] == notice["value"].strip("*")
    table = table["value"]
    assert table["headers"][:6] == ["face", "start (s)", "end (s)", "frames", "top", "p"]
    assert [row[3] for row in table["data"]] == [f"{w['start_frame']}-{w['end_frame']}" for w in saved["windows"]]
    assert served.outbound.attempts == []  # nothing left the machine: no telemetry, no version check


def test_api_refuses_bad_uploads_with_their_reasons(served, tmp_path):
    from gradio_client.exceptions import AppError
    client = _client(served, tmp_path)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"no video here" * 50)
    with pytest.raises(AppError, match="fake.mp4: not a video that can be decoded"):
        _analyse(client, str(fake))
    long = str(tmp_path / "long.mp4")
    write_video(long, [np.full((32, 32, 3), 90, np.uint8)] * 8, rate=Fraction(1, 10))  # 80 s: a frame every 10 s
    with pytest.raises(AppError, match=r"long.mp4: 80.0 s long, over this demo's limit of 60 s"):
        _analyse(client, long)
    with pytest.raises(AppError, match="3 videos: this demo takes at most 2 at a time"):
        _analyse(client, sample_clip_path(), sample_clip_path(), sample_clip_path())
    with pytest.raises(AppError, match="no face found in grey.mp4"):
        _analyse(client, _no_face_video(tmp_path))
    with pytest.raises(AppError, match="local-dir:/etc is not in the list of choices"):  # no path from a page
        _analyse(client, sample_clip_path(), model="local-dir:/etc")
    with pytest.raises(AppError, match="nothing to show yet"):
        client.predict(choice="x.mp4", api_name="/show")


def test_api_refuses_a_large_upload_naming_the_limit_in_mb_and_the_fix(served, tmp_path):
    from gradio_client.exceptions import AppError
    client = _client(served, tmp_path)
    big = tmp_path / "big clip.mp4"
    big.write_bytes(b"\0" * 1_500_000)  # over the 1 MB limit: the demo's own check answers
    with pytest.raises(AppError, match=r"^big clip.mp4: 1.5 MB, over this demo's limit of 1 MB: upload a shorter or "
                                       r"smaller cut \(e.g. ffmpeg -i 'big clip.mp4' -t 60 -vf scale=640:-2 "):
        _analyse(client, str(big))
    huge = tmp_path / "huge.mp4"
    huge.write_bytes(b"\0" * 2_000_001)  # over twice the limit: Gradio stops it before it is sent
    with pytest.raises(ValueError, match="exceeds the maximum file size of 2000000 bytes"):
        _analyse(client, str(huge))


def test_api_messages_name_the_upload_never_the_servers_path(served, tmp_path):
    from gradio_client.exceptions import AppError
    client = _client(served, tmp_path)
    junk = tmp_path / "not a video.mp4"
    junk.write_bytes(b"junk" * 100)
    with pytest.raises(AppError) as info:
        _analyse(client, str(junk))
    text = str(info.value)
    assert text.startswith("not a video.mp4: not a video that can be decoded (InvalidDataError: ")
    assert "'not a video.mp4'); check that the file plays" in text  # PyAV's words, its path replaced
    assert "ffmpeg -i 'not a video.mp4' clip.mp4" in text
    assert served.files.root not in text and "/gradio/" not in text and "/tmp" not in text


def test_api_duplicate_names_get_their_own_results(served, tmp_path):
    frames = _sample_frames()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _copy(tmp_path / "a", "клип 1.mp4")
    second = write_video(tmp_path / "b" / "клип 1.mp4", frames[:16])  # another video of the same name
    client = _client(served, tmp_path / "dl")
    status, notice, choice, plot, video, table, downloads = _analyse(client, first, second)
    assert [c[0] for c in choice["choices"]] == ["клип 1.mp4", "клип 1 (2).mp4"]
    assert [os.path.basename(f) for f in downloads] == ["клип 1.json", "клип 1.csv", "клип 1-annotated.mp4"]
    assert len(table["value"]["data"]) == 5  # the first: 24 frames, 5 windows
    shown = client.predict(choice="клип 1 (2).mp4", api_name="/show")
    assert [os.path.basename(f) for f in shown[6]] == ["клип 1 (2).json", "клип 1 (2).csv",
                                                       "клип 1 (2)-annotated.mp4"]
    assert os.path.basename(shown[3]) == "клип 1 (2)-timeline.png" and len(shown[5]["value"]["data"]) == 3
    assert json.load(open(shown[6][0]))["source"] == "клип 1 (2).mp4"


def test_api_measures_a_video_that_says_it_is_short(served, tmp_path):
    from gradio_client.exceptions import AppError
    liar = _lying_video(tmp_path / "edited.mkv", [np.full((32, 32, 3), 90, np.uint8)] * 8, rate=Fraction(1, 10))
    with pytest.raises(AppError, match=r"edited.mkv: 80.0 s long \(its container says 1.0 s\), over this demo's limit "
                                       r"of 60 s"):
        _analyse(_client(served, tmp_path), liar)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Gradio converts camera recordings with ffmpeg")
def test_api_a_camera_recording_is_analysed_as_the_same_file_would_be(served, tmp_path):
    # not mirrored: the face on the left of the frame stays on the left (Gradio flips webcam videos unless asked not to)
    from gradio_client import handle_file
    frames = [np.concatenate([f, np.full((f.shape[0], 96, 3), 128, np.uint8)], 1) for f in _sample_frames()]
    path = write_video(tmp_path / "left.mp4", frames)
    client = _client(served, tmp_path)
    as_file = json.load(open(_analyse(client, path)[6][0]))
    as_camera = _analyse(client, files=[], camera=handle_file(path))
    assert as_camera[2]["value"] == "camera.mp4"
    as_camera = json.load(open(as_camera[6][0]))
    box, seen = as_file["faces"][0]["boxes"][0]["box"], as_camera["faces"][0]["boxes"][0]["box"]
    assert box[2] < 150 and np.allclose(seen, box, atol=6), (box, seen)


def test_api_results_whose_files_went_are_refused_with_a_reason(served, tmp_path):
    from gradio_client.exceptions import AppError
    client = _client(served, tmp_path)
    _analyse(client, _copy(tmp_path, "gone.mp4"))
    served.files.remove(client.session_hash)  # as the session's files go when aged out
    with pytest.raises(AppError, match="^the results of gone.mp4 are no longer on the server .* run it again$"):
        client.predict(choice="gone.mp4", api_name="/show")


def test_every_event_that_runs_the_model_shares_one_slot(served):
    fns = {fn.api_name: fn for fn in served.blocks.fns.values()}
    assert fns["analyse"].concurrency_id == fns["sample"].concurrency_id != fns["show"].concurrency_id
    assert fns["analyse"].concurrency_limit == fns["sample"].concurrency_limit == 1


def test_gradios_copies_of_uploads_are_in_the_demos_folder(served, tmp_path):
    _analyse(_client(served, tmp_path), _copy(tmp_path, "mine.mp4"))
    assert os.environ["GRADIO_TEMP_DIR"] == served.gradio_dir == os.path.join(served.files.root, "gradio")
    copies = [os.path.join(d, f) for d, _, names in os.walk(served.gradio_dir) for f in names]
    assert any(os.path.basename(c) == "mine.mp4" for c in copies)  # the upload: removed with the demo's folder


def test_launch_names_a_port_in_use(served):
    from clipdfer.app import Demo
    port = int(served.url.rstrip("/").rsplit(":", 1)[1])
    demo = Demo(MODEL, pretrained=False, load=False)
    with pytest.raises(OSError, match=f"^port {port}: cannot listen on 127.0.0.1:{port}: another server"):
        demo.launch(port=port, block=False, quiet=True)
    assert not os.path.exists(demo.files.root)  # nothing left behind
    assert os.environ["GRADIO_TEMP_DIR"] == served.gradio_dir  # Gradio's cache: the running demo's again


def test_api_reports_a_failed_upload_beside_the_others(served, tmp_path):
    client = _client(served, tmp_path)
    status, notice, choice, plot, video, table, downloads = _analyse(client, _no_face_video(tmp_path),
                                                                     _copy(tmp_path, "smile.mp4"))
    first, second = status.split("\n\n")
    assert first.startswith("**grey.mp4**: no face found in grey.mp4") and second.startswith("**smile.mp4**: 24 frames")
    assert choice["value"] == "smile.mp4" and plot.endswith("smile-timeline.png")


def test_two_clients_at_once_see_only_their_own_results(served, tmp_path):
    clients = {name: _client(served, tmp_path / name) for name in ("alice", "bob")}
    uploads = {"alice": [_copy(tmp_path, "alice-1.mp4"), _copy(tmp_path, "alice-2.mp4")],
               "bob": [_copy(tmp_path, "bob.mp4")]}
    jobs = {}
    for name, client in clients.items():  # submitted together: the second waits in the queue
        from gradio_client import handle_file
        jobs[name] = client.submit(files=[handle_file(p) for p in uploads[name]], camera=None, model=MODEL,
                                   random_weights=True, api_name="/analyse")
    outputs = {name: job.result(timeout=120) for name, job in jobs.items()}
    assert outputs["alice"][2]["choices"] == [["alice-1.mp4"] * 2, ["alice-2.mp4"] * 2]
    assert outputs["bob"][2]["choices"] == [["bob.mp4"] * 2]
    for name in clients:
        assert json.load(open(outputs[name][6][0]))["source"] == os.path.basename(uploads[name][0])
    # each session's results stay its own: bob cannot show alice's second video, and alice can
    assert clients["bob"].predict(choice="alice-2.mp4", api_name="/show")[0] == outputs["bob"][0]
    shown = clients["alice"].predict(choice="alice-2.mp4", api_name="/show")
    assert shown[2]["value"] == "alice-2.mp4" and shown[3].endswith("alice-2-timeline.png")
    folders = os.listdir(served.files.root)
    assert len([f for f in folders if f.startswith("session-")]) >= 2


def test_the_page_loads_nothing_from_the_internet(served):
    import re

    import httpx
    html = httpx.get(served.url, timeout=30).text
    assert "<gradio-app" in html or "gradio_config" in html
    fetched = re.findall(r"<(?:script|link|img|iframe|source|video|audio)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)", html)
    fetched += re.findall(r"url\(\s*[\"']?([^\"')]+)", html) + re.findall(r"@import\s+[\"']([^\"']+)", html)
    assert fetched, "expected the page to load its scripts and styles"
    external = [u for u in fetched if re.match(r"(https?:)?//", u) and not re.match(r"(https?:)?//127\.0\.0\.1", u)]
    assert external == []
    theme = httpx.get(served.url + "theme.css", timeout=30)
    assert theme.status_code == 200 and "fonts.googleapis" not in theme.text
    assert re.findall(r"url\(\s*[\"']?(?:https?:)?//", theme.text) == []


def test_progress_names_each_video_and_advances(served, tmp_path):
    class Request:
        session_hash = "progress-test"

    calls = []
    out = served.analyse([_copy(tmp_path, "one.mp4"), _copy(tmp_path, "two.mp4")], None, MODEL, True, Request(),
                         progress=lambda fraction, desc=None: calls.append((fraction, desc)))
    assert [r.name for r in out[0]] == ["one.mp4", "two.mp4"]
    fractions = [f for f, _ in calls]
    assert calls[0] == (0, f"loading {MODEL}") and fractions == sorted(fractions) and 0.9 < fractions[-1] <= 1
    assert (0.5, "two.mp4") in calls and any(d.startswith("one.mp4: ") and d.endswith(" s of 3") for _, d in calls)


def _serve_in_a_process(tmp_path, *options):
    """``python -m clipdfer.app`` with its temporary folder in ``tmp_path``; (process, its URL, its output)."""
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "clipdfer.app", "--model", MODEL, "--no-pretrained", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(tmp_path))
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    end = time.monotonic() + 120
    while not any(" serving http" in line for line in lines):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise AssertionError("the demo did not start:\n" + "".join(lines))
        time.sleep(0.2)
    url = next(line for line in lines if " serving http" in line).split(" serving ")[1].split()[0]
    return proc, url, lines, reader


def test_sigterm_stops_the_demo_and_removes_every_file_it_made(tmp_path):
    pytest.importorskip("gradio", reason="the page needs Gradio: pip install 'clipdfer[demo]'")
    gradio_client = pytest.importorskip("gradio_client", reason="needs gradio_client: pip install 'clipdfer[test]'")
    proc, url, lines, reader = _serve_in_a_process(tmp_path)
    try:
        client = gradio_client.Client(url, verbose=False, analytics_enabled=False,
                                      download_files=str(tmp_path / "downloads"))
        camera = gradio_client.handle_file(sample_clip_path()) if shutil.which("ffmpeg") else None
        status = _analyse(client, sample_clip_path(), camera=camera)[0]
        assert status.startswith("**sample_clip.mp4**: 24 frames")
        made = [n for n in os.listdir(tmp_path) if n.startswith("clipdfer-demo-")]
        assert len(made) == 1 and not os.path.exists(tmp_path / "gradio")  # Gradio's cache: in the demo's folder
        copies = [f for _, _, names in os.walk(tmp_path / made[0] / "gradio") for f in names]
        assert "sample_clip.mp4" in copies and (camera is None or any(f.startswith("muted_") for f in copies))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    left = [n for n in os.listdir(tmp_path) if n.startswith("clipdfer-demo-") or n == "gradio"]
    assert left == [], "".join(lines)
    output = "".join(lines)
    assert f"serving {url} to this machine only (--share: also a public link); Ctrl-C stops" in output
    assert "share=True" not in output and "launch()" not in output  # Gradio's advice names its Python API


def test_python_m_clipdfer_app_and_the_space_entry_point(capsys, monkeypatch):
    from clipdfer.app import serve
    assert serve.main(["--max-videos", "0"]) == 2
    assert capsys.readouterr().err == "clipdfer demo: error: --max-videos 0: expected a whole number >= 1\n"
    pytest.importorskip("gradio", reason="the Space's app needs Gradio: pip install 'clipdfer[demo]'")
    import runpy
    space = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "docs", "space", "app.py"))
    monkeypatch.setenv("CLIPDFER_MODEL", MODEL)
    monkeypatch.setenv("CLIPDFER_PRETRAINED", "0")
    demo = space["make_demo"]()
    try:
        assert (demo.model, demo.pretrained, demo.models[0]) == (MODEL, False, MODEL)
        assert (demo.limits.max_mb, demo.limits.max_seconds, demo.limits.max_videos) == (50, 60, 2)
        assert list(demo.predictors.loaded) == [(MODEL, False)]
    finally:
        demo.close()
