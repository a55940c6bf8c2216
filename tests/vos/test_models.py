"""The model factory: checkpoint checks for every model type, backends, fast modes, ROI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from repvit_sam import SamPredictor
from repvit_sam.build import CheckpointError, build_sam_vit_t
from repvit_sam.runtime import BackendSegmenter, FastMode, RoiSegmenter
from vos.config import ModelConfig
from vos.models import ModelError, build_segmenter, checkpoint_digest, load_model


@pytest.fixture(scope="module")
def vit_t_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mobile_sam_random.pt"
    torch.save(build_sam_vit_t().state_dict(), path)
    return path


def test_sha256_is_checked_and_recorded_for_every_model_type(vit_t_checkpoint: Path) -> None:
    actual = hashlib.sha256(vit_t_checkpoint.read_bytes()).hexdigest()
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_model(ModelConfig(model_type="vit_t", checkpoint=str(vit_t_checkpoint),
                               checkpoint_sha256="0" * 64))
    loaded = load_model(ModelConfig(model_type="vit_t", checkpoint=str(vit_t_checkpoint),
                                    checkpoint_sha256=actual.upper()))
    assert loaded.checkpoint_sha256 == actual
    assert checkpoint_digest(ModelConfig(checkpoint=str(vit_t_checkpoint))) == actual
    assert checkpoint_digest(ModelConfig()) is None


def test_user_errors_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no checkpoint given"):
        load_model(ModelConfig())
    with pytest.raises(ModelError, match="no such file"):
        load_model(ModelConfig(checkpoint=str(tmp_path / "nope.pt")))
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(ModelError, match="model_type='vit_q'"):
        load_model(ModelConfig(checkpoint=str(tmp_path / "w.pt"), model_type="vit_q"))


def test_backend_and_fast_mode_choose_the_segmenter(random_checkpoint: Path) -> None:
    exact = build_segmenter(ModelConfig(checkpoint=str(random_checkpoint), backend="predictor"))
    assert type(exact) is SamPredictor
    roi = build_segmenter(ModelConfig(checkpoint=str(random_checkpoint), backend="torch",
                                      fast_mode=FastMode.parse("roi+size256")))
    assert isinstance(roi, RoiSegmenter) and isinstance(roi.inner, BackendSegmenter)
    assert roi.inner.mode == FastMode(input_size=256, pad_square=False)
    assert roi.mode.name == "roi+size256"
    with pytest.raises(ModelError, match=r"model\.fast_mode=int8"):
        build_segmenter(ModelConfig(checkpoint=str(random_checkpoint), backend="torch",
                                    fast_mode=FastMode.parse("int8")))
