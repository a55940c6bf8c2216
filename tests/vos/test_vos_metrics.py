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
* ``lvos``, ``lvos-v1``, ``sa-v`` (also above): ``tests/golden/official_lvos_sav.json``, what
  the official evaluators themselves reported when run on the samples of
  ``vos_samples.build_official_sample`` (4 videos, 9 objects: late entry, leave and return,
  early exit; predictions eroded, dilated, shifted, dropped, with false-positive blobs):
  lvos-evaluation's ``evaluation_method.py`` at v2 (c05e889) and v1 (457d397), with its own
  unseen list and with one naming two of the videos, and SAM 2's ``sav_benchmark``, also on
  a copy where two objects show only on their first or last annotated frame.
  ``python -m tests.vos.official_reference`` regenerates it from the official checkouts.
"""

from __future__ import annotations

import json
import math
import re
import shutil
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


GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "official_lvos_sav.json"


@pytest.fixture(scope="module")
def official() -> dict:
    """The official evaluators' numbers (``tests/vos/official_reference.py``)."""
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def official_sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The LVOS and SA-V roots of the official reference and their corrupted results."""
    from tests.conftest import SHARED_DIR
    from tests.vos.vos_samples import CORRUPTIONS, build_official_sample, write_corrupted

    data = SHARED_DIR / "data"
    if not (data / "davis-mini").is_dir() or not (data / "davis-mini-2obj").is_dir():
        pytest.skip(f"shared test data not found in {data}")
    tmp = tmp_path_factory.mktemp("official")
    roots = {"lvos": build_official_sample(data, tmp / "lvos", "lvos"),
             "sa-v": build_official_sample(data, tmp / "sav", "sa-v")}
    for preset, root in list(roots.items()):
        for recipe in CORRUPTIONS:
            roots[f"{preset}/{recipe}"] = write_corrupted(root, tmp / f"{preset}_{recipe}",
                                                          preset, recipe)
    return roots


def _same(got: float, want: float) -> float:
    """|got - want|, asserting it is within TOL (NaN only equals NaN)."""
    if math.isnan(want) or math.isnan(got):
        assert math.isnan(want) and math.isnan(got), (got, want)
        return 0.0
    assert abs(got - want) <= TOL, (got, want)
    return abs(got - want)


@pytest.mark.parametrize("preset", ["lvos", "lvos-v1"])
def test_lvos_presets_equal_the_official_evaluator(
    official: dict, official_sample: dict[str, Path], preset: str,
    caplog: pytest.LogCaptureFixture
) -> None:
    root = official_sample["lvos"]
    data = VosDataset(root, PRESETS[preset])
    custom = set(official["custom_unseen"])
    for recipe, runs in official[preset].items():
        results = official_sample[f"lvos/{recipe}"]
        for variant, unseen in (("custom_list", custom), ("official_list", None)):
            want = runs[variant]
            caplog.clear()
            scores = score_dataset(data, results, unseen=unseen)
            assert list(scores.per_object) == list(want["per_object"])  # keys and order
            for key, figures in want["per_object"].items():
                for name, value in figures.items():
                    _same(scores.per_object[key][name], value)
            got = scores.global_metrics
            if variant == "custom_list":
                for name, value in want["global"].items():
                    _same(got[name], value)
                assert not caplog.records
                continue
            # No sample video is on the official list: the official averages are NaN; ours
            # are the seen group's means, and say so.
            row = want["global"]
            assert math.isnan(row["J&F-Mean"]) and math.isnan(row["J-unseen-Mean"])
            for letter in "JFV":
                _same(got[f"{letter}-Mean"], row[f"{letter}-seen-Mean"])
                _same(got[f"{letter}-seen-Mean"], row[f"{letter}-seen-Mean"])
                assert math.isnan(got[f"{letter}-unseen-Mean"])
            _same(got["J&F-Mean"], (row["J-seen-Mean"] + row["F-seen-Mean"]) / 2)
            assert [r.getMessage().split(";")[0] for r in caplog.records] == \
                ["LVOS: no unseen video among those scored"]


def test_lvos_frame_rules_differ_as_the_releases_do(official_sample: dict[str, Path]) -> None:
    """v2 leaves out each object's first frame and its last one where the range reaches it
    (slots = frame_nums - 2); v1 scores every frame of the range (slots = frame_nums)."""
    root = official_sample["lvos"]
    results = official_sample["lvos/mixed"]
    v2 = score_dataset(VosDataset(root, PRESETS["lvos"]), results)
    v1 = score_dataset(VosDataset(root, PRESETS["lvos-v1"]), results)
    meta = json.loads((root / "valid_meta.json").read_text())["videos"]
    for seq, video in meta.items():
        for position, entry in enumerate(video["objects"].values(), start=1):
            key, span = f"{seq}_{position}", entry["frame_range"]
            frames = len(range(span["start"], span["end"], 5))
            assert len(v1.per_frame_j[key]) == span["frame_nums"]
            assert len(v2.per_frame_j[key]) == span["frame_nums"] - 2
            reached = frames == span["frame_nums"]
            # v2 slot k is v1 slot k + 1; a range short of frame_nums leaves v1's last slot 0.
            np.testing.assert_array_equal(v2.per_frame_j[key], v1.per_frame_j[key][1:-1])
            if not reached:
                assert v1.per_frame_j[key][-1] == 0 and key == "blackswan_2"


def test_lvos_unusable_ranges_are_one_line_errors_or_warnings(
    official_sample: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from vos.eval.datasets import DatasetError

    root = tmp_path / "lvos"
    shutil.copytree(official_sample["lvos"], root, symlinks=True)
    results = official_sample["lvos/mixed"]
    meta_path = root / "valid_meta.json"
    original = meta_path.read_text()
    for change, preset, message in (
        ({"frame_nums": 3}, "lvos", "10 frames in range(0, 46, 5) but frame_nums=3"),
        ({"frame_nums": 5}, "lvos-v1", "10 frames in range(0, 46, 5) but frame_nums=5"),
        ({"frame_nums": 1}, "lvos", "frame_nums=1 is below 2"),
        ({"start": "x"}, "lvos", "dog object 1 has no frame_range"),
    ):
        meta = json.loads(original)
        meta["videos"]["dog"]["objects"]["1"]["frame_range"].update(change)
        meta_path.write_text(json.dumps(meta))
        with pytest.raises(DatasetError, match=re.escape(message)):
            score_dataset(VosDataset(root, PRESETS[preset]), results)
    # frame_nums = 2 (an object on two annotated frames): v2 scores none of them. The official
    # means would turn NaN; the object is named and left out.
    meta = json.loads(original)
    meta["videos"]["dog"]["objects"]["2"]["frame_range"].update(end=21, frame_nums=2)
    meta_path.write_text(json.dumps(meta))
    caplog.clear()
    scores = score_dataset(VosDataset(root, PRESETS["lvos"]), results)
    assert "dog_2" not in scores.per_object and len(scores.per_object) == 8
    assert not math.isnan(scores.global_metrics["J&F-Mean"])
    assert any("LVOS dog_2 (object 2)" in r.getMessage() for r in caplog.records)
    assert "dog_2" in score_dataset(VosDataset(root, PRESETS["lvos-v1"]), results).per_object


def test_sav_preset_equals_the_official_sav_evaluator(
    official: dict, official_sample: dict[str, Path], tmp_path: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    from tests.vos.official_reference import strand_objects

    root = official_sample["sa-v"]
    edge = tmp_path / "edge"
    shutil.copytree(root, edge, symlinks=True)
    strand_objects(edge / "Annotations_6fps", tuple(tuple(e) for e in official["sav_edge"]))
    stranded = [f"{video}/{folder}" for video, folder, _ in official["sav_edge"]]
    for recipe in official["sa-v"]:
        results = official_sample[f"sa-v/{recipe}"]
        # On the edge copy the official code stops; without those objects it gives the numbers
        # our run on the edge copy must give, with a warning naming each left-out object.
        assert official["sa-v-edge"][recipe]["error"] == "AssertionError in consolidate"
        for sample, want_key in ((root, "sa-v"), (edge, "sa-v-edge-removed")):
            want = official[want_key][recipe]
            caplog.clear()
            scores = score_dataset(VosDataset(sample, PRESETS["sa-v"]), results)
            assert sorted(scores.per_object) == sorted(want["per_object"])
            for key, jf in want["per_object"].items():
                _same(scores.per_object[key]["J-Mean"] * 100, jf["J"])
                _same(scores.per_object[key]["F-Mean"] * 100, jf["F"])
            for ours, theirs in (("J&F-Mean", "J&F"), ("J-Mean", "J"), ("F-Mean", "F")):
                _same(scores.global_metrics[ours] * 100, want["global"][theirs])
            warned = [r.getMessage() for r in caplog.records]
            expected = stranded if sample == edge else []
            assert len(warned) == len(expected), warned
            assert all(any(name in w for w in warned) for name in expected), warned


def test_unseen_videos_option(official_sample: dict[str, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    from vos.run import main

    root, results = official_sample["lvos"], official_sample["lvos/mixed"]
    listing = tmp_path / "unseen.txt"
    listing.write_text("# two of the four\ncar-shadow\n\nbmx-trees\n")
    out = tmp_path / "res"
    shutil.copytree(results, out, symlinks=True)
    code = main(["vos", "--preset", "lvos", "--root", str(root), "--eval-only", str(out),
                 "--unseen-videos", str(listing), "--quiet"])
    assert code == 0
    glob = json.loads((out / "scores.json").read_text())["global"]
    want = score_dataset(VosDataset(root, PRESETS["lvos"]), results,
                         unseen={"car-shadow", "bmx-trees"}).global_metrics
    assert glob == want and not math.isnan(glob["J-unseen-Mean"])
    for args, message in (
        (["--preset", "lvos", "--unseen-videos", str(tmp_path / "none.txt")], "no such file"),
        (["--preset", "generic", "--unseen-videos", str(listing)], "only the LVOS presets"),
    ):
        code = main(["vos", "--root", str(root), "--eval-only", str(out), *args, "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and message in err, err


def test_packaged_unseen_lists() -> None:
    from vos.eval.benchmarks import DATA_DIR, lvos_unseen_videos

    lists = {name: lvos_unseen_videos(DATA_DIR / PRESETS[name].unseen_videos)
             for name in ("lvos", "lvos-v1")}
    assert all(len(names) > 20 for names in lists.values())
    assert all(len(name) == 8 and name.isalnum() for names in lists.values() for name in names)
