"""Throughput of ``clipdfer predict``: one video (what face tracking costs) and many videos (processes, threads).

    python benchmarks/bench_predict.py --model clip_zeroshot_vitb32 --seconds 30 --detect-every 1 2 3
    python benchmarks/bench_predict.py --detectors          # YuNet vs Haar, ms per 640x360 frame
    python benchmarks/bench_predict.py --many 8 --processes 1 2 --model clip_zeroshot_vitb32   # a corpus

    python benchmarks/bench_predict.py --realtime CLIP.mp4 --dtypes fp32 auto --runs 3   # the whole command

``--realtime CLIP`` runs ``python -m clipdfer predict CLIP --json --no-pretrained`` once per model, dtype and run, in a
fresh process each time, and reports the wall time of the whole command (start-up included), the x-real-time factor
(the clip's duration / that wall time), the start-up (wall time minus the run's own ``total_s``: imports, building
the model, casting it; the time until the first frame is asked for), and the run's stages from the result's
``timings``: decode, detect+track, crop, model. Default models: each family's default size that predict offers
(``--models`` to choose); rows give the median run.

The video is made from the sample clip's face (no download, no data): two faces on a textured 640x360 frame, one
moving sideways at 10 px per frame, the other leaving half way, at 8 frames per second (``--seconds`` of it). For each
``--detect-every`` k it reports end-to-end frames per second of :class:`clipdfer.inference.Predictor` (detection,
tracking, crops, the model; the frames are in memory, so decoding is not timed), the share of time spent detecting
and tracking, and how far the tracked boxes are from searching every frame: the mean and the minimum IoU of each
frame's box with the detection in that frame. Models run with random weights (the speed is the same); a warm-up on
the first 16 frames (``--many``: on the first video) runs before each timing.

``--many N`` writes N such videos (``--seconds`` each, 25 frames/s, H.264) to a temporary folder and runs them as
``clipdfer predict DIR --out OUT`` does (:class:`clipdfer.inference.BatchRun`, sampled at 8 frames/s), with 1 and 2
processes (torchrun, gloo; each process gets ``cpu_count / processes`` threads) and with the decode/detect thread on
and off: videos/s and frames/s from the moment every process has built its model (a barrier) to the last one done.

Both modes give ``model_share``, the model's share of the wall time (scoring waits for the model's results, so on a
GPU this bounds the time it is busy), and on a GPU (one process) ``gpu_busy_fraction``: NVML's utilisation sampled
every 0.1 s while the frames run (:class:`GPUBusy`).
"""

import argparse
import json
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np


# what names a measurement: a rerun replaces the saved row with the same values
ROW_KEYS = ("mode", "model", "device_type", "detect_every", "detector", "processes", "background_thread", "dtype",
            "dtype_requested")


def _ignore(row: Dict) -> None:
    """The default ``on_row``: nothing."""


def make_video(seconds: float, fps: float = 8.0) -> List[np.ndarray]:
    """Two faces on a textured 640x360 background: one moving sideways (10 px per frame, back and forth), one
    leaving half way."""
    from PIL import Image

    from clipdfer.data.io import read_video
    from clipdfer.inference import sample_clip_path
    face = read_video(sample_clip_path()).permute(0, 2, 3, 1).numpy()[:, 16:176, 16:176]  # (24, 160, 160, 3)
    noise = np.random.default_rng(0).integers(40, 200, size=(36, 64, 3), dtype=np.uint8)
    background = np.asarray(Image.fromarray(noise).resize((640, 360), Image.BICUBIC))  # smooth clutter
    n = int(seconds * fps)
    frames = []
    for i in range(n):
        f = background.copy()
        x = 10 + abs((10 * i) % 600 - 300)
        f[40:200, x:x + 160] = face[i % len(face)]
        if i < n // 2:
            f[180:340, 460:620] = face[(i + 7) % len(face)][:, ::-1]
        frames.append(f)
    return frames


def bench_detectors(runs: int = 20) -> List[Dict]:
    from clipdfer.faces import make_detector
    frame = make_video(1.0)[0]
    rows = []
    no_model = dict.fromkeys(("model", "batch_size", "num_frames", "dtype", "compiled", "model_ms"))  # the schema's
    for name in ("yunet", "haar"):
        try:
            det = make_detector(name)
        except ImportError as e:
            rows.append({"mode": "detector", **no_model, "detector": name, "error": str(e)})
            continue
        det.detect(frame)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            faces = det.detect(frame)
            times.append(1e3 * (time.perf_counter() - t0))
        rows.append({"mode": "detector", **no_model, "detector": name, "frame": "640x360",
                     "ms": round(statistics.median(times), 2), "faces": len(faces)})
    return rows


