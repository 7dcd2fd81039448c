"""Exporting the inference path: ONNX (through ``torch.onnx.export(dynamo=True)``) and ``torch.export``."""

from typing import Optional

import torch
from torch import nn

__all__ = ["example_input", "export_onnx"]


def example_input(model: nn.Module, batch_size: int = 1) -> torch.Tensor:
    """A random clip batch shaped as the model's pretrained cfg says: (B, T, 3, H, W)."""
    cfg = model.pretrained_cfg
    return torch.randn(batch_size, model.num_frames, *cfg.input_size)


def export_onnx(model: nn.Module, path: str, batch_size: int = 1, video: Optional[torch.Tensor] = None) -> str:
    """Write the model's inference path (clips -> logits) to an ONNX file, with the batch size fixed.

    The model is put in eval mode and run once first, so cached text features are exported as constants (the text
    encoder is not part of the graph, except where prompts depend on the clip, as in CoCoOp). Needs ``onnx`` and
    ``onnxscript`` (``pip install "clipdfer[onnx]"``).
    """
    model.eval()
    video = example_input(model, batch_size) if video is None else video
    with torch.no_grad():
        model(video)
        program = torch.onnx.export(model, (video,), dynamo=True, input_names=["video"], output_names=["logits"])
    program.save(path)
    return path
