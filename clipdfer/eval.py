"""Evaluation: UAR, WAR, per-class recall, a confusion-matrix PNG and a JSON results card (docs/training.md).

    clipdfer eval --model clipdfer_test --checkpoint runs/x/checkpoints/best --synthetic
    clipdfer eval --model dferclip_vitb32_dfew --checkpoint "runs/dfew{fold}/checkpoints/best" \\
        --data "DFEW/annotations/set_{fold}" --folds 1-5 --out eval/dfew

``--checkpoint`` is a saved directory (``clipdfer train``, ``save_pretrained``) or a weights file; ``{fold}`` is
replaced per fold, and ``--folds`` reports every fold and the mean.
"""

import argparse
import json
import logging
import os
import re
import statistics
import sys
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ._files import write_json
from .checkpoint import latest_checkpoint
from .data import ClipDataset, ClipFolder, SyntheticClips, build_transform, read_annotations
from .data.datasets import data_dir_error
from .distributed import ResumableSampler, unwrap
from .metrics import classification_report, save_confusion_png
from .models import create_model, get_pretrained_cfg, is_model
from .models._loading import non_finite_tensors
from .models._pretrained import join_model_name_tag

__all__ = ["main", "run", "build_parser", "evaluate", "evaluate_model", "load_for_eval"]

_logger = logging.getLogger(__name__)

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, batch_size: int, device, workers: int = 0, amp: str = "none",
             rank: int = 0, world: int = 1) -> Dict:
    """UAR / WAR report of ``model`` on ``dataset``: every rank evaluates its shard and the results are gathered.

    Args:
        model: a clipdfer model, possibly wrapped in DDP.
        dataset: yields ``(video, label)``.
        amp: ``none``, ``bf16`` or ``fp16`` autocast.
        rank, world: this process and the number of processes (1 without DDP).
    """
    model.eval()
    sampler = ResumableSampler(len(dataset), False, 0, rank, world)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    preds, labels = [], []
    dtype = _AMP.get(amp)
    for video, y in loader:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(video.to(device))
        if not torch.isfinite(logits).all():  # argmax would call every such clip the first class
            broken = non_finite_tensors(unwrap(model))
            bad = int((~torch.isfinite(logits)).any(-1).sum())
            named = ", ".join(broken[:5]) + (" ..." if len(broken) > 5 else "")
            cause = (f"its weights hold non-finite values ({named}); load other weights" if broken
                     else "its weights are finite: try without --amp")
            raise ValueError(f"the model gave non-finite scores (NaN or infinity) for {bad} of {len(logits)} clips: "
                             f"{cause}; no score is given")
        preds.append(logits.argmax(-1).cpu())
        labels.append(y)
    p, y = torch.cat(preds), torch.cat(labels)
    if world > 1:  # every rank evaluated its shard (padded by repeats): gather by dataset index
        indices = torch.tensor(list(iter(sampler)))
        gathered = [None] * world
        dist.all_gather_object(gathered, (indices, p, y))
        p_all, y_all = torch.empty(len(dataset), dtype=p.dtype), torch.empty(len(dataset), dtype=y.dtype)
        for idx, pp, yy in gathered:
            p_all[idx], y_all[idx] = pp, yy
        p, y = p_all, y_all
    return classification_report(p, y, unwrap(model).class_names)


def check_fold_weights(name: str, fold: Optional[int]) -> None:
    """Refuse to evaluate a fold's release on another fold, or one release on all folds (it was trained on the other
    folds' test clips).

    Raises:
        ValueError: naming the release, the fold and the fix (``{fold}`` in the model name).
    """
    if fold is None or name.startswith(("hf-hub:", "local-dir:")) or not is_model(name):
        return
    cfg = get_pretrained_cfg(name)
    _refuse_other_fold(name, cfg.architecture, cfg.tag, fold)


