"""The ``clipdfer`` command line: one module per command, each with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``."""

import argparse
import importlib
import logging
import sys
import traceback
from typing import List, Optional

__all__ = ["main", "COMMANDS"]

COMMANDS = ("quickstart", "predict", "demo", "models", "convert", "prepare", "train", "eval")
# errors that say what went wrong and what to do (PretrainedWeightsError is a RuntimeError); any other is a bug
_EXPLAINED = (ValueError, OSError, ImportError, RuntimeError)
_VERBOSE = "log at INFO level; errors show their traceback"


class _CommandParser(argparse.ArgumentParser):
    """A command's parser, given its options when argparse parses that command: ``clipdfer --help`` imports no
    command's dependencies (train's and eval's options are defined beside their code, which needs torch)."""

    def __init__(self, *args, command=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.command, self.filled = command, False

    def parse_known_args(self, args=None, namespace=None):
        if not self.filled:
            self.command.add_arguments(self)
            # -v after the command too (`clipdfer predict x.mp4 -v`); unset, it leaves the one before the command
            self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE)
            self.filled = True
        return super().parse_known_args(args, namespace)


def main(argv: Optional[List[str]] = None) -> int:
    from ..version import __version__
    parser = argparse.ArgumentParser(prog="clipdfer", description="CLIP-based dynamic facial expression recognition")
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE)
    parser.add_argument("--version", action="version", version=f"clipdfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    for name in COMMANDS:
        command = importlib.import_module(f".{name}", __name__)
        sub.add_parser(name, help=command.HELP, command=command)
    args = parser.parse_args(argv)
    chosen, verbose = sub.choices[vars(args).pop("command")], vars(args).pop("verbose")  # args: the command's own
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as escapes, not as a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return chosen.command.run(args)
    except argparse.ArgumentError as e:  # a usage error found after parsing
        chosen.error(str(e))
    except BrokenPipeError:  # the reader of stdout went away (`| head -1`): end quietly, as Unix tools do
        _drop_stdout()
        return 141  # 128 + SIGPIPE, the status a shell shows for a tool that the closed pipe ended
    except _EXPLAINED as e:
        if verbose:
            traceback.print_exc()
        else:
            print(f"clipdfer: error: {e}", file=sys.stderr)
        return 2


def _drop_stdout() -> None:
    """Point stdout at the null device, so that Python's flush at exit does not report the closed pipe again."""
    import os
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a captured stream): nothing to flush there
        pass
