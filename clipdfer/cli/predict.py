"""``clipdfer predict``: expression timelines of every face in videos, streams or a camera, on one process or many
(torchrun: each process takes its share of the sources, rank 0 prints every result)."""

import inspect
import signal
import sys
import threading
from typing import Optional

HELP = "expression timelines of every face in your videos, streams or camera"


def add_arguments(parser) -> None:
    from ..faces import YuNetDetector
    from ..inference.settings import FaceSettings, ReadSettings, WindowSettings
    add = parser.add_argument
    add("paths", nargs="*", help="video files, folders of frames, folders of videos, globs ('clips/**/*.mp4'), text "
                                 "files of paths (.txt: one per line), or stream URLs (rtsp://, http://...)")
    add("--camera", metavar="INDEX_OR_DEVICE", help="read a camera live (0: the first one)")
    add("--sample", action="store_true", help="also run on the sample clip shipped with clipdfer")
    add("--model", default=None, help="default: DFER-CLIP fine-tuned on FERV39k (dferclip_vitb32_ferv39k.ferv39k, the "
                                      "official release: downloaded once, needs gdown); clip_zeroshot_vitb32: "
                                      "zero-shot CLIP")
    add("--checkpoint", help="weights file or directory saved by clipdfer")
    add("--no-pretrained", action="store_true",
        help="random weights (no download; predictions are meaningless, a notice says so)")
    add("--window", type=int, help="frames per window (default: the model's T)")
    add("--stride", type=int, help="frames between windows (default: window / 2)")
    add("--fps", type=float, help=f"frames per second to use (0: all; default {ReadSettings.fps:g})")
    add("--folder-fps", type=float, help=f"the frame rate of folders of frames (default {ReadSettings.folder_fps:g})")
    add("--start", type=float, help="start at this time (s)")
    add("--end", type=float, help="stop at this time (s)")
    add("--no-face-detection", action="store_true", help="use whole frames")
    add("--margin", type=float, help="context around each face box, a fraction of its longer side on each side "
                                     "(default: the model's pretrained_cfg.crop_margin)")
    add("--detector", choices=["auto", "yunet", "haar"],
        help="yunet (auto, the default, is YuNet): OpenCV's YuNet; haar: OpenCV's frontal-face Haar cascade")
    add("--min-face-score", type=float, help="detection score a face needs (default: the detector's, YuNet's "
                                             f"{inspect.signature(YuNetDetector).parameters['min_score'].default:g})")
    add("--detect-size", type=int, metavar="PIXELS",
        help=f"scale frames down to this longer side before searching faces (default "
             f"{inspect.signature(YuNetDetector).parameters['max_side'].default}); raise it for small faces in large "
             f"frames, e.g. 1920 for a 50 px face in a 4K frame")
    add("--detect-every", type=int,
        help=f"search for faces every k-th frame, track between (default {FaceSettings.detect_every})")
    add("--min-track-frames", type=int,
        help=f"drop faces seen for fewer frames (default {FaceSettings.min_track_frames})")
    add("--top-k", type=int, help=f"classes listed per face (default {WindowSettings.top_k})")
    add("--batch-size", type=int, help=f"windows per forward pass (default {WindowSettings.batch_size})")
    add("--device", default="auto", help="auto (the default: CUDA, else Apple's MPS, else the CPU), cuda, cuda:1, "
                                         "mps, cpu; under torchrun each process takes cuda:LOCAL_RANK")
    add("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
        help="the model's weights in this dtype; auto (the default): bf16 where the device computes in bf16 natively "
             "(CUDA GPUs from Ampere on, CPUs with AVX-512 BF16 or AMX), fp32 elsewhere")
    add("--no-background", action="store_true",
        help="decode and detect in the main thread (default: a background thread, while the model runs)")
    add("--out", metavar="DIR", help="write one JSON per source (DIR/<name>.json, as each is done) and "
                                     "DIR/summary.csv; a rerun skips sources whose result is there")
    add("--overwrite", action="store_true", help="with --out: run every source again")
    add("--retry-failed", action="store_true", help="with --out: run the sources that failed again")
    add("--shard", metavar="I/N", help="take the I-th of N shares of the sources (0 <= I < N; e.g. a Slurm array); "
                                       "under torchrun each process takes its own share")
    add("--plot", metavar="FILE.png", help="draw each face's class probabilities over time")
    add("--annotate", metavar="FILE.mp4",
        help="write the video, every frame at the source's rate, with each face's box, id and top class")
    out_fmt = parser.add_mutually_exclusive_group()
    out_fmt.add_argument("--json", action="store_true", help="JSON: every face with its windows under 'faces'")
    out_fmt.add_argument("--jsonl", action="store_true",
                         help="JSON Lines: one JSON object per source per line, written as each source is done")
    out_fmt.add_argument("--csv", action="store_true", help="CSV: one row per face and window")


