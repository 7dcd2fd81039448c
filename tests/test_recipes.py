"""Recipes from the built model, their schedules, layer-wise lr decay and EMA."""

import json
import math
import os

import numpy as np
import pytest
import torch

import clipdfer
from clipdfer.recipes import RECIPES, recipe_for
from clipdfer.schedule import RecipeScheduler, build_scheduler
from clipdfer.train import TrainConfig, train


def test_recipe_comes_from_the_model_not_its_name(tmp_path):
    model = clipdfer.create_model("dferclip_test")
    model.save_pretrained(str(tmp_path / "saved"), finetuned=True)
    for m in (model, clipdfer.create_model(f"local-dir:{tmp_path / 'saved'}")):
        assert m.family == "dferclip" and m.pretrained_cfg.dataset == "dfew"
        assert "color_jitter" in recipe_for(m).augment  # DFEW's augmentation in DFER-CLIP's scripts


@pytest.mark.parametrize("fold", range(1, 6))
def test_dfew_fold_tags_keep_dfews_colour_jitter(fold):
    with torch.device("meta"):
        model = clipdfer.create_model(f"dferclip_vitb32_dfew.dfew_fold{fold}")
    assert recipe_for(model).augment == ("color_jitter", "sized_crop", "flip")


@pytest.mark.parametrize("name,augment", [("dferclip_vitb32_ferv39k", ("rotation", "sized_crop", "flip")),
                                          ("dferclip_vitb32_mafw", ("sized_crop", "flip"))])
def test_each_dataset_gets_its_augmentation(name, augment):
    with torch.device("meta"):
        assert recipe_for(clipdfer.create_model(name)).augment == augment


def test_recipe_for_names_a_family_or_refuses_clearly():
    assert recipe_for("dferclip", dataset="ferv39k").augment[0] == "rotation"
    assert recipe_for("clipdfer") is RECIPES["clipdfer"]
    with pytest.raises(ValueError, match=r"family 'clipdfer_vitb32_dfew'.*recipe_for\(clipdfer.create_model"):
        recipe_for("clipdfer_vitb32_dfew")
    with pytest.raises(ValueError, match="nothing to train"):
        recipe_for(clipdfer.create_model("clip_zeroshot_test"))


def test_a_saved_model_trains_from_local_dir(tmp_path):
    model = clipdfer.create_model("clipdfer_test", text_head=False, biehpro_depth=0)
    model.save_pretrained(str(tmp_path / "start"))
    res = train(TrainConfig(model=f"local-dir:{tmp_path / 'start'}", out=str(tmp_path / "run"), synthetic=True,
                            synthetic_size=14, epochs=1, batch_size=7))
    assert res["family"] == "clipdfer" and res["steps"] > 0
    start = json.loads(open(tmp_path / "run" / "log.jsonl").readline())
    assert start["recipe"]["source"] == RECIPES["clipdfer"].source
    saved = json.load(open(tmp_path / "run" / "checkpoints" / "last" / "config.json"))
    assert saved["pretrained_cfg"]["dataset"] == "dfew"  # the classes' dataset, not the data folder's name


def _optimizer(*lrs):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def test_dferclip_multistep_is_torchs_per_epoch_milestones():
    recipe, spe, epochs = RECIPES["dferclip"], 3, 50
    ours = _optimizer(1e-2, 1e-5)
    sched = build_scheduler(ours, recipe, spe, epochs, base_lr=1e-2)
    assert isinstance(sched, RecipeScheduler)
    ref = _optimizer(1e-2, 1e-5)
    torch_sched = torch.optim.lr_scheduler.MultiStepLR(ref, milestones=list(recipe.milestones), gamma=recipe.gamma)
    for epoch in range(epochs):
        for i in range(spe):
            sched.step_update(epoch * spe + i)
            assert [g["lr"] for g in ours.param_groups] == pytest.approx([g["lr"] for g in ref.param_groups])
        ref.step()
        torch_sched.step()


