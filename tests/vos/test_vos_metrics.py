"""Each preset's scores against the official evaluator's numbers, on samples from shared/data.

What is compared, per preset (TOL = 1e-6 on every figure; vos-benchmark figures in its
percent scale, i.e. 1e-8 of a fraction):

* ``davis2016``, ``mose``: the DAVIS rule on the sample's own layout (DAVIS 2016 masks
  stored as 255, MOSE folders without ImageSets) reproduces ``reference_official.json``,
  which davis2017-evaluation itself computed on the same masks and prediction folders.
* ``sa-v``, ``generic``, ``youtube-vos``: the vos-benchmark rule against vos-benchmark's own
  code (``pip install vos-benchmark``, the per-frame evaluator that SA-V's
  ``sav_evaluator.py`` copies), run here on the same folders: ``VideoEvaluator`` on palette
  folders; for SA-V its ``Evaluator`` fed each object folder's binarised masks, frames
  selected as ``sav_benchmark.VideoEvaluator`` does (sorted, first and last dropped).
  YouTube-VOS's seen/unseen means are then formed from those official per-object numbers.
* ``lvos``: lvos-evaluation is not installable; its aggregation is restated below from its
  ``evaluation.py``/``utils.py`` ((1, frame_nums) arrays, Decay taken on that 2-D array,
  V rounded to 4 places before the square root) and fed per-frame J and F from
  vos-benchmark's evaluator, i.e. computed by a route independent of ours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.vos.vos_samples import Source, build, convert_results
from vos.eval.benchmarks import score_dataset
from vos.eval.datasets import VosDataset
from vos.eval.presets import PRESETS

TOL = 1e-6


def _dataset(root: Path, preset: str) -> VosDataset:
    return VosDataset(root, PRESETS[preset])


def _compare(got: dict, want: dict, scale: float = 1.0) -> float:
    """Max |got * scale - want| over want's keys (asserting each is within TOL)."""
    worst = 0.0
    for key, value in want.items():
        diff = abs(got[key] * scale - value)
        assert diff <= TOL, (key, got[key] * scale, value)
        worst = max(worst, diff)
    return worst


@pytest.mark.parametrize(("preset", "dataset"), [("davis2016", "davis-mini"),
                                                 ("mose", "davis-mini-2obj")])
def test_davis_rule_presets_reproduce_the_official_numbers(
    data_dir: Path, tmp_path: Path, preset: str, dataset: str
) -> None:
    src_root = data_dir / dataset
    reference = json.loads((src_root / "reference_official.json").read_text())
    seqs = {p.name: None for p in sorted((src_root / "JPEGImages/480p").iterdir())}
    root = build(Source(src_root, seqs), tmp_path / preset, preset, truth=False)
    for name in ("osvos", "noisy_blobs", "id_swap_mid", "lost_and_dilated"):
        if name not in reference:
            continue
        expected = reference[name]
        results = convert_results(src_root / "predictions" / name, tmp_path / "res" / name,
                                  preset, seqs)
        scores = score_dataset(_dataset(root, preset), results)
        assert sorted(scores.per_object) == sorted(expected["per_object"]), name
        _compare(scores.global_metrics, expected["global"])
        for key, values in expected["per_object"].items():
            _compare(scores.per_object[key], values)


@pytest.fixture(scope="module")
def late_sample() -> Source:
    """davis-mini-2obj's first 33 frames, dog's object 2 entering on frame 7, car-shadow's
    object 1 leaving on frames 9..20 and coming back."""
    from tests.conftest import SHARED_DIR

    root = SHARED_DIR / "data" / "davis-mini-2obj"
    if not root.is_dir():
        pytest.skip(f"shared test data not found in {root}")
    return Source(root, {"dog": 33, "car-shadow": 33}, late={"dog": (2, 7)},
                  gap={"car-shadow": (1, 9, 21)})


PREDICTIONS = ("id_swap_mid", "lost_and_dilated", "copy_first_frame")


def _official_palette(gt_root: Path, res_root: Path, seqs: list[str]) -> dict[str, tuple]:
    benchmark = pytest.importorskip("vos_benchmark.benchmark")
    out = {}
    for seq in seqs:
        _, iou, boundary = benchmark.VideoEvaluator(str(gt_root), str(res_root))(seq)
        out.update({f"{seq}_{obj}": (iou[obj], boundary[obj]) for obj in iou})
    return out


@pytest.mark.parametrize(("preset", "predictions"), [
    ("generic", ("lost_and_dilated",)), ("youtube-vos", ("id_swap_mid", "copy_first_frame"))])
def test_vos_benchmark_rule_matches_vos_benchmark(
    late_sample: Source, tmp_path: Path, preset: str, predictions: tuple[str, ...]
) -> None:
    root = build(late_sample, tmp_path / preset, preset, truth=False)
    data = _dataset(root, preset)
    for name in predictions:
        results = convert_results(late_sample.root / "predictions" / name, tmp_path / name,
                                  preset, late_sample.seqs)
        official = _official_palette(data.annotations_root, results, list(late_sample.seqs))
        scores = score_dataset(data, results, seen={"dog"})
        assert sorted(scores.per_object) == sorted(official)
        for key, (j, f) in official.items():
            _compare(scores.per_object[key], {"J-Mean": j, "F-Mean": f}, 100)
        js, fs = [v[0] for v in official.values()], [v[1] for v in official.values()]
        _compare(scores.global_metrics, {"J-Mean": np.mean(js), "F-Mean": np.mean(fs)}, 100)
        if preset == "youtube-vos":
            # The server's rule: J and F over the objects of seen and of unseen categories
            # (object 1 is a "dog", seen; object 2 a "car", unseen), final = mean of four.
            groups = {g: [v for k, v in official.items() if k.endswith(s)]
                      for g, s in (("seen", "_1"), ("unseen", "_2"))}
            four = {f"{m}-{g}-Mean": np.mean([v[i] for v in groups[g]])
                    for g in groups for i, m in enumerate("JF")}
            four["J&F-Mean"] = np.mean(list(four.values()))
            _compare(scores.global_metrics, four, 100)


