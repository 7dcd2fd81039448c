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
    with pytest.raises(ValueError, match="scales disagree for num_frames=16.*msta_kernel_sizes=\\(7, 7, 13\\)"):
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


@pytest.mark.parametrize("name,kwargs,match", [
    ("clipdfer_test", dict(biehpro_mlp_ratio=1e9), r"biehpro_mlp_ratio=1000000000.0: expected a number in \(0, 64\]"),
    ("clipdfer_test", dict(interfit_lstm_hidden=-5), r"interfit_lstm_hidden=-5: expected a whole number in \[1, "),
    ("clipdfer_test", dict(num_frames=0), r"num_frames=0: expected a whole number in \[1, 1024\]"),
    ("dferclip_test", dict(temporal_layers=2.5), r"temporal_layers=2.5: expected a whole number"),
    ("coop_test", dict(n_ctx=10**6), r"n_ctx=1000000: expected a whole number in \[1, 64\]"),
    ("a3lign_test", dict(logit_scale=0), r"logit_scale=0: expected a number in \(0, 1000\]"),
    ("pmfer_test", dict(mask_heads=True), r"mask_heads=True: expected a whole number"),
    ("clipdfer_test", dict(pretrained_cfg_overlay=dict(std=(0.0, 0.0, 0.0))), r"std=\(0.0, 0.0, 0.0\): expected three "
                                                                              r"positive finite numbers"),
    ("clipdfer_test", dict(pretrained_cfg_overlay=dict(input_size=(3, -32, 32))), r"input_size=\(3, -32, 32\)"),
])
def test_bad_values_are_refused_at_create_model(name, kwargs, match):
    """Issue 27, item 8: std 0, negative sizes, biehpro_mlp_ratio=1e9 or interfit_lstm_hidden=-5 were found late (each
    source of a batch failing in turn, or a 4 TB allocation tried): one error at create_model, naming key, value and
    range."""
    with pytest.raises(ValueError, match=match):
        clipdfer.create_model(name, **kwargs)


def test_input_size_follows_a_model_built_at_another_size_and_a_given_one_must_fit():
    """A full-size name built with the tiny tower (clip_arch="test") takes 32x32 frames and its cfg says so; an
    input_size the caller gives that the model cannot take is one error at create_model."""
    model = clipdfer.create_model("clipdfer_vitb32_dfew", clip_arch="test")
    assert model.pretrained_cfg.input_size == (3, 32, 32)
    assert clipdfer.create_model("clipdfer_vitb32_dfew").pretrained_cfg.input_size == (3, 224, 224)
    with pytest.raises(ValueError, match=r"input_size=\(3, 64, 64\), but the model takes 32x32 frames"):
        clipdfer.create_model("clipdfer_test", pretrained_cfg_overlay=dict(input_size=(3, 64, 64)))


def test_a_bad_value_in_a_saved_config_names_the_key(tmp_path):
    import json
    clipdfer.create_model("clipdfer_test").save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    config["pretrained_cfg"]["std"] = [0.0, 0.0, 0.0]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"std=\(0.0, 0.0, 0.0\)"):
        clipdfer.create_model(f"local-dir:{tmp_path}")


def test_the_advice_for_another_t_builds_a_model_that_takes_it():
    """Issue 27, item 10: a 6-frame clip into clipdfer_test advised num_frames=6, which then failed in MSTA without
    naming msta_kernel_sizes / msta_strides. The advice names them, and following it works."""
    import re
    model = clipdfer.create_model("clipdfer_test").eval()
    with pytest.raises(ValueError) as e:
        model(torch.randn(1, 6, 3, 32, 32))
    advice = re.search(r"build the model with (.*)$", str(e.value)).group(1)
    kwargs = eval(f"dict({advice})")  # the printed keyword arguments, as a user would paste them
    assert set(kwargs) == {"num_frames", "msta_kernel_sizes", "msta_strides"}
    with torch.no_grad():
        assert clipdfer.create_model("clipdfer_test", **kwargs).eval()(torch.randn(1, 6, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(ValueError, match=r"Build the model with num_frames=6, msta_kernel_sizes=\(6, 6, 6\)"):
        clipdfer.create_model("clipdfer_test", num_frames=6)


def test_saved_configs_and_arguments_are_taken_as_they_say_or_refused(tmp_path):
    """A second review of issue 27: the string "false" read as True, a config without mean/std took CLIP's, a NaN
    pixel was cast to 0, a DFER-CLIP window longer than its T failed each source in turn."""
    import json

    import numpy as np
    from PIL import Image

    from clipdfer.data.io import to_rgb
    from clipdfer.inference import Predictor, WindowSettings
    with pytest.raises(ValueError, match="pooled_similarity='false': expected True or False"):
        clipdfer.create_model("a3lign_test", pooled_similarity="false")
    with pytest.raises(ValueError, match="freeze_text=0: expected True or False"):
        clipdfer.create_model("clipdfer_test", freeze_text=0)
    clipdfer.create_model("dferclip_test").save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    del config["pretrained_cfg"]["mean"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"lacks \['mean'\]"):
        clipdfer.create_model(f"local-dir:{tmp_path}")
    pixels = np.full((4, 4), 0.5, np.float32)
    pixels[0, 0] = np.nan
    with pytest.raises(ValueError, match="mode F.*nan"):
        to_rgb(Image.fromarray(pixels, "F"))
    with pytest.raises(ValueError, match="window=20: DFERCLIP scores clips of at most 16 frames"):
        Predictor("dferclip_test", pretrained=False, windows=WindowSettings(window=20))
    trained = clipdfer.create_model("clipdfer_test")
    trained.weights = "finetuned"  # weights learned for T = 8: another T cannot use them
    with pytest.raises(ValueError, match=r"sample 8 frames per clip$"):
        trained(torch.randn(1, 6, 3, 32, 32))
    with pytest.raises(ValueError, match=r"classes are fixed at construction: clipdfer.create_model"):
        clipdfer.create_model("a3lign_test").reset_classifier(3)
