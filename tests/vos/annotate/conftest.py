"""Shared fixtures of the annotator's tests (``vos.annotate``)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def annotate() -> ModuleType:
    """``vos.annotate`` (skips without Flask, the ``demo`` extra)."""
    pytest.importorskip("flask")
    import vos.annotate

    return vos.annotate


@pytest.fixture(scope="session")
def annotating_checkpoint(seeing_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
                          ) -> Path:
    """Fan-in weights with the IoU head's output bias raised (as the predictor's tests do):
    synthetic weights predict IoU near 0, which the tracker would take for a lost object."""
    import torch

    weights = torch.load(seeing_checkpoint, weights_only=True)
    weights["mask_decoder.iou_prediction_head.layers.2.bias"] += 1.0
    path = tmp_path_factory.mktemp("weights") / "annotating.pt"
    torch.save(weights, path)
    return path
