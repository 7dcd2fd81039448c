"""Markdown tables from the benchmark results (``benchmarks/results/*.json``), for docs/benchmarks.md.

    python benchmarks/make_tables.py                      # print the tables of every results file
    python benchmarks/make_tables.py --doc docs/benchmarks.md  # replace the block between the results markers

One table per file (a script on a device), headed by the device, its driver and the library versions the rows were
measured with, and the commands that wrote them. Numbers are printed as measured, rounded for reading.
"""

import argparse
import glob
import json
import os
import sys
from typing import Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
_HIDDEN = {"device", "script", "torch_version", "matmul_peak_tflops", "command",  # in the heading instead
           "top_kernels"}  # listed under the table
_TITLES = {"forward": "Forward pass", "train": "Training step", "predict": "Prediction", "lstm": "InterFIT's LSTM"}


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if key.endswith(("fraction", "share", "ratio")):
            return f"{100 * value:.1f}%" if key.endswith(("fraction", "share")) else f"{value:.3f}"
        return f"{value:.2f}" if abs(value) < 1e4 else f"{value:.0f}"
    if isinstance(value, dict):
        return ", ".join(f"`{k}={v!r}`" for k, v in value.items()) or "-"
    if key == "model":
        return f"`{value}`"
    return str(value)


# what model_ms is in each script's rows (see _results.SCHEMA)
_MODEL_MS = {"train": "model_ms (step)", "predict": "model_ms (per frame)", "lstm": "model_ms (LSTM stack)"}


def _columns(rows: Sequence[Dict]) -> List[str]:
    hidden = set(_HIDDEN)
    if len({r.get("torch_version") for r in rows}) > 1:  # rows merged from runs of several torch versions
        hidden.discard("torch_version")
    cols: List[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols and k not in hidden]
    return [c for c in cols if any(r.get(c) not in (None, {}, "") for r in rows)]


def _table(script: str, rows: Sequence[Dict]) -> str:
    cols = _columns(rows)
    titles = [_MODEL_MS.get(script, c) if c == "model_ms" else c for c in cols]
    return ("| " + " | ".join(titles) + " |\n|" + "---|" * len(cols) + "\n"
            + "".join("| " + " | ".join(_cell(c, r.get(c)) for c in cols) + " |\n" for r in rows))


def render_file(path: str) -> str:
    with open(path) as f:
        data = json.load(f)
    rows, env = data.get("rows", []), data.get("environment", {})
    if not rows:
        return ""
    script = rows[0].get("script", os.path.basename(path).split("-")[0])
    versions = ", ".join(f"{k.replace('_version', '')} {v}" for k, v in env.items()
                         if k.endswith("_version") and v is not None)
    measured: Dict[str, List[float]] = {}  # each run measures the peak again: the range of those it measured
    for r in rows:
        if r.get("matmul_peak_tflops"):
            measured.setdefault(r["dtype"], []).append(r["matmul_peak_tflops"])
    peaks = [f"{d} {min(v):.1f}" + (f"-{max(v):.1f}" if f"{max(v):.1f}" != f"{min(v):.1f}" else "")
             for d, v in sorted(measured.items())]
    commands = list(dict.fromkeys(r["command"] for r in rows if r.get("command"))) or [data.get("command", "?")]
    head = (f"### {_TITLES.get(script, script)}: {env.get('device', rows[0].get('device'))}\n\n"
            f"{versions}" + (f"; GPU memory {env['gpu_memory_gib']} GiB" if env.get("gpu_memory_gib") else "")
            + (f"; matmul peak measured (TFLOP/s): {', '.join(peaks)}" if peaks else "")
            + f". Written by {', '.join(f'`{c}`' for c in commands)}"
            + f" (`{os.path.basename(path)}`).\n\n")
    modes = list(dict.fromkeys(r.get("mode") for r in rows))  # predict's modes measure different things
    tables = [(f"Mode `{m}`:\n\n" if len(modes) > 1 else "") + _table(script, [r for r in rows if r.get("mode") == m])
              for m in modes]
    return head + "\n".join(tables) + _kernels(rows)


def _kernels(rows: Sequence[Dict]) -> str:
    """The profiled rows' costliest kernels (bench_forward.py --profile), one line per row under the table."""
    lines = []
    for r in rows:
        if r.get("top_kernels"):
            what = ", ".join(f"{k}={_cell(k, r.get(k))}" for k in ("model", "batch_size", "dtype", "compiled"))
            kernels = "; ".join(f"`{k['name']}` {100 * k['share']:.1f}% ({k['ms']:.3f} ms)" for k in r["top_kernels"])
            lines.append(f"- {what}: {kernels}\n")
    if not lines:
        return ""
    return "\nCostliest kernels (share of the kernels' self time, ms per forward):\n\n" + "".join(lines)


def render(paths: Sequence[str]) -> str:
    return "\n".join(t for t in (render_file(p) for p in sorted(paths)) if t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", nargs="+", default=None,
                   help="result files (default: benchmarks/results/*.json)")
    p.add_argument("--doc", help=f"replace the block between {BEGIN} and {END} in this file")
    args = p.parse_args(argv)
    paths = args.results or sorted(glob.glob(os.path.join(HERE, "results", "*.json")))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        print(f"make_tables.py: no results file {missing[0]!r}: give files a benchmark's --save wrote (default: "
              f"benchmarks/results/*.json)", file=sys.stderr)
        return 2
    text = render(paths)
    if not args.doc:
        print(text)
        return 0
    with open(args.doc) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        print(f"{args.doc} has no {BEGIN} ... {END} block to fill", file=sys.stderr)
        return 2
    before, rest = doc.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    with open(args.doc, "w") as f:
        f.write(f"{before}{BEGIN}\n{text}{END}{after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
