"""Weights from the Hub through huggingface_hub's real download path, against a loopback server (no network)."""

import io
import json
import logging
import time

import pytest
import torch
from safetensors.torch import save as safetensors_bytes
from safetensors.torch import save_file

import clipdfer
from clipdfer.layers import build_open_clip
from clipdfer.models import PretrainedWeightsError
from clipdfer.models._pretrained import DefaultCfg, PretrainedCfg


def _video(batch=2, size=32):
    return torch.randn(batch, 8, 3, size, size)


def _saved_files(model, tmp_path, name="m", **cfg_updates):
    directory = tmp_path / name
    model.save_pretrained(str(directory), **cfg_updates)
    return {f: (directory / f).read_bytes() for f in ("config.json", "model.safetensors")}


def _outputs(model, video):
    with torch.no_grad():
        return model.eval()(video)


def test_download_cache_hit_and_offline(hub, tmp_path, monkeypatch):
    model = clipdfer.create_model("clipdfer_test")
    hub.commit("org/tiny", _saved_files(model, tmp_path))
    video = _video()
    ref = _outputs(model, video)

    first = clipdfer.create_model("hf-hub:org/tiny")
    assert torch.equal(_outputs(first, video), ref)
    assert hub.count("GET", "model.safetensors") == 1 and hub.count("GET", "config.json") == 1
    assert first.pretrained_cfg.hf_hub_id == "org/tiny"
    assert first.base_model == "org/tiny"  # a card of what is trained from it names it (base_model)
    assert 'base_model: org/tiny' in open(first.save_pretrained(str(tmp_path / "next")) + "/README.md").read()

    again = clipdfer.create_model("hf-hub:org/tiny")  # cache hit: metadata checked, nothing downloaded again
    assert torch.equal(_outputs(again, video), ref)
    assert hub.count("GET", "model.safetensors") == 1

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    offline = clipdfer.create_model("hf-hub:org/tiny")
    assert torch.equal(_outputs(offline, video), ref)
    assert len(hub.requests) == n, "offline mode must not send any request"


def test_cache_dir_argument(hub, tmp_path):
    model = clipdfer.create_model("clipdfer_test")
    hub.commit("org/tiny", _saved_files(model, tmp_path))
    cache = tmp_path / "my-cache"
    clipdfer.create_model("hf-hub:org/tiny", cache_dir=str(cache))
    assert list(cache.glob("models--org--tiny/snapshots/*/model.safetensors"))
    assert not (tmp_path / "hub-cache").exists()


def test_pinned_revision(hub, tmp_path):
    v1 = clipdfer.create_model("clipdfer_test")
    sha1 = hub.commit("org/tiny", _saved_files(v1, tmp_path, "v1"), tag="v1")
    v2 = clipdfer.create_model("clipdfer_test")
    hub.commit("org/tiny", _saved_files(v2, tmp_path, "v2"))
    video = _video()
    assert torch.equal(_outputs(clipdfer.create_model("hf-hub:org/tiny"), video), _outputs(v2, video))
    for ref in ("v1", sha1):
        pinned = clipdfer.create_model(f"hf-hub:org/tiny@{ref}")
        assert torch.equal(_outputs(pinned, video), _outputs(v1, video))
        assert pinned.pretrained_cfg.hf_hub_revision == ref
    # a registered tag pinned through the cfg
    pinned = clipdfer.create_model("clipdfer_test", pretrained=True, pretrained_cfg_overlay=dict(
        hf_hub_id="org/tiny", hf_hub_revision="v1"))
    assert torch.equal(_outputs(pinned, video), _outputs(v1, video))


