"""Geometry that turns an object's previous mask into decoder prompts.

Pure numpy/OpenCV functions with no tracker state, so each can be checked on tiny arrays.
Boxes are XYXY in pixels with exclusive right/bottom edges: a single pixel at (x, y) has the
box (x, y, x + 1, y + 1).
"""

from __future__ import annotations

import cv2
import numpy as np


def mask_to_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight box of a mask.

    Args:
        mask: (H, W) bool.

    Returns:
        (4,) float32 XYXY (exclusive right/bottom), or None for an empty mask.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def clip_box(box_xyxy: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Clip a (4,) XYXY box to the frame, keeping it at least one pixel wide and high."""
    h, w = image_hw
    x0 = float(np.clip(box_xyxy[0], 0, w - 1))
    y0 = float(np.clip(box_xyxy[1], 0, h - 1))
    x1 = float(np.clip(box_xyxy[2], x0 + 1, w))
    y1 = float(np.clip(box_xyxy[3], y0 + 1, h))
    return np.array([x0, y0, x1, y1], np.float32)


def expand_box(box_xyxy: np.ndarray, margin: float, image_hw: tuple[int, int]) -> np.ndarray:
    """Grow a box by ``margin`` x its width/height on every side, clipped to the frame.

    Args:
        box_xyxy: (4,) XYXY in pixels.
        margin: fraction of the box size added on each side (0 keeps the box).
        image_hw: (H, W) of the frame.
    """
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    return clip_box(np.array([x0 - dx, y0 - dy, x1 + dx, y1 + dy], np.float32), image_hw)


def jitter_box(
    box_xyxy: np.ndarray, std: float, rng: np.random.Generator, image_hw: tuple[int, int]
) -> np.ndarray:
    """Move each box edge by a normal offset of ``std`` x the box size (0 = unchanged)."""
    if std <= 0:
        return clip_box(box_xyxy, image_hw)
    w, h = box_xyxy[2] - box_xyxy[0], box_xyxy[3] - box_xyxy[1]
    noise = rng.normal(0.0, std, 4) * np.array([w, h, w, h])
    return clip_box(box_xyxy + noise.astype(np.float32), image_hw)


def _spread_maxima(score: np.ndarray, k: int, min_spacing: float) -> np.ndarray:
    """Greedy pick of up to k argmax points of ``score``, each suppressing a disc around it."""
    score = score.astype(np.float32).copy()
    h, w = score.shape
    yy, xx = np.mgrid[0:h, 0:w]
    picked = []
    for _ in range(k):
        flat = int(np.argmax(score))
        if score.flat[flat] <= 0:
            break
        y, x = divmod(flat, w)
        picked.append((x, y))
        # Scale instead of zeroing so later points prefer far-apart, still-deep pixels.
        dist = np.sqrt((xx - x) ** 2 + (yy - y) ** 2)
        score *= np.clip(dist / max(min_spacing, 1.0), 0.0, 1.0)
    return np.array(picked, np.float32).reshape(-1, 2)


def interior_points(mask: np.ndarray, k: int, box_xyxy: np.ndarray | None = None) -> np.ndarray:
    """Up to k positive points deep inside a mask.

    The first point is the maximum of the distance transform (the pixel farthest from the
    boundary, which survives small motions best); the next ones are the deepest pixels away
    from the points already chosen, which spreads them over elongated or split objects the
    way SAM-PT's K-Medoids points are spread, without its randomness.

    Args:
        mask: (H, W) bool.
        k: number of points wanted.
        box_xyxy: (4,) the mask's tight box, when known (spares a scan of the whole frame).

    Returns:
        (P, 2) float32 XY pixel centres, P <= k (P = 0 for an empty mask).
    """
    if k <= 0:
        return np.zeros((0, 2), np.float32)
    box = mask_to_box(mask) if box_xyxy is None else box_xyxy
    if box is None:
        return np.zeros((0, 2), np.float32)
    x0, y0, x1, y1 = (int(v) for v in box)
    if not mask[y0:y1, x0:x1].any():
        return np.zeros((0, 2), np.float32)
    crop = np.pad(mask[y0:y1, x0:x1], 1).astype(np.uint8)
    dist = cv2.distanceTransform(crop, cv2.DIST_L2, 5)[1:-1, 1:-1]
    spacing = 0.5 * float(np.sqrt(mask.sum()))
    points = _spread_maxima(dist, k, spacing)
    return points + np.array([x0 + 0.5, y0 + 0.5], np.float32)


def background_points(mask: np.ndarray, region_xyxy: np.ndarray, k: int) -> np.ndarray:
    """Up to k negative points inside ``region_xyxy`` and outside the mask, far from it.

    Args:
        mask: (H, W) bool, the object's mask.
        region_xyxy: (4,) XYXY pixels, where negatives are looked for (e.g. the expanded box).
        k: number of points wanted.

    Returns:
        (P, 2) float32 XY pixel centres, P <= k.
    """
    if k <= 0:
        return np.zeros((0, 2), np.float32)
    h, w = mask.shape
    x0, y0 = max(int(region_xyxy[0]), 0), max(int(region_xyxy[1]), 0)
    x1, y1 = min(int(np.ceil(region_xyxy[2])), w), min(int(np.ceil(region_xyxy[3])), h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 2), np.float32)
    outside = (~mask[y0:y1, x0:x1]).astype(np.uint8)
    if not outside.any():
        return np.zeros((0, 2), np.float32)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
    points = _spread_maxima(dist, k, 0.25 * float(np.hypot(x1 - x0, y1 - y0)))
    return points + np.array([x0 + 0.5, y0 + 0.5], np.float32)


def pad_points(
    points_per_object: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-object point sets of different lengths for one batched decoder call.

    Args:
        points_per_object: per object, ((P_i, 2) float32 XY pixels, (P_i,) int labels).

    Returns:
        (N, P, 2) float32 points and (N, P) int64 labels, padded with label -1, which SAM's
        prompt encoder treats as "not a point".
    """
    n = len(points_per_object)
    p = max((len(pts) for pts, _ in points_per_object), default=0)
    p = max(p, 1)
    coords = np.zeros((n, p, 2), np.float32)
    labels = np.full((n, p), -1, np.int64)
    for i, (pts, lab) in enumerate(points_per_object):
        coords[i, : len(pts)] = pts
        labels[i, : len(lab)] = lab
    return coords, labels


def mask_area(mask: np.ndarray) -> int:
    """Number of foreground pixels of a (H, W) bool mask."""
    return int(np.count_nonzero(mask))
