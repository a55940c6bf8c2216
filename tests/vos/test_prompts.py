"""Prompt geometry on tiny masks."""

from __future__ import annotations

import numpy as np
import pytest

from vos.prompts import (
    background_points,
    clip_box,
    expand_box,
    interior_points,
    jitter_box,
    mask_to_box,
    pad_points,
)


def test_mask_to_box_is_tight_with_exclusive_edges() -> None:
    mask = np.zeros((6, 8), bool)
    mask[2:4, 3:7] = True
    np.testing.assert_array_equal(mask_to_box(mask), [3, 2, 7, 4])
    single = np.zeros((4, 4), bool)
    single[1, 2] = True
    np.testing.assert_array_equal(mask_to_box(single), [2, 1, 3, 2])
    assert mask_to_box(np.zeros((4, 4), bool)) is None


@pytest.mark.parametrize(
    ("box", "margin", "expected"),
    [
        ([2, 2, 6, 6], 0.0, [2, 2, 6, 6]),
        ([2, 2, 6, 6], 0.25, [1, 1, 7, 7]),
        ([0, 0, 4, 4], 0.5, [0, 0, 6, 6]),  # clipped at the frame's top-left
        ([6, 6, 10, 10], 1.0, [2, 2, 10, 10]),  # clipped at the bottom-right (10x10 frame)
    ],
)
def test_expand_box_table(box: list, margin: float, expected: list) -> None:
    np.testing.assert_allclose(expand_box(np.array(box, np.float32), margin, (10, 10)), expected)


def test_clip_box_keeps_one_pixel() -> None:
    np.testing.assert_allclose(clip_box(np.array([12, 3, 14, 3]), (10, 10)), [9, 3, 10, 4])


def test_jitter_is_off_at_zero_and_bounded_otherwise() -> None:
    box = np.array([10, 10, 30, 40], np.float32)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(jitter_box(box, 0.0, rng, (100, 100)), box)
    moved = jitter_box(box, 0.1, rng, (100, 100))
    assert not np.array_equal(moved, box)
    assert np.abs(moved - box).max() < 20


def test_interior_points_are_inside_and_spread() -> None:
    mask = np.zeros((20, 40), bool)
    mask[5:15, 2:38] = True  # long bar
    pts = interior_points(mask, 3)
    assert pts.shape == (3, 2)
    for x, y in pts:
        assert mask[int(y), int(x)]
    # The first point is the deepest pixel: on the bar's middle row.
    assert 9 <= pts[0, 1] <= 11
    assert np.ptp(pts[:, 0]) > 10, "points spread along the bar"
    assert interior_points(np.zeros((4, 4), bool), 2).shape == (0, 2)
    tiny = np.zeros((4, 4), bool)
    tiny[1, 1] = True
    assert interior_points(tiny, 5).shape == (1, 2)


def test_background_points_are_outside_the_mask_and_inside_the_region() -> None:
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    pts = background_points(mask, np.array([2, 2, 18, 18]), 2)
    assert len(pts) == 2
    for x, y in pts:
        assert not mask[int(y), int(x)]
        assert 2 <= x < 18 and 2 <= y < 18
    full = np.ones((6, 6), bool)
    assert background_points(full, np.array([0, 0, 6, 6]), 3).shape == (0, 2)


def test_pad_points_uses_label_minus_one() -> None:
    coords, labels = pad_points(
        [(np.array([[1.0, 2.0]]), np.array([1])), (np.zeros((0, 2)), np.zeros(0))]
    )
    assert coords.shape == (2, 1, 2)
    assert labels.tolist() == [[1], [-1]]
