"""Benchmark results as data: every script's rows, with the machine they ran on, in one JSON file per script and device.

    benchmarks/results/<script>-<device>.json = {"environment": {...}, "command": "...", "keys": [...],
                                                 "rows": [{...}, ...]}

Each row carries ``device``, ``script``, ``torch_version`` and the ``command`` that measured it besides the script's
own fields, so rows from several files can be put side by side (the file's ``command`` is the last run's);
``environment`` names the device, its driver and the torch / CUDA / open_clip versions.
A rerun of a script on the same device replaces the rows it measured again (same values of the file's ``keys``) and
keeps the others. Files written elsewhere (a second GPU call's, which come back under their own folder) go in with

    python benchmarks/_results.py merge SECOND/results/*.json --into benchmarks/results/

which adds their rows as they are (device, versions and command stamped where they were measured). The device
tool's files come back read-only: merge each call's files (the first call's too) into benchmarks/results/.
``benchmarks/make_tables.py`` turns the files into the GPU tables of docs/benchmarks.md.
"""

import argparse
import functools
import json
import os
import platform
import re
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# every row of every script has these (issue 31, item 6), None where one does not apply; model_ms is the script's
# unit of work: a forward (forward), a call of the LSTM stack (lstm), a training step (train), a frame (predict)
SCHEMA = ("model", "batch_size", "num_frames", "dtype", "compiled", "model_ms")
DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_STAMPED = ("device", "script", "torch_version", "command")


def dtype_name(dtype) -> Optional[str]:
    """``fp32``, ``bf16`` or ``fp16`` for a torch dtype or its name (``torch.bfloat16``, ``bfloat16``, ``bf16``)."""
    if dtype is None:
        return None
    name = str(dtype).replace("torch.", "")
    name = DTYPE_NAMES.get(name, name)
    if name not in DTYPE_NAMES.values():
        raise ValueError(f"dtype {dtype!r} is not one the benchmarks report; expected one of "
                         f"{sorted(DTYPE_NAMES.values())} or their torch names")
    return name


def _check_schema(script: str, rows: Sequence[Dict]) -> None:
    for i, row in enumerate(rows):
        missing = [k for k in SCHEMA if k not in row]
        if missing:
            raise ValueError(f"{script} row {i} lacks {missing}: every results row has {list(SCHEMA)} (None where "
                             f"one does not apply); the row: {row}")
        dtype_name(row["dtype"])  # the short names only, so rows of every script compare


def device_name(device: torch.device) -> str:
    """``NVIDIA H200`` for a GPU; the processor and thread count for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def device_slug(device: torch.device) -> str:
    """A short file-name part for the device: the GPU's model (``H200``, ``A100-SXM4-80GB``), or ``cpu``."""
    if device.type != "cuda":
        return "cpu"
    name = re.sub(r"^NVIDIA\s+", "", torch.cuda.get_device_name(device))
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-") or "cuda"


def _driver_version() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def environment(device: torch.device) -> Dict:
    """What the numbers depend on besides the code: device, driver, library versions (asked once per device and
    process: a script saves a row at a time)."""
    return dict(_environment(device))


@functools.lru_cache(maxsize=None)
def _environment(device: torch.device) -> Dict:
    env = {"device": device_name(device), "torch_version": torch.__version__, "python": platform.python_version()}
    try:
        import open_clip
        env["open_clip_version"] = open_clip.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(cuda_version=torch.version.cuda, cudnn_version=torch.backends.cudnn.version(),
                   driver_version=_driver_version(), gpu_memory_gib=round(props.total_memory / 2 ** 30, 1))
    return env


def save_rows(script: str, device: torch.device, rows: Sequence[Dict], keys: Sequence[str],
              path: Optional[str] = None, command: Optional[Sequence[str]] = None) -> str:
    """Merge ``rows`` into ``path`` (default ``benchmarks/results/<script>-<device slug>.json``; a folder: that
    file name in it).

    Args:
        script: the script's name (``forward``, ``train``, ``predict``, ``lstm``).
        keys: the row fields that name a measurement; an old row with the same values is replaced.
        command: the script file and its arguments (default ``sys.argv``), recorded to rerun the measurement.

    Returns:
        The path written.
    """
    name = f"{script}-{device_slug(device)}.json"
    path = path or os.path.join(RESULTS_DIR, name)
    if path.endswith(os.sep) or os.path.isdir(path):  # a folder: the file is named as in benchmarks/results
        path = os.path.join(path, name)
    _check_schema(script, rows)
    env = environment(device)
    cmd = rerun_command(list(command) if command is not None else [os.path.basename(sys.argv[0])] + sys.argv[1:])
    # the device's name (not a row's "cuda"), and the command that measured each row: rows merged from several runs
    stamped = [{"device": env["device"], "script": script, "torch_version": env["torch_version"],
                **{k: v for k, v in row.items() if k not in _STAMPED}, "command": cmd} for row in rows]
    old: List[Dict] = []
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f).get("rows", [])

    merged = _replace_rows(old, stamped, keys)
    _write(path, {"environment": env, "command": cmd, "keys": list(keys), "rows": merged})
    return path


