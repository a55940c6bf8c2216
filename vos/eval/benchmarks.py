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
* **LVOS** (LingyiHongfd/lvos-evaluation, run by ``evaluation_method.py``): per object of
  the meta file, in its order, the frames ``range(start, end, 5)`` of its ``frame_range``
  (named ``%08d``), each object's J and F read as ``gt == id`` and ``result == id``. Two
  releases of the evaluator differ in which of them count:

  - **v2** (HEAD c05e889 "update code for v2", May 2024, preset ``lvos``): ``frame_nums - 2``
    slots; the range's first frame is skipped, and so is its ``frame_nums``-th frame (the
    object's last annotated one) when the range reaches it;
  - **v1** (457d397, Nov 2022, preset ``lvos-v1``): ``frame_nums`` slots, every frame of the
    range, the first included.

  Slots the range leaves unfilled count as 0; a range longer than the slots stops the
  official code (an index error), here a one-line error. Per object: Mean and Recall (> 0.5)
  over the slots; Decay is always 0 (the official statistics see a (1, n) array as one
  frame); V = sqrt(round(mean((JF - mean JF)^2), 4)) with JF = (J + F) / 2. Objects are keyed
  ``<seq>_<position>``. Globally the videos of the unseen list (``--unseen-videos``; by
  default the official list of the release, shipped in ``vos/eval/data/``) form the unseen
  group, the others the seen group: ``X-seen-Mean`` and ``X-unseen-Mean`` are plain means
  over each group's objects, ``X-Mean`` their average and J&F-Mean the average of the four
  J/F group means, as ``evaluation_method.py`` prints them. Two deliberate differences, each
  logged as a one-line warning: a group without objects makes the official averages NaN,
  here they are the other group's means; a v2 object with ``frame_nums = 2`` has no scored
  frame (official: NaN figures, NaN means) and is left out. Recall and Decay, which the
  official script computes per object but does not print, are averaged like the means.

