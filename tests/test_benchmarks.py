"""The benchmark scripts run (tiny models, few runs): they are tools users rely on, so they must not rot."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import clipdfer.inference  # noqa: E402
import bench_cpu_kernels  # noqa: E402
import bench_forward  # noqa: E402
import bench_lstm  # noqa: E402
import bench_train  # noqa: E402


def test_bench_forward_reports_ratio_and_peak_fraction(tmp_path):
    rows = bench_forward.main(["clipdfer_test", "dferclip_test", "--runs", "2", "--warmup", "1", "--batch-sizes", "1",
                               "2", "--markdown", str(tmp_path / "fwd.md")])
    assert [(r["model"], r["batch_size"]) for r in rows] == [("clipdfer_test", 1), ("clipdfer_test", 2),
                                                            ("dferclip_test", 1), ("dferclip_test", 2)]
    for r in rows:
        assert r["model_ms"] > 0 and r["floor_ms"] > 0 and r["ratio"] > 0 and 0 < r["peak_fraction"] < 1
        assert r["bf16_peak_fraction"] > 0 and r["bf16_peak_fraction"] != r["peak_fraction"]  # fp32 rows: both
        assert r["compiled"] is False and r["dtype"] == "fp32"
        assert r["peak_mem_mb"] is None and r["forward_mem_mb"] is None  # no GPU memory on a CPU
        # DFER-CLIP is also timed re-encoding its prompts every call (the official behaviour); the others are not
        assert ("reencode_ms" in r) == r["model"].startswith("dferclip")
    assert all(r["reencode_ms"] > 0 for r in rows[2:])
    md = (tmp_path / "fwd.md").read_text()
    assert "matmul peak measured" in md and "re-encoding ms" in md


def test_compiled_rows_do_not_time_re_encoding(monkeypatch):
    """Compiled, switching DFER-CLIP's prompt cache off and on would compile the forward again each time: the
    re-encoding time is an eager row's (torch.compile is scripted here: compiling takes a minute on 2 cores)."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(type(module).__name__) or module)
    (row,) = bench_forward.main(["dferclip_test", "--runs", "1", "--warmup", "1", "--compile", "on"])
    assert row["compiled"] is True and "reencode_ms" not in row and len(compiled) == 2  # the model and the floor


def test_kernel_ranking_on_a_gpu_counts_each_kernel_once():
    """An aten op's self device time is its kernels' time again, and a compiled region's annotation spans kernels:
    on a GPU only the kernels are ranked (the profiler's averages, scripted here: no GPU in CI)."""
    from types import SimpleNamespace

    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def event(key, device_type, device_us, annotation=False):
        return SimpleNamespace(key=key, device_type=device_type, self_device_time_total=device_us,
                               self_cpu_time_total=5.0, is_user_annotation=annotation)
    events = [event("aten::mm", cpu, 300.0), event("sm90_xmma_gemm_bf16", cuda, 300.0),
              event("## Call CompiledFxGraph ##", cuda, 400.0, annotation=True),
              event("triton_per_fused_layer_norm_0", cuda, 100.0), event("cudaLaunchKernel", cpu, 0.0)]
    ranked = bench_forward.rank_kernels(events, cuda=True, k=5, calls=2)
    assert ranked == [{"name": "sm90_xmma_gemm_bf16", "ms": 0.15, "share": 0.75},
                      {"name": "triton_per_fused_layer_norm_0", "ms": 0.05, "share": 0.25}]
    compile_ranges = [event("Torch-Compiled Region: 0/0", cpu, 0.0), event("TorchDynamo Cache Lookup", cpu, 0.0)]
    on_cpu = bench_forward.rank_kernels(events[:1] + compile_ranges + events[-1:], cuda=False, k=5, calls=1)
    assert [k["name"] for k in on_cpu] == ["aten::mm", "cudaLaunchKernel"] and on_cpu[0]["share"] == 0.5  # operators


