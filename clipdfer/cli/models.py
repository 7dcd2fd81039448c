"""``clipdfer models``: list registered models."""

HELP = "list registered models"


def add_arguments(parser) -> None:
    parser.add_argument("filter", nargs="?", help="shell wildcard, e.g. 'clipdfer_vitb32_*'")
    parser.add_argument("--pretrained", action="store_true", help="only those with published weights")
    parser.add_argument("--tags", action="store_true", help="list every arch.tag")


def run(args) -> int:
    from ..models import list_models
    for name in list_models(args.filter or "", pretrained=args.pretrained, include_tags=args.tags or None):
        print(name)
    return 0