def test_offline_and_uncached_is_a_fast_clear_error(hub, monkeypatch):
    hub.commit("org/tiny", {"model.safetensors": b"x"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asked = len(hub.requests)
    with pytest.raises(PretrainedWeightsError) as info:
        clipdfer.create_model("clipdfer_test", pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="org/tiny"))
    assert len(hub.requests) == asked  # fast: it fails without asking the Hub (no retries, no network timeout)
    msg = str(info.value)
    for needle in ("org/tiny/model.safetensors", "HF_HUB_OFFLINE", "hub-cache", "checkpoint_path=",
                   f"{hub.endpoint}/org/tiny/resolve/main/model.safetensors"):
        assert needle in msg, needle
    assert hub.requests == []


@pytest.mark.parametrize("overlay,needle", [
    (dict(hf_hub_id="org/tiny", hf_hub_filename="nope.safetensors"), "no such file"),
    (dict(hf_hub_id="org/missing"), "repository 'org/missing' not found"),
    (dict(hf_hub_id="org/tiny", hf_hub_revision="v9"), "revision 'v9' does not exist"),
])
def test_missing_file_repo_revision(hub, overlay, needle):
    hub.commit("org/tiny", {"model.safetensors": b"x"})
    with pytest.raises(PretrainedWeightsError, match=needle) as info:
        clipdfer.create_model("clipdfer_test", pretrained=True, pretrained_cfg_overlay=overlay)
    assert hub.endpoint in str(info.value)


def test_unreachable_endpoint_is_a_clear_error(monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # huggingface_hub retries with backoff; skip the waits
    with pytest.raises(PretrainedWeightsError, match="cannot be reached"):
        clipdfer.create_model("clipdfer_test", pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="org/tiny"))


def test_openai_tag_loads_the_open_clip_checkpoint(hub, caplog):
    clip = build_open_clip("test").eval()
    state = {k: v.half().contiguous() for k, v in clip.state_dict().items()}  # OpenAI's release is fp16
    hub.commit("org/openai-tiny", {"open_clip_model.safetensors": safetensors_bytes(state)})
    clip.load_state_dict({k: v.float() for k, v in state.items()})
    with caplog.at_level(logging.WARNING):
        model = clipdfer.create_model("clipdfer_test", pretrained=True, interfit=False, pretrained_cfg_overlay=dict(
            hf_hub_id="org/openai-tiny", hf_hub_filename="open_clip_model.safetensors"))
    assert "not fine-tuned" in caplog.text
    video = _video()
    with torch.no_grad():
        ref = clip.encode_image(video.flatten(0, 1)).view(2, 8, -1)
        assert (model.eval().encode_frames(video) - ref).abs().max() < 1e-5


def test_hf_hub_and_local_dir_names(tmp_path):
    with pytest.raises(ValueError, match="organisation/repository"):
        clipdfer.create_model("hf-hub:justone")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        clipdfer.create_model(f"local-dir:{tmp_path}")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="missing 'architecture'"):
        clipdfer.create_model(f"local-dir:{tmp_path}")


def test_save_load_round_trip_keeps_classes_and_args(tmp_path):
    model = clipdfer.create_model("clipdfer_test", biehpro_depth=1, num_frames=16, msta_kernel_sizes=(7, 7, 13))
    model.set_classes(["calm", "joy", "pain"], prompt_template="a face showing {}.")
    model.save_pretrained(str(tmp_path), finetuned=True, metrics={"uar": 12.5}, dataset="mine")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["label_names"] == ["calm", "joy", "pain"] and config["num_classes"] == 3
    assert config["num_features"] == model.num_features and config["pretrained_cfg"]["crop_pct"] == 1.0
    assert config["pretrained_cfg"]["crop_mode"] == "squash" and config["pretrained_cfg"]["fixed_input_size"]
    assert config["pretrained_cfg"]["first_conv"] == "image_encoder.visual.conv1"
    assert config["pretrained_cfg"]["metrics"] == [["uar", 12.5]]
    loaded = clipdfer.create_model(f"local-dir:{tmp_path}")
    assert loaded.class_names == ("calm", "joy", "pain") and loaded.prompt_template == "a face showing {}."
    assert loaded.num_frames == 16 and len(loaded.biehpro.blocks) == 1
    assert loaded.pretrained_cfg.finetuned and loaded.pretrained_cfg.metrics == (("uar", 12.5),)
    video = torch.randn(2, 16, 3, 32, 32)
    assert torch.equal(_outputs(model, video), _outputs(loaded, video))
    assert not list(tmp_path.glob(".tmp-*")), "atomic writes leave no temporary files"


