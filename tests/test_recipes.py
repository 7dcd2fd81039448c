"""Recipes from the built model, their schedules, layer-wise lr decay and EMA."""

import json
import math
import os

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
    assert recipe_for(model).augment == ("color_jitter", "crop", "flip")


@pytest.mark.parametrize("name,augment", [("dferclip_vitb32_ferv39k", ("rotation", "crop", "flip")),
                                          ("dferclip_vitb32_mafw", ("crop", "flip"))])
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
