"""Where the ``bf16`` fast mode computes in bfloat16, and where it falls back to float32.

bfloat16 only pays where the hardware multiplies it natively. Measured on a 2-core Intel Xeon
with AMX (torch matmul 4096x256 @ 256x256, GFLOP/s, float32 / bfloat16): native AMX 298 /
2262; oneDNN capped at AVX512_CORE_BF16 (AVX512-BF16 dot products, no AMX) 303 / 202;
capped at AVX512_CORE (emulated) 298 / 67; capped at AVX2 (reference kernels) 306 / 2. An
emulated bf16 run would be up to 150x slower than float32, so without native bf16 the mode
runs float32 and says so in one line: never silently slower.

Native bf16 means:

- on CUDA, ``torch.cuda.is_bf16_supported()``;
- on a CPU, the ``amx_bf16`` or ``avx512_bf16`` flag (x86) or ``bf16`` (Arm) in
  ``/proc/cpuinfo``, and no ``ONEDNN_MAX_CPU_ISA`` cap below oneDNN's first bf16 ISA
  (``AVX512_CORE_BF16``): such a cap makes oneDNN emulate bf16, as on an AVX2-only CPU;
- and, unless AMX tiles are usable (the ``amx_bf16`` flag and no cap below AMX), a probe:
  bf16 dot products without AMX may or may not beat float32 (the issue measured 4.9x on an
  AMD Zen 4; this Xeon capped at AVX512_CORE_BF16 gives 0.67x, and its whole bf16 decoder
  then ran 1.04x float32's time), so one decoder-shaped GEMM (4096x256 by 256x256) is timed
  in both precisions, once per process (about a millisecond), and bf16 counts as native only
  where it multiplies at least ``PROBE_MIN_GAIN`` times faster.

``REPVIT_SAM_NATIVE_BF16=1`` (or ``0``) overrides the detection, e.g. to measure the
emulated path's rounding on purpose or to test the fallback on a bf16 machine.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from repvit_sam.runtime.fast_mode import FastMode

logger = logging.getLogger(__name__)

NATIVE_BF16_ENV = "REPVIT_SAM_NATIVE_BF16"
ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo flags of native bf16 arithmetic: x86 (AMX tiles, AVX512 dot products), Arm.
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})
# oneDNN's ISA names from AVX512_CORE_BF16 up: a cap at one of these still multiplies bf16
# natively. AVX2_VNNI_2 only converts bf16; lower caps emulate it.
_NATIVE_ISA_MARKERS = ("BF16", "FP16", "AMX", "AVX10", "ALL", "DEFAULT")
# Caps that still let oneDNN use AMX tiles (AVX10 names include AMX where they have it).
_AMX_ISA_MARKERS = ("AMX", "ALL", "DEFAULT")
# Where a probe decides: bf16 must multiply at least this many times faster than float32.
PROBE_MIN_GAIN = 1.25
# Two threads building segmenters at once must not time their GEMMs during each other's.
_PROBE_LOCK = threading.Lock()


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags (``flags`` on x86, ``Features`` on Arm); empty if unreadable."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def onednn_caps_bf16(isa: str | None = None) -> bool:
    """Whether ``ONEDNN_MAX_CPU_ISA`` (or ``isa``) caps oneDNN below native bf16."""
    isa = os.environ.get(ONEDNN_ISA_ENV, "") if isa is None else isa
    isa = isa.strip().upper()
    return bool(isa) and not any(marker in isa for marker in _NATIVE_ISA_MARKERS)


def _timed_min(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def bf16_gemm_gain() -> float:
    """float32 time over bf16 time of a decoder-shaped GEMM on this CPU (measured once).

    4096x256 by 256x256, the batched decoder's typical product; both precisions interleaved,
    best of 5 after a warm-up each, so a busy neighbour slows both alike. Threads that ask
    before the first answer is cached measure one after the other, never at the same time.
    """
    with _PROBE_LOCK:
        return _measure_bf16_gain()


def _measure_bf16_gain() -> float:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4096, 256, generator=gen)
    b = torch.randn(256, 256, generator=gen)
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
    with torch.inference_mode():
        torch.mm(a, b)  # warm-up: the first call of each picks and prepares its kernel
        torch.mm(a16, b16)
        f32 = _timed_min(lambda: torch.mm(a, b), 5)
        bf16 = _timed_min(lambda: torch.mm(a16, b16), 5)
    return f32 / max(bf16, 1e-9)


def _amx_usable(flags: frozenset[str]) -> bool:
    isa = os.environ.get(ONEDNN_ISA_ENV, "").strip().upper()
    return "amx_bf16" in flags and (not isa or any(m in isa for m in _AMX_ISA_MARKERS))


def native_bf16(
    device: torch.device | str = "cpu",
    cpuinfo: Path = CPUINFO,
    probe: Callable[[], float] = bf16_gemm_gain,
) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and why (one phrase for the log line).

    Args:
        device: the device the model runs on.
        cpuinfo: the CPU's feature file (tests pass their own).
        probe: float32 over bf16 GEMM time, asked only for a CPU with bf16 flags whose AMX
            tiles are absent or capped off (tests pass their own).

    Returns:
        (native, reason), e.g. ``(True, "CPU flags amx_bf16, avx512_bf16")``.
    """
    override = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if override in ("0", "1"):
        return override == "1", f"{NATIVE_BF16_ENV}={override}"
    device = torch.device(device)
    if device.type == "cuda":
        supported = bool(torch.cuda.is_bf16_supported())
        return supported, "CUDA device " + ("with" if supported else "without") + " bf16"
    if device.type != "cpu":
        return False, f"{device.type} device"
    flags = sorted(cpu_flags(cpuinfo) & CPU_BF16_FLAGS)
    if not flags:
        return False, "no AVX512-BF16 or AMX on this CPU"
    if onednn_caps_bf16():
        return False, f"{ONEDNN_ISA_ENV}={os.environ[ONEDNN_ISA_ENV]} caps oneDNN below bf16"
    reason = "CPU flags " + ", ".join(flags)
    if _amx_usable(frozenset(flags)):
        return True, reason
    gain = probe()
    if gain < PROBE_MIN_GAIN:
        return False, (f"{reason} without AMX tiles, and a bf16 GEMM runs {gain:.2f}x "
                       f"float32's speed here (needs {PROBE_MIN_GAIN}x)")
    return True, f"{reason}; a bf16 GEMM runs {gain:.2f}x float32's speed"


def effective_mode(mode: FastMode, device: torch.device | str = "cpu") -> FastMode:
    """``mode`` as it will run on ``device``: without ``bf16`` where bf16 is not native.

    Logs one warning line when it drops ``bf16`` (printed to stderr even where logging is not
    configured), so a user who asked for speed learns why there is none.
    """
    if not mode.bf16:
        return mode
    native, reason = native_bf16(device)
    if native:
        return mode
    fallback = dataclasses.replace(mode, bf16=False)
    logger.warning("fast mode %s: no native bf16 (%s); running float32 as %s",
                   mode.name, reason, fallback.name)
    return fallback
