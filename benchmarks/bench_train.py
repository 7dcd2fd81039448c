"""Time and peak memory of one training step, with and without gradient checkpointing, in fp32 and bf16.

    python benchmarks/bench_train.py clipdfer_vitb32_dfew --batch-sizes 8 32 64 --device cuda --save

A step is forward, loss (the model's ``training_losses``: cross-entropy, or its family's losses), backward and an AdamW
step over the trainable parameters, in training mode; bf16 runs under autocast with fp32 weights. Each configuration
runs in a fresh process, so the peak memory is its own: ``torch.cuda.max_memory_allocated`` on a GPU, the process's
peak resident set (``ru_maxrss``, which includes the Python runtime and libraries) on the CPU. A row's ``model_ms`` is
the median step; a configuration that runs out of memory gives a row with ``oom`` and skips the larger batches, one
that fails otherwise a row with the ``error`` (its last line) and the run goes on. Configurations run without
gradient checkpointing for every model first, then with it, so that a run cut short by a time limit has each model's
plain step.
"""

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time


def child(cfg: dict) -> dict:
    import torch

    import clipdfer
    device = torch.device(cfg["device"])
    torch.manual_seed(0)
    model = clipdfer.create_model(cfg["model"]).to(device).train()
    if cfg["grad_checkpointing"]:
        model.set_grad_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    t, size = model.num_frames, model.pretrained_cfg.input_size[-1]
    video = torch.randn(cfg["batch_size"], t, 3, size, size, device=device)
    labels = torch.arange(cfg["batch_size"], device=device) % model.num_classes
    dtype = torch.bfloat16 if cfg["dtype"] == "bf16" else None

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model.training_losses(video, labels, 0.5)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(cfg["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(cfg["steps"]):
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    # model_ms: one training step (forward, backward, optimizer step), the median of cfg["steps"]
    return {**cfg, "num_frames": t, "compiled": False, "model_ms": statistics.median(times),
            "peak_mem_mb": peak / 2 ** 20,
            "memory_kind": "cuda max allocated" if device.type == "cuda" else "process peak RSS"}


ROW_KEYS = ("model", "batch_size", "dtype", "grad_checkpointing")  # what names a measurement


def _save(args, argv, device, rows) -> None:
    from _results import save_rows
    command = ["bench_train.py"] + list(sys.argv[1:] if argv is None else argv)
    print("wrote", save_rows("train", device, rows, ROW_KEYS, args.save or None, command), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*")
    p.add_argument("--batch-sizes", "--batch-size", type=int, nargs="+", default=[8],
                   help="ascending; a configuration that runs out of memory is recorded and its larger sizes skipped")
    p.add_argument("--device", default=None)
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--grad-checkpointing", choices=["off", "on", "both"], default="both")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--save", nargs="?", const="", metavar="PATH",
                   help="merge the rows into PATH (default benchmarks/results/train-<device>.json)")
    p.add_argument("--markdown")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return None
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ckpts = {"off": [False], "on": [True], "both": [False, True]}[args.grad_checkpointing]
    rows = []
    for ckpt, dtype, name in itertools.product(ckpts, args.dtypes, args.models):
        for batch in sorted(args.batch_sizes):
            cfg = {"model": name, "batch_size": batch, "device": device, "dtype": dtype,
                   "grad_checkpointing": ckpt, "steps": args.steps, "warmup": args.warmup}
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True,
                                 text=True)
            if out.returncode and "OutOfMemoryError" in out.stderr:
                rows.append({**cfg, "num_frames": None, "compiled": False, "model_ms": None, "peak_mem_mb": None,
                             "oom": True})
                if args.save is not None:
                    _save(args, argv, torch.device(device), rows[-1:])
                print(f"{name} B={batch} {dtype} grad-ckpt={ckpt}: out of memory; larger batches skipped", flush=True)
                break
            if out.returncode:  # recorded (its last line), the others still run; the whole error on stderr
                print(f"{name} B={batch} {dtype} grad-ckpt={ckpt} failed ({out.returncode}):\n{out.stderr[-3000:]}",
                      file=sys.stderr, flush=True)
                from _results import failure_line
                row = {**cfg, "num_frames": None, "compiled": False, "model_ms": None, "peak_mem_mb": None,
                       "error": failure_line(out.stderr, out.returncode)}
                rows.append(row)
                if args.save is not None:
                    _save(args, argv, torch.device(device), [row])
                break  # larger batches of a failing configuration fail too
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            if args.save is not None:  # row by row: a run stopped by a time limit keeps what it measured
                _save(args, argv, torch.device(device), [row])
            print(f"{name} B={batch} {dtype} grad-ckpt={ckpt}: {row['model_ms']:.1f} ms/step, "
                  f"peak {row['peak_mem_mb']:.0f} MiB ({row['memory_kind']})", flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| model | B | dtype | grad ckpt | ms/step | peak MiB | memory |\n|---|---|---|---|---|---|---|\n")
            for r in rows:
                ms = ("out of memory" if r.get("oom") else f"failed: {r['error']}" if r.get("error")
                      else f"{r['model_ms']:.1f}")
                mem = "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
                f.write(f"| `{r['model']}` | {r['batch_size']} | {r['dtype']} | {r['grad_checkpointing']} | "
                        f"{ms} | {mem} | {r.get('memory_kind', '-')} |\n")
    return rows


if __name__ == "__main__":
    main()
