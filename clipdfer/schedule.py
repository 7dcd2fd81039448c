"""Learning-rate schedules of the recipes, updated every optimizer step and a function of the step alone, so a resumed
run sets the same rates: timm's ``CosineLRScheduler``, and ours where timm's do not express the recipe (DFER-CLIP's
multi-step, CoOp's constant warm-up); docs/training.md, "Schedules", says why.
"""

import math
from typing import Any

import torch

from .recipes import Recipe

__all__ = ["build_scheduler", "RecipeScheduler", "lr_factor"]


def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int, epochs: int, base_lr: float) -> float:
    """Multiplier of each group's base rate at ``step`` (within the stage), for our schedules."""
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


class RecipeScheduler:
    """Our per-step scheduler (multi-step; constant warm-up then cosine).

    Args:
        optimizer: its groups' ``initial_lr`` (set from ``lr`` when missing) are the base rates.
        recipe: the schedule's shape.
        steps_per_epoch, epochs: the length of the run or stage.
        base_lr: the recipe's main rate, which ``warmup_lr`` and ``min_lr`` are relative to.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int, epochs: int,
                 base_lr: float):
        self.optimizer, self.recipe = optimizer, recipe
        self.steps_per_epoch, self.epochs, self.base_lr = steps_per_epoch, epochs, base_lr
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.step_update(0)

    def step_update(self, num_updates: int) -> None:
        factor = lr_factor(self.recipe, num_updates, self.steps_per_epoch, self.epochs, self.base_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int, epochs: int,
                    base_lr: float) -> Any:
    """The recipe's scheduler for ``epochs`` epochs of ``steps_per_epoch`` steps; call ``step_update(step)`` before
    optimizer step ``step`` (0-based, within the stage)."""
    if recipe.schedule not in ("cosine", "multistep"):
        raise ValueError(f"schedule={recipe.schedule!r}: expected 'cosine' or 'multistep'")
    if recipe.schedule == "cosine" and recipe.warmup_lr is None:
        from timm.scheduler import CosineLRScheduler
        warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
        total = max(1, int(round(epochs * steps_per_epoch)) - warmup)
        return CosineLRScheduler(optimizer, t_initial=total, lr_min=recipe.min_lr, warmup_t=warmup,
                                 warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)
    return RecipeScheduler(optimizer, recipe, steps_per_epoch, epochs, base_lr)
