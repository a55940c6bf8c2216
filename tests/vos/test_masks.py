"""Crop masks give exactly what the full-frame functions of vos.matching give."""

from __future__ import annotations

import numpy as np

from repvit_sam.mask_upscale import CropMask
from vos.masks import area, crop_of, exclusive, pairwise_iou, shift, tight
from vos.matching import exclusive_masks, mask_iou
from vos.motion import shift_mask

HW = (40, 60)


def _random_masks(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Blobs of random size and place, some overlapping, one empty."""
    masks = []
    for k in range(count):
        mask = np.zeros(HW, bool)
        if k != 2:
            y0, x0 = rng.integers(0, HW[0] - 5), rng.integers(0, HW[1] - 5)
            h, w = rng.integers(2, 15), rng.integers(2, 20)
            mask[y0 : y0 + h, x0 : x0 + w] = rng.random((min(h, HW[0] - y0), min(w, HW[1] - x0))) < 0.8
        masks.append(mask)
    return masks


def _crops(masks: list[np.ndarray]) -> list[CropMask | None]:
    return [tight(crop_of(m, (0, 0, HW[1], HW[0]))) for m in masks]


def test_iou_and_areas_equal_the_full_frame_ones() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = _random_masks(rng, 6), _random_masks(rng, 5)
        expected = mask_iou(np.stack(a), np.stack(b))
        assert np.array_equal(pairwise_iou(_crops(a), _crops(b)), expected)
        assert [area(c) for c in _crops(a)] == [int(m.sum()) for m in a]


def test_exclusive_equals_the_full_frame_rule() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        masks = _random_masks(rng, 7)
        order = list(rng.permutation(7))
        expected = exclusive_masks(masks, order)
        got = exclusive(_crops(masks), order)
        for e, g in zip(expected, got, strict=True):
            assert np.array_equal(e, g.full(HW) if g is not None else np.zeros(HW, bool))


def test_shift_equals_the_full_frame_shift() -> None:
    rng = np.random.default_rng(2)
    for mask in _random_masks(rng, 8):
        for dx, dy in ((0.0, 0.0), (3.4, -2.6), (-70.0, 0.0), (12.0, 30.0)):
            expected = shift_mask(mask, dx, dy)
            got = shift(tight(crop_of(mask, (0, 0, HW[1], HW[0]))), dx, dy, HW)
            assert np.array_equal(got.full(HW) if got is not None else np.zeros(HW, bool),
                                  expected)


def test_tight_and_crop_of_edges() -> None:
    mask = np.zeros(HW, bool)
    assert tight(crop_of(mask, (0, 0, 60, 40))) is None
    assert crop_of(mask, (10, 10, 10, 20)) is None
    mask[5:7, 58:60] = True
    found = tight(crop_of(mask, (50.5, 0, 70, 40)))
    assert found is not None and found.box_xyxy == (58, 5, 60, 7)