def test_results_rows_share_one_schema_and_name_the_device_and_the_command(tmp_path):
    from _results import SCHEMA, rerun_command, save_rows
    device = torch.device("cpu")
    row = {"model": "m", "batch_size": 2, "num_frames": 8, "dtype": "bf16", "compiled": False, "model_ms": 1.5,
           "device": "cpu"}
    with pytest.raises(ValueError, match=r"lacks \['model_ms'\]"):
        save_rows("x", device, [{k: v for k, v in row.items() if k != "model_ms"}], ["model"], str(tmp_path))
    with pytest.raises(ValueError, match="dtype 'int8'"):
        save_rows("x", device, [{**row, "dtype": "int8"}], ["model"], str(tmp_path))
    argv = ["bench_forward.py", "m", "--model-kwargs", '{"interfit": false}', "--save", "/tmp/out dir/"]
    path = save_rows("x", device, [row], ["model"], str(tmp_path) + os.sep, argv)
    (saved,) = json.load(open(path))["rows"]
    assert saved["device"].startswith("CPU") and saved["script"] == "x" and set(SCHEMA) <= set(saved)  # not "cpu"
    assert saved["command"] == rerun_command(argv) == (
        """python benchmarks/bench_forward.py m --model-kwargs '{"interfit": false}' --save""")
    assert rerun_command(["bench_lstm.py", "--save=/x.json", "--runs", "2"]) == (
        "python benchmarks/bench_lstm.py --save --runs 2")


