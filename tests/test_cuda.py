"""Every family and predict on a CUDA GPU (issue 21, item 1): ``pytest -m cuda``, skipped without CUDA.

Against the same model on the CPU in fp32: fp32 and bf16-autocast forwards, finite gradients, ``torch.compile``
equal to eager (after a weight update too), the text-feature cache across ``.to(device)`` and dtype changes, a 3-step
AMP training run through ``clipdfer.train`` (torchrun: NCCL on CUDA) that saves and resumes, and ``clipdfer predict``
on the sample clip matching its CPU timeline.

``CLIPDFER_TEST_DEVICE=cpu pytest -m cuda tests/test_cuda.py`` runs the same tests with the CPU standing in for the
GPU (gloo instead of NCCL): how the file is checked before GPU time is spent on it.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

import clipdfer

DEVICE = torch.device(os.environ.get("CLIPDFER_TEST_DEVICE", "cuda"))
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                                                   reason="needs a CUDA GPU (CLIPDFER_TEST_DEVICE=cpu: a dry run)")]
TEST_MODELS = clipdfer.list_models("*_test")
# one full-size model per family
FULL_SIZE = ["clipdfer_vitb32_dfew", "dferclip_vitb32_dfew", "a3lign_vitb32_dfew", "pmfer_vitb16_dfew",
             "clip_zeroshot_vitb32", "coop_vitb32_dfew", "cocoop_vitb32_dfew"]
# |probability| differences to CPU fp32: fp32 on a GPU (TF32 off) is fp32 rounding; bf16 keeps 8 mantissa bits
_PROB_TOL = {torch.float32: 1e-4, torch.bfloat16: 0.05}


def _video(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.pretrained_cfg
    return torch.rand(batch, cfg.num_frames, *cfg.input_size, generator=g)


def _probs(model, video, device, dtype=torch.float32):
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return model(video.to(device)).float().softmax(-1).cpu()


@pytest.fixture(autouse=True)
def _exact_fp32():
    """fp32 means fp32: TF32 matmuls (a GPU default for convolutions) would loosen the comparison."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", TEST_MODELS)
def test_forward_on_the_device_matches_the_cpu(name, dtype):
    torch.manual_seed(0)
    model = clipdfer.create_model(name).eval()
    video = _video(model)
    ref = _probs(model, video, torch.device("cpu"))
    got = _probs(model.to(DEVICE), video, DEVICE, dtype)
    assert torch.isfinite(got).all() and (got - ref).abs().max() < _PROB_TOL[dtype], (got - ref).abs().max()


@pytest.mark.fullsize
@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_forward_on_the_device_matches_the_cpu(name):
    torch.manual_seed(0)
    model = clipdfer.create_model(name).eval()
    video = _video(model, batch=1)
    ref = _probs(model, video, torch.device("cpu"))
    for dtype in (torch.float32, torch.bfloat16):
        got = _probs(model.to(DEVICE), video, DEVICE, dtype)
        assert (got - ref).abs().max() < _PROB_TOL[dtype], (name, dtype, (got - ref).abs().max())
    model.to("cpu")


@pytest.mark.parametrize("name", TEST_MODELS)
def test_gradients_are_finite_under_bf16_autocast(name):
    torch.manual_seed(0)
    model = clipdfer.create_model(name).to(DEVICE).train()
    if not any(p.requires_grad for p in model.parameters()):
        pytest.skip(f"{name} has nothing to train (zero-shot)")
    video = _video(model).to(DEVICE)
    labels = torch.arange(2, device=DEVICE) % model.num_classes
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        loss = model.training_losses(video, labels, 0.5)["total"]
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name


@pytest.mark.parametrize("name", ["clipdfer_test", "dferclip_test", "coop_test", "pmfer_test"])
def test_compiled_equals_eager_before_and_after_a_weight_update(name):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = clipdfer.create_model(name).to(DEVICE).eval()
    compiled = torch.compile(model)
    video = _video(model).to(DEVICE)
    with torch.no_grad():
        assert torch.allclose(compiled(video), model(video), atol=1e-4, rtol=1e-4)
        for p in model.parameters():  # an optimizer step, as far as the cache can tell
            p.add_(0.01 * torch.randn_like(p))
        assert torch.allclose(compiled(video), model(video), atol=1e-4, rtol=1e-4)
    fresh = clipdfer.create_model(name).to(DEVICE).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(compiled(video), fresh(video), atol=1e-4, rtol=1e-4), "the cache followed the update"


