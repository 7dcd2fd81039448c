"""Exporting the inference path: ONNX (through ``torch.onnx.export(dynamo=True)``) and ``torch.export``."""

from typing import Optional

import torch
from torch import nn

__all__ = ["example_input", "export_onnx"]


def example_input(model: nn.Module, batch_size: int = 1) -> torch.Tensor:
    """A random clip batch shaped as the model's pretrained cfg says: (B, T, 3, H, W)."""
    cfg = model.pretrained_cfg
    return torch.randn(batch_size, model.num_frames, *cfg.input_size)


def export_onnx(
        model: nn.Module,
        path: str,
        batch_size: int = 2,
        video: Optional[torch.Tensor] = None,
        dynamic_batch: bool = True,
) -> str:
    """Write the model's inference path to ONNX: input ``video`` (B, T, 3, H, W), output ``logits``. Needs ``onnx`` and
    ``onnxscript``.

    The model is put in eval mode and run once first, so cached text features are constants (CoCoOp's clip-dependent
    prompts keep the text encoder in the graph).

    Args:
        model: any clipdfer model.
        path: the ``.onnx`` file to write.
        batch_size: batch of the example clip (ignored when ``video`` is given).
        video: the example batch; default a random one shaped by the pretrained cfg.
        dynamic_batch: a symbolic batch dimension ``batch``; False fixes the example's B. T and the image size are
            fixed.

    Returns:
        ``path``.
    """
    model.eval()
    video = example_input(model, batch_size) if video is None else video
    if not isinstance(video, torch.Tensor) or video.dim() != 5:
        raise ValueError(f"export_onnx needs an example clip batch of shape (B, T, 3, H, W), got "
                         f"{getattr(video, 'shape', type(video).__name__)}; leave video=None to use example_input")
    dynamic_shapes = None
    if dynamic_batch:
        if video.shape[0] == 1:  # an example batch of 1 would be traced as the constant 1
            video = torch.cat([video, video])
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},)
    with torch.no_grad():
        model(video)
        program = torch.onnx.export(model, (video,), dynamo=True, input_names=["video"], output_names=["logits"],
                                    dynamic_shapes=dynamic_shapes)
    program.save(path)
    return path
