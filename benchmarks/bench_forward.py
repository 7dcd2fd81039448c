"""Forward time of clipdfer models against the CLIP floor, on the CPU or a CUDA GPU.

    python benchmarks/bench_forward.py "clipdfer_vitb32_*" dferclip_vitb32_dfew --batch-sizes 1 32 \\
        --dtypes bf16 fp32 --device cuda --compile both --save --markdown fwd.md

For each model, batch size, dtype and compile mode, eval mode under ``torch.inference_mode``: the model's forward and
open_clip's bare ``encode_image`` of the same B x T frames with the same visual weights (the floor of any CLIP-based
DFER model) are timed alternately after warm-up (CUDA events on a GPU, ``perf_counter`` on the CPU); medians are
reported, with the ratio, clips per second, the achieved matmul throughput (full multiply-accumulate count x 2 / time)
and its fraction of this device's matmul peak measured by a large GEMM in the same dtype (``peak_fraction``) and in
bf16 (``bf16_peak_fraction``, the same for bf16 rows; the peaks are measured in each run), and on a GPU the peak memory
allocated during one forward of the model (every resident tensor: both models' weights included) and
``forward_mem_mb``, that peak less what was allocated before the forward (the forward's own activations and output).
bf16 / fp16 cast both models' weights. ``--profile K`` adds ``top_kernels`` to each row: the K kernels with the most
self time in three profiled forwards (torch.profiler; on the CPU, aten operators), to name what a missed target is
spent on. ``--save`` merges the rows into ``benchmarks/results/forward-<device>.json`` (see _results.py).
"""

import argparse
import itertools
import json
import sys
import statistics
import time
from typing import Dict, List, Optional

import open_clip
import torch

import clipdfer
from _results import device_name, peak_memory_mb, save_rows
from clipdfer.layers import build_open_clip
from clipdfer.models import DFERCLIP
from clipdfer.profiling import count_macs

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
ROW_KEYS = ("model", "model_kwargs", "batch_size", "num_frames", "dtype", "compiled")  # what names a measurement


def _timer(device: torch.device):
    if device.type == "cuda":
        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        return run

    def run_cpu(fn):
        start = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - start)
    return run_cpu


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Achieved TFLOP/s of a large square matmul in ``dtype`` (the practical peak of this device)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timer = _timer(device)
    for _ in range(3):
        a @ b
    ms = statistics.median(timer(lambda: a @ b) for _ in range(10))
    return 2 * n ** 3 / (ms / 1e3) / 1e12