def _replace_rows(old: Sequence[Dict], new: Sequence[Dict], keys: Sequence[str]) -> List[Dict]:
    """``old`` less the rows that ``new`` measures again (the same values of ``keys``), then ``new``."""
    def key(row: Dict):
        return tuple(json.dumps(row.get(k), sort_keys=True) for k in keys)

    remeasured = {key(r) for r in new}
    return [r for r in old if key(r) not in remeasured] + list(new)


def failure_line(stderr: str, returncode: int) -> str:
    """What a failed child process's row says: the last line of its stderr (the exception), at most 300 characters."""
    return (stderr.strip().splitlines() or [f"exit status {returncode}"])[-1][:300]


def _write(path: str, data: Dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def _read_results(path: str, role: str) -> Dict:
    """A results file as save_rows writes it, or a ValueError that says what is wrong with it."""
    if not os.path.isfile(path):
        what = "a folder" if os.path.isdir(path) else "not there"
        raise ValueError(f"{role} {path!r} is {what}: expected a results file (benchmarks/results/<script>-<device>"
                         f".json); for a folder's files pass them all, e.g. {os.path.join(path, '*.json')}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{role} {path!r} is not JSON ({e}): expected a results file written by a benchmark's "
                         f"--save") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{role} {path!r} holds {type(data).__name__} without a 'rows' list: expected "
                         f"{{'environment': ..., 'keys': [...], 'rows': [...]}} as a benchmark's --save writes")
    return data


def _read_source(path: str) -> Dict:
    data = _read_results(path, "source")
    if not data.get("keys"):
        raise ValueError(f"{path} names no 'keys' (the fields that name a measurement): it was not written by "
                         f"_results.save_rows; rerun its command with --save")
    return data


def merge_files(src: str, dst: str) -> str:
    """Add the rows of results file ``src`` to ``dst`` (a ``.json`` file, or an existing folder: the same file name
    in it) as they are: a row of ``dst`` with the same values of the file's ``keys`` is replaced, the others kept.
    Unlike :func:`save_rows` nothing is stamped again: each row keeps the device, torch version and command it was
    measured with; the file's ``environment`` and ``command`` become ``src``'s (the newer run's).

    Raises:
        ValueError: ``src`` is not a results file with ``keys`` (written by :func:`save_rows`), ``dst`` is neither a
            folder nor a ``.json`` path, is ``src`` itself, or names its rows by other keys. ``dst`` is left as it was.
    """
    if os.path.isdir(dst):
        dst = os.path.join(dst, os.path.basename(src))
    elif not dst.endswith(".json"):
        raise ValueError(f"--into {dst!r} is no folder and no .json file: create the folder first (mkdir -p "
                         f"{dst}), or name the file to merge into")
    new = _read_source(src)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"{src} is the file it would be merged into: merge it into another folder (such as "
                         f"benchmarks/results/)")
    _check_schema(new["rows"][0].get("script", src) if new["rows"] else src, new["rows"])
    old: Dict = {}
    if os.path.exists(dst):
        old = _read_results(dst, "target")
        if old.get("keys") not in (None, new["keys"]):
            raise ValueError(f"{src} names its rows by {new['keys']} and {dst} by {old['keys']}: they are not "
                             f"results of one script; merge into another file")

    _write(dst, {**new, "rows": _replace_rows(old.get("rows", []), new["rows"], new["keys"])})
    return dst


def rerun_command(argv: Sequence[str]) -> str:
    """The command line that measures the rows again, quoted for a POSIX shell; a ``--save`` destination is left
    out (where this run wrote is a detail of this run: without it the rows go to benchmarks/results/)."""
    import shlex
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("--save="):
            arg = "--save"
        elif arg == "--save" and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            skip = True
        out.append(arg)
    return "python " + shlex.join(["benchmarks/" + out[0]] + out[1:])


def peak_memory_mb(device: torch.device) -> Optional[float]:
    """``torch.cuda.max_memory_allocated`` since the last reset, in MiB (None on the CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="add results files' rows to those of the same name in --into")
    m.add_argument("files", nargs="+")
    m.add_argument("--into", default=RESULTS_DIR, help="an existing folder or a .json file (default "
                   "benchmarks/results/, made if missing)")
    args = p.parse_args(argv)
    if args.into == RESULTS_DIR:
        os.makedirs(RESULTS_DIR, exist_ok=True)
    for path in args.files:  # every source is read before any target is written
        try:
            _read_source(path)
        except ValueError as e:
            print(f"_results.py merge: {e}", file=sys.stderr)
            return 2
    for path in args.files:
        try:
            print("merged", path, "into", merge_files(path, args.into))
        except ValueError as e:
            print(f"_results.py merge: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
