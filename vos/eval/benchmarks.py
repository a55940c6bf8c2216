"""Scoring rules of the VOS benchmarks beyond DAVIS: vos-benchmark / SA-V, YouTube-VOS, LVOS.

All of them use DAVIS's per-frame J and F (:mod:`vos.eval.measures`); they differ in which
frames and objects count and how they average. Each rule is re-implemented from the official
code (read, not copied) and checked against it on samples built from ``shared/data`` in
``tests/vos/test_vos_metrics.py``:

* **vos-benchmark** (hkchengrex/vos-benchmark, the rule of SA-V's ``sav_evaluator.py``,
  facebookresearch/sam2 ``sav_dataset/utils/sav_benchmark.py``): per video, the annotated
  frames in name order without the first and the last. Palette layouts score every non-zero
  id (255 too: the tool has no void); SA-V scores each object folder on its own annotated
  frames, masks binarised (> 0). An object's frames count from the first scored frame on
  which it shows in the GT or the result; empty-in-both frames after that count J = F = 1.
  Objects never in the GT of their scored frames are dropped. J and F are the means over
  all objects (the official tool prints them x100; we keep fractions), J&F their mean.
* **YouTube-VOS** (server only; youtube-vos.org/dataset/vos): J and F averaged over the
  objects of the seen and of the unseen categories separately, the final score the mean of
  the four. Locally the per-object figures follow the vos-benchmark rule above (the rule
  Cutie and XMem use for datasets whose objects appear later); seen/unseen needs the
  objects' ``category`` in meta.json and the training categories.
* **LVOS** (LingyiHongfd/lvos-evaluation): per object of meta.json, frames
  ``range(start, end, 5)`` of its ``frame_range`` (named ``%08d``, first frame included),
  stored in ``frame_nums`` slots (slots left unfilled count as 0). Per object: Mean and
  Recall (> 0.5) over the slots; Decay is always 0 (the official statistics see a (1, n)
  array as one frame); V = sqrt(round(mean((JF - mean JF)^2), 4)) with JF = (J + F) / 2.
  Objects are keyed ``<seq>_<position>``; dataset figures are plain means over objects
  (the official script's global V is the last object's V; ours is the mean).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from vos.eval.datasets import DatasetError, VosDataset
from vos.eval.davis import DavisScores, evaluate_layout, global_metrics
from vos.eval.measures import boundary_f_measure, region_similarity
from vos.io.davis_png import read_palette_png

__all__ = ["SCORERS", "score_dataset", "score_lvos", "score_vos_benchmark", "seen_categories"]

LVOS_STEP = 5  # lvos-evaluation scores every 5th frame of an object's range


class _ObjectTrack:
    """One object's per-frame J and F, counted from the first frame it shows on."""

    def __init__(self) -> None:
        self.j: list[float] = []
        self.f: list[float] = []
        self.in_gt = False

    def feed(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one scored frame: (H, W) bool GT and result masks of this object."""
        gt_shows = bool(gt.any())
        self.in_gt |= gt_shows
        if self.j or gt_shows or pred.any():
            self.j.append(float(region_similarity(gt, pred)))
            self.f.append(boundary_f_measure(gt, pred))


def _read(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"missing {what} frame {path}")
    return read_palette_png(path)


def _pairs(gt_dir: Path, result_dir: Path, stems: list[str]) -> Iterator[tuple]:
    """(GT labels, result labels) of the scored stems, sizes checked."""
    for stem in stems:
        gt = _read(gt_dir / f"{stem}.png", "ground-truth")
        pred = _read(result_dir / f"{stem}.png", "result")
        if gt.shape != pred.shape:
            raise ValueError(f"{result_dir / stem}.png: size {pred.shape} but the GT is {gt.shape}")
        yield gt, pred


def _palette_tracks(pairs: Iterable[tuple]) -> dict[int, _ObjectTrack]:
    tracks: dict[int, _ObjectTrack] = {}
    for gt, pred in pairs:
        shown = set(np.unique(gt).tolist()) | set(np.unique(pred).tolist())
        for obj_id in sorted(shown - {0}):
            tracks.setdefault(int(obj_id), _ObjectTrack())
        for obj_id, track in tracks.items():
            track.feed(gt == obj_id, pred == obj_id)
    return tracks


def score_vos_benchmark(
    dataset: VosDataset, results_dir: Path, sequences: list[str] | None = None
) -> DavisScores:
    """The vos-benchmark / SA-V rule (module docstring) on a results folder.

    Args:
        dataset: the ground truth (palette or per-object layout).
        results_dir: ``<seq>/<stem>.png`` (palette) or ``<seq>/<obj>/<stem>.png`` (per object).
        sequences: these sequences instead of the dataset's list.

    Returns:
        Per object ``J-Mean`` and ``F-Mean``; globally ``J&F-Mean``, ``J-Mean``, ``F-Mean``.

    Raises:
        ValueError: a missing or mis-sized result frame.
    """
    results_dir = Path(results_dir)
    scores = DavisScores({}, {}, split=str(dataset.split), results_dir=results_dir)
    for seq in dataset.sequences(sequences):
        gt_dir = dataset.annotations_dir(seq)
        units: list[tuple[str | None, Path, Path]]
        if dataset.preset.per_object:
            units = [(obj, gt_dir / obj, results_dir / seq / obj)
                     for obj in dataset.object_folders(seq)]
        else:
            units = [(None, gt_dir, results_dir / seq)]
        for obj, gt_folder, result_folder in units:
            stems = sorted(p.stem for p in gt_folder.glob("*.png"))[1:-1]
            pairs = _pairs(gt_folder, result_folder, stems)
            if obj is None:
                tracks = {str(k): t for k, t in _palette_tracks(pairs).items()}
            else:
                tracks = {obj: _ObjectTrack()}
                for gt, pred in pairs:
                    tracks[obj].feed(gt > 0, pred > 0)
            for name, track in sorted(tracks.items()):
                if not track.in_gt:
                    continue  # the official conclude() keeps GT objects only
                _add(scores, f"{seq}_{name}", np.array(track.j), np.array(track.f),
                     {"J-Mean": float(np.mean(track.j)), "F-Mean": float(np.mean(track.f))})
    scores.global_metrics = _mean_columns(scores.per_object, ("J-Mean", "F-Mean"))
    return scores


def _add(scores: DavisScores, key: str, j: np.ndarray, f: np.ndarray,
         figures: dict[str, float]) -> None:
    """Record one object: (n,) per-frame J and F and its figures."""
    scores.per_frame_j[key], scores.per_frame_f[key] = j, f
    scores.per_object[key] = figures


def _mean_columns(per_object: dict[str, dict[str, float]], columns: tuple[str, ...]) -> dict:
    means = {c: float(np.mean([v[c] for v in per_object.values()])) if per_object else math.nan
             for c in columns}
    return {"J&F-Mean": (means["J-Mean"] + means["F-Mean"]) / 2, **means}


def score_lvos(
    dataset: VosDataset, results_dir: Path, sequences: list[str] | None = None
) -> DavisScores:
    """The lvos-evaluation rule (module docstring) on a results folder.

    Args:
        dataset: an LVOS root (meta.json with each object's ``frame_range``).
        results_dir: ``<seq>/<%08d>.png`` palette results.
        sequences: these sequences instead of meta.json's.

    Returns:
        Per object the six DAVIS figures and ``V``; globally the DAVIS columns and ``V-Mean``.

    Raises:
        DatasetError: an object without ``frame_range``, or more frames in its range than
            ``frame_nums`` slots (the official code fails there).
        ValueError: a missing or mis-sized result frame.
    """
    results_dir = Path(results_dir)
    scores = DavisScores({}, {}, split=str(dataset.split), results_dir=results_dir)
    for seq in dataset.sequences(sequences):
        for position, (obj, entry) in enumerate(dataset.meta_objects(seq).items(), start=1):
            try:
                span = entry["frame_range"]
                start, end, slots = int(span["start"]), int(span["end"]), int(span["frame_nums"])
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"meta.json: {seq} object {obj} has no frame_range "
                                   "{start, end, frame_nums}") from None
            stems = [f"{i:08d}" for i in range(start, end, LVOS_STEP)]
            if len(stems) > slots:
                raise DatasetError(f"meta.json: {seq} object {obj}: {len(stems)} frames in "
                                   f"range({start}, {end}, {LVOS_STEP}) but frame_nums={slots}")
            j, f = np.zeros(slots), np.zeros(slots)
            pairs = _pairs(dataset.annotations_dir(seq), results_dir / seq, stems)
            for k, (gt, pred) in enumerate(pairs):
                j[k] = region_similarity(gt == int(obj), pred == int(obj))
                f[k] = boundary_f_measure(gt == int(obj), pred == int(obj))
            jf = (j + f) / 2
            variance = float(np.round(np.sum((jf.mean() - jf) ** 2) / slots, 4))
            _add(scores, f"{seq}_{position}", j, f,
                 {"J-Mean": float(j.mean()), "J-Recall": float(np.mean(j > 0.5)),
                  "J-Decay": 0.0, "F-Mean": float(f.mean()), "F-Recall": float(np.mean(f > 0.5)),
                  "F-Decay": 0.0, "V": math.sqrt(variance)})
    per_object = scores.per_object
    scores.global_metrics = global_metrics(
        {k: {c: v[c] for c in v if c != "V"} for k, v in per_object.items()})
    scores.global_metrics["V-Mean"] = float(np.mean([v["V"] for v in per_object.values()])) \
        if per_object else math.nan
    return scores


def seen_categories(path: Path) -> set[str]:
    """The seen (training) categories: a YouTube-VOS ``meta.json`` (every object's
    ``category``) or a text file with one category per line.

    Raises:
        ValueError: a missing or malformed file.
    """
    if not path.is_file():
        raise ValueError(f"--seen-categories {path}: no such file")
    if path.suffix != ".json":
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    try:
        videos = json.loads(path.read_text())["videos"]
        return {str(obj["category"]) for video in videos.values()
                for obj in video["objects"].values() if "category" in obj}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(f"--seen-categories {path}: not a YouTube-VOS meta.json") from None


def split_seen_unseen(scores: DavisScores, dataset: VosDataset, seen: set[str]) -> None:
    """Add YouTube-VOS's J/F-seen/unseen-Mean to ``scores`` and make J&F-Mean their mean.

    Objects whose category meta.json does not give are left out of both groups; a group
    without objects is NaN and left out of the final mean.
    """
    groups: dict[str, list[dict[str, float]]] = {"seen": [], "unseen": []}
    for key, values in scores.per_object.items():
        seq, _, obj = key.rpartition("_")
        category = dataset.categories(seq).get(int(obj)) if obj.isdigit() else None
        if category is not None:
            groups["seen" if category in seen else "unseen"].append(values)
    four = []
    for group, members in groups.items():
        for column in ("J-Mean", "F-Mean"):
            value = float(np.mean([m[column] for m in members])) if members else math.nan
            scores.global_metrics[f"{column[0]}-{group}-Mean"] = value
            four.append(value)
    if not all(math.isnan(v) for v in four):
        scores.global_metrics["J&F-Mean"] = float(np.nanmean(four))


SCORERS = {"davis": evaluate_layout, "vos-benchmark": score_vos_benchmark, "lvos": score_lvos}


def score_dataset(
    dataset: VosDataset,
    results_dir: Path,
    sequences: list[str] | None = None,
    *,
    seen: set[str] | None = None,
) -> DavisScores:
    """Score a results folder with the preset's official rules.

    Args:
        dataset: the ground truth.
        results_dir: the results, in the preset's layout.
        sequences: these sequences instead of the dataset's list.
        seen: YouTube-VOS seen categories (:func:`seen_categories`); adds the seen/unseen
            figures when meta.json gives the objects' categories.
    """
    scores = SCORERS[dataset.preset.scorer](dataset, Path(results_dir), sequences)
    if seen is not None and dataset.preset.meta == "youtube":
        split_seen_unseen(scores, dataset, seen)
    return scores
