"""Checkpoint schema and loader behaviour: strict keys, shapes, bad files, hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from repvit_sam import build_repvit_sam, load_checkpoint, sam_model_registry
from repvit_sam.build import CheckpointError, sha256_of

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "repvit_sam_keys.json"


@pytest.fixture(scope="module")
def model_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in build_repvit_sam().state_dict().items()}


def test_key_manifest_matches_golden(model_state: dict[str, torch.Tensor]) -> None:
    manifest = json.loads(GOLDEN.read_text())
    assert list(model_state) == list(manifest)
    assert {k: list(v.shape) for k, v in model_state.items()} == manifest
    assert len(manifest) == 1598
    # pixel_mean/std are buffers of the model but must stay out of the checkpoint.
    assert not any(k.startswith("pixel_") for k in model_state)


def test_key_manifest_matches_shared_keys_tsv(
    model_state: dict[str, torch.Tensor], conformance_dir: Path
) -> None:
    from tests.repvit_sam.conformance_fill import read_keys_tsv

    rows = read_keys_tsv(conformance_dir / "keys.tsv")
    assert [(k, tuple(v.shape)) for k, v in model_state.items()] == [(k, s) for k, s, _ in rows]


def test_round_trip_load_is_exact(tmp_path: Path, model_state: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(1)
    saved = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model_state.items()}
    path = tmp_path / "ckpt.pt"
    torch.save(saved, path)
    model = sam_model_registry["repvit"](checkpoint=path)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not model.training


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_wrapped_state_dict_is_unwrapped(
    tmp_path: Path, model_state: dict[str, torch.Tensor], wrapper: str
) -> None:
    path = tmp_path / "wrapped.pt"
    torch.save({wrapper: model_state, "epoch": 3}, path)
    result = load_checkpoint(build_repvit_sam(), path)
    assert result == {"missing": [], "unexpected": []}


def test_missing_key_is_named(tmp_path: Path, model_state: dict[str, torch.Tensor]) -> None:
    state = dict(model_state)
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "missing.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 missing keys: mask_decoder\.iou_token\.weight"):
        load_checkpoint(build_repvit_sam(), path)


def test_unexpected_key_is_named(tmp_path: Path, model_state: dict[str, torch.Tensor]) -> None:
    state = dict(model_state)
    state["image_encoder.head.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys: image_encoder\.head\.weight"):
        load_checkpoint(build_repvit_sam(), path)


def test_non_strict_reports_instead_of_raising(
    tmp_path: Path, model_state: dict[str, torch.Tensor]
) -> None:
    state = dict(model_state)
    del state["prompt_encoder.no_mask_embed.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "loose.pt"
    torch.save(state, path)
    result = load_checkpoint(build_repvit_sam(), path, strict=False)
    assert result == {
        "missing": ["prompt_encoder.no_mask_embed.weight"],
        "unexpected": ["extra.weight"],
    }


def test_mis_shaped_key_is_named(tmp_path: Path, model_state: dict[str, torch.Tensor]) -> None:
    state = dict(model_state)
    state["image_encoder.neck.0.weight"] = torch.zeros(256, 320, 1, 1)
    path = tmp_path / "shape.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"image_encoder\.neck\.0\.weight \(256, 320, 1, 1\)"):
        load_checkpoint(build_repvit_sam(), path)


def test_truncated_file(tmp_path: Path, model_state: dict[str, torch.Tensor]) -> None:
    full = tmp_path / "full.pt"
    torch.save(model_state, full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(build_repvit_sam(), cut)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(b"not a checkpoint at all", "truncated or corrupt"), (None, "expected a state_dict")],
)
def test_wrong_type(tmp_path: Path, payload: bytes | None, expected: str) -> None:
    path = tmp_path / "bad.pt"
    if payload is None:
        torch.save([torch.zeros(2)], path)
    else:
        path.write_bytes(payload)
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(build_repvit_sam(), path)


class _Pickled:
    """A Python object saved beside the weights (e.g. a whole training module)."""


def test_pickled_objects_are_refused_without_advising_unsafe_loading(
    tmp_path: Path, model_state: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "whole.pt"
    torch.save({**model_state, "extra": _Pickled()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects") as info:
        load_checkpoint(build_repvit_sam(), path)
    message = str(info.value)
    assert "\n" not in message and "weights_only=False" not in message
    assert "state_dict()" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="file not found"):
        build_repvit_sam(tmp_path / "absent.pt")


def test_sha256_is_checked(tmp_path: Path, model_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(model_state, path)
    digest = sha256_of(path)
    load_checkpoint(build_repvit_sam(), path, expected_sha256=digest.upper())
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(build_repvit_sam(), path, expected_sha256="0" * 64)


def test_cuda_tensors_not_needed_to_load(tmp_path: Path, model_state: dict[str, torch.Tensor]) -> None:
    """The loader maps to CPU, so a checkpoint loads on a machine without CUDA."""
    path = tmp_path / "ckpt.pt"
    torch.save(model_state, path)
    model = build_repvit_sam(path, device="cpu")
    assert model.device.type == "cpu"
