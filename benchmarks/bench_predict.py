"""Throughput of ``clipdfer predict`` and what its face tracking costs, on a synthetic 640x360 video.

    python benchmarks/bench_predict.py --model clip_zeroshot_vitb32 --seconds 30 --detect-every 1 2 3
    python benchmarks/bench_predict.py --detectors          # YuNet vs Haar, ms per 640x360 frame

The video is made from the sample clip's face (no download, no data): two faces on a textured 640x360 frame, one
moving sideways at 10 px per frame, the other leaving half way, at 8 frames per second (``--seconds`` of it). For each
``--detect-every`` k it reports end-to-end frames per second of :class:`clipdfer.inference.Predictor` (detection,
tracking, crops, the model; the frames are in memory, so decoding is not timed), the share of time spent detecting
and tracking, and how far the tracked boxes are from searching every frame: the mean and the minimum IoU of each
frame's box with the detection in that frame. Models run with random weights (the speed is the same).
"""

import argparse
import json
import statistics
import time
from typing import Dict, List

import numpy as np


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
    for name in ("yunet", "haar"):
        try:
            det = make_detector(name)
        except ImportError as e:
            rows.append({"detector": name, "error": str(e)})
            continue
        det.detect(frame)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            faces = det.detect(frame)
            times.append(1e3 * (time.perf_counter() - t0))
        rows.append({"detector": name, "frame": "640x360", "ms": round(statistics.median(times), 2),
                     "faces": len(faces)})
    return rows


def bench_predict(model: str, seconds: float, detect_every: List[int], batch_size: int = 8) -> List[Dict]:
    from clipdfer.faces import iou, make_detector
    from clipdfer.inference import Predictor, _Session
    frames = make_video(seconds)
    detector = make_detector("auto")
    searched = [detector.detect(f) for f in frames]
    rows = []
    for k in detect_every:
        predictor = Predictor(model, pretrained=False, detect_every=k, batch_size=batch_size, device="cpu")
        session = _Session(predictor)
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            session.feed(i / 8.0, f)
        session.close()
        total = time.perf_counter() - t0
        overlaps = []  # the boxes the tracker gave, against the detection of the same face in that frame
        for i, per_track in _tracked_boxes(predictor, frames).items():
            for box in per_track:
                found = [iou(box, f.box) for f in searched[i]]
                overlaps.append(max(found, default=0.0))
        rows.append({
            "model": model, "detect_every": k, "frames": len(frames), "faces": len(session.faces),
            "frames_per_s": round(len(frames) / total, 2),
            "detect_and_track_share": round(session.seconds["detect_and_track_s"] / total, 3),
            "model_share": round(session.seconds["model_s"] / total, 3),
            "mean_iou_vs_detection": round(float(np.mean(overlaps)), 3),
            "min_iou_vs_detection": round(float(np.min(overlaps)), 3)})
    return rows


def _tracked_boxes(predictor, frames) -> Dict[int, List[tuple]]:
    tracker = predictor._new_tracker()
    out: Dict[int, List[tuple]] = {}
    for f in frames:
        for b in tracker.update(f).boxes:
            out.setdefault(b.frame_index, []).append(b.box)
    for b in tracker.finish().boxes:
        out.setdefault(b.frame_index, []).append(b.box)
    return out


def main(argv=None) -> List[Dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="clip_zeroshot_vitb32")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--detect-every", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--detectors", action="store_true", help="only time the detectors on one 640x360 frame")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    import torch
    rows = bench_detectors() if args.detectors else bench_predict(args.model, args.seconds, args.detect_every,
                                                                   args.batch_size)
    for r in rows:
        print(json.dumps({**r, "threads": torch.get_num_threads()}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
