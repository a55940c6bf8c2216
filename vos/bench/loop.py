"""The per-frame loop section: ``vos.pipeline.run_video`` (the CLI's loop) on the bench frames."""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repvit_sam.runtime import RoiSegmenter
from vos.bench.inputs import FrameListSource, box_prompts
from vos.bench.report import Report, backend_column
from vos.bench.timing import time_call
from vos.config import IOConfig, RunConfig
from vos.io.sources import FrameSource

logger = logging.getLogger(__name__)


def bench_loop(
    report: Report,
    segmenter: Any,
    frames: Sequence[np.ndarray],
    boxes: np.ndarray,
    *,
    model_name: str,
    encode_ahead: bool = False,
    io: IOConfig | None = None,
) -> None:
    """One loop row: ``vos.pipeline.run_video`` (the CLI's loop) over ``frames``.

    ``fps_vs_encoder`` is the loop's FPS times the median time of ``segmenter.encode`` (with
    its pre-processing) measured just before the loop, under the same conditions: on a
    shared machine, encoder timings drift by 10% between sections of one run.

    With ``encode_ahead`` the source and segmenter go through ``vos.encode_ahead.EncodeAhead``, so
    the encoder of the next frame overlaps the decoder, tracker and sinks of this one.

    Args:
        report: gets the ``loop`` row (and a note on a ``roi`` segmenter's crops).
        segmenter: a ``BackendSegmenter``, or a ``RoiSegmenter`` around one.
        frames: (H, W, 3) uint8 RGB frames of the loop.
        boxes: (N, 4) float32 XYXY frame-0 boxes, one object each.
        model_name: the row's ``model`` cell.
        encode_ahead: run the loop through ``EncodeAhead``.
        io: which sinks the loop writes (default: the CLI's, all three).
    """
    from vos.pipeline import run_video

    io_config = io or IOConfig()
    image_hw = (frames[0].shape[0], frames[0].shape[1])
    segmenter.prepare(image_hw)
    warm = segmenter.encode(frames[0])
    segmenter.decode(warm, boxes_xyxy=boxes)
    encoder_s = time_call(functools.partial(segmenter.encode, frames[0]), warmup=0,
                          repeats=5).median_s
    source: FrameSource = FrameListSource(frames)
    predictor: Any = segmenter
    ahead = None
    if encode_ahead:
        from vos.encode_ahead import EncodeAhead

        ahead = EncodeAhead(segmenter)
        source, predictor = ahead.source(source), ahead
    try:
        with tempfile.TemporaryDirectory(prefix="vos-bench-") as tmp:
            summary = run_video(
                source, predictor, box_prompts(boxes), Path(tmp), RunConfig(io=io_config),
                progress=False,
            )
    finally:
        if ahead is not None:
            ahead.close()
    stages = summary.stage_ms_per_frame
    row = {
        "model": model_name,
        "backend": backend_column(segmenter),
        "decoder": segmenter.decoder_backend,
        "mode": segmenter.mode.name,
        "overlap": "encode-ahead" if encode_ahead else "none",
        "objects": len(boxes),
        "sinks": "+".join(k for k in ("png", "json", "video") if getattr(io_config, f"save_{k}")),
        "frames": summary.frames_processed,
        "fps": round(summary.fps, 3),
        "encoder_alone_ms": round(1000 * encoder_s, 1),
        "encode_ms": round(stages.get("encode", 0.0), 1),  # waiting time with encode-ahead
        "decode_ms": round(stages.get("decode masks", 0.0), 1),
        "other_ms": round(1000 / max(summary.fps, 1e-9) - sum(
            stages.get(k, 0.0) for k in ("encode", "decode masks")), 1),
        "fps_vs_encoder": round(summary.fps * encoder_s, 3),
    }
    report.loop.append(row)
    if isinstance(segmenter, RoiSegmenter):
        total = segmenter.crop_encodes + segmenter.whole_encodes
        report.notes.append(
            f"{row['mode']} loop: {segmenter.crop_encodes} of {total} encodes were crops (the "
            "rest whole frames: first frame, crops above 60% of the frame, prompts outside)"
        )
    logger.info("loop %s", row)