def test_merging_a_second_calls_results_keeps_where_each_row_was_measured(tmp_path):
    """A second GPU call's files come back under their own folder: merged into the first's, its rows replace the
    same measurements and keep their own device, torch version and command; nothing is stamped again."""
    import _results
    row = {"model": "m", "batch_size": 2, "num_frames": 8, "dtype": "bf16", "compiled": False, "model_ms": 1.0}
    first = _results.save_rows("train", torch.device("cpu"), [row, {**row, "batch_size": 4, "model_ms": 2.0}],
                               ["model", "batch_size"], str(tmp_path / "a") + os.sep, ["bench_train.py", "m"])
    second = _results.save_rows("train", torch.device("cpu"), [{**row, "model_ms": 0.5}], ["model", "batch_size"],
                                str(tmp_path / "b") + os.sep, ["bench_train.py", "m", "--steps", "9"])
    data = json.load(open(second))
    data["rows"][0]["torch_version"] = data["environment"]["torch_version"] = "9.9.9"  # as if another machine's
    with open(second, "w") as f:
        json.dump(data, f)
    assert _results.main(["merge", second, "--into", str(tmp_path / "a")]) == 0
    merged = json.load(open(first))
    assert [(r["batch_size"], r["model_ms"], r["torch_version"], r["command"]) for r in merged["rows"]] == [
        (4, 2.0, torch.__version__, "python benchmarks/bench_train.py m"),
        (2, 0.5, "9.9.9", "python benchmarks/bench_train.py m --steps 9")]
    assert merged["environment"]["torch_version"] == "9.9.9" and merged["keys"] == ["model", "batch_size"]
    del data["keys"]
    with open(second, "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match="names no 'keys'.*rerun its command with --save"):
        _results.merge_files(second, first)
    data["keys"] = ["model"]
    with open(second, "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match=r"by \['model'\] and .* by \['model', 'batch_size'\]"):
        _results.merge_files(second, first)
    assert json.load(open(first)) == merged  # a refused merge leaves the file as it was
    # hostile inputs: each a clear refusal (the value, what was expected, the fix), the target untouched
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "list.json").write_text("[]")
    for src, into, match in [
            (str(tmp_path / "empty.json"), first, "is not JSON .*written by a benchmark's --save"),
            (str(tmp_path / "list.json"), first, "holds list without a 'rows' list"),
            (str(tmp_path / "a"), first, r"is a folder: expected a results file.*a[/\\]\*\.json"),
            (str(tmp_path / "nothing.json"), first, "is not there: expected a results file"),
            (first, first, "is the file it would be merged into"),
            (first, str(tmp_path / "a"), "is the file it would be merged into"),
            (first, str(tmp_path / "no" / "results"), r"is no folder and no \.json file: create the folder first")]:
        with pytest.raises(ValueError, match=match):
            _results.merge_files(src, into)
        assert _results.main(["merge", src, "--into", into]) == 2
    assert json.load(open(first)) == merged and not (tmp_path / "no").exists()


def test_bench_forward_profile_names_the_costliest_kernels(tmp_path):
    import make_tables
    path = str(tmp_path / "forward-cpu.json")
    rows = bench_forward.main(["clipdfer_test", "--runs", "1", "--warmup", "1", "--profile", "4", "--save", path])
    kernels = rows[0]["top_kernels"]
    assert len(kernels) == 4 and all(k["ms"] > 0 and 0 < k["share"] <= 1 for k in kernels)
    assert [k["share"] for k in kernels] == sorted((k["share"] for k in kernels), reverse=True)
    assert any("addmm" in k["name"] or "linear" in k["name"] or "mm" in k["name"] for k in kernels), kernels
    table = make_tables.render([path])
    assert "Costliest kernels" in table and f"`{kernels[0]['name']}` {100 * kernels[0]['share']:.1f}%" in table
    assert "| top_kernels |" not in table
    assert "top_kernels" not in bench_forward.main(["clipdfer_test", "--runs", "1", "--warmup", "1"])[0]


def test_benchmark_results_are_data_and_make_the_docs_tables(tmp_path):
    """--save merges rows (issue 21's schema) into one JSON per script and device; make_tables.py renders them."""
    import json

    import make_tables
    path = str(tmp_path / "forward-cpu.json")
    common = ["dferclip_test", "--runs", "1", "--warmup", "1", "--save", path]
    bench_forward.main(common + ["--batch-sizes", "1", "2", "--compile", "off"])
    bench_forward.main(common + ["--batch-sizes", "2", "--dtypes", "bf16"])  # adds rows
    bench_forward.main(common + ["--batch-sizes", "1"])  # measures B = 1 fp32 again: replaces that row
    data = json.load(open(path))
    rows = data["rows"]
    assert [(r["batch_size"], r["dtype"]) for r in rows] == [(2, "fp32"), (2, "bf16"), (1, "fp32")]
    schema = {"device", "script", "model", "batch_size", "num_frames", "dtype", "compiled", "model_ms", "floor_ms",
              "ratio", "tflops", "peak_fraction", "peak_mem_mb", "torch_version", "reencode_ms"}
    assert all(schema <= set(r) and r["script"] == "forward" for r in rows)
    assert data["environment"]["torch_version"] == rows[0]["torch_version"] and "bench_forward" in data["command"]
    table = make_tables.render([path])
    assert "`dferclip_test`" in table and f"{rows[0]['model_ms']:.2f}" in table
    assert data["environment"]["device"] in table and data["command"] in table
    made_by = [r["command"] for r in rows]  # each kept row names the run that measured it; the heading names all
    assert len(set(made_by)) == 3 and all(f"`{c}`" in table for c in made_by) and "| command |" not in table
    doc = tmp_path / "benchmarks.md"
    doc.write_text("intro\n<!-- results:begin -->\nold\n<!-- results:end -->\nafter\n")
    make_tables.main(["--results", path, "--doc", str(doc)])
    text = doc.read_text()
    assert text.startswith("intro\n<!-- results:begin -->\n") and "old" not in text and text.endswith("after\n")
    assert f"{rows[0]['model_ms']:.2f}" in text


def test_bench_forward_takes_num_frames_and_model_kwargs():
    rows = bench_forward.main(["dferclip_test", "--runs", "1", "--warmup", "1", "--num-frames", "4",
                               "--model-kwargs", '{"temporal_layers": 2}'])
    assert rows[0]["num_frames"] == 4 and rows[0]["model_kwargs"] == {"temporal_layers": 2, "num_frames": 4}


def test_bench_train_measures_each_configuration_in_its_own_process():
    rows = bench_train.main(["clipdfer_test", "--batch-size", "2", "--steps", "1", "--warmup", "1",
                             "--dtypes", "fp32"])
    assert [r["grad_checkpointing"] for r in rows] == [False, True]
    assert all(r["model_ms"] > 0 and r["peak_mem_mb"] > 0 for r in rows)


def test_bench_cpu_kernels_runs_both_parts():
    res = bench_cpu_kernels.main(["mlp", "--model", "clipdfer_test", "--batch-size", "2", "--runs", "1"])
    assert res["max_abs_diff"] < 1e-4 and all(v > 0 for k, v in res.items() if k != "max_abs_diff")
    res = bench_cpu_kernels.layouts(runs=1, copies=1)
    assert len(res) == 4 and all(v > 0 for shape in res.values() for v in shape.values())


def test_bench_lstm_times_each_implementation(tmp_path):
    import json
    rows = bench_lstm.main(["--device", "cpu", "--width", "16", "--layers", "2", "--runs", "2", "--warmup", "1",
                            "--save", str(tmp_path / "lstm.json"), "--batch-sizes", "1", "3"])
    assert [(r["impl"], r["batch_size"]) for r in rows] == [
        (i, b) for b in (1, 3) for i in ("native", "unrolled", "nn.LSTM")]
    assert all(r["model_ms"] > 0 and r["compaction_warning"] is False for r in rows)  # no cuDNN on the CPU
    assert len(json.load(open(tmp_path / "lstm.json"))["rows"]) == 6


def test_bench_predict_reports_throughput_and_tracking_accuracy(tmp_path, monkeypatch):
    pytest.importorskip("cv2")
    import _results
    import bench_predict
    saves = []  # rows are saved as they come: a step stopped by its time limit keeps what it measured
    real_save = _results.save_rows
    monkeypatch.setattr(_results, "save_rows", lambda script, device, rows, *a: saves.append(len(rows)) or real_save(
        script, device, rows, *a))
    rows = bench_predict.main(["--model", "clip_zeroshot_test", "--seconds", "3", "--detect-every", "1", "2",
                               "--save", str(tmp_path / "predict.json")])
    assert [r["detect_every"] for r in rows] == [1, 2] and all(0 < r["model_share"] < 1 for r in rows)
    assert all(r["frames_per_s"] > 0 and r["faces"] == 2 for r in rows)
    predictor_dtype = clipdfer.inference.Predictor("clip_zeroshot_test", pretrained=False).dtype  # auto, as it ran
    assert all((r["num_frames"], r["batch_size"], r["compiled"]) == (8, 8, False) and r["model_ms"] > 0
               and r["dtype"] == {torch.float32: "fp32", torch.bfloat16: "bf16"}[predictor_dtype] for r in rows)
    assert rows[0]["mean_iou_vs_detection"] == 1.0 and 0.8 < rows[1]["mean_iou_vs_detection"] <= 1.0
    (quick,) = bench_predict.main(["--model", "clip_zeroshot_test", "--seconds", "2", "--detect-every", "1",
                                   "--no-iou"])  # the GPU session's: no extra detection passes
    assert quick["frames"] == 16 and quick["faces"] == 2 and not any("iou" in k for k in quick)
    many = bench_predict.main(["--many", "2", "--seconds", "1", "--processes", "1", "--model", "clip_zeroshot_test",
                               "--save", str(tmp_path / "predict.json")])
    assert [(r["processes"], r["background_thread"]) for r in many] == [(1, True), (1, False)]
    import json
    assert len(json.load(open(tmp_path / "predict.json"))["rows"]) == 4  # both modes' rows, one file
    assert all(r["videos"] == 2 and r["failed"] == 0 and r["frames"] == 16 and r["frames_per_s"] > 0 for r in many)
    detectors = bench_predict.main(["--detectors", "--save", str(tmp_path / "predict.json")])
    assert [d["detector"] for d in detectors] == ["yunet", "haar"] and all(d["ms"] > 0 for d in detectors)
    assert saves == [1] * 6 and len(json.load(open(tmp_path / "predict.json"))["rows"]) == 6  # --no-iou: not saved


def test_bench_predict_many_records_a_failed_launch_and_goes_on(tmp_path, monkeypatch, capsys):
    """One configuration's launch fails (scripted): its row says why, the other configuration is still measured."""
    import subprocess

    import bench_predict
    real_run = subprocess.run
    launches = []

    def run(cmd, **kwargs):
        if "--worker" not in cmd:
            return real_run(cmd, **kwargs)
        launches.append("--no-background" not in cmd)
        if launches[-1]:
            return subprocess.CompletedProcess(cmd, 1, "", "Traceback ...\ntorch.AcceleratorError: CUDA error: "
                                                          "an illegal memory access was encountered\n")
        row = {"mode": "many", "model": "clip_zeroshot_test", "batch_size": 8, "num_frames": 8, "dtype": "fp32",
               "compiled": False, "model_ms": 1.0, "processes": 1, "background_thread": False, "videos": 2}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(row) + "\n", "")

    monkeypatch.setattr(subprocess, "run", run)
    path = str(tmp_path / "predict.json")
    rows = bench_predict.main(["--many", "2", "--seconds", "1", "--processes", "1", "--model", "clip_zeroshot_test",
                               "--save", path])
    assert launches == [True, False]
    assert [(r["background_thread"], r.get("error")) for r in rows] == [
        (True, "torch.AcceleratorError: CUDA error: an illegal memory access was encountered"), (False, None)]
    assert "illegal memory access" in capsys.readouterr().err
    assert [r.get("error") is None for r in json.load(open(path))["rows"]] == [False, True]


