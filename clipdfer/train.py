"""Training: the papers' recipes on one process or many (torchrun / DDP), with exact resume.

    clipdfer train --model clipdfer_vitb32_dfew --data DFEW/annotations/set_1 --out runs/dfew1 --pretrained
    torchrun --standalone --nproc_per_node 2 -m clipdfer.train --model clipdfer_test --synthetic --epochs 1 --out DIR

``--data`` is a directory with ``train.txt`` and ``test.txt`` in DFER-CLIP's annotation format
(``FRAME_FOLDER NUM_FRAMES LABEL``), or give ``--train-list`` / ``--test-list``. The model is built first and its
recipe follows from it (``clipdfer.recipes.recipe_for``: its family and the dataset of its classes), so registered
names, weight tags, ``local-dir:`` and ``hf-hub:`` models train alike. Model selection uses a validation split held
out from the training list (``--val-fraction``, stratified, seeded): the clean protocol. ``--select-on test``
selects on the test list instead, as the papers do, and says so in its output and results.

Options beyond the recipe: ``--layer-decay`` (layer-wise learning-rate decay of the CLIP backbone, through
``timm.optim``), ``--ema`` (an exponential moving average of the weights, timm's ``ModelEmaV3``, which is then the
model that is evaluated, selected and tested), ``--amp``, ``--grad-checkpointing``.

Outputs in ``--out``: ``checkpoints/last`` and ``checkpoints/best`` (``config.json`` + ``model.safetensors`` that
``create_model("local-dir:...")`` loads, plus ``state.pt`` with optimizer, schedule position, RNG state and EMA
weights, all written atomically), ``log.jsonl`` (one JSON object per logged step and per evaluation),
``results.json``. ``--resume`` continues from ``checkpoints/last`` at the saved step: the data order is a function
of the seed and the epoch, so the resumed run sees the batches the interrupted one would have seen.

Progress goes to the ``clipdfer.train`` logger (the command line shows it on stdout).
"""

import argparse
import dataclasses
import json
import logging
import os
import random
import sys
import time
from typing import Dict, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Subset

from .checkpoint import latest_checkpoint, load_training_state, save_checkpoint
from .data import ClipDataset, SyntheticClips, build_transform, read_annotations
from .distributed import LossWrapper, ResumableSampler, setup, teardown
from .eval import evaluate
from .models import create_model, get_pretrained_cfg, list_pretrained
from .optim import param_groups
from .recipes import Recipe, recipe_for
from .schedule import build_scheduler

__all__ = ["main", "train", "evaluate", "ResumableSampler", "TrainConfig", "build_parser"]

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    model: str
    out: str
    model_kwargs: Optional[Dict] = None
    recipe: Optional[str] = None
    data: Optional[str] = None
    train_list: Optional[str] = None
    test_list: Optional[str] = None
    synthetic: bool = False
    synthetic_size: int = 64
    pretrained: bool = False
    checkpoint: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    backbone_lr: Optional[float] = None
    weight_decay: Optional[float] = None
    warmup_epochs: Optional[float] = None
    layer_decay: Optional[float] = None
    ema: bool = False
    ema_decay: float = 0.9998
    val_fraction: float = 0.1
    select_on: str = "val"
    amp: str = "none"
    grad_checkpointing: bool = False
    workers: int = 0
    seed: int = 1
    resume: bool = False
    ckpt_every: int = 0
    log_every: int = 10
    max_steps: Optional[int] = None
    device: Optional[str] = None


# ---------------------------------------------------------------------------------------------------- data
def starting_weights(name: str) -> str:
    """The model name ``--pretrained`` loads to start training from.

    An untagged architecture starts from its initialisation (its first published tag that is not fine-tuned, e.g.
    ``.openai``), not from the default tag when that is a fine-tuned release (``dferclip_vitb32_dfew`` ->
    ``.dfew_fold1``): training the other DFEW folds from fold 1's weights would test on clips those weights were
    trained on. A tag, ``hf-hub:`` or ``local-dir:`` name is taken as given; a fine-tuned one gets a warning.
    """
    if name.startswith(("hf-hub:", "local-dir:")):
        return name
    arch, _, tag = name.partition(".")
    if not tag:
        init = [t for t in list_pretrained(arch) if t.partition(".")[0] == arch and not get_pretrained_cfg(t).finetuned]
        if init and init[0] != f"{arch}.{get_pretrained_cfg(arch).tag}":
            _logger.info("--pretrained: starting from %s (the initialisation; name a fine-tuned tag to start from it)",
                         init[0])
        return init[0] if init else name
    cfg = get_pretrained_cfg(name)
    if cfg.finetuned:
        _logger.warning("--pretrained: %s is already fine-tuned on %s; if you train or test on %s's splits, their test "
                        "clips may be in these weights' training data", name, cfg.dataset, cfg.dataset)
    return name