class GPUBusy:
    """The share of a block's wall time in which the GPU ran a kernel, as NVML counts it: ``torch.cuda.utilization``
    (the percent of NVML's last sample period, 1/6 s to 1 s by GPU, in which a kernel was running; it needs
    nvidia-ml-py) read every ``interval`` seconds in a thread while the block runs, averaged.

    NVML's window looks back up to 1 s, so the first samples partly cover the time before the block: a block shorter
    than ``min_samples`` intervals gives no number. ``fraction`` is None, and ``error`` says why, off CUDA, without
    NVML, for such a short block, or when a reading failed during the block. ``read`` replaces the NVML reading (a
    callable returning percent) to test the averaging.
    """

    def __init__(self, device, interval: float = 0.1, read=None, min_samples: int = 10):
        import torch
        self.device, self.interval, self.read, self.min_samples = torch.device(device), interval, read, min_samples
        self.samples: List[float] = []
        self.error: Optional[str] = None
        self._stop, self._thread = None, None

    def __enter__(self) -> "GPUBusy":
        import threading

        import torch
        if self.read is None:
            if self.device.type != "cuda":
                self.error = f"no GPU to sample on device {self.device}"
                return self
            self.read = lambda: torch.cuda.utilization(self.device)
        try:
            self.read()  # fails here, not in the thread, without NVML
        except Exception as e:  # pynvml missing or NVML refusing: the row says so instead of a number
            self.error = f"GPU utilisation unreadable: {type(e).__name__}: {e}"
            return self
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="gpu-busy", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(float(self.read()))
            except Exception as e:  # a failed reading voids the average: it would cover part of the block only
                self.error = f"GPU utilisation reading failed during the block: {type(e).__name__}: {e}"
                return

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            if self.error is None and len(self.samples) < self.min_samples:
                self.error = (f"the block lasted {len(self.samples)} samples of {self.interval} s, fewer than "
                              f"{self.min_samples}: too short for NVML's utilisation; give it more frames")

    @property
    def fraction(self) -> Optional[float]:
        if self.error is not None or not self.samples:
            return None
        return round(statistics.fmean(self.samples) / 100.0, 3)

    def fields(self) -> Dict:
        """The row's fields: ``gpu_busy_fraction`` on a GPU (with ``gpu_busy_error`` when it could not be read)."""
        if self.device.type != "cuda" and self.error:
            return {}
        return {"gpu_busy_fraction": self.fraction, **({"gpu_busy_error": self.error} if self.error else {})}


def bench_predict(model: str, seconds: float, detect_every: List[int], batch_size: int = 8, device: str = "cpu",
                  on_row: Callable[[Dict], None] = _ignore, accuracy: bool = True) -> List[Dict]:
    """Rows of one-video mode; ``accuracy=False`` leaves out the IoU columns (two more detection passes over every
    frame, on the CPU: what they measure does not depend on where the model runs)."""
    from clipdfer.faces import iou, make_detector
    from clipdfer.inference import FaceSettings, Predictor, WindowSettings
    frames = make_video(seconds)
    searched = [make_detector("auto").detect(f) for f in frames] if accuracy else None
    rows = []
    for k in detect_every:
        predictor = Predictor(model, pretrained=False, faces=FaceSettings(detect_every=k),
                              windows=WindowSettings(batch_size=batch_size), device=device, background=False)
        warm = predictor._session()  # first calls (kernel choice, allocator, detector) out of the timing
        for event in predictor.tracking_stage()((i / 8.0, f) for i, f in enumerate(frames[:16])):
            warm.take(event)
        stage, session = predictor.tracking_stage(), predictor._session()
        with GPUBusy(predictor.device) as busy:
            t0 = time.perf_counter()
            for event in stage((i / 8.0, f) for i, f in enumerate(frames)):
                session.take(event)
            total = time.perf_counter() - t0
        overlaps = []  # the boxes the tracker gave, against the detection of the same face in that frame
        for i, per_track in (_tracked_boxes(predictor, frames) if accuracy else {}).items():
            for box in per_track:
                found = [iou(box, f.box) for f in searched[i]]
                overlaps.append(max(found, default=0.0))
        rows.append({
            "mode": "one", **_model_fields(predictor, batch_size, session.model_s, len(frames)),
            "device_type": predictor.device.type, "detect_every": k, "frames": len(frames),
            "faces": len(session.faces()),
            "frames_per_s": round(len(frames) / total, 2),
            "detect_and_track_share": round(stage.seconds["detect_and_track_s"] / total, 3),
            # the model's share of the wall time; on a GPU, the time it is busy (scoring waits for its results)
            "model_share": round(session.model_s / total, 3),
            **({"mean_iou_vs_detection": round(float(np.mean(overlaps)), 3),
                "min_iou_vs_detection": round(float(np.min(overlaps)), 3)} if accuracy else {}), **busy.fields()})
        on_row(rows[-1])
    return rows


