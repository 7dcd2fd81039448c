"""Results as data (issue 29, item 1): every face's per-frame boxes with the detector's scores in results and the
JSON (format 2; format 1 still read), tables of windows and boxes (rows without pandas, DataFrames with it),
``load_results`` over an ``--out`` folder, ``--json`` and ``--jsonl`` files, ``--jsonl`` streaming, and the
random-weights notice wherever a result is shown."""

import json
import sys

import numpy as np
import pytest
import torch

import clipdfer
from clipdfer.inference import FaceSettings, Prediction, Predictor, ReadSettings, load_results
from clipdfer.inference.results import BOX_COLUMNS, FORMAT_VERSION, WINDOW_COLUMNS, result_from_dict
from scripted import ScriptedDetector, face_frame, use_scripted_detector


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return clipdfer.create_model("clip_zeroshot_test").eval()


def _frames(n=20, leaves=12):
    """Face 1 moves right 1 px per frame; face 2 stays still and leaves after ``leaves`` frames."""
    return [face_frame([(10 + i, 10, 40 + i, 50), (100, 60, 130, 100) if i < leaves else None]) for i in range(n)]


def _run(model, frames, detect_every=1) -> Prediction:
    predictor = Predictor(model, faces=FaceSettings(detector=ScriptedDetector(), detect_every=detect_every))
    video = torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames])
    return predictor.run(video, ReadSettings(folder_fps=8.0))


def _folders(tmp_path, count=2):
    """``count`` frame folders of the two faces (sources the command line reads without PyAV)."""
    from PIL import Image
    paths = []
    for k in range(count):
        folder = tmp_path / f"clip{k}"
        folder.mkdir()
        for i, frame in enumerate(_frames(16 + 4 * k)):
            Image.fromarray(frame).save(folder / f"{i:03d}.png")
        paths.append(str(folder))
    return paths


def test_every_face_has_a_box_in_every_frame_of_its_span_with_the_detector_score_where_detected(model):
    r = _run(model, _frames(), detect_every=2)
    stays, leaves = r.faces
    assert [b.frame for b in stays.boxes] == list(range(stays.first_frame, stays.last_frame + 1))
    assert [b.frame for b in leaves.boxes] == list(range(leaves.first_frame, leaves.last_frame + 1))
    # searched frames (every 2nd) carry the scripted detector's score 1; the frames between are interpolated
    assert [b.score for b in stays.boxes[:4]] == [1.0, None, 1.0, None]
    assert [b.detected for b in stays.boxes[:4]] == [True, False, True, False]
    assert stays.boxes[3].box == pytest.approx((13, 10, 43, 50), abs=0.01)  # the marker moved 3 px by frame 3
    assert stays.boxes[2].time == pytest.approx(2 / 8)
    assert leaves.boxes[0].box == pytest.approx((100, 60, 130, 100))


def test_the_json_carries_the_boxes_and_its_format_and_older_results_still_read(model):
    r = _run(model, _frames())
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["format_version"] == FORMAT_VERSION == 2
    box = d["faces"][0]["boxes"][0]
    assert box == {"frame": 0, "time": 0.0, "box": [10.0, 10.0, 40.0, 50.0], "score": 1.0}
    again = Prediction.from_dict(d)
    assert again.to_dict() == d and again.faces[1].boxes == r.faces[1].boxes
    old = json.loads(json.dumps(d))  # what clipdfer 0.1.0 wrote: no format_version, no boxes
    del old["format_version"]
    for face in old["faces"]:
        del face["boxes"]
    read = Prediction.from_dict(old)
    assert [f.boxes for f in read.faces] == [[], []] and read.windows == r.windows
    newer = dict(d, format_version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match=r"format_version 3: this clipdfer reads results up to format 2.*pip install "
                                         r"-U clipdfer"):
        Prediction.from_dict(newer)