def _stratified_split(labels: List[int], fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    rng = random.Random(seed)
    train, val = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        val += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(val)


def _datasets(cfg: TrainConfig, model, recipe: Recipe) -> Tuple[object, object, object]:
    pcfg = model.pretrained_cfg
    t = model.num_frames
    if cfg.synthetic:
        size = pcfg.input_size[-1]
        make = lambda n, seed: SyntheticClips(n, model.num_classes, t, size, pcfg.mean, pcfg.std, seed)  # noqa: E731
        full_train, test = make(cfg.synthetic_size, 0), make(max(cfg.synthetic_size // 2, model.num_classes), 1)
    else:
        train_list = cfg.train_list or (os.path.join(cfg.data, "train.txt") if cfg.data else None)
        test_list = cfg.test_list or (os.path.join(cfg.data, "test.txt") if cfg.data else None)
        if not train_list:
            raise ValueError("no training data: pass --data DIR (with train.txt, test.txt), --train-list, or "
                             "--synthetic")
        train_tf = build_transform(pcfg, train=True, augment=recipe.augment)
        test_tf = build_transform(pcfg, train=False)
        records = read_annotations(train_list, num_classes=model.num_classes)
        # every frame resized to the input size as it is read, as DFER-CLIP's loader does
        frames = dict(frame_size=tuple(pcfg.input_size[-2:]), interpolation=pcfg.interpolation)
        full_train = ClipDataset(records, t, pcfg.frame_sampling, train_tf, train=True, seed=cfg.seed, **frames)
        test = ClipDataset(read_annotations(test_list, num_classes=model.num_classes), t, pcfg.frame_sampling,
                           test_tf, **frames) if test_list and os.path.isfile(test_list) else None
        if cfg.select_on == "val":
            # the validation clips are read like test clips (no augmentation, middle frames)
            full_eval = ClipDataset(records, t, pcfg.frame_sampling, test_tf, **frames)
    if cfg.select_on == "test":
        return full_train, test, test
    tr_idx, val_idx = _stratified_split(full_train.labels, cfg.val_fraction, cfg.seed)
    val_source = full_train if cfg.synthetic else full_eval
    return Subset(full_train, tr_idx), (Subset(val_source, val_idx) if val_idx else None), test


# ---------------------------------------------------------------------------------------------------- optimisation
def _recipe(cfg: TrainConfig, model) -> Recipe:
    recipe = recipe_for(model, name=cfg.recipe)
    if cfg.warmup_epochs is not None:
        recipe = dataclasses.replace(recipe, warmup_epochs=cfg.warmup_epochs)
    return recipe


def _optimizer(model, recipe: Recipe, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(
        model, lr=cfg.lr or recipe.lr, backbone_lr=cfg.backbone_lr or recipe.backbone_lr,
        weight_decay=recipe.weight_decay if cfg.weight_decay is None else cfg.weight_decay, group_lr=recipe.groups(),
        layer_decay=cfg.layer_decay, decay_all=recipe.decay_all)
    if not groups:
        raise ValueError(f"{cfg.model} has no trainable parameters in stage {model.stage}")
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=recipe.momentum)
    return torch.optim.AdamW(groups, lr=groups[0]["lr"])


def _stages(recipe: Recipe, model, cfg: TrainConfig) -> List[int]:
    """Epochs per training stage: the recipe's stages for a model that has that many (A³lign-DFER's BAP), scaled to
    ``--epochs`` keeping their proportions; else one stage."""
    if recipe.stages and model.num_stages > 1:
        if len(recipe.stages) != model.num_stages:
            raise ValueError(f"the recipe has {len(recipe.stages)} stages but {type(model).__name__} has "
                             f"{model.num_stages}")
        if cfg.epochs:
            return [max(1, round(cfg.epochs * s / sum(recipe.stages))) for s in recipe.stages]
        return list(recipe.stages)
    return [cfg.epochs or recipe.epochs]


def _make_ema(model, cfg: TrainConfig):
    from timm.utils import ModelEmaV3
    return ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True)


def _log(path: Optional[str], **entry) -> None:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


# ---------------------------------------------------------------------------------------------------- training
def train(cfg: TrainConfig) -> Dict:
    """Run a training job; returns the results written to ``results.json`` (on rank 0)."""
    rank, world, device = setup(cfg.device)
    main_rank = rank == 0
    torch.manual_seed(cfg.seed)
    ckpt_dir = os.path.join(cfg.out, "checkpoints")
    last = os.path.join(ckpt_dir, "last")
    if main_rank:
        os.makedirs(ckpt_dir, exist_ok=True)
    found = latest_checkpoint(last) if cfg.resume else None
    if cfg.resume and found is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {last!r} (nor {last}.tmp or {last}.old) to continue from; "
                                f"check --out, or run without --resume to start a new run")
    resume = found is not None
    source = f"local-dir:{found}" if resume else (starting_weights(cfg.model) if cfg.pretrained else cfg.model)
    model = create_model(source, pretrained=cfg.pretrained and not resume, checkpoint_path=None if resume else
                         cfg.checkpoint, **({} if resume else (cfg.model_kwargs or {})))
    recipe = _recipe(cfg, model)  # from the built model: its family and the dataset of its classes
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing()
    model.to(device)
    train_set, val_set, test_set = _datasets(cfg, model, recipe)
    data_name = "synthetic clips" if cfg.synthetic else (cfg.data or cfg.train_list)
    stages = _stages(recipe, model, cfg)
    batch = cfg.batch_size or recipe.batch_size
    per_rank_batch = max(1, batch // world)
    sampler = ResumableSampler(len(train_set), True, cfg.seed, rank, world)
    loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, num_workers=cfg.workers,
                        drop_last=False)
    steps_per_epoch = len(loader)
    state = {"stage_index": 0, "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": -1.0, "best_epoch": -1,
             "run": {"model": cfg.model, "batch_size": batch, "seed": cfg.seed, "synthetic": cfg.synthetic}}
    saved = load_training_state(found) if resume else {}
    changed = {k: (v, state["run"][k]) for k, v in saved.get("run", {}).items() if state["run"].get(k) != v}
    if changed:  # the same batches need the same run: another one would silently differ from the interrupted one
        raise ValueError(
            f"--resume: {found} was saved by a run with "
            + ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in changed.items())
            + ": resume with the same arguments, or start a new run in another --out")
    saved_optimizer = saved.pop("optimizer", None)
    state.update({k: saved[k] for k in state if k in saved})
    ema = _make_ema(model, cfg) if cfg.ema else None
    if ema is not None and "ema" in saved:
        ema.module.load_state_dict(saved["ema"])
    log_path = os.path.join(cfg.out, "log.jsonl") if main_rank else None
    if main_rank:
        notice = ("model selection on the TEST set, as the papers do (optimistic: not a clean protocol)"
                  if cfg.select_on == "test" else "model selection on a validation split held out from train")
        _logger.info("clipdfer train: %s (%s family, %s classes), %d training clips, %d process(es) on %s, "
                     "recipe: %s; %s%s", cfg.model, model.family, model.pretrained_cfg.dataset or "its own",
                     len(train_set), world, device, recipe.source, notice, "; EMA of the weights" if ema else "")
        _log(log_path, event="start", model=cfg.model, family=model.family, world=world, select_on=cfg.select_on,
             resumed=resume, ema=bool(ema), layer_decay=cfg.layer_decay, recipe=dataclasses.asdict(recipe))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16" and device.type == "cuda")
    total_epochs = sum(stages)
    resumed_stage = state["stage_index"]
    epoch_offset = sum(stages[:state["stage_index"]])
    scored = lambda: ema.module if ema is not None else model  # noqa: E731  (the model that is evaluated and kept)
    # synthetic clips are a smoke test: what they train is not an expression model, and is not recorded as one
    trained_state = "finetuned" if not cfg.synthetic else None
    cfg_updates = dict(finetuned=not cfg.synthetic, notes=f"trained with clipdfer train on {data_name}" + (
        " (a smoke test: not an expression model)" if cfg.synthetic else ""))

    def checkpoint(directory: str, weights) -> None:
        save_checkpoint(weights, directory, dict(state), optimizer, ema.module if ema is not None else None,
                        **cfg_updates)

    from tqdm.auto import tqdm

    for stage_index in range(state["stage_index"], len(stages)):
        if len(stages) > 1:
            mid_stage = resume and stage_index == resumed_stage and (state["epoch"] or state["step_in_epoch"])
            model.set_stage(stage_index + 1, sync=False if mid_stage else None)  # never re-sync a resumed stage
            if ema is not None:  # the EMA copy follows the stage's switches (and its copy of the weights)
                ema.module.set_stage(stage_index + 1, sync=False if mid_stage else None)
        wrapped = LossWrapper(model)
        ddp = torch.nn.parallel.DistributedDataParallel(wrapped) if world > 1 else wrapped
        optimizer = _optimizer(model, recipe, cfg)
        if saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer)
            saved_optimizer = None
        scheduler = build_scheduler(optimizer, recipe, steps_per_epoch, stages[stage_index], cfg.lr or recipe.lr)
        first_epoch = state["epoch"] if stage_index == state["stage_index"] else 0
        for epoch in range(first_epoch, stages[stage_index]):
            start_step = state["step_in_epoch"] if (epoch == state["epoch"] and stage_index == state["stage_index"]) \
                else 0
            sampler.set_epoch(epoch_offset + epoch, start_step * per_rank_batch)
            base_set = train_set.dataset if isinstance(train_set, Subset) else train_set
            base_set.set_epoch(epoch_offset + epoch)  # the clips' random frames and augmentations of this epoch
            model.train()
            bar = tqdm(loader, disable=not main_rank or not sys.stderr.isatty(),
                       desc=f"stage {stage_index + 1} epoch {epoch + 1}/{stages[stage_index]}")
            for i, (video, labels) in enumerate(bar, start=start_step):
                scheduler.step_update(epoch * steps_per_epoch + i)  # the step within the stage
                video, labels = video.to(device), labels.to(device)
                progress = (epoch_offset + epoch + i / max(1, steps_per_epoch)) / max(1, total_epochs)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = ddp(video, labels=labels, progress=min(1.0, progress))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if trained_state:  # known here: the recipe trains them (recorded by every save)
                    model.weights = trained_state
                state.update(stage_index=stage_index, epoch=epoch, step_in_epoch=i + 1,
                             global_step=state["global_step"] + 1)
                if ema is not None:
                    ema.update(model, step=state["global_step"])
                    if trained_state:
                        ema.module.weights = trained_state
                if main_rank and state["global_step"] % max(1, cfg.log_every) == 0:
                    _log(log_path, event="step", stage=stage_index + 1, epoch=epoch, step=state["global_step"],
                         loss=loss.item(), lr=optimizer.param_groups[0]["lr"], time=time.time())
                if main_rank and cfg.ckpt_every and state["global_step"] % cfg.ckpt_every == 0:
                    checkpoint(last, model)
                if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                    break
            if state["step_in_epoch"] < steps_per_epoch:  # stopped by --max-steps: keep the exact step, end here
                if main_rank:
                    checkpoint(last, model)
                break
            state.update(epoch=epoch + 1, step_in_epoch=0)
            selection = val_set if val_set is not None else test_set
            if selection is not None:
                report = evaluate(ddp if ema is None else ema.module, selection, per_rank_batch, device, cfg.workers,
                                  cfg.amp, rank, world)
                model.train()
                if main_rank:
                    _log(log_path, event="eval", split=cfg.select_on, stage=stage_index + 1, epoch=epoch,
                         uar=report["uar"], war=report["war"])
                    _logger.info("stage %d epoch %d: %s UAR %.2f WAR %.2f", stage_index + 1, epoch + 1,
                                 cfg.select_on, report["uar"], report["war"])
                    if report["uar"] > state["best"]:
                        state.update(best=report["uar"], best_epoch=epoch_offset + epoch)
                        checkpoint(os.path.join(ckpt_dir, "best"), scored())
            if main_rank:
                checkpoint(last, model)
            if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                break
        epoch_offset += stages[stage_index]
        state.update(stage_index=stage_index + 1, epoch=0, step_in_epoch=0)
        if cfg.max_steps and state["global_step"] >= cfg.max_steps:
            break

    digest = float(sum(p.detach().double().sum() for p in model.parameters()))
    results = {"model": cfg.model, "family": model.family, "steps": state["global_step"], "select_on": cfg.select_on,
               "ema": bool(ema), "best_selection_uar": state["best"], "parameter_digest": digest}
    os.makedirs(os.path.join(cfg.out, "ranks"), exist_ok=True)
    with open(os.path.join(cfg.out, "ranks", f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "parameter_digest": digest,
                   "first_values": [float(v) for v in next(model.parameters()).detach().flatten()[:8]]}, f)
    if test_set is not None:
        report = evaluate(ddp if ema is None else ema.module, test_set, per_rank_batch, device, cfg.workers, cfg.amp,
                          rank, world)
        results["test"] = {k: report[k] for k in ("uar", "war", "per_class_recall")}
    if main_rank:
        with open(os.path.join(cfg.out, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        _log(log_path, event="end", **{k: v for k, v in results.items() if k != "test"})
    teardown()
    return results


# ---------------------------------------------------------------------------------------------------- command line
def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="clipdfer train", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="registered name, arch.tag, hf-hub:..., or local-dir:...")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model-kwargs", type=json.loads, help="model arguments as JSON, e.g. '{\"num_frames\": 16}'")
    p.add_argument("--recipe", help="another recipe of the model's family, e.g. dferclip_ours (default: the family's)")
    p.add_argument("--data", help="directory with train.txt and test.txt (FRAME_FOLDER NUM_FRAMES LABEL)")
    p.add_argument("--train-list")
    p.add_argument("--test-list")
    p.add_argument("--synthetic", action="store_true", help="train on synthetic clips (a smoke test)")
    p.add_argument("--synthetic-size", type=_positive_int, default=64)
    p.add_argument("--pretrained", action="store_true", help="start from the model's default weights")
    p.add_argument("--checkpoint", help="start from these weights (.safetensors)")
    p.add_argument("--epochs", type=_positive_int, help="default: the recipe's")
    p.add_argument("--batch-size", type=_positive_int, help="global batch size (default: the recipe's)")
    p.add_argument("--lr", type=float)
    p.add_argument("--backbone-lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=float, help="default: the recipe's")
    p.add_argument("--layer-decay", type=float,
                   help="layer-wise lr decay of the CLIP backbone, e.g. 0.75: block i of L gets decay^(L+1-i) of "
                        "its group's rate (timm.optim); default: none")
    p.add_argument("--ema", action="store_true",
                   help="keep an exponential moving average of the weights (timm ModelEmaV3) and evaluate, select "
                        "and test it")
    p.add_argument("--ema-decay", type=float, default=0.9998)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--select-on", choices=["val", "test"], default="val")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last")
    p.add_argument("--ckpt-every", type=_non_negative_int, default=0,
                   help="also save every N steps (default: every epoch)")
    p.add_argument("--log-every", type=_positive_int, default=10)
    p.add_argument("--max-steps", type=_positive_int)
    p.add_argument("--device")
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 0 (0: off)")
    return value


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if int(os.environ.get("RANK", "0")) == 0:  # the command line shows the run's progress on stdout
        progress = logging.StreamHandler(sys.stdout)
        progress.setFormatter(logging.Formatter("%(message)s"))
        _logger.addHandler(progress)
        _logger.setLevel(logging.INFO)
        _logger.propagate = False
    cfg = TrainConfig(**{k.replace("-", "_"): v for k, v in vars(args).items() if k != "func"})
    try:
        results = train(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"clipdfer train: error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0 and "test" in results:
        print(f"test UAR {results['test']['uar']:.2f} WAR {results['test']['war']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
