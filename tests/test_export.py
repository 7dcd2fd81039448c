"""The inference path exported to ONNX gives the eager logits when run by onnxruntime, for every family."""

import numpy as np
import pytest
import torch

import clipdfer


def _onnxruntime():
    """onnxruntime (the [test] extra; no wheel on some platforms): the export runs everywhere, its check where it is."""
    return pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", clipdfer.list_models("*_test"))
def test_onnx_export_matches_eager(name, tmp_path):
    """Exported with an example batch of 2, the graph runs any batch size and gives the eager logits."""
    from clipdfer.export import example_input, export_onnx
    model = clipdfer.create_model(name).eval()
    path = export_onnx(model, str(tmp_path / f"{name}.onnx"), video=example_input(model, batch_size=2))
    session = _onnxruntime().InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 3):
        video = example_input(model, batch_size=batch)
        with torch.no_grad():
            ref = model(video).numpy()
        (out,) = session.run(["logits"], {"video": video.numpy()})
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_onnx_export_fixed_batch(tmp_path):
    from clipdfer.export import example_input, export_onnx
    model = clipdfer.create_model("clipdfer_test").eval()
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        export_onnx(model, str(tmp_path / "bad.onnx"), video=torch.randn(8, 3, 32, 32))
    path = export_onnx(model, str(tmp_path / "fixed.onnx"), batch_size=1, dynamic_batch=False)
    session = _onnxruntime().InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == 1
    video = example_input(model, batch_size=1)
    with torch.no_grad():
        ref = model(video).numpy()
    np.testing.assert_allclose(session.run(["logits"], {"video": video.numpy()})[0], ref, rtol=1e-4, atol=1e-4)
