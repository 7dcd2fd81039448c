"""The demo's command line, shared by ``clipdfer demo`` and ``python -m clipdfer.app``: options, then serve until
Ctrl-C or SIGTERM. Imports neither Gradio nor torch until it runs."""

import argparse
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
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


def _check_options(args: argparse.Namespace) -> None:
    """Refuse a bad option by its name, before anything loads."""
    for option, value, unit in (("--max-upload-mb", args.max_upload_mb, "MB"),
                                ("--max-seconds", args.max_seconds, "seconds")):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{option} {value:g}: expected a number of {unit} > 0")
    if args.max_videos < 1:
        raise ValueError(f"--max-videos {args.max_videos}: expected a whole number >= 1")
    if args.port is None:
        return
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}: expected a port number in 1-65535")
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a closed port is free
        try:
            s.bind((args.host.strip("[]"), args.port))
        except OSError as e:
            other = args.port + 1 if args.port < 65535 else args.port - 1
            raise OSError(f"--port {args.port}: cannot listen on {args.host}:{args.port} ({e.strerror or e}): another "
                          f"server (an earlier demo?) uses it; stop it, choose another port (e.g. --port {other}), "
                          f"or leave --port out for the first free one from 7860") from e


def run(args: argparse.Namespace) -> int:
    """Serve the page until Ctrl-C or SIGTERM; the temporary files are removed when it stops."""
    from .analysis import UploadLimits
    _check_options(args)
    limits = UploadLimits(args.max_upload_mb, args.max_seconds, args.max_videos)
    from .analysis import sigterm_as_interrupt
    with sigterm_as_interrupt():
        # the demo's folder first, and Gradio's cache in it before Gradio is imported (some of Gradio's modules read
        # GRADIO_TEMP_DIR once, at import): removing the folder removes every file the demo and Gradio made
        root = tempfile.mkdtemp(prefix="clipdfer-demo-")
        os.environ["GRADIO_TEMP_DIR"] = os.path.join(root, "gradio")
        try:
            try:
                from .page import Demo
            except ImportError as e:
                raise ImportError(f"clipdfer demo needs Gradio ({e}): pip install 'clipdfer[demo]'") from e
            _serve(Demo, args, limits, root)
        except KeyboardInterrupt:
            pass
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _serve(Demo, args: argparse.Namespace, limits, root: str) -> None:
    from ..inference import DEFAULT_MODEL
    from ..models import PretrainedWeightsError
    try:
        demo = Demo(args.model, not args.no_pretrained, limits=limits, device=args.device, temp_dir=root)
    except PretrainedWeightsError as e:
        if args.model is not None:
            raise
        raise PretrainedWeightsError(
            f"{e}. The default model ({DEFAULT_MODEL}) needs its weights once: --model clip_zeroshot_vitb32 "
            f"(zero-shot: CLIP's weights, from the Hugging Face Hub), --model local-dir:DIR (a converted release), or "
            f"--no-pretrained (random weights: checks the pipeline)") from e
    with demo:
        url = demo.launch(args.host, args.port, share=args.share, block=False, quiet=True)
        where = "this machine only" if args.host in ("127.0.0.1", "localhost", "::1") else \
            f"every address of {args.host}"
        public = getattr(demo.blocks, "share_url", None)
        share = f" and at {public}" if public else "" if args.share else " (--share: also a public link)"
        print(f"clipdfer demo: model {demo.model}{' (random weights)' if args.no_pretrained else ''}; serving {url} "
              f"to {where}{share}; Ctrl-C stops", flush=True)
        demo.wait()


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