def _model_fields(predictor, batch_size: int, model_s: float, frames: int) -> Dict:
    """The results schema's fields of a predict row: the model as it ran (its dtype: ``auto`` resolved), the batch of
    windows it is given, and ``model_ms``, its milliseconds per frame analysed (the model's time / frames)."""
    from _results import dtype_name
    return {"model": predictor.model_name, "batch_size": batch_size, "num_frames": predictor.net.num_frames,
            "dtype": dtype_name(predictor.dtype), "compiled": False,
            "model_ms": round(1e3 * model_s / frames, 4) if frames else None}


def _tracked_boxes(predictor, frames) -> Dict[int, List[tuple]]:
    tracker = predictor.tracking_stage().tracker
    out: Dict[int, List[tuple]] = {}
    for f in frames:
        for b in tracker.update(f).boxes:
            out.setdefault(b.frame_index, []).append(b.box)
    for b in tracker.finish().boxes:
        out.setdefault(b.frame_index, []).append(b.box)
    return out


# ------------------------------------------------------------------------------------------------ real time
REALTIME_MODELS = ("dferclip_vitb32_ferv39k", "clip_zeroshot_vitb32", "clipdfer_vitb32_ferv39k")
STAGES = ("load_model_s", "decode_s", "detect_and_track_s", "crop_s", "model_s", "total_s")


def clip_seconds(path: str) -> float:
    """The duration of a video file (s), from its container (else its video stream)."""
    import av
    with av.open(path) as container:
        if container.duration:
            return container.duration / av.time_base
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


def realtime_command(clip: str, model: str, dtype: str, device: str = "auto", extra: Sequence[str] = ()) -> List[str]:
    """The predict command a real-time row times."""
    import sys
    return [sys.executable, "-m", "clipdfer", "predict", clip, "--model", model, "--no-pretrained", "--dtype", dtype,
            "--device", device, "--json", *extra]


def realtime_row(model: str, dtype: str, clip_s: float, walls: List[float], results: List[Dict]) -> Dict:
    """One model and dtype: the median run (by wall time) of the whole command, its stages and the real-time factor.

    Args:
        walls: each run's wall time (s); results: each run's result (``clipdfer predict --json``'s entry).
    """
    k = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
    wall, result = walls[k], results[k]
    timings = result["timings"]
    from _results import dtype_name
    frames = result["frames_used"]
    row = {"mode": "realtime", "model": model, "batch_size": result["settings"]["windows"]["batch_size"],
           "num_frames": result["settings"]["model"]["args"].get("num_frames", result["settings"]["windows"]["window"]),
           "dtype": dtype_name(result["settings"]["model"]["dtype"]), "dtype_requested": dtype, "compiled": False,
           "model_ms": round(1e3 * timings["model_s"] / frames, 4) if frames else None, "clip_s": round(clip_s, 2),
           "frames": frames, "runs": len(walls),
           "windows": sum(len(f["windows"]) for f in result["faces"]), "wall_s": round(wall, 4),
           "x_realtime": round(clip_s / wall, 2), "startup_s": round(wall - timings["total_s"], 4)}
    row.update({k: round(timings.get(k, 0.0), 4) for k in STAGES})  # 0.1 ms: a tiny model's stages are not 0
    return row


