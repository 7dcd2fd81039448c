"""Every registered model, at tiny size: shapes, finiteness, gradients where (and only where) they belong."""

import pytest
import torch
import torch.nn.functional as F

import clipdfer
from clipdfer.layers import build_open_clip
from helpers import random_video as _video, tiny as _tiny

ALL_MODELS = clipdfer.list_models()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_forward_backward(name):
    model = _tiny(name)
    cfg = model.pretrained_cfg
    assert cfg is not None and cfg.architecture == name
    assert model.num_classes == cfg.num_classes
    video = _video(model)
    logits = model(video)
    assert logits.shape == (2, model.num_classes)
    assert torch.isfinite(logits).all()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable or model.zero_shot, "nothing to train"
    if not trainable:
        return
    labels = torch.arange(2) % model.num_classes  # every family trains through its training losses
    model.training_losses(video, labels, progress=0.5)["total"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"trainable parameters without a gradient: {no_grad}"
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen_with_grad
    # the text encoder is frozen by default
    assert not any(n.startswith("text_encoder.") for n in trainable)
    # the DFER models fine-tune CLIP's image encoder; the prompt baselines and A3lign-DFER keep it frozen
    fine_tunes_backbone = not name.startswith(("coop", "cocoop", "clip_zeroshot", "a3lign"))
    assert any(n.startswith("image_encoder.visual.") for n in trainable) == fine_tunes_backbone


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_api(name):
    model = _tiny(name).eval()
    video = _video(model, batch=3)
    with torch.no_grad():
        frames = model.encode_frames(video)
        feats = model.forward_features(video)
        logits = model(video)
    d = model.clip_arch.embed_dim
    assert frames.shape == (3, model.num_frames, d)
    # what forward_head consumes: one embedding per clip, or a sequence for A3lign-DFER's per-step alignment
    assert feats.shape in ((3, d), (3, model.num_frames, d))
    torch.testing.assert_close(model.forward_head(feats), logits)


ABLATIONS = {
    "baseline": dict(interfit=False, msta=False, biehpro_depth=0),
    "interfit": dict(msta=False, biehpro_depth=0),
    "interfit_msta": dict(biehpro_depth=0),
    "full": dict(),
    "wo_text": dict(text_head=False, biehpro_depth=0),
    "m1": dict(biehpro_depth=1),
    "m5": dict(biehpro_depth=5),
    "tp_only": dict(interfit=False, msta=False, visual_prompt=False),
    "tp_vp": dict(interfit=False, msta=False),
}


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_paper_ablations_build_and_train(ablation):
    kwargs = ABLATIONS[ablation]
    model = clipdfer.create_model("clipdfer_test", **kwargs)
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert ("msta" in names) == kwargs.get("msta", True)
    assert ("biehpro" in names) == bool(kwargs.get("biehpro_depth", 2))
    assert ("head" in names) == (not kwargs.get("text_head", True))
    assert any(".interaction." in n for n, _ in model.named_parameters()) == kwargs.get("interfit", True)
    if "biehpro" in names:
        assert len(model.biehpro.blocks) == kwargs.get("biehpro_depth", 2)
        assert (model.biehpro.beta is not None) == kwargs.get("visual_prompt", True)
    out = model(_video(model))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_interfit_off_equals_open_clip_encode_image_tiny():
    model = clipdfer.create_model("clipdfer_test", interfit=False).eval()
    clip = build_open_clip("test").eval()
    clip.visual.load_state_dict(model.image_encoder.visual.state_dict())
    video = _video(model)
    with torch.no_grad():
        ours = model.encode_frames(video)
        ref = clip.encode_image(video.flatten(0, 1)).view_as(ours)
    assert (ours - ref).abs().max() < 1e-5


def test_interfit_exchanges_information_between_frames():
    model = clipdfer.create_model("clipdfer_test", msta=False, biehpro_depth=0).eval()
    plain = clipdfer.create_model("clipdfer_test", interfit=False, msta=False, biehpro_depth=0).eval()
    for layer in model.image_encoder.interaction:  # leave the zero init so the temporal path is open
        torch.nn.init.normal_(layer.attn.proj.weight, std=0.5)
    video = _video(model, batch=1)
    changed = video.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        delta = (model.encode_frames(changed) - model.encode_frames(video)).abs().amax(dim=-1)
        delta_plain = (plain.encode_frames(changed) - plain.encode_frames(video)).abs().amax(dim=-1)
    assert (delta[0, 1:] > 1e-4).all(), "other frames did not see the change of frame 0"
    assert (delta_plain[0, 1:] == 0).all(), "without InterFIT frames must be independent"


def test_num_classes_conflict_and_missing_classes():
    with pytest.raises(ValueError, match="num_classes=5 conflicts with 7"):
        clipdfer.create_model("clipdfer_test", num_classes=5)
    m = clipdfer.create_model("clipdfer_test", text_head=False, biehpro_depth=0, class_names=None, num_classes=4)
    assert m(_video(m)).shape == (2, 4)
    with pytest.raises(ValueError, match="biehpro_depth=2 needs text features"):
        clipdfer.create_model("clipdfer_test", text_head=False)


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = clipdfer.create_model("clipdfer_test")
    b = clipdfer.create_model("clipdfer_test")
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing()
    video = _video(a)
    a(video).sum().backward()
    b(video).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_param_groups_split_backbone_and_new():
    model = clipdfer.create_model("clipdfer_test")
    groups = clipdfer.optim.param_groups(model, lr=1e-3, backbone_lr=1e-5, weight_decay=5e-4)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == 1e-5 and by_name["new"]["lr"] == 1e-3
    assert by_name["new_no_decay"]["weight_decay"] == 0.0 and by_name["backbone"]["weight_decay"] == 5e-4
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)
    backbone = {id(p) for g in groups if g["name"].startswith("backbone") for p in g["params"]}
    assert backbone == {id(p) for p in model.image_encoder.visual.parameters()}
    torch.optim.AdamW(groups).step()  # accepted as is