def test_gpu_busy_averages_the_utilisation_it_samples_and_says_why_when_it_cannot():
    import itertools
    import time

    import bench_predict
    readings = itertools.cycle([50, 100])
    with bench_predict.GPUBusy("cuda", interval=0.01, read=lambda: next(readings), min_samples=5) as busy:
        time.sleep(0.3)
    assert len(busy.samples) >= 5 and set(busy.samples) == {50.0, 100.0}
    assert busy.fraction == round(sum(busy.samples) / len(busy.samples) / 100, 3)
    assert busy.fields() == {"gpu_busy_fraction": busy.fraction}
    with bench_predict.GPUBusy("cpu") as on_cpu:  # no GPU: no field (the CPU tables keep their columns)
        pass
    assert on_cpu.fraction is None and "no GPU" in on_cpu.error and on_cpu.fields() == {}

    def no_nvml():
        raise ModuleNotFoundError("No module named 'pynvml'")
    with bench_predict.GPUBusy("cuda", read=no_nvml) as unreadable:
        pass
    assert unreadable.fields() == {"gpu_busy_fraction": None,
                                   "gpu_busy_error": "GPU utilisation unreadable: ModuleNotFoundError: "
                                                     "No module named 'pynvml'"}
    with bench_predict.GPUBusy("cuda", interval=0.01, read=lambda: 10, min_samples=1000) as too_short:
        time.sleep(0.05)
    assert too_short.fraction is None and "too short" in too_short.fields()["gpu_busy_error"]
    calls = itertools.count()

    def fails_later():
        if next(calls) > 3:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return 40
    with bench_predict.GPUBusy("cuda", interval=0.01, read=fails_later, min_samples=1) as lost:
        time.sleep(0.2)
    assert lost.fraction is None and "GPU_IS_LOST" in lost.error and len(lost.samples) == 3


