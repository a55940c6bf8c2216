"""The official segment-anything 1.0 package beside ``repvit_sam``, for the compatibility tests.

``segment-anything`` (PyPI, Apache-2.0, pure Python, in the ``dev`` extra) is imported in the
same process as ``repvit_sam`` through :mod:`vos.bench.official_sam` (which also says what its
torchvision stand-in replaces, and why); both get one deterministic state_dict (the
conformance fill recipe of ``../shared/conformance``, applied to the model's own keys) and the
same images.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from tests.repvit_sam.conformance_fill import fill_value
from vos.bench.official_sam import (
    OFFICIAL,
    official_installed,
    small_vit_sam,
    uses_torchvision_stand_in,
)
from vos.bench.official_sam import official_segment_anything as _official

__all__ = ["OFFICIAL", "official_segment_anything", "small_vit_sam", "uses_torchvision_stand_in"]
# Conformance tolerances of ../shared/conformance/README.md.
EMBED_REL_L2 = 1e-4
LOGIT_REL_L2 = 1e-3
MASK_AGREEMENT_MIN = 0.999
# The second real image: a DAVIS frame (854x480, landscape; picture1.jpg is square).
DAVIS_FRAME = Path("data/davis-mini/JPEGImages/480p/dog/00000.jpg")


@contextlib.contextmanager
def official_segment_anything() -> Iterator[types.ModuleType]:
    """:func:`vos.bench.official_sam.official_segment_anything`, skipping when not installed."""
    if not official_installed():
        pytest.skip("segment-anything is not installed (pip install -e '.[dev]')")
    with _official() as package:
        yield package


def fill_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The conformance fill (v1) of every entry of ``model``'s own state_dict, by key."""
    return {
        key: torch.from_numpy(fill_value(key, tuple(value.shape)))
        for key, value in model.state_dict().items()
    }


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, read as the official scripts do (OpenCV)."""
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def conformance_images(shared_dir: Path) -> dict[str, np.ndarray]:
    """The real test images: ``picture1`` (770x769) and, when present, a DAVIS frame."""
    images = {"picture1": read_rgb(shared_dir / "conformance" / "picture1.jpg")}
    if (shared_dir / DAVIS_FRAME).is_file():
        images["davis_dog"] = read_rgb(shared_dir / DAVIS_FRAME)
    return images


def rel_l2(actual: np.ndarray | torch.Tensor, expected: np.ndarray | torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64 (0 when both are exactly equal)."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    diff = float(np.linalg.norm(a - b))
    return 0.0 if diff == 0.0 else diff / float(np.linalg.norm(b))


def max_abs(actual: np.ndarray | torch.Tensor, expected: np.ndarray | torch.Tensor) -> float:
    """Largest absolute difference, in float64."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    return float(np.abs(a - b).max()) if a.size else 0.0


class CachedEncoder(torch.nn.Module):
    """Wraps an image encoder so each distinct input is encoded once (a test-time cache).

    The automatic mask generator and the predictor tests encode the same images many times;
    with ViT-B that is ~20 s a time here. Both implementations get their own cache, and the
    embeddings themselves are compared by their own test.
    """

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.img_size = encoder.img_size
        self._cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        if key not in self._cache:
            self._cache[key] = self.encoder(x).clone()
        return self._cache[key].clone()


def record(table: str, **row: Any) -> None:
    """Append one row of a comparison table to ``$REPVIT_COMPAT_REPORT`` (JSON lines), if set.

    The tests assert; this only lets a run write down the numbers it measured, e.g.
    ``REPVIT_COMPAT_REPORT=compat.jsonl python -m pytest tests/repvit_sam/test_compat_official.py``.
    """
    path = os.environ.get("REPVIT_COMPAT_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"table": table, **row}) + "\n")
