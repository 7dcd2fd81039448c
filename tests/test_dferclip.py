"""DFER-CLIP: official checkpoint format, a forward written from the spec, the converter, cached prompt features."""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

import clipdfer
from clipdfer.convert import UnsafeCheckpointError
from clipdfer.data.texts import dferclip_texts
from clipdfer.layers import build_open_clip


class RecorderMeter:  # the official script pickles an object of its own class like this one
    def __init__(self):
        self.epoch_accuracy = [[0.0, 0.0]] * 3


_OFFICIAL_TEMPORAL = {  # ours -> official (after module.), written from the spec's key list
    "norm1.": "0.fn.norm.", "attn.qkv.": "0.fn.fn.to_qkv.", "attn.proj.": "0.fn.fn.to_out.0.",
    "norm2.": "1.fn.norm.", "mlp.0.": "1.fn.fn.net.0.", "mlp.2.": "1.fn.fn.net.3.",
}


def official_state_dict(model):
    """Our model's weights as the official GenerateModel wrapped in DataParallel would save them."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("image_encoder.visual."):
            name = "image_encoder." + k[len("image_encoder.visual."):]
            out["clip_model_.visual." + k[len("image_encoder.visual."):]] = v
        elif k == "text_encoder.token_embedding.weight":
            name = "clip_model_.token_embedding.weight"
        elif k.startswith("text_encoder."):
            name = k
            out["clip_model_." + k[len("text_encoder."):]] = v
        elif k.startswith("temporal_net.layers."):
            i, rest = k[len("temporal_net.layers."):].split(".", 1)
            for ours, theirs in _OFFICIAL_TEMPORAL.items():
                if rest.startswith(ours):
                    name = f"temporal_net.temporal_transformer.layers.{i}.{theirs}{rest[len(ours):]}"
                    break
        else:
            name = k
        out[name] = v
    emb = F.embedding(model.prompt_learner.tokens, model.text_encoder.token_embedding.weight).detach()
    n_ctx = model.prompt_learner.n_ctx
    out["prompt_learner.token_prefix"], out["prompt_learner.token_suffix"] = emb[:, :1], emb[:, 1 + n_ctx:]
    out["clip_model_.logit_scale"] = torch.tensor(4.6052)
    return {"module." + k: v.clone() for k, v in out.items()}


def save_official(model, path, **extra):
    torch.save({"epoch": 3, "state_dict": official_state_dict(model), "best_acc": torch.tensor(50.0),
                "optimizer": {"state": {}, "param_groups": []}, "recorder": RecorderMeter(), **extra}, path)


def _video(batch=2):
    return torch.rand(batch, 16, 3, 32, 32)


def _logits(model, video):
    with torch.no_grad():
        return model.eval()(video)


def spec_forward(model, clip, video):
    """DFER-CLIP's forward written from shared/spec/dferclip.md, on an open_clip CLIP holding the same weights."""
    b, t = video.shape[:2]
    frames = clip.encode_image(video.flatten(0, 1)).view(b, t, -1)
    tn = model.temporal_net
    x = torch.cat([tn.cls_token.expand(b, -1, -1), frames], 1) + tn.pos_embedding[:, :t + 1]
    for layer in tn.layers:
        h = F.layer_norm(x, (x.shape[-1],), layer.norm1.weight, layer.norm1.bias)
        q, k, v = (h @ layer.attn.qkv.weight.t()).chunk(3, -1)
        split = lambda z: z.view(b, -1, 8, z.shape[-1] // 8).transpose(1, 2)  # noqa: E731  8 heads
        q, k, v = split(q), split(k), split(v)
        att = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        out = (att @ v).transpose(1, 2).reshape(b, -1, x.shape[-1])
        x = x + out @ layer.attn.proj.weight.t() + layer.attn.proj.bias
        h = F.layer_norm(x, (x.shape[-1],), layer.norm2.weight, layer.norm2.bias)
        h = h @ layer.mlp[0].weight.t() + layer.mlp[0].bias
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))  # GELU, tanh form
        x = x + h @ layer.mlp[2].weight.t() + layer.mlp[2].bias
    video_feat = F.normalize(x[:, 0], dim=-1)
    # prompts: [SOS] + 8 class-specific contexts + tokens of the class text + [EOS] + padding
    tokens = model.prompt_learner.tokens
    emb = clip.token_embedding(tokens)
    prompts = torch.cat([emb[:, :1], model.prompt_learner.ctx, emb[:, 9:]], 1) + clip.positional_embedding
    h = clip.transformer(prompts, attn_mask=clip.attn_mask)
    text = clip.ln_final(h)[torch.arange(len(tokens)), tokens.argmax(-1)] @ clip.text_projection
    return video_feat @ F.normalize(text, dim=-1).t() / 0.01


