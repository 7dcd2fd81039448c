"""CPU cost of a clipdfer model against open_clip's ``encode_image`` of the same frames, in one process.

    python benchmarks/bench_cpu_overhead.py --model clipdfer_vitb32_dfew --batch-size 1 --runs 30

The ratio (model forward / encode_image of its B*T frames) is what the temporal modules and prompts cost on top of
the CLIP floor. Both run in eval mode under ``torch.inference_mode`` on the same weights; runs alternate between the
two so that drift in machine load hits both alike; medians are reported.
"""

import argparse
import json
import platform
import statistics
import time

import open_clip
import torch

import clipdfer
from clipdfer.layers import build_open_clip


def _time(fn, x):
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clipdfer_vitb32_dfew")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = clipdfer.create_model(args.model).eval()
    clip = build_open_clip(model.clip_arch).eval()
    clip.visual.load_state_dict(model.image_encoder.visual.state_dict())
    t = model.num_frames
    size = model.image_encoder.image_size
    video = torch.randn(args.batch_size, t, 3, size, size)
    frames = video.flatten(0, 1)

    with torch.inference_mode():
        for _ in range(args.warmup):
            model(video)
            clip.encode_image(frames)
        model_s, clip_s = [], []
        for _ in range(args.runs):
            model_s.append(_time(model, video))
            clip_s.append(_time(clip.encode_image, frames))
    result = {
        "model": args.model, "batch_size": args.batch_size, "num_frames": t, "dtype": "float32",
        "model_ms": 1e3 * statistics.median(model_s), "encode_image_ms": 1e3 * statistics.median(clip_s),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "open_clip": open_clip.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    result["ratio"] = result["model_ms"] / result["encode_image_ms"]
    print(f"{args.model}  B={args.batch_size} T={t} fp32 CPU ({result['threads']} threads): "
          f"model {result['model_ms']:.1f} ms, open_clip encode_image {result['encode_image_ms']:.1f} ms, "
          f"ratio {result['ratio']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
