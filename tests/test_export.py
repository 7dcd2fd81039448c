"""The inference path exported to ONNX gives the eager logits when run by onnxruntime, for every family."""

import numpy as np
import pytest
import torch

import clipdfer

ort = pytest.importorskip("onnxruntime")  # installed by the [test] extra


@pytest.mark.parametrize("name", clipdfer.list_models("*_test"))
def test_onnx_export_matches_eager(name, tmp_path):
    from clipdfer.export import example_input, export_onnx
    model = clipdfer.create_model(name).eval()
    video = example_input(model, batch_size=2)
    with torch.no_grad():
        ref = model(video).numpy()
    path = export_onnx(model, str(tmp_path / f"{name}.onnx"), video=video)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"video": video.numpy()})
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
