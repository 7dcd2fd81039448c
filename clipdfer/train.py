"""Training: the papers' recipes on one process or many (torchrun / DDP), with exact resume (docs/training.md).

    clipdfer train --model clipdfer_vitb32_dfew --data DFEW/annotations/set_1 --out runs/dfew1 --pretrained
    torchrun --standalone --nproc_per_node 2 -m clipdfer.train --model clipdfer_test --synthetic --epochs 1 --out DIR

``--data DIR`` holds ``train.txt`` and ``test.txt`` (``FRAME_FOLDER NUM_FRAMES LABEL``), or ``train/<class>/`` and
``test/<class>/`` folders of clips, whose classes the model takes. The recipe is the built model's
(its family and the dataset of its classes). The model is selected on a split held out from the training list;
``--select-on test`` selects on the test list, as the papers do, and says so. ``--out`` gets ``checkpoints/last`` and
``checkpoints/best`` (loadable with ``local-dir:``), ``log.jsonl`` and ``results.json``; ``--resume`` continues from
``checkpoints/last`` at the saved step.
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Subset

from ._files import write_json
from .checkpoint import latest_checkpoint, load_training_state, save_checkpoint
from .data import ClipDataset, ClipFolder, SyntheticClips, build_transform, find_classes, read_annotations
from .data.datasets import data_dir_error
from .distributed import LossWrapper, ResumableSampler, launch_env, setup, teardown
from .eval import evaluate
from .models import create_model, get_pretrained_cfg, list_pretrained
from .optim import param_groups
from .recipes import Recipe, recipe_for
from .schedule import build_scheduler

__all__ = ["main", "run", "train", "evaluate", "ResumableSampler", "TrainConfig", "TrainState", "build_parser"]

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

    An untagged architecture starts from its first published tag that is not fine-tuned (e.g. ``.openai``), never from a
    fine-tuned default (a fold's release would have seen the other folds' test clips). A tag, ``hf-hub:`` or
    ``local-dir:`` name is taken as given; a fine-tuned one gets a warning.
    """
    if name.startswith(("hf-hub:", "local-dir:")):
        return name
    arch, _, tag = name.partition(".")
    if not tag:
        init = [t for t in list_pretrained(arch) if t.partition(".")[0] == arch and not get_pretrained_cfg(t).finetuned]
        if init and init[0] != get_pretrained_cfg(arch).name:
            _logger.info("--pretrained: starting from %s (the initialisation; name a fine-tuned tag to start from it)",
                         init[0])
        return init[0] if init else name
    cfg = get_pretrained_cfg(name)
    if cfg.finetuned:
        _logger.warning("--pretrained: %s is already fine-tuned on %s; if you train or test on %s's splits, their test "
                        "clips may be in these weights' training data", name, cfg.dataset, cfg.dataset)
    return name