def top_kernels(fn, device: torch.device, k: int, calls: int = 3) -> List[Dict]:
    """The ``k`` kernels (on the CPU: aten operators) with the most self time over ``calls`` calls of ``fn``, under
    ``torch.profiler``: ``name`` (cut to 100 characters), ``ms`` per call and ``share`` of all kernels' self time."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if cuda:
            torch.cuda.synchronize(device)
    return rank_kernels(prof.key_averages(), cuda, k, calls)


# torch.compile's own ranges (spans over kernels and operators, not work of their own; on the CPU their self time is
# the Python between the operators)
_MARKERS = ("## ", "Torch-Compiled Region", "TorchDynamo Cache Lookup", "CompiledFunction")


def rank_kernels(events, cuda: bool, k: int, calls: int) -> List[Dict]:
    """:func:`top_kernels`' ranking of ``torch.profiler`` averages. On a GPU only the kernels count: an aten op's
    self device time is its kernels' time again, and user annotations (``## Call CompiledFxGraph``,
    ``Torch-Compiled Region``) span kernels too, so counting them would count each kernel twice."""
    def self_us(e) -> float:
        if not cuda:
            return e.self_cpu_time_total
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)  # torch < 2.4

    def counted(e) -> bool:
        if getattr(e, "is_user_annotation", False) or self_us(e) <= 0 or e.key.startswith(_MARKERS):
            return False
        return not cuda or getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA

    events = sorted((e for e in events if counted(e)), key=self_us, reverse=True)
    total = sum(self_us(e) for e in events) or 1.0
    return [{"name": e.key[:100], "ms": round(self_us(e) / 1e3 / calls, 4), "share": round(self_us(e) / total, 4)}
            for e in events[:k]]


def bench(name: str, batch: int, device: torch.device, dtype: torch.dtype, compile_: bool, runs: int,
          warmup: int, model_kwargs: Optional[Dict] = None, profile_top: int = 0, built: Optional[Dict] = None
          ) -> Dict:
    """One row. ``built``: a dict that keeps the last model built (the next batch size or compile mode of the same
    model reuses it instead of building it again; one model at a time, so the peak memory is this model's)."""
    model_kwargs = model_kwargs or {}
    key = (name, json.dumps(model_kwargs, sort_keys=True), str(device), dtype)
    if built is None or key not in built:
        if built:
            built.clear()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        torch.manual_seed(0)
        model = clipdfer.create_model(name, **model_kwargs).eval()
        clip = build_open_clip(model.clip_arch).visual.eval()
        clip.load_state_dict(model.image_encoder.visual.state_dict())
        pair = model.to(device, dtype), clip.to(device, dtype)
        if built is None:
            built = {}
        built[key] = pair
    model, clip = built[key]
    t, size = model.num_frames, model.pretrained_cfg.input_size[-1]
    video = torch.randn(batch, t, 3, size, size, device=device, dtype=dtype)
    frames = video.flatten(0, 1)
    fwd, floor = (torch.compile(model), torch.compile(clip)) if compile_ else (model, clip)
    timer = _timer(device)
    # models whose prompts can be re-encoded every call (DFER-CLIP's official behaviour) are also timed that way, in
    # eager mode only: compiled, each switch of the cache would compile the forward again (its guards change)
    reencode = isinstance(model, DFERCLIP) and not compile_

    def uncached():
        model.cache_text = False
        try:
            fwd(video)
        finally:
            model.cache_text = True

    with torch.inference_mode():
        for _ in range(warmup):
            fwd(video)
            floor(frames)
            if reencode:
                uncached()
        ms_model, ms_floor, ms_reencode = [], [], []
        for _ in range(runs):
            ms_model.append(timer(lambda: fwd(video)))
            ms_floor.append(timer(lambda: floor(frames)))
            if reencode:
                ms_reencode.append(timer(uncached))
        resident_mem = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            resident_mem = torch.cuda.memory_allocated(device) / 2 ** 20
            fwd(video)
            torch.cuda.synchronize(device)
        peak_mem = peak_memory_mb(device)
        kernels = top_kernels(lambda: fwd(video), device, profile_top) if profile_top else None
    with torch.device("meta"):
        meta_model = clipdfer.create_model(name, **model_kwargs)
    meta_model.to("meta")
    macs = count_macs(meta_model, torch.empty(batch, t, 3, size, size, device="meta"), "full")
    m, f = statistics.median(ms_model), statistics.median(ms_floor)
    row = {"model": name, "model_kwargs": model_kwargs, "batch_size": batch, "num_frames": t,
           "dtype": _DTYPE_NAMES[dtype], "compiled": compile_, "model_ms": m, "floor_ms": f, "ratio": m / f,
           "clips_per_s": batch / (m / 1e3), "tflops": 2 * macs / (m / 1e3) / 1e12, "peak_mem_mb": peak_mem,
           # what the forward itself adds above the resident tensors (both models' weights, the input)
           "forward_mem_mb": None if peak_mem is None else peak_mem - resident_mem}
    if reencode:
        r = statistics.median(ms_reencode)
        row.update(reencode_ms=r, cache_speedup=r / m)
    if kernels is not None:
        row["top_kernels"] = kernels
    return row


def _label(row: Dict) -> str:
    extra = {k: v for k, v in row.get("model_kwargs", {}).items() if k != "num_frames"}
    return f"`{row['model']}`" + "".join(f", `{k}={v!r}`" for k, v in extra.items())


def _mib(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0f}"


def markdown(rows: List[Dict], device: str) -> str:
    peaks = ", ".join(sorted({f"{r['dtype']} {r['matmul_peak_tflops']:.1f}" for r in rows}))
    head = (f"Device: {device}; matmul peak measured (TFLOP/s): {peaks}; torch {torch.__version__}, "
            f"open_clip {open_clip.__version__}\n\n| model | B | T | dtype | compiled | model ms | encode_image ms | "
            "ratio | clips/s | TFLOP/s | of peak | peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    table = head + "".join(
        f"| {_label(r)} | {r['batch_size']} | {r['num_frames']} | {r['dtype']} | {r['compiled']} | "
        f"{r['model_ms']:.2f} | {r['floor_ms']:.2f} | {r['ratio']:.3f} | {r['clips_per_s']:.1f} | "
        f"{r['tflops']:.2f} | {100 * r['peak_fraction']:.1f}% | "
        f"{_mib(r['peak_mem_mb'])} |\n" for r in rows)
    cached = [r for r in rows if "reencode_ms" in r]
    if cached:
        table += ("\nCached prompt features against re-encoding the prompts every call:\n\n"
                  "| model | B | dtype | compiled | "
                  "cached ms | re-encoding ms | speed-up |\n|---|---|---|---|---|---|---|\n" + "".join(
                      f"| {_label(r)} | {r['batch_size']} | {r['dtype']} | {r['compiled']} | {r['model_ms']:.2f} | "
                      f"{r['reencode_ms']:.2f} | {r['cache_speedup']:.2f}x |\n" for r in cached))
    return table


def main(argv=None) -> List[Dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="names or shell wildcards")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--num-frames", type=int, default=None,
                   help="T (default: each model's own); models whose temporal modules need another T refuse it")
    p.add_argument("--model-kwargs", default="{}", help="JSON of extra model arguments, e.g. '{\"interfit\": false}'")
    p.add_argument("--dtypes", "--dtype", nargs="+", choices=sorted(_DTYPES), default=["fp32"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", nargs="?", const="on", default="off", choices=["off", "on", "both"],
                   help="torch.compile both sides (on), or time eager and compiled (both)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--save", nargs="?", const="", metavar="PATH",
                   help="merge the rows into PATH (default benchmarks/results/forward-<device>.json)")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="also profile each configuration: its K costliest kernels (CPU: operators) in the row")
    p.add_argument("--markdown")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    names = [n for pattern in args.models for n in (clipdfer.list_models(pattern) or [pattern])]
    model_kwargs = json.loads(args.model_kwargs)
    if args.num_frames is not None:
        model_kwargs["num_frames"] = args.num_frames
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    rows = []
    peaks = {}  # measured once per dtype in this run; bf16's always (every row's bf16_peak_fraction)
    for dtype_name in args.dtypes:
        dtype = _DTYPES[dtype_name]
        for d in {dtype, torch.bfloat16} - set(peaks):
            peaks[d] = matmul_peak_tflops(device, d)
        peak = peaks[dtype]
        built: Dict = {}  # one dtype's models at a time
        for name, batch, compiled in itertools.product(names, args.batch_sizes, modes):
            row = bench(name, batch, device, dtype, compiled, args.runs, args.warmup, model_kwargs, args.profile,
                        built)
            row.update(matmul_peak_tflops=peak, peak_fraction=row["tflops"] / peak,
                       bf16_peak_fraction=row["tflops"] / peaks[torch.bfloat16])
            rows.append(row)
            if args.save is not None:  # row by row: a run stopped by a time limit keeps what it measured
                command = ["bench_forward.py"] + list(sys.argv[1:] if argv is None else argv)
                saved = save_rows("forward", device, [row], ROW_KEYS, args.save or None, command)
            extra = (f"; re-encoding the prompts every call {row['reencode_ms']:.2f} ms, the cache is "
                     f"{row['cache_speedup']:.2f}x faster" if "reencode_ms" in row else "")
            print(f"{name} B={batch} {dtype_name}{' compiled' if compiled else ''}: {row['model_ms']:.2f} ms "
                  f"vs encode_image {row['floor_ms']:.2f} ms, ratio {row['ratio']:.3f}, "
                  f"{row['clips_per_s']:.1f} clips/s, {100 * row['peak_fraction']:.1f}% of matmul peak{extra}",
                  flush=True)
    if args.save is not None and rows:
        print("wrote", saved)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, device_name(device)))
    return rows


if __name__ == "__main__":
    main()