Objects that the official SA-V evaluator cannot score (no ground-truth pixel on the frames it
scores: shown only on the object's first or last annotated frame, or never) stop it with an
assertion; here each gets a one-line warning naming it and is left out of the means, which is
what the official code gives once that object's folder is removed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vos.eval.datasets import DatasetError, VosDataset
from vos.eval.davis import OBJECT_COLUMNS, DavisScores, evaluate_layout
from vos.eval.measures import boundary_f_measure, region_similarity
from vos.io.davis_png import read_palette_png

__all__ = ["SCORERS", "lvos_unseen_videos", "score_dataset", "score_lvos", "score_vos_benchmark",
           "seen_categories"]

logger = logging.getLogger(__name__)

LVOS_STEP = 5  # lvos-evaluation scores every 5th frame of an object's range
DATA_DIR = Path(__file__).with_name("data")


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
                    # The official conclude() keeps GT objects only; for palette layouts it
                    # drops them silently, SA-V's consolidate() asserts one object per folder.
                    if obj is not None:
                        logger.warning("SA-V %s/%s: no ground truth on its scored frames (only "
                                       "on its first or last annotated one, or none); left out "
                                       "(the official sav_evaluator stops here)", seq, obj)
                    continue
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


def lvos_unseen_videos(path: Path) -> set[str]:
    """The video names of an unseen list: one per line, blank lines and ``#`` comments skipped.

    Raises:
        ValueError: the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--unseen-videos {path}: no such file")
    names = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {name for name in names if name}


def _lvos_slots(span: Any, where: str, rule: str) -> tuple[list[tuple[int, int]], int]:
    """(slot, frame number) pairs an object is scored on, and the number of slots.

    Raises:
        DatasetError: no ``frame_range``, too few slots, or more frames than slots.
    """
    try:
        start, end, frame_nums = int(span["start"]), int(span["end"]), int(span["frame_nums"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{where} has no frame_range {{start, end, frame_nums}}") from None
    frames = list(range(start, end, LVOS_STEP))
    if rule == "lvos-v1":
        slots, pairs = frame_nums, list(enumerate(frames))
    else:
        # v2 drops the range's first frame, and its frame_nums-th (the object's last
        # annotated one) when the range reaches it; the others shift down one slot.
        slots = frame_nums - 2
        pairs = [(k - 1, t) for k, t in enumerate(frames) if k not in (0, frame_nums - 1)]
    if slots < 0:
        raise DatasetError(f"{where}: frame_nums={frame_nums} is below 2 (the official v2 "
                           "code cannot score it)")
    if pairs and pairs[-1][0] >= slots:
        raise DatasetError(f"{where}: {len(frames)} frames in range({start}, {end}, "
                           f"{LVOS_STEP}) but frame_nums={frame_nums}")
    return pairs, slots


def _lvos_object(dataset: VosDataset, results_dir: Path, seq: str, obj: str,
                 pairs: list[tuple[int, int]], slots: int) -> tuple:
    """(slots,) J and F of one object and its figures."""
    j, f = np.zeros(slots), np.zeros(slots)
    stems = [f"{t:08d}" for _, t in pairs]
    frames = _pairs(dataset.annotations_dir(seq), results_dir / seq, stems)
    for (slot, _), (gt, pred) in zip(pairs, frames, strict=True):
        j[slot] = region_similarity(gt == int(obj), pred == int(obj))
        f[slot] = boundary_f_measure(gt == int(obj), pred == int(obj))
    jf = (j + f) / 2
    variance = float(np.round(np.sum((jf.mean() - jf) ** 2) / slots, 4))
    return j, f, {"J-Mean": float(j.mean()), "J-Recall": float(np.mean(j > 0.5)),
                  "J-Decay": 0.0, "F-Mean": float(f.mean()), "F-Recall": float(np.mean(f > 0.5)),
                  "F-Decay": 0.0, "V": math.sqrt(variance)}


def score_lvos(
    dataset: VosDataset,
    results_dir: Path,
    sequences: list[str] | None = None,
    *,
    unseen: set[str] | None = None,
) -> DavisScores:
    """The lvos-evaluation rule (module docstring) of the preset's release on a results folder.

    Args:
        dataset: an LVOS root (meta file with each object's ``frame_range``); its preset's
            scorer, "lvos" (v2) or "lvos-v1", picks the frame rule.
        results_dir: ``<seq>/<%08d>.png`` palette results.
        sequences: these sequences instead of the meta file's.
        unseen: the unseen group's video names (None: the preset's packaged list).

    Returns:
        Per object the six DAVIS figures and ``V``; globally J&F-Mean, then for J, F (Mean,
        seen, unseen, Recall, Decay) and V (Mean, seen, unseen).

    Raises:
        DatasetError: an object without a usable ``frame_range`` (the official code fails).
        ValueError: a missing or mis-sized result frame.
    """
    rule = dataset.preset.scorer
    if unseen is None:
        listed = dataset.preset.unseen_videos
        unseen = lvos_unseen_videos(DATA_DIR / listed) if listed else set()
    results_dir = Path(results_dir)
    scores = DavisScores({}, {}, split=str(dataset.split), results_dir=results_dir)
    groups: dict[str, list[dict[str, float]]] = {"seen": [], "unseen": []}
    for seq in dataset.sequences(sequences):
        for position, (obj, entry) in enumerate(dataset.meta_objects(seq).items(), start=1):
            where = f"meta file: {seq} object {obj}"
            pairs, slots = _lvos_slots(entry.get("frame_range") if isinstance(entry, dict)
                                       else None, where, rule)
            if slots == 0:
                logger.warning("LVOS %s_%d (object %s): frame_nums=2 leaves no frame to score "
                               "(v2 rule); left out (the official means would be NaN)",
                               seq, position, obj)
                continue
            j, f, figures = _lvos_object(dataset, results_dir, seq, obj, pairs, slots)
            _add(scores, f"{seq}_{position}", j, f, figures)
            groups["unseen" if seq in unseen else "seen"].append(figures)
    scores.global_metrics = _lvos_global(groups)
    return scores


def _lvos_global(groups: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """evaluation_method.py's global row from the seen and unseen objects' figures."""
    means = {(group, column): float(np.mean([m[column] for m in members])) if members
             else math.nan
             for group, members in groups.items()
             for column in (*OBJECT_COLUMNS, "V")}
    empty = [group for group, members in groups.items() if not members]
    if len(empty) == 1:
        other = "seen" if empty[0] == "unseen" else "unseen"
        logger.warning("LVOS: no %s video among those scored; J&F-, J-, F- and V-Mean are "
                       "the %s group's means (the official script prints NaN)", empty[0], other)

    def both(column: str) -> float:
        values = [means[g, column] for g in groups if groups[g]]
        if len(values) == 2:
            return (values[0] + values[1]) / 2
        return values[0] if values else math.nan

    def group_sum(group: str) -> float:
        return means[group, "J-Mean"] + means[group, "F-Mean"]

    full = all(groups.values())
    out = {"J&F-Mean": (group_sum("seen") + group_sum("unseen")) / 4.0 if full
           else (both("J-Mean") + both("F-Mean")) / 2}
    for letter in ("J", "F"):
        out[f"{letter}-Mean"] = both(f"{letter}-Mean")
        out[f"{letter}-seen-Mean"] = means["seen", f"{letter}-Mean"]
        out[f"{letter}-unseen-Mean"] = means["unseen", f"{letter}-Mean"]
        out[f"{letter}-Recall"] = both(f"{letter}-Recall")
        out[f"{letter}-Decay"] = both(f"{letter}-Decay")
    out.update({"V-Mean": both("V"), "V-seen-Mean": means["seen", "V"],
                "V-unseen-Mean": means["unseen", "V"]})
    return out


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


SCORERS = {"davis": evaluate_layout, "vos-benchmark": score_vos_benchmark, "lvos": score_lvos,
           "lvos-v1": score_lvos}


def score_dataset(
    dataset: VosDataset,
    results_dir: Path,
    sequences: list[str] | None = None,
    *,
    seen: set[str] | None = None,
    unseen: set[str] | None = None,
) -> DavisScores:
    """Score a results folder with the preset's official rules.

    Args:
        dataset: the ground truth.
        results_dir: the results, in the preset's layout.
        sequences: these sequences instead of the dataset's list.
        seen: YouTube-VOS seen categories (:func:`seen_categories`); adds the seen/unseen
            figures when meta.json gives the objects' categories.
        unseen: LVOS unseen videos (:func:`lvos_unseen_videos`; None: the preset's list).
    """
    if dataset.preset.scorer in ("lvos", "lvos-v1"):
        return score_lvos(dataset, Path(results_dir), sequences, unseen=unseen)
    scores = SCORERS[dataset.preset.scorer](dataset, Path(results_dir), sequences)
    if seen is not None and dataset.preset.meta == "youtube":
        split_seen_unseen(scores, dataset, seen)
    return scores
