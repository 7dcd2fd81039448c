"""Helpers shared by the tests of every registered model."""

import torch

import clipdfer


def tiny(name: str, **kwargs):
    """A registered model on the tiny test backbone; the family, classes, T and switches stay as registered."""
    return clipdfer.create_model(name, clip_arch="test", **kwargs)


def random_video(model, batch: int = 2) -> torch.Tensor:
    """A random clip batch (B, T, 3, H, W) of the model's T and frame size."""
    size = model.image_encoder.image_size
    return torch.randn(batch, model.num_frames, 3, size, size)
