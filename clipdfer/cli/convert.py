"""``clipdfer convert``: another code base's checkpoint as a saved clipdfer model (nothing in it is executed)."""

import os

HELP = "convert another code base's checkpoint (nothing in it is executed)"


def add_arguments(parser) -> None:
    parser.add_argument("family", choices=["dferclip"], help="dferclip: an official DFER-CLIP .pth checkpoint")
    parser.add_argument("input", help="the official checkpoint file")
    parser.add_argument("output", help="directory for config.json + model.safetensors")
    parser.add_argument("--dataset", choices=["dfew", "ferv39k", "mafw"], help="default: from its number of classes")
    parser.add_argument("--fold", type=int, help="the fold it was trained on (recorded in its tag)")
    parser.add_argument("--release", metavar="TAG",
                        help="the file is this official release (e.g. dferclip_vitb32_ferv39k.ferv39k): its licence, "
                             "URL, paper metrics and data terms are recorded; checked against the file's classes and "
                             "name")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME",
                        help="also upload the converted model with a model card (licence, source file and sha256, data "
                             "terms, paper metrics, label order, preprocessing) to this Hub repository; log in first "
                             "(`hf auth login`) or set HF_TOKEN")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")


def run(args) -> int:
    from ..convert.dferclip import convert_checkpoint
    release = None
    if args.release:
        from ..models import get_pretrained_cfg, list_pretrained
        if args.dataset or args.fold is not None:
            raise ValueError("--release names the dataset and fold already: leave --dataset and --fold out")
        release = get_pretrained_cfg(args.release)
        if not (release.url and release.architecture.startswith("dferclip_") and release.finetuned):
            raise ValueError(f"--release {args.release}: expected an official DFER-CLIP tag, one of "
                             f"{[n for n in list_pretrained('dferclip_*') if not n.endswith('.openai')]}")
    out = convert_checkpoint(args.input, args.output, dataset=args.dataset, fold=args.fold, pretrained_cfg=release)
    if args.push_to_hub:
        from ..models import push_folder_to_hf_hub
        url = push_folder_to_hf_hub(out, args.push_to_hub, commit_message=f"Add {os.path.basename(args.input)}, "
                                    f"converted by clipdfer", private=args.private or None)
        print(f"uploaded to {args.push_to_hub} with a model card: {url}")
    print(f"wrote {out}/config.json and {out}/model.safetensors; load with "
          f"clipdfer.create_model('local-dir:{out}')")
    return 0
