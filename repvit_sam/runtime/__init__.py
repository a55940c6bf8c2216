"""Running RepViT-SAM fast: inference runtimes, fast modes and the segmenter factory.

- :func:`build_segmenter` turns a model into the segmenter a tracker uses (the reference
  ``SamPredictor``, or a :class:`BackendSegmenter` on OpenVINO, ONNX Runtime or PyTorch,
  wrapped in a :class:`RoiSegmenter` for the ``roi`` fast mode).
- :mod:`~repvit_sam.runtime.runners`: the table of runtimes (add a runtime there).
- :mod:`~repvit_sam.runtime.fast_mode`: :class:`FastMode`, the typed fast-mode setting.
- :mod:`~repvit_sam.runtime.graphs`: the exported-graph cache.
- :class:`OnnxSegmenter`: a segmenter over the exported graphs alone (no PyTorch model).

``onnx``/``onnxruntime`` (extra ``export``) and ``openvino`` (extra ``openvino``) are imported
only when a runtime needs them.

Example:
    >>> sam = build_repvit_sam("weights/repvit_sam.pt")
    >>> seg = build_segmenter(sam, backend="auto", mode=FastMode.parse("size512+nopad"),
    ...                       checkpoint="weights/repvit_sam.pt")
    >>> pred = seg.decode(seg.encode(rgb), boxes_xyxy=np.array([[10, 20, 200, 220]]))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from repvit_sam.modeling.sam import Sam
from repvit_sam.predictor import SamPredictor
from repvit_sam.runtime.backend_segmenter import BackendSegmenter
from repvit_sam.runtime.fast_mode import EXACT, FastMode
from repvit_sam.runtime.graphs import GraphCache
from repvit_sam.runtime.onnx_segmenter import OnnxSegmenter
from repvit_sam.runtime.precision import effective_mode, native_bf16
from repvit_sam.runtime.roi import RoiSegmenter
from repvit_sam.runtime.runners import (
    BACKENDS,
    RUNTIMES,
    available_backends,
    backend_available,
    default_backend,
)
from repvit_sam.segmenter import SegmenterBase

__all__ = [
    "BACKENDS",
    "EXACT",
    "RUNTIMES",
    "BackendSegmenter",
    "FastMode",
    "GraphCache",
    "OnnxSegmenter",
    "RoiSegmenter",
    "available_backends",
    "backend_available",
    "build_segmenter",
    "default_backend",
    "effective_mode",
    "native_bf16",
    "resolve_backend",
]

# ``model.backend`` values besides the runtime names.
AUTO = "auto"
PREDICTOR = "predictor"


def resolve_backend(backend: str, device: str | torch.device) -> str:
    """``backend`` as run on ``device``: ``auto`` means the reference predictor off-CPU.

    The graph backends (OpenVINO, ONNX Runtime) and the channels-last encoder serve CPUs; on a
    GPU the PyTorch predictor is the fast path.
    """
    if backend == AUTO and torch.device(device).type != "cpu":
        return PREDICTOR
    return backend


def build_segmenter(
    model: Sam,
    backend: str = AUTO,
    *,
    mode: FastMode | str = EXACT,
    checkpoint: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    calibration_frames: Sequence[np.ndarray] | None = None,
    **kwargs: Any,
) -> SegmenterBase:
    """The segmenter for a model: ``SamPredictor`` or a faster backend, with ``roi`` if asked.

    Args:
        model: the model (eval mode).
        backend: ``auto`` (the fastest installed on a CPU, the predictor on a GPU),
            ``predictor`` (the reference ``SamPredictor``), or a runtime name
            (``torch``, ``onnxruntime``, ``openvino``).
        mode: the fast mode (typed, or its text form); ``bf16`` is dropped, with one log line,
            on a device without native bf16 (:func:`effective_mode`).
        checkpoint: the file the model was loaded from (names the graph cache).
        threads: runtime threads (None: its default).
        calibration_frames: frames for the int8 encoder's first calibration.
        **kwargs: more :class:`BackendSegmenter` options (``torch_variant``, ``cache``,
            ``decoder_backend``).

    Raises:
        ImportError: the backend is not installed.
        ValueError: an unknown backend, or a mode the backend cannot run.
    """
    mode = effective_mode(FastMode.parse(mode), model.device)
    backend = resolve_backend(backend, model.device)
    if backend == PREDICTOR and mode.is_exact:
        return SamPredictor(model)
    inner = BackendSegmenter(
        model,
        backend=None if backend == AUTO else "torch" if backend == PREDICTOR else backend,
        mode=mode.without_roi(),
        checkpoint=checkpoint,
        threads=threads,
        calibration_frames=calibration_frames,
        **kwargs,
    )
    return RoiSegmenter(inner) if mode.roi else inner