@pytest.mark.fullsize
def test_full_size_vitb32_interfit_off_equals_open_clip():
    model = clipdfer.create_model("clipdfer_vitb32_dfew", interfit=False, biehpro_depth=0).eval()
    clip = build_open_clip("vitb32").eval()
    clip.visual.load_state_dict(model.image_encoder.visual.state_dict())
    video = torch.randn(1, 8, 3, 224, 224)
    with torch.no_grad():
        ours = model.encode_frames(video)
        ref = clip.encode_image(video.flatten(0, 1)).view_as(ours)
    assert (ours - ref).abs().max() < 1e-4


@pytest.mark.fullsize
def test_full_size_vitb32_full_model_smoke():
    model = clipdfer.create_model("clipdfer_vitb32_dfew").eval()
    n_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        logits = model(torch.randn(1, 8, 3, 224, 224))
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()
    # InterFIT's BiLSTM is LSTM(768, 768) per direction in each of the 12 layers (the paper's FLOPs pin it)
    lstm = model.image_encoder.interaction[0].bilstm
    assert (lstm.input_size, lstm.hidden_size, tuple(lstm.weight_hh_t.shape)) == (768, 768, (2, 768, 3072))
    assert n_params > 200e6


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", clipdfer.list_models("*_test"))
def test_torch_compile_captures_a_single_graph(name, training):
    torch.manual_seed(0)
    model = clipdfer.create_model(name).train(training)
    model.cache_text = False  # eval mode: the cache's check is a graph break (tests/test_text_cache.py)
    video = _video(model)
    if training:  # the same dropout/random draws on both sides
        torch.manual_seed(1)
    ref = model(video)  # eager
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: any graph break raises
    if training:
        torch.manual_seed(1)
    out = compiled(video)
    torch.testing.assert_close(out, ref)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if training and trainable:  # zero-shot CLIP has nothing to train
        out.sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
        if name == "clipdfer_test":
            assert model.image_encoder.interaction[0].bilstm.weight_ih.grad is not None


