"""Conformance of the seed systems ``vit_t`` (MobileSAM TinyViT) and ``vit_b`` (SAM ViT-B).

As for RepViT-SAM: the "conformance fill v1" checkpoint is built from the model's ``keys.tsv``,
saved with ``torch.save`` (the official file format) and loaded strictly through
``sam_model_registry``; the golden image embedding and ``box_single`` case of
``../shared/conformance/<model>/`` are then replayed through ``SamPredictor``. Unlike RepViT,
these encoders do not amplify float32 rounding: both land near 1e-6 of the golden, so the
README's tolerances apply unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from repvit_sam import SamPredictor, sam_model_registry
from tests.repvit_sam.conformance_fill import read_keys_tsv, write_conformance_checkpoint

MODELS = ["vit_t", "vit_b"]
EMBED_TOL = 1e-4
LOGIT_TOL = 1e-3
MASK_AGREEMENT_MIN = 0.999


def rel_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.fixture(scope="module")
def image(conformance_dir: Path) -> np.ndarray:
    bgr = cv2.imread(str(conformance_dir / "picture1.jpg"))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def model_dir(conformance_dir: Path, name: str) -> Path:
    path = conformance_dir / name
    if not (path / "golden.npz").is_file():
        pytest.skip(f"{name} conformance vectors not found in {path}")
    return path


def load_golden(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "golden.npz") as data:
        return {k: data[k] for k in data.files}


def build_predictor(checkpoint: Path, name: str, image: np.ndarray) -> SamPredictor:
    predictor = SamPredictor(sam_model_registry[name](checkpoint=checkpoint))
    predictor.set_image(image)
    return predictor


@pytest.fixture(scope="module", params=MODELS)
def seed_case(
    request: pytest.FixtureRequest,
    conformance_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    image: np.ndarray,
) -> tuple[str, SamPredictor, dict[str, np.ndarray], dict]:
    """(name, predictor with the image set, golden arrays, prompts) for one seed model."""
    name = request.param
    folder = model_dir(conformance_dir, name)
    checkpoint = write_conformance_checkpoint(
        folder / "keys.tsv", tmp_path_factory.mktemp(name) / f"{name}_conformance.pt"
    )
    try:
        predictor = build_predictor(checkpoint, name, image)
    finally:
        checkpoint.unlink()  # the ViT-B file is ~360 MB
    prompts = json.loads((folder / "prompts.json").read_text())
    return name, predictor, load_golden(folder), prompts


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_matches_key_manifest(conformance_dir: Path, name: str) -> None:
    """Keys, order, shapes and dtypes are exactly the official checkpoint's."""
    expected = read_keys_tsv(model_dir(conformance_dir, name) / "keys.tsv")
    state = sam_model_registry[name]().state_dict()
    actual = [
        (key, tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in state.items()
    ]
    assert len(actual) == len(expected)
    mismatches = [(a, e) for a, e in zip(actual, expected, strict=True) if a != e]
    assert not mismatches, mismatches[:5]


def test_image_embedding_matches_golden(seed_case: tuple) -> None:
    name, predictor, golden, _ = seed_case
    embedding = predictor.get_image_embedding().numpy()
    expected = golden["image_embedding"]
    assert embedding.shape == expected.shape == (1, 256, 64, 64)
    error = rel_l2(embedding, expected)
    assert error < EMBED_TOL, f"{name}: embedding rel L2 {error:.3g}"


def test_box_single_matches_golden(seed_case: tuple, image: np.ndarray) -> None:
    name, predictor, golden, prompts = seed_case
    spec = prompts["box_single"]
    masks, iou, low_res = predictor.predict(
        box=np.array(spec["box"]), multimask_output=spec["multimask_output"]
    )
    width = image.shape[1]
    expected_masks = np.unpackbits(golden["box_single_masks_packed"], axis=-1)[..., :width]
    assert masks.shape == expected_masks.shape
    assert masks.dtype == bool
    logits_error = rel_l2(low_res, golden["box_single_low_res_logits"])
    iou_error = rel_l2(iou, golden["box_single_iou_predictions"])
    agreement = float((masks == expected_masks.astype(bool)).mean())
    assert logits_error < LOGIT_TOL, f"{name}: low-res logits rel L2 {logits_error:.3g}"
    assert iou_error < LOGIT_TOL, f"{name}: iou rel L2 {iou_error:.3g}"
    assert agreement >= MASK_AGREEMENT_MIN, f"{name}: mask agreement {agreement:.5f}"


def test_one_perturbed_tinyvit_weight_is_caught(
    conformance_dir: Path, tmp_path: Path, image: np.ndarray
) -> None:
    """The comparison is sharp: a 1% change of one depthwise kernel breaks it (vit_t, ~4e-3)."""
    folder = model_dir(conformance_dir, "vit_t")
    path = write_conformance_checkpoint(folder / "keys.tsv", tmp_path / "vit_t.pt")
    state = torch.load(path, weights_only=True)
    key = "image_encoder.layers.3.blocks.1.local_conv.c.weight"
    state[key] = state[key] * 1.01
    torch.save(state, path)
    predictor = build_predictor(path, "vit_t", image)
    embedding = predictor.get_image_embedding().numpy()
    assert rel_l2(embedding, load_golden(folder)["image_embedding"]) > EMBED_TOL
