import dataclasses

import pytest
import torch

import clipdfer
from clipdfer.models import PretrainedCfg, UnknownModelError, register_model
from clipdfer.models._registry import generate_default_cfgs


def test_list_models_wildcards_and_excludes():
    all_models = clipdfer.list_models()
    assert "clipdfer_vitb32_dfew" in all_models and "clipdfer_test" in all_models
    assert all_models == sorted(all_models)
    b32 = clipdfer.list_models("clipdfer_vitb32_*")
    assert b32 == ["clipdfer_vitb32_dfew", "clipdfer_vitb32_ferv39k", "clipdfer_vitb32_mafw"]
    excluded = ["*vitl14*", "dferclip*", "*coop*", "a3lign*", "pmfer*"]
    assert clipdfer.list_models(["*_dfew", "*_mafw"], exclude_filters=excluded) == [
        "clipdfer_vitb16_dfew", "clipdfer_vitb16_mafw", "clipdfer_vitb32_dfew", "clipdfer_vitb32_mafw"]
    assert clipdfer.list_models("nothing_*") == []


def test_tags_and_pretrained_listing():
    tagged = clipdfer.list_models("clipdfer_vitb32_dfew", include_tags=True)
    assert tagged == ["clipdfer_vitb32_dfew.openai"]
    assert clipdfer.list_models("dferclip_vitb32_dfew", include_tags=True) == [
        *[f"dferclip_vitb32_dfew.dfew_fold{i}" for i in range(1, 6)], "dferclip_vitb32_dfew.openai"]
    assert clipdfer.list_models(module="dferclip") == [
        "dferclip_test", "dferclip_vitb32_dfew", "dferclip_vitb32_ferv39k", "dferclip_vitb32_mafw"]
    pretrained = clipdfer.list_pretrained()
    assert "clipdfer_vitb32_dfew.openai" in pretrained
    # the tiny test model is not listed; the official DFER-CLIP checkpoints are (their release URLs)
    assert not any(n.startswith("clipdfer_test") for n in pretrained)
    assert "dferclip_vitb32_dfew.openai" in pretrained and "dferclip_vitb32_mafw.mafw_fold5" in pretrained
    assert clipdfer.get_pretrained_cfg("dferclip_vitb32_dfew").tag == "dfew_fold1", "default: the best published tag"
    assert "clipdfer_test" in clipdfer.list_models(include_tags=True)


def test_is_model_and_pretrained_cfg():
    assert clipdfer.is_model("clipdfer_vitb32_dfew")
    assert clipdfer.is_model("clipdfer_vitb32_dfew.openai")
    assert not clipdfer.is_model("resnet50")
    cfg = clipdfer.get_pretrained_cfg("clipdfer_vitb32_mafw")
    assert cfg.architecture == "clipdfer_vitb32_mafw" and cfg.tag == "openai"
    assert cfg.num_classes == len(cfg.class_names) == 11
    assert cfg.hf_hub_id == "timm/vit_base_patch32_clip_224.openai"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_classes = 3


def test_unknown_name_suggests_nearest():
    with pytest.raises(UnknownModelError, match="clipdfer_vitb32_dfew"):
        clipdfer.create_model("clipdfer_vitb32_dfw")
    with pytest.raises(UnknownModelError, match="its tags are 'clipdfer_vitb32_dfew.openai'"):
        clipdfer.get_pretrained_cfg("clipdfer_vitb32_dfew.imagenet")


def test_register_twice_raises():
    def clipdfer_test():  # same name as a registered model
        pass
    with pytest.raises(ValueError, match="already registered"):
        register_model(clipdfer_test)


def test_generate_default_cfgs_rejects_duplicates_and_orders_tags():
    cfgs = generate_default_cfgs({"a_b.x": PretrainedCfg(), "a_b.y": PretrainedCfg()})
    assert cfgs["a_b"].tags == ["x", "y"] and cfgs["a_b"].default.tag == "x"
    assert cfgs["a_b"].cfgs["y"].architecture == "a_b"


def test_every_pretrained_cfg_is_consistent():
    for name in clipdfer.list_models(include_tags=True):
        cfg = clipdfer.get_pretrained_cfg(name)
        assert cfg.class_names is not None and len(cfg.class_names) == cfg.num_classes, name
        assert cfg.license, name
        assert len(cfg.mean) == len(cfg.std) == cfg.input_size[0] == 3, name
        if cfg.finetuned:
            assert cfg.metrics, name


