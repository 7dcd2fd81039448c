"""Zero-shot CLIP, CoOp and CoCoOp against computations written directly with open_clip."""

import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import clipdfer
from clipdfer.data.texts import ZERO_SHOT_TEMPLATES
from clipdfer.layers import build_open_clip, tokenize


@pytest.fixture
def clip_file(tmp_path):
    """A tiny open_clip CLIP, trained-looking logit scale, saved as open_clip saves it."""
    clip = build_open_clip("test").eval()
    with torch.no_grad():
        clip.logit_scale.fill_(4.6052)  # log 100, as OpenAI's
    path = str(tmp_path / "open_clip_model.safetensors")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, path)
    return clip, path


def _video(batch=2, t=8):
    return torch.randn(batch, t, 3, 32, 32)


def test_zero_shot_equals_open_clip_with_a_template_ensemble(clip_file):
    clip, path = clip_file
    model = clipdfer.create_model("clip_zeroshot_test", checkpoint_path=path).eval()
    video = _video()
    words = ["happy", "sad", "neutral", "angry", "surprised", "disgusted", "fearful"]
    with torch.no_grad():
        image = F.normalize(clip.encode_image(video.flatten(0, 1)).view(2, 8, -1).mean(1), dim=-1)
        per_class = []
        for w in words:
            t = F.normalize(clip.encode_text(tokenize([tpl.format(w) for tpl in ZERO_SHOT_TEMPLATES])), dim=-1)
            per_class.append(F.normalize(t.mean(0), dim=-1))
        ref = 100.0 * image @ torch.stack(per_class).t()
        torch.testing.assert_close(model(video), ref, rtol=1e-4, atol=1e-3)
        # user-given classes
        model.set_classes(["calm", "in pain"])
        t = [F.normalize(F.normalize(clip.encode_text(tokenize([tpl.format(w) for tpl in ZERO_SHOT_TEMPLATES])),
                                     dim=-1).mean(0), dim=-1) for w in ("calm", "in pain")]
        torch.testing.assert_close(model(video), 100.0 * image @ torch.stack(t).t(), rtol=1e-4, atol=1e-3)
    assert not any(p.requires_grad for p in model.parameters())


def test_zero_shot_is_not_flagged_as_untrained_but_coop_is(clip_file, caplog):
    _, path = clip_file
    with caplog.at_level(logging.WARNING):
        clipdfer.create_model("clip_zeroshot_test", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    assert "not fine-tuned" not in caplog.text
    with caplog.at_level(logging.WARNING):
        clipdfer.create_model("coop_test", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    assert "not fine-tuned" in caplog.text


def test_coop_prompts_and_training(clip_file):
    clip, path = clip_file
    model = clipdfer.create_model("coop_test", checkpoint_path=path, n_ctx=4)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]
    pl = model.prompt_learner
    emb = clip.token_embedding(tokenize(["X X X X happy."]))[0]
    prompts = pl(model.text_encoder.token_embedding)
    torch.testing.assert_close(prompts[0, 1:5], pl.ctx)  # shared contexts after [SOS]
    torch.testing.assert_close(prompts[0, 5:], emb[5:])  # then "happy." [EOS] padding
    # eval: cached; the reference computes the same with open_clip's text transformer
    model.eval()
    video = _video()
    with torch.no_grad():
        x = clip.transformer(prompts + clip.positional_embedding, attn_mask=clip.attn_mask)
        text = clip.ln_final(x)[torch.arange(7), pl.eot_index] @ clip.text_projection
        image = F.normalize(clip.encode_image(video.flatten(0, 1)).view(2, 8, -1).mean(1), dim=-1)
        torch.testing.assert_close(model(video), 100.0 * image @ F.normalize(text, dim=-1).t(), rtol=1e-4, atol=1e-3)
    model.train()
    F.cross_entropy(model(video), torch.tensor([0, 1])).backward()
    assert pl.ctx.grad is not None and pl.ctx.grad.abs().sum() > 0


def test_coop_init_from_a_phrase():
    model = clipdfer.create_model("coop_test", ctx_init="a photo of a")
    assert model.prompt_learner.n_ctx == 4
    emb = model.text_encoder.token_embedding(tokenize(["a photo of a"])[0, 1:5])
    torch.testing.assert_close(model.prompt_learner.ctx, emb)


def test_cocoop_conditions_prompts_on_each_clip():
    model = clipdfer.create_model("cocoop_test").eval()
    dim, width = model.clip_arch.embed_dim, model.clip_arch.text_width
    assert [tuple(m.weight.shape) for m in model.meta_net if hasattr(m, "weight")] == [(dim // 16, dim),
                                                                                        (width, dim // 16)]
    assert model.prompt_learner.n_ctx == 4
    batch_sizes = []
    model.text_encoder.ln_final.register_forward_hook(lambda m, i, o: batch_sizes.append(i[0].shape[0]))
    video = _video(batch=3)
    with torch.no_grad():
        logits = model(video)
    assert logits.shape == (3, 7) and batch_sizes == [3 * 7], "the text encoder runs C prompts per clip"
    # the conditional token is the meta-net's output for that clip: recompute clip 1 alone
    with torch.no_grad():
        assert torch.allclose(model(video[1:2]), logits[1:2], atol=1e-4)
    model.train()
    F.cross_entropy(model(video), torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None for p in model.meta_net.parameters()) and model.prompt_learner.ctx.grad is not None