def _refuse_other_fold(name: str, architecture: str, tag: Optional[str], fold: int) -> None:
    match = re.search(r"_fold(\d+)$", tag or "")
    if match is None or int(match.group(1)) == fold:
        return
    each = join_model_name_tag(architecture, f"{tag[:match.start()]}_fold{{fold}}")
    raise ValueError(
        f"{name} holds the weights fine-tuned for fold {match.group(1)} ({join_model_name_tag(architecture, tag)}), "
        f"but they would be "
        f"evaluated on fold {fold}: the other folds' test clips are in their training data. Name each fold's "
        f"release: --model '{each}' --folds 1-5 (or a converted release per fold with {{fold}} in the path), or "
        f"evaluate fold {match.group(1)} only.")


def check_saved_release(directory: Optional[str], fold: Optional[int]) -> None:
    """The same refusal for a saved directory made from a release (its ``config.json`` records the release's
    ``source``)."""
    if fold is None or not directory or not os.path.isfile(os.path.join(directory, "config.json")):
        return
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    if config.get("source"):
        _refuse_other_fold(directory, config.get("architecture", "?"), config["pretrained_cfg"].get("tag"), fold)


def load_for_eval(model: str, checkpoint: Optional[str], pretrained: bool = False):
    """A model ready to evaluate: a saved directory, a weights file on a registered model, or pretrained weights; a
    directory a crash left incomplete is replaced by ``DIR.tmp`` or ``DIR.old`` (with a warning), as ``--resume`` does.
    """
    if checkpoint and not os.path.isfile(checkpoint):
        checkpoint = latest_checkpoint(checkpoint) or checkpoint
    if checkpoint and os.path.isdir(checkpoint):
        net = create_model(f"local-dir:{checkpoint}")
        if model.partition(".")[0] != net.pretrained_cfg.architecture:
            _logger.warning("--model %s is not used: %s holds a saved %s, which is evaluated", model, checkpoint,
                            net.pretrained_cfg.architecture)
        return net
    return create_model(model, pretrained=pretrained and not checkpoint, checkpoint_path=checkpoint)


def evaluate_model(net, test_list: Optional[str], synthetic: bool, batch_size: int, device, synthetic_size: int = 64,
                   amp: str = "none") -> Dict:
    cfg = net.pretrained_cfg
    if synthetic:
        data = SyntheticClips(max(synthetic_size // 2, net.num_classes), net.num_classes, net.num_frames,
                              cfg.input_size[-1], cfg.mean, cfg.std, seed=1)
    elif os.path.isdir(test_list):  # test/<class>/: folders named as the model's classes
        data = ClipFolder(test_list, net, classes=list(net.class_names))
    else:
        data = ClipDataset(read_annotations(test_list, num_classes=net.num_classes), net.num_frames,
                           cfg.frame_sampling, build_transform(cfg, train=False),
                           frame_size=tuple(cfg.input_size[-2:]), interpolation=cfg.interpolation)
    return evaluate(net.to(device), data, batch_size, device, amp=amp)


def _fold_list(spec: Optional[str]) -> List[Optional[int]]:
    if not spec:
        return [None]
    if "-" in spec:
        a, b = spec.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in spec.split(",")]


