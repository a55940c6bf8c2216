"""Class-agnostic video instance AP/AR (UVO AR100) as the YouTube-VIS evaluation API.

Re-implements the ``YTVOSeval`` logic of youtubevos/cocoapi (the COCO API fork that the UVO
evaluation kit and SAM-PT use) with ``useCats = 0``, on top of the PyPI ``pycocotools.mask``
RLE routines; the fork itself is not on PyPI, shadows ``pycocotools`` and breaks on current
numpy. ``shared/design/evaluation.md`` section 4 states the protocol and
``shared/data/uvo-mini/reference_official.json`` holds the official numbers our tests reproduce.

Protocol in brief:

* Per video, predicted tracks are sorted by score (stable) and only the top 100 are kept.
* IoU of a predicted and a GT track is one spatio-temporal ratio: the sum over frames of the
  intersections over the sum over frames of the unions (a frame where a track has no
  segmentation counts as an empty mask).
* COCO greedy matching at IoU 0.50:0.05:0.95; crowd GT are ignored; size buckets use a track's
  mean area over the frames where it is non-empty, with YouTube-VIS bounds 128² and 256².
* Precision/recall are pooled over all videos; recall at maxDets 1/10/100 cuts each video's
  score-sorted list.

Deliberate differences from the official code (none affects valid inputs): categories are
ignored entirely (the UVO script sets every prediction to the single GT category first); an
empty prediction list scores 0 instead of crashing; a match to a GT whose ``id`` is 0 counts
as a match (the official code stores matches by id and would drop it); frame-count and mask-size
mismatches raise instead of being silently truncated or scored as zero overlap.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    "AREA_RANGES",
    "IOU_THRESHOLDS",
    "MAX_DETS",
    "RECALL_THRESHOLDS",
    "STAT_NAMES",
    "evaluate_uvo",
    "video_iou_matrix",
]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
# YouTube-VIS size buckets (not COCO's 32²/96²), on the track's mean non-empty area.
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 128.0**2),
    "medium": (128.0**2, 256.0**2),
    "large": (256.0**2, 1e5**2),
}
STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
_EPS = np.spacing(1)

Rle = dict[str, Any]


@dataclass
class _Track:
    """One GT or predicted track of a video, segmentations as compressed RLE or None."""

    segmentations: list[Rle | None]
    avg_area: float
    score: float = 0.0
    ignore: bool = False


# --------------------------------------------------------------------------- loading


def _load(source: Any, what: str) -> Any:
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{what} {path}: cannot read ({exc})") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what} {path}: malformed JSON ({exc})") from None
    return source


def _to_rle(segm: Any, height: int, width: int, where: str) -> Rle:
    """Any COCO segmentation (compressed/uncompressed RLE, polygons) as compressed RLE."""
    if isinstance(segm, list):
        try:
            return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        except Exception as exc:
            raise ValueError(f"{where}: bad polygon segmentation ({exc})") from None
    if not isinstance(segm, Mapping) or "counts" not in segm or "size" not in segm:
        raise ValueError(f"{where}: segmentation must be an RLE dict, polygons or null")
    if [int(v) for v in segm["size"]] != [height, width]:
        raise ValueError(f"{where}: mask size {list(segm['size'])} != video {[height, width]}")
    runs = _run_lengths(segm["counts"])
    if runs is None or min(runs, default=0) < 0 or sum(runs) != height * width:
        raise ValueError(f"{where}: RLE counts do not describe a {height}x{width} mask")
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(dict(segm), height, width)
    return dict(segm)


def _run_lengths(counts: Any) -> list[int] | None:
    """The run lengths of RLE ``counts`` (a list, or COCO's compressed string); None if garbled.

    pycocotools trusts its input: a compressed string whose runs do not add up to the mask
    reads past its end (random pixels), so the scorer checks the runs first. The string form
    is COCO's: 6-bit groups offset by 48 ('0'), bit 5 continues a value, bit 4 of its last
    group is the sign, and from the fourth run on each value is stored as its difference to
    the run two places back.
    """
    if isinstance(counts, list):
        return counts if all(isinstance(c, int) and not isinstance(c, bool) for c in counts) \
            else None
    if isinstance(counts, str):
        counts = counts.encode("ascii", "replace")
    if not isinstance(counts, bytes):
        return None
    runs: list[int] = []
    value = shift = 0
    for byte in counts:
        group = byte - 48
        if not 0 <= group < 64:
            return None
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value = shift = 0
    return None if shift else runs


def _video_table(gt: Any) -> dict[Any, tuple[int, int, int | None]]:
    if not isinstance(gt, Mapping):
        raise ValueError("GT must be a YouTube-VIS JSON object with 'videos' and 'annotations'")
    for key in ("videos", "annotations"):
        if not isinstance(gt.get(key), list):
            raise ValueError(f"GT JSON lacks a '{key}' list")
    videos: dict[Any, tuple[int, int, int | None]] = {}
    for video in gt["videos"]:
        try:
            length = video.get("length")
            if length is None and isinstance(video.get("file_names"), list):
                length = len(video["file_names"])
            videos[video["id"]] = (int(video["height"]), int(video["width"]), length)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"GT video entry lacks id/height/width: {str(video)[:80]}") from None
    return videos


def _area_of(rles: list[Rle | None]) -> list[float | None]:
    present = [rle for rle in rles if rle is not None]
    areas = iter(mask_utils.area(present).tolist() if present else [])
    return [next(areas) if rle is not None else None for rle in rles]


def _mean_present(areas: Sequence[float | None]) -> float:
    # Official: mean of the truthy entries, so zero areas are left out like missing frames.
    values = [area for area in areas if area]
    return float(np.array(values).mean()) if values else 0.0


def _parse_tracks(
    entries: Any, videos: dict[Any, tuple[int, int, int | None]], what: str, is_gt: bool
) -> dict[Any, list[_Track]]:
    if not isinstance(entries, list):
        raise ValueError(f"{what} must be a list of track objects")
    tracks: dict[Any, list[_Track]] = defaultdict(list)
    for index, entry in enumerate(entries):
        where = f"{what}[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: not a JSON object")
        if "video_id" not in entry or not isinstance(entry.get("segmentations"), list):
            raise ValueError(f"{where}: needs 'video_id' and a 'segmentations' list")
        if entry["video_id"] not in videos:
            raise ValueError(f"{where}: video_id {entry['video_id']!r} is not in the GT videos")
        height, width, length = videos[entry["video_id"]]
        if length is not None and len(entry["segmentations"]) != length:
            raise ValueError(
                f"{where}: {len(entry['segmentations'])} segmentations for a {length}-frame video"
            )
        rles = [
            None if not segm else _to_rle(segm, height, width, f"{where} frame {t}")
            for t, segm in enumerate(entry["segmentations"])
        ]
        if is_gt:
            areas = entry.get("areas")
            if not isinstance(areas, list) or len(areas) != len(rles):
                areas = _area_of(rles)
            track = _Track(rles, _mean_present(areas), ignore=bool(entry.get("iscrowd", 0)))
        else:
            try:
                score = float(entry["score"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{where}: needs a numeric 'score'") from None
            if not np.isfinite(score):
                raise ValueError(f"{where}: score {entry['score']!r} is not a finite number")
            track = _Track(rles, _mean_present(_area_of(rles)), score=score)
        tracks[entry["video_id"]].append(track)
    return tracks


# --------------------------------------------------------------------------- IoU


def video_iou_matrix(
    dt_segmentations: Sequence[Sequence[Rle | None]],
    gt_segmentations: Sequence[Sequence[Rle | None]],
) -> np.ndarray:
    """Spatio-temporal IoU between predicted and GT tracks of one video.

    Args:
        dt_segmentations: D tracks, each a per-frame list of compressed RLEs (None = absent).
        gt_segmentations: G tracks, same frame count and mask size.

    Returns:
        (D, G) float64: ``sum_t |d_t ∩ g_t| / sum_t |d_t ∪ g_t|``, 0 when the union is empty.
    """
    num_dt, num_gt = len(dt_segmentations), len(gt_segmentations)
    inter = np.zeros((num_dt, num_gt))
    dt_area = np.zeros(num_dt)
    gt_area = np.zeros(num_gt)
    if num_dt == 0 or num_gt == 0:
        return inter
    num_frames = len(gt_segmentations[0])
    for frame_idx in range(num_frames):
        dt_idx = [i for i, s in enumerate(dt_segmentations) if s[frame_idx] is not None]
        gt_idx = [j for j, s in enumerate(gt_segmentations) if s[frame_idx] is not None]
        dt_rles = [dt_segmentations[i][frame_idx] for i in dt_idx]
        gt_rles = [gt_segmentations[j][frame_idx] for j in gt_idx]
        a_dt = mask_utils.area(dt_rles).astype(np.float64) if dt_rles else np.zeros(0)
        a_gt = mask_utils.area(gt_rles).astype(np.float64) if gt_rles else np.zeros(0)
        dt_area[dt_idx] += a_dt
        gt_area[gt_idx] += a_gt
        if not dt_rles or not gt_rles:
            continue
        iou = np.asarray(mask_utils.iou(dt_rles, gt_rles, [0] * len(gt_rles)), dtype=np.float64)
        # pycocotools returns only I / (a + b - I); invert it for the integer intersection.
        # The rounding error is ~1e-10 px, so np.rint recovers the exact pixel count.
        frame_inter = np.rint(iou * (a_dt[:, None] + a_gt[None, :]) / (1.0 + iou))
        inter[np.ix_(dt_idx, gt_idx)] += frame_inter
    # Per-frame unions |d|+|g|-|d∩g| summed over frames, where a missing mask has area 0.
    union = dt_area[:, None] + gt_area[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


# --------------------------------------------------------------------------- matching


@dataclass
class _VideoEval:
    dt_scores: np.ndarray  # (D,) score-sorted
    dt_matched: np.ndarray  # (T, D) bool
    dt_ignore: np.ndarray  # (T, D) bool
    gt_ignore: np.ndarray  # (G,) bool


def _evaluate_video(
    ious: np.ndarray, gts: list[_Track], dts: list[_Track], area_rng: tuple[float, float]
) -> _VideoEval:
    """COCO greedy matching of one video's score-sorted detections in one area range."""
    lo, hi = area_rng
    gt_out = [g.ignore or g.avg_area < lo or g.avg_area > hi for g in gts]
    # Ignored GT go last (stable), so a detection prefers a regular GT of equal IoU.
    gt_order = np.argsort(np.array(gt_out, dtype=np.int64), kind="mergesort")
    gt_ignore = np.array([gt_out[i] for i in gt_order], dtype=bool)
    crowd = np.array([gts[i].ignore for i in gt_order], dtype=bool)
    ious = ious[:, gt_order] if ious.size else ious
    num_thr, num_dt, num_gt = len(IOU_THRESHOLDS), len(dts), len(gts)
    gt_matched = np.zeros((num_thr, num_gt), dtype=bool)
    dt_matched = np.zeros((num_thr, num_dt), dtype=bool)
    dt_ignore = np.zeros((num_thr, num_dt), dtype=bool)
    if num_dt and num_gt:
        for t, thr in enumerate(IOU_THRESHOLDS):
            for d in range(num_dt):
                best_iou = min(thr, 1 - 1e-10)
                best = -1
                for g in range(num_gt):
                    if gt_matched[t, g] and not crowd[g]:
                        continue
                    # Already matched a regular GT and only ignored ones remain: stop.
                    if best > -1 and not gt_ignore[best] and gt_ignore[g]:
                        break
                    if ious[d, g] < best_iou:
                        continue
                    best_iou = ious[d, g]
                    best = g
                if best == -1:
                    continue
                dt_ignore[t, d] = gt_ignore[best]
                dt_matched[t, d] = True
                gt_matched[t, best] = True
    dt_out = np.array([d.avg_area < lo or d.avg_area > hi for d in dts], dtype=bool)
    dt_ignore |= ~dt_matched & dt_out[None, :]
    return _VideoEval(
        dt_scores=np.array([d.score for d in dts], dtype=np.float64),
        dt_matched=dt_matched,
        dt_ignore=dt_ignore,
        gt_ignore=gt_ignore,
    )


def _accumulate(evals: list[_VideoEval], max_det: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled precision (T, R) and recall (T,) at one area range and maxDet; -1 if no GT."""
    num_thr, num_rec = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    precision = -np.ones((num_thr, num_rec))
    recall = -np.ones(num_thr)
    if not evals:
        return precision, recall
    scores = np.concatenate([e.dt_scores[:max_det] for e in evals])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([e.dt_matched[:, :max_det] for e in evals], axis=1)[:, order]
    ignored = np.concatenate([e.dt_ignore[:, :max_det] for e in evals], axis=1)[:, order]
    num_pos = int(np.count_nonzero(~np.concatenate([e.gt_ignore for e in evals])))
    if num_pos == 0:
        return precision, recall
    tp_cum = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fp_cum = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    for t in range(num_thr):
        tp, fp = tp_cum[t], fp_cum[t]
        num_det = len(tp)
        rc = tp / num_pos
        pr = tp / (fp + tp + _EPS)
        recall[t] = rc[-1] if num_det else 0.0
        # Monotone (interpolated) precision envelope, then sampled at the 101 recall levels;
        # levels beyond the reached recall stay 0.
        pr = np.maximum.accumulate(pr[::-1])[::-1] if num_det else pr
        q = np.zeros(num_rec)
        idx = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
        valid = idx < num_det
        q[valid] = pr[idx[valid]]
        precision[t] = q
    return precision, recall


def _summary(values: np.ndarray) -> float:
    kept = values[values > -1]
    return float(np.mean(kept)) if kept.size else -1.0


def evaluate_uvo(gt: dict | Path, pred: list | Path) -> dict[str, float]:
    """Class-agnostic YouTube-VIS AP/AR of predicted video tracks (UVO's AR100 is ``AR100``).

    Args:
        gt: YouTube-VIS GT (dict or JSON file): ``videos`` with ``id``, ``height``, ``width``
            (and ``length``), ``annotations`` with ``video_id``, ``segmentations`` (one RLE,
            polygon list or null per frame), ``areas``, ``iscrowd``. Categories are ignored.
        pred: Results (list or JSON file): ``video_id``, ``score``, ``segmentations`` (one
            compressed RLE or null per frame at the video's size); ``category_id`` is ignored.

    Returns:
        The 12 COCO/YouTube-VIS stats keyed by ``STAT_NAMES`` (AP, AP50, AP75, APs, APm, APl,
        AR1, AR10, AR100, ARs, ARm, ARl), as fractions; -1 where no GT falls in the bucket.

    Raises:
        ValueError: A file is unreadable or malformed JSON, a field is missing, a prediction
            names an unknown video, or frame counts or mask sizes disagree with the GT.
    """
    gt_data = _load(gt, "GT")
    pred_data = _load(pred, "predictions")
    videos = _video_table(gt_data)
    gt_tracks = _parse_tracks(gt_data["annotations"], videos, "GT annotations", is_gt=True)
    dt_tracks = _parse_tracks(pred_data, videos, "predictions", is_gt=False)

    max_det = MAX_DETS[-1]
    per_video: list[tuple[np.ndarray, list[_Track], list[_Track]]] = []
    for video_id in sorted(videos):
        gts = gt_tracks.get(video_id, [])
        dts = dt_tracks.get(video_id, [])
        if not gts and not dts:
            continue  # official: evaluateVid returns None, the video is skipped
        order = np.argsort([-d.score for d in dts], kind="mergesort")
        dts = [dts[i] for i in order[:max_det]]
        ious = video_iou_matrix([d.segmentations for d in dts], [g.segmentations for g in gts])
        per_video.append((ious, gts, dts))

    stats: dict[str, float] = {}
    results: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    for area_name, area_rng in AREA_RANGES.items():
        evals = [_evaluate_video(ious, gts, dts, area_rng) for ious, gts, dts in per_video]
        for m in MAX_DETS:
            results[area_name, m] = _accumulate(evals, m)

    def thr_index(value: float) -> int:
        return int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, value))[0])

    precision_all = results["all", max_det][0]
    stats["AP"] = _summary(precision_all)
    stats["AP50"] = _summary(precision_all[thr_index(0.5)])
    stats["AP75"] = _summary(precision_all[thr_index(0.75)])
    stats["APs"] = _summary(results["small", max_det][0])
    stats["APm"] = _summary(results["medium", max_det][0])
    stats["APl"] = _summary(results["large", max_det][0])
    for m in MAX_DETS:
        stats[f"AR{m}"] = _summary(results["all", m][1])
    stats["ARs"] = _summary(results["small", max_det][1])
    stats["ARm"] = _summary(results["medium", max_det][1])
    stats["ARl"] = _summary(results["large", max_det][1])
    return {name: stats[name] for name in STAT_NAMES}
