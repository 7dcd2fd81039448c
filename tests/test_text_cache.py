"""Frozen class text features are computed once and reused; they refresh whenever they may have changed."""

import torch

import clipdfer


class _Counter:
    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1


def _video(model, batch=2):
    return torch.randn(batch, model.num_frames, 3, 32, 32)


def test_text_encoder_runs_once_in_eval():
    model = clipdfer.create_model("clipdfer_test").eval()
    counter = _Counter(model.text_encoder)
    video = _video(model)
    with torch.no_grad():
        first = model(video)
        for _ in range(3):
            torch.testing.assert_close(model(video), first)
    assert counter.calls == 1


def test_frozen_text_is_cached_in_training_too_and_gets_no_grad():
    model = clipdfer.create_model("clipdfer_test").train()
    counter = _Counter(model.text_encoder)
    for _ in range(2):
        model(_video(model)).sum().backward()
    assert counter.calls == 1
    assert all(p.grad is None for p in model.text_encoder.parameters())


def test_set_classes_refreshes_and_changes_output_width():
    model = clipdfer.create_model("clipdfer_test").eval()
    counter = _Counter(model.text_encoder)
    video = _video(model)
    with torch.no_grad():
        assert model(video).shape == (2, 7)
        model.set_classes(["joy", "boredom", "pain"], prompt_template="a face showing {}.")
        out = model(video)
    assert out.shape == (2, 3) and counter.calls == 2
    assert model.class_names == ("joy", "boredom", "pain") and model.num_classes == 3
    # the new features are those of the new prompts
    expected = model.text_encoder.encode(["a face showing joy.", "a face showing boredom.", "a face showing pain."])
    torch.testing.assert_close(model.text_features(), expected)


def test_cache_cleared_by_load_state_dict_and_dtype_change():
    a = clipdfer.create_model("clipdfer_test").eval()
    b = clipdfer.create_model("clipdfer_test").eval()
    video = _video(a)
    with torch.no_grad():
        b(video)  # fill b's cache with b's random text weights
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(b(video), a(video))
        b.double()
        assert b.text_features().dtype == torch.float64


def test_trainable_text_encoder_recomputes_with_grad_in_training():
    model = clipdfer.create_model("clipdfer_test", freeze_text=False).train()
    counter = _Counter(model.text_encoder)
    for _ in range(2):
        model(_video(model)).sum().backward()
    assert counter.calls == 2
    assert any(p.grad is not None for p in model.text_encoder.parameters())
    model.eval()
    with torch.no_grad():
        model(_video(model))
        model(_video(model))
    assert counter.calls == 3
