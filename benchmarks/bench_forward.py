"""Forward time of clipdfer models against the CLIP floor, on the CPU or a CUDA GPU.

    python benchmarks/bench_forward.py "clipdfer_vitb32_*" dferclip_vitb32_dfew --batch-sizes 1 32 \\
        --dtype bf16 --device cuda --compile --json fwd.json --markdown fwd.md

For each model and batch size, eval mode under ``torch.inference_mode``: the model's forward and open_clip's bare
``encode_image`` of the same B x T frames with the same visual weights (the floor of any CLIP-based DFER model) are
timed alternately after warm-up (CUDA events on a GPU, ``perf_counter`` on the CPU); medians are reported, with the
ratio, clips per second, the achieved matmul throughput (full multiply-accumulate count x 2 / time) and its fraction
of this device's matmul peak measured by a large GEMM in the same dtype. bf16 / fp16 cast both models' weights.
"""

import argparse
import json
import platform
import statistics
import time
from typing import Dict, List, Optional

import open_clip
import torch

import clipdfer
from clipdfer.layers import build_open_clip
from clipdfer.models import DFERCLIP
from clipdfer.profiling import count_macs

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def bench(name: str, batch: int, device: torch.device, dtype: torch.dtype, compile_: bool, runs: int,
          warmup: int, model_kwargs: Optional[Dict] = None) -> Dict:
    torch.manual_seed(0)
    model_kwargs = model_kwargs or {}
    model = clipdfer.create_model(name, **model_kwargs).eval()
    clip = build_open_clip(model.clip_arch).visual.eval()
    clip.load_state_dict(model.image_encoder.visual.state_dict())
    model, clip = model.to(device, dtype), clip.to(device, dtype)
    t, size = model.num_frames, model.pretrained_cfg.input_size[-1]
    video = torch.randn(batch, t, 3, size, size, device=device, dtype=dtype)
    frames = video.flatten(0, 1)
    fwd, floor = (torch.compile(model), torch.compile(clip)) if compile_ else (model, clip)
    timer = _timer(device)
    # models whose prompts can be re-encoded every call (DFER-CLIP's official behaviour) are also timed that way
    reencode = isinstance(model, DFERCLIP)

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
    with torch.device("meta"):
        meta_model = clipdfer.create_model(name, **model_kwargs)
    meta_model.to("meta")
    macs = count_macs(meta_model, torch.empty(batch, t, 3, size, size, device="meta"), "full")
    m, f = statistics.median(ms_model), statistics.median(ms_floor)
    row = {"model": name, "model_kwargs": model_kwargs, "batch_size": batch, "num_frames": t,
           "dtype": str(dtype).split(".")[-1],
           "compile": compile_, "model_ms": m, "encode_image_ms": f, "ratio": m / f,
           "clips_per_s": batch / (m / 1e3), "achieved_tflops": 2 * macs / (m / 1e3) / 1e12}
    if reencode:
        r = statistics.median(ms_reencode)
        row.update(reencode_prompts_ms=r, prompt_cache_speedup=r / m)
    return row


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _label(row: Dict) -> str:
    extra = {k: v for k, v in row.get("model_kwargs", {}).items() if k != "num_frames"}
    return f"`{row['model']}`" + "".join(f", `{k}={v!r}`" for k, v in extra.items())


def markdown(rows: List[Dict], device: str, peak: float) -> str:
    head = (f"Device: {device}; matmul peak measured {peak:.1f} TFLOP/s; torch {torch.__version__}, "
            f"open_clip {open_clip.__version__}\n\n| model | B | T | dtype | compile | model ms | encode_image ms | "
            "ratio | clips/s | TFLOP/s | of peak |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    table = head + "".join(
        f"| {_label(r)} | {r['batch_size']} | {r['num_frames']} | {r['dtype']} | {r['compile']} | "
        f"{r['model_ms']:.2f} | {r['encode_image_ms']:.2f} | {r['ratio']:.3f} | {r['clips_per_s']:.1f} | "
        f"{r['achieved_tflops']:.2f} | {100 * r['fraction_of_peak']:.1f}% |\n" for r in rows)
    cached = [r for r in rows if "reencode_prompts_ms" in r]
    if cached:
        table += ("\nCached prompt features against re-encoding the prompts every call:\n\n"
                  "| model | B | dtype | compile | "
                  "cached ms | re-encoding ms | speed-up |\n|---|---|---|---|---|---|---|\n" + "".join(
                      f"| {_label(r)} | {r['batch_size']} | {r['dtype']} | {r['compile']} | {r['model_ms']:.2f} | "
                      f"{r['reencode_prompts_ms']:.2f} | {r['prompt_cache_speedup']:.2f}x |\n" for r in cached))
    return table


def main(argv=None) -> List[Dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="names or shell wildcards")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--num-frames", type=int, default=None,
                   help="T (default: each model's own); models whose temporal modules need another T refuse it")
    p.add_argument("--model-kwargs", default="{}", help="JSON of extra model arguments, e.g. '{\"interfit\": false}'")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile both sides")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json")
    p.add_argument("--markdown")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), _DTYPES[args.dtype]
    names = [n for pattern in args.models for n in (clipdfer.list_models(pattern) or [pattern])]
    model_kwargs = json.loads(args.model_kwargs)
    if args.num_frames is not None:
        model_kwargs["num_frames"] = args.num_frames
    peak = matmul_peak_tflops(device, dtype)
    rows = []
    for name in names:
        for batch in args.batch_sizes:
            row = bench(name, batch, device, dtype, args.compile, args.runs, args.warmup, model_kwargs)
            row["fraction_of_peak"] = row["achieved_tflops"] / peak
            rows.append(row)
            extra = (f"; re-encoding the prompts every call {row['reencode_prompts_ms']:.2f} ms, the cache is "
                     f"{row['prompt_cache_speedup']:.2f}x faster" if "reencode_prompts_ms" in row else "")
            print(f"{name} B={batch} {row['dtype']}{' compiled' if args.compile else ''}: {row['model_ms']:.2f} ms "
                  f"vs encode_image {row['encode_image_ms']:.2f} ms, ratio {row['ratio']:.3f}, "
                  f"{row['clips_per_s']:.1f} clips/s, {100 * row['fraction_of_peak']:.1f}% of matmul peak{extra}",
                  flush=True)
    dev = device_name(device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "matmul_peak_tflops": peak, "rows": rows}, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, dev, peak))
    return rows


if __name__ == "__main__":
    main()
