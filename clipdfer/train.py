"""Training: the papers' recipes on one process or many (torchrun / DDP), with exact resume.

    clipdfer train --model clipdfer_vitb32_dfew --data DFEW/annotations/set_1 --out runs/dfew1 --pretrained
    torchrun --standalone --nproc_per_node 2 -m clipdfer.train --model clipdfer_test --synthetic --epochs 1 --out DIR

``--data`` is a directory with ``train.txt`` and ``test.txt`` in DFER-CLIP's annotation format
(``FRAME_FOLDER NUM_FRAMES LABEL``), or give ``--train-list`` / ``--test-list``. Model selection uses a validation
split held out from the training list (``--val-fraction``, stratified, seeded): the clean protocol. ``--select-on
test`` selects on the test list instead, as the papers do, and says so in its output and results.

Outputs in ``--out``: ``checkpoints/last`` and ``checkpoints/best`` (``config.json`` + ``model.safetensors`` that
``create_model("local-dir:...")`` loads, plus ``state.pt`` with optimizer, schedule, step and RNG state, all written
atomically), ``log.jsonl`` (one JSON object per logged step and per evaluation), ``results.json``.
``--resume`` continues from ``checkpoints/last`` at the saved step: the data order is a function of the seed and the
epoch, so the resumed run sees the batches the interrupted one would have seen.
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler, Subset

import clipdfer
from clipdfer.data import ClipDataset, SyntheticClips, build_transform, read_annotations
from clipdfer.metrics import classification_report
from clipdfer.recipes import Recipe, recipe_for

__all__ = ["main", "train", "evaluate", "ResumableSampler", "TrainConfig"]

_logger = logging.getLogger("clipdfer.train")


@dataclasses.dataclass
class TrainConfig:
    model: str
    out: str
    model_kwargs: Optional[Dict] = None
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


class ResumableSampler(Sampler):
    """A seeded shuffle per epoch, sharded over DDP ranks, that can start part-way through an epoch.

    Every rank draws the same permutation (seed + epoch), pads it to a multiple of the world size and takes every
    world-size-th index; ``start`` skips the samples of batches already trained on.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(size / world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        order += order[:self.per_rank * self.world - self.size]  # pad so every rank has as many
        return iter(order[self.rank::self.world][self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start


# ---------------------------------------------------------------------------------------------------- setup
def _dist_setup(device: Optional[str]) -> Tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


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


def _datasets(cfg: TrainConfig, model) -> Tuple[object, object, object]:
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
        augment = recipe_for(cfg.model).augment if not cfg.model.startswith(("hf-hub:", "local-dir:")) else ()
        train_tf = build_transform(pcfg, train=True, augment=augment)
        test_tf = build_transform(pcfg, train=False)
        records = read_annotations(train_list, num_classes=model.num_classes)
        full_train = ClipDataset(records, t, pcfg.frame_sampling, train_tf, train=True, seed=cfg.seed)
        test = ClipDataset(read_annotations(test_list, num_classes=model.num_classes), t, pcfg.frame_sampling,
                           test_tf) if test_list and os.path.isfile(test_list) else None
        if cfg.select_on == "val":
            # the validation clips are read like test clips (no augmentation, middle frames)
            full_eval = ClipDataset(records, t, pcfg.frame_sampling, test_tf)
    if cfg.select_on == "test":
        return full_train, test, test
    tr_idx, val_idx = _stratified_split(full_train.labels, cfg.val_fraction, cfg.seed)
    val_source = full_train if cfg.synthetic else full_eval
    return Subset(full_train, tr_idx), (Subset(val_source, val_idx) if val_idx else None), test


def _optimizer(model, recipe: Recipe, cfg: TrainConfig):
    groups = clipdfer.optim.param_groups(
        model, lr=cfg.lr or recipe.lr, backbone_lr=cfg.backbone_lr or recipe.backbone_lr,
        weight_decay=recipe.weight_decay if cfg.weight_decay is None else cfg.weight_decay, group_lr=recipe.groups())
    if not groups:
        raise ValueError(f"{cfg.model} has no trainable parameters")
    for g in groups:
        g["initial_lr"] = g["lr"]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=recipe.momentum)
    return torch.optim.AdamW(groups, lr=groups[0]["lr"])


def _lr_factor(recipe: Recipe, step: int, steps_per_epoch: int, epochs: int, base_lr: float) -> float:
    """Multiplier of each group's initial lr at ``step`` (counted within the current stage)."""
    epoch_f = step / max(1, steps_per_epoch)
    warm = recipe.warmup_epochs
    if warm and epoch_f < warm:
        if recipe.warmup_lr is not None:
            return recipe.warmup_lr / base_lr
        return (step + 1) / max(1, warm * steps_per_epoch)
    if recipe.schedule == "multistep":
        return recipe.gamma ** sum(epoch_f >= m for m in recipe.milestones)
    total = max(1e-8, epochs - warm)
    progress = min(1.0, (epoch_f - warm) / total)
    floor = recipe.min_lr / base_lr if base_lr else 0.0
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _loss(net, video, labels, progress: float):
    inner = getattr(net, "module", net)  # unwrap DDP
    if isinstance(inner, _LossWrapper):
        return net(video, labels=labels, progress=progress)
    return F.cross_entropy(net(video), labels)


class _LossWrapper(torch.nn.Module):
    """Lets DDP see a model whose training loss is ``training_losses`` (its forward is the inference path)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, video, labels=None, progress=0.0):
        if labels is None:
            return self.inner(video)
        return self.inner.training_losses(video, labels, progress)["total"]


@torch.no_grad()
def evaluate(model, dataset, batch_size: int, device, workers: int = 0, amp: str = "none",
             rank: int = 0, world: int = 1) -> Dict:
    """UAR / WAR report of ``model`` on ``dataset`` (every rank evaluates its shard; the results are gathered)."""
    model.eval()
    sampler = ResumableSampler(len(dataset), False, 0, rank, world)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    preds, labels = [], []
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    for video, y in loader:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            preds.append(model(video.to(device)).argmax(-1).cpu())
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
    raw = model.module if hasattr(model, "module") else model
    raw = raw.inner if isinstance(raw, _LossWrapper) else raw
    return classification_report(p, y, raw.class_names)


# ---------------------------------------------------------------------------------------------------- checkpoints
def _save_checkpoint(raw, optimizer, state: Dict, directory: str, dataset: str = "") -> None:
    """Weights (safetensors, timm format) and training state, replaced as a whole: a crash leaves the old one."""
    tmp = directory + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    raw.save_pretrained(tmp, finetuned=True, dataset=dataset or None,
                        notes=f"trained with clipdfer train for {state['global_step']} steps")
    torch.save({"optimizer": optimizer.state_dict(), **state, "rng_cpu": torch.get_rng_state()},
               os.path.join(tmp, "state.pt"))
    old = directory + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def _log(path: Optional[str], **entry) -> None:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


# ---------------------------------------------------------------------------------------------------- training
def train(cfg: TrainConfig) -> Dict:
    """Run a training job; returns the results written to ``results.json`` (on rank 0)."""
    rank, world, device = _dist_setup(cfg.device)
    main_rank = rank == 0
    torch.manual_seed(cfg.seed)
    recipe = recipe_for(cfg.model)
    if cfg.warmup_epochs is not None:
        recipe = dataclasses.replace(recipe, warmup_epochs=cfg.warmup_epochs)
    ckpt_dir = os.path.join(cfg.out, "checkpoints")
    last = os.path.join(ckpt_dir, "last")
    if main_rank:
        os.makedirs(ckpt_dir, exist_ok=True)
    resume = cfg.resume and os.path.isfile(os.path.join(last, "state.pt"))
    source = f"local-dir:{last}" if resume else cfg.model
    model = clipdfer.create_model(source, pretrained=cfg.pretrained and not resume,
                                  checkpoint_path=None if resume else cfg.checkpoint,
                                  **({} if resume else (cfg.model_kwargs or {})))
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing()
    model.to(device)
    train_set, val_set, test_set = _datasets(cfg, model)
    dataset_name = "synthetic" if cfg.synthetic else os.path.basename(os.path.normpath(cfg.data or cfg.train_list))
    if recipe.stages and hasattr(model, "set_stage"):  # A3lign-DFER's BAP: the stages in one run
        stages = list(recipe.stages)
        if cfg.epochs:  # scale them to --epochs, keeping their proportions
            stages = [max(1, round(cfg.epochs * s / sum(recipe.stages))) for s in recipe.stages]
    else:
        stages = [cfg.epochs or recipe.epochs]
    batch = cfg.batch_size or recipe.batch_size
    per_rank_batch = max(1, batch // world)
    sampler = ResumableSampler(len(train_set), True, cfg.seed, rank, world)
    loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, num_workers=cfg.workers,
                        drop_last=False)
    steps_per_epoch = len(loader)
    state = {"stage_index": 0, "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": -1.0, "best_epoch": -1}
    saved_optimizer = None
    if resume:
        saved = torch.load(os.path.join(last, "state.pt"), map_location="cpu", weights_only=True)
        saved_optimizer = saved.pop("optimizer")
        torch.set_rng_state(saved.pop("rng_cpu"))
        state.update({k: saved[k] for k in state})
    log_path = os.path.join(cfg.out, "log.jsonl") if main_rank else None
    if main_rank:
        notice = ("model selection on the TEST set, as the papers do (optimistic: not a clean protocol)"
                  if cfg.select_on == "test" else "model selection on a validation split held out from train")
        print(f"clipdfer train: {cfg.model}, {len(train_set)} training clips, {world} process(es) on {device}, "
              f"recipe: {recipe.source}; {notice}", flush=True)
        _log(log_path, event="start", model=cfg.model, world=world, select_on=cfg.select_on, resumed=resume,
             recipe=dataclasses.asdict(recipe))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16" and device.type == "cuda")
    total_epochs = sum(stages)
    resumed_stage = state["stage_index"]
    epoch_offset = sum(stages[:state["stage_index"]])
    from tqdm.auto import tqdm

    for stage_index in range(state["stage_index"], len(stages)):
        if hasattr(model, "set_stage") and len(stages) > 1:
            mid_stage = resume and stage_index == resumed_stage and (state["epoch"] or state["step_in_epoch"])
            model.set_stage(stage_index + 1, sync=False if mid_stage else None)  # never re-sync a resumed stage
        wrapped = _LossWrapper(model) if hasattr(model, "training_losses") else model
        ddp = torch.nn.parallel.DistributedDataParallel(wrapped) if world > 1 \
            else wrapped
        optimizer = _optimizer(model, recipe, cfg)
        if saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer)
            saved_optimizer = None
        base_lr = cfg.lr or recipe.lr
        first_epoch = state["epoch"] if stage_index == state["stage_index"] else 0
        for epoch in range(first_epoch, stages[stage_index]):
            start_step = state["step_in_epoch"] if (epoch == state["epoch"] and stage_index == state["stage_index"]) \
                else 0
            sampler.set_epoch(epoch_offset + epoch, start_step * per_rank_batch)
            for ds in (train_set.dataset if isinstance(train_set, Subset) else train_set,):
                if hasattr(ds, "set_epoch"):
                    ds.set_epoch(epoch_offset + epoch)
            model.train()
            bar = tqdm(loader, disable=not main_rank or not sys.stderr.isatty(),
                       desc=f"stage {stage_index + 1} epoch {epoch + 1}/{stages[stage_index]}")
            for i, (video, labels) in enumerate(bar, start=start_step):
                step_in_stage = epoch * steps_per_epoch + i
                factor = _lr_factor(recipe, step_in_stage, steps_per_epoch, stages[stage_index], base_lr)
                for g in optimizer.param_groups:
                    g["lr"] = g["initial_lr"] * factor
                video, labels = video.to(device), labels.to(device)
                progress = (epoch_offset + epoch + i / max(1, steps_per_epoch)) / max(1, total_epochs)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = _loss(ddp, video, labels, min(1.0, progress))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                state.update(stage_index=stage_index, epoch=epoch, step_in_epoch=i + 1,
                             global_step=state["global_step"] + 1)
                if main_rank and state["global_step"] % max(1, cfg.log_every) == 0:
                    _log(log_path, event="step", stage=stage_index + 1, epoch=epoch, step=state["global_step"],
                         loss=loss.item(), lr=optimizer.param_groups[0]["lr"], time=time.time())
                if main_rank and cfg.ckpt_every and state["global_step"] % cfg.ckpt_every == 0:
                    _save_checkpoint(model, optimizer, dict(state), last, dataset_name)
                if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                    break
            if state["step_in_epoch"] < steps_per_epoch:  # stopped by --max-steps: keep the exact step, end here
                if main_rank:
                    _save_checkpoint(model, optimizer, dict(state), last, dataset_name)
                break
            state.update(epoch=epoch + 1, step_in_epoch=0)
            selection = val_set if val_set is not None else test_set
            if selection is not None:
                report = evaluate(ddp, selection, per_rank_batch, device, cfg.workers, cfg.amp, rank, world)
                model.train()
                if main_rank:
                    _log(log_path, event="eval", split=cfg.select_on, stage=stage_index + 1, epoch=epoch,
                         uar=report["uar"], war=report["war"])
                    print(f"stage {stage_index + 1} epoch {epoch + 1}: {cfg.select_on} UAR {report['uar']:.2f} "
                          f"WAR {report['war']:.2f}", flush=True)
                    if report["uar"] > state["best"]:
                        state.update(best=report["uar"], best_epoch=epoch_offset + epoch)
                        _save_checkpoint(model, optimizer, dict(state), os.path.join(ckpt_dir, "best"), dataset_name)
            if main_rank:
                _save_checkpoint(model, optimizer, dict(state), last, dataset_name)
            if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                break
        epoch_offset += stages[stage_index]
        state.update(stage_index=stage_index + 1, epoch=0, step_in_epoch=0)
        if cfg.max_steps and state["global_step"] >= cfg.max_steps:
            break

    digest = float(sum(p.detach().double().sum() for p in model.parameters()))
    results = {"model": cfg.model, "steps": state["global_step"], "select_on": cfg.select_on,
               "best_selection_uar": state["best"], "parameter_digest": digest}
    os.makedirs(os.path.join(cfg.out, "ranks"), exist_ok=True)
    with open(os.path.join(cfg.out, "ranks", f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "parameter_digest": digest,
                   "first_values": [float(v) for v in next(model.parameters()).detach().flatten()[:8]]}, f)
    if test_set is not None:
        report = evaluate(ddp, test_set, per_rank_batch, device, cfg.workers, cfg.amp, rank, world)
        results["test"] = {k: report[k] for k in ("uar", "war", "per_class_recall")}
    if main_rank:
        with open(os.path.join(cfg.out, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        _log(log_path, event="end", **{k: v for k, v in results.items() if k != "test"})
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return results


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="clipdfer train", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="registered name, hf-hub:..., or local-dir:...")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model-kwargs", type=json.loads, help="model arguments as JSON, e.g. '{\"num_frames\": 16}'")
    p.add_argument("--data", help="directory with train.txt and test.txt (FRAME_FOLDER NUM_FRAMES LABEL)")
    p.add_argument("--train-list")
    p.add_argument("--test-list")
    p.add_argument("--synthetic", action="store_true", help="train on synthetic clips (a smoke test)")
    p.add_argument("--synthetic-size", type=int, default=64)
    p.add_argument("--pretrained", action="store_true", help="start from the model's default weights")
    p.add_argument("--checkpoint", help="start from these weights (.safetensors)")
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    p.add_argument("--lr", type=float)
    p.add_argument("--backbone-lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=float, help="default: the recipe's")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--select-on", choices=["val", "test"], default="val")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last")
    p.add_argument("--ckpt-every", type=int, default=0, help="also save every N steps (default: every epoch)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--device")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    cfg = TrainConfig(**{k.replace("-", "_"): v for k, v in vars(args).items() if k != "func"})
    results = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0 and "test" in results:
        print(f"test UAR {results['test']['uar']:.2f} WAR {results['test']['war']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
