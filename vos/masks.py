"""Masks as crops: IoU, shifts and overlap resolution in time proportional to the objects.

A :class:`~repvit_sam.mask_upscale.CropMask` is a bool array and its origin in the frame; the
frame is False outside it. The tracker's per-object work goes through these functions, so
that an object costs in proportion to its own size, and a pair of objects costs nothing when
their boxes do not meet: with 254 objects on a 854x480 frame, full-frame masks would make
every IoU matrix and overlap pass touch 254 x 410k pixels.

Results equal the full-frame functions of :mod:`vos.matching` exactly (the same float32
arithmetic for IoU), which the tests check on random masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repvit_sam.mask_upscale import CropMask

Crop = CropMask | None


def crop_of(mask: np.ndarray, box_xyxy: np.ndarray | Sequence[float]) -> Crop:
    """A full (H, W) bool mask as its crop inside ``box_xyxy`` (whose outside is False).

    Args:
        mask: (H, W) bool.
        box_xyxy: (4,) box holding every True pixel (e.g. the mask's tight box).
    """
    h, w = mask.shape
    x0, y0 = max(0, int(np.floor(box_xyxy[0]))), max(0, int(np.floor(box_xyxy[1])))
    x1, y1 = min(w, int(np.ceil(box_xyxy[2]))), min(h, int(np.ceil(box_xyxy[3])))
    if x1 <= x0 or y1 <= y0:
        return None
    return CropMask(x0, y0, mask[y0:y1, x0:x1])


def tight(crop: Crop) -> Crop:
    """The same mask cut to its True pixels; None when it has none."""
    if crop is None:
        return None
    rows = np.flatnonzero(crop.crop.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(crop.crop.any(axis=0))
    return CropMask(crop.x0 + int(cols[0]), crop.y0 + int(rows[0]),
                    crop.crop[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def area(crop: Crop) -> int:
    """Number of True pixels."""
    return 0 if crop is None else int(np.count_nonzero(crop.crop))


def shift(crop: Crop, dx: float, dy: float, image_hw: tuple[int, int]) -> Crop:
    """Translate by whole pixels (rounded), dropping what leaves the frame."""
    if crop is None:
        return None
    ix, iy = round(dx), round(dy)
    x0, y0 = crop.x0 + ix, crop.y0 + iy
    h, w = image_hw
    ch, cw = crop.crop.shape
    cx0, cy0 = max(0, -x0), max(0, -y0)
    cx1, cy1 = min(cw, w - x0), min(ch, h - y0)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    return CropMask(x0 + cx0, y0 + cy0, crop.crop[cy0:cy1, cx0:cx1])


def _overlap(a: CropMask, b: CropMask) -> tuple[np.ndarray, np.ndarray] | None:
    """The two crops' views of the pixels both boxes cover, or None."""
    ax0, ay0, ax1, ay1 = a.box_xyxy
    bx0, by0, bx1, by1 = b.box_xyxy
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x1 <= x0 or y1 <= y0:
        return None
    return (a.crop[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0],
            b.crop[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0])


def intersection(a: Crop, b: Crop) -> int:
    """Pixels True in both."""
    if a is None or b is None:
        return 0
    views = _overlap(a, b)
    return 0 if views is None else int(np.count_nonzero(views[0] & views[1]))


def pairwise_iou(a: Sequence[Crop], b: Sequence[Crop]) -> np.ndarray:
    """(N, M) float64 IoU of two lists of crops, as ``vos.matching.mask_iou`` on full masks.

    Only pairs whose boxes meet are looked at; the division runs in float32 as there, so
    ties break the same way.
    """
    areas_a = np.array([area(x) for x in a], np.float32)
    areas_b = np.array([area(x) for x in b], np.float32)
    inter = np.zeros((len(a), len(b)), np.float32)
    boxes_a = _boxes(a)
    boxes_b = _boxes(b)
    meet = ((boxes_a[:, None, 0] < boxes_b[None, :, 2]) & (boxes_b[None, :, 0] < boxes_a[:, None, 2])
            & (boxes_a[:, None, 1] < boxes_b[None, :, 3]) & (boxes_b[None, :, 1] < boxes_a[:, None, 3]))
    for i, j in zip(*np.nonzero(meet), strict=True):
        inter[i, j] = intersection(a[i], b[j])
    union = areas_a[:, None] + areas_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float64)


def _boxes(crops: Sequence[Crop]) -> np.ndarray:
    """(N, 4) int64 crop extents; an empty crop gets a box that meets nothing."""
    return np.array([c.box_xyxy if c is not None else (0, 0, 0, 0) for c in crops],
                    np.int64).reshape(-1, 4)


def exclusive(crops: Sequence[Crop], priority: Sequence[int]) -> list[Crop]:
    """Give every pixel claimed by several masks to the first in ``priority``.

    As ``vos.matching.exclusive_masks``: each result is its input minus the pixels of the
    masks ranked before it; a mask is copied only when it loses pixels.
    """
    out = list(crops)
    boxes = _boxes(crops)
    rank = np.empty(len(crops), np.int64)
    rank[np.asarray(priority, np.int64)] = np.arange(len(crops))
    meet = ((boxes[:, None, 0] < boxes[None, :, 2]) & (boxes[None, :, 0] < boxes[:, None, 2])
            & (boxes[:, None, 1] < boxes[None, :, 3]) & (boxes[None, :, 1] < boxes[:, None, 3]))
    for i in range(len(crops)):
        mine = crops[i]
        if mine is None:
            continue
        before = [j for j in np.flatnonzero(meet[i]) if rank[j] < rank[i] and crops[j] is not None]
        if not before:
            continue
        kept = mine.crop.copy()
        for j in before:
            other = crops[j]
            views = _overlap(CropMask(mine.x0, mine.y0, kept), other)  # type: ignore[arg-type]
            if views is not None:
                views[0][views[1]] = False
        out[i] = CropMask(mine.x0, mine.y0, kept)
    return out
