"""DAVIS 2017 semi-supervised evaluation (region J, boundary F, J&F), as the official code.

Re-implements davisvideochallenge/davis2017-evaluation @ ac7c43fc (BSD-3-Clause) without its
pandas/scikit-image dependencies; ``shared/design/evaluation.md`` section 3 states the protocol
and ``shared/data/*/reference_official.json`` holds the official numbers our tests reproduce.

Protocol in brief:

* Objects of a sequence are the ids 1..K with K the largest id in the first GT frame (255 =
  void is set to background and not passed to the metrics).
* Only GT frames 1..N-2 are scored: the first frame is the given prompt and the official code
  also drops the last one. Only those result PNGs are read.
* Per object: Mean, Recall (fraction of frames > 0.5) and Decay (first minus last of 4 bins).
  Dataset figures average over objects, not sequences; J&F-Mean = (J-Mean + F-Mean) / 2.

Example:
    >>> scores = evaluate_results(Path("DAVIS"), Path("results/osvos"))  # doctest: +SKIP
    >>> write_report(scores, Path("results/osvos"))  # vos.eval.davis_report; doctest: +SKIP
    >>> scores.global_metrics["J&F-Mean"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vos.eval.datasets import DavisLayout
from vos.io.davis_png import read_palette_png

__all__ = [
    "BOUND_TH",
    "GLOBAL_COLUMNS",
    "OBJECT_COLUMNS",
    "DavisScores",
    "boundary_f_measure",
    "boundary_radius",
    "disk",
    "evaluate_results",
    "evaluate_sequence",
    "region_similarity",
    "seg2bmap",
    "statistics",
]

# Boundary tolerance of the official code: < 1 means a fraction of the image diagonal.
BOUND_TH = 0.008
VOID_ID = 255
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
OBJECT_COLUMNS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


@dataclass
class DavisScores:
    """Result of :func:`evaluate_results`.

    Attributes:
        global_metrics: The seven dataset figures keyed as in ``GLOBAL_COLUMNS`` (fractions in
            0..1, not percent).
        per_object: ``"<seq>_<obj_id>"`` -> figures keyed as in ``OBJECT_COLUMNS``, in the
            official order (sequence list order, then object id).
        per_frame_j: ``"<seq>_<obj_id>"`` -> (N-2,) float64 J of the scored frames 1..N-2.
        per_frame_f: Same for F.
        split: ImageSets split that was evaluated (for example ``"val"``).
        results_dir: Folder the result PNGs were read from.
    """

    global_metrics: dict[str, float]
    per_object: dict[str, dict[str, float]]
    per_frame_j: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    per_frame_f: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    split: str = "val"
    results_dir: Path | None = None


# --------------------------------------------------------------------------- per-frame metrics


def region_similarity(gt_masks: np.ndarray, pred_masks: np.ndarray) -> np.ndarray | float:
    """Region similarity J (Jaccard index) of binary masks, official empty-mask convention.

    Args:
        gt_masks: (..., H, W) bool ground-truth masks (any leading batch shape).
        pred_masks: Same shape, predicted masks.

    Returns:
        IoU over the last two axes, shape ``gt_masks.shape[:-2]`` (a float for 2-D input).
        When the union is empty (object absent from both) J is 1.

    Raises:
        ValueError: The shapes differ.
    """
    gt = np.asarray(gt_masks, dtype=bool)
    pred = np.asarray(pred_masks, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: gt {gt.shape} vs pred {pred.shape}")
    inter = np.count_nonzero(gt & pred, axis=(-2, -1))
    union = np.count_nonzero(gt | pred, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    iou = np.where(union == 0, 1.0, iou)
    return float(iou) if iou.ndim == 0 else iou


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a binary mask (Martin et al.'s seg2bmap, as DAVIS uses it).

    A pixel is boundary if it differs from its right, lower or lower-right neighbour; the last
    row compares only to the right, the last column only downwards, and the bottom-right pixel
    is never boundary. The contour therefore sits half a pixel toward the origin.

    Args:
        mask: (H, W) bool mask.

    Returns:
        (H, W) bool boundary map.
    """
    seg = np.asarray(mask, dtype=bool)
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    below_right = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    below_right[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ right) | (seg ^ below) | (seg ^ below_right)
    bmap[-1, :] = seg[-1, :] ^ right[-1, :]
    bmap[:, -1] = seg[:, -1] ^ below[:, -1]
    bmap[-1, -1] = False
    return bmap