def _print(report: Dict, title: str) -> None:
    print(f"{title}: UAR {report['uar']:.2f}  WAR {report['war']:.2f}  ({report['num_samples']} clips)")
    for name, r in report["per_class_recall"].items():
        print(f"    {name:<16} recall {'-' if r is None else f'{r:6.2f}'}  (n={report['support'][name]})")


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """``clipdfer eval``'s options, added to ``parser`` (e.g. a sub-command's) or to a new one."""
    p = parser or argparse.ArgumentParser(prog="clipdfer eval")
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("--model", required=True,
                   help="may contain {fold}: --model 'dferclip_vitb32_dfew.dfew_fold{fold}' --pretrained evaluates "
                        "each fold's official release on its own fold")
    p.add_argument("--checkpoint", help="saved directory or weights file; may contain {fold}")
    p.add_argument("--pretrained", action="store_true", help="evaluate the model's default weights")
    p.add_argument("--data", help="directory with test.txt, or with test/<class>/ folders of clips named as the "
                                  "model's classes; may contain {fold}")
    p.add_argument("--test-list", help="annotation file; may contain {fold}")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--synthetic-size", type=int, default=64)
    p.add_argument("--folds", help="e.g. 1-5 or 1,3")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="where results.json and confusion PNGs go (default: eval_<model>)")
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate as ``args`` (:func:`build_parser`'s options) say; errors propagate.

    Raises:
        argparse.ArgumentError: options that do not go together (a usage error).
    """
    if not (args.synthetic or args.data or args.test_list):
        raise argparse.ArgumentError(None, "give --data, --test-list or --synthetic")
    out = args.out or f"eval_{args.model.replace('{fold}', 'N').replace('/', '_').replace(':', '_')}"
    os.makedirs(out, exist_ok=True)
    device = torch.device(args.device)
    folds, results = _fold_list(args.folds), {"model": args.model, "folds": {}}
    templated = [f"--{k.replace('_', '-')}" for k in ("model", "checkpoint", "data", "test_list")
                 if "{fold}" in (getattr(args, k) or "")]
    if templated and folds == [None]:
        raise argparse.ArgumentError(None, f"{', '.join(templated)} contain(s) {{fold}}: give the folds to fill it "
                                           f"with, e.g. --folds 1-5")
    if args.pretrained and not args.checkpoint:
        for fold in folds:
            check_fold_weights(args.model.format(fold=fold) if fold is not None else args.model, fold)
    for fold in folds:
        fmt = (lambda s: s.format(fold=fold) if s and fold is not None else s)  # noqa: E731
        test_list = fmt(args.test_list) or (os.path.join(fmt(args.data), "test.txt") if args.data else None)
        if args.data and not args.test_list and not os.path.isfile(test_list) \
                and os.path.isdir(os.path.join(fmt(args.data), "test")):
            test_list = os.path.join(fmt(args.data), "test")  # folders per class
        elif args.data and not args.test_list and not os.path.isfile(test_list):
            raise data_dir_error(fmt(args.data), "test")
        saved = fmt(args.model)[len("local-dir:"):] if fmt(args.model).startswith("local-dir:") else None
        if args.checkpoint:
            saved = latest_checkpoint(fmt(args.checkpoint)) or fmt(args.checkpoint)
            saved = saved if os.path.isdir(saved) else os.path.dirname(saved)  # a saved directory's model file too
        check_saved_release(saved, fold)
        net = load_for_eval(fmt(args.model), fmt(args.checkpoint), args.pretrained)
        notice = net.weights_notice()
        if notice:
            print(f"NOTICE: this model has {notice}; its scores mean nothing.")
        report = evaluate_model(net, test_list, args.synthetic, args.batch_size, device, args.synthetic_size, args.amp)
        name = f"fold {fold}" if fold is not None else "test"
        _print(report, f"{args.model} {name}")
        save_confusion_png(report["confusion_matrix"], list(net.class_names),
                           os.path.join(out, f"confusion{'' if fold is None else f'_fold{fold}'}.png"),
                           title=f"{args.model} {name}: UAR {report['uar']:.2f} WAR {report['war']:.2f}")
        # what the numbers came from: the weights (the model's architecture, the file, what they are) and the clips
        report.update(architecture=net.pretrained_cfg.architecture, checkpoint=fmt(args.checkpoint),
                      weights=net.weights, test_list=None if args.synthetic else test_list)
        results["folds"][str(fold) if fold is not None else "test"] = report
    if len(folds) > 1:
        results["mean"] = {k: statistics.mean(r[k] for r in results["folds"].values()) for k in ("uar", "war")}
        print(f"mean over {len(folds)} folds: UAR {results['mean']['uar']:.2f}  WAR {results['mean']['war']:.2f}")
    write_json(os.path.join(out, "results.json"), results)
    print(f"wrote {out}/results.json and the confusion matrix PNG(s)")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    try:
        return run(parser.parse_args(argv))
    except argparse.ArgumentError as e:
        parser.error(str(e))


if __name__ == "__main__":
    sys.exit(main())
