"""What the CPU can do fast: native bfloat16 matrix units (AVX512-BF16, AMX-BF16) for mixed-precision training."""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["BF16_FLAGS", "cpu_bf16_flags", "cpu_has_fast_bf16", "resolve_precision"]

# /proc/cpuinfo flags of native bf16 arithmetic: AVX512-BF16 (dot products, conversions) and AMX (tile matmuls)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The :data:`BF16_FLAGS` this machine's CPU reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return tuple(f for f in BF16_FLAGS if f in flags)


def cpu_has_fast_bf16() -> bool:
    """Whether bf16 autocast runs on native hardware here (otherwise oneDNN emulates it, usually slower than fp32)."""
    return bool(cpu_bf16_flags())


def resolve_precision(precision: str, device_type: str, cuda_bf16: bool = False) -> tuple[str, str]:
    """``(precision to use, why)`` for a ``train.precision`` choice on ``device_type``.

    "auto" is bf16 where the hardware does bf16 natively (a CPU with AVX512-BF16 / AMX, a CUDA device with bf16
    support) and fp32 elsewhere; an explicit "fp32" / "bf16" / "fp16" is used as given, and ``why`` says when that
    choice is likely slow (bf16 on a CPU without native support).
    """
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    flags = cpu_bf16_flags() if device_type == "cpu" else ()
    if precision == "auto":
        if device_type == "cpu":
            if flags:
                return "bf16", f"precision auto -> bf16: the CPU has {', '.join(flags)}"
            return "fp32", "precision auto -> fp32: the CPU has no AVX512-BF16 or AMX (bf16 would be emulated)"
        if device_type == "cuda":
            return ("bf16", "precision auto -> bf16 (CUDA device with bf16)") if cuda_bf16 else \
                ("fp32", "precision auto -> fp32 (CUDA device without bf16)")
        return "fp32", f"precision auto -> fp32 on {device_type}"
    if precision == "bf16" and device_type == "cpu" and not flags:
        return "bf16", ("precision bf16 on a CPU without AVX512-BF16 or AMX: oneDNN emulates it, expect it to be slower "
                        "than fp32 (use train.precision=auto or fp32)")
    return precision, f"precision {precision}"
