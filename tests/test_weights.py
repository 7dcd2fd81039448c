"""Loading weights from local files; never a silent fallback to random weights, never unpickling code."""

import os

import pytest
import torch
from safetensors.torch import save_file

import clipdfer
from clipdfer.layers import build_open_clip
from clipdfer.models import PretrainedWeightsError


def _video(batch=2):
    return torch.randn(batch, 8, 3, 32, 32)


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    a = clipdfer.create_model("clipdfer_test").eval()
    path = str(tmp_path / "w.safetensors")
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, path)
    b = clipdfer.create_model("clipdfer_test", checkpoint_path=path).eval()
    video = _video()
    with torch.no_grad():
        assert torch.equal(a(video), b(video))


def test_open_clip_checkpoint_loads_backbone_and_keeps_new_modules(tmp_path):
    clip = build_open_clip("test").eval()
    path = str(tmp_path / "open_clip_model.safetensors")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, path)
    torch.manual_seed(1)
    fresh = clipdfer.create_model("clipdfer_test")
    torch.manual_seed(1)
    model = clipdfer.create_model("clipdfer_test", checkpoint_path=path).eval()
    for name, p in model.named_parameters():
        if name.startswith("image_encoder.visual."):
            assert torch.equal(p, clip.state_dict()["visual." + name[len("image_encoder.visual."):]]), name
        elif name.startswith("text_encoder."):
            assert torch.equal(p, clip.state_dict()[name[len("text_encoder."):]]), name
        else:  # new modules keep their init
            assert torch.equal(p, dict(fresh.named_parameters())[name]), name
    no_interfit = clipdfer.create_model("clipdfer_test", interfit=False, checkpoint_path=path).eval()
    video = _video()
    with torch.no_grad():
        ref = clip.encode_image(video.flatten(0, 1)).view(2, 8, -1)
        assert (no_interfit.encode_frames(video) - ref).abs().max() < 1e-5
        text_ref = clip.encode_text(no_interfit.text_tokens)
        torch.testing.assert_close(no_interfit.text_features(), text_ref, rtol=1e-5, atol=1e-5)


def test_mismatched_checkpoint_is_an_error(tmp_path):
    a = clipdfer.create_model("clipdfer_test", biehpro_depth=1)
    path = str(tmp_path / "w.safetensors")
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, path)
    with pytest.raises(RuntimeError, match="do not fit.*missing.*biehpro.blocks.1"):
        clipdfer.create_model("clipdfer_test", checkpoint_path=path)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    path = str(tmp_path / "evil.pth")
    torch.save({"state_dict": {}, "x": Evil()}, path)
    with pytest.raises(ValueError, match="posix.system.*nothing was loaded and nothing was run"):
        clipdfer.create_model("clipdfer_test", checkpoint_path=path)
    assert not (tmp_path / "pwned").exists()


class TrainingLog:  # stands for a class of someone's training script, unknown when loading
    def __init__(self):
        self.losses = [0.5, 0.25]


def test_objects_of_unknown_classes_load_as_inert_data(tmp_path):
    from clipdfer.convert import InertObject, load_inert
    a = clipdfer.create_model("clipdfer_test").eval()
    path = str(tmp_path / "ckpt.pth")
    torch.save({"state_dict": a.state_dict(), "log": TrainingLog(), "epoch": 7}, path)
    obj, replaced = load_inert(path)
    assert replaced == [f"{__name__}.TrainingLog"]
    assert isinstance(obj["log"], InertObject) and obj["log"].state == {"losses": [0.5, 0.25]}
    b = clipdfer.create_model("clipdfer_test", checkpoint_path=path).eval()
    with torch.no_grad():
        video = _video()
        assert torch.equal(a(video), b(video))


