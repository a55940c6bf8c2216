"""The decoder section: one batched call per frame for 1, 4, 8, 16 objects, per backend."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from repvit_sam import Sam, SamPredictor
from repvit_sam.runtime import BackendSegmenter
from vos.bench.inputs import default_boxes, tracker_prompts
from vos.bench.report import Report
from vos.bench.timing import time_call

logger = logging.getLogger(__name__)


def bench_decoders(
    report: Report,
    model: Sam,
    checkpoint: str | None,
    decoder_backends: Sequence[str],
    frame: np.ndarray,
    object_counts: Sequence[int],
    *,
    threads: int,
    warmup: int,
    repeats: int,
    precisions: Sequence[str] = ("f32",),
) -> None:
    """Decoder rows: each backend x number of objects, one batched call per frame.

    ``torch`` is ``SamPredictor.decode``'s default ``BatchedMaskDecoder``; ``torch[reference]``
    is SAM's ``MaskDecoder`` path, timed alongside as the baseline it replaces. With ``bf16``
    precision, ``torch bf16`` is the ``bf16`` fast mode's decoder (bf16 transformer and
    upscaling, float32 logits and IoU head), timed right after float32 on the same embedding.

    Args:
        report: gets one ``decoder`` row per backend and object count.
        model: the model whose prompt decoder is timed.
        checkpoint: the file it was loaded from (names the graph cache), or None.
        decoder_backends: runtime names.
        frame: (H, W, 3) uint8 RGB frame, encoded once.
        object_counts: numbers of objects N per call (the first is the ``vs_1_object`` base).
        threads: runtime threads.
        warmup: untimed calls before timing.
        repeats: timed calls.
        precisions: ``f32`` and/or ``bf16`` (the torch decoder only; skipped, with a note,
            without native bf16).
    """
    image_hw = (frame.shape[0], frame.shape[1])
    reference = BackendSegmenter(model, backend="torch", torch_variant="fused", threads=threads)
    embedding = reference.encode(frame)
    first = reference.decode(embedding, boxes_xyxy=default_boxes(image_hw, 1))
    logits = first.low_res_logits
    decoders: list[tuple[str, Any]] = []
    for backend in decoder_backends:
        seg = BackendSegmenter(
            model, backend="torch", decoder_backend=backend, threads=threads, checkpoint=checkpoint
        )
        seg.prepare(image_hw)
        decoders.append((backend, seg))
        if backend == "torch" and "bf16" in precisions:
            bf16 = BackendSegmenter(model, backend="torch", threads=threads, mode="bf16")
            if bf16.mode.bf16:
                decoders.append(("torch bf16", bf16))
            else:
                report.notes.append("decoder bf16: no native bf16 on this machine, not timed")
        if backend == "torch":
            decoders.append(("torch[reference]", SamPredictor(model, decoder="reference")))
    for name, seg in decoders:
        base = None
        for count in object_counts:
            prompts = tracker_prompts(image_hw, count, logits)
            call = functools.partial(seg.decode, embedding, **prompts)
            timing = time_call(call, warmup=warmup, repeats=repeats)
            base = timing.median_s if base is None else base
            report.decoder.append(
                {
                    "backend": name,
                    "objects": count,
                    "median_ms": round(1000 * timing.median_s, 1),
                    "min_ms": round(1000 * timing.min_s, 1),
                    "cpu_ms": round(1000 * timing.cpu_median_s, 1),
                    "vs_1_object": round(timing.median_s / base, 2),
                    "frame": f"{image_hw[1]}x{image_hw[0]}",
                    "malloc": report.malloc,
                }
            )
            logger.info("decoder %s", report.decoder[-1])
