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
    import csv
    import json

    import clipdfer
    from clipdfer.inference import sample_clip_path

    paths = list(args.paths) + ([sample_clip_path()] if args.sample else [])
    if not paths:
        print("clipdfer: error: give one or more videos or frame folders, or --sample", file=sys.stderr)
        return 2
    results = []
    for path in paths:
        r = clipdfer.predict(path, model=args.model, pretrained=not args.no_pretrained, checkpoint=args.checkpoint,
                             window=args.window, stride=args.stride, fps=args.fps or None,
                             detect_faces=not args.no_face_detection, top_k=args.top_k, device=args.device,
                             progress=not (args.json or args.csv) and sys.stderr.isatty())
        results.append(r)
    if args.json:
        print(json.dumps([r.to_dict() for r in results] if len(results) > 1 else results[0].to_dict(), indent=2))
        return 0
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["source", "start_s", "end_s", *results[0].class_names])
        for r in results:
            for w in r.windows:
                writer.writerow([r.source, f"{w['start']:.3f}", f"{w['end']:.3f}",
                                 *[f"{w['probs'][c]:.4f}" for c in r.class_names]])
        return 0
    for r in results:
        if r.notice:
            print("=" * 100 + f"\n{r.notice}\n" + "=" * 100)
        print(f"{r.source}: {r.frames_used} frames, a face in {r.frames_with_face}; model {r.model}")
        print("timeline (top class per window):")
        for w in r.windows:
            top = max(w["probs"], key=w["probs"].get)
            print(f"  {w['start']:6.2f}-{w['end']:6.2f} s  {top:<16} {w['probs'][top]:.3f}  {_bar(w['probs'][top])}")
        print("overall:")
        for c, p in sorted(r.overall.items(), key=lambda kv: -kv[1]):
            print(f"  {c:<16} {p:.3f}  {_bar(p)}")
        print("top-{}: {}".format(len(r.top_k), ", ".join(f"{c} {p:.3f}" for c, p in r.top_k)))
        print("time: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in r.timings.items()))
    return 0


def _models(args) -> int:
    import clipdfer
    for name in clipdfer.list_models(args.filter or "", pretrained=args.pretrained, include_tags=args.tags or None):
        print(name)
    return 0


def _convert(args) -> int:
    from clipdfer.convert.dferclip import convert_checkpoint
    out = convert_checkpoint(args.input, args.output, dataset=args.dataset, fold=args.fold)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("train", "eval"):  # full programs of their own, with their own options
        from clipdfer import eval as eval_module, train as train_module
        return (train_module if argv[0] == "train" else eval_module).main(argv[1:])
    parser = argparse.ArgumentParser(prog="clipdfer", description="CLIP-based dynamic facial expression recognition",
                                     epilog="also: `clipdfer train --help`, `clipdfer eval --help`")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="create a model and run it on the built-in demo clip")
    q.add_argument("--model", default="clipdfer_vitb32_dfew", help="registered model name (see `clipdfer models`)")
    q.add_argument("--pretrained", action="store_true", help="download the model's default weights from the Hub")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_quickstart)

    pd = sub.add_parser("predict", help="expression timeline of your videos (finds and follows one face)")
    pd.add_argument("paths", nargs="*", help="video files or folders of frames")
    pd.add_argument("--sample", action="store_true", help="also run on the sample clip shipped with clipdfer")
    pd.add_argument("--model", default="clip_zeroshot_vitb32", help="default: zero-shot CLIP (no fine-tuning needed)")
    pd.add_argument("--checkpoint", help="weights file or directory saved by clipdfer")
    pd.add_argument("--no-pretrained", action="store_true",
                    help="random weights (no download; predictions are meaningless, a notice says so)")
    pd.add_argument("--window", type=int, help="frames per window (default: the model's T)")
    pd.add_argument("--stride", type=int, help="frames between windows (default: window / 2)")
    pd.add_argument("--fps", type=float, default=8.0, help="frames per second to use (0: all)")
    pd.add_argument("--no-face-detection", action="store_true", help="use whole frames")
    pd.add_argument("--top-k", type=int, default=3)
    pd.add_argument("--device")
    out_fmt = pd.add_mutually_exclusive_group()
    out_fmt.add_argument("--json", action="store_true", help="JSON: one entry per window under 'windows'")
    out_fmt.add_argument("--csv", action="store_true", help="CSV: one row per window")
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
    c.set_defaults(func=_convert)

    pr = sub.add_parser("prepare", help="write annotation files from a dataset's official layout")
    pr.add_argument("dataset", choices=["dfew", "ferv39k", "mafw"])
    pr.add_argument("root", help="the dataset's directory as released (see clipdfer/data/layouts.py)")
    pr.add_argument("--frames", default="data/frames", help="MAFW: folder of frame folders, or data/clips")
    pr.add_argument("output", help="directory for set_N/train.txt and set_N/test.txt")
    pr.add_argument("--folds", default="1,2,3,4,5")
    pr.set_defaults(func=_prepare)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as e:
        print(f"clipdfer: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
