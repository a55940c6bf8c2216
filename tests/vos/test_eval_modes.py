"""``vos.run davis`` and ``vos.run uvo``: eval-only on the official references, and real runs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from vos.io.davis_png import read_palette_png, write_palette_png
from vos.run import main


def make_davis_root(root: Path, sequences: dict[str, int], hw=(64, 96)) -> Path:
    for name, num_frames in sequences.items():
        for t in range(num_frames):
            frame = np.full((*hw, 3), 30, np.uint8)
            gt = np.zeros(hw, np.uint8)
            gt[10:30, 10 + 4 * t : 30 + 4 * t] = 1
            gt[40:55, 60:80] = 2
            frame[gt == 1] = (240, 40, 40)
            frame[gt == 2] = (40, 240, 40)
            jpg = root / "JPEGImages/480p" / name / f"{t:05d}.jpg"
            jpg.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(jpg), frame)
            write_palette_png(root / "Annotations/480p" / name / f"{t:05d}.png", gt)
    listing = root / "ImageSets/2017/val.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join(sequences) + "\n")
    return root


def test_davis_eval_only_reproduces_the_official_numbers(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = data_dir / "davis-mini"
    reference = json.loads((root / "reference_official.json").read_text())
    results = tmp_path / "osvos"
    # Copy the prediction folder: eval-only writes its CSVs beside the results.
    for png in (root / "predictions" / "osvos").rglob("*.png"):
        target = results / png.relative_to(root / "predictions" / "osvos")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png.read_bytes())
    assert main(["davis", "--root", str(root), "--eval-only", str(results), "--quiet"]) == 0
    scores = json.loads((results / "scores.json").read_text())
    got = scores.get("global_metrics", scores.get("global"))
    for key, value in reference["osvos"]["global"].items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert (results / "global_results.csv").exists()
    assert (results / "per_object_jf.png").stat().st_size > 1000
    assert "J&F-Mean" in capsys.readouterr().out


def test_uvo_eval_only_reproduces_the_official_numbers(data_dir: Path, tmp_path: Path) -> None:
    folder = data_dir / "uvo-mini"
    pred = tmp_path / "pred.json"
    pred.write_bytes((folder / "pred.json").read_bytes())
    code = main(["uvo", "--annotations", str(folder / "gt.json"), "--eval-only", str(pred),
                 "--quiet"])
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    reference = json.loads((folder / "reference_official.json").read_text())
    for key, value in reference["class_agnostic"].items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["davis", "--root", "{tmp}/nowhere"], "not a DAVIS root"),
        (["davis"], "--root"),
        (["davis", "--root", "{davis}", "--sequences", "ghost"], "ghost"),
        (["uvo", "--annotations", "{tmp}/bad.json", "--eval-only", "{tmp}/bad.json"], "not valid JSON"),
        (["uvo", "--annotations", "{tmp}/missing.json"], "no such file"),
    ],
)
def test_dataset_errors_are_one_line(
    tmp_path: Path, random_checkpoint: Path, capsys: pytest.CaptureFixture,
    args: list[str], message: str,
) -> None:
    davis = make_davis_root(tmp_path / "davis", {"a": 2})
    (tmp_path / "bad.json").write_text("{not json")
    args = [a.format(tmp=tmp_path, davis=davis) for a in args]
    code = main([*args, "--checkpoint", str(random_checkpoint), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and message in err, err


def test_davis_run_writes_official_layout_and_resumes(
    tmp_path: Path, random_checkpoint: Path
) -> None:
    root = make_davis_root(tmp_path / "davis", {"seq-a": 3})
    out = tmp_path / "results"
    args = ["davis", "--root", str(root), "--output", str(out), "--checkpoint",
            str(random_checkpoint), "--quiet"]
    assert main(args) == 0
    for seq in ("seq-a",):
        pngs = sorted((out / seq).glob("*.png"))
        assert [p.stem for p in pngs] == ["00000", "00001", "00002"]
        first = read_palette_png(pngs[0])
        gt = read_palette_png(root / "Annotations/480p" / seq / "00000.png")
        assert np.array_equal(first, gt), "frame 0 holds the given masks"
        assert set(np.unique(read_palette_png(pngs[1]))) <= {0, 1, 2}
    lines = (out / "global_results.csv").read_text().splitlines()
    assert lines[0].startswith("J&F-Mean")
    assert (out / "resolved_config.yaml").exists()
    stamp = (out / "seq-a" / "00001.png").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "seq-a" / "00001.png").stat().st_mtime_ns == stamp, "complete sequences skip"


def test_uvo_run_writes_youtube_vis_results(tmp_path: Path, random_checkpoint: Path) -> None:
    root = make_davis_root(tmp_path / "davis", {"clip": 3})
    frames_root = root / "JPEGImages/480p"
    from pycocotools import mask as mask_utils

    gt_mask = read_palette_png(root / "Annotations/480p/clip/00000.png") == 1
    encoded = mask_utils.encode(np.asfortranarray(gt_mask.astype(np.uint8)))
    rle = {"size": [64, 96], "counts": encoded["counts"].decode()}
    gt = {
        "videos": [{"id": 1, "width": 96, "height": 64, "length": 3,
                    "file_names": [f"clip/{t:05d}.jpg" for t in range(3)]}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                         "segmentations": [rle] * 3, "areas": [400] * 3,
                         "bboxes": [[10, 10, 20, 20]] * 3, "height": 64, "width": 96}],
        "categories": [{"id": 1, "name": "object"}],
    }
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    out = tmp_path / "uvo"
    code = main(["uvo", "--root", str(frames_root), "--annotations", str(gt_path), "--output",
                 str(out), "--checkpoint", str(random_checkpoint), "--max-proposals", "3",
                 "--points-per-side", "4", "--set", "tracker.min_score=0.0", "--quiet"])
    assert code == 0
    pred = json.loads((out / "pred.json").read_text())
    assert len(pred) <= 3
    for track in pred:
        assert track["video_id"] == 1 and len(track["segmentations"]) == 3
        assert 0.0 <= track["score"] <= 1.5
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AR1", "AR10", "AR100"}
