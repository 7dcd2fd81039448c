"""PMFER: AU prompts, prompt masking, the gradient-reversal schedule, its three losses."""

import math
import os
import subprocess
import sys

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


def test_masking_targets_are_the_labels_phrases():
    model = _model()
    assert model.phrase_targets.shape == (model.num_classes, len(model.vocab))
    for c, name in enumerate(model.class_names):
        on = {model.vocab[i] for i in model.phrase_targets[c].nonzero().flatten().tolist()}
        assert on == set(model.phrases[name])
    labels = torch.tensor([0, 3])
    losses = model.training_losses(torch.randn(2, 2, 3, 32, 32), labels)
    assert losses["mask_logits"].shape == losses["mask_targets"].shape == (4, len(model.vocab))
    torch.testing.assert_close(losses["mask_targets"], model.phrase_targets[labels.repeat_interleave(2)])


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


def test_the_masked_phrases_must_be_read_from_the_face():
    """The masking target is determined by the face: with frames that show the class the loss falls far below its
    chance value, towards 0; with noise it stays at chance (nothing the head reads tells the class)."""
    model = _model()
    # chance: each phrase predicted by its frequency over the (uniform) classes, binary entropy averaged over phrases
    freq = model.phrase_targets.mean(dim=0)
    chance = float(-(freq * freq.log() + (1 - freq) * (1 - freq).log()).mean())
    with_faces, with_noise = _mask_loss_after_training(True), _mask_loss_after_training(False)
    assert with_faces < 0.25 * chance, (with_faces, chance)
    assert abs(with_noise - chance) < 0.1 * chance, (with_noise, chance)


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
    assert losses["mask_logits"].shape == (6, len(model.vocab))  # each frame of each clip is a training image
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


_DDP_SCRIPT = r"""
import sys
import torch
import torch.distributed as dist
import clipdfer
from clipdfer.distributed import LossWrapper

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(rank)  # different initial weights per rank: DDP broadcasts rank 0's
model = clipdfer.create_model("pmfer_test")
video = torch.randn(2, 2, 3, 32, 32) + rank
labels = torch.tensor([rank, 3])

# 1. a user's loop on the forward alone: the masking head and discriminator get no gradient
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
for _ in range(3):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(ddp(video), labels).backward()
    opt.step()
ctx = [torch.zeros_like(model.prompt_learner.ctx) for _ in range(2)]
dist.all_gather(ctx, model.prompt_learner.ctx.detach())
assert torch.equal(ctx[0], ctx[1]), "the trained parameters stay in sync"

# 2. the recipe's way: training_losses through LossWrapper, the auxiliary heads trained and synchronised too
torch.manual_seed(10 + rank)
model = clipdfer.create_model("pmfer_test")
ddp = torch.nn.parallel.DistributedDataParallel(LossWrapper(model))
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
for _ in range(2):
    opt.zero_grad()
    ddp(video, labels, 0.5).backward()
    opt.step()
w = [torch.zeros_like(model.mask_out.weight) for _ in range(2)]
dist.all_gather(w, model.mask_out.weight.detach())
assert torch.equal(w[0], w[1]), "the masking head is synchronised through LossWrapper"
del ddp, opt  # DDP's reducer before the group it uses
dist.barrier()  # gloo (torch 2.14) may abort a rank whose peer destroys the group while it is still in a collective
dist.destroy_process_group()
print(f"rank {rank} ok", flush=True)
# torch 2.14's gloo threads can abort the interpreter's own teardown on a loaded machine ("terminate called without
# an active exception", seen in one of four full-suite runs here): all this test checks is done, so leave without it
import os
os._exit(0)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's gloo rendezvous on localhost")
def test_ddp_on_the_forward_alone_needs_no_find_unused_parameters(tmp_path):
    model = _model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    model(torch.randn(2, 2, 3, 32, 32)).sum().backward()
    unused = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}
    assert unused and unused == set(model._ddp_params_and_buffers_to_ignore) & trainable  # 35 of 68 on issue 19
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 ok" in proc.stdout and "rank 1 ok" in proc.stdout
