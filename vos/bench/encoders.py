"""The encoder section: every model x backend x input shape (x precision), against the GEMM
bound."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np

from repvit_sam import Sam
from repvit_sam.runtime import BackendSegmenter, FastMode, native_bf16
from repvit_sam.runtime.preprocess import preprocess
from vos.bench.report import Report, backend_column
from vos.bench.timing import encoder_gflops, time_call

logger = logging.getLogger(__name__)


def encoder_configs(
    backends: Sequence[str], torch_variants: Sequence[str], precisions: Sequence[str] = ("f32",)
) -> list[dict]:
    """(backend, torch_variant, mode) sets to time, torch variants first; each precision of
    a backend right after the other, so f32 and bf16 run side by side.

    ``bf16`` is timed where it can gain: on native bf16 hardware, not on ONNX Runtime (no
    bf16 kernels on x86), and on one torch variant: ``channels_last`` (what
    ``model.backend=torch`` runs) when it is timed, else the first.
    """
    configs = []
    for backend in backends:
        variants = list(torch_variants) if backend == "torch" else ["fused"]
        for variant in variants:
            for precision in precisions:
                if precision == "bf16" and not _times_bf16(backend, variant, torch_variants):
                    continue
                configs.append({"backend": backend, "torch_variant": variant,
                                "mode": FastMode(bf16=precision == "bf16")})
    return configs


def _times_bf16(backend: str, variant: str, torch_variants: Sequence[str]) -> bool:
    if backend == "onnxruntime" or not native_bf16("cpu")[0]:
        return False
    bf16_variant = "channels_last" if "channels_last" in torch_variants else torch_variants[0]
    return backend != "torch" or variant == bf16_variant


def encoder_shapes(sizes: Sequence[int], image_hw: tuple[int, int]) -> list[tuple[str, FastMode]]:
    """(label, mode) of every input shape to time: each size padded square (1024 is exact),
    then the first size without padding when the video's aspect makes that another shape."""
    shapes = [(f"{s}² square" if s != 1024 else "1024² exact", FastMode(input_size=s))
              for s in sizes]
    nopad = FastMode(input_size=sizes[0], pad_square=False)
    if nopad.encoder_input_hw(image_hw) != (sizes[0], sizes[0]):
        shapes.append((f"{sizes[0]} nopad (video aspect)", nopad))
    return shapes


def bench_encoders(
    report: Report,
    models: dict[str, tuple[Sam, str | None]],
    configs: Sequence[dict],
    shapes: Sequence[tuple[str, FastMode]],
    frame: np.ndarray,
    *,
    threads: int,
    warmup: int,
    repeats: int,
) -> None:
    """Encoder rows: every model x backend x input shape.

    Args:
        report: gets one ``encoder`` row per timing (its ``gemm_gflops`` must be measured).
        models: name -> (model, checkpoint it was loaded from or None).
        configs: ``BackendSegmenter`` keyword sets (see :func:`encoder_configs`); a set's
            ``mode`` gives the precision, the shapes the input geometry.
        shapes: (label, mode) pairs (see :func:`encoder_shapes`).
        frame: (H, W, 3) uint8 RGB frame, pre-processed as each mode does.
        threads: runtime threads.
        warmup: untimed calls before timing.
        repeats: timed calls.
    """
    flops_cache: dict[tuple[str, tuple[int, int]], float] = {}
    for model_name, (model, checkpoint) in models.items():
        for config in configs:
            seg = BackendSegmenter(model, threads=threads, checkpoint=checkpoint, **config)
            for label, mode in shapes:
                if model_name != "repvit" and not mode.is_exact:
                    continue  # the ViT encoders take only their trained 1024 input
                if seg.mode.bf16 and model_name != "repvit":
                    continue  # bf16 is a fast mode of repvit's
                x = preprocess(frame, mode, seg.pixel_mean, seg.pixel_std)
                input_hw = (x.shape[2], x.shape[3])
                key = (model_name, input_hw)
                if key not in flops_cache:
                    flops_cache[key] = encoder_gflops(model, input_hw)
                runner = seg.encoder_for(input_hw)
                timing = time_call(functools.partial(runner, x), warmup=warmup, repeats=repeats)
                gflops = flops_cache[key]
                rate = gflops / timing.median_s
                report.encoder.append(
                    {
                        "model": model_name,
                        "backend": backend_column(seg),
                        "input": f"{input_hw[0]}x{input_hw[1]}",
                        "shape": label,
                        "precision": seg.precision,
                        "gflops": round(gflops, 1),
                        "median_s": round(timing.median_s, 4),
                        "min_s": round(timing.min_s, 4),
                        "cpu_s": round(timing.cpu_median_s, 4),
                        "gflop_per_s": round(rate, 1),
                        "gemm_fraction": round(rate / report.gemm_gflops, 3),
                        "malloc": report.malloc,
                    }
                )
                logger.info("encoder %s", report.encoder[-1])
