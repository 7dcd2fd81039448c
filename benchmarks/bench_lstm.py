"""InterFIT's BiLSTM implementations against ``nn.LSTM``, on the CPU or a CUDA GPU.

    python benchmarks/bench_lstm.py --device cuda --dtype bf16 --batch-sizes 1 32
    python benchmarks/bench_lstm.py --device cpu --batch-sizes 1 8

Times one forward of ``layers`` independent BiLSTMs (12, one per ViT-B/32 layer, width 768, T = 8, as in InterFIT)
for each implementation:

- ``native``: :class:`clipdfer.layers.BiLSTM` with ``impl="native"`` (``torch.lstm``, cuDNN on a GPU, on views of
  our stacked weights);
- ``unrolled``: the same module with ``impl="unrolled"`` (:func:`clipdfer.layers.temporal.bilstm_unrolled`);
- ``nn.LSTM``: PyTorch's module with flattened weights (its cuDNN weight buffer), plus the same output Linear.

cuDNN wants all weights of an LSTM in one buffer of its own layout. Our stacked parameters are not such a buffer, so
on a GPU ``torch.lstm`` may copy them into one at every call: the ``compaction_warning`` column says whether PyTorch
warned about that during the run, and the gap between ``native`` and ``nn.LSTM`` is what it costs.
"""

import argparse
import statistics
import time
import warnings
from typing import Dict, List

import torch

from _results import dtype_name
from clipdfer.layers import BiLSTM

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _time_ms(fn, device: torch.device, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def bench(device: torch.device, dtype: torch.dtype, batch: int, width: int = 768, steps: int = 8, layers: int = 12,
          runs: int = 20, warmup: int = 3) -> List[Dict]:
    torch.manual_seed(0)
    ours = [BiLSTM(width, width, width).to(device, dtype).eval() for _ in range(layers)]
    refs = []
    for m in ours:
        lstm = m.to_lstm().to(device, dtype)
        lstm.flatten_parameters()
        refs.append((lstm, m.proj))
    x = torch.randn(batch, steps, width, device=device, dtype=dtype)

    def run_ours(impl):
        def fn():
            for m in ours:
                m.impl = impl
                m(x)
        return fn

    def run_ref():
        for lstm, proj in refs:
            proj(lstm(x)[0])

    rows = []
    with torch.inference_mode():
        for name, fn in (("native", run_ours("native")), ("unrolled", run_ours("unrolled")), ("nn.LSTM", run_ref)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ms = _time_ms(fn, device, runs, warmup)
            compaction = any("contiguous chunk of memory" in str(w.message) for w in caught)
            rows.append({"model": "InterFIT LSTM", "impl": name, "batch_size": batch, "num_frames": steps,
                         "width": width, "layers": layers, "dtype": dtype_name(dtype), "compiled": False,
                         "model_ms": ms, "compaction_warning": compaction})
    return rows


def main(argv=None) -> List[Dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="fp32")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--save", nargs="?", const="", metavar="PATH",
                   help="merge the rows into PATH (default benchmarks/results/lstm-<device>.json)")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), _DTYPES[args.dtype]
    import sys

    from _results import save_rows
    command = ["bench_lstm.py"] + list(sys.argv[1:] if argv is None else argv)
    rows = []
    for batch in args.batch_sizes:
        measured = bench(device, dtype, batch, args.width, args.num_frames, args.layers, args.runs, args.warmup)
        for row in measured:
            rows.append(row)
            print(f"{row['impl']:9s} B={batch} T={row['num_frames']} {row['dtype']} {device}: "
                  f"{row['model_ms']:.3f} ms for {row['layers']} layers"
                  f"{'  (PyTorch warned: weights compacted at every call)' if row['compaction_warning'] else ''}",
                  flush=True)
        if args.save is not None:  # batch by batch: a run stopped by a time limit keeps what it measured
            keys = ("impl", "batch_size", "num_frames", "dtype", "width", "layers")
            print("wrote", save_rows("lstm", device, measured, keys, args.save or None, command), flush=True)
    return rows


if __name__ == "__main__":
    main()