OPEN_CLIP_NAMES = {"vitb32": "ViT-B-32-quickgelu", "vitb16": "ViT-B-16-quickgelu", "vitl14": "ViT-L-14-quickgelu"}


@pytest.mark.parametrize("arch", sorted(OPEN_CLIP_NAMES))
def test_backbone_shapes_match_open_clip_openai_configs(arch):
    import open_clip
    with torch.device("meta"):  # shapes only: no memory, no init cost
        ours = build_open_clip(arch)
        ref = open_clip.create_model(OPEN_CLIP_NAMES[arch], pretrained=None, device="meta")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert type(ours.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"


@pytest.mark.parametrize("name", clipdfer.list_models("clipdfer_vit*"))
def test_full_size_models_build_with_the_papers_interfit(name):
    with torch.device("meta"):
        model = clipdfer.create_model(name)
    w = model.image_encoder.width
    per_layer = sum(p.numel() for p in model.image_encoder.interaction[0].parameters())
    # token Linear + BiLSTM(w, w) both directions + Linear(2w, w) + LayerNorm + MHSA (qkv, out)
    expected = (w * w + w) + 2 * (8 * w * w + 8 * w) + (2 * w * w + w) + 2 * w + (3 * w * w + 3 * w) + (w * w + w)
    assert per_layer == expected
    assert len(model.image_encoder.interaction) == len(model.image_encoder.blocks)
    assert model.num_classes == model.pretrained_cfg.num_classes


@pytest.mark.parametrize("name", clipdfer.list_models("*_test"))
def test_compile_and_export_match_eager(name):
    model = clipdfer.create_model(name).eval()
    video = _video(model)
    with torch.no_grad():
        ref = model(video)  # eager: also fills the text-feature cache, which export then holds as a constant
        torch.testing.assert_close(torch.compile(model, backend="eager")(video), ref, rtol=1e-4, atol=1e-4)
        exported = torch.export.export(model, (video,))
        torch.testing.assert_close(exported.module()(video), ref, rtol=1e-4, atol=1e-4)


def test_interfit_gate_option_starts_as_the_model_without_interfit():
    torch.manual_seed(0)
    gated = clipdfer.create_model("clipdfer_test", interfit_gate=True).eval()
    plain = clipdfer.create_model("clipdfer_test", interfit=False).eval()
    state = {k: v for k, v in gated.state_dict().items() if not k.startswith("image_encoder.interaction.")}
    plain.load_state_dict(state)
    video = _video(gated)
    with torch.no_grad():
        torch.testing.assert_close(gated(video), plain(video), rtol=1e-5, atol=1e-5)
    gated.train()
    gated(video).sum().backward()
    assert all(layer.gate.grad is not None for layer in gated.image_encoder.interaction)


def test_biehpro_on_frame_tokens_option():
    model = clipdfer.create_model("clipdfer_test", biehpro_visual_tokens="frames").eval()
    video = _video(model)
    d, t = model.clip_arch.embed_dim, model.num_frames
    with torch.no_grad():
        feats = model.forward_features(video)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model(video)
        frames = model.encode_frames(video)
        v_hat_ref = model.biehpro(model.text_features(), model.pool_frames(frames), text_context=frames)
    assert feats.shape == (2, 1 + t, d) and pre.shape == (2, model.head_hidden_size) == (2, (1 + t) * d)
    assert model.num_features == d  # timm: the width of forward_features' tokens
    torch.testing.assert_close(model.get_classifier()(pre), logits)
    text, video_hat = (F.normalize(x, dim=-1) for x in v_hat_ref)
    torch.testing.assert_close(logits, torch.einsum("bd,bcd->bc", video_hat, text) / model.temperature)
    with pytest.raises(ValueError, match="biehpro_depth=0"):
        clipdfer.create_model("clipdfer_test", biehpro_visual_tokens="frames", biehpro_depth=0)
    with pytest.raises(ValueError, match="T=8"):
        clipdfer.create_model("clipdfer_test", biehpro_visual_tokens="frames", msta=False)(torch.randn(1, 5, 3, 32, 32))