def test_table_rows_need_no_pandas(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    r = _run(model, _frames())
    rows = r.rows()
    assert len(rows) == sum(len(f.windows) for f in r.faces) == 6  # 20 frames: 4 windows of 8, stride 4; 12: 2
    first = rows[0]
    assert list(first) == [*WINDOW_COLUMNS, *r.class_names]
    w = r.faces[0].windows[0]
    assert (first["source"], first["model"], first["weights"], first["face_id"]) == ("tensor", "ZeroShotCLIP",
                                                                                     "random", 1)
    assert (first["start_s"], first["end_s"], first["start_frame"], first["end_frame"]) == (w.start, w.end, 0, 7)
    assert first["top_class"] == w.top[0] and first["top_probability"] == w.top[1]
    assert sum(first[c] for c in r.class_names) == pytest.approx(1, abs=1e-5)
    boxes = r.rows("boxes")
    assert len(boxes) == 20 + 12 and list(boxes[0]) == list(BOX_COLUMNS)
    assert boxes[-1] == {"source": "tensor", "model": "ZeroShotCLIP", "face_id": 2, "frame": 11, "time_s": 11 / 8,
                         "x0": 100.0, "y0": 60.0, "x1": 130.0, "y1": 100.0, "detected": True, "score": 1.0}
    with pytest.raises(ImportError, match=r"pip install 'clipdfer\[pandas\]'"):
        r.to_pandas()
    with pytest.raises(ValueError, match="table='frames': expected 'windows'.*or 'boxes'"):
        r.rows("frames")


def test_to_pandas_gives_a_row_per_face_and_window_and_per_face_and_frame(model):
    pd = pytest.importorskip("pandas", reason="to_pandas is the point: it needs the pandas extra")
    r = _run(model, _frames())
    df = r.to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df.columns) == [*WINDOW_COLUMNS, *r.class_names]
    assert df.groupby("face_id").size().to_dict() == {1: 4, 2: 2}
    assert np.allclose(df[list(r.class_names)].sum(axis=1), 1, atol=1e-5)
    assert (df["top_class"] == df[list(r.class_names)].idxmax(axis=1)).all()
    boxes = r.to_pandas("boxes")
    assert list(boxes.columns) == list(BOX_COLUMNS) and len(boxes) == 32
    assert boxes.query("face_id == 1")["x0"].tolist() == [10.0 + i for i in range(20)]


