"""``clipdfer train``: the options and the run are :mod:`clipdfer.train`'s."""

HELP = "train a model with its paper's recipe, on one process or many (torchrun)"


def add_arguments(parser) -> None:
    from ..train import build_parser
    build_parser(parser)


def run(args) -> int:
    from ..train import run
    return run(args)
