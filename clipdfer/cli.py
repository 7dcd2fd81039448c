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
    if not args.pretrained or not cfg.finetuned:
        print("NOTICE       this model is not fine-tuned for expressions "
              f"({'random weights' if not args.pretrained else 'CLIP initialisation'}): "
              "the probabilities below show that it runs, not what the face expresses.")
    print("class probabilities:")
    for p, name in sorted(zip(probs.tolist(), model.class_names), reverse=True):
        print(f"  {name:<16} {p:6.3f}  {'#' * int(round(40 * p))}")
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