def test_official_checkpoint_loads_and_matches_a_forward_written_from_the_spec(tmp_path):
    source = clipdfer.create_model("dferclip_test")
    path = str(tmp_path / "DFEW-2307-set1-model_best.pth")
    save_official(source, path)
    model = clipdfer.create_model("dferclip_test", checkpoint_path=path).eval()
    video = _video()
    assert torch.equal(_logits(model, video), _logits(source, video))
    clip = build_open_clip("test").eval()
    clip.visual.load_state_dict(model.image_encoder.visual.state_dict())
    text_sd = {k[len("text_encoder."):]: v for k, v in model.state_dict().items() if k.startswith("text_encoder.")}
    clip.load_state_dict(text_sd, strict=False)
    with torch.no_grad():
        assert (spec_forward(model, clip, video) - _logits(model, video)).abs().max() < 1e-3


def test_hostile_official_checkpoint_loads_nothing_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = str(tmp_path / "evil.pth")
    save_official(clipdfer.create_model("dferclip_test"), path, recorder=Payload())
    with pytest.raises(UnsafeCheckpointError, match="nothing was loaded and nothing was run"):
        clipdfer.create_model("dferclip_test", checkpoint_path=path)
    with pytest.raises(UnsafeCheckpointError):
        clipdfer.convert.dferclip.convert_checkpoint(path, str(tmp_path / "out"))
    assert not marker.exists()


def test_converter_writes_a_loadable_model_with_the_official_pipeline(tmp_path):
    from clipdfer.cli import main
    source = clipdfer.create_model("dferclip_test", class_names=clipdfer.data.MAFW_CLASSES)
    path = str(tmp_path / "MAFW-set2-model_best.pth")
    save_official(source, path)
    out = str(tmp_path / "converted")
    assert main(["convert", "dferclip", path, out, "--fold", "2"]) == 0
    config = json.loads((tmp_path / "converted" / "config.json").read_text())
    pcfg = config["pretrained_cfg"]
    assert (pcfg["num_frames"], pcfg["frame_sampling"], pcfg["mean"], pcfg["std"]) == (16, "segment", [0, 0, 0],
                                                                                        [1, 1, 1])
    assert pcfg["finetuned"] and pcfg["tag"] == "mafw_fold2" and pcfg["dataset"] == "mafw"
    assert config["label_names"] == list(clipdfer.data.MAFW_CLASSES)
    loaded = clipdfer.create_model(f"local-dir:{out}")
    video = _video()
    assert torch.equal(_logits(loaded, video), _logits(source, video))


def test_checkpoint_trained_on_other_texts_is_detected(tmp_path):
    source = clipdfer.create_model("dferclip_test", text_type="class_names")
    path = str(tmp_path / "ckpt.pth")
    save_official(source, path)
    with pytest.raises(ValueError, match="text_type='class_names'"):
        clipdfer.create_model("dferclip_test", checkpoint_path=path)
    model = clipdfer.create_model("dferclip_test", text_type="class_names", checkpoint_path=path)
    video = _video()
    assert torch.equal(_logits(model, video), _logits(source, video))


class _Calls:
    def __init__(self, module):
        self.n = 0
        module.register_forward_pre_hook(lambda *a: setattr(self, "n", self.n + 1))


def test_prompt_features_cached_in_eval_and_refreshed_after_steps_and_class_changes():
    model = clipdfer.create_model("dferclip_test", class_specific_contexts=False)
    calls = _Calls(model.text_encoder.ln_final)  # runs once per text encoding
    video = _video()
    with torch.no_grad():
        model.eval()
        first = model(video)
        model(video)
    assert calls.n == 1, "eval reuses the prompt features"
    model.train()
    opt = torch.optim.SGD([model.prompt_learner.ctx], lr=10.0)
    F.cross_entropy(model(video), torch.tensor([0, 1])).backward()
    opt.step()
    assert calls.n == 2, "training re-encodes the prompts"
    with torch.no_grad():
        model.eval()
        after = model(video)
    assert calls.n == 3 and not torch.allclose(after, first), "a training step refreshes the cache"
    with torch.no_grad():
        model.set_classes(["happiness", "anger"])
        assert model(video).shape == (2, 2) and calls.n == 4
    expected = dferclip_texts(["happiness", "anger"])
    assert list(model.class_texts) == expected


def test_class_specific_contexts_keep_their_class_count():
    model = clipdfer.create_model("dferclip_test")
    with pytest.raises(ValueError, match="class-specific, learned for 7 classes"):
        model.set_classes(["happiness", "anger"])
    with pytest.raises(ValueError, match="no DFER-CLIP descriptor for classes \\['boredom'\\]"):
        clipdfer.create_model("dferclip_test", class_names=["boredom"])