def test_plain_torch_state_dict_loads_with_weights_only(tmp_path):
    a = clipdfer.create_model("clipdfer_test").eval()
    path = str(tmp_path / "w.pth")
    torch.save({"state_dict": a.state_dict(), "epoch": 3}, path)
    b = clipdfer.create_model("clipdfer_test", checkpoint_path=path).eval()
    torch.save({"model": a.state_dict(), "optimizer": {}}, str(tmp_path / "m.pth"))  # another script's wrapper
    c = clipdfer.create_model("clipdfer_test", checkpoint_path=str(tmp_path / "m.pth")).eval()
    with torch.no_grad():
        video = _video()
        assert torch.equal(a(video), b(video)) and torch.equal(a(video), c(video))


def test_missing_checkpoint_file():
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        clipdfer.create_model("clipdfer_test", checkpoint_path="nope.safetensors")


def test_pretrained_without_published_weights_explains_alternatives():
    with pytest.raises(PretrainedWeightsError) as info:
        clipdfer.create_model("clipdfer_test", pretrained=True)
    msg = str(info.value)
    for needle in ("pretrained=False", "checkpoint_path=", "pretrained_cfg_overlay"):
        assert needle in msg


def test_pretrained_offline_and_uncached_fails_fast_and_clearly(monkeypatch):
    import socket
    attempts = []

    def connect(sock, address):  # fast: it fails without opening a connection (no retries, no network timeout)
        attempts.append(address)
        raise ConnectionRefusedError(f"test: no connection to {address}")
    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(PretrainedWeightsError) as info:
        clipdfer.create_model("clipdfer_test", pretrained=True, pretrained_cfg_overlay=dict(
            hf_hub_id="timm/vit_base_patch32_clip_224.openai", hf_hub_filename="open_clip_model.safetensors"))
    assert attempts == []
    msg = str(info.value)
    assert "timm/vit_base_patch32_clip_224.openai/open_clip_model.safetensors" in msg
    assert "HF_HUB_OFFLINE" in msg and "checkpoint_path=" in msg


def test_pretrained_from_local_file_via_overlay(tmp_path):
    a = clipdfer.create_model("clipdfer_test").eval()
    path = str(tmp_path / "w.safetensors")
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, path)
    b = clipdfer.create_model("clipdfer_test", pretrained=True,
                              pretrained_cfg_overlay=dict(file=path, finetuned=True)).eval()
    with torch.no_grad():
        video = _video()
        assert torch.equal(a(video), b(video))


def test_saved_files_have_the_permissions_of_any_new_file(tmp_path):
    """Issue 27, item 7: save_pretrained, clipdfer convert and train checkpoints wrote 0600 files (a temporary file's
    mode) whatever the umask, so colleagues on a shared server could not load them."""
    import os
    import stat

    from clipdfer.checkpoint import save_checkpoint
    from clipdfer.cli import main
    from test_dferclip import save_official
    model = clipdfer.create_model("dferclip_test")
    previous = os.umask(0o022)
    try:
        model.save_pretrained(str(tmp_path / "saved"))
        save_checkpoint(model, str(tmp_path / "ckpt"), {"epoch": 0})
        save_official(model, str(tmp_path / "DFEW-set1-model_best.pth"))
        assert main(["convert", "dferclip", str(tmp_path / "DFEW-set1-model_best.pth"), str(tmp_path / "conv")]) == 0
        os.umask(0o077)
        model.save_pretrained(str(tmp_path / "private"))
    finally:
        os.umask(previous)
    modes = {os.path.relpath(os.path.join(d, f), tmp_path): stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode)
             for d, _, files in os.walk(tmp_path) for f in files if not f.endswith(".pth")}
    assert {k: oct(v) for k, v in modes.items() if not k.startswith("private") and v != 0o644} == {}
    assert {oct(v) for k, v in modes.items() if k.startswith("private")} == {"0o600"}  # the umask is followed


def test_non_finite_tensors_names_nan_and_infinity_and_not_a_sum_that_overflows():
    from clipdfer.models._loading import non_finite_tensors
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4).bfloat16())
    assert non_finite_tensors(net) == []
    with torch.no_grad():
        net[0].weight.fill_(3e38)  # every value finite, their sum is not: checked value by value, not named
        net[1].bias[2] = float("nan")
        net[2].weight[0, 1] = float("-inf")
    assert non_finite_tensors(net) == ["1.bias", "2.weight"]