def test_the_gpu_sessions_steps_end_inside_one_device_run(tmp_path):
    """A device call runs at most 600 s: every step's limit and the 10 s it may take to die after it, with a minute
    for installing the wheels and the versions; STEPS may only name steps (a typo would run nothing)."""
    import re
    import subprocess
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_session.sh")
    script = open(path).read()
    steps = re.findall(r"^step (\S+) (\d+) ", script, flags=re.M)
    limits = [int(limit) for _, limit in steps]
    stated = [int(n) for n in re.search(r"limits add up to (\d+) s \((\d+) s with", script).groups()]
    grace = int(re.search(r"timeout -k (\d+) ", script).group(1))
    assert len(limits) == 7 and [sum(limits), sum(limits) + grace * len(limits)] == stated and stated[1] <= 540
    assert re.search(r"^NAMES=\((.*)\)$", script, flags=re.M).group(1).split() == [name for name, _ in steps]
    out = subprocess.run(["bash", path], env={**os.environ, "STEPS": "forward predict_many", "OUT": str(tmp_path)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "STEPS names 'forward', which is no step: the steps are cuda-tests" in out.stderr


def test_the_models_the_gpu_checks_name_exist():
    """tests/test_cuda.py and gpu_session.sh run only on a GPU: their model names are checked here, on every run."""
    import re

    import clipdfer
    sys.path.insert(0, os.path.dirname(__file__))
    import test_cuda
    script = open(os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_session.sh")).read()
    named = set(test_cuda.FULL_SIZE) | set(re.findall(r"\b[a-z0-9_]+?_(?:vit[a-z0-9]+(?:_[a-z0-9]+)?|test)\b", script))
    assert {"pmfer_vitb16_dfew", "clip_zeroshot_vitb32", "dferclip_test"} <= named
    assert sorted(n for n in named if n not in clipdfer.list_models()) == []


def test_bench_predict_realtime_times_the_whole_command(tmp_path):
    import bench_predict

    from clipdfer.inference import sample_clip_path
    rows = bench_predict.main(["--realtime", sample_clip_path(), "--models", "clip_zeroshot_test", "--dtypes", "fp32",
                               "--markdown", str(tmp_path / "rt.md"), "--device", "auto",
                               "--save", str(tmp_path / "rt.json")])
    assert json.loads((tmp_path / "rt.json").read_text())  # saved under the device "auto" chose
    (r,) = rows
    assert (r["model"], r["dtype_requested"], r["dtype"], r["frames"], r["runs"], r["num_frames"], r["batch_size"]) == (
        "clip_zeroshot_test", "fp32", "fp32", 24, 1, 8, 8)
    assert r["model_ms"] == pytest.approx(1e3 * r["model_s"] / 24, abs=0.003)  # per frame (model_s: to 0.1 ms)
    assert r["clip_s"] == pytest.approx(3.0, abs=0.05)  # the sample clip: 24 frames at 8 frames/s
    # frames read and tracked while the model was built are not in total_s: it may be little more than model_s
    assert r["wall_s"] > r["total_s"] >= r["model_s"] > 0 and r["startup_s"] == pytest.approx(
        r["wall_s"] - r["total_s"], abs=2e-4)
    assert r["x_realtime"] == pytest.approx(r["clip_s"] / r["wall_s"], rel=0.02)
    assert open(tmp_path / "rt.md").read().splitlines()[2].startswith("| clip_zeroshot_test | fp32 (fp32) | ")
    # three runs: the median one by wall time, its own stages with it
    settings = {"model": {"dtype": "torch.bfloat16", "args": {"num_frames": 16}},
                "windows": {"window": 16, "batch_size": 4}}
    results = [{"timings": {"total_s": t, "model_s": t / 2}, "settings": settings,
                "frames_used": 10, "faces": [{"windows": [1, 2]}]} for t in (1.0, 3.0, 2.0)]
    row = bench_predict.realtime_row("m", "auto", 8.0, [5.0, 2.0, 4.0], results)
    assert (row["wall_s"], row["total_s"], row["model_s"], row["startup_s"], row["x_realtime"], row["windows"]) == (
        4.0, 2.0, 1.0, 2.0, 2.0, 2)
    assert (row["dtype"], row["dtype_requested"], row["num_frames"], row["batch_size"], row["model_ms"]) == (
        "bf16", "auto", 16, 4, 100.0)  # auto ran in bf16; 1 s of model time over 10 frames


def test_check_dtype_agreement_compares_bf16_with_fp32_on_made_clips(tmp_path):
    import check_dtype_agreement
    videos = check_dtype_agreement.clips()
    assert {k: tuple(v.shape[:2]) for k, v in videos.items()} == {
        "sample": (24, 3), "mirrored": (24, 3), "centre crop": (24, 3), "2x speed": (12, 3), "0.5x speed": (48, 3)}
    assert torch.equal(videos["mirrored"][..., 0], videos["sample"][..., -1])
    (row,) = check_dtype_agreement.main(["--models", "clip_zeroshot_test", "--markdown", str(tmp_path / "a.md")])
    assert row["clips"] == 5 and row["windows"] >= 5 and 0 <= row["top1_agreement"] <= 1
    assert 0 < row["max_abs_prob_diff"] < 0.05  # bf16 moves the probabilities, a little
    assert open(tmp_path / "a.md").read().splitlines()[2].startswith("| `clip_zeroshot_test` | ")


def test_check_face_detectors_reproduces_the_docs_table():
    pytest.importorskip("skimage")  # scikit-image's test images; not a dependency, so this runs where it is installed
    pytest.importorskip("cv2")
    import check_face_detectors
    rows = {r["case"]: r for r in check_face_detectors.main()}
    assert all(rows[c]["yunet"] for c in rows if "face-free" not in c)  # YuNet finds every face case
    assert rows["mouth and chin covered"]["haar"] == 0 and rows["cameraman (three-quarter)"]["haar"] == 0
    free = next(r for c, r in rows.items() if "face-free" in c)
    assert free["yunet_false_boxes"] == 0


def test_bench_train_records_out_of_memory_and_skips_larger_batches(monkeypatch, tmp_path):
    """Batch sizes 'up to what fits': a configuration that runs out of memory is a row, its larger sizes are not run
    (the child processes are scripted here; a CPU does not run out of memory on cue)."""
    import json
    import subprocess

    ran = []
    real_run = subprocess.run

    def run(cmd, **kwargs):
        if "--child" not in cmd:
            return real_run(cmd, **kwargs)
        cfg = json.loads(cmd[-1])
        ran.append((cfg["batch_size"], cfg["grad_checkpointing"]))
        if cfg["batch_size"] >= 32 and not cfg["grad_checkpointing"]:
            return subprocess.CompletedProcess(cmd, 1, "", "torch.OutOfMemoryError: CUDA out of memory.")
        row = {**cfg, "num_frames": 8, "compiled": False, "model_ms": 10.0 * cfg["batch_size"], "peak_mem_mb": 100.0,
               "memory_kind": "scripted"}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(row) + "\n", "")

    monkeypatch.setattr(bench_train.subprocess, "run", run)
    rows = bench_train.main(["clipdfer_test", "--batch-sizes", "64", "8", "32", "--dtypes", "bf16", "--save",
                             str(tmp_path / "train.json"), "--markdown", str(tmp_path / "train.md")])
    assert ran == [(8, False), (32, False), (8, True), (32, True), (64, True)]
    assert [(r["batch_size"], r["grad_checkpointing"], r.get("oom", False)) for r in rows] == [
        (8, False, False), (32, False, True), (8, True, False), (32, True, False), (64, True, False)]
    assert "out of memory" in (tmp_path / "train.md").read_text()
    saved = json.load(open(tmp_path / "train.json"))["rows"]
    assert len(saved) == 5 and all(r["script"] == "train" for r in saved)


def test_bench_train_records_a_failure_and_goes_on_plain_steps_first(monkeypatch, tmp_path, capsys):
    """A configuration that fails (not out of memory) is a row with its error's last line; the other models still
    run, every model's step without gradient checkpointing before any with it (a run cut short keeps those)."""
    import json
    import subprocess

    ran = []
    real_run = subprocess.run

    def run(cmd, **kwargs):
        if "--child" not in cmd:  # platform.processor() asks uname
            return real_run(cmd, **kwargs)
        cfg = json.loads(cmd[-1])
        ran.append((cfg["model"], cfg["grad_checkpointing"], cfg["batch_size"]))
        if cfg["model"] == "a3lign_test" and not cfg["grad_checkpointing"]:
            return subprocess.CompletedProcess(cmd, 1, "", "Traceback (most recent call last):\n  ...\n"
                                               "RuntimeError: cuDNN error: CUDNN_STATUS_NOT_SUPPORTED\n")
        row = {**cfg, "num_frames": 8, "compiled": False, "model_ms": 5.0, "peak_mem_mb": 50.0,
               "memory_kind": "scripted"}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(row) + "\n", "")

    monkeypatch.setattr(bench_train.subprocess, "run", run)
    rows = bench_train.main(["clipdfer_test", "a3lign_test", "--batch-sizes", "2", "4", "--dtypes", "bf16",
                             "--save", str(tmp_path / "train.json"), "--markdown", str(tmp_path / "train.md")])
    assert ran == [("clipdfer_test", False, 2), ("clipdfer_test", False, 4), ("a3lign_test", False, 2),
                   ("clipdfer_test", True, 2), ("clipdfer_test", True, 4), ("a3lign_test", True, 2),
                   ("a3lign_test", True, 4)]
    failed = [r for r in rows if r.get("error")]
    assert [(r["model"], r["batch_size"], r["error"]) for r in failed] == [
        ("a3lign_test", 2, "RuntimeError: cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")]
    assert "CUDNN_STATUS_NOT_SUPPORTED" in capsys.readouterr().err  # the whole error, for the log
    assert "failed: RuntimeError: cuDNN error" in (tmp_path / "train.md").read_text()
    saved = json.load(open(tmp_path / "train.json"))["rows"]
    assert len(saved) == 7 and sum("error" in r for r in saved) == 1