def test_create_model_kwargs_and_overlay():
    m = clipdfer.create_model("clipdfer_test", num_frames=16, msta_kernel_sizes=(7, 7, 13), msta_strides=(3, 3, 1),
                              pretrained_cfg_overlay=dict(notes="mine"))
    assert m.num_frames == 16 and m.pretrained_cfg.notes == "mine"
    with pytest.raises(ValueError, match="unknown fields"):
        clipdfer.create_model("clipdfer_test", pretrained_cfg_overlay=dict(nope=1))


@pytest.mark.parametrize("name", clipdfer.list_models())
def test_model_and_its_cfg_agree_on_the_frame_count(name):
    """One T per model: what the cfg promises (predict, eval and exports read it) is what the model is built with."""
    with torch.device("meta"):
        model = clipdfer.create_model(name)
    assert model.num_frames == model.pretrained_cfg.num_frames, name


def test_an_overridden_frame_count_is_what_the_cfg_says():
    for name in ("pmfer_test", "a3lign_test", "coop_test", "dferclip_test"):
        model = clipdfer.create_model(name, num_frames=4)
        assert model.num_frames == model.pretrained_cfg.num_frames == 4, name


def test_pretrained_cfg_reads_as_timm_code_reads_it():
    """timm code treats a model's cfg as a mapping (issue 20, item 4: the first part)."""
    model = clipdfer.create_model("dferclip_test")
    cfg = model.pretrained_cfg
    assert cfg["mean"] == cfg.mean and cfg.get("input_size") == cfg.input_size == (3, 32, 32)
    assert cfg["label_names"] == cfg.class_names and "label_names" in cfg and "nonsense" not in cfg
    assert cfg.get("nonsense", 0.875) == 0.875 and model.default_cfg is cfg
    with pytest.raises(KeyError):
        cfg["nonsense"]
    as_dict = dict(cfg)
    assert as_dict == cfg.to_dict() and as_dict["num_frames"] == model.num_frames
    import collections.abc
    assert isinstance(cfg, collections.abc.Mapping) and list(cfg.values()) == list(as_dict.values())


@pytest.mark.parametrize("name", clipdfer.list_models("*_test"))
def test_timm_data_config_gives_exactly_our_frames(name):
    """timm.data.resolve_data_config(model=model) -> create_transform is build_transform: the same image, not timm's
    0.875 centre crop (issue 20, item 4). timm's transform takes PIL images or float tensors in [0, 1]."""
    from timm.data import create_transform, resolve_data_config

    from clipdfer.data.transforms import build_transform
    model = clipdfer.create_model(name)
    config = resolve_data_config(model=model)
    cfg = model.pretrained_cfg
    assert config == {"input_size": cfg.input_size, "interpolation": cfg.interpolation, "mean": cfg.mean,
                      "std": cfg.std, "crop_pct": 1.0, "crop_mode": "squash"}
    frame = torch.rand(3, 57, 41)  # another size and aspect than the model's
    assert torch.equal(create_transform(**config)(frame), build_transform(cfg)(frame))


def test_timm_model_metadata_fields(tmp_path):
    import json

    import timm.data
    for name in clipdfer.list_models("*_test"):
        model = clipdfer.create_model(name)
        cfg = model.pretrained_cfg
        assert dict(model.named_modules())[cfg["first_conv"]] is model.image_encoder.visual.conv1, name
        assert cfg["fixed_input_size"] is True and cfg["label_names"] == tuple(model.class_names), name
        parts = (cfg["classifier"],) if isinstance(cfg["classifier"], str) else cfg["classifier"]
        assert all(hasattr(model, p) for p in parts) and parts == tuple(model.prompt_head_parts), name
        assert timm.data.resolve_model_data_config(model)["crop_pct"] == 1.0
    linear = clipdfer.create_model("clipdfer_test", text_head=False, biehpro_depth=0)
    assert linear.pretrained_cfg["classifier"] == "head"
    reset = clipdfer.create_model("dferclip_test")
    reset.reset_classifier(3, linear=True)  # what is saved describes the saved model
    reset.save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["pretrained_cfg"]["classifier"] == "head"
    assert clipdfer.create_model(f"local-dir:{tmp_path}").pretrained_cfg["classifier"] == "head"
    # a full-size tag's cfg, read without building the model
    config = timm.data.resolve_data_config(pretrained_cfg=clipdfer.get_pretrained_cfg("dferclip_vitb32_dfew"))
    assert config["input_size"] == (3, 224, 224) and config["interpolation"] == "bilinear"
    assert config["mean"] == (0.0, 0.0, 0.0) and (config["crop_pct"], config["crop_mode"]) == (1.0, "squash")