def test_cosine_recipe_is_timms_with_linear_warmup_from_zero():
    from timm.scheduler import CosineLRScheduler
    recipe, spe, epochs = RECIPES["clipdfer"], 4, 100  # 2e-5 -> 2e-7, 5 warm-up epochs
    opt = _optimizer(2e-5, 1e-5)
    sched = build_scheduler(opt, recipe, spe, epochs, base_lr=2e-5)
    assert isinstance(sched, CosineLRScheduler)
    warm = 5 * spe
    for step, expected in [(0, 0.0), (warm // 2, 1e-5), (warm, 2e-5), (warm + (epochs * spe - warm) // 2, None),
                           (epochs * spe - 1, None)]:
        sched.step_update(step)
        lr = opt.param_groups[0]["lr"]
        if expected is not None:
            assert lr == pytest.approx(expected)
        else:
            t = (step - warm) / (epochs * spe - warm)
            assert lr == pytest.approx(2e-7 + 0.5 * (2e-5 - 2e-7) * (1 + math.cos(math.pi * t)))
    sched.step_update(warm // 2)  # the second group warms up to its own rate
    assert opt.param_groups[1]["lr"] == pytest.approx(0.5e-5)


def test_coop_keeps_its_constant_warmup():
    opt = _optimizer(2e-3)
    sched = build_scheduler(opt, RECIPES["coop"], 10, 50, base_lr=2e-3)
    sched.step_update(5)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    sched.step_update(10)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3)


def test_layer_decay_scales_the_backbone_by_depth_and_survives_timms_scheduler():
    from timm.scheduler import CosineLRScheduler
    model = clipdfer.create_model("clipdfer_test")  # 2 visual blocks: stem 0, blocks 1-2, the rest 3
    groups = clipdfer.optim.param_groups(model, lr=1e-3, backbone_lr=1e-4, weight_decay=0.05, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())

    def lr_of(name):
        return by_param[id(named[name])]["lr"]
    assert lr_of("image_encoder.visual.conv1.weight") == pytest.approx(1e-4 * 0.5 ** 3)
    assert lr_of("image_encoder.visual.transformer.resblocks.0.attn.in_proj_weight") == pytest.approx(1e-4 * 0.25)
    assert lr_of("image_encoder.visual.transformer.resblocks.1.attn.in_proj_weight") == pytest.approx(1e-4 * 0.5)
    assert lr_of("image_encoder.visual.proj") == pytest.approx(1e-4 * 0.5)
    assert lr_of("msta.fc_v.weight") == lr_of("image_encoder.interaction.0.token.weight") == pytest.approx(1e-3)
    assert by_param[id(named["image_encoder.visual.ln_pre.bias"])]["weight_decay"] == 0.0
    assert not any("lr_scale" in g for g in groups)  # timm's schedulers would apply it a second time
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(
        id(p) for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW(groups)
    before = [g["lr"] for g in opt.param_groups]
    sched = CosineLRScheduler(opt, t_initial=10, t_in_epochs=False)
    sched.step_update(5)
    ratios = [g["lr"] / b for g, b in zip(opt.param_groups, before)]
    assert max(ratios) == pytest.approx(min(ratios))  # one schedule, the decay kept
    with pytest.raises(ValueError, match="layer_decay=1.5"):
        clipdfer.optim.param_groups(model, lr=1e-3, layer_decay=1.5)


def _steps(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f if '"step"' in line]


def test_training_with_layer_decay_and_ema_resumes_exactly(tmp_path):
    kwargs = dict(model="clipdfer_test", synthetic=True, synthetic_size=28, epochs=2, batch_size=7, lr=1e-3,
                  warmup_epochs=0, layer_decay=0.7, ema=True, ema_decay=0.9, log_every=1)
    whole = train(TrainConfig(out=str(tmp_path / "whole"), **kwargs))
    train(TrainConfig(out=str(tmp_path / "part"), max_steps=5, **kwargs))
    part = train(TrainConfig(out=str(tmp_path / "part"), resume=True, **kwargs))
    assert part["parameter_digest"] == whole["parameter_digest"] and part["ema"]
    ema = [torch.load(tmp_path / run / "checkpoints" / "last" / "state.pt", weights_only=True)["ema"]
           for run in ("whole", "part")]
    assert ema[0].keys() == ema[1].keys() and all(torch.equal(ema[0][k], ema[1][k]) for k in ema[0])
    best = clipdfer.create_model(f"local-dir:{tmp_path / 'whole' / 'checkpoints' / 'best'}")
    raw = clipdfer.create_model(f"local-dir:{tmp_path / 'whole' / 'checkpoints' / 'last'}")
    differ = any(not torch.equal(a, b) for a, b in zip(best.state_dict().values(), raw.state_dict().values()))
    assert differ, "best/ holds the EMA weights that were selected, not the raw ones"
    lrs = {round(s["lr"], 12) for s in _steps(str(tmp_path / "whole"))}
    assert len(lrs) > 1  # the cosine schedule moves the rates


def test_the_library_logs_and_does_not_print(tmp_path, capsys):
    train(TrainConfig(model="clipdfer_test", out=str(tmp_path), synthetic=True, synthetic_size=14, epochs=1,
                      batch_size=7))
    assert capsys.readouterr().out == ""


def _official_sized_crop(width, height, size, rng):
    """DFER-CLIP's GroupRandomSizedCrop rule, written from its description: the box it crops."""
    for _ in range(10):
        target = rng.uniform(0.08, 1.0) * width * height
        aspect = rng.uniform(3.0 / 4, 4.0 / 3)
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if rng.random() < 0.5:
            w, h = h, w
        if w <= width and h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    # fallback: scale the smaller side to size (torchvision's Resize rounds the other side down), crop at random
    sw, sh = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    return rng.randint(0, sw - size), rng.randint(0, sh - size), size, size


@pytest.mark.parametrize("width,height", [(224, 224), (320, 240), (112, 300), (40, 3000)])
def test_dferclip_sized_crop_follows_the_official_rule(width, height):
    import random

    from clipdfer.data.transforms import sample_sized_crop
    ours, ref = random.Random(7), random.Random(7)
    for _ in range(500):
        assert sample_sized_crop(width, height, 224, ours)[:4] == _official_sized_crop(width, height, 224, ref)
    boxes = [sample_sized_crop(width, height, 224, ours) for _ in range(2000)]
    fractions = [b[2] * b[3] / (width * height) for b in boxes if b[4]]
    if width >= 224 and height >= 224:  # the official range, not ours (0.8-1): most crops are much smaller
        assert min(fractions) < 0.15 and np.median(fractions) < 0.7


def test_sized_crop_crops_every_frame_alike():
    from clipdfer.data.transforms import build_transform
    cfg = clipdfer.get_pretrained_cfg("dferclip_vitb32_dfew.dfew_fold1")
    tf = build_transform(cfg, train=True, augment=recipe_for("dferclip", dataset="dfew").augment)
    clip = torch.arange(16).view(16, 1, 1, 1).expand(16, 3, 240, 320).to(torch.uint8).contiguous()
    clip[:, :, :120] += 100  # a top half brighter than the bottom in every frame
    out = tf(clip)
    assert out.shape == (16, 3, 224, 224) and out.dtype == torch.float32
    rows = (out[:, 0] - out[:, 0].mean(dim=(1, 2), keepdim=True)).mean(dim=2)  # each frame's row profile
    assert torch.allclose(rows, rows[0].expand_as(rows), atol=0.02), "one box and one flip for the whole clip"


def test_dferclip_recipes_official_and_ours():
    model = clipdfer.create_model("dferclip_test")
    official, ours = recipe_for(model), recipe_for(model, name="dferclip_ours")
    assert official.decay_all and "sized_crop" in official.augment and "color_jitter" in official.augment
    assert not ours.decay_all and "crop" in ours.augment
    groups = clipdfer.optim.param_groups(model, lr=1e-2, backbone_lr=1e-5, weight_decay=1e-4,
                                         group_lr=official.groups(), decay_all=official.decay_all)
    assert all(g["weight_decay"] == 1e-4 for g in groups)  # biases and norms too, as the official SGD
    assert any(g["weight_decay"] == 0 for g in clipdfer.optim.param_groups(model, lr=1e-2, weight_decay=1e-4))
    with pytest.raises(ValueError, match="not one of the dferclip family's"):
        recipe_for(model, name="clipdfer")
