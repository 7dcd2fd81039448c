"""A built-in demo clip, no files or downloads: a drawn face whose mouth turns from neutral to a smile."""

import torch

__all__ = ["demo_clip", "normalize_clip"]


def demo_clip(num_frames: int = 8, size: int = 224) -> torch.Tensor:
    """A (T, 3, size, size) float clip in [0, 1]: skin-toned face, eyes, brows and a mouth that curves up over time."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    frames = []
    for t in range(num_frames):
        smile = t / max(1, num_frames - 1)  # 0 -> 1
        img = torch.empty(3, size, size)
        img[0], img[1], img[2] = 0.25, 0.3, 0.35  # background
        face = (xs / 0.7) ** 2 + (ys / 0.9) ** 2 <= 1
        for c, v in enumerate((0.93, 0.76, 0.62)):
            img[c][face] = v
        for ex in (-0.3, 0.3):
            eye = ((xs - ex) / 0.12) ** 2 + ((ys + 0.25) / (0.07 - 0.02 * smile)) ** 2 <= 1
            brow = ((xs - ex).abs() < 0.16) & ((ys + 0.42 + 0.05 * smile).abs() < 0.025)
            img[:, eye | brow] = 0.1
        curve = 0.45 + 0.12 * smile * (1 - (xs / 0.35) ** 2)  # the mouth's centre line bends up as the smile grows
        mouth = (xs.abs() < 0.35) & ((ys - curve).abs() < 0.03 + 0.03 * smile)
        img[0][mouth], img[1][mouth], img[2][mouth] = 0.6, 0.1, 0.15
        frames.append(img)
    return torch.stack(frames)


def normalize_clip(clip: torch.Tensor, mean, std) -> torch.Tensor:
    """(…, 3, H, W) in [0, 1] -> normalised with per-channel mean and std."""
    mean = torch.tensor(mean, dtype=clip.dtype).view(3, 1, 1)
    std = torch.tensor(std, dtype=clip.dtype).view(3, 1, 1)
    return (clip - mean) / std