def bench_realtime(clip: str, models: Sequence[str], dtypes: Sequence[str], runs: int = 1, device: str = "auto",
                   extra: Sequence[str] = (), on_row: Callable[[Dict], None] = _ignore) -> List[Dict]:
    import subprocess
    clip_s = clip_seconds(clip)
    rows = []
    for model in models:
        for dtype in dtypes:
            walls, results = [], []
            for _ in range(runs):
                cmd = realtime_command(clip, model, dtype, device, extra)
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                walls.append(time.perf_counter() - start)
                if proc.returncode:
                    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
                results.append(json.loads(proc.stdout)[0])
            rows.append(realtime_row(model, dtype, clip_s, walls, results))
            on_row(rows[-1])
    return rows


def realtime_markdown(rows: List[Dict]) -> str:
    """The docs' table: one line per model and dtype."""
    lines = ["| model | dtype (ran) | wall s (incl. start-up) | x real time | start-up s | decode s | detect+track s "
             "| model s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['dtype_requested']} ({r['dtype']}) | {r['wall_s']:.2f} | "
                     f"{r['x_realtime']:.2f} | {r['startup_s']:.2f} | {r['decode_s']:.2f} | "
                     f"{r['detect_and_track_s']:.2f} | {r['model_s']:.2f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ many videos
def write_videos(folder: str, count: int, seconds: float, fps: float = 25.0) -> List[str]:
    """``count`` videos of :func:`make_video`'s two faces at ``fps`` frames/s (H.264, else MPEG-4), each starting
    at another point of the face's motion."""
    import fractions

    import av
    os.makedirs(folder, exist_ok=True)
    n = int(seconds * fps)
    base = make_video((n + count) / fps, fps=fps)  # enough frames for every video's offset
    paths = []
    for v in range(count):
        path = os.path.join(folder, f"video{v:03d}.mp4")
        with av.open(path, "w") as container:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
            for frame in base[v:v + n]:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def many_worker(args) -> Optional[Dict]:
    """One process of a many-videos run (under torchrun when ``WORLD_SIZE`` > 1): its share of ``args.videos``;
    rank 0 returns the row."""
    import torch
    import torch.distributed as dist

    from clipdfer.distributed import launch_env
    from clipdfer.inference import BatchRun, Predictor, ReadSettings, WindowSettings, expand_sources
    rank, world, _ = launch_env()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        dist.init_process_group("gloo")
    device = args.device if world == 1 else "cpu"  # several processes: CPU shares (one GPU is one process's)
    predictor = Predictor(args.model, pretrained=False, device=device, background=not args.no_background,
                          windows=WindowSettings(batch_size=args.batch_size))
    out = os.path.join(args.out, f"run-{world}-{int(not args.no_background)}")
    sources = expand_sources([args.videos])
    predictor.run(sources[0], reading=ReadSettings(fps=8.0))  # warm-up, out of the timing
    run = BatchRun(predictor, sources, out, overwrite=True, reading=ReadSettings(fps=8.0))
    if world > 1:
        dist.barrier()
    with GPUBusy(predictor.device) as busy:  # one process on the GPU (several run on the CPU)
        start = time.perf_counter()
        items = list(run)
        seconds = time.perf_counter() - start
    mine = (seconds, len(items), sum(i.result.frames_used for i in items if not i.failed),
            sum(i.failed for i in items))
    everyone = [mine]
    if world > 1:
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
        dist.barrier()
        dist.destroy_process_group()
    if rank:
        return None
    wall = max(e[0] for e in everyone)
    videos, frames, failed = (sum(e[k] for e in everyone) for k in (1, 2, 3))
    return {"mode": "many", **_model_fields(predictor, args.batch_size, run_model_s(items), frames),
            "device_type": predictor.device.type, "processes": world,
            "background_thread": not args.no_background, "model_share": round(run_model_s(items) / wall, 3),
            "threads_per_process": torch.get_num_threads(), "videos": videos, "failed": failed, "frames": frames,
            "wall_s": round(wall, 2), "videos_per_s": round(videos / wall, 3), "frames_per_s": round(frames / wall, 2),
            "cpus": os.cpu_count(), **busy.fields()}


def run_model_s(items) -> float:
    """Seconds the model spent on the results of a batch run (each result's ``timings["model_s"]``)."""
    return sum(i.result.timings.get("model_s", 0.0) for i in items if not i.failed)


def bench_many(model: str, count: int, seconds: float, processes: List[int], batch_size: int = 8,
               device: str = "cpu", on_row: Callable[[Dict], None] = _ignore) -> List[Dict]:
    """Each (processes, background thread) configuration in its own launch; the rows of rank 0, each given to
    ``on_row`` as it comes. A launch that fails gives a row with its ``error`` (the last line; the whole of it on
    stderr) and the next configuration runs."""
    import subprocess
    import sys
    import tempfile
    rows = []
    with tempfile.TemporaryDirectory(prefix="clipdfer-bench-") as tmp:
        videos = os.path.join(tmp, "videos")
        write_videos(videos, count, seconds)
        for n in processes:
            for background in (True, False):
                cmd = [os.path.abspath(__file__), "--worker", "--videos", videos, "--out", os.path.join(tmp, "out"),
                       "--model", model, "--batch-size", str(batch_size), "--device", device] + (
                    [] if background else ["--no-background"])
                launcher = [sys.executable] if n == 1 else [
                    sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
                env = {**os.environ, "PYTHONUNBUFFERED": "1"}
                proc = subprocess.run(launcher + cmd, capture_output=True, text=True, env=env)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode or not lines:  # a row that says so (its last line), and the next configuration
                    print(f"{' '.join(launcher + cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}",
                          file=sys.stderr, flush=True)
                    from _results import failure_line
                    row = {"mode": "many", "model": model, "batch_size": batch_size, "num_frames": None,
                           "dtype": None, "compiled": False, "model_ms": None,
                           "device_type": device.split(":")[0] if n == 1 else "cpu",
                           "processes": n, "background_thread": background,
                           "error": failure_line(proc.stderr, proc.returncode)}
                else:
                    row = json.loads(lines[-1])
                rows.append({**row, "seconds_per_video": seconds, "source_fps": 25.0})
                on_row(rows[-1])
    return rows


def main(argv=None) -> List[Dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="clip_zeroshot_vitb32")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--detect-every", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--no-iou", action="store_true",
                   help="one-video mode: leave out the tracked boxes' IoU with detection (two more detection passes)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--detectors", action="store_true", help="only time the detectors on one 640x360 frame")
    p.add_argument("--many", type=int, metavar="N", help="many-videos mode: N videos of --seconds each")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="many-videos mode: process counts")
    p.add_argument("--device", default="cpu", help="where the model runs (cuda: one process on the GPU)")
    p.add_argument("--save", nargs="?", const="", metavar="PATH",
                   help="merge the rows into PATH (default benchmarks/results/predict-<device>.json)")
    p.add_argument("--realtime", metavar="CLIP", help="time the whole predict command on this video (see above)")
    p.add_argument("--models", nargs="+", default=list(REALTIME_MODELS), help="--realtime: the models")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "auto"], help="--realtime: the dtypes (--dtype)")
    p.add_argument("--runs", type=int, default=1, help="--realtime: runs of each; the median is reported")
    p.add_argument("--markdown", metavar="FILE", help="--realtime: also write the table as Markdown")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one process of a --many run
    p.add_argument("--videos", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--no-background", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        row = many_worker(args)
        if row is not None:
            print(json.dumps(row), flush=True)
        return [row] if row else []
    import sys

    import torch

    from clipdfer.inference.device import resolve_device
    device = resolve_device(args.device)  # "auto" is the device it chose (the file is named after it)
    command = ["bench_predict.py"] + list(sys.argv[1:] if argv is None else argv)

    def emit(row: Dict) -> None:  # row by row: a run stopped by a time limit keeps what it measured
        print(json.dumps({**row, "threads": torch.get_num_threads()}), flush=True)
        if args.save is not None:
            from _results import save_rows
            print("wrote", save_rows("predict", device, [row], ROW_KEYS, args.save or None, command), flush=True)

    if args.realtime:
        rows = bench_realtime(args.realtime, args.models, args.dtypes, args.runs, args.device, on_row=emit)
        if args.markdown:
            with open(args.markdown, "w", encoding="utf-8") as f:
                f.write(realtime_markdown(rows) + "\n")
    elif args.many:
        rows = bench_many(args.model, args.many, args.seconds, args.processes, args.batch_size, args.device,
                          on_row=emit)
    elif args.detectors:
        rows = bench_detectors()
        for row in rows:
            emit(row)
    else:
        rows = bench_predict(args.model, args.seconds, args.detect_every, args.batch_size, args.device, on_row=emit,
                             accuracy=not args.no_iou)
    return rows


if __name__ == "__main__":
    main()