def test_num_classes_conflict_drops_the_head_with_a_warning(tmp_path, caplog):
    model = clipdfer.create_model("clipdfer_test", text_head=False, biehpro_depth=0)
    path = str(tmp_path / "w.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    with caplog.at_level(logging.WARNING):
        other = clipdfer.create_model("clipdfer_test", text_head=False, biehpro_depth=0, class_names=None,
                                      num_classes=4, checkpoint_path=path)
    assert "head.weight" in caplog.text and "num_classes=4" in caplog.text
    assert other.head.weight.shape == (4, 32)
    torch.testing.assert_close(other.image_encoder.visual.proj, model.image_encoder.visual.proj)
    # a conflict outside the classifier is an error
    with pytest.raises(RuntimeError, match="msta.fc_v.weight"):
        clipdfer.create_model("clipdfer_test", text_head=False, biehpro_depth=0, num_frames=16,
                              msta_kernel_sizes=(7, 7, 13), checkpoint_path=path)


def test_push_to_hf_hub_uploads_config_weights_and_card(hub_uploads):
    uploaded = hub_uploads
    model = clipdfer.create_model("clipdfer_test")
    assert clipdfer.push_to_hf_hub(model, "me/my-dfer", finetuned=True, dataset="dfew") == "commit to me/my-dfer"
    assert uploaded["created"] == ("me/my-dfer", None, True)
    files = uploaded["files"]
    assert set(files) == {"config.json", "model.safetensors", "README.md"}
    card = files["README.md"].decode()
    assert 'create_model("hf-hub:me/my-dfer", pretrained=True)' in card and "happiness" in card
    assert "fine-tuned, on dfew" in card
    assert card.startswith("---\n") and "library_name: clipdfer" in card
    assert "pipeline_tag: video-classification" in card
    assert json.load(io.BytesIO(files["config.json"]))["architecture"] == "clipdfer_test"


def test_default_tag_is_the_first_published_one():
    entry = DefaultCfg(tags=["dfew", "openai"], cfgs={
        "dfew": PretrainedCfg(tag="dfew"), "openai": PretrainedCfg(tag="openai", hf_hub_id="timm/x")})
    assert entry.default.tag == "openai"
    assert DefaultCfg(tags=["a"], cfgs={"a": PretrainedCfg(tag="a")}).default.tag == "a"


OPENAI_REPOS = {"vitb32": "timm/vit_base_patch32_clip_224.openai", "vitb16": "timm/vit_base_patch16_clip_224.openai",
                "vitl14": "timm/vit_large_patch14_clip_224.openai"}


def test_every_openai_tag_points_at_open_clips_hub_file():
    tags = [n for n in clipdfer.list_pretrained("clipdfer_*") if n.endswith(".openai")]
    assert len(tags) == 9
    for name in tags:
        cfg = clipdfer.get_pretrained_cfg(name)
        arch = name.split("_")[1]
        assert (cfg.hf_hub_id, cfg.hf_hub_filename) == (OPENAI_REPOS[arch], "open_clip_model.safetensors"), name
        assert not cfg.finetuned and cfg.license == "mit"
        assert clipdfer.get_pretrained_cfg(name.split(".")[0]) == cfg, "the .openai tag is the default"


@pytest.mark.fullsize
def test_full_size_vitb32_openai_from_hub_equals_open_clip(hub):
    import open_clip
    clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()  # open_clip's own factory
    state = {k: v.half().contiguous() for k, v in clip.state_dict().items()}
    hub.commit(OPENAI_REPOS["vitb32"], {"open_clip_model.safetensors": safetensors_bytes(state)})
    clip.load_state_dict({k: v.float() for k, v in state.items()})
    del state
    model = clipdfer.create_model("clipdfer_vitb32_dfew", pretrained=True, interfit=False).eval()
    video = torch.randn(1, 8, 3, 224, 224)
    with torch.no_grad():
        ref = clip.encode_image(video[0]).unsqueeze(0)
        assert (model.encode_frames(video) - ref).abs().max() < 1e-4
        text = clip.encode_text(model.text_tokens)
        assert (model.text_features() - text).abs().max() < 1e-4
    assert hub.count("GET", "open_clip_model.safetensors") == 1
