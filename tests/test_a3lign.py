"""A³lign-DFER: MAT through the text encoder, JAS similarity, the three BAP stages."""

import pytest
import torch
import torch.nn.functional as F

import clipdfer


def _model(**kwargs):
    return clipdfer.create_model("a3lign_test", **kwargs)


def _video(batch=2):
    return torch.randn(batch, 4, 3, 32, 32)


def _grads(model, video, labels):
    model.zero_grad(set_to_none=True)
    model.training_losses(video, labels)["total"].backward()
    return {n for n, p in model.named_parameters() if p.grad is not None}


def _groups(names):
    return {n.split(".")[0] for n in names}


@pytest.mark.parametrize("stage,trained", [
    (1, {"mat", "text_dynamic"}),
    (2, {"video_dynamic"}),
    (3, {"mat", "text_dynamic", "video_dynamic"}),
])
def test_each_bap_stage_trains_exactly_its_parameters(stage, trained):
    model = _model()
    model.set_stage(stage)
    assert _groups(n for n, p in model.named_parameters() if p.requires_grad) == trained
    got = _grads(model, _video(), torch.tensor([0, 1]))
    assert _groups(got) == trained
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_stage1_scores_the_frame_mean():
    model = _model().eval()
    model.set_stage(1)
    video = _video()
    with torch.no_grad():
        frames = model.encode_frames(video)
        seq = model.forward_features(video)
    torch.testing.assert_close(seq, frames.mean(1, keepdim=True).expand_as(frames))


def test_stage2_synchronises_the_video_encoder_once():
    model = _model()
    model.set_stage(1)
    with torch.no_grad():
        model.text_dynamic.block.attn.qkv.weight.add_(1.0)
    model.set_stage(2)
    for a, b in zip(model.text_dynamic.parameters(), model.video_dynamic.parameters()):
        assert torch.equal(a, b)
    unsynced = _model(sync_on_stage2=False)
    unsynced.set_stage(2)
    assert not torch.equal(unsynced.text_dynamic.block.attn.qkv.weight, unsynced.video_dynamic.block.attn.qkv.weight)


def test_mat_sentences_and_the_per_step_similarity():
    model = _model().eval()
    c, s, length, width = model.mat.shape
    assert (c, s, length) == (7, 4, 4)
    with torch.no_grad():
        feats = model.sentence_features()
        assert feats.shape == (7, 4, model.clip_arch.embed_dim)
        # a sentence is [SOT] + L tokens + [EOT]; padding it to 77 positions gives the same feature (causal mask)
        emb = model.text_encoder.token_embedding.weight
        row = torch.cat([emb[49406][None], model.mat[2, 1], emb[49407][None], emb[0].expand(77 - length - 2, -1)])
        full = model.text_encoder.forward_embeddings(row[None], torch.tensor([length + 1]))
        torch.testing.assert_close(full[0], feats[2, 1], rtol=1e-5, atol=1e-5)
        video = _video()
        v = F.normalize(model.forward_features(video), dim=-1)
        t = F.normalize(model.text_dynamic(feats), dim=-1)
        ref = 100 * torch.stack([(v * t[k]).sum(-1).mean(-1) for k in range(7)], dim=1)
        torch.testing.assert_close(model(video), ref, rtol=1e-4, atol=1e-4)
    pooled = _model(pooled_similarity=True)
    pooled.load_state_dict(model.state_dict())
    with torch.no_grad():
        vp = F.normalize(pooled.forward_features(video).mean(1), dim=-1)
        tp = F.normalize(pooled.text_dynamic(pooled.sentence_features()).mean(1), dim=-1)
        torch.testing.assert_close(pooled.eval()(video), 100 * vp @ tp.t(), rtol=1e-4, atol=1e-4)


def test_sentence_features_cached_at_inference_and_refreshed_after_a_step():
    model = _model()
    calls = []
    model.text_encoder.ln_final.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model.eval()(_video())
        model(_video())
    assert len(calls) == 1
    model.train()
    opt = torch.optim.SGD([model.mat], lr=1.0)
    model.training_losses(_video(), torch.tensor([0, 1]))["total"].backward()
    opt.step()
    with torch.no_grad():
        model.eval()(_video())
    assert len(calls) == 3


def test_a_few_steps_of_each_stage_lower_the_loss():
    torch.manual_seed(0)
    model = _model()
    video, labels = _video(8), torch.arange(8) % 7
    for stage in (1, 2, 3):
        model.set_stage(stage)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
        losses = []
        for _ in range(6):
            opt.zero_grad()
            loss = model.training_losses(video, labels)["total"]
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], (stage, losses)


def test_bad_stage_and_wrong_num_frames():
    with pytest.raises(ValueError, match="stages 1, 2 and 3"):
        _model().set_stage(4)
    with pytest.raises(ValueError, match="T=4"):
        _model()(torch.randn(1, 6, 3, 32, 32))
