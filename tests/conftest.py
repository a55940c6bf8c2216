"""Shared pytest fixtures: the ../shared folder beside the checkout, and torch settings."""

from __future__ import annotations

import os
from pathlib import Path

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
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RepViT-SAM checkpoint in the official format with seeded random weights.

    Needs nothing from ../shared, so the CLI end-to-end tests run on a bare clone too.
    """
    from repvit_sam import build_repvit_sam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "repvit_sam_random.pt"
    torch.save(build_repvit_sam().state_dict(), path)
    return path