@pytest.mark.parametrize("name", ["dferclip_test", "coop_test", "clipdfer_test"])
def test_the_text_cache_follows_device_and_dtype(name):
    torch.manual_seed(0)
    model = clipdfer.create_model(name).eval()
    video = _video(model)
    with torch.no_grad():
        cpu = model(video)  # fills the cache on the CPU
        on_device = model.to(DEVICE)(video.to(DEVICE))
        assert on_device.device.type == DEVICE.type and torch.allclose(on_device.cpu(), cpu, atol=1e-4, rtol=1e-4)
        half = model.to(torch.bfloat16)(video.to(DEVICE, torch.bfloat16))
        assert half.dtype == torch.bfloat16
        assert (half.float().softmax(-1).cpu() - cpu.softmax(-1)).abs().max() < 0.1
        back = model.to(torch.float32).to("cpu")(video)  # the weights are now bf16-rounded: compare with a fresh
        fresh = clipdfer.create_model(name).eval()      # model holding them, which has no cache to go stale
        fresh.load_state_dict(model.state_dict())
        assert torch.allclose(back, fresh(video), atol=1e-5), "back on the CPU in fp32: no stale bf16 features"


def _train(out, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
           "clipdfer.train", "--model", "clipdfer_test", "--synthetic", "--synthetic-size", "24", "--epochs", "1",
           "--batch-size", "4", "--amp", "bf16", "--device", str(DEVICE), "--out", out, "--log-every", "1", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_a_three_step_amp_training_run_saves_and_resumes(tmp_path):
    out = str(tmp_path / "run")
    _train(out, "--max-steps", "3")
    state = torch.load(os.path.join(out, "checkpoints", "last", "state.pt"), weights_only=True)
    assert state["global_step"] == 3
    _train(out, "--resume")
    entries = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    steps = [e for e in entries if e["event"] == "step"]
    start = next(e for e in entries if e["event"] == "start")  # 24 clips, less the validation split (>= 1 per class)
    per_epoch = -(-start["train_clips"] // 4)  # batches of 4, the last one short
    assert start["train_clips"] + start["selection_clips"] == 24 and per_epoch > 3
    assert [e["step"] for e in steps] == list(range(1, per_epoch + 1))  # 3, then the rest after the resume
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in steps)
    model = clipdfer.create_model(f"local-dir:{os.path.join(out, 'checkpoints', 'last')}").eval()
    with torch.no_grad():
        assert torch.isfinite(model(_video(model))).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_predict_on_the_device_matches_its_cpu_timeline(dtype):
    """The sample clip's real face, found by YuNet as users run it; the device's timeline against the CPU's fp32."""
    pytest.importorskip("cv2")
    from clipdfer.inference import sample_clip_path
    torch.manual_seed(0)
    model = clipdfer.create_model("clip_zeroshot_test").eval()
    on_cpu = clipdfer.predict(sample_clip_path(), model=model, device="cpu", dtype=torch.float32)
    on_device = clipdfer.predict(sample_clip_path(), model=model, device=str(DEVICE), dtype=dtype)
    assert on_cpu.detector == on_device.detector == "yunet" and on_cpu.frames_with_face == on_cpu.frames_used == 24
    assert [(w.start, w.end) for w in on_cpu.windows] == [(w.start, w.end) for w in on_device.windows]
    diff = max(abs(a.probs[c] - b.probs[c]) for a, b in zip(on_cpu.windows, on_device.windows) for c in a.probs)
    assert diff < {torch.float32: 1e-3, torch.bfloat16: _PROB_TOL[torch.bfloat16]}[dtype], diff
    assert on_device.settings["model"]["dtype"] == str(dtype)
    if DEVICE.type == "cuda":
        assert next(model.parameters()).device.type == "cuda"  # predict moved the model; it ran there
