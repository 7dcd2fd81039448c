"""``clipdfer eval``: the options and the run are :mod:`clipdfer.eval`'s."""

HELP = "UAR, WAR, per-class recall and a confusion matrix of a model on a test list, per fold"


def add_arguments(parser) -> None:
    from ..eval import build_parser
    build_parser(parser)


def run(args) -> int:
    from ..eval import run
    return run(args)
