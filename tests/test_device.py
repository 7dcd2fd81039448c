"""Where and in which dtype predict runs: ``--device auto`` (CUDA, MPS, CPU), ``--dtype auto`` (bf16 weights where the
device computes in bf16 natively, fp32 elsewhere), what the output and the settings record, resume across them, and
the frozen text features following the dtype."""

import copy
import json
import os

import pytest
import torch

import clipdfer
from clipdfer.cli import main
from clipdfer.inference import FaceSettings, Predictor
from clipdfer.inference.device import AUTO_DTYPE_ENV, auto_dtype, cpu_bf16_flags, dtype_name, resolve_device
from scripted import ScriptedDetector, face_frame, use_scripted_detector
from videos import write_video


def _video():
    return torch.stack([torch.from_numpy(face_frame([(10 + i, 10, 50 + i, 60)])).permute(2, 0, 1) for i in range(16)])


# ------------------------------------------------------------------------------------------------ the device
@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_takes_cuda_then_mps_then_the_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == resolve_device(None) == resolve_device(" AUTO ") == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")
    if cuda:
        assert resolve_device("cuda:1") == torch.device("cuda:1")
    else:  # a device this machine does not have is named, not found later by a deep error
        with pytest.raises(ValueError, match="device='cuda:1': this PyTorch .* has no usable cuda device here"):
            resolve_device("cuda:1")
    with pytest.raises(ValueError, match="device='gpu0': expected auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu0")
    # a device type torch knows but this build has no backend for: one line, not "No module named 'torch.hpu'"
    with pytest.raises(ValueError, match="device='hpu': this PyTorch .* has no usable hpu device here"):
        resolve_device("hpu")