def test_paper_learning_rates():
    model = clipdfer.create_model("dferclip_test")
    groups = clipdfer.optim.param_groups(model, lr=1e-2, backbone_lr=1e-5, group_lr={"prompt": 1e-3})
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["backbone"] == 1e-5 and lrs["new"] == 1e-2 and lrs["prompt"] == 1e-3
    ctx_group = [g for g in groups if any(p is model.prompt_learner.ctx for p in g["params"])]
    assert ctx_group[0]["name"].startswith("prompt")


def test_torch_compile_runs():
    model = clipdfer.create_model("dferclip_test").eval()
    video = _video()
    ref = _logits(model, video)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="eager")(video), ref)


def test_converter_records_only_the_provenance_it_can_tell(tmp_path, capsys):
    """Dataset and fold come from the caller or the official file name; a contradiction, or a 7-class file whose
    dataset cannot be told, is an error; a release URL is recorded only for a known dataset and fold."""
    from clipdfer.cli import main
    seven = clipdfer.create_model("dferclip_test")

    def convert(name, *args, model=seven):
        path = tmp_path / name
        if not path.exists():
            save_official(model, str(path))
        out = tmp_path / f"out-{name}-{len(args)}"
        code = main(["convert", "dferclip", str(path), str(out), *args])
        return code, (json.loads((out / "config.json").read_text())["pretrained_cfg"] if code == 0 else None)

    # the official script names everyone's runs alike: a name tells dataset and fold, not that it is the release
    code, pcfg = convert("FERV39K-2307-set1-model_best.pth")
    assert code == 0 and (pcfg["dataset"], pcfg["tag"]) == ("ferv39k", "ferv39k")
    assert pcfg["url"] is None and pcfg["metrics"] == [] and pcfg["license"] is None
    assert "not known to be the authors' release" in pcfg["notes"] and "non-commercial research only" in pcfg["notes"]
    code, pcfg = convert("DFEW-2307-set3-model_best.pth")
    assert code == 0 and pcfg["tag"] == "dfew_fold3" and "DFEW fold 3, not known" in pcfg["notes"]
    code, pcfg = convert("DFEW-2307-set3-model_best.pth", "--release", "dferclip_vitb32_dfew.dfew_fold3")
    assert code == 0 and pcfg["tag"] == "dfew_fold3" and pcfg["license"] == "mit"  # said to be the release
    assert pcfg["url"] == clipdfer.get_pretrained_cfg("dferclip_vitb32_dfew.dfew_fold3").url
    assert pcfg["metrics"] == [["uar_5fold_mean", 59.61], ["war_5fold_mean", 71.25]]
    assert pcfg["notes"].startswith("Official DFER-CLIP weights, DFEW fold 3")
    code, pcfg = convert("my_dfew_model.pth", "--dataset", "dfew")  # no fold
    assert code == 0 and pcfg["tag"] == "dfew" and pcfg["url"] is None and "fold" not in pcfg["notes"].split(",")[0]
    capsys.readouterr()
    for name, args, message in [
            ("model_best.pth", (), "7-class release, which DFEW's and FERV39k's both are"),
            ("model_best.pth", ("--dataset", "mafw"), "dataset 'mafw' has 11 classes but the checkpoint has 7"),
            ("model_best.pth", ("--dataset", "dfew", "--fold", "9"), "--fold 9: DFEW's releases are folds 1-5"),
            ("model_best.pth", ("--dataset", "ferv39k", "--fold", "3"), "FERV39K has one split"),
            ("model_best.pth", ("--dataset", "dfew", "--fold", "0"), "--fold 0: DFEW's releases are folds 1-5"),
            ("DFEW-2307-set3-model_best.pth", ("--fold", "2"), "--fold 2 contradicts the file name"),
            ("DFEW-2307-set3-model_best.pth", ("--release", "dferclip_vitb32_dfew.dfew_fold2"),
             "a DFEW fold 3 release, but dferclip_vitb32_dfew.dfew_fold2 is DFEW fold 2"),
            ("DFEW-2307-set3-model_best.pth", ("--release", "dferclip_vitb32_dfew.openai"),
             "expected an official DFER-CLIP tag")]:
        assert convert(name, *args)[0] == 2, (name, args)
        assert message in capsys.readouterr().err, message
    (tmp_path / "page.pth").write_bytes(b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning"
                                        b"</title></head></html>")
    assert main(["convert", "dferclip", str(tmp_path / "page.pth"), str(tmp_path / "o1")]) == 2
    assert "is an HTML page ('Google Drive - Virus scan warning'), not a checkpoint" in capsys.readouterr().err
    full = (tmp_path / "DFEW-2307-set3-model_best.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(full[: len(full) // 2])
    assert main(["convert", "dferclip", str(tmp_path / "cut.pth"), str(tmp_path / "o2"), "--dataset", "dfew"]) == 2
    err = capsys.readouterr().err
    assert "cut.pth" in err and "is not a readable PyTorch checkpoint" in err and "truncated" in err
    assert "\n" not in err.strip()  # one line, not torch's paragraph
