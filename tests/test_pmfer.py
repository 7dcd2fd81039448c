"""PMFER: AU prompts, prompt masking, the gradient-reversal schedule, its three losses."""

import math

import pytest
import torch

import clipdfer
from clipdfer.data.texts import au_prompt_bank
from clipdfer.layers import dann_lambda, grad_reverse


def _model(**kwargs):
    return clipdfer.create_model("pmfer_test", **kwargs)


def test_prompts_are_made_of_the_classes_au_phrases():
    model = _model()
    bank = au_prompt_bank(model.class_names)
    assert model.phrases == bank
    assert sorted(model.vocab) == model.vocab and set(model.vocab) == {p for ps in bank.values() for p in ps}
    happiness = model.class_names.index("happiness")
    tokens = model.prompt_learner.tokens[happiness]
    expected = clipdfer.layers.tokenize(["a photo of a happiness face, cheeks raised, lip corners pulled up."])[0]
    assert torch.equal(tokens, expected)


def test_masked_phrase_is_one_of_the_labels():
    torch.manual_seed(0)
    model = _model()
    labels = torch.arange(model.num_classes).repeat(20)
    rows = model.sample_masks(labels)
    seen = set()
    for label, row in zip(labels.tolist(), rows.tolist()):
        dropped = model.vocab[model.mask_target[row]]
        assert dropped in model.phrases[model.class_names[label]]
        seen.add((label, dropped))
    # every phrase of every class gets dropped sometimes
    assert seen == {(c, p) for c, n in enumerate(model.class_names) for p in model.phrases[n]}


def _mask_loss_after_training(frames_carry_the_label: bool, steps: int = 300) -> float:
    """Train the masking head (with the image encoder) on the masking loss alone; its mean over the last steps."""
    from clipdfer.data import SyntheticClips
    torch.manual_seed(0)
    model = _model(num_frames=1)
    data = SyntheticClips(70, model.num_classes, 1, 32, seed=0)
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(
        ("discriminator", "prompt_learner"))], lr=3e-3)
    losses = []
    for step in range(steps):
        idx = torch.randint(len(data), (16,))
        video = torch.stack([data[int(i)][0] for i in idx])
        labels = torch.tensor([data[int(i)][1] for i in idx])
        if not frames_carry_the_label:
            video = torch.randn_like(video)  # new noise every step: nothing in the frames tells the class
        loss = model.training_losses(video, labels)["mask"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return sum(losses[-30:]) / 30


def test_the_masked_phrase_must_be_read_from_the_face():
    """With frames that show the class, the masking loss falls far below its chance value; with noise it cannot:
    nothing else the head reads (no text) tells which phrase was dropped."""
    model = _model()
    counts = [len(model.phrases[n]) for n in model.class_names]
    # chance: the dropped phrase's marginal over the vocabulary (uniform classes, then a uniform phrase of the class)
    q = torch.zeros(len(model.vocab))
    for name, k in zip(model.class_names, counts):
        for p in model.phrases[name]:
            q[model.vocab.index(p)] += 1 / (len(counts) * k)
    chance = float(-(q * q.log()).sum())
    floor = sum(math.log(k) for k in counts) / len(counts)  # a phrase of the (known) class, at random
    with_faces, with_noise = _mask_loss_after_training(True), _mask_loss_after_training(False)
    assert with_faces < floor + 0.5 * (chance - floor), (with_faces, floor, chance)
    assert abs(with_noise - chance) < 0.25, (with_noise, chance)


def test_gradient_reversal_flips_the_sign_with_the_dann_weight():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    x = torch.randn(5, requires_grad=True)
    y = grad_reverse(x, dann_lambda(0.3))
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, -dann_lambda(0.3) * torch.arange(5.0))
    with pytest.raises(ValueError, match="progress=1.5"):
        dann_lambda(1.5)


def test_training_losses_and_inference_path():
    model = _model()
    video, labels = torch.randn(3, 2, 3, 32, 32), torch.tensor([0, 3, 6])
    losses = model.training_losses(video, labels, progress=0.4)
    assert set(losses) >= {"cls", "mask", "adv", "total"}
    w = model.loss_weights
    torch.testing.assert_close(losses["total"], w[0] * losses["cls"] + w[1] * losses["mask"] + w[2] * losses["adv"])
    assert losses["mask_rows"].shape == (6,)  # each frame of each clip is a training image
    losses["total"].backward()
    for name in ("mask_query", "mask_out.weight", "discriminator.0.weight", "prompt_learner.ctx",
                 "image_encoder.visual.proj"):
        assert dict(model.named_parameters())[name].grad is not None, name
    # inference: only the classification path, images or clips
    model.eval()
    calls = []
    model.mask_out.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        assert model(torch.randn(4, 3, 32, 32)).shape == (4, 7)
        assert model(video).shape == (3, 7)
    assert calls == []


def test_a_few_steps_lower_the_total_loss():
    torch.manual_seed(0)
    model = _model()
    video, labels = torch.randn(6, 2, 3, 32, 32), torch.arange(6) % 7
    opt = torch.optim.AdamW(clipdfer.optim.param_groups(model, lr=1e-2, backbone_lr=1e-4))
    losses = []
    for step in range(8):
        torch.manual_seed(step)  # the same masks each step, so losses are comparable
        opt.zero_grad()
        loss = model.training_losses(video, labels, progress=step / 8)["total"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_unknown_class_needs_phrases():
    with pytest.raises(ValueError, match="no AU phrases for classes \\['boredom'\\]"):
        _model(class_names=["happiness", "boredom"])
    model = _model(class_names=["happiness", "boredom"], phrases={"boredom": ["lids drooping", "gaze averted"]})
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)