def test_load_results_reads_an_out_folder_a_json_file_and_a_jsonl_stream(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pandas", reason="load_results returns a DataFrame")
    from clipdfer.cli import main
    use_scripted_detector(monkeypatch)
    sources = _folders(tmp_path)
    args = ["predict", *sources, "--folder-fps", "8", "--model", "clip_zeroshot_test", "--no-pretrained"]
    assert main(args + ["--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr()
    assert "NOT MEANINGFUL" in err.out  # --out shows the notice on the terminal, not only in the files
    df = load_results(str(tmp_path / "out"))
    assert sorted(df["source"].unique()) == sorted(sources)
    assert df.groupby("source").size().tolist() == [5, 6]  # 16 frames: 3 + 2 windows; 20 frames: 4 + 2
    assert (df["weights"] == "random").all()
    boxes = clipdfer.load_results(str(tmp_path / "out"), table="boxes")
    assert len(boxes) == (16 + 12) + (20 + 12)

    assert main(args + ["--jsonl"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 2 and [json.loads(line)["source"] for line in lines] == sources
    assert "NOT MEANINGFUL" in out.err  # the notice goes to the terminal, beside the data on stdout
    (tmp_path / "r.jsonl").write_text(out.out)
    assert load_results(str(tmp_path / "r.jsonl")).equals(df)
    assert main(args + ["--json"]) == 0
    out = capsys.readouterr()
    assert "NOT MEANINGFUL" in out.err
    (tmp_path / "r.json").write_text(out.out)
    assert load_results(str(tmp_path / "r.json")).equals(df)

    (tmp_path / "out" / "notes.json").write_text('{"mine": 1}')
    with pytest.raises(ValueError, match=r"notes.json is not a clipdfer result.*move other files out"):
        load_results(str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="give the folder of clipdfer predict --out DIR"):
        load_results(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no results in"):
        load_results(str(tmp_path / "empty"))


def test_jsonl_streams_each_source_as_it_is_done(tmp_path, monkeypatch, capsys):
    """The first line is on stdout before the second source is read."""
    from clipdfer.cli import main
    use_scripted_detector(monkeypatch)
    sources = _folders(tmp_path)
    seen = []
    original_run = Predictor.run

    def run(self, source, *args, **kwargs):
        seen.append(capsys.readouterr().out)  # what was written before this source started
        return original_run(self, source, *args, **kwargs)

    monkeypatch.setattr(Predictor, "run", run)
    assert main(["predict", *sources, "--folder-fps", "8", "--model", "clip_zeroshot_test", "--no-pretrained",
                 "--jsonl"]) == 0
    assert seen[0] == "" and json.loads(seen[1])["source"] == sources[0]
    assert json.loads(capsys.readouterr().out)["source"] == sources[1]


def test_a_result_of_the_older_format_in_out_is_made_again(tmp_path, monkeypatch, capsys, caplog):
    from clipdfer.cli import main
    use_scripted_detector(monkeypatch)
    source = _folders(tmp_path, 1)[0]
    args = ["predict", source, "--folder-fps", "8", "--model", "clip_zeroshot_test", "--no-pretrained", "--out",
            str(tmp_path / "out")]
    assert main(args) == 0
    path = tmp_path / "out" / "clip0.json"
    data = json.loads(path.read_text())
    del data["format_version"]
    for face in data["faces"]:
        del face["boxes"]
    path.write_text(json.dumps(data))
    assert main(args) == 0
    assert "holds a result of format 1" in caplog.text
    again = json.loads(path.read_text())
    assert again["format_version"] == 2 and again["faces"][0]["boxes"]
    assert main(args) == 0
    assert "(from an earlier run)" in capsys.readouterr().out  # format 2: resumed


def test_the_annotated_video_carries_the_random_weights_notice(model, tmp_path, monkeypatch):
    from clipdfer import visualize
    real = visualize.VideoAnnotator
    made = []

    class Recorder:
        def __init__(self, path, fps=None, notice=None):
            made.append(notice)
            self.path = path

        def write(self, *args):
            pass

        def close(self):
            pass

    monkeypatch.setattr(visualize, "VideoAnnotator", Recorder)
    predictor = Predictor(model, faces=FaceSettings(detector=ScriptedDetector()))
    video = torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in _frames(8)])
    predictor.run(video, ReadSettings(folder_fps=8.0), annotate=str(tmp_path / "a.mp4"))
    assert made == [predictor.notice] and "NOT MEANINGFUL" in made[0]

    annotator = real(str(tmp_path / "b.mp4"), notice=predictor.notice)
    annotator.write(0, 0.0, face_frame([(10, 10, 40, 50)], height=120, width=320), [(1, (10, 10, 40, 50), None)])
    image = annotator._held[1]  # the frame drawn, held until the next frame's time is known
    bottom = image[-3:].reshape(-1, 3).astype(int)
    assert (np.abs(bottom - [200, 0, 0]).sum(-1) < 30).mean() > 0.5  # a red band across the bottom
    red_rows = (np.abs(image.astype(int) - [200, 0, 0]).sum(-1) < 30).mean(1) > 0.5
    assert 0 < red_rows.sum() <= 32 and not red_rows[:80].any()  # at most two lines: it hides little of the frame
    plain = real(str(tmp_path / "c.mp4"))
    plain.write(0, 0.0, face_frame([(10, 10, 40, 50)], height=120, width=320), [(1, (10, 10, 40, 50), None)])
    assert (np.abs(plain._held[1][-3:].reshape(-1, 3).astype(int) - [200, 0, 0]).sum(-1) < 30).mean() == 0


def test_failed_sources_are_counted_not_tabled(tmp_path, caplog):
    pytest.importorskip("pandas", reason="load_results returns a DataFrame")
    ok = {"format_version": 2, "source": "a.mp4", "model": "m", "class_names": ["x", "y"], "windows": [],
          "overall": {}, "top_k": [], "frames_used": 8, "frames_with_face": 8, "seconds": 1.0, "timings": {},
          "faces": [{"id": 1, "first_frame": 0, "last_frame": 7, "start": 0, "end": 1, "windows": [
              {"start": 0, "end": 1, "start_frame": 0, "end_frame": 7, "probs": {"x": 0.25, "y": 0.75}}],
              "overall": {"x": 0.25, "y": 0.75}, "top_k": [["y", 0.75]], "boxes": []}], "main_face": 1}
    (tmp_path / "a.json").write_text(json.dumps(ok))
    (tmp_path / "b.json").write_text(json.dumps({"source": "b.mp4", "error": "no face", "error_type": "NoFaceError"}))
    df = load_results(str(tmp_path))
    assert df[["source", "top_class", "y"]].values.tolist() == [["a.mp4", "y", 0.75]]
    assert "1 of 2 source(s)" in caplog.text
    assert isinstance(result_from_dict(ok), Prediction)


def _format1(source="a.mp4", weights="random"):
    """A result as clipdfer 0.1.0 wrote it (format 1): no format_version, no boxes, and flat settings whose "model" is
    the model's name (the shape of a real --out file of that release)."""
    probs = {"happiness": 0.7, "sadness": 0.2, "neutral": 0.1}
    window = {"start": 0.0, "end": 0.875, "start_frame": 0, "end_frame": 7, "probs": probs}
    top = [["happiness", 0.7], ["sadness", 0.2], ["neutral", 0.1]]
    settings = {"model": "clip_zeroshot_test", "class_names": list(probs), "window": 8, "stride": 4,
                "detector": "haar", "dtype": "torch.float32", "fps": 8.0, "start": None, "end": None,
                "folder_fps": 25.0}
    if weights is not None:
        settings["weights"] = weights
    return {"source": source, "model": "clip_zeroshot_test", "class_names": list(probs), "windows": [window],
            "overall": probs, "top_k": top, "frames_used": 8, "frames_with_face": 8, "seconds": 0.875,
            "timings": {"total": 1.0}, "notice": None, "detector": "haar", "notes": [], "main_face": 1,
            "faces": [{"id": 1, "first_frame": 0, "last_frame": 7, "start": 0.0, "end": 0.875, "detections": 8,
                       "windows": [window], "overall": probs, "top_k": top}],
            "source_path": source, "source_stat": [1, 2], "settings": settings}


def test_results_of_clipdfer_0_1_0_read_with_their_weights_state():
    rows = Prediction.from_dict(_format1()).rows()
    assert [(r["source"], r["weights"], r["top_class"], r["happiness"]) for r in rows] == [
        ("a.mp4", "random", "happiness", 0.7)]
    assert Prediction.from_dict(_format1(weights=None)).rows()[0]["weights"] == "unknown"
    assert Prediction.from_dict(_format1()).rows("boxes") == []


def test_load_results_reads_format_1_and_says_it_holds_no_boxes(tmp_path, caplog):
    pytest.importorskip("pandas", reason="load_results returns a DataFrame")
    (tmp_path / "a.json").write_text(json.dumps(_format1(), indent=2))
    (tmp_path / "b.json").write_text(json.dumps({"source": "b.mp4", "error": "no face", "error_type": "NoFaceError"}))
    df = load_results(str(tmp_path))
    assert df[["source", "weights", "top_class"]].values.tolist() == [["a.mp4", "random", "happiness"]]
    assert "see summary.csv" in caplog.text and "hold no boxes" not in caplog.text
    caplog.clear()
    assert len(load_results(str(tmp_path), "boxes")) == 0
    assert "1 of 1 result(s)" in caplog.text and "format 1 (clipdfer 0.1.0) and hold no boxes" in caplog.text
    assert "same --out to add them" in caplog.text
    listing = tmp_path / "r.json"  # a --json list: its failed source is not sent to a summary.csv
    listing.write_text(json.dumps([_format1(), {"source": "b.mp4", "error": "no face"}]))
    caplog.clear()
    load_results(str(listing), "boxes")
    assert "their entries say why" in caplog.text and "summary.csv" not in caplog.text
    assert "remakes format-1 results with boxes" in caplog.text


def test_load_results_needs_pandas_before_reading_anything(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    (tmp_path / "a.json").write_text("not json")  # never read: the ImportError comes first
    with pytest.raises(ImportError, match=r"pip install 'clipdfer\[pandas\]'"):
        load_results(str(tmp_path))


def test_load_results_tells_json_lines_from_a_list_by_content_and_reads_a_list_cut_short(tmp_path, caplog):
    pytest.importorskip("pandas", reason="load_results returns a DataFrame")
    entries = [_format1("a.mp4"), _format1("b.mp4"), _format1("c.mp4")]
    lines = "".join(json.dumps(e) + "\n" for e in entries)
    for name in ("r.json", "r.ndjson", "r.txt", "r.jsonl"):
        (tmp_path / name).write_text(lines)
        assert load_results(str(tmp_path / name))["source"].tolist() == ["a.mp4", "b.mp4", "c.mp4"], name
    # a --json list as ResultWriter writes it, the run killed during the third entry
    from clipdfer.inference.outputs import ResultWriter
    import io
    out = io.StringIO()
    writer = ResultWriter(out, "json", [])
    for e in entries:
        writer.add(e)
    text = out.getvalue()
    cut = tmp_path / "cut.json"
    for end in (len(text) - 40, text.rindex('"settings"') + 3, text.rindex("},") + 1):
        cut.write_text(text[:end])
        caplog.clear()
        assert load_results(str(cut))["source"].tolist() == ["a.mp4", "b.mp4"]
        assert "cut short" in caplog.text and "its 2 finished entries" in caplog.text
    cut.write_text(text[:30])
    with pytest.raises(ValueError, match=r"cut.json is a list cut short before its first entry was finished"):
        load_results(str(cut))
    broken = text.replace('"b.mp4"', "b.mp4", 1) + "\n]\n"  # broken in the middle: an error, not a guess
    cut.write_text(broken)
    with pytest.raises(ValueError, match=r"cut.json is not JSON \(Expecting value: line \d+"):
        load_results(str(cut))
    jl = tmp_path / "r.jsonl"
    jl.write_text(lines.replace('"b.mp4"', "b.mp4", 1))
    with pytest.raises(ValueError, match=r"r.jsonl:2 is not JSON .*one JSON object per line"):
        load_results(str(jl))
    jl.write_text(lines[:-30])  # the last line cut short
    caplog.clear()
    assert load_results(str(jl))["source"].tolist() == ["a.mp4", "b.mp4"]
    assert "r.jsonl:3 is cut short" in caplog.text
    (tmp_path / "e.json").write_text("")
    with pytest.raises(ValueError, match=r"e.json is empty: expected the folder of clipdfer predict --out DIR"):
        load_results(str(tmp_path / "e.json"))
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match=r"bin.json is not a text file"):
        load_results(str(tmp_path / "bin.json"))


def test_load_results_of_a_pipe_says_to_save_it_to_a_file_first(tmp_path):
    pytest.importorskip("pandas", reason="load_results returns a DataFrame")
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"fifo' is not a regular file or a folder .*/dev/stdin.*"
                                         r"--jsonl > results.jsonl\) and give that file"):
        load_results(str(fifo))


def test_a_closed_stdout_ends_quietly_and_keeps_the_results_written(tmp_path):
    """`clipdfer predict a b c --jsonl --out DIR | head -1`: the reader goes after the first line; the run ends with
    141 (or 0) and no error line, and the results already written to --out stay."""
    import os
    import subprocess
    sources = _folders(tmp_path, 3)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipdfer", "predict", *sources, "--folder-fps", "8", "--model", "clip_zeroshot_test",
         "--no-pretrained", "--no-face-detection", "--jsonl", "--out", str(out), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141), err
    assert json.loads(first)["source"] == sources[0]
    assert "error" not in err.lower() and "Traceback" not in err, err
    assert (out / "clip0.json").is_file() and json.loads((out / "clip0.json").read_text())["source"] == sources[0]
