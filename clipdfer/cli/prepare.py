"""``clipdfer prepare``: write annotation files from a dataset's official layout."""

HELP = "write annotation files from a dataset's official layout"


def add_arguments(parser) -> None:
    parser.add_argument("dataset", choices=["dfew", "ferv39k", "mafw"])
    parser.add_argument("root", help="the dataset's directory as released (see clipdfer/data/layouts.py)")
    parser.add_argument("--frames", default="data/frames", help="MAFW: folder of frame folders, or data/clips")
    parser.add_argument("output", help="directory for set_N/train.txt and set_N/test.txt")
    parser.add_argument("--folds", default="1,2,3,4,5")


def run(args) -> int:
    from ..data.layouts import prepare
    for d in prepare(args.dataset, args.root, args.output, [int(f) for f in args.folds.split(",")], args.frames):
        print(f"wrote {d}/train.txt and {d}/test.txt")
    return 0
