"""Frame transforms from a model's pretrained cfg, plus each recipe's training augmentations.

Every transform takes a clip (T, 3, H, W) uint8 and applies one set of random parameters to all of its frames.
"""

from typing import Callable, Sequence

import torch

__all__ = ["build_transform", "AUGMENTATIONS"]

AUGMENTATIONS = ("crop", "flip", "color_jitter", "rotation")


def build_transform(cfg, train: bool = False, augment: Sequence[str] = ("crop", "flip")) -> Callable:
    """Resize to the cfg's input size, scale to [0, 1], normalise with its mean and std; in training add ``augment``.

    Args:
        cfg: a ``PretrainedCfg`` (``input_size``, ``interpolation``, ``mean``, ``std``).
        train: add the augmentations.
        augment: any of ``crop`` (random resized crop, scale 0.8-1), ``flip`` (horizontal), ``color_jitter``
            (brightness 0.5, DFER-CLIP's DFEW recipe), ``rotation`` (4 degrees, its FERV39k recipe).
    """
    from torchvision.transforms import InterpolationMode, v2  # imported when a transform is built, not with clipdfer

    size = tuple(cfg.input_size[-2:])
    interpolation = InterpolationMode(cfg.interpolation)
    ops = []
    unknown = set(augment) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}: expected some of {AUGMENTATIONS}")
    if train and "color_jitter" in augment:
        ops.append(v2.ColorJitter(brightness=0.5))
    if train and "rotation" in augment:
        ops.append(v2.RandomRotation(4))
    if train and "crop" in augment:
        ops.append(v2.RandomResizedCrop(size, scale=(0.8, 1.0), interpolation=interpolation, antialias=True))
    else:
        ops.append(v2.Resize(size, interpolation=interpolation, antialias=True))
    if train and "flip" in augment:
        ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
    return v2.Compose(ops)