def disk(radius: int) -> np.ndarray:
    """Disk structuring element, identical to ``skimage.morphology.disk(radius)``.

    Args:
        radius: Radius in pixels (>= 0).

    Returns:
        (2r+1, 2r+1) uint8, 1 where ``dx² + dy² <= r²``.
    """
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Boundary match tolerance in pixels, as the official ``f_measure`` derives it.

    Args:
        height: Image height.
        width: Image width.
        bound_th: Tolerance; >= 1 is taken as pixels, < 1 as a fraction of the diagonal.

    Returns:
        The disk radius: ``bound_th`` itself or ``ceil(bound_th * sqrt(H² + W²))`` (8 px for
        854x480).
    """
    if bound_th >= 1:
        return int(bound_th)
    # sqrt of the exact integer sum, as np.linalg.norm(shape) in the official code.
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


def boundary_f_measure(
    gt_mask: np.ndarray, pred_mask: np.ndarray, bound_th: float = BOUND_TH
) -> float:
    """Boundary F-measure of one predicted mask against its ground truth.

    Args:
        gt_mask: (H, W) bool ground-truth mask.
        pred_mask: (H, W) bool predicted mask.
        bound_th: Boundary tolerance, see :func:`boundary_radius`.

    Returns:
        F = 2PR / (P + R) of boundary precision P and recall R (0 when P + R = 0). Degenerate
        cases as the official code: no boundary in either -> 1; only the GT has one -> 0; only
        the prediction has one -> 0.

    Raises:
        ValueError: The shapes differ or are not 2-D.
    """
    gt = np.asarray(gt_mask, dtype=bool)
    pred = np.asarray(pred_mask, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"expected two equal (H, W) masks, got gt {gt.shape}, pred {pred.shape}")
    gt_boundary = seg2bmap(gt)
    pred_boundary = seg2bmap(pred)
    n_gt = int(np.count_nonzero(gt_boundary))
    n_pred = int(np.count_nonzero(pred_boundary))
    if n_gt == 0 or n_pred == 0:
        # P/R would be 0/0 here; the official code fixes them as: neither -> P=R=1 (F=1),
        # one missing -> one of P, R is 0 and the other 1 (F=0).
        return 1.0 if n_gt == n_pred else 0.0
    radius = boundary_radius(gt.shape[0], gt.shape[1], bound_th=bound_th)
    # Dilate only the bounding box of both boundaries plus the radius: every boundary pixel
    # lies inside it and cv2.dilate ignores pixels beyond the border, so the crop gives the
    # same values as a full-frame dilation at about a third of the cost on DAVIS objects.
    rows = np.flatnonzero(np.any(gt_boundary | pred_boundary, axis=1))
    cols = np.flatnonzero(np.any(gt_boundary | pred_boundary, axis=0))
    crop = (
        slice(max(int(rows[0]) - radius, 0), int(rows[-1]) + radius + 1),
        slice(max(int(cols[0]) - radius, 0), int(cols[-1]) + radius + 1),
    )
    gt_boundary = gt_boundary[crop]
    pred_boundary = pred_boundary[crop]
    kernel = disk(radius)
    gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), kernel) > 0
    pred_dilated = cv2.dilate(pred_boundary.astype(np.uint8), kernel) > 0
    precision = np.count_nonzero(pred_boundary & gt_dilated) / n_pred
    recall = np.count_nonzero(gt_boundary & pred_dilated) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def statistics(per_frame_values: np.ndarray) -> tuple[float, float, float]:
    """Mean, Recall and Decay of one object's per-frame J or F, as official ``db_statistics``.

    Args:
        per_frame_values: (n,) float per-frame scores of the scored frames (NaN ignored in
            Mean and Recall).

    Returns:
        ``(mean, recall, decay)``: nanmean; fraction of frames > 0.5; mean of the first of 4
        bins minus mean of the last. Bin k spans indices ``ids[k]..ids[k+1]`` inclusive with
        ``ids = round(linspace(1, n, 5)) - 1``, so neighbouring bins share a frame.

    Note:
        The official code casts ``ids`` to uint8, which wraps for n > 256 frames; we keep
        exact indices there (no DAVIS sequence is that long, so results are unaffected).
    """
    values = np.asarray(per_frame_values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > 0.5))
        # The 1e-10 pushes exact .5 ties up, where np.round would round half to even.
        ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
        bins = [values[ids[k] : ids[k + 1] + 1] for k in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


# --------------------------------------------------------------------------- sequences


def evaluate_sequence(
    gt_labels: np.ndarray, pred_labels: np.ndarray, num_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-object, per-frame J and F of one sequence's scored frames.

    Args:
        gt_labels: (T, H, W) integer GT ids of the scored frames (void already mapped to 0).
        pred_labels: (T, H, W) integer predicted ids of the same frames.
        num_objects: K, the number of GT objects (ids 1..K); GT ids above K are ignored.

    Returns:
        ``(j, f)``, each (K, T) float64.

    Raises:
        ValueError: Shapes differ, or the prediction uses an id above K (the official code
            aborts in that case).
    """
    if gt_labels.shape != pred_labels.shape:
        raise ValueError(f"label shapes differ: gt {gt_labels.shape} vs pred {pred_labels.shape}")
    pred_max = int(pred_labels.max()) if pred_labels.size else 0
    if pred_max > num_objects:
        raise ValueError(
            f"prediction uses object id {pred_max} but the first GT frame has only "
            f"{num_objects} object(s)"
        )
    num_frames = gt_labels.shape[0]
    j = np.zeros((num_objects, num_frames))
    f = np.zeros((num_objects, num_frames))
    for obj_idx in range(num_objects):
        obj_id = obj_idx + 1
        gt_obj = gt_labels == obj_id
        pred_obj = pred_labels == obj_id
        j[obj_idx] = region_similarity(gt_obj, pred_obj)
        for frame_idx in range(num_frames):
            f[obj_idx, frame_idx] = boundary_f_measure(gt_obj[frame_idx], pred_obj[frame_idx])
    return j, f


