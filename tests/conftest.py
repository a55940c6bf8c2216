"""Shared pytest fixtures: the ../shared folder beside the checkout, and torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("REPVIT_VOS_SHARED", REPO_ROOT.parent / "shared"))

# Two cores here and in CI: keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` folder beside the checkout; skips the test when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def conformance_dir(shared_dir: Path) -> Path:
    path = shared_dir / "conformance"
    if not (path / "golden.npz").is_file():
        pytest.skip(f"conformance vectors not found in {path}")
    return path


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data"
    if not path.is_dir():
        pytest.skip(f"shared test data not found in {path}")
    return path


@pytest.fixture(scope="session")
def random_checkpoint(seeing_checkpoint: Path) -> Path:
    """The end-to-end tests' RepViT-SAM checkpoint (official format, synthetic weights).

    The fan-in weights of :func:`seeing_checkpoint`: default init barely sees the image, so
    a test handed the wrong frame's embedding (resume, backends, encode-ahead, ROI, the
    embedding store) would pass unnoticed (issue 23). Needs nothing from ../shared, so the
    CLI end-to-end tests run on a bare clone too.
    """
    return seeing_checkpoint


def fan_in_state_dict(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synthetic weights whose image embedding depends on the image (issues 19 and 23).

    ``vos.bench.inputs.fill_fan_in_weights`` on a copy of ``model``: every weight of two or
    more dimensions N(0, 1) * 0.75 / sqrt(fan_in), norm scales 1 + N(0, 0.02), biases and
    BatchNorm means N(0, 0.02), BatchNorm variances 1, all drawn from ``seed`` (the same in
    every process). Default init barely sees the image (two DAVIS frames' embeddings differ
    by a relative 2.6e-5); these weights give ~0.66.
    """
    import copy

    from vos.bench.inputs import fill_fan_in_weights

    filled = copy.deepcopy(model)
    fill_fan_in_weights(filled, seed)
    return {k: v.clone() for k, v in filled.state_dict().items()}


@pytest.fixture(scope="session")
def seeing_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RepViT-SAM checkpoint (official format) with :func:`fan_in_state_dict` weights.

    The fixture asserts what makes it useful: two different frames' embeddings differ by a
    relative 1e-2 or more, so a test handed the wrong frame's embedding fails.
    """
    from repvit_sam import SamPredictor, build_repvit_sam

    model = build_repvit_sam()
    model.load_state_dict(fan_in_state_dict(model))
    model.eval()
    predictor = SamPredictor(model)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128]
    first = np.stack([(xx * 2) % 256, (yy * 3) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    second = np.roll(first, 17, axis=1) ^ rng.integers(0, 40, first.shape, dtype=np.uint8)
    a = predictor.encode(first).features
    b = predictor.encode(second).features
    relative = float((a - b).norm() / a.norm())
    assert relative >= 1e-2, f"synthetic weights barely see the image ({relative:.2e})"
    path = tmp_path_factory.mktemp("weights") / "repvit_sam_fan_in.pt"
    torch.save(model.state_dict(), path)
    return path
