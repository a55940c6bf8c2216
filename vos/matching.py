"""IoU matrices and gated linear assignment for keeping object identities.

Why Hungarian and not greedy: the tracker matches only a handful of objects per frame, so an
optimal assignment costs microseconds, and greedy matching is exactly what swaps identities
when two similar objects cross (the greedy pick for the first row can steal the second row's
only good match). We solve the gated problem with LAPJV (``lap.lapjv`` with ``extend_cost``
and ``cost_limit``, as ByteTrack does), which leaves a row unmatched instead of accepting a
pair whose cost exceeds the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import lap
import numpy as np


@dataclass(frozen=True)
class Assignment:
    """Result of a gated assignment.

    Attributes:
        matches: (K, 2) int64 pairs (row, col).
        unmatched_rows: (R,) int64 rows without a partner.
        unmatched_cols: (C,) int64 columns without a partner.
    """

    matches: np.ndarray
    unmatched_rows: np.ndarray
    unmatched_cols: np.ndarray


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two stacks of masks.

    Args:
        a: (N, H, W) bool.
        b: (M, H, W) bool.

    Returns:
        (N, M) float64 IoU; a pair of two empty masks has IoU 0.
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask_iou: masks differ in size, {a.shape[1:]} vs {b.shape[1:]}")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of XYXY boxes.

    Args:
        a: (N, 4) XYXY.
        b: (M, 4) XYXY.

    Returns:
        (N, M) float64 IoU; degenerate boxes have IoU 0.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def linear_assignment(cost: np.ndarray, max_cost: float) -> Assignment:
    """Minimum-cost one-to-one assignment, refusing pairs that cost more than ``max_cost``.

    Args:
        cost: (N, M) float cost matrix (not modified).
        max_cost: pairs with a cost above this stay unmatched (lower = stricter).

    Returns:
        The matched pairs and the unmatched rows and columns.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost: expected a 2-D matrix, got shape {cost.shape}")
    n, m = cost.shape
    if n == 0 or m == 0:
        return Assignment(
            matches=np.zeros((0, 2), np.int64),
            unmatched_rows=np.arange(n, dtype=np.int64),
            unmatched_cols=np.arange(m, dtype=np.int64),
        )
    # lapjv works on its own copy; gate with cost_limit so over-limit pairs stay unmatched.
    _, row_to_col, col_to_row = lap.lapjv(cost.copy(), extend_cost=True, cost_limit=max_cost)
    matches = np.array([(r, c) for r, c in enumerate(row_to_col) if c >= 0], np.int64)
    matches = matches.reshape(-1, 2)
    return Assignment(
        matches=matches,
        unmatched_rows=np.flatnonzero(row_to_col < 0).astype(np.int64),
        unmatched_cols=np.flatnonzero(col_to_row < 0).astype(np.int64),
    )


def exclusive_masks(masks: list[np.ndarray], priority: list[int]) -> list[np.ndarray]:
    """Give every pixel claimed by several masks to the one that comes first in ``priority``.

    Args:
        masks: N (H, W) bool masks (not modified).
        priority: a permutation of range(N), most important first.

    Returns:
        N (H, W) bool masks, pairwise disjoint; each is its input minus the pixels of the
        masks ranked before it.
    """
    out = list(masks)
    if len(masks) < 2:
        return out
    claimed = np.zeros_like(masks[0])
    for i in priority:
        out[i] = masks[i] & ~claimed
        claimed |= masks[i]
    return out
