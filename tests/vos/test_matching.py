"""Pure geometry of identity keeping, on tiny hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from vos.matching import box_iou, linear_assignment, mask_iou


def test_mask_iou_by_hand() -> None:
    a = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True  # 4 px
    a[1, :, :] = True  # 16 px
    b = np.zeros((3, 4, 4), bool)
    b[0, :2, :] = True  # 8 px, contains a[0]
    b[2, 3, 3] = True  # 1 px
    iou = mask_iou(a, b)
    expected = np.array([[4 / 8, 0.0, 0.0], [8 / 16, 0.0, 1 / 16]])
    np.testing.assert_allclose(iou, expected)


def test_mask_iou_empty_inputs_and_size_mismatch() -> None:
    assert mask_iou(np.zeros((0, 4, 4), bool), np.zeros((2, 4, 4), bool)).shape == (0, 2)
    assert mask_iou(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool))[0, 0] == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        mask_iou(np.zeros((1, 4, 4), bool), np.zeros((1, 5, 4), bool))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 2, 2], [0, 0, 2, 2], 1.0),
        ([0, 0, 2, 2], [1, 0, 3, 2], 2 / 6),
        ([0, 0, 2, 2], [2, 2, 4, 4], 0.0),
        ([0, 0, 0, 2], [0, 0, 0, 2], 0.0),  # degenerate
    ],
)
def test_box_iou_table(a: list, b: list, expected: float) -> None:
    assert box_iou(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


def test_assignment_equals_scipy_on_random_matrices() -> None:
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (3, 3), (4, 6), (7, 2), (10, 10)]:
        cost = rng.random((n, m))
        before = cost.copy()
        result = linear_assignment(cost, max_cost=10.0)
        assert np.array_equal(cost, before), "the input must not be mutated"
        rows, cols = linear_sum_assignment(cost)
        assert cost[result.matches[:, 0], result.matches[:, 1]].sum() == pytest.approx(
            cost[rows, cols].sum()
        )
        assert len(result.matches) == min(n, m)


def test_assignment_gate_leaves_expensive_pairs_unmatched() -> None:
    cost = np.array([[0.1, 0.9], [0.95, 0.97], [0.9, 0.2]])
    result = linear_assignment(cost, max_cost=0.5)
    assert sorted(map(tuple, result.matches.tolist())) == [(0, 0), (2, 1)]
    assert result.unmatched_rows.tolist() == [1]
    assert result.unmatched_cols.tolist() == []


def test_assignment_prefers_global_optimum_over_greedy() -> None:
    # Greedy would take (0, 0) at cost 0.1 and leave row 1 with 0.9; optimal crosses over.
    cost = np.array([[0.1, 0.2], [0.3, 0.9]])
    result = linear_assignment(cost, max_cost=1.0)
    assert sorted(map(tuple, result.matches.tolist())) == [(0, 1), (1, 0)]


def test_assignment_empty() -> None:
    result = linear_assignment(np.zeros((0, 3)), max_cost=0.5)
    assert result.matches.shape == (0, 2)
    assert result.unmatched_cols.tolist() == [0, 1, 2]


def test_exclusive_masks_follow_priority_and_do_not_mutate() -> None:
    from vos.matching import exclusive_masks

    a = np.zeros((2, 4), bool)
    a[:, :3] = True
    b = np.zeros((2, 4), bool)
    b[:, 1:] = True
    before = (a.copy(), b.copy())
    first_b = exclusive_masks([a, b], [1, 0])
    assert first_b[1].tolist() == b.tolist()
    assert first_b[0].tolist() == (a & ~b).tolist()
    first_a = exclusive_masks([a, b], [0, 1])
    assert first_a[0].tolist() == a.tolist() and not (first_a[0] & first_a[1]).any()
    assert np.array_equal(a, before[0]) and np.array_equal(b, before[1])
