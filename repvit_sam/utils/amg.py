"""Helpers for the automatic mask generator: grids, crops, scores, boxes, RLE and NMS.

Everything here is a pure function of its inputs (plus the small ``MaskData`` container), so
each piece can be tested on a few pixels. Conventions, kept from segment-anything so outputs
are interchangeable with SAM's:

- boxes are XYXY with an *inclusive* right/bottom edge: a mask that covers only column 3 has
  ``x0 == x1 == 3``;
- uncompressed RLE is ``{"size": [H, W], "counts": [...]}`` over the column-major (Fortran
  order) flattening, starting with a run of zeros (possibly of length 0), as in COCO.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any

import numpy as np
import torch

MaskRLE = dict[str, Any]


class MaskData:
    """Named per-mask fields that are filtered and concatenated together.

    Each field is a ``torch.Tensor``, ``np.ndarray`` or ``list`` whose first dimension (or
    length) indexes masks; every field must have the same length.

    Args:
        **kwargs: the initial fields, by name.
    """

    def __init__(self, **kwargs: Any) -> None:
        for name, value in kwargs.items():
            _check_field(name, value)
        self._stats: dict[str, Any] = dict(kwargs)

    def __setitem__(self, key: str, value: Any) -> None:
        _check_field(key, value)
        self._stats[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._stats[key]

    def __delitem__(self, key: str) -> None:
        del self._stats[key]

    def __contains__(self, key: object) -> bool:
        return key in self._stats

    def __len__(self) -> int:
        for value in self._stats.values():
            return len(value)
        return 0

    def keys(self) -> list[str]:
        """Names of the fields."""
        return list(self._stats)

    def items(self) -> list[tuple[str, Any]]:
        """(name, value) pairs of the fields."""
        return list(self._stats.items())

    def filter(self, keep: torch.Tensor | np.ndarray) -> None:
        """Keep a subset of masks in every field, in place.

        Args:
            keep: (N,) bool mask or (K,) int64 indices (order is respected).
        """
        if isinstance(keep, torch.Tensor):
            keep_np = keep.detach().cpu().numpy()
        else:
            keep_np = np.asarray(keep)
        if keep_np.dtype == np.bool_:
            keep_np = np.flatnonzero(keep_np)
        keep_np = keep_np.astype(np.int64, copy=False)
        for name, value in self._stats.items():
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                self._stats[name] = value[torch.as_tensor(keep_np, device=value.device)]
            elif isinstance(value, np.ndarray):
                self._stats[name] = value[keep_np]
            else:
                self._stats[name] = [value[i] for i in keep_np]

    def cat(self, new_stats: MaskData) -> None:
        """Append another container's masks, field by field, in place."""
        for name, value in new_stats.items():
            if name not in self._stats or self._stats[name] is None:
                self._stats[name] = _copy_field(value)
            elif isinstance(value, torch.Tensor):
                self._stats[name] = torch.cat([self._stats[name], value], dim=0)
            elif isinstance(value, np.ndarray):
                self._stats[name] = np.concatenate([self._stats[name], value], axis=0)
            else:
                self._stats[name] = self._stats[name] + list(value)

    def to_numpy(self) -> None:
        """Move every tensor field to a CPU numpy array, in place."""
        for name, value in self._stats.items():
            if isinstance(value, torch.Tensor):
                if value.dtype in (torch.float16, torch.bfloat16):
                    value = value.float()  # numpy has no bfloat16
                self._stats[name] = value.detach().cpu().numpy()


def _check_field(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, list | np.ndarray | torch.Tensor):
        raise TypeError(
            f"MaskData field {name!r}: expected list, np.ndarray or torch.Tensor, "
            f"got {type(value).__name__}"
        )