def run(args) -> int:
    from ..distributed import launch_env
    from ..inference import BatchRun, Camera, expand_sources, is_live, parse_shard, sample_clip_path
    from ..inference.outputs import VideoOutput
    from ..inference.settings import split_settings

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
                 min_score=args.min_face_score, detect_size=args.detect_size, detect_every=args.detect_every,
                 min_track_frames=args.min_track_frames, margin=args.margin,
                 detect=False if args.no_face_detection else None)
    reading, faces, windows = split_settings({k: v for k, v in given.items() if v is not None})
    annotate = VideoOutput(args.annotate, "--annotate", sources) if args.annotate else None
    if args.plot:
        _check_plot(args.plot, sources)
    shard = parse_shard(args.shard) if args.shard else None
    live = any(is_live(s) for s in sources)
    rank, world, _ = launch_env()
    device = args.device
    if world > 1:  # torchrun: a process group (gloo or NCCL), each process on its own GPU
        from ..distributed import setup
        _, _, device = setup(None if args.device == "auto" else args.device)
    _check_video_reader(sources)
    early = None
    try:
        if (world == 1 and not live and not args.annotate and not args.out and not args.shard and faces.detect
                and not args.no_background):
            # the first source is read and its faces tracked while the model is built (imports and weights take
            # seconds on one core): its run goes on from there, with the same frames and steps
            from ..inference.predictor import start_tracking
            early = start_tracking(sources[0], reading, faces)
        predictor = _predictor(args, faces, windows, device, live)
    except BaseException as e:
        if early is not None:
            early.close()
        if isinstance(e, ImportError) and faces.detect and faces.detector == "auto" and _missing_module(e) == "cv2":
            # no detector was chosen and OpenCV is absent: name none, name the extra
            raise ImportError("clipdfer predict finds faces with the packages of its extra: pip install "
                              "'clipdfer[predict]' (or --no-face-detection to score whole frames)") from e
        raise
    predictor._adopt_early(early)
    quiet = args.json or args.jsonl or args.csv
    info = sys.stderr if quiet or world > 1 else sys.stdout
    if rank == 0:
        from ..inference.device import dtype_name
        print(f"model: {predictor.model_name} on {predictor.device}, {dtype_name(predictor.dtype)} "
              f"({predictor.dtype_reason})", file=info)
    if predictor.detector_name and rank == 0:
        names = {"yunet": "YuNet (OpenCV)", "haar": "OpenCV's Haar cascade (tilted, small and covered faces are "
                 "missed)"}
        print(f"faces: {names.get(predictor.detector_name, predictor.detector_name)}", file=info)
    if predictor.notice and rank == 0 and (quiet or args.out):  # the text report shows it with each result
        print("\n".join(["=" * 100, predictor.notice, "=" * 100]), file=info)

    def live_line(w) -> None:
        top, p = w.top
        print(f"face {w.face_id}  {w.start:7.2f}-{w.end:7.2f} s  {top:<16} {p:.3f}  {'#' * int(round(30 * p))}",
              flush=True)

    if live and not quiet:
        print("press Ctrl-C to stop", file=sys.stderr)
    batch = BatchRun(predictor, sources, args.out, shard, args.overwrite or bool(args.annotate), args.retry_failed,
                     reading, progress=not quiet and not live and sys.stderr.isatty(), annotate=annotate,
                     on_window=live_line if live and not quiet else None)
    if args.out and rank == 0:
        share = f" (shard {batch.shard[0]}/{batch.shard[1]})" if batch.shard[1] > 1 else ""
        print(f"{len(sources)} source(s); results in {args.out}/{share}", file=info)
    try:
        first, failed, done, interrupted = _run_batch(batch, args, predictor.class_names, world, rank, info)
    finally:  # also when the run stops on an error that is not one source's: the summary shows what is done
        predictor._close_early()
        if args.out and world == 1:
            print(f"wrote {batch.write_summary()}", file=info)
    if args.out and world > 1 and rank == 0:  # every process has finished, or all were stopped
        print(f"wrote {batch.write_summary()}", file=info)
    if world > 1 and not interrupted:
        from ..distributed import teardown
        teardown()
    if interrupted:
        print(f"clipdfer: stopped ({interrupted}) after {done} of {len(batch.indices)} source(s)"
              + (f"; run the same command again to go on: the results in {args.out}/ are kept" if args.out else ""),
              file=sys.stderr)
        return 130 if interrupted == "SIGINT" else 143
    if first is not None and not first.failed:  # --plot and --annotate take one source
        if args.plot:
            from ..visualize import plot_prediction
            print(f"wrote {plot_prediction(first.result, args.plot)}", file=info)
        if args.annotate and not first.reused:  # (--annotate runs its source even when a result is saved)
            print(f"wrote {args.annotate}", file=info)
    if failed and rank == 0:  # under torchrun, rank 0 speaks for every process (the others exit 0)
        print(f"clipdfer: {failed} of {done} source(s) failed", file=sys.stderr)
        return 1
    return 0


