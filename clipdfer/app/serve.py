"""The demo's command line, shared by ``clipdfer demo`` and ``python -m clipdfer.app``: options, then serve until
Ctrl-C. Imports neither Gradio nor torch until it runs."""

import argparse
import logging
import sys
from typing import List, Optional

HELP = "a local web page: drop videos in, see every face's timeline (needs clipdfer[demo])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .analysis import UploadLimits
    add = parser.add_argument
    add("--model", default=None, help="the model selected when the page opens (default: predict's, DFER-CLIP "
                                      "fine-tuned on FERV39k; clip_zeroshot_vitb32: zero-shot CLIP)")
    add("--no-pretrained", action="store_true",
        help="random weights (no download; predictions are meaningless, a notice says so)")
    add("--device", help="cuda, cuda:1, cpu (default: CUDA when available)")
    add("--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network interface)")
    add("--port", type=int, help="port (default: the first free one from 7860)")
    add("--share", action="store_true", help="also make a temporary public link through Gradio's servers (off "
                                             "by default: the page is private to this machine)")
    add("--max-upload-mb", type=float, default=UploadLimits.max_mb,
        help=f"largest upload in MB (default {UploadLimits.max_mb:g})")
    add("--max-seconds", type=float, default=UploadLimits.max_seconds,
        help=f"longest video in seconds (default {UploadLimits.max_seconds:g})")
    add("--max-videos", type=int, default=UploadLimits.max_videos,
        help=f"videos per run (default {UploadLimits.max_videos})")


def run(args: argparse.Namespace) -> int:
    """Serve the page until Ctrl-C; the temporary files are removed when it stops."""
    from .analysis import UploadLimits
    limits = UploadLimits(args.max_upload_mb, args.max_seconds, args.max_videos)  # checked before anything loads
    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}: expected a port number in 1-65535")
    try:
        from .page import Demo
    except ImportError as e:
        raise ImportError(f"clipdfer demo needs Gradio ({e}): pip install 'clipdfer[demo]'") from e
    from ..inference import DEFAULT_MODEL
    from ..models import PretrainedWeightsError
    try:
        demo = Demo(args.model, not args.no_pretrained, limits=limits, device=args.device)
    except PretrainedWeightsError as e:
        if args.model is not None:
            raise
        raise PretrainedWeightsError(
            f"{e}. The default model ({DEFAULT_MODEL}) needs its weights once: --model clip_zeroshot_vitb32 "
            f"(zero-shot: CLIP's weights, from the Hugging Face Hub), --model local-dir:DIR (a converted release), or "
            f"--no-pretrained (random weights: checks the pipeline)") from e
    where = "this machine only" if args.host in ("127.0.0.1", "localhost", "::1") else f"every address of {args.host}"
    print(f"clipdfer demo: model {demo.model}{' (random weights)' if args.no_pretrained else ''}; serving to {where}"
          f"{' and a public link' if args.share else ''}; Ctrl-C stops", flush=True)
    try:
        demo.launch(args.host, args.port, share=args.share, block=True)
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m clipdfer.app [options]``: as ``clipdfer demo``."""
    parser = argparse.ArgumentParser(prog="python -m clipdfer.app", description=HELP)
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level; errors show their traceback")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return run(args)
    except (ValueError, OSError, ImportError, RuntimeError) as e:
        if args.verbose:
            raise
        print(f"clipdfer demo: error: {e}", file=sys.stderr)
        return 2