def test_sav_rule_matches_the_sav_evaluator(late_sample: Source, tmp_path: Path) -> None:
    evaluator = pytest.importorskip("vos_benchmark.evaluator")
    root = build(late_sample, tmp_path / "sav", "sa-v", truth=False)
    data = _dataset(root, "sa-v")
    assert data.read_objects("dog", "00000")[2].sum() == 0  # object 001 enters later
    for name in PREDICTIONS:
        results = convert_results(late_sample.root / "predictions" / name, tmp_path / name,
                                  "sa-v", late_sample.seqs)
        scores = score_dataset(data, results)
        official = {}
        for seq in late_sample.seqs:
            for obj in data.object_folders(seq):
                gt_dir = data.annotations_dir(seq) / obj
                ev = evaluator.Evaluator(name=seq)
                for frame in sorted(p.name for p in gt_dir.iterdir())[1:-1]:
                    gt = np.array(Image.open(gt_dir / frame)) > 0
                    pred = np.array(Image.open(results / seq / obj / frame)) > 0
                    ev.feed_frame(mask=pred, gt=gt)
                iou, boundary = ev.conclude()
                official[f"{seq}_{obj}"] = (iou[True], boundary[True])
        assert sorted(scores.per_object) == sorted(official)
        for key, (j, f) in official.items():
            _compare(scores.per_object[key], {"J-Mean": j, "F-Mean": f}, 100)
        j_all = np.mean([v[0] for v in official.values()])
        f_all = np.mean([v[1] for v in official.values()])
        _compare(scores.global_metrics, {"J-Mean": j_all, "F-Mean": f_all,
                                         "J&F-Mean": (j_all + f_all) / 2}, 100)


def _frame_jf(evaluator, gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """One frame's J and F from vos-benchmark's evaluator; absent from both: 1 and 1 (the
    DAVIS convention lvos-evaluation's db_eval_iou/f_measure follow)."""
    if not gt.any() and not pred.any():
        return 1.0, 1.0
    ev = evaluator.Evaluator()
    ev.feed_frame(mask=pred.astype(np.uint8), gt=gt.astype(np.uint8))
    iou, boundary = ev.conclude()
    if 1 not in iou:  # object only in the prediction: J = 0; F = 0 (no GT boundary)
        return 0.0, 0.0
    return iou[1] / 100, boundary[1] / 100


def _lvos_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """lvos-evaluation's db_statistics on its (1, n) per-object array."""
    mean, recall = np.nanmean(values), np.nanmean(values > 0.5)
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.uint8)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    return mean, recall, np.nanmean(bins[0]) - np.nanmean(bins[3])


def test_lvos_rule_matches_lvos_evaluation(late_sample: Source, tmp_path: Path) -> None:
    evaluator = pytest.importorskip("vos_benchmark.evaluator")
    root = build(late_sample, tmp_path / "lvos", "lvos", truth=False)
    data = _dataset(root, "lvos")
    for name in PREDICTIONS:
        results = convert_results(late_sample.root / "predictions" / name, tmp_path / name,
                                  "lvos", late_sample.seqs)
        scores = score_dataset(data, results)
        want_global: dict[str, list[float]] = {}
        for seq, video in data.meta.items():
            for position, (obj, entry) in enumerate(video["objects"].items(), start=1):
                span = entry["frame_range"]
                j = np.zeros((1, span["frame_nums"]))
                f = np.zeros((1, span["frame_nums"]))
                for slot, t in enumerate(range(span["start"], span["end"], 5)):
                    gt = np.array(Image.open(root / "Annotations" / seq / f"{t:08d}.png"))
                    pred = np.array(Image.open(results / seq / f"{t:08d}.png"))
                    j[0, slot], f[0, slot] = _frame_jf(evaluator, gt == int(obj),
                                                       pred == int(obj))
                jm, jr, jd = _lvos_statistics(j)
                fm, fr, fd = _lvos_statistics(f)
                jf = (j + f) / 2
                v = math.sqrt(round(np.nansum((np.nanmean(jf) - jf) ** 2) / jf.shape[1], 4))
                want = {"J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm,
                        "F-Recall": fr, "F-Decay": fd, "V": v}
                _compare(scores.per_object[f"{seq}_{position}"], want)
                for key, value in want.items():
                    want_global.setdefault(key, []).append(value)
        means = {k if k != "V" else "V-Mean": float(np.mean(v)) for k, v in want_global.items()}
        means["J&F-Mean"] = (means["J-Mean"] + means["F-Mean"]) / 2
        _compare(scores.global_metrics, means)
        assert scores.global_metrics["J-Decay"] == 0.0  # the official 2-D array quirk
