"""Frame transforms from a model's pretrained cfg, and the recipes' training augmentations: a clip (T, 3, H, W) uint8,
one set of random parameters for all its frames.
"""

import math
from typing import Callable, Sequence, Tuple

import torch

__all__ = ["build_transform", "AUGMENTATIONS", "SizedCrop", "sample_sized_crop", "TorchRandom"]

AUGMENTATIONS = ("crop", "sized_crop", "flip", "color_jitter", "rotation")


class TorchRandom:
    """The draws :func:`sample_sized_crop` needs, from torch's (seeded, resumable) generator, with ``random``'s
    interface."""

    @staticmethod
    def uniform(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand(()))

    @staticmethod
    def random() -> float:
        return float(torch.rand(()))

    @staticmethod
    def randint(a: int, b: int) -> int:
        return int(torch.randint(a, b + 1, ()))


def sample_sized_crop(width: int, height: int, size: int, rng=TorchRandom, scale: Tuple[float, float] = (0.08, 1.0),
                      ratio: Tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10
                      ) -> Tuple[int, int, int, int, bool]:
    """The crop box ``(left, top, width, height, found)`` of DFER-CLIP's ``GroupRandomSizedCrop`` (official code,
    ``dataloader/video_transform.py``), its rule exactly.

    Up to ``attempts`` times: an area fraction uniform in ``scale``, an aspect ratio uniform (not log-uniform) in
    ``ratio``, sides swapped with probability 1/2, kept if they fit, placed uniformly. Otherwise (``found`` False) the
    fallback: the frame scaled so its smaller side is ``size``, a uniformly placed ``size`` x ``size`` crop of it.
    """
    for _ in range(attempts):
        target = rng.uniform(*scale) * width * height
        aspect = rng.uniform(*ratio)
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if rng.random() < 0.5:
            w, h = h, w
        if w <= width and h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h, True
    if width <= height:
        sw, sh = size, int(size * height / width)
    else:
        sw, sh = int(size * width / height), size
    return rng.randint(0, sw - size), rng.randint(0, sh - size), size, size, False


class SizedCrop(torch.nn.Module):
    """DFER-CLIP's random sized crop on a clip (T, 3, H, W): one box (:func:`sample_sized_crop`) for every frame,
    resized to ``size`` x ``size``."""

    def __init__(self, size: int, interpolation, scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3)):
        super().__init__()
        self.size, self.interpolation, self.scale, self.ratio = size, interpolation, scale, ratio

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF
        height, width = clip.shape[-2:]
        left, top, w, h, found = sample_sized_crop(width, height, self.size, TorchRandom, self.scale, self.ratio)
        if found:
            return TF.resized_crop(clip, top, left, h, w, [self.size, self.size], self.interpolation, antialias=True)
        scaled = TF.resize(clip, self.size, self.interpolation, antialias=True)  # smaller side -> size
        return scaled[..., top:top + self.size, left:left + self.size]


def build_transform(cfg, train: bool = False, augment: Sequence[str] = ("crop", "flip")) -> Callable:
    """Resize to the cfg's input size, scale to [0, 1], normalise with its mean and std; in training add ``augment``.

    Args:
        cfg: a ``PretrainedCfg`` (``input_size``, ``interpolation``, ``mean``, ``std``).
        train: add the augmentations.
        augment: any of ``crop`` (random resized crop, area 0.8-1: ours), ``sized_crop`` (:class:`SizedCrop`), ``flip``,
            ``color_jitter`` (brightness 0.5, official DFEW recipe), ``rotation`` (4 degrees, official FERV39k recipe);
            run in DFER-CLIP's order: colour, rotation, crop, flip.
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
    if train and "sized_crop" in augment:
        if size[0] != size[1]:
            raise ValueError(f"sized_crop makes square crops, but the input size is {size}: use 'crop'")
        ops.append(SizedCrop(size[0], interpolation))
    elif train and "crop" in augment:
        ops.append(v2.RandomResizedCrop(size, scale=(0.8, 1.0), interpolation=interpolation, antialias=True))
    else:
        ops.append(v2.Resize(size, interpolation=interpolation, antialias=True))
    if train and "flip" in augment:
        ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
    return v2.Compose(ops)