def _check_video_reader(sources) -> None:
    """A video file among ``sources`` needs PyAV: say which extra brings it before anything else is loaded."""
    import os
    from ..data.io import VIDEO_EXTENSIONS
    videos = [s for s in sources if isinstance(s, str) and os.path.isfile(s) and s.lower().endswith(VIDEO_EXTENSIONS)]
    if videos:
        try:
            import av  # noqa: F401
        except ImportError as e:
            raise ImportError(f"reading video files ({videos[0]}) needs PyAV: pip install 'clipdfer[predict]'") from e


def _missing_module(e: BaseException) -> Optional[str]:
    """The top-level name of the module whose absence raised ``e`` (or what it was raised from); None: another error
    (a device's module, a bug)."""
    while e is not None:
        if isinstance(e, ModuleNotFoundError) and e.name:
            return e.name.partition(".")[0]
        e = e.__cause__
    return None


def _check_plot(path: str, sources) -> None:
    from ..inference.outputs import check_output_path
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("--plot needs matplotlib: pip install 'clipdfer[predict]' (or pip install matplotlib)") from e
    formats = tuple(f".{ext}" for ext in FigureCanvasAgg(Figure()).get_supported_filetypes())
    check_output_path(path, "--plot", sources, formats)


def _predictor(args, faces, windows, device, live: bool):
    from ..inference import DEFAULT_MODEL, Predictor
    from ..models import PretrainedWeightsError
    try:
        return Predictor(args.model or DEFAULT_MODEL, not args.no_pretrained, args.checkpoint, faces=faces,
                         windows=windows, device=device, dtype=args.dtype, live=live, background=not args.no_background)
    except PretrainedWeightsError as e:
        if args.model is not None:
            raise
        raise PretrainedWeightsError(
            f"{e}. The default model ({DEFAULT_MODEL}) needs its weights once; on the command line: --checkpoint FILE "
            f"(the downloaded release), --model local-dir:OUT_DIR (converted), --model clip_zeroshot_vitb32 "
            f"(zero-shot: CLIP's weights, from the Hugging Face Hub), or --no-pretrained (random weights: checks "
            f"the pipeline)") from e


def _run_batch(batch, args, class_names, world: int, rank: int, info):
    """Run the batch. One process writes each result as it is done; under torchrun rank 0 writes every result at the
    end.

    Returns:
        (the first item, failed, done, interrupted: None, "SIGINT" or "SIGTERM").
    """
    from ..inference.outputs import ResultWriter

    fmt = ("json" if args.json else "jsonl" if args.jsonl else "csv" if args.csv else None if args.out
           else "text")  # None: in --out only
    writer = ResultWriter(sys.stdout, fmt, class_names) if fmt and world == 1 else None
    entries, first, failed, done, interrupted = [], None, 0, 0, None  # entries: for rank 0 to print under torchrun

    def terminate(signum, frame):  # Slurm's time limit, kill: end like Ctrl-C, keeping every result written
        raise KeyboardInterrupt("SIGTERM")

    restore = None
    if threading.current_thread() is threading.main_thread():
        restore = signal.signal(signal.SIGTERM, terminate)
    try:
        for item in batch:
            entry = item.result.to_dict()
            failed, done, first = failed + item.failed, done + 1, first or item
            where = f" -> {batch.path(item.index)}{' (from an earlier run)' if item.reused else ''}" if args.out else ""
            if item.failed:
                print(f"clipdfer: error: {entry['source']}: {entry['error']}{where}", file=sys.stderr, flush=True)
            elif args.out or world > 1:
                tag = f"[rank {rank}] " if world > 1 else ""
                print(f"{tag}{entry['source']}: {len(entry['faces'])} face(s), {entry['frames_used']} frames{where}",
                      file=info, flush=True)
            if writer is not None:
                writer.add(entry)
            elif world > 1:
                entries.append((item.index, entry))
    except KeyboardInterrupt as e:
        interrupted = "SIGTERM" if str(e) == "SIGTERM" else "SIGINT"
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
        if writer is not None:
            writer.close()
    if world > 1 and not interrupted:
        import torch.distributed as dist
        everyone = [None] * world  # a sync point: each process has finished its share
        dist.all_gather_object(everyone, (entries, failed, done))
        entries = [e for part, _, _ in everyone for e in part]
        failed, done = sum(f for _, f, _ in everyone), sum(d for _, _, d in everyone)
    elif world > 1 and rank == 0:  # stopped: the other processes cannot be asked; their results are in --out
        mine = {i for i, _ in entries}
        batch.rescan()
        entries += [(i, r.to_dict()) for i in range(len(batch.sources)) if i not in mine and args.out
                    for r in [batch.saved(i)] if r is not None]
        if not args.out:
            print("clipdfer: stopped under torchrun without --out: only rank 0's results are printed",
                  file=sys.stderr)
    if world > 1 and rank == 0 and fmt:
        writer = ResultWriter(sys.stdout, fmt, class_names)
        for _, entry in sorted(entries, key=lambda ie: ie[0]):
            writer.add(entry)
        writer.close()
    return first, failed, done, interrupted