# ------------------------------------------------------------------------------------------------ the dtype
def test_auto_dtype_is_bf16_only_where_the_device_computes_in_it(monkeypatch):
    cpu = torch.device("cpu")
    assert auto_dtype(cpu, env={}, cpu_flags=("avx512_bf16",)) == (
        torch.bfloat16, "the CPU computes in bf16: avx512_bf16")
    assert auto_dtype(cpu, env={}, cpu_flags=("avx512_bf16", "amx_bf16"))[0] is torch.bfloat16
    assert auto_dtype(cpu, env={}, cpu_flags=()) == (
        torch.float32, "the CPU has no native bf16: no AVX-512 BF16 or AMX")
    assert auto_dtype(torch.device("mps"), env={})[0] is torch.float32
    for capability, dtype in (((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16), ((7, 5), torch.float32)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None, c=capability: c)
        got, why = auto_dtype(torch.device("cuda:0"), env={})
        assert got is dtype and f"compute capability {capability[0]}.{capability[1]}" in why
    # the override, both ways, and a bad value named with its fix
    assert auto_dtype(cpu, env={AUTO_DTYPE_ENV: "fp32"}, cpu_flags=("amx_bf16",)) == (
        torch.float32, f"{AUTO_DTYPE_ENV}=fp32")
    assert auto_dtype(cpu, env={AUTO_DTYPE_ENV: "BF16"}, cpu_flags=())[0] is torch.bfloat16
    with pytest.raises(ValueError, match=f"{AUTO_DTYPE_ENV}='fp16': expected fp32 or bf16; unset it"):
        auto_dtype(cpu, env={AUTO_DTYPE_ENV: "fp16"})
    assert [dtype_name(d) for d in (torch.float32, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16_flags(str(info), torch_checks=False) == ("avx512_bf16", "amx_bf16")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n")  # AVX-512 without BF16
    assert cpu_bf16_flags(str(info), torch_checks=False) == ()
    info.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")  # an Arm CPU
    assert cpu_bf16_flags(str(info), torch_checks=False) == ()
    assert cpu_bf16_flags(str(tmp_path / "missing"), torch_checks=False) == ()  # macOS, Windows: no file


@pytest.mark.parametrize("forced", ["bf16", "fp32"])
def test_a_model_built_by_name_gets_the_auto_dtype_and_records_it(monkeypatch, forced):
    monkeypatch.setenv(AUTO_DTYPE_ENV, forced)
    faces = FaceSettings(detector=ScriptedDetector())
    p = Predictor("clip_zeroshot_test", pretrained=False, faces=faces, device="auto")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[forced]
    assert p.dtype is dtype and p.dtype_reason == f"auto: {AUTO_DTYPE_ENV}={forced}"
    assert {t.dtype for t in p.net.parameters()} == {dtype}  # the weights themselves, not autocast
    result = p.run(_video())
    assert result.settings["model"]["dtype"] == str(dtype)  # the dtype that ran, never "auto"
    assert p.net.text_features().dtype == dtype  # the cached class texts were made in that dtype
    explicit = Predictor("clip_zeroshot_test", pretrained=False, faces=faces, dtype=forced)
    assert explicit.settings == p.settings and explicit.dtype_reason == "as given"  # auto -> bf16 resumes as bf16


def test_an_instance_keeps_its_dtype_under_auto_and_is_cast_when_asked():
    torch.manual_seed(0)
    net = clipdfer.create_model("clip_zeroshot_test").eval()
    faces = FaceSettings(detector=ScriptedDetector())
    ref = Predictor(net, faces=faces)  # auto: the caller's model is not changed behind its back
    assert ref.dtype is torch.float32 and ref.dtype_reason == "auto: the model instance's own dtype (fp32)"
    first = ref.run(_video())
    fp32_text = net.text_features().clone()
    half = Predictor(net, faces=faces, dtype="bf16")  # cast in place, as .to() does
    assert net.logit_scale.dtype is torch.bfloat16 and half.dtype_reason == "as given"
    low = half.run(_video())
    assert net.text_features().dtype is torch.bfloat16  # the text features followed the cast
    assert low.settings["model"]["dtype"] == "torch.bfloat16" != first.settings["model"]["dtype"]
    assert low.settings["model"]["weights_sha256"] != first.settings["model"]["weights_sha256"]
    diff = max(abs(a.probs[c] - b.probs[c]) for a, b in zip(first.windows, low.windows) for c in a.probs)
    assert 0 < diff < 0.05, diff
    again = Predictor(net, faces=faces, dtype=torch.float32).run(_video())  # back: computed again in fp32
    assert again.settings["model"]["dtype"] == "torch.float32" and net.text_features().dtype is torch.float32
    assert torch.equal(net.text_features(), copy.deepcopy(net).text_features())  # not the bf16 ones, upcast
    assert (net.text_features() - fp32_text).abs().max() < 0.05  # the weights went through bf16 and back
    with pytest.raises(ValueError, match="dtype='int8': expected auto"):
        Predictor(net, faces=faces, dtype="int8")


def test_the_cli_says_where_and_in_which_dtype_the_model_ran_and_resumes_auto_as_bf16(tmp_path, capsys,
                                                                                      monkeypatch):
    use_scripted_detector(monkeypatch)
    monkeypatch.setenv(AUTO_DTYPE_ENV, "bf16")
    video = write_video(tmp_path / "clip.mp4", [face_frame([(10 + i, 10, 50 + i, 60)]) for i in range(16)])
    out = str(tmp_path / "out")
    common = ["predict", str(video), "--model", "clip_zeroshot_test", "--no-pretrained", "--out", out]
    assert main(common) == 0
    printed = capsys.readouterr().out
    assert f"model: clip_zeroshot_test on cpu, bf16 (auto: {AUTO_DTYPE_ENV}=bf16)\n" in printed
    with open(os.path.join(out, "clip.json")) as f:
        assert json.load(f)["settings"]["model"]["dtype"] == "torch.bfloat16"
    assert main(common + ["--dtype", "bf16", "--device", "cpu"]) == 0  # the same run: its result is reused
    printed = capsys.readouterr().out
    assert "model: clip_zeroshot_test on cpu, bf16 (as given)" in printed and "(from an earlier run)" in printed
    assert main(common + ["--dtype", "fp32"]) == 0  # another dtype: run again
    printed = capsys.readouterr().out
    assert "on cpu, fp32 (as given)" in printed and "(from an earlier run)" not in printed
