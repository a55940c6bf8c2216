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

import numpy as np

from vos.eval.datasets import DavisLayout, VosDataset
from vos.eval.measures import (
    BOUND_TH,
    boundary_f_measure,
    boundary_radius,
    disk,
    region_similarity,
    seg2bmap,
)
from vos.io.davis_png import read_palette_png

__all__ = [
    "BOUND_TH",
    "GLOBAL_COLUMNS",
    "OBJECT_COLUMNS",
    "DavisScores",
    "boundary_f_measure",
    "boundary_radius",
    "disk",
    "evaluate_layout",
    "evaluate_results",
    "evaluate_sequence",
    "global_metrics",
    "object_statistics",
    "region_similarity",
    "seg2bmap",
    "statistics",
]

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


# --------------------------------------------------------------------------- statistics


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
    return evaluate_layout(DavisLayout(davis_root, split), results_dir, sequences)


def evaluate_layout(
    layout: VosDataset,
    results_dir: Path,
    sequences: list[str] | None = None,
) -> DavisScores:
    """:func:`evaluate_results` on any layout annotated on every frame (DAVIS 2016/2017, MOSE).

    With a ``binary`` preset (DAVIS 2016, whose object is stored as 255) every non-zero
    pixel of the GT and of the results is the one object, instead of 255 being void.

    Args:
        layout: the dataset; its ``annotated_frames`` enforce one annotation per frame.
        results_dir: ``<results_dir>/<seq>/<stem>.png`` index masks.
        sequences: these sequences instead of the layout's list.

    Returns:
        The scores (``split`` is the layout's).
    """
    results_dir = Path(results_dir)
    names = layout.sequences(sequences)
    if not results_dir.is_dir():
        raise ValueError(f"results folder not found: {results_dir}")
    binary = layout.preset.binary

    per_object: dict[str, dict[str, float]] = {}
    per_frame_j: dict[str, np.ndarray] = {}
    per_frame_f: dict[str, np.ndarray] = {}
    for seq in names:
        stems = layout.annotated_frames(seq)
        gt_dir = layout.annotations_dir(seq)
        gt_all = _read_stack([gt_dir / f"{stem}.png" for stem in stems])
        gt_all = (gt_all > 0).astype(np.uint8) if binary else gt_all
        gt_all[gt_all == VOID_ID] = 0
        num_objects = int(gt_all[0].max())
        scored = stems[1:-1]
        pred_paths = [results_dir / seq / f"{stem}.png" for stem in scored]
        for path in pred_paths:
            if not path.is_file():
                raise ValueError(f"missing result frame {path} (frames 1..N-2 are scored)")
        pred = _read_stack(pred_paths)
        pred = (pred > 0).astype(np.uint8) if binary else pred
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
            per_object[key] = object_statistics(j[obj_idx], f[obj_idx])
            per_frame_j[key] = j[obj_idx]
            per_frame_f[key] = f[obj_idx]

    return DavisScores(
        global_metrics=global_metrics(per_object),
        per_object=per_object,
        per_frame_j=per_frame_j,
        per_frame_f=per_frame_f,
        split=str(layout.split),
        results_dir=results_dir,
    )


def object_statistics(j: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """One object's six figures (``OBJECT_COLUMNS``) from its per-frame J and F.

    Args:
        j: (n,) float64 per-frame J of the scored frames.
        f: (n,) float64 per-frame F of the same frames.
    """
    j_mean, j_recall, j_decay = statistics(j)
    f_mean, f_recall, f_decay = statistics(f)
    return {"J-Mean": j_mean, "J-Recall": j_recall, "J-Decay": j_decay,
            "F-Mean": f_mean, "F-Recall": f_recall, "F-Decay": f_decay}


def global_metrics(per_object: dict[str, dict[str, float]]) -> dict[str, float]:
    """Plain means over objects (every object counts once, whatever its sequence).

    Args:
        per_object: ``"<seq>_<id>"`` -> the figures of ``OBJECT_COLUMNS``.

    Returns:
        The ``GLOBAL_COLUMNS`` figures; J&F-Mean is the mean of J-Mean and F-Mean.
    """
    if not per_object:
        return {name: math.nan for name in GLOBAL_COLUMNS}
    means = {
        name: float(np.mean([scores[name] for scores in per_object.values()]))
        for name in OBJECT_COLUMNS
    }
    return {"J&F-Mean": (means["J-Mean"] + means["F-Mean"]) / 2, **means}
