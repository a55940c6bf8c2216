"""Class-agnostic YouTube-VIS AP/AR (UVO AR100): hand-built videos and the official numbers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vos.eval.uvo import STAT_NAMES, evaluate_uvo, video_iou_matrix

TOL = 1e-6
HW = (8, 8)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _box(rows: slice, cols: slice, hw: tuple[int, int] = HW) -> np.ndarray:
    mask = np.zeros(hw, dtype=bool)
    mask[rows, cols] = True
    return mask


def _gt(tracks: dict[int, list[list[np.ndarray | None]]], hw: tuple[int, int] = HW) -> dict:
    """GT JSON from ``{video_id: [track frames, ...]}``; track ids count from 1."""
    lengths = {vid: len(frames[0]) for vid, frames in tracks.items()}
    annotations = []
    for vid, video_tracks in tracks.items():
        for frames in video_tracks:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": vid,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentations": [None if m is None else _rle(m) for m in frames],
                    "areas": [None if m is None else int(m.sum()) for m in frames],
                }
            )
    return {
        "videos": [
            {"id": vid, "height": hw[0], "width": hw[1], "length": n} for vid, n in lengths.items()
        ],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": annotations,
    }


def _pred(video_id: int, frames: list[np.ndarray | None], score: float) -> dict:
    return {
        "video_id": video_id,
        "category_id": 1,
        "score": score,
        "segmentations": [None if m is None else _rle(m) for m in frames],
    }


# --------------------------------------------------------------------------- IoU


def test_video_iou_is_ratio_of_sums() -> None:
    gt = [_box(slice(0, 2), slice(0, 4)), None, None]  # 8 px, absent, absent
    dt = [_box(slice(1, 3), slice(0, 4)), _box(slice(0, 1), slice(0, 4)), None]  # 8, 4 px
    # frame 0: |∩| = 4, |∪| = 12; frame 1: only the prediction, adds 4 to the union;
    # frame 2: both absent, adds nothing. IoU = 4 / 16 (a per-frame mean would give 1/6).
    ious = video_iou_matrix(
        [[_rle(m) if m is not None else None for m in dt]],
        [[_rle(m) if m is not None else None for m in gt]],
    )
    assert ious.shape == (1, 1)
    assert ious[0, 0] == pytest.approx(0.25)


def test_video_iou_empty_union_and_shapes() -> None:
    empty = _rle(np.zeros(HW, bool))
    assert video_iou_matrix([[empty, None]], [[None, empty]])[0, 0] == 0.0
    assert video_iou_matrix([], [[empty]]).shape == (0, 1)
    assert video_iou_matrix([[empty]], []).shape == (1, 0)


def test_video_iou_matches_dense_computation() -> None:
    rng = np.random.default_rng(3)
    num_frames = 4

    def track() -> list[np.ndarray | None]:
        return [None if rng.random() < 0.25 else rng.random(HW) > 0.5 for _ in range(num_frames)]

    dts = [track() for _ in range(5)]
    gts = [track() for _ in range(3)]
    ious = video_iou_matrix(
        [[None if m is None else _rle(m) for m in t] for t in dts],
        [[None if m is None else _rle(m) for m in t] for t in gts],
    )
    zero = np.zeros(HW, dtype=bool)
    for i, dt in enumerate(dts):
        for j, gt in enumerate(gts):
            d = np.stack([zero if m is None else m for m in dt])
            g = np.stack([zero if m is None else m for m in gt])
            union = (d | g).sum()
            expected = (d & g).sum() / union if union else 0.0
            assert ious[i, j] == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- AP / AR


def test_perfect_predictions() -> None:
    a = _box(slice(0, 3), slice(0, 3))
    b = _box(slice(4, 8), slice(4, 8))
    gt = _gt({1: [[a, a], [b, None]]})
    pred = [_pred(1, [a, a], 0.9), _pred(1, [b, None], 0.8)]
    stats = evaluate_uvo(gt, pred)
    assert list(stats) == list(STAT_NAMES)
    for name in ("AP", "AP50", "AP75", "APs", "AR10", "AR100", "ARs"):
        assert stats[name] == pytest.approx(1.0), name
    assert stats["AR1"] == pytest.approx(0.5)  # top-1 per video finds one of the two tracks
    # All GT are small (< 128² px): the medium and large buckets are empty -> -1.
    for name in ("APm", "APl", "ARm", "ARl"):
        assert stats[name] == -1.0


def test_iou_thresholds() -> None:
    gt_mask = _box(slice(0, 4), slice(0, 4))  # 16 px
    pred_mask = _box(slice(0, 4), slice(0, 3)) | _box(slice(4, 5), slice(0, 1))  # 12 ∩, 17 ∪
    gt = _gt({1: [[gt_mask]]})
    stats = evaluate_uvo(gt, [_pred(1, [pred_mask], 0.5)])
    # IoU 12/17 = 0.706: matched at thresholds 0.50..0.70 (5 of 10).
    assert stats["AR100"] == pytest.approx(0.5)
    assert stats["AP"] == pytest.approx(0.5)
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(0.0)


def test_top_100_cut_per_video() -> None:
    a = _box(slice(0, 3), slice(0, 3))
    wrong = _box(slice(5, 8), slice(5, 8))
    gt = _gt({1: [[a]]})
    decoys = [_pred(1, [wrong], 0.5 + i / 1000) for i in range(99)]
    kept = evaluate_uvo(gt, [*decoys, _pred(1, [a], 0.1)])
    # The correct track is 100th by score: recalled at maxDets 100, precision 1/100.
    assert kept["AR100"] == pytest.approx(1.0)
    assert kept["AR10"] == 0.0
    assert kept["AP"] == pytest.approx(0.01)
    cut = evaluate_uvo(gt, [*decoys, _pred(1, [wrong], 0.45), _pred(1, [a], 0.1)])
    assert cut["AR100"] == 0.0  # now 101st: dropped before matching
    assert cut["AP"] == 0.0


def test_recall_is_pooled_over_videos_and_empty_frames_count() -> None:
    a = _box(slice(0, 3), slice(0, 3))
    gt = _gt({1: [[a, a]], 2: [[a, a]], 3: [[a, a]]})
    # Video 1 found; video 2 predicted only on frame 0 (IoU 9/18 = 0.5: matched at 0.50 only);
    # video 3 missed. Pooled AR100 = (1 + 0.1 + 0) / 3.
    pred = [_pred(1, [a, a], 0.9), _pred(2, [a, None], 0.8)]
    stats = evaluate_uvo(gt, pred)
    assert stats["AR100"] == pytest.approx(1.1 / 3)


def test_crowd_gt_is_ignored() -> None:
    a = _box(slice(0, 3), slice(0, 3))
    b = _box(slice(4, 8), slice(4, 8))
    gt = _gt({1: [[a], [b]]})
    gt["annotations"][1]["iscrowd"] = 1
    # The higher-scored prediction hits the crowd region: neither TP nor FP.
    stats = evaluate_uvo(gt, [_pred(1, [b], 0.9), _pred(1, [a], 0.8)])
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AR100"] == pytest.approx(1.0)


def test_size_buckets_use_mean_present_area() -> None:
    hw = (300, 300)
    big = _box(slice(0, 200), slice(0, 200), hw)  # 40000 px: 128² < area < 256²
    gt = _gt({1: [[big, None, big]]}, hw=hw)
    stats = evaluate_uvo(gt, [_pred(1, [big, None, big], 1.0)])
    assert stats["ARm"] == pytest.approx(1.0)
    assert stats["ARs"] == -1.0
    assert stats["ARl"] == -1.0


def test_files_and_malformed_input(tmp_path: Path) -> None:
    a = _box(slice(0, 3), slice(0, 3))
    gt = _gt({1: [[a]]})
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    pred_path = tmp_path / "pred.json"
    pred_path.write_text(json.dumps([_pred(1, [a], 1.0)]))
    assert evaluate_uvo(gt_path, pred_path)["AR100"] == pytest.approx(1.0)

    broken = tmp_path / "broken.json"
    broken.write_text('{"videos": [')
    with pytest.raises(ValueError, match="malformed JSON") as info:
        evaluate_uvo(broken, pred_path)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="cannot read"):
        evaluate_uvo(tmp_path / "absent.json", pred_path)
    with pytest.raises(ValueError, match="annotations"):
        evaluate_uvo({"videos": []}, [])
    with pytest.raises(ValueError, match="list"):
        evaluate_uvo(gt, {"video_id": 1})
    with pytest.raises(ValueError, match="not in the GT"):
        evaluate_uvo(gt, [_pred(7, [a], 1.0)])
    with pytest.raises(ValueError, match="segmentations for a 1-frame video"):
        evaluate_uvo(gt, [_pred(1, [a, a], 1.0)])
    with pytest.raises(ValueError, match="mask size"):
        evaluate_uvo(gt, [_pred(1, [_box(slice(0, 2), slice(0, 2), (4, 4))], 1.0)])
    with pytest.raises(ValueError, match="score"):
        evaluate_uvo(gt, [{"video_id": 1, "segmentations": [_rle(a)]}])
    # json.loads reads NaN; a NaN score would sort anywhere and change AP silently.
    with pytest.raises(ValueError, match="not a finite number"):
        evaluate_uvo(gt, json.loads(json.dumps([_pred(1, [a], float("nan"))])))


@pytest.mark.parametrize("counts", [b"0", "", b"garbage!!", "zzzz", [3, 2], [-5, 30], [25.0]])
def test_garbled_rle_is_refused(counts: object) -> None:
    # pycocotools would read past a short RLE's end (random pixels) or crash on a bad one.
    a = _box(slice(0, 3), slice(0, 3))
    gt = _gt({1: [[a]]})
    hw = list(_rle(a)["size"])
    bad = {"size": hw, "counts": counts}
    with pytest.raises(ValueError, match="RLE counts do not describe") as info:
        evaluate_uvo(gt, [{"video_id": 1, "score": 1.0, "segmentations": [bad]}])
    assert "frame 0" in str(info.value)
    uncompressed = {"size": hw, "counts": [0, hw[0] * hw[1]]}
    assert evaluate_uvo(gt, [{"video_id": 1, "score": 1.0,
                              "segmentations": [uncompressed]}])["AR100"] == 0.0


def test_empty_prediction_list_scores_zero() -> None:
    a = _box(slice(0, 3), slice(0, 3))
    stats = evaluate_uvo(_gt({1: [[a]]}), [])
    assert stats["AR100"] == 0.0
    assert stats["AP"] == 0.0


# --------------------------------------------------------------------------- official numbers


def test_matches_official_reference(data_dir: Path) -> None:
    root = data_dir / "uvo-mini"
    expected = json.loads((root / "reference_official.json").read_text())["class_agnostic"]
    assert sorted(expected) == sorted(STAT_NAMES)
    pred = json.loads((root / "pred.json").read_text())
    # The fixture is meant to exercise the top-100 cut.
    assert max(Counter(p["video_id"] for p in pred).values()) > 100
    stats = evaluate_uvo(root / "gt.json", root / "pred.json")
    errors = [
        f"{name}: got {stats[name]!r}, official {want!r}"
        for name, want in expected.items()
        if not abs(stats[name] - want) <= TOL
    ]
    assert not errors, "\n".join(errors)
