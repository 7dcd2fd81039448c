"""Gradient reversal for domain/modality-adversarial training (Ganin & Lempitsky, ICML 2015; JMLR 2016)."""

import math

import torch

__all__ = ["grad_reverse", "dann_lambda"]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; the gradient is multiplied by ``-weight`` in the backward pass."""
    return _GradReverse.apply(x, float(weight))


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule of the reversal weight: ``2 / (1 + exp(-gamma * p)) - 1`` for training progress p in [0, 1]."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress={progress}: expected the fraction of training done, in [0, 1]")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0
