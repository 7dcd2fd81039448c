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


def interfit_floor(model, batch_size, runs):
    """Lower bounds for InterFIT's extra cost that no implementation can beat at this batch size, in ms:
    reading each of its parameters once, and its 2 x T recurrent matrix-vector products per layer alone."""
    enc = getattr(model, "image_encoder", None)
    if not hasattr(enc, "interaction"):
        return None
    # the recurrent weights are counted in the products (their first read comes from memory there)
    params = [p for name, p in enc.interaction.named_parameters() if not name.endswith("weight_hh_t")]
    lstms = [layer.bilstm for layer in enc.interaction]
    t = model.num_frames

    def read_all(_):
        for p in params:
            p.sum()

    def recurrent(_):
        for m in lstms:
            h = m.weight_hh_t.new_zeros(2, batch_size, m.hidden_size)
            g = m.weight_hh_t.new_zeros(2, batch_size, 4 * m.hidden_size)
            for _ in range(t):
                torch.baddbmm(g, h, m.weight_hh_t)

    with torch.inference_mode():
        read_all(None), recurrent(None)
        read = statistics.median(_time(read_all, None) for _ in range(runs))
        rec = statistics.median(_time(recurrent, None) for _ in range(runs))
    n = sum(p.numel() for p in enc.interaction.parameters())
    return {"interfit_params_m": n / 1e6, "read_params_ms": 1e3 * read, "recurrent_products_ms": 1e3 * rec}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clipdfer_vitb32_dfew")
    parser.add_argument("--model-kwargs", default="{}", help="JSON of model arguments, e.g. '{\"interfit\": false}'")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    parser.add_argument("--floor", action="store_true", help="also measure InterFIT's memory-bound lower bounds")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model_kwargs = json.loads(args.model_kwargs)
    model = clipdfer.create_model(args.model, **model_kwargs).eval()
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
        "model": args.model, "model_kwargs": model_kwargs, "batch_size": args.batch_size, "num_frames": t,
        "dtype": "float32",
        "model_ms": 1e3 * statistics.median(model_s), "encode_image_ms": 1e3 * statistics.median(clip_s),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "open_clip": open_clip.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    result["ratio"] = result["model_ms"] / result["encode_image_ms"]
    print(f"{args.model} {model_kwargs or ''}  B={args.batch_size} T={t} fp32 CPU ({result['threads']} threads): "
          f"model {result['model_ms']:.1f} ms, open_clip encode_image {result['encode_image_ms']:.1f} ms, "
          f"ratio {result['ratio']:.3f}")
    if args.floor:
        floor = interfit_floor(model, args.batch_size, max(5, args.runs // 3))
        if floor:
            result["interfit_floor"] = floor
            lower = floor["read_params_ms"] + floor["recurrent_products_ms"]
            print(f"InterFIT floor: {floor['interfit_params_m']:.1f} M parameters; the non-recurrent ones read once "
                  f"{floor['read_params_ms']:.1f} ms + recurrent products alone {floor['recurrent_products_ms']:.1f} ms"
                  f" = {lower:.1f} ms, i.e. ratio >= {1 + lower / result['encode_image_ms']:.3f} before any other work")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
