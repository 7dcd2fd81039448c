"""The CPU measurements behind the implementation choices described in docs/benchmarks.md.

    python benchmarks/bench_cpu_kernels.py layouts            # few-row matmuls: operand layouts vs reading the weights
    python benchmarks/bench_cpu_kernels.py mlp --batch-size 8 # CLIP's QuickGELU MLP folded vs open_clip's module

``layouts``: InterFIT at B = 1 multiplies large weights by 8 token rows. For each weight shape of a ViT-B/32 InterFIT
layer (12 copies, as in the model, so that caches do not hold them), it times the product in several operand layouts
and a plain ``sum`` over the same weights (the memory-read floor), and reports GB/s of weight traffic.

``mlp``: the visual tower on B x 8 frames, open_clip's ``encode_image`` against clipdfer's frame encoder with the
folded QuickGELU MLP (``clip_block_mlp``) and with open_clip's MLP module, alternated in one process.
"""

import argparse
import statistics
import time
from typing import Callable, Dict

import torch

import clipdfer
import clipdfer.layers.clip as clip_layers
from clipdfer.layers import build_open_clip


def _median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def layouts(runs: int, rows: int = 8, copies: int = 12) -> Dict[str, Dict[str, float]]:
    torch.manual_seed(0)
    results = {}
    for n, k in [(6144, 768), (2304, 768), (768, 1536), (768, 768)]:
        w = [torch.randn(n, k) for _ in range(copies)]  # (N, K) row-major, as nn.Linear stores it
        w_t = [x.t().contiguous() for x in w]  # (K, N) row-major
        b = torch.randn(n)
        x = torch.randn(rows, k)
        x_t = x.t().contiguous()
        cases = {
            "W @ x.T (view)": lambda: [torch.addmm(b[:, None], m, x.t()) for m in w],
            "W @ x.T (contiguous)": lambda: [torch.addmm(b[:, None], m, x_t) for m in w],
            "x @ W.T (F.linear)": lambda: [torch.addmm(b, x, m.t()) for m in w],
            "x @ W_t (contiguous)": lambda: [torch.addmm(b, x, m) for m in w_t],
            "sum of W (read floor)": lambda: [m.sum() for m in w],
        }
        mb = copies * n * k * 4 / 1e6
        with torch.inference_mode():
            ms = {name: _median_ms(fn, runs) for name, fn in cases.items()}
        results[f"({n}, {k})"] = {name: mb / v for name, v in ms.items()}  # MB / ms = GB/s
        print(f"weight ({n}, {k}) x {copies} = {mb:.0f} MB, {rows} rows: " + ", ".join(
            f"{name} {v:.1f} ms ({mb / v:.1f} GB/s)" for name, v in ms.items()), flush=True)
    return results


def mlp(batch_size: int, runs: int, model_name: str = "clipdfer_vitb32_dfew") -> Dict[str, float]:
    torch.manual_seed(0)
    model = clipdfer.create_model(model_name, interfit=False).eval()
    clip = build_open_clip(model.clip_arch).eval()
    clip.visual.load_state_dict(model.image_encoder.visual.state_dict())
    size = model.image_encoder.image_size
    video = torch.randn(batch_size, model.num_frames, 3, size, size)
    frames = video.flatten(0, 1)
    folded = clip_layers.clip_block_mlp

    def module_mlp():
        clip_layers.clip_block_mlp = lambda m, h: m(h)
        try:
            return model.image_encoder(video)
        finally:
            clip_layers.clip_block_mlp = folded

    cases = {"open_clip encode_image": lambda: clip.encode_image(frames),
             "ours, folded MLP": lambda: model.image_encoder(video),
             "ours, open_clip's MLP module": module_mlp}
    with torch.inference_mode():
        diff = (model.image_encoder(video).flatten(0, 1) - clip.encode_image(frames)).abs().max().item()
        for fn in cases.values():
            fn()
        times = {name: [] for name in cases}
        for _ in range(runs):  # alternate, so that drift in machine load hits all alike
            for name, fn in cases.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    result = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    print(f"visual tower on {batch_size} x {model.num_frames} frames: " +
          ", ".join(f"{name} {v:.1f} ms" for name, v in result.items()) + f"; max abs difference {diff:.1e}")
    result["max_abs_diff"] = diff
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["layouts", "mlp"])
    parser.add_argument("--batch-size", type=int, default=8, help="clips for 'mlp'")
    parser.add_argument("--model", default="clipdfer_vitb32_dfew", help="a CLIP-Guided DFER model for 'mlp'")
    parser.add_argument("--runs", type=int, default=None, help="default 30 for 'layouts', 5 for 'mlp'")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "layouts":
        return layouts(args.runs or 30)
    return mlp(args.batch_size, args.runs or 5, args.model)


if __name__ == "__main__":
    main()
