"""DAVIS 2017 J&F: hand-computed cases, palette PNG I/O, and the official reference numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from vos.eval.davis import (
    GLOBAL_COLUMNS,
    DavisScores,
    boundary_f_measure,
    boundary_radius,
    disk,
    evaluate_results,
    evaluate_sequence,
    region_similarity,
    seg2bmap,
    statistics,
)
from vos.eval.davis_report import plot_per_object, write_official_csvs
from vos.io.davis_png import davis_palette, read_palette_png, write_palette_png

TOL = 1e-6


def _square(size: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[rows, cols] = True
    return mask


# --------------------------------------------------------------------------- region J


def test_region_similarity_two_4x4_masks() -> None:
    gt = _square((4, 4), slice(0, 2), slice(None))  # 8 px
    pred = _square((4, 4), slice(1, 3), slice(None))  # 8 px, 4 shared
    assert region_similarity(gt, pred) == pytest.approx(4 / 12)


@pytest.mark.parametrize(
    ("gt_px", "pred_px", "expected"),
    [
        (0, 0, 1.0),  # absent in both: official convention J = 1
        (0, 5, 0.0),  # false positive on an absent object
        (5, 0, 0.0),  # missed object
        (5, 5, 1.0),
    ],
)
def test_region_similarity_empty_conventions(gt_px: int, pred_px: int, expected: float) -> None:
    gt = np.zeros((3, 4), dtype=bool)
    pred = np.zeros((3, 4), dtype=bool)
    gt.flat[:gt_px] = True
    pred.flat[:pred_px] = True
    assert region_similarity(gt, pred) == expected


def test_region_similarity_batched_and_shape_check() -> None:
    gt = np.stack([_square((4, 4), slice(0, 2), slice(None)), np.zeros((4, 4), bool)])
    pred = np.stack([_square((4, 4), slice(0, 1), slice(None)), np.zeros((4, 4), bool)])
    np.testing.assert_allclose(region_similarity(gt, pred), [0.5, 1.0])
    with pytest.raises(ValueError, match="shapes differ"):
        region_similarity(gt, pred[:, :3])


# --------------------------------------------------------------------------- boundary F


def test_seg2bmap_filled_square() -> None:
    mask = _square((6, 6), slice(2, 4), slice(2, 4))
    expected = np.zeros((6, 6), dtype=bool)
    # Background pixels just above/left of the square (incl. the corner) and the object's
    # right column and bottom row: the contour is offset half a pixel toward the origin.
    for row, col in [(1, 1), (1, 2), (1, 3), (2, 1), (3, 1), (2, 3), (3, 2), (3, 3)]:
        expected[row, col] = True
    np.testing.assert_array_equal(seg2bmap(mask), expected)


def test_seg2bmap_last_row_column_and_corner() -> None:
    full = np.ones((3, 3), dtype=bool)
    assert not seg2bmap(full).any()
    # Only the bottom-right pixel set: compared rightwards in the last row and downwards in the
    # last column it has no differing neighbour, and the corner itself is never boundary.
    corner = np.zeros((3, 3), dtype=bool)
    corner[2, 2] = True
    expected = np.zeros((3, 3), dtype=bool)
    expected[1, 1] = expected[1, 2] = expected[2, 1] = True
    np.testing.assert_array_equal(seg2bmap(corner), expected)


def test_disk_matches_skimage_definition() -> None:
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(
        disk(2),
        [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]],
    )
    assert disk(8).shape == (17, 17)
    assert disk(8).sum() == sum(
        1 for x in range(-8, 9) for y in range(-8, 9) if x * x + y * y <= 64
    )


@pytest.mark.parametrize(("hw", "radius"), [((480, 854), 8), ((480, 910), 9), ((480, 1152), 10)])
def test_boundary_radius_davis_sizes(hw: tuple[int, int], radius: int) -> None:
    assert boundary_radius(*hw) == radius


def test_boundary_radius_absolute_pixels() -> None:
    assert boundary_radius(480, 854, bound_th=3) == 3


def test_f_identical_masks_is_one() -> None:
    mask = _square((20, 20), slice(5, 12), slice(3, 9))
    assert boundary_f_measure(mask, mask) == 1.0


@pytest.mark.parametrize(
    ("gt_empty", "pred_empty", "expected"),
    [(True, True, 1.0), (False, True, 0.0), (True, False, 0.0)],
)
def test_f_degenerate_cases(gt_empty: bool, pred_empty: bool, expected: float) -> None:
    square = _square((20, 20), slice(5, 10), slice(5, 10))
    empty = np.zeros((20, 20), dtype=bool)
    gt = empty if gt_empty else square
    pred = empty if pred_empty else square
    assert boundary_f_measure(gt, pred) == expected


def test_f_shifted_square_hand_computed() -> None:
    # 5x5 squares; each boundary is the 20-pixel ring of the 6x6 box one pixel up-left.
    # GT ring: rows 4..9 x cols 4..9; prediction ring: rows 4..9 x cols 6..11. With a 1-px
    # cross tolerance, prediction pixels in reach of the GT ring: top and bottom rows at cols
    # 6..10 (5 + 5) plus (5, 6) and (8, 6) just below/above them = 12 of 20; by symmetry 12
    # of 20 GT pixels are in reach of the prediction, so P = R = F = 0.6.
    gt = _square((20, 20), slice(5, 10), slice(5, 10))
    pred = _square((20, 20), slice(5, 10), slice(7, 12))
    assert boundary_f_measure(gt, pred, bound_th=1) == pytest.approx(0.6)
    # A 1-column shift stays inside the tolerance everywhere.
    pred1 = _square((20, 20), slice(5, 10), slice(6, 11))
    assert boundary_f_measure(gt, pred1, bound_th=1) == 1.0
    # Far apart: nothing matches.
    far = _square((20, 20), slice(5, 10), slice(14, 19))
    assert boundary_f_measure(gt, far, bound_th=1) == 0.0


def test_f_crop_equals_full_frame_dilation() -> None:
    # Masks touching the image border exercise the crop clipping of the dilation window.
    rng = np.random.default_rng(0)
    for _ in range(10):
        # Small random rectangles, often clipped by the image border, so the crop matters.
        gt = np.zeros((40, 60), dtype=bool)
        pred = np.zeros((40, 60), dtype=bool)
        for mask in (gt, pred):
            top, left = rng.integers(-5, 40), rng.integers(-5, 60)
            mask[
                max(top, 0) : top + rng.integers(1, 15), max(left, 0) : left + rng.integers(1, 15)
            ] = True
        if not (gt.any() and pred.any()):
            continue
        gb, pb = seg2bmap(gt), seg2bmap(pred)
        kernel = disk(boundary_radius(40, 60))
        gd = cv2.dilate(gb.astype(np.uint8), kernel) > 0
        pd = cv2.dilate(pb.astype(np.uint8), kernel) > 0
        precision = (pb & gd).sum() / pb.sum()
        recall = (gb & pd).sum() / gb.sum()
        total = precision + recall
        expected = 2 * precision * recall / total if total else 0.0
        assert boundary_f_measure(gt, pred) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- statistics


def test_statistics_mean_recall_decay_with_half_tie() -> None:
    # n = 7: linspace(1, 7, 5) = [1, 2.5, 4, 5.5, 7]; the official +1e-10 rounds the .5 ties
    # up, giving ids [0, 2, 3, 5, 6]: bin 0 = v[0..2], bin 3 = v[5..6].
    values = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    mean, recall, decay = statistics(values)
    assert mean == pytest.approx(2 / 7)
    assert recall == pytest.approx(2 / 7)
    assert decay == pytest.approx(2 / 3)  # round-half-even would give 1.0


def test_statistics_ignores_nan_and_uses_strict_threshold() -> None:
    mean, recall, _ = statistics(np.array([0.5, np.nan, 1.0, 0.0, 1.0]))
    assert mean == pytest.approx(2.5 / 4)
    # Recall counts > 0.5 over all frames (NaN > 0.5 is False, as in the official code).
    assert recall == pytest.approx(2 / 5)


def test_evaluate_sequence_two_objects() -> None:
    gt = np.zeros((2, 4, 4), dtype=np.uint8)
    gt[:, :2, :2] = 1
    gt[:, 2:, 2:] = 2
    pred = gt.copy()
    pred[1][pred[1] == 2] = 0  # object 2 lost on the second frame
    j, f = evaluate_sequence(gt, pred, num_objects=2)
    np.testing.assert_allclose(j, [[1.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(f, [[1.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="object id 3"):
        evaluate_sequence(gt, np.full_like(gt, 3), num_objects=2)


# --------------------------------------------------------------------------- palette PNG


def test_palette_png_round_trip(tmp_path: Path) -> None:
    labels = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7)
    labels[0, 0] = 255
    path = tmp_path / "sub" / "00000.png"
    write_palette_png(path, labels)
    with Image.open(path) as image:
        assert image.mode == "P"
        palette = image.getpalette()
    assert palette is not None
    assert palette[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]  # VOC: black, dark red, dark green
    assert palette[255 * 3 : 256 * 3] == [224, 224, 192]
    np.testing.assert_array_equal(read_palette_png(path), labels)
    assert [p.name for p in path.parent.iterdir()] == ["00000.png"]  # no temp file left


def test_palette_png_overwrite_and_bool(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    write_palette_png(path, np.full((3, 3), 7, dtype=np.int64))
    write_palette_png(path, np.eye(3, dtype=bool))
    np.testing.assert_array_equal(read_palette_png(path), np.eye(3, dtype=np.uint8))


def test_davis_palette_matches_real_annotation(data_dir: Path) -> None:
    path = data_dir / "davis-mini" / "Annotations" / "480p" / "dog" / "00000.png"
    with Image.open(path) as image:
        assert image.getpalette()[:768] == davis_palette()


def test_palette_png_rejects_bad_files(tmp_path: Path) -> None:
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (4, 4)).save(rgb)
    with pytest.raises(ValueError, match=r"rgb\.png") as info:
        read_palette_png(rgb)
    assert "\n" not in str(info.value)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"junk\.png"):
        read_palette_png(junk)
    with pytest.raises(ValueError, match=r"missing\.png"):
        read_palette_png(tmp_path / "missing.png")
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((2, 2), 3, dtype=np.uint8)).save(grey)
    np.testing.assert_array_equal(read_palette_png(grey), np.full((2, 2), 3))
    with pytest.raises(ValueError, match=r"grey\.png"):
        read_palette_png(grey, allow_grayscale=False)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 2, 3), np.uint8), np.full((2, 2), 256), np.full((2, 2), -1), np.ones((2, 2))],
)
def test_write_palette_png_rejects_bad_arrays(tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        write_palette_png(tmp_path / "x.png", bad)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- synthetic root


def _make_root(root: Path, gt: np.ndarray, seq: str = "seq") -> None:
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text(f"{seq}\n")
    for frame_idx, labels in enumerate(gt):
        write_palette_png(root / "Annotations" / "480p" / seq / f"{frame_idx:05d}.png", labels)
        jpg = root / "JPEGImages" / "480p" / seq / f"{frame_idx:05d}.jpg"
        jpg.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", labels.shape[::-1]).save(jpg)


def _write_results(folder: Path, pred: np.ndarray, seq: str = "seq") -> None:
    for frame_idx, labels in enumerate(pred):
        write_palette_png(folder / seq / f"{frame_idx:05d}.png", labels)


@pytest.fixture
def two_object_gt() -> np.ndarray:
    gt = np.zeros((5, 16, 16), dtype=np.uint8)
    gt[:, 2:6, 2:6] = 1
    gt[:, 9:14, 8:14] = 2
    return gt


def test_evaluate_results_perfect_ignores_first_and_last(
    tmp_path: Path, two_object_gt: np.ndarray
) -> None:
    _make_root(tmp_path / "davis", two_object_gt)
    pred = two_object_gt.copy()
    pred[0] = 0  # frame 0 and the last frame are not scored
    pred[-1] = 2
    _write_results(tmp_path / "res", pred)
    scores = evaluate_results(tmp_path / "davis", tmp_path / "res")
    assert list(scores.per_object) == ["seq_1", "seq_2"]
    assert all(scores.global_metrics[name] == 1.0 for name in GLOBAL_COLUMNS if "Decay" not in name)
    assert scores.global_metrics["J-Decay"] == 0.0
    assert scores.per_frame_j["seq_1"].shape == (3,)


def test_evaluate_results_lost_object_and_void(tmp_path: Path, two_object_gt: np.ndarray) -> None:
    gt = two_object_gt.copy()
    gt[:, 0, :] = 255  # void row: background for scoring, and never passed as a void mask
    _make_root(tmp_path / "davis", gt)
    pred = two_object_gt.copy()
    pred[pred == 2] = 0  # object 2 never predicted -> J = F = 0 on every scored frame
    pred[:, 0, :4] = 1  # 4 false-positive pixels on the void row for object 1 (16 -> 16/20)
    _write_results(tmp_path / "res", pred)
    scores = evaluate_results(tmp_path / "davis", tmp_path / "res")
    assert scores.per_object["seq_2"]["J-Mean"] == 0.0
    assert scores.per_object["seq_2"]["F-Mean"] == 0.0
    assert scores.per_object["seq_1"]["J-Mean"] == pytest.approx(16 / 20)
    assert scores.per_object["seq_1"]["J-Recall"] == 1.0
    j_mean = (16 / 20 + 0.0) / 2
    assert scores.global_metrics["J-Mean"] == pytest.approx(j_mean)
    f_mean = scores.global_metrics["F-Mean"]
    assert scores.global_metrics["J&F-Mean"] == pytest.approx((j_mean + f_mean) / 2)


def test_evaluate_results_errors(tmp_path: Path, two_object_gt: np.ndarray) -> None:
    _make_root(tmp_path / "davis", two_object_gt)
    _write_results(tmp_path / "res", two_object_gt)
    (tmp_path / "res" / "seq" / "00002.png").unlink()
    with pytest.raises(ValueError, match=r"missing result frame .*00002\.png"):
        evaluate_results(tmp_path / "davis", tmp_path / "res")
    bad_ids = two_object_gt.copy()
    bad_ids[2, 0, 0] = 3
    _write_results(tmp_path / "res3", bad_ids)
    with pytest.raises(ValueError, match="object id 3"):
        evaluate_results(tmp_path / "davis", tmp_path / "res3")
    _write_results(tmp_path / "small", two_object_gt[:, :8, :8])
    with pytest.raises(ValueError, match="GT"):
        evaluate_results(tmp_path / "davis", tmp_path / "small")
    with pytest.raises(ValueError, match=r"ImageSets.*test\.txt"):
        evaluate_results(tmp_path / "davis", tmp_path / "res", split="test")
    with pytest.raises(ValueError, match="not found"):
        evaluate_results(tmp_path / "nowhere", tmp_path / "res")
    for jpg in (tmp_path / "davis" / "JPEGImages" / "480p" / "seq").iterdir():
        jpg.unlink()
    with pytest.raises(ValueError, match="JPEG"):
        evaluate_results(tmp_path / "davis", tmp_path / "res")


def test_write_official_csvs_format_and_overwrite(tmp_path: Path) -> None:
    per_object = {
        "a_1": {"J-Mean": 0.5, "J-Recall": 1.0, "J-Decay": 0.0, "F-Mean": 0.25},
        "b_1": {"J-Mean": 0.12345, "J-Recall": 0.0, "J-Decay": 0.1, "F-Mean": 0.75},
    }
    for values in per_object.values():
        values.update({"F-Recall": 0.5, "F-Decay": -0.25})
    global_metrics = dict(
        zip(GLOBAL_COLUMNS, [0.4, 0.311725, 0.5, 0.05, 0.5, 0.5, -0.25], strict=True)
    )
    scores = DavisScores(global_metrics=global_metrics, per_object=per_object)
    (tmp_path / "global_results.csv").write_text("stale\n")
    paths = write_official_csvs(scores, tmp_path)
    with open(paths["global"], newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"],
        ["0.400", "0.312", "0.500", "0.050", "0.500", "0.500", "-0.250"],
    ]
    with open(paths["per_sequence"], newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["Sequence", "J-Mean", "F-Mean"],
        ["a_1", "0.500", "0.250"],
        ["b_1", "0.123", "0.750"],
    ]
    payload = json.loads(paths["json"].read_text())
    assert payload["global"]["J-Mean"] == 0.311725
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "global_results.csv",
        "per-sequence_results.csv",
        "scores.json",
    ]


def test_plot_per_object_writes_png(tmp_path: Path) -> None:
    per_object = {f"s_{i}": dict.fromkeys(("J-Mean", "F-Mean"), i / 4) for i in range(1, 4)}
    scores = DavisScores(global_metrics={"J&F-Mean": 0.5}, per_object=per_object)
    path = plot_per_object(scores, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- official numbers


@pytest.mark.parametrize("dataset", ["davis-mini", "davis-mini-2obj"])
def test_matches_official_reference(data_dir: Path, dataset: str) -> None:
    root = data_dir / dataset
    reference = json.loads((root / "reference_official.json").read_text())
    folders = sorted(p.name for p in (root / "predictions").iterdir() if p.is_dir())
    assert sorted(reference) == folders
    errors: list[str] = []
    max_diff = 0.0
    for name, expected in reference.items():
        scores = evaluate_results(root, root / "predictions" / name)
        assert list(scores.per_object) == list(expected["per_object"]), name
        pairs = [
            (f"global {k}", scores.global_metrics[k], v) for k, v in expected["global"].items()
        ]
        pairs += [
            (f"{obj} {k}", scores.per_object[obj][k], v)
            for obj, values in expected["per_object"].items()
            for k, v in values.items()
        ]
        assert len(pairs) == 7 + 6 * len(expected["per_object"])
        for label, got, want in pairs:
            max_diff = max(max_diff, abs(got - want))
            if not abs(got - want) <= TOL:
                errors.append(f"{name} {label}: got {got!r}, official {want!r}")
    assert not errors, "\n".join(errors)
    assert max_diff <= TOL


def test_official_csvs_from_real_results(data_dir: Path, tmp_path: Path) -> None:
    root = data_dir / "davis-mini-2obj"
    scores = evaluate_results(root, root / "predictions" / "id_swap_mid", sequences=["dog"])
    paths = write_official_csvs(scores, tmp_path)
    rows = list(csv.reader(paths["per_sequence"].read_text().splitlines()))
    assert [row[0] for row in rows] == ["Sequence", "dog_1", "dog_2"]
    assert float(rows[1][1]) == pytest.approx(scores.per_object["dog_1"]["J-Mean"], abs=5e-4)