def _copy_field(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    return list(value)


# --------------------------------------------------------------------------- point grids


def build_point_grid(n_per_side: int) -> np.ndarray:
    """An evenly spaced n x n grid of points at cell centres of the unit square.

    Args:
        n_per_side: points along each side (>= 1).

    Returns:
        (n_per_side**2, 2) float64 XY in [0, 1]; x varies fastest (row-major over y).
    """
    if n_per_side < 1:
        raise ValueError(f"n_per_side: expected >= 1, got {n_per_side}")
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1.0 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[np.ndarray]:
    """One point grid per crop layer; layer i has ``int(n_per_side / scale_per_layer**i)``.

    Args:
        n_per_side: points per side on the full image (layer 0).
        n_layers: number of crop layers after layer 0.
        scale_per_layer: how much fewer points per side each deeper layer samples.

    Returns:
        ``n_layers + 1`` arrays of shape (n_i**2, 2) float64, XY in [0, 1] of the crop.
    """
    return [
        build_point_grid(int(n_per_side / (scale_per_layer**layer)))
        for layer in range(n_layers + 1)
    ]


# --------------------------------------------------------------------------- crops


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes for every layer: the full image, then 2x2, 4x4, ... overlapping crops.

    Layer i (1-based) has ``2**i`` crops per side; neighbouring crops overlap by
    ``int(overlap_ratio * short_side * 2 / 2**i)`` pixels.

    Args:
        im_size: (H, W) of the image.
        n_layers: number of crop layers after the full image.
        overlap_ratio: overlap as a fraction of the short side at layer 1.

    Returns:
        crop boxes, each [x0, y0, x1, y1] int XYXY in image pixels (x1, y1 exclusive), and the
        layer index of each box (0 for the full image).
    """
    im_h, im_w = im_size
    crop_boxes: list[list[int]] = [[0, 0, im_w, im_h]]
    layer_idxs: list[int] = [0]
    short_side = min(im_h, im_w)
    for layer in range(1, n_layers + 1):
        n_per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / n_per_side))
        crop_w = math.ceil((overlap * (n_per_side - 1) + im_w) / n_per_side)
        crop_h = math.ceil((overlap * (n_per_side - 1) + im_h) / n_per_side)
        x0s = [int((crop_w - overlap) * i) for i in range(n_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_per_side)]
        # x-major order (all y for the first column, then the next), as SAM enumerates them.
        for x0, y0 in product(x0s, y0s):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(layer)
    return crop_boxes, layer_idxs


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Shift boxes from crop coordinates to image coordinates.

    Args:
        boxes: (..., N, 4) XYXY in crop pixels.
        crop_box: [x0, y0, x1, y1] of the crop in image pixels.

    Returns:
        Boxes of the same shape and dtype, XYXY in image pixels.
    """
    x0, y0 = int(crop_box[0]), int(crop_box[1])
    offset = torch.tensor([x0, y0, x0, y0], device=boxes.device, dtype=boxes.dtype)
    return boxes + offset


def uncrop_points(points: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Shift points from crop coordinates to image coordinates.

    Args:
        points: (..., 2) XY in crop pixels.
        crop_box: [x0, y0, x1, y1] of the crop in image pixels.

    Returns:
        Points of the same shape and dtype, XY in image pixels.
    """
    offset = torch.tensor(
        [int(crop_box[0]), int(crop_box[1])], device=points.device, dtype=points.dtype
    )
    return points + offset


def uncrop_masks(
    masks: torch.Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int
) -> torch.Tensor:
    """Zero-pad crop-sized masks back onto the full image.

    Args:
        masks: (..., h, w) masks of the crop, h = y1 - y0 and w = x1 - x0.
        crop_box: [x0, y0, x1, y1] of the crop in image pixels.
        orig_h: image height.
        orig_w: image width.

    Returns:
        (..., orig_h, orig_w) masks, same dtype; returned as-is when the crop is the image.
    """
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    pad = (x0, orig_w - x1, y0, orig_h - y1)
    return torch.nn.functional.pad(masks, pad, value=0)


def is_box_near_crop_edge(
    boxes: torch.Tensor,
    crop_box: Sequence[int],
    orig_box: Sequence[int],
    atol: float = 20.0,
) -> torch.Tensor:
    """Whether each box touches an edge of its crop that is not also an edge of the image.

    Masks cut by a crop edge are incomplete; SAM drops them and relies on a larger crop (or
    the full image) to produce the whole object.

    Args:
        boxes: (N, 4) XYXY in crop pixels.
        crop_box: [x0, y0, x1, y1] of the crop in image pixels.
        orig_box: [0, 0, W, H] of the image.
        atol: distance in pixels that counts as touching.

    Returns:
        (N,) bool, True for boxes near a crop-only edge.
    """
    crop_t = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    orig_t = torch.as_tensor(orig_box, dtype=torch.float32, device=boxes.device)
    boxes_img = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop = torch.isclose(boxes_img, crop_t[None, :], atol=atol, rtol=0)
    near_image = torch.isclose(boxes_img, orig_t[None, :], atol=atol, rtol=0)
    return torch.any(near_crop & ~near_image, dim=1)


def box_xyxy_to_xywh(box_xyxy: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """(..., 4) XYXY -> (..., 4) XYWH with w = x1 - x0, h = y1 - y0 (a copy, same type)."""
    if isinstance(box_xyxy, torch.Tensor):
        return torch.cat([box_xyxy[..., :2], box_xyxy[..., 2:] - box_xyxy[..., :2]], dim=-1)
    box = np.asarray(box_xyxy)
    return np.concatenate([box[..., :2], box[..., 2:] - box[..., :2]], axis=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) XYXY -> (...) area (x1 - x0) * (y1 - y0)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


# --------------------------------------------------------------------------- batching


def batch_iterator(
    batch_size: int, *args: Sequence[Any] | np.ndarray | torch.Tensor
) -> Iterator[list[Any]]:
    """Yield aligned slices of equally long sequences, ``batch_size`` items at a time.

    Args:
        batch_size: items per batch (>= 1); the last batch may be shorter.
        *args: sequences (lists, arrays, tensors) of the same length.

    Yields:
        One list per batch, holding the slice of each argument in order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if not args:
        return
    n = len(args[0])
    if any(len(a) != n for a in args):
        raise ValueError(f"batch_iterator: arguments differ in length: {[len(a) for a in args]}")
    for start in range(0, n, batch_size):
        yield [a[start : start + batch_size] for a in args]


# --------------------------------------------------------------------------- masks and scores


def calculate_stability_score(
    masks: torch.Tensor, mask_threshold: float, threshold_offset: float
) -> torch.Tensor:
    """IoU between the masks binarised at ``threshold +/- offset``.

    The high-threshold mask is a subset of the low-threshold one, so the IoU is simply
    area(logits > t + o) / area(logits > t - o). A stable mask barely changes when the
    threshold moves, so the score is near 1.

    Args:
        masks: (..., H, W) float mask logits (SAM's parameter name).
        mask_threshold: the binarisation threshold (0.0 for SAM).
        threshold_offset: how far to move it each way (1.0 in SAM's generator).

    Returns:
        (...) float32 score in [0, 1]; 0/0 (an empty low-threshold mask) is NaN, as in SAM,
        so such masks fail any stability filter.
    """
    high = (masks > (mask_threshold + threshold_offset)).flatten(-2)
    low = (masks > (mask_threshold - threshold_offset)).flatten(-2)
    # int64 sums: SAM's int16 row sums would overflow on rows wider than 32767 pixels.
    intersections = high.sum(-1, dtype=torch.int64)
    unions = low.sum(-1, dtype=torch.int64)
    return intersections.float() / unions.float()


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (inclusive edges) around binary masks; empty masks give [0, 0, 0, 0].

    Args:
        masks: (..., H, W) bool masks.

    Returns:
        (..., 4) int64 XYXY in mask pixels; x1/y1 are the last covered column/row.
    """
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, device=masks.device, dtype=torch.int64)
    shape = masks.shape
    h, w = shape[-2:]
    flat = masks.reshape(-1, h, w).bool()
    rows = flat.any(dim=2)  # (B, H)
    cols = flat.any(dim=1)  # (B, W)
    y_idx = torch.arange(h, device=masks.device)
    x_idx = torch.arange(w, device=masks.device)
    # Max of the index where covered gives the last row; max of (size - index) the first one.
    bottom = torch.where(rows, y_idx, -1).amax(dim=1)
    top = h - torch.where(rows, h - y_idx, 0).amax(dim=1)
    right = torch.where(cols, x_idx, -1).amax(dim=1)
    left = w - torch.where(cols, w - x_idx, 0).amax(dim=1)
    boxes = torch.stack([left, top, right, bottom], dim=-1).to(torch.int64)
    empty = ~rows.any(dim=1)
    boxes[empty] = 0
    return boxes.reshape(*shape[:-2], 4)


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """Fill small holes in, or remove small islands from, one binary mask.

    Connected components use 8-connectivity (OpenCV). With ``mode="islands"``, if every
    island is small the largest one is kept so the mask never becomes empty.

    Args:
        mask: (H, W) bool mask.
        area_thresh: components with fewer pixels than this are changed.
        mode: "holes" (fill background components) or "islands" (drop foreground ones).

    Returns:
        The (H, W) bool mask after the change, and whether anything changed.

    Raises:
        ValueError: unknown ``mode``.
        ImportError: OpenCV is not installed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode: expected 'holes' or 'islands', got {mode!r}")
    cv2 = _import_cv2()
    fill_holes = mode == "holes"
    # For holes, label the background components: they are the regions we may flip.
    working = (np.asarray(mask, dtype=bool) ^ fill_holes).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = [i + 1 for i, size in enumerate(sizes) if size < area_thresh]
    if not small:
        return np.asarray(mask, dtype=bool), False
    if fill_holes:
        # Label 0 is the original foreground; add the small background components to it.
        keep_labels = [0, *small]
    else:
        small_set = set(small)
        keep_labels = [i for i in range(1, n_labels) if i not in small_set]
        if not keep_labels:
            keep_labels = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, keep_labels), True


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - cv2 is a core dependency
        raise ImportError(
            "min_mask_region_area > 0 needs OpenCV: pip install opencv-python"
        ) from exc
    return cv2


# --------------------------------------------------------------------------- RLE


def mask_to_rle_pytorch(tensor: torch.Tensor) -> list[MaskRLE]:
    """Uncompressed COCO-style RLE of each binary mask.

    Args:
        tensor: (B, H, W) bool masks (any device; SAM's parameter name).

    Returns:
        B dicts ``{"size": [H, W], "counts": list[int]}``; counts alternate zeros and ones
        over the column-major flattening, starting with zeros, and sum to H * W.
    """
    if tensor.ndim != 3:
        raise ValueError(f"tensor: expected (B, H, W) masks, got {tuple(tensor.shape)}")
    b, h, w = tensor.shape
    if b == 0:
        return []
    # Column-major flattening, as COCO: transpose so rows become columns before flattening.
    flat = tensor.bool().transpose(1, 2).reshape(b, h * w)
    if h * w == 0:
        return [{"size": [h, w], "counts": [0]} for _ in range(b)]
    # Compute the change points on the device; only their indices travel to the CPU.
    changes = (flat[:, 1:] != flat[:, :-1]).nonzero().cpu().numpy()
    first = flat[:, 0].cpu().numpy()
    # nonzero() is row-major, so each mask's change points are contiguous and sorted.
    bounds = np.searchsorted(changes[:, 0], np.arange(b + 1))
    rles: list[MaskRLE] = []
    for i in range(b):
        cut = changes[bounds[i] : bounds[i + 1], 1] + 1
        edges = np.concatenate([[0], cut, [h * w]])
        counts = np.diff(edges).tolist()
        if first[i]:
            counts = [0, *counts]
        rles.append({"size": [h, w], "counts": counts})
    return rles


def rle_to_mask(rle: MaskRLE) -> np.ndarray:
    """Decode an uncompressed RLE from :func:`mask_to_rle_pytorch`.

    Args:
        rle: ``{"size": [H, W], "counts": list[int]}``.

    Returns:
        (H, W) bool mask.
    """
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"rle: counts sum to {int(counts.sum())}, expected H*W = {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T


def area_from_rle(rle: MaskRLE) -> int:
    """Number of foreground pixels of an uncompressed RLE (the sum of the odd runs)."""
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(uncompressed_rle: MaskRLE) -> MaskRLE:
    """Compress an uncompressed RLE into COCO's string form with pycocotools.

    Args:
        uncompressed_rle: ``{"size": [H, W], "counts": list[int]}``.

    Returns:
        ``{"size": [H, W], "counts": str}`` (counts decoded to UTF-8, so it is JSON-ready).

    Raises:
        ImportError: pycocotools is not installed.
    """
    mask_utils = import_pycocotools_mask()
    h, w = uncompressed_rle["size"]
    rle = mask_utils.frPyObjects(uncompressed_rle, h, w)
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def import_pycocotools_mask() -> Any:
    """``pycocotools.mask``, or an ImportError that says how to install it."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError as exc:
        raise ImportError(
            "output_mode='coco_rle' needs pycocotools: pip install pycocotools"
        ) from exc
    return mask_utils


# --------------------------------------------------------------------------- NMS


def box_iou_matrix(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of two box sets, as torchvision computes it (areas without +1).

    Args:
        boxes_a: (N, 4) XYXY float.
        boxes_b: (M, 4) XYXY float.

    Returns:
        (N, M) IoU; a pair of zero-area boxes gives NaN (0/0), which never exceeds a threshold.
    """
    area_a = box_area(boxes_a)
    area_b = box_area(boxes_b)
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    chunk_size: int = 2048,
) -> torch.Tensor:
    """Greedy non-maximum suppression within each category, in pure torch.

    Boxes are visited in descending score order; each kept box suppresses every later box of
    the same category whose IoU with it is strictly greater than ``iou_threshold``. This is
    torchvision's ``batched_nms`` contract, without the dependency.

    The IoU test runs once as a matrix (in row chunks of ``chunk_size`` to cap memory on the
    model's device); only the boolean "would suppress" matrix goes to the CPU for the
    sequential greedy pass.

    Args:
        boxes: (N, 4) float XYXY.
        scores: (N,) float scores; higher is kept first (ties keep input order).
        idxs: (N,) int category of each box; boxes of different categories never interact.
        iou_threshold: suppress when IoU > this (lower is stricter).
        chunk_size: rows of the IoU matrix computed at once.

    Returns:
        (K,) int64 indices into ``boxes`` of the kept boxes, sorted by descending score.
    """
    n = boxes.shape[0]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected (N, 4), got {tuple(boxes.shape)}")
    if scores.shape != (n,) or idxs.shape != (n,):
        raise ValueError(
            f"scores/idxs: expected ({n},), got {tuple(scores.shape)} and {tuple(idxs.shape)}"
        )
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order].float()
    sorted_idxs = idxs[order]
    suppresses = np.empty((n, n), dtype=bool)
    for start in range(0, n, chunk_size):
        rows = slice(start, min(start + chunk_size, n))
        over = box_iou_matrix(sorted_boxes[rows], sorted_boxes) > iou_threshold
        over &= sorted_idxs[rows, None] == sorted_idxs[None, :]
        suppresses[rows] = over.cpu().numpy()
    removed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        # Only later (lower-scored) boxes can be suppressed by box i.
        removed[i + 1 :] |= suppresses[i, i + 1 :]
    keep_t = torch.as_tensor(keep, dtype=torch.int64, device=order.device)
    return order[keep_t]
