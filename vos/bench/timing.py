"""Timing primitives of the benchmark: median wall time, the GEMM bound, GFLOPs, the machine.

Every number of a bench report is one of these: a :class:`Timing` of some call, this
machine's float32 GEMM rate (the bound every encoder number is compared against), or the
encoder's GFLOPs counted on its convolutions and matrix products.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from repvit_sam import Sam


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repeats (after warm-up).

    ``cpu_median_s`` is the median process CPU time per call (every thread): on a shared
    machine it moves far less than wall time when neighbours take the cores, so ratios of
    two settings timed with one thread are read from it.
    """

    median_s: float
    min_s: float
    repeats: int
    cpu_median_s: float = 0.0


def time_call(fn: Callable[[], object], *, warmup: int, repeats: int) -> Timing:
    """Median and minimum wall time (and median CPU time) of ``fn()`` after ``warmup``
    untimed calls."""
    for _ in range(warmup):
        fn()
    times, cpu_times = [], []
    for _ in range(max(1, repeats)):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return Timing(statistics.median(times), min(times), len(times), statistics.median(cpu_times))


def measure_gemm_gflops(sizes: Sequence[int] = (2048, 4096), repeats: int = 5) -> float:
    """Float32 GEMM rate (GFLOP/s) of this machine with torch's current thread setting.

    Square (n x n) @ (n x n) matmuls, 2 n³ FLOPs each, through MKL: the practical ceiling of
    a convolution network on this CPU. A bound is a best case, so this is the fastest call
    over ``repeats`` at each size, and the best size (small sizes under-fill the cores, and
    on a shared machine the median mostly measures the neighbours).
    """
    gen = torch.Generator().manual_seed(0)
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        out = torch.empty(size, size)
        timing = time_call(functools.partial(torch.mm, a, b, out=out), warmup=1, repeats=repeats)
        best = max(best, 2.0 * size**3 / timing.min_s / 1e9)
    return best


def encoder_gflops(model: Sam, input_hw: tuple[int, int]) -> float:
    """GFLOPs (2 per multiply-add) of one encoder call on a (1, 3, H, W) input.

    Counted by ``torch.utils.flop_counter`` on convolutions and matrix products: the GEMM-like
    work the bound applies to. Element-wise operations are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.image_encoder(torch.zeros(1, 3, *input_hw))
    return counter.get_total_flops() / 1e9


def machine_info(threads: int, malloc: str = "system") -> dict[str, Any]:
    """CPU, thread and library versions, for the report header."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "malloc": malloc,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for name in ("onnxruntime", "openvino"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = None
    return info


def run_in_child(module: str, task: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``module.child_main()`` in a fresh interpreter (its RSS is its own): it reads ``task``
    and the JSON ``settings`` from its arguments and prints one JSON line, returned here.

    Raises:
        RuntimeError: the child failed (its last stderr line says why).
    """
    done = subprocess.run(
        [sys.executable, "-c", f"from {module} import child_main; child_main()", task,
         json.dumps(settings)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"{task} run failed: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