def _read_stack(paths: list[Path]) -> np.ndarray:
    first = read_palette_png(paths[0])
    stack = np.empty((len(paths), *first.shape), dtype=np.uint8)
    stack[0] = first
    for index, path in enumerate(paths[1:], start=1):
        labels = read_palette_png(path)
        if labels.shape != first.shape:
            raise ValueError(f"{path}: size {labels.shape} differs from {paths[0]} {first.shape}")
        stack[index] = labels
    return stack


def evaluate_results(
    davis_root: Path,
    results_dir: Path,
    split: str = "val",
    sequences: list[str] | None = None,
) -> DavisScores:
    """Scores a DAVIS results folder with the official semi-supervised protocol.

    Always recomputes from the PNGs (the official script instead re-prints CSVs it finds in
    the results folder, which silently reports stale numbers).

    Args:
        davis_root: DAVIS 2017 root with ``JPEGImages/480p``, ``Annotations/480p`` and
            ``ImageSets/2017/<split>.txt``.
        results_dir: ``<results_dir>/<seq>/<frame>.png`` single-channel masks (palette or
            greyscale) holding object ids, same size and file stems as the GT. Only frames
            1..N-2 are read.
        split: Name of the ImageSets list used when ``sequences`` is None.
        sequences: Evaluate these sequences (in this order) instead of the whole split.

    Returns:
        The global, per-object and per-frame scores.

    Raises:
        ValueError: The root layout is incomplete, a result PNG is missing or unreadable, has
            a different size than the GT, or uses an object id absent from the first GT frame.
    """
    layout = DavisLayout(davis_root, split)
    results_dir = Path(results_dir)
    names = layout.sequences(sequences)
    if not results_dir.is_dir():
        raise ValueError(f"results folder not found: {results_dir}")

    per_object: dict[str, dict[str, float]] = {}
    per_frame_j: dict[str, np.ndarray] = {}
    per_frame_f: dict[str, np.ndarray] = {}
    for seq in names:
        stems = layout.annotated_frames(seq)
        gt_dir = layout.annotations_dir(seq)
        gt_all = _read_stack([gt_dir / f"{stem}.png" for stem in stems])
        gt_all[gt_all == VOID_ID] = 0
        num_objects = int(gt_all[0].max())
        scored = stems[1:-1]
        pred_paths = [results_dir / seq / f"{stem}.png" for stem in scored]
        for path in pred_paths:
            if not path.is_file():
                raise ValueError(f"missing result frame {path} (frames 1..N-2 are scored)")
        pred = _read_stack(pred_paths)
        gt = gt_all[1:-1]
        if pred.shape != gt.shape:
            raise ValueError(
                f"sequence {seq!r}: result masks are {pred.shape[1:]} but the GT is {gt.shape[1:]}"
            )
        try:
            j, f = evaluate_sequence(gt, pred, num_objects)
        except ValueError as exc:
            raise ValueError(f"sequence {seq!r} in {results_dir}: {exc}") from None
        for obj_idx in range(num_objects):
            key = f"{seq}_{obj_idx + 1}"
            j_mean, j_recall, j_decay = statistics(j[obj_idx])
            f_mean, f_recall, f_decay = statistics(f[obj_idx])
            per_object[key] = {
                "J-Mean": j_mean,
                "J-Recall": j_recall,
                "J-Decay": j_decay,
                "F-Mean": f_mean,
                "F-Recall": f_recall,
                "F-Decay": f_decay,
            }
            per_frame_j[key] = j[obj_idx]
            per_frame_f[key] = f[obj_idx]

    global_metrics = _global_metrics(per_object)
    return DavisScores(
        global_metrics=global_metrics,
        per_object=per_object,
        per_frame_j=per_frame_j,
        per_frame_f=per_frame_f,
        split=split,
        results_dir=results_dir,
    )


def _global_metrics(per_object: dict[str, dict[str, float]]) -> dict[str, float]:
    """Plain means over objects (every object counts once, whatever its sequence)."""
    if not per_object:
        return {name: math.nan for name in GLOBAL_COLUMNS}
    means = {
        name: float(np.mean([scores[name] for scores in per_object.values()]))
        for name in OBJECT_COLUMNS
    }
    return {"J&F-Mean": (means["J-Mean"] + means["F-Mean"]) / 2, **means}
