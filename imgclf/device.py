"""Choosing where to compute: CUDA, then Apple's MPS, then the CPU."""
from __future__ import annotations

import contextlib
import os

import torch

from .config import PRECISIONS
from .errors import UserError, warn
from .resources import usable_cpus


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks the fastest available device; ``cpu``, ``cuda``, ``cuda:1`` or ``mps`` pick one.

    torch starts one compute thread per core of its affinity, but a container's CPU quota does not hide the host's
    cores: there its threads would wait on each other, so they are cut to the CPUs this process may use (unless
    $OMP_NUM_THREADS says otherwise)."""
    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > usable_cpus():
        torch.set_num_threads(usable_cpus())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple's MPS is not available here; use --device cpu or auto")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU from Ampere on, or a CPU with AVX-512 BF16 or AMX
    (oneDNN's own check, the one torch's CPU autocast relies on)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def fast_bf16(device: torch.device) -> bool | None:
    """Whether bfloat16 is faster than float32 on ``device``: True on a GPU that has it or a CPU with AMX tiles, False
    where it is emulated, and None where the flags cannot tell: a CPU with AVX-512 BF16 but no AMX, where the default
    cnn's training step ran at 0.79x fp32's speed on a Xeon (Cooper Lake) and at 1.60x on an AMD EPYC (Zen 4)
    (bench/precision.py). There a long run measures both (imgclf.training.precision)."""
    if device.type == "cpu":
        if not native_bf16(device):
            return False
        return True if torch.cpu._is_amx_tile_supported() else None
    return native_bf16(device)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype ``torch.autocast`` computes in for ``--precision`` on ``device`` (None: full precision).

    auto: bf16 where it is known to be faster than fp32 (:func:`fast_bf16`; fp16 on older CUDA GPUs), else fp32 (a
    training run that measured bf16 faster records ``bf16`` instead of ``auto``: imgclf.training.precision).
    """
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if native_bf16(device) else torch.float16
        return torch.bfloat16 if fast_bf16(device) is True else None
    if precision == "bf16":
        if device.type == "cuda" and not native_bf16(device):
            raise UserError("--precision bf16: this GPU has no bfloat16; use --precision fp16 or auto")
        if device.type == "cpu" and not native_bf16(device):  # measured: 3.3x slower than fp32 on an AVX2 EPYC
            warn("--precision bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), so it is emulated, "
                 "several times slower than fp32; --precision auto chooses fp32 here")
        return torch.bfloat16
    if device.type == "cpu" and not bool(torch.ops.mkldnn._is_mkldnn_fp16_supported()):
        raise UserError("--precision fp16: this CPU has no native float16 (AVX-512 FP16 or AMX-FP16); use "
                        "--precision bf16, fp32 or auto")
    return torch.float16


def autocast_for(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision in ``dtype`` (see :func:`autocast_dtype`), or full precision for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
