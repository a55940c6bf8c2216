"""Which segmenter the loop and agreement sections run: built by the library's factory with
the backends this run found fastest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from repvit_sam import Sam
from repvit_sam.runtime import BACKENDS, FastMode, build_segmenter
from repvit_sam.runtime.runners import default_decoder_backend
from repvit_sam.segmenter import SegmenterBase
from vos.bench.report import Report

# int8 runs on ONNX Runtime first: its QDQ kernels measured 0.36 s against OpenVINO's
# 0.63 s on the same quantised graph (1024x576, 2 cores).
INT8_BACKENDS = ("onnxruntime", "openvino")
CALIBRATION_FRAMES = 8


def best_decoder(report: Report) -> str | None:
    """The decoder backend with the fastest 1-object call in this run (None: none timed)."""
    rows = [
        r for r in report.decoder
        if r["objects"] == 1 and r["backend"] in BACKENDS and r.get("malloc") == report.malloc
    ]
    return min(rows, key=lambda r: r["median_ms"])["backend"] if rows else None


def best_torch_variant(report: Report) -> str:
    """The torch encoder variant with the best time per GFLOP at the largest input timed
    (repvit's rows when there are any; ``channels_last`` when no torch row was timed)."""
    rows = [
        r for r in report.encoder
        if r["backend"].startswith("torch[") and r.get("malloc") == report.malloc
    ]
    rows = [r for r in rows if r["model"] == "repvit"] or rows
    largest = max((r["gflops"] for r in rows), default=0.0)
    rows = [r for r in rows if r["gflops"] == largest]
    if not rows:
        return "channels_last"
    best = min(rows, key=lambda r: r["median_s"] / max(r["gflops"], 1e-9))
    return best["backend"][len("torch[") : -1]


@dataclass(frozen=True)
class SegmenterRecipe:
    """How this run builds a fast mode's segmenter.

    Attributes:
        backend: the encoder backend of float modes.
        int8_backend: the encoder backend of ``int8`` modes (None: no graph runtime here).
        decoder_backend: the prompt-decoder backend.
        torch_variant: the torch encoder variant.
        threads: runtime threads.
        calibration_frames: (H, W, 3) uint8 RGB frames for the int8 encoder's calibration.
    """

    backend: str
    int8_backend: str | None
    decoder_backend: str
    torch_variant: str
    threads: int
    calibration_frames: Sequence[np.ndarray]

    @classmethod
    def from_report(
        cls,
        report: Report,
        backends: Sequence[str],
        default_backend: str,
        *,
        threads: int,
        frames: Sequence[np.ndarray],
    ) -> SegmenterRecipe:
        """The fastest decoder and torch variant of ``report``'s rows, on ``backends``."""
        return cls(
            backend=default_backend,
            int8_backend=next((b for b in INT8_BACKENDS if b in backends), None),
            # Without decoder rows (e.g. --only agreement): the library's default decoder.
            decoder_backend=best_decoder(report) or default_decoder_backend(),
            torch_variant=best_torch_variant(report),
            threads=threads,
            calibration_frames=frames[:CALIBRATION_FRAMES],
        )

    def can_run(self, mode: FastMode) -> bool:
        """Whether this machine runs ``mode`` (``int8`` needs ONNX Runtime or OpenVINO)."""
        return not mode.int8 or self.int8_backend is not None

    def build(self, model: Sam, checkpoint: str | None, mode: FastMode) -> SegmenterBase:
        """``mode``'s segmenter over ``model``, ROI-wrapped for ``roi`` modes.

        Raises:
            ValueError: a mode this machine cannot run (see :meth:`can_run`).
        """
        backend = self.int8_backend if mode.int8 else self.backend
        if backend is None:
            raise ValueError(f"{mode.name}: needs onnxruntime or openvino")
        return build_segmenter(
            model, backend, mode=mode, checkpoint=checkpoint, threads=self.threads,
            calibration_frames=self.calibration_frames, torch_variant=self.torch_variant,
            decoder_backend=self.decoder_backend,
        )