def _stratified_split(labels: List[int], fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """``(train, val)`` indices: ``fraction`` of each class held out, at least one clip of every class that has two
    (one stays in train)."""
    rng = random.Random(seed)
    train, val = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(idx)
        k = min(len(idx) - 1, max(1, int(round(len(idx) * fraction)))) if fraction > 0 and len(idx) > 1 else 0
        val += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(val)


def _datasets(cfg: TrainConfig, model, recipe: Recipe) -> Tuple[object, object, object]:
    pcfg = model.pretrained_cfg
    t = model.num_frames
    if cfg.synthetic:
        given = [f"--{k.replace('_', '-')}" for k in ("data", "train_list", "test_list") if getattr(cfg, k)]
        if given:
            raise ValueError(f"--synthetic makes its own clips, but {', '.join(given)} was given too: leave one out")
        size = pcfg.input_size[-1]

        def make(n, seed):
            return SyntheticClips(n, model.num_classes, t, size, pcfg.mean, pcfg.std, seed)

        full_train, test = make(cfg.synthetic_size, 0), make(max(cfg.synthetic_size // 2, model.num_classes), 1)
    elif _is_folder_layout(cfg):
        full_train, full_eval, test, val = _folder_datasets(cfg, model, recipe)
        if val is not None and cfg.select_on == "val":
            _logger.warning("validation: the %d clips of %s (--val-fraction is not used)", len(val), val.root)
            return full_train, val, test
        if val is not None:
            _logger.warning("%s is not used: --select-on test selects on the test set", val.root)
    else:
        train_list = cfg.train_list or (os.path.join(cfg.data, "train.txt") if cfg.data else None)
        test_list = cfg.test_list or (os.path.join(cfg.data, "test.txt") if cfg.data else None)
        if not train_list:
            raise ValueError("no training data: pass --data DIR (with train/<class>/ and test/<class>/ folders, or "
                             "train.txt and test.txt), --train-list, or --synthetic")
        if cfg.data and not cfg.train_list and not os.path.isfile(train_list):
            raise data_dir_error(cfg.data, "train")
        train_tf = build_transform(pcfg, train=True, augment=recipe.augment)
        test_tf = build_transform(pcfg, train=False)
        records = read_annotations(train_list, num_classes=model.num_classes)
        # every frame resized to the input size as it is read, as DFER-CLIP's loader does
        frames = dict(frame_size=tuple(pcfg.input_size[-2:]), interpolation=pcfg.interpolation)
        full_train = ClipDataset(records, t, pcfg.frame_sampling, train_tf, train=True, seed=cfg.seed, **frames)
        if cfg.test_list and not os.path.isfile(cfg.test_list):
            raise FileNotFoundError(f"--test-list {cfg.test_list!r} does not exist: check the path (or leave it out "
                                    f"to train without a test)")
        if test_list and not os.path.isfile(test_list):
            _logger.warning("%s has no test.txt: the run ends without a test (results.json has no 'test')", cfg.data)
        test = ClipDataset(read_annotations(test_list, num_classes=model.num_classes), t, pcfg.frame_sampling,
                           test_tf, **frames) if test_list and os.path.isfile(test_list) else None
        if cfg.select_on == "val":
            # the validation clips are read like test clips (no augmentation, middle frames)
            full_eval = ClipDataset(records, t, pcfg.frame_sampling, test_tf, **frames)
    if cfg.select_on == "test":
        if test is None:
            raise ValueError("--select-on test needs a test list (--data DIR with test.txt, or --test-list)")
        if cfg.val_fraction != TrainConfig.val_fraction:
            _logger.warning("--val-fraction %s is not used: --select-on test selects on the test list",
                            cfg.val_fraction)
        return full_train, test, test
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError(f"--val-fraction {cfg.val_fraction}: expected a fraction of the training clips in [0, 1)")
    tr_idx, val_idx = _stratified_split(full_train.labels, cfg.val_fraction, cfg.seed)
    if not val_idx:  # selecting on the test list instead would be a different protocol than the record says
        raise ValueError(
            f"--val-fraction {cfg.val_fraction} holds out no validation clip (it is 0, or no class has two training "
            f"clips): give a fraction > 0 and at least two clips of a class, or --select-on test to select on the "
            f"test list as the papers do")
    alone = sorted({full_train.labels[i] for i in tr_idx} - {full_train.labels[i] for i in val_idx})
    if alone:  # a class with one training clip keeps it for training
        _logger.warning("classes %s have no validation clip (one training clip each): the validation UAR is over the "
                        "other classes", [model.class_names[c] if model.class_names else c for c in alone])
    val_source = full_train if cfg.synthetic else full_eval
    return Subset(full_train, tr_idx), Subset(val_source, val_idx), test


def _is_folder_layout(cfg: TrainConfig) -> bool:
    """``--data DIR`` with ``DIR/train/<class>/...`` (and no ``train.txt``): folders per class."""
    return bool(cfg.data) and not cfg.train_list and os.path.isdir(os.path.join(cfg.data, "train")) \
        and not os.path.isfile(os.path.join(cfg.data, "train.txt"))


def use_classes(model, classes: List[str], where: str, rebuild: Optional[Callable] = None):
    """Give ``model`` the classes ``classes`` (a dataset's, from ``where``) unless it has them, and say so: new class
    texts for a text-prompt head that takes them, a new linear head for a linear one; a family whose class-specific
    parts are fixed when built (``model.build_kwargs_for_classes``) is built again for them by ``rebuild(**kwargs)``.

    Returns:
        the model with the classes: ``model``, or the one ``rebuild`` built.

    Raises:
        ValueError: a model whose classes are fixed when built and no ``rebuild``, or classes that need what only the
            user can give (PMFER's phrases); the message gives the ``--model-kwargs`` to pass.
    """
    if model.class_names is not None and list(model.class_names) == list(classes):
        return model
    before = list(model.class_names or [])
    try:
        kwargs = model.build_kwargs_for_classes(classes)
    except ValueError as e:
        raise ValueError(f"{where} has the classes {classes}, but {e}") from e
    if kwargs is None:
        model.reset_classifier(len(classes), class_names=classes)  # a prompt head: set_classes; linear: a new head
        _logger.warning("the classes of %s, %s, replace the model's (%s): %s", where, classes,
                        ", ".join(before) or "none",
                        "new class texts for its text-prompt head" if model.has_prompt_head else "a new linear head")
        return model
    if rebuild is None:
        raise ValueError(f"{where} has the classes {classes}, but {type(model).__name__}'s classes {before} are fixed "
                         f"when it is built: build it with {model._build_advice(kwargs)}")
    _logger.warning("the classes of %s, %s, replace the model's (%s): %s's class-specific parts are fixed when it is "
                    "built, so it is built again with %s", where, classes, ", ".join(before) or "none",
                    type(model).__name__, ", ".join(f"{k}={v!r}" for k, v in kwargs.items()))
    return rebuild(**kwargs)


def _folder_datasets(cfg: TrainConfig, model, recipe: Recipe) -> Tuple[object, object, object, object]:
    """``DIR/train/<class>``, ``DIR/test/<class>`` (optional) and ``DIR/val/<class>`` (optional): the training set,
    the same clips read for validation, the test set and the validation set; the model takes the folders' classes."""
    train_dir, test_dir = os.path.join(cfg.data, "train"), os.path.join(cfg.data, "test")
    val_dir = os.path.join(cfg.data, "val")
    classes = find_classes(train_dir)
    use_classes(model, classes, train_dir)
    full_train = ClipFolder(train_dir, model, train=True, classes=classes, augment=recipe.augment, seed=cfg.seed)
    full_eval = ClipFolder(train_dir, model, classes=classes)  # validation clips read like test clips
    test = val = None
    if os.path.isdir(test_dir):
        test = ClipFolder(test_dir, model, classes=classes)
    else:
        _logger.warning("%s has no test/ folder: the run ends without a test (results.json has no 'test')", cfg.data)
    if os.path.isdir(val_dir):
        val = ClipFolder(val_dir, model, classes=classes)
    return full_train, full_eval, test, val


# ---------------------------------------------------------------------------------------------------- optimisation
def _recipe(cfg: TrainConfig, model) -> Recipe:
    """The model's recipe with the command line's values in it: what the run uses and the log records."""
    recipe = recipe_for(model, name=cfg.recipe)
    given = {k: getattr(cfg, k) for k in ("lr", "backbone_lr", "weight_decay", "warmup_epochs", "batch_size", "epochs")
             if getattr(cfg, k) is not None}
    for name in ("lr", "backbone_lr"):
        if name in given and not (math.isfinite(given[name]) and given[name] > 0):
            raise ValueError(f"--{name.replace('_', '-')} {given[name]}: expected a positive learning rate")
    for name in ("weight_decay", "warmup_epochs"):
        if name in given and not (math.isfinite(given[name]) and given[name] >= 0):
            raise ValueError(f"--{name.replace('_', '-')} {given[name]}: expected a finite number >= 0")
    return dataclasses.replace(recipe, **given)


def _optimizer(model, recipe: Recipe, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(
        model, lr=recipe.lr, backbone_lr=recipe.backbone_lr, weight_decay=recipe.weight_decay, group_lr=recipe.groups(),
        layer_decay=cfg.layer_decay, decay_all=recipe.decay_all)
    if not groups:
        raise ValueError(f"{cfg.model} has no trainable parameters in stage {model.stage}")
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=recipe.momentum)
    return torch.optim.AdamW(groups, lr=groups[0]["lr"])


def _stages(recipe: Recipe, model, cfg: TrainConfig) -> List[int]:
    """Epochs per training stage: the recipe's stages (A³lign-DFER's BAP) scaled to ``--epochs``; else one stage."""
    if recipe.stages and model.num_stages > 1:
        if len(recipe.stages) != model.num_stages:
            raise ValueError(f"the recipe has {len(recipe.stages)} stages but {type(model).__name__} has "
                             f"{model.num_stages}")
        if cfg.epochs is not None:
            return [max(1, round(cfg.epochs * s / sum(recipe.stages))) for s in recipe.stages]
        return list(recipe.stages)
    return [recipe.epochs]


def _make_ema(model, cfg: TrainConfig):
    from timm.utils import ModelEmaV3
    return ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True)


def _log(path: Optional[str], **entry) -> None:
    """One line of log.jsonl (strict JSON: a non-finite number, e.g. a diverged loss, is written as null, with a
    warning)."""
    if not path:
        return
    bad = [k for k, v in entry.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        _logger.warning("%s: %s is %s", entry.get("event"), ", ".join(bad), ", ".join(str(entry[k]) for k in bad))
        entry = {k: None if k in bad else v for k, v in entry.items()}
    with open(path, "a") as f:
        f.write(json.dumps(entry, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class TrainState:
    """Where a run is and its best score: the entries of ``state.pt`` beside optimizer, RNG and EMA state.

    ``epoch`` and ``step_in_epoch`` count within the stage, ``best_epoch`` over all stages; ``best`` is a UAR in percent
    (-1: none yet, for both). ``run`` names what fixes the batches (model, batch size, seed, data).
    """
    stage_index: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: float = -1.0
    best_epoch: int = -1
    run: Dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: Dict) -> "TrainState":
        """The state in a ``state.pt`` dict; its other entries (optimizer, EMA weights) are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})

    @classmethod
    def resume(cls, saved: Dict, run: Dict, path: str) -> "TrainState":
        """The state ``path`` saved (``saved``: its ``state.pt``), continued by the run ``run`` names.

        Raises:
            ValueError: ``path`` was saved by a run with another identity, whose batches would differ.
        """
        changed = {k: (v, run.get(k)) for k, v in saved.get("run", {}).items() if run.get(k) != v}
        if changed:
            raise ValueError(
                f"--resume: {path} was saved by a run with "
                + ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in changed.items())
                + ": resume with the same arguments, or start a new run in another --out")
        return cls.from_dict({"run": run, **saved})

    def budget_spent(self, max_steps: Optional[int]) -> bool:
        """Whether ``--max-steps`` (None: no budget) is used up, which ends the run after its next save."""
        return bool(max_steps) and self.global_step >= max_steps

    @property
    def mid_stage(self) -> bool:
        """Whether the stage has begun (a run resumed in it): its switch must not copy weights again."""
        return bool(self.epoch or self.step_in_epoch)

    def step(self) -> None:
        self.step_in_epoch += 1
        self.global_step += 1

    def end_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def next_stage(self) -> None:
        self.stage_index, self.epoch, self.step_in_epoch = self.stage_index + 1, 0, 0


@dataclasses.dataclass
class _Run:
    """What a run builds once; ``state`` and ``saved_optimizer`` (a resumed run's, until its first stage) change."""
    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module
    ema: Optional[torch.nn.Module]  # timm's ModelEmaV3
    recipe: Recipe
    train_set: object
    val_set: object  # the selection split: held out from train, or the test list with --select-on test
    test_set: Optional[object]
    sampler: ResumableSampler
    loader: DataLoader
    steps_per_epoch: int  # of a whole epoch (a resumed epoch's loader is shorter)
    per_rank_batch: int
    stages: List[int]  # epochs per stage
    state: TrainState
    saved_optimizer: Optional[Dict]
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype]
    trained_state: str  # what the trained weights are: fine-tuned, or (synthetic clips) what they were before

    @property
    def main_rank(self) -> bool:
        return self.rank == 0

    @property
    def log_path(self) -> Optional[str]:
        return os.path.join(self.cfg.out, "log.jsonl") if self.main_rank else None

    @property
    def epochs_before(self) -> int:
        """Epochs of the stages before the state's: an epoch's number over all stages is this plus its own."""
        return sum(self.stages[:self.state.stage_index])

    @property
    def scored(self) -> torch.nn.Module:
        """The model that is evaluated, selected and tested: the EMA copy if there is one."""
        return self.model if self.ema is None else self.ema.module

    def evaluated(self, ddp: torch.nn.Module) -> torch.nn.Module:
        """:attr:`scored`, or without EMA the model as ``ddp`` wraps it (every rank evaluates its shard)."""
        return ddp if self.ema is None else self.ema.module


def _build_run(cfg: TrainConfig) -> _Run:
    """The model (new, or the saved one with ``--resume``), its recipe, data, loader, EMA copy and state.

    Raises:
        FileNotFoundError: ``--resume`` with no checkpoint in ``OUT/checkpoints/last``.
        ValueError: ``--resume`` of a run saved with other arguments; no training data.
    """
    rank, world, device = setup(cfg.device)
    torch.manual_seed(cfg.seed)
    last = os.path.join(cfg.out, "checkpoints", "last")
    if rank == 0:
        os.makedirs(os.path.dirname(last), exist_ok=True)
    found = latest_checkpoint(last) if cfg.resume else None
    if cfg.resume and found is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {last!r} (nor {last}.tmp or {last}.old) to continue from; "
                                f"check --out, or run without --resume to start a new run")
    resume = found is not None
    source = f"local-dir:{found}" if resume else (starting_weights(cfg.model) if cfg.pretrained else cfg.model)
    model = create_model(source, pretrained=cfg.pretrained and not resume, checkpoint_path=None if resume else
                         cfg.checkpoint, **({} if resume else (cfg.model_kwargs or {})))
    if not resume and _is_folder_layout(cfg):  # the folders' classes, the model built again where it must be
        train_dir = os.path.join(cfg.data, "train")

        def rebuild(**kwargs):
            return create_model(source, pretrained=cfg.pretrained, checkpoint_path=cfg.checkpoint,
                                **{**(cfg.model_kwargs or {}), **kwargs})

        model = use_classes(model, find_classes(train_dir), train_dir, rebuild=rebuild)
    recipe = _recipe(cfg, model)  # from the built model: its family and the dataset of its classes
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing()
    model.to(device)
    train_set, val_set, test_set = _datasets(cfg, model, recipe)
    stages = _stages(recipe, model, cfg)
    batch = recipe.batch_size
    per_rank_batch = max(1, batch // world)
    sampler = ResumableSampler(len(train_set), True, cfg.seed, rank, world)
    loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, num_workers=cfg.workers,
                        drop_last=False)
    identity = {"model": cfg.model, "batch_size": batch, "seed": cfg.seed, "synthetic": cfg.synthetic}
    saved = load_training_state(found) if resume else {}  # restores the RNG state
    state = TrainState.resume(saved, identity, found) if resume else TrainState(run=identity)
    ema = _make_ema(model, cfg) if cfg.ema else None
    if ema is not None and "ema" in saved:
        ema.module.load_state_dict(saved["ema"])
    run = _Run(cfg=cfg, rank=rank, world=world, device=device, model=model, ema=ema, recipe=recipe,
               train_set=train_set, val_set=val_set, test_set=test_set, sampler=sampler, loader=loader,
               steps_per_epoch=len(loader), per_rank_batch=per_rank_batch, stages=stages, state=state,
               saved_optimizer=saved.get("optimizer"),
               scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16" and device.type == "cuda"),
               amp_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp),
               trained_state=model.weights if cfg.synthetic else "finetuned")
    if run.main_rank:
        _log_start(run, resume)
    return run


def _log_start(run: _Run, resumed: bool) -> None:
    cfg, model = run.cfg, run.model
    notice = ("model selection on the TEST set, as the papers do (optimistic: not a clean protocol)"
              if cfg.select_on == "test" else "model selection on a validation split held out from train")
    _logger.info("clipdfer train: %s (%s family, %s classes), %d training clips, %d process(es) on %s, recipe: %s; "
                 "%s%s", cfg.model, model.family, model.pretrained_cfg.dataset or "its own", len(run.train_set),
                 run.world, run.device, run.recipe.source, notice, "; EMA of the weights" if run.ema else "")
    _log(run.log_path, event="start", model=cfg.model, family=model.family, world=run.world, select_on=cfg.select_on,
         resumed=resumed, ema=bool(run.ema), layer_decay=cfg.layer_decay, recipe=dataclasses.asdict(run.recipe),
         **_split_sizes(run))


def _split_sizes(run: _Run) -> Dict[str, Optional[int]]:
    """How many clips each split holds: what training, selection and the test saw."""
    return {"train_clips": len(run.train_set), "selection_clips": len(run.val_set),
            "test_clips": len(run.test_set) if run.test_set is not None else None}


def _start_stage(run: _Run) -> Tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    """Switch the model (and its EMA copy) to the state's stage; returns its DDP wrapper, optimizer and scheduler."""
    state, model, cfg = run.state, run.model, run.cfg
    if len(run.stages) > 1:
        sync = False if state.mid_stage else None  # never re-sync a resumed stage
        model.set_stage(state.stage_index + 1, sync=sync)
        if run.ema is not None:  # the EMA copy follows the stage's switches (and its copy of the weights)
            run.ema.module.set_stage(state.stage_index + 1, sync=sync)
    wrapped = LossWrapper(model)
    ddp = torch.nn.parallel.DistributedDataParallel(wrapped) if run.world > 1 else wrapped
    optimizer = _optimizer(model, run.recipe, cfg)
    if run.saved_optimizer is not None:  # the stage the resumed run was saved in
        optimizer.load_state_dict(run.saved_optimizer)
        run.saved_optimizer = None
    scheduler = build_scheduler(optimizer, run.recipe, run.steps_per_epoch, run.stages[state.stage_index],
                                run.recipe.lr)
    return ddp, optimizer, scheduler


def _train_one_epoch(run: _Run, ddp: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> bool:
    """Train from the state's step to the end of its epoch, or until the step budget is spent.

    Returns:
        True when the budget ended the epoch before its last step.
    """
    from tqdm.auto import tqdm

    cfg, state, model, device = run.cfg, run.state, run.model, run.device
    steps = run.steps_per_epoch
    epoch = run.epochs_before + state.epoch  # over all stages: it seeds the data order
    run.sampler.set_epoch(epoch, state.step_in_epoch * run.per_rank_batch)
    base_set = run.train_set.dataset if isinstance(run.train_set, Subset) else run.train_set
    base_set.set_epoch(epoch)  # the clips' random frames and augmentations of this epoch
    model.train()
    trained_state = run.trained_state
    bar = tqdm(run.loader, disable=not run.main_rank or not sys.stderr.isatty(),
               desc=f"stage {state.stage_index + 1} epoch {state.epoch + 1}/{run.stages[state.stage_index]}")
    for video, labels in bar:
        scheduler.step_update(state.epoch * steps + state.step_in_epoch)  # the step within the stage
        video, labels = video.to(device), labels.to(device)
        progress = (epoch + state.step_in_epoch / max(1, steps)) / max(1, sum(run.stages))
        with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            loss = ddp(video, labels=labels, progress=min(1.0, progress))
        if not run.scaler.is_enabled() and not torch.isfinite(loss):  # (fp16's scaler skips such steps itself)
            raise RuntimeError(
                f"the loss is {loss.item()} at step {state.global_step + 1} (stage {state.stage_index + 1}, epoch "
                f"{state.epoch + 1}): training diverged, and its weights would be saved as they are. Lower the "
                f"learning rate (--lr, --backbone-lr) or use --warmup-epochs; the last checkpoint saved before is "
                f"intact")
        optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(optimizer)
        run.scaler.update()
        model.weights = trained_state  # known here: the recipe trains them (recorded by every save)
        state.step()
        if run.ema is not None:
            run.ema.update(model, step=state.global_step)
            run.ema.module.weights = trained_state
        if run.main_rank and state.global_step % max(1, cfg.log_every) == 0:
            _log(run.log_path, event="step", stage=state.stage_index + 1, epoch=state.epoch, step=state.global_step,
                 loss=loss.item(), lr=optimizer.param_groups[0]["lr"], time=time.time())
        if run.main_rank and cfg.ckpt_every and state.global_step % cfg.ckpt_every == 0:
            _checkpoint(run, "last", model, optimizer)
        if state.budget_spent(cfg.max_steps):
            break
    return state.step_in_epoch < steps


def _validate(run: _Run, ddp: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Evaluate on the selection split (``--select-on``) after an epoch; a better UAR is saved as ``best``."""
    cfg, state = run.cfg, run.state
    report = evaluate(run.evaluated(ddp), run.val_set, run.per_rank_batch, run.device, cfg.workers, cfg.amp, run.rank,
                      run.world)
    run.model.train()
    if not run.main_rank:
        return
    epoch = state.epoch - 1  # the epoch that has just ended
    _log(run.log_path, event="eval", split=cfg.select_on, stage=state.stage_index + 1, epoch=epoch,
         uar=report["uar"], war=report["war"])
    _logger.info("stage %d epoch %d: %s UAR %.2f WAR %.2f", state.stage_index + 1, epoch + 1, cfg.select_on,
                 report["uar"], report["war"])
    if report["uar"] > state.best:
        state.best, state.best_epoch = report["uar"], run.epochs_before + epoch
        _checkpoint(run, "best", run.scored, optimizer)


def _checkpoint(run: _Run, name: str, weights: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Save ``weights`` as ``OUT/checkpoints/NAME`` with the state, optimizer and EMA weights (``state.pt``)."""
    data = "synthetic clips" if run.cfg.synthetic else (run.cfg.data or run.cfg.train_list)
    smoke = " (a smoke test: not an expression model)" if run.cfg.synthetic else ""
    save_checkpoint(weights, os.path.join(run.cfg.out, "checkpoints", name), run.state.to_dict(), optimizer,
                    run.ema.module if run.ema is not None else None, finetuned=not run.cfg.synthetic,
                    notes=f"trained with clipdfer train on {data}{smoke}")


def _finish(run: _Run, ddp: torch.nn.Module) -> Dict:
    """Test the evaluated model, write ``results.json`` and each rank's ``ranks/rankN.json``, end the process group."""
    cfg, model = run.cfg, run.model
    digest = float(sum(p.detach().double().sum() for p in model.parameters()))
    results = {"model": cfg.model, "family": model.family, "steps": run.state.global_step,
               "select_on": cfg.select_on, "ema": bool(run.ema), "best_selection_uar": run.state.best,
               "parameter_digest": digest, "recipe": dataclasses.asdict(run.recipe), **_split_sizes(run)}
    os.makedirs(os.path.join(cfg.out, "ranks"), exist_ok=True)
    write_json(os.path.join(cfg.out, "ranks", f"rank{run.rank}.json"), {
        "rank": run.rank, "parameter_digest": digest,
        "first_values": [float(v) for v in next(model.parameters()).detach().flatten()[:8]]})
    if run.test_set is not None:
        report = evaluate(run.evaluated(ddp), run.test_set, run.per_rank_batch, run.device, cfg.workers, cfg.amp,
                          run.rank, run.world)
        results["test"] = {k: report[k] for k in ("uar", "war", "per_class_recall")}
    if run.main_rank:
        write_json(os.path.join(cfg.out, "results.json"), results)
        _log(run.log_path, event="end", **{k: v for k, v in results.items() if k != "test"})
    teardown()
    return results


def train(cfg: TrainConfig) -> Dict:
    """Run a training job; returns the results written to ``results.json`` (on rank 0)."""
    run = _build_run(cfg)
    state = run.state
    for _ in range(state.stage_index, len(run.stages)):
        ddp, optimizer, scheduler = _start_stage(run)
        while state.epoch < run.stages[state.stage_index]:
            if not _train_one_epoch(run, ddp, optimizer, scheduler):  # the epoch's end: select, then save
                state.end_epoch()
                _validate(run, ddp, optimizer)
            if run.main_rank:
                _checkpoint(run, "last", run.model, optimizer)
            if state.budget_spent(cfg.max_steps):
                return _finish(run, ddp)
        state.next_stage()
    return _finish(run, ddp)


# ---------------------------------------------------------------------------------------------------- command line
def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """``clipdfer train``'s options, added to ``parser`` (e.g. a sub-command's) or to a new one."""
    p = parser or argparse.ArgumentParser(prog="clipdfer train")
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("--model", required=True, help="registered name, arch.tag, hf-hub:..., or local-dir:...")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model-kwargs", type=json.loads, help="model arguments as JSON, e.g. '{\"num_frames\": 16}'")
    p.add_argument("--recipe", help="another recipe of the model's family, e.g. dferclip_ours (default: the family's)")
    p.add_argument("--data", help="directory with train.txt and test.txt (FRAME_FOLDER NUM_FRAMES LABEL), or with "
                                  "train/<class>/ and test/<class>/ folders of clips (videos or frame folders)")
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


def run(args: argparse.Namespace) -> int:
    """Train as ``args`` (:func:`build_parser`'s options, nothing else) say; errors propagate."""
    rank = launch_env().rank
    progress = None
    if rank == 0:  # the command line shows the run's progress on stdout, for this run
        progress = logging.StreamHandler(sys.stdout)
        progress.setFormatter(logging.Formatter("%(message)s"))
        _logger.addHandler(progress)
        level, propagate = _logger.level, _logger.propagate
        _logger.setLevel(logging.INFO)
        _logger.propagate = False
    try:
        results = train(TrainConfig(**vars(args)))
    finally:
        if progress is not None:
            _logger.removeHandler(progress)
            _logger.setLevel(level)
            _logger.propagate = propagate
    if rank == 0 and "test" in results:
        print(f"test UAR {results['test']['uar']:.2f} WAR {results['test']['war']:.2f}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return run(args)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"clipdfer train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
