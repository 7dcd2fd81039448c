"""Bad input gets an error that names the value, what was expected, and the fix."""

import re

import pytest
import torch

import clipdfer


@pytest.fixture(scope="module")
def model():
    return clipdfer.create_model("clipdfer_test").eval()


@pytest.mark.parametrize("shape,dtype,error,patterns", [
    ((8, 3, 32, 32), torch.float32, ValueError, [r"\(8, 3, 32, 32\)", "unsqueeze"]),
    ((2, 8, 3, 32), torch.float32, ValueError, ["4D", r"\(B, T=8, 3, 32, 32\)"]),
    ((2, 8, 3, 32, 32), torch.uint8, TypeError, ["torch.uint8", "float"]),
    ((2, 8, 32, 32, 3), torch.float32, ValueError, [r"\(2, 8, 32, 32, 3\)", "permute"]),
    ((2, 8, 1, 32, 32), torch.float32, ValueError, ["3 colour channels", "expand"]),
    ((2, 8, 3, 64, 64), torch.float32, ValueError, ["32x32", "64x64", "resize"]),
    ((2, 16, 3, 32, 32), torch.float32, ValueError, ["T=8", "T=16", "num_frames=16"]),
    ((0, 8, 3, 32, 32), torch.float32, ValueError, ["at least one clip", r"\(0, 8, 3, 32, 32\)"]),
])
def test_bad_video(model, shape, dtype, error, patterns):
    video = torch.zeros(shape, dtype=dtype)
    with pytest.raises(error) as info:
        model(video)
    for p in patterns:
        assert re.search(p, str(info.value)), (p, str(info.value))


def test_dtype_mismatch_names_both_and_autocast_is_accepted(model):
    with pytest.raises(TypeError, match="torch.float64.*torch.float32.*autocast"):
        model(torch.zeros(1, 8, 3, 32, 32, dtype=torch.float64))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.zeros(1, 8, 3, 32, 32, dtype=torch.bfloat16)).shape == (1, 7)


def test_not_a_tensor(model):
    with pytest.raises(TypeError, match="got list"):
        model([[0.0]])


def test_any_num_frames_without_msta():
    m = clipdfer.create_model("clipdfer_test", msta=False).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 5, 3, 32, 32)).shape == (1, 7)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="scales disagree for num_frames=16"):
        clipdfer.create_model("clipdfer_test", num_frames=16)
    with pytest.raises(ValueError, match="unknown CLIP arch 'vitb64'"):
        clipdfer.create_model("clipdfer_test", clip_arch="vitb64")
    with pytest.raises(ValueError, match="temperature"):
        clipdfer.create_model("clipdfer_test", temperature=0)
    with pytest.raises(ValueError, match="non-empty strings"):
        clipdfer.create_model("clipdfer_test", class_names=["happy", ""])


@pytest.mark.parametrize("name", clipdfer.list_models("*_test"))
def test_empty_batch_is_named_by_every_family(name):
    m = clipdfer.create_model(name).eval()
    size = m.image_encoder.image_size
    with pytest.raises(ValueError, match="at least one clip"):
        m(torch.zeros(0, m.num_frames, 3, size, size))


def test_corrupt_safetensors_names_the_file_and_the_fix(tmp_path):
    from safetensors.torch import save_file
    m = clipdfer.create_model("clipdfer_test")
    m.save_pretrained(str(tmp_path / "saved"))
    weights = tmp_path / "saved" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted copy
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated or corrupt.*get it again"):
        clipdfer.create_model(f"local-dir:{tmp_path / 'saved'}")
    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    path.write_bytes(b"garbage" + path.read_bytes())
    with pytest.raises(ValueError, match="w.safetensors"):
        clipdfer.create_model("clipdfer_test", checkpoint_path=str(path))
