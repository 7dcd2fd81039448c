"""Training recipes of the papers (and ours where a paper is silent), by model family: :func:`recipe_for` chooses by the
model's ``family`` and ``pretrained_cfg.dataset`` (docs/training.md has the table).
"""

import dataclasses
from typing import TYPE_CHECKING, Dict, Optional, Tuple, Union

if TYPE_CHECKING:
    from .models import DFERModel

__all__ = ["Recipe", "RECIPES", "FAMILY_RECIPES", "recipe_for"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a family is trained.

    ``stages``: epochs per stage (A³lign-DFER's BAP; the schedule restarts each stage), empty for one. ``group_lr``:
    rates of named parameter groups; ``lr`` for ``new`` and the rest; ``backbone_lr`` for the image encoder.
    ``decay_all``: weight decay on every parameter (DFER-CLIP's official SGD), else matrices only.
    """
    optimizer: str = "adamw"
    lr: float = 2e-5
    backbone_lr: Optional[float] = None
    group_lr: Tuple[Tuple[str, float], ...] = ()
    min_lr: float = 0.0
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | multistep
    warmup_epochs: float = 0.0
    warmup_lr: Optional[float] = None  # constant lr during warm-up (CoOp), else a linear ramp from 0
    milestones: Tuple[int, ...] = ()
    gamma: float = 0.1
    batch_size: int = 32
    epochs: int = 100
    stages: Tuple[int, ...] = ()
    augment: Tuple[str, ...] = ("crop", "flip")
    decay_all: bool = False
    source: str = ""

    def groups(self) -> Dict[str, float]:
        return dict(self.group_lr)


RECIPES: Dict[str, Recipe] = {
    # CLIP-Guided DFER, section 4.1
    "clipdfer": Recipe("adamw", lr=2e-5, min_lr=2e-7, weight_decay=5e-4, warmup_epochs=5, batch_size=32, epochs=100,
                       augment=("crop", "color_jitter", "flip"), source="Zhang et al. IJCB 2024, sec. 4.1"),
    # DFER-CLIP as its official code runs: train_*.sh, main.py (SGD decaying every parameter), dataloader/ (the random
    # sized crop of area 0.08-1; DFEW adds colour jitter, FERV39k rotation: see _DATASET_AUGMENT)
    "dferclip": Recipe("sgd", lr=1e-2, backbone_lr=1e-5, group_lr=(("prompt", 1e-3),), weight_decay=1e-4,
                       schedule="multistep", milestones=(30, 40), batch_size=48, epochs=50,
                       augment=("sized_crop", "flip"), decay_all=True,
                       source="DFER-CLIP official code (train_*.sh, main.py, dataloader/video_transform.py)"),
    # ours: the same, with torchvision's random resized crop of area 0.8-1 and no decay on biases, norms, embeddings
    "dferclip_ours": Recipe("sgd", lr=1e-2, backbone_lr=1e-5, group_lr=(("prompt", 1e-3),), weight_decay=1e-4,
                            schedule="multistep", milestones=(30, 40), batch_size=48, epochs=50,
                            augment=("crop", "flip"), source="DFER-CLIP's schedule with our crop and decay (ours)"),
    # A³lign-DFER: SGD, batch 64 (paper); 40 + 30 + 30 epochs (inferred: third-party notes of the paper); momentum,
    # decay, lrs, cosine per stage (ours)
    "a3lign": Recipe("sgd", lr=1e-3, group_lr=(("prompt", 2e-3),), weight_decay=1e-4, batch_size=64, epochs=100,
                     stages=(40, 30, 30), augment=("crop", "flip"), source="A3lign-DFER spec (partly ours)"),
    # PMFER (ours throughout)
    "pmfer": Recipe("adamw", lr=1e-3, backbone_lr=1e-5, weight_decay=0.05, warmup_epochs=1, batch_size=64, epochs=30,
                    augment=("crop", "flip"), source="PMFER spec (ours)"),
    # CoOp / CoCoOp: SGD 0.002, cosine, one warm-up epoch at 1e-5
    "coop": Recipe("sgd", lr=2e-3, warmup_epochs=1, warmup_lr=1e-5, batch_size=32, epochs=50,
                   augment=("crop", "flip"), source="CoOp (Zhou et al. IJCV 2022)"),
    "cocoop": Recipe("sgd", lr=2e-3, warmup_epochs=1, warmup_lr=1e-5, batch_size=1, epochs=10,
                     augment=("crop", "flip"), source="CoCoOp (Zhou et al. CVPR 2022)"),
}

# Per-dataset augmentations of a recipe; DFER-CLIP's from train_data_loader in its dataloader/video_dataloader.py
_DATASET_AUGMENT = {
    "dferclip": {"dfew": ("color_jitter", "sized_crop", "flip"), "ferv39k": ("rotation", "sized_crop", "flip"),
                 "mafw": ("sized_crop", "flip")},
    "dferclip_ours": {"dfew": ("color_jitter", "crop", "flip"), "ferv39k": ("rotation", "crop", "flip"),
                      "mafw": ("crop", "flip")},
}
# The recipe of each family, and the other recipes it can train with (``recipe_for(model, name)``)
FAMILY_RECIPES = {"clipdfer": ("clipdfer",), "dferclip": ("dferclip", "dferclip_ours"), "a3lign": ("a3lign",),
                  "pmfer": ("pmfer",), "coop": ("coop",), "cocoop": ("cocoop",)}


def recipe_for(model: Union[str, "DFERModel"], dataset: Optional[str] = None, name: Optional[str] = None) -> Recipe:
    """The training recipe of a model.

    Args:
        model: a clipdfer model, or a family name (``RECIPES``).
        dataset: with a family name, the dataset (``dfew``, ``ferv39k``, ``mafw``) for dataset-dependent augmentations.
        name: another recipe of the family (``FAMILY_RECIPES``), e.g. ``"dferclip_ours"``; default the family's.
    """
    if isinstance(model, str):
        family = model
        if family not in FAMILY_RECIPES and family != "clip_zeroshot":
            raise ValueError(
                f"no training recipe for family {family!r}: known families are {sorted(FAMILY_RECIPES)}. To find the "
                f"recipe of a model by its name, build it first: recipe_for(clipdfer.create_model(name))")
        zero_shot = family == "clip_zeroshot"
    else:
        family, zero_shot = model.family, model.zero_shot
        cfg = model.pretrained_cfg
        dataset = dataset or (cfg.dataset if cfg is not None else None)
    if zero_shot:
        raise ValueError(f"{family!r} (zero-shot CLIP) has nothing to train; evaluate it directly with clipdfer eval")
    if family not in FAMILY_RECIPES:
        raise ValueError(f"no training recipe for family {family!r}: known families are {sorted(FAMILY_RECIPES)}")
    name = name or FAMILY_RECIPES[family][0]
    if name not in FAMILY_RECIPES[family]:
        raise ValueError(f"recipe {name!r} is not one of the {family} family's: {list(FAMILY_RECIPES[family])}")
    recipe = RECIPES[name]
    augment = _DATASET_AUGMENT.get(name, {}).get((dataset or "").lower())
    if augment is not None:
        recipe = dataclasses.replace(recipe, augment=augment)
    return recipe
