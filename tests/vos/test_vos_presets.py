"""``vos.run vos --preset P``: every benchmark layout tracked, written, scored or zipped.

Samples are a dozen frames of davis-mini-2obj (davis-mini for DAVIS 2016) in each preset's
layout, with an object that first appears on a later frame and one that leaves and comes
back; the segmenter is an oracle answering prompts with the true masks (no model), except in
the slow end-to-end run, which uses the random-weight checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.vos.vos_samples import OracleSegmenter, Source, build, is_lvos, make_oracle
from vos.config import RunConfig
from vos.eval.benchmarks import score_dataset
from vos.eval.datasets import VosDataset
from vos.eval.presets import PRESETS
from vos.eval.submission import check_submission
from vos.eval.vos_driver import (
    ParallelRun,
    ground_truth_present,
    plan_sequence,
    track_sequences,
    tracker_for,
)
from vos.io.davis_png import read_palette_png, write_palette_png
from vos.run import main

LATE_K = 4  # dog's object 2 enters on this frame


@pytest.fixture(scope="module")
def source() -> Source:
    from tests.conftest import SHARED_DIR

    root = SHARED_DIR / "data" / "davis-mini-2obj"
    if not root.is_dir():
        pytest.skip(f"shared test data not found in {root}")
    return Source(root, {"dog": 10, "car-shadow": 10}, late={"dog": (2, LATE_K)},
                  gap={"car-shadow": (1, 3, 6)})


def _sample(source: Source, tmp_path: Path, preset: str, *, sparse: bool = False) -> Path:
    if preset == "davis2016":
        single = Source(source.root.parent / "davis-mini", {"blackswan": 8, "dog": 8})
        return build(single, tmp_path / preset, preset)
    if is_lvos(preset):
        # Annotated every 5th frame, v2 scoring neither an object's first nor its last one:
        # 16 frames leave two scored frames per object.
        source = dataclasses.replace(source, seqs=dict.fromkeys(source.seqs, 16))
    return build(source, tmp_path / preset, preset, sparse=sparse)


def _run(root: Path, preset: str, out: Path, monkeypatch: pytest.MonkeyPatch,
         *extra: str) -> int:
    monkeypatch.setattr("vos.models.build_segmenter", lambda cfg, *a: OracleSegmenter(root))
    return main(["vos", "--preset", preset, "--root", str(root), "--output", str(out),
                 "--quiet", *extra])


def _frame_result(out: Path, preset: str, seq: str, t: int) -> dict[int, np.ndarray]:
    """obj_id -> mask of one result frame, in any results layout."""
    stem = f"{t:08d}" if is_lvos(preset) else f"{t:05d}"
    if PRESETS[preset].per_object:
        return {i: read_palette_png(out / seq / f"{i - 1:03d}" / f"{stem}.png") > 0
                for i in (1, 2)}
    labels = read_palette_png(out / seq / f"{stem}.png")
    return {i: labels == i for i in (1, 2)}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_tracks_writes_and_scores_its_sample(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture, preset: str
) -> None:
    root = _sample(source, tmp_path, preset)
    out = tmp_path / "out"
    assert _run(root, preset, out, monkeypatch) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert 0.9 <= scores["global"]["J&F-Mean"] <= 1.0, scores["global"]  # an oracle tracks
    assert "J&F-Mean" in capsys.readouterr().out
    assert (out / "global_results.csv").exists() and (out / "resolved_config.yaml").exists()
    if preset == "davis2016":
        assert set(np.unique(read_palette_png(out / "dog" / "00005.png"))) == {0, 1}
        return
    truth = root / "_truth" / "dog"
    entry = 4 if preset == "sa-v" else 5 if is_lvos(preset) else LATE_K  # its first mask
    first_frame_only = PRESETS[preset].objects_from == "first_frame"
    for t in range(10):
        result = _frame_result(out, preset, "dog", t)
        true = read_palette_png(sorted(truth.glob("*.png"))[t]) == 2
        if t < entry or first_frame_only:
            assert not result[2].any(), (preset, t)  # not in the tracker before its mask
        elif t == entry:
            assert np.array_equal(result[2], true), preset  # entered with its mask


def test_objects_enter_on_their_first_mask(source: Source, tmp_path: Path) -> None:
    root = _sample(source, tmp_path, "youtube-vos", sparse=True)
    data = VosDataset(root, PRESETS["youtube-vos"])
    plan = plan_sequence(data, "dog")
    assert {t: [p.obj_id for p in group] for t, group in plan.prompts.items()} == \
        {0: [1], LATE_K: [2]}
    assert not plan.has_ground_truth  # valid-style: the annotations are the prompts
    assert data.required_stems("dog") == [f"{t:05d}" for t in range(10)]
    assert not ground_truth_present(data, ["dog"])
    mose = VosDataset(_sample(source, tmp_path, "mose"), PRESETS["mose"])
    assert ground_truth_present(mose, ["dog", "car-shadow"])
    (mose.annotations_dir("dog") / "00003.png").unlink()  # the DAVIS rule needs every frame
    assert not ground_truth_present(mose, ["dog", "car-shadow"])
    sav = VosDataset(_sample(source, tmp_path, "sa-v"), PRESETS["sa-v"])
    assert {t: [p.obj_id for p in g] for t, g in plan_sequence(sav, "dog").prompts.items()} \
        == {0: [1], 4: [2]}  # 6 fps masks of 24 fps frames: it enters on frame 4


@pytest.mark.parametrize(("preset", "prefix"), [("youtube-vos", "Annotations/"), ("mose", "")])
def test_server_only_splits_write_a_zip_the_format_check_accepts(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture, preset: str, prefix: str
) -> None:
    root = _sample(source, tmp_path, preset, sparse=True)
    out = tmp_path / "out"
    assert _run(root, preset, out, monkeypatch) == 0
    assert "format check passed" in capsys.readouterr().out
    assert not (out / "scores.json").exists()
    zip_path = out / f"{preset}_submission.zip"
    data = VosDataset(root, PRESETS[preset])
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    assert names[0] == f"{prefix}car-shadow/00000.png" and len(names) == 20
    assert check_submission(zip_path, data, ["car-shadow", "dog"]) == []
    # What the server would refuse: a missing frame, a colour PNG, a wrong size, an unknown id.
    bad = tmp_path / "bad.zip"
    from PIL import Image

    with zipfile.ZipFile(zip_path) as src:
        contents = {name: src.read(name) for name in names[1:]}
    for name, image in ((names[2], Image.new("RGB", (854, 480))),
                        (names[3], Image.new("P", (10, 10)))):
        image.save(tmp_path / "x.png")
        contents[name] = (tmp_path / "x.png").read_bytes()
    write_palette_png(tmp_path / "y.png", np.full((480, 854), 7, np.uint8))
    contents[names[4]] = (tmp_path / "y.png").read_bytes()
    with zipfile.ZipFile(bad, "w") as dst:
        for name, data_bytes in contents.items():
            dst.writestr(name, data_bytes)
    problems = " | ".join(check_submission(bad, data, ["car-shadow", "dog"]))
    for expected in ("missing", "single-channel", "expected the frame's 854x480", "ids [7]"):
        assert expected in problems, problems
    code = main(["vos", "--preset", preset, "--root", str(root), "--eval-only", str(out)])
    assert code == 2 and "only the prompts" in capsys.readouterr().err


def test_runs_resume_per_sequence(source: Source, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = _sample(source, tmp_path, "mose")
    out = tmp_path / "out"
    assert _run(root, "mose", out, monkeypatch, "--sequences", "dog") == 0
    stamp = (out / "dog" / "00003.png").stat().st_mtime_ns
    assert _run(root, "mose", out, monkeypatch) == 0  # dog skipped, car-shadow tracked
    assert (out / "dog" / "00003.png").stat().st_mtime_ns == stamp
    assert (out / "car-shadow" / ".complete.json").exists()
    per_object = json.loads((out / "scores.json").read_text())["per_object"]
    assert sorted(per_object) == ["car-shadow_1", "car-shadow_2", "dog_1"]  # frame-0 objects


def test_parallel_local_pool_matches_a_serial_run(source: Source, tmp_path: Path) -> None:
    root = _sample(source, tmp_path, "lvos")
    data = VosDataset(root, PRESETS["lvos"])
    names = data.sequences()
    oracle = OracleSegmenter(root)
    serial = track_sequences(data, names, tmp_path / "serial", progress=False,
                             make_tracker=lambda: tracker_for(oracle, RunConfig(), data.preset))
    spec = ParallelRun(RunConfig(), functools.partial(make_oracle, str(root)), workers=2)
    parallel = track_sequences(data, names, tmp_path / "pool", parallel=spec, progress=False)
    assert [t.name for t in parallel] == [t.name for t in serial] == names
    assert not any(t.skipped for t in parallel)
    for png in sorted((tmp_path / "serial").rglob("*.png")):
        twin = tmp_path / "pool" / png.relative_to(tmp_path / "serial")
        assert np.array_equal(read_palette_png(png), read_palette_png(twin)), png


def test_help_lists_every_preset(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["vos", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in PRESETS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["vos", "--preset", "lvos"], "--root"),
        (["vos", "--preset", "lvos", "--root", "{root}"], "missing valid_meta.json"),
        (["vos", "--preset", "mose", "--root", "{root}", "--sequences", "ghost"], "ghost"),
        (["vos", "--preset", "youtube-vos", "--root", "{root}", "--seen-categories",
          "{root}/none.json"], "no such file"),
    ],
)
def test_dataset_errors_are_one_line(
    source: Source, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
    message: str
) -> None:
    root = _sample(source, tmp_path, "mose")
    code = main([a.format(root=root) for a in args] + ["--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and message in err, err


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
def test_end_to_end_with_the_model(source: Source, tmp_path: Path, random_checkpoint: Path,
                                   capsys: pytest.CaptureFixture, preset: str) -> None:
    root = _sample(source, tmp_path, preset, sparse=preset in ("youtube-vos", "mose"))
    out = tmp_path / "out"
    # One sequence at a 256-pixel encoder input keeps the 7 runs to minutes on 2 cores.
    code = main(["vos", "--preset", preset, "--root", str(root), "--output", str(out),
                 "--sequences", "dog", "--checkpoint", str(random_checkpoint),
                 "--set", "model.backend=torch", "--set", "model.fast_mode=size256+nopad",
                 "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "seconds/sequence" in text
    assert ("J&F-Mean" in text) != (preset in ("youtube-vos", "mose")), text


@pytest.mark.slow
def test_ray_engine_runs_the_sequences(source: Source, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    # Actors import the oracle's module by name: the checkout root must be on their path.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}})
    try:
        root = _sample(source, tmp_path, "sa-v")
        data = VosDataset(root, PRESETS["sa-v"])
        spec = ParallelRun(RunConfig(), functools.partial(make_oracle, str(root)), workers=2,
                           engine="ray")
        timings = track_sequences(data, data.sequences(), tmp_path / "ray", parallel=spec,
                                  progress=False)
    finally:
        ray.shutdown()
    assert [t.name for t in timings] == data.sequences() and all(t.frames == 10 for t in timings)
    assert score_dataset(data, tmp_path / "ray").global_metrics["J&F-Mean"] >= 0.9
