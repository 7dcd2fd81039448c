"""Where and in which precision the model runs: ``device="auto"`` and ``dtype="auto"`` resolved for this machine.

``auto`` device: CUDA, then Apple's MPS, then the CPU. ``auto`` dtype: bfloat16 weights where the device computes in
bf16 natively (CUDA GPUs with bf16 support; CPUs with AVX-512 BF16 or AMX), float32 elsewhere (a CPU without them
emulates bf16 and runs slower than float32). ``CLIPDFER_AUTO_DTYPE=fp32`` (or ``bf16``) in the environment overrides
the choice that ``auto`` makes; an explicit dtype always wins.
"""

import os
from typing import Callable, Optional, Tuple, Union

import torch

__all__ = ["resolve_device", "auto_dtype", "resolve_dtype", "dtype_name", "cpu_bf16_flags", "DTYPES", "AUTO_DTYPE_ENV"]

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}
AUTO_DTYPE_ENV = "CLIPDFER_AUTO_DTYPE"
_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo's names of the instructions that compute in bf16


def resolve_device(device: Union[None, str, torch.device] = "auto") -> torch.device:
    """``"auto"`` / None -> CUDA if available, else MPS if available, else the CPU; anything else as ``torch.device``.

    Raises:
        ValueError: a device string torch does not know, or a device this PyTorch cannot use here (``cuda`` without a
            GPU, ``hpu`` without its backend), naming it.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r}: expected auto, cpu, cuda, cuda:N or mps ({e})") from e
    if chosen.type not in ("cpu", "meta"):
        try:
            backend = getattr(torch.backends, "mps", None) if chosen.type == "mps" else getattr(torch, chosen.type)
            usable = bool(backend.is_available())
        except Exception:  # no such backend in this build (torch.hpu without Intel Gaudi's plugin), or it failed
            usable = False
        if not usable:
            raise ValueError(f"device={device!r}: this PyTorch ({torch.__version__}) has no usable {chosen.type} "
                             f"device here: use auto (CUDA, then MPS, then the CPU) or cpu")
    return chosen


def resolve_dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    """``torch.bfloat16`` / ``"bf16"`` / ``"bfloat16"`` ... -> the torch dtype (None stays None; ``"auto"`` is
    :func:`auto_dtype`'s to resolve and is refused here).

    Raises:
        ValueError: an unknown name or a dtype that is not floating point.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise ValueError(f"dtype={dtype}: expected a floating point dtype (torch.bfloat16, torch.float16)")
        return dtype
    if str(dtype).lower() not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected auto, one of {sorted(DTYPES)} or a torch dtype")
    return DTYPES[str(dtype).lower()]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"`` (the names ``--dtype`` takes); other dtypes as torch prints them."""
    return _NAMES.get(dtype, str(dtype).replace("torch.", ""))


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo", torch_checks: bool = True) -> Tuple[str, ...]:
    """The CPU features for native bf16 that this CPU has: ``avx512_bf16``, ``amx_bf16`` (empty: none found).

    Asks PyTorch's own CPU checks where this torch has them, and reads ``cpuinfo``'s flags (Linux) besides; a file
    that is missing or unreadable counts as no flags.
    """
    found = set()
    if torch_checks:
        checks = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
        for flag, name in checks.items():
            check: Optional[Callable[[], bool]] = getattr(torch.cpu, name, None)
            try:
                if check is not None and check():
                    found.add(flag)
            except Exception:  # a private check that changed or fails: the flags below still count
                pass
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    found.update(set(line.partition(":")[2].split()) & set(_CPU_FLAGS))
                    break
    except OSError:
        pass
    return tuple(flag for flag in _CPU_FLAGS if flag in found)


def auto_dtype(device: torch.device, env: Optional[dict] = None, cpu_flags: Optional[Tuple[str, ...]] = None
               ) -> Tuple[torch.dtype, str]:
    """The dtype ``dtype="auto"`` runs in on ``device``, and why (one line for the output).

    Args:
        device: where the model runs.
        env: the environment to read ``CLIPDFER_AUTO_DTYPE`` from (default ``os.environ``).
        cpu_flags: the CPU's bf16 features (default :func:`cpu_bf16_flags`).

    Returns:
        ``(torch.bfloat16 or torch.float32, reason)``.

    Raises:
        ValueError: ``CLIPDFER_AUTO_DTYPE`` set to something other than fp32, bf16 (or their long names).
    """
    env = os.environ if env is None else env
    forced = env.get(AUTO_DTYPE_ENV, "").strip().lower()
    if forced:
        if DTYPES.get(forced) not in (torch.float32, torch.bfloat16):
            raise ValueError(f"{AUTO_DTYPE_ENV}={forced!r}: expected fp32 or bf16; unset it to choose by the device")
        return DTYPES[forced], f"{AUTO_DTYPE_ENV}={forced}"
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        if major >= 8:  # Ampere and later compute in bf16; older GPUs emulate it
            return torch.bfloat16, f"the GPU computes in bf16: compute capability {major}.{minor}"
        return torch.float32, f"the GPU has no native bf16: compute capability {major}.{minor} < 8.0"
    if device.type == "cpu":
        flags = cpu_bf16_flags() if cpu_flags is None else cpu_flags
        if flags:
            return torch.bfloat16, f"the CPU computes in bf16: {', '.join(flags)}"
        return torch.float32, "the CPU has no native bf16: no AVX-512 BF16 or AMX"
    return torch.float32, f"fp32 on {device.type}"
