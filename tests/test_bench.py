"""Smoke test of ``python -m vos.bench --quick``: it runs, and writes the expected tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vos import bench
from vos.cli import bench as bench_cli


def test_quick_bench_writes_markdown_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    code = bench_cli.main(
        ["--quick", "--agreement", "--compare-malloc", "--threads", "1", "--backend", "torch",
         "--output", str(out)]
    )
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    markdown = (out / "bench.md").read_text()

    assert report["gemm_gflops"] > 0
    encoder = report["encoder"]
    assert report["machine"]["malloc"] == "retained"
    assert {(r["input"], r["backend"], r["malloc"]) for r in encoder} == {
        ("256x256", "torch[fused]", "retained"),
        ("192x256", "torch[fused]", "retained"),  # 160x120 frame without the bottom padding
        ("256x256", "torch[fused]", "system"),  # --compare-malloc: glibc defaults, child run
        ("192x256", "torch[fused]", "system"),
    }
    for row in encoder:
        assert row["gflops"] > 0 and row["median_s"] > 0
        assert row["gemm_fraction"] == pytest.approx(
            row["gflops"] / row["median_s"] / report["gemm_gflops"], rel=0.02
        )
    decoder = [(r["backend"], r["objects"], r["malloc"]) for r in report["decoder"]]
    assert decoder == [
        (backend, count, malloc)
        for malloc in ("retained", "system")
        for backend in ("torch", "torch[reference]")
        for count in (1, 2)
    ]
    assert [r["mode"] for r in report["loop"]] == ["size256+nopad", "roi+size256"]
    assert report["loop"][0]["frames"] == 3 and report["loop"][0]["fps"] > 0
    agreement = {r["mode"]: r for r in report["agreement"]}
    assert set(agreement) == {
        "exact", "exact, input ±1 noise (reference)", "size256+nopad", "roi+size256"
    }
    # Exact mode against itself: the same embeddings, so identical masks.
    assert agreement["exact"]["iou_same_prompts"] == 1.0
    assert 0.0 <= agreement["size256+nopad"]["iou_same_prompts"] <= 1.0
    assert 0.0 <= agreement["roi+size256"]["iou_same_prompts"] <= 1.0
    assert agreement["exact"]["real_weights"] is False
    assert any("best fast mode" in t["target"] for t in report["targets"])

    for heading in ("## Encoder", "## Decoder", "## Per-frame loop", "## Fast-mode agreement",
                    "## Targets"):
        assert heading in markdown
    assert "| repvit | torch[fused] | 256x256 |" in markdown


def test_bench_rejects_unknown_model_and_missing_backend(tmp_path: Path) -> None:
    assert bench_cli.main(["--quick", "--models", "vit_z", "--output", str(tmp_path)]) == 2


def test_default_boxes_tile_the_frame() -> None:
    boxes = bench.default_boxes((480, 854), 8)
    assert boxes.shape == (8, 4)
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
    assert (boxes >= 0).all() and (boxes[:, 2] <= 854).all() and (boxes[:, 3] <= 480).all()
    assert len({tuple(b) for b in boxes.tolist()}) == 8


def test_markdown_table_formats_cells() -> None:
    table = bench.markdown_table([{"a": 1, "b": None, "c": False}])
    assert table.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1 | – | **no** |"]
    assert np.isfinite(bench.measure_gemm_gflops((64,), repeats=1))


def test_amg_section_times_both_generators_on_the_same_proposals() -> None:
    from vos.bench.official_sam import bench_amg, official_installed

    if not official_installed():
        pytest.skip("segment-anything is not installed (pip install -e '.[dev]')")
    from vos.bench.report import Report, render_markdown

    report = Report()
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    bench_amg(report, image, points_per_side=2, repeats=1)
    rows = {row["implementation"]: row for row in report.amg}
    assert set(rows) == {"repvit_sam", "segment_anything 1.0"}
    # Same weights, image and settings: the same number of masks, each timed.
    assert rows["repvit_sam"]["masks"] == rows["segment_anything 1.0"]["masks"] > 0
    assert rows["repvit_sam"]["vs_repvit_sam"] == 1.0
    assert all(row["seconds"] > 0 and row["points"] == 4 for row in rows.values())
    assert "segment-anything 1.0" in render_markdown(report)
    # The official package and the stand-in are gone again after the section.
    import sys

    assert "segment_anything" not in sys.modules


def test_predictor_section_tables_on_a_tiny_video(tmp_path: Path) -> None:
    """The predictor section's measuring and table code on a 10-frame scene (fake model)."""
    import cv2

    from tests.vos.synthetic import FakeSegmenter, SceneObject, render
    from vos.bench.predictor import (
        looped_folder,
        measure_speed,
        memory_rows,
        ping_pong,
        speed_rows,
    )
    from vos.bench.report import Report, check_targets, render_markdown
    from vos.io.sources import open_source
    from vos.video_predictor import VideoPredictor

    scene = render([SceneObject(((0, 30, 40), (9, 42, 44)), (20, 16))], 10, (96, 128))
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(scene.frames):
        cv2.imwrite(str(folder / f"{t}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    predictor = VideoPredictor(FakeSegmenter(scene))
    box = np.array([20, 32, 40, 48], np.float32)
    measured = measure_speed(predictor, str(folder), box, frames=10, clicks=3)
    predictor.store.close()
    rows = {row["step"].split(" ")[0]: row for row in speed_rows(measured)}

    # Frame 0 was encoded by the box; the first pass encodes frames 1..9, the re-propagation
    # from the correction (frame 5) and the clicks none: every embedding comes from the store.
    assert rows["first"]["encodes"] == 9 and rows["first"]["vs_first_pass"] == 1.0
    assert rows["re-propagation"]["encodes"] == 0
    assert rows["re-propagation"]["store_memory_hits"] >= 4
    assert rows["re-propagation"]["frames"] == "6..9"
    assert rows["click-to-mask"]["encodes"] == 0 and measured["click_frames"] == [1, 4, 6]

    assert ping_pong(3, 7) == [0, 1, 2, 1, 0, 1, 2]
    files = sorted(folder.glob("*.png"), key=lambda p: int(p.stem))[:3]
    with open_source(looped_folder(files, 7, tmp_path / "long")) as source:
        looped = list(source.frames())
    assert len(looped) == 7 and np.array_equal(looped[4], scene.frames[0])

    report = Report()
    report.predictor = speed_rows(measured)
    report.predictor_memory = memory_rows(
        {100: 500.0, 250: 510.0, 2000: 512.0}, {100: 1800.0, 200: 3060.0, 400: 5580.0},
        ours_label="ours", sam2_label="SAM 2")
    sam2 = [r for r in report.predictor_memory if r["run"].startswith("SAM 2")]
    assert sam2[-1]["frames"] == 2000 and sam2[-1]["mb_per_frame"] == pytest.approx(12.6)
    assert sam2[-1]["rss_mb"] == pytest.approx(5580.0 + 12.6 * 1600)
    check_targets(report, "torch")
    targets = {t["target"]: t for t in report.targets}
    assert targets["predictor frames encoded by the re-propagation"]["met"] is True
    assert targets["predictor RSS growth, 250 -> 2000 frames"]["measured"] == pytest.approx(
        0.004, abs=1e-3)
    markdown = render_markdown(report)
    assert "## Video predictor, SAM 2's API" in markdown
    assert "## Video predictor memory over a long video" in markdown


def test_bf16_rows_sit_beside_float32_where_the_cpu_has_bf16(tmp_path: Path) -> None:
    from repvit_sam.runtime import native_bf16

    out = tmp_path / "bench"
    code = bench_cli.main(
        ["--quick", "--only", "encoder,decoder", "--precisions", "f32,bf16", "--threads", "1",
         "--backend", "torch", "--output", str(out)]
    )
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    precisions = [(r["input"], r["precision"]) for r in report["encoder"]]
    decoders = {r["backend"] for r in report["decoder"]}
    if native_bf16("cpu")[0]:
        # The backend timed in float32, then in bf16, on the same inputs.
        assert precisions == [("256x256", "f32"), ("192x256", "f32"),
                              ("256x256", "bf16"), ("192x256", "bf16")]
        assert decoders == {"torch", "torch bf16", "torch[reference]"}
        assert any(t["target"] == "decoder per extra object, bf16 / f32"
                   for t in report["targets"])
    else:
        assert {p for _, p in precisions} == {"f32"}
        assert "torch bf16" not in decoders
        assert any("no native bf16" in note for note in report["notes"])


def test_bf16_targets_compare_rows_of_one_run() -> None:
    from vos.bench.report import Report, check_targets

    report = Report(machine={"malloc": "retained"})
    for precision, seconds in (("f32", 0.8), ("bf16", 0.36)):
        report.encoder.append({"model": "repvit", "backend": "openvino", "input": "1024x1024",
                               "precision": precision, "median_s": seconds,
                               "gemm_fraction": 0.5, "malloc": "retained"})
    for backend, per_object in (("torch", 20.0), ("torch bf16", 12.0)):
        for count in (1, 8):
            report.decoder.append({"backend": backend, "objects": count, "malloc": "retained",
                                   "median_ms": 10.0 + per_object * count})
    report.objects += [{"mode": "bf16", "objects": 1, "frame_ms": 400.0, "peak_rss_mb": 600.0},
                       {"mode": "bf16", "objects": 100, "frame_ms": 1100.0,
                        "peak_rss_mb": 900.0}]
    check_targets(report, "openvino")
    targets = {t["target"]: t for t in report.targets}
    assert targets["encoder 1024 bf16 / f32 (openvino)"]["measured"] == 0.45
    assert targets["decoder per extra object, bf16 / f32"]["measured"] == 0.6
    assert targets["frame 100 objects / 1 object (bf16)"]["measured"] == 2.75
    # The exact-mode encoder target reads the float32 row only.
    assert targets["encoder 1024 exact, default backend (openvino) [s]"]["measured"] == 0.8


# bf16 against exact mode on 5 real DAVIS frames (car-shadow, two objects), synthetic weights,
# OpenVINO encoder (torch without it). Measured with native bf16 on the AMX path / oneDNN
# capped at AVX512_CORE_BF16: same-prompt mask IoU min 0.963 / 0.965, tracked mean 0.963 /
# 0.965 (the noise floor of a ±1 grey-level input change is 0.977); with the second round's
# bf16 decoder layout 0.962 / 0.964 both. Bounds: about twice the measured loss. Without
# native bf16 the mode is exact mode: skipped.
DAVIS_SAME_PROMPT_IOU_MIN = 0.92
DAVIS_TRACKED_IOU_MIN = 0.9


@pytest.mark.slow
def test_bf16_agreement_on_davis_frames(data_dir: Path) -> None:
    from repvit_sam import build_repvit_sam
    from repvit_sam.runtime import backend_available, build_segmenter
    from vos.bench.agreement import bench_agreement
    from vos.bench.inputs import fill_synthetic_weights, load_frames
    from vos.bench.report import Report

    sequence = data_dir / "davis-mini-2obj" / "JPEGImages" / "480p" / "car-shadow"
    if not sequence.is_dir():
        pytest.skip(f"{sequence} not found")
    backend = "openvino" if backend_available("openvino") else "torch"
    model = build_repvit_sam().eval()
    fill_synthetic_weights(model)
    fast = build_segmenter(model, backend, mode="bf16", threads=2)
    if not fast.mode.bf16:
        pytest.skip("no native bf16 on this machine: the bf16 mode runs float32")
    exact = build_segmenter(model, backend, threads=2)
    frames, _ = load_frames(str(sequence), 5)
    boxes = np.array([[313, 102, 509, 272], [509, 88, 655, 282]], np.float32)  # frame 0's GT
    report = Report()
    bench_agreement(report, exact, [fast], frames, boxes, weights_are_real=False, noise_frames=1)
    rows = {row["mode"]: row for row in report.agreement}
    assert rows["exact"]["iou_tracked"] == 1.0
    assert rows["bf16"]["iou_same_prompts_min"] >= DAVIS_SAME_PROMPT_IOU_MIN
    assert rows["bf16"]["iou_tracked"] >= DAVIS_TRACKED_IOU_MIN


def test_annotator_targets_read_the_section_rows() -> None:
    from vos.bench.report import Report, _annotator_targets

    report = Report(annotator=[
        {"measure": "click to mask, stored frame (HTTP, median)", "value": 80.0},
        {"measure": "restore, 50 frames, 2 objects, 4 passes (200 tracked frames): first "
                    "click answered", "value": 2.5},
        {"measure": "restore, 2000 frames, 2 objects, 4 passes (8000 tracked frames): first "
                    "click answered", "value": 3.0},
        {"measure": "server RSS after 1 session(s)", "value": 900.0},
        {"measure": "server RSS after 3 session(s)", "value": 1000.0},
        {"measure": "server RSS after 20 session(s)", "value": 1040.0},
    ])
    _annotator_targets(report)
    met = {t["target"]: t["met"] for t in report.targets}
    assert met == {"annotator click-to-mask, stored frame [ms]": True,
                   "annotator restore, 50 frames, usable [s]": False,
                   "annotator restore, 2000 frames, usable [s]": True,
                   "annotator RSS growth, 3 -> 20 sessions": True}


@pytest.mark.slow
def test_annotator_section_on_synthetic_frames() -> None:
    """The annotator section end to end, small: real model (synthetic weights), default
    settings, a 6-frame session restored in a fresh process, 1 -> 3 -> 20 sessions."""
    pytest.importorskip("flask")
    from vos.bench.annotator import bench_annotator
    from vos.bench.report import Report, check_targets, render_markdown

    report = Report()
    bench_annotator(report, video=None, checkpoint=None, box_xyxy=None, clicks=3,
                    restore_frames=[6], distinct=3, memory_frames=1, threads=2)
    measures = [r["measure"] for r in report.annotator]
    assert measures[:2] == ["click to mask, stored frame (HTTP, median)",
                            "click to mask, frame not yet encoded (median)"]
    assert any(m.startswith("restore, 6 frames") and m.endswith("first click answered")
               for m in measures)
    assert [m for m in measures if m.startswith("server RSS")] == [
        "server RSS after 1 session(s)", "server RSS after 3 session(s)",
        "server RSS after 20 session(s)"]
    assert all(r["value"] > 0 for r in report.annotator)
    check_targets(report, "openvino")
    assert any(t["target"].startswith("annotator RSS growth") for t in report.targets)
    assert "## Web annotator" in render_markdown(report)


# ---------------------------------------------------------------------------- live (issue 29)
def _davis_layout(root: Path, frames: list[np.ndarray], masks: np.ndarray, name: str) -> None:
    """One sequence in the DAVIS layout the live carry rows read."""
    import cv2

    from vos.io.davis_png import write_palette_png

    for sub in ("JPEGImages", "Annotations"):
        (root / sub / "480p" / name).mkdir(parents=True, exist_ok=True)
    for t, (frame, mask) in enumerate(zip(frames, masks, strict=True)):
        cv2.imwrite(str(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg"),
                    cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
        write_palette_png(root / "Annotations" / "480p" / name / f"{t:05d}.png",
                          mask.astype(np.uint8))
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text(f"{name}\n")


def test_live_section_on_a_fake_model_and_a_generated_sequence(tmp_path: Path) -> None:
    """The live rows from LiveApp paced as a camera, the carry rows from a generated DAVIS
    sequence with known motion, and the issue's targets read from them."""
    from tests.vos.synthetic import FakeSegmenter, SceneObject, render
    from tests.vos.test_live import textured_scene
    from vos.bench.live import carry_quality, measure_live, parse_size, ping_pong
    from vos.bench.report import Report, check_targets, render_markdown

    assert parse_size("640x480") == (480, 640)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size("640-480")
    assert [int(f[0, 0, 0]) for f in ping_pong([np.full((2, 2, 3), i, np.uint8)
                                                for i in range(3)], 7)] == [0, 1, 2, 1, 0, 1, 2]

    scene = render([SceneObject(((0, 30, 40), (19, 90, 50)), (20, 16))], 20, (96, 128))
    row = measure_live(FakeSegmenter(scene), ping_pong(scene.frames, 30),
                       np.array([18, 30, 42, 50], np.float32), fps=30.0)
    assert row["frames_captured"] == 30
    assert row["frames_shown"] + row["dropped"] == 30
    assert 0.0 <= row["carried_share"] <= 1.0 and row["masked_share"] == 1.0
    assert row["latency_p50_ms"] <= row["latency_p95_ms"]

    frames, truth = textured_scene(8, (2.5, 1.5))
    _davis_layout(tmp_path / "davis", frames, truth, "disk")
    rows, carry_ms = carry_quality(tmp_path / "davis", (1, 2, 5))
    assert [(r["k"], r["pairs"]) for r in rows] == [(1, 7), (2, 6), (5, 3)]
    assert all(r["carried_J"] > r["held_J"] + 0.1 for r in rows) and carry_ms > 0
    assert rows[0]["gain"] == pytest.approx(rows[0]["carried_J"] - rows[0]["held_J"], abs=2e-3)

    report = Report(live=[{**row, "camera": "640x480 @ 30", "mode": "exact", "model_fps": 2.0,
                           "display_fps": 29.0, "latency_p95_ms": 640.0}],
                    live_carry=[{"data": "disk", **r} for r in rows])
    check_targets(report, "openvino")
    targets = {t["target"]: t for t in report.targets}
    # Exact mode's latency goal is 150 ms plus one model frame (500 ms at 2 frames/s).
    exact = next(t for name, t in targets.items() if name.startswith("live 640x480 latency"))
    assert exact["goal"] == "<= 650" and exact["met"] is True
    assert targets["live 640x480 display frames/s (exact)"]["met"] is True
    assert targets["live carried J - held J at k=2"]["met"] is True
    markdown = render_markdown(report)
    assert "## Live at camera rate" in markdown and "## Carried against held masks" in markdown


@pytest.mark.parametrize("flags", [["--live-sizes", "640"], ["--live-modes", "size9+nope"],
                                   ["--live-ks", "0,2"], ["--live-seconds", "0"]])
def test_live_flags_are_checked_before_anything_runs(flags: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_cli.main(["--quick", "--only", "live", *flags, "--output", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"vos.bench: {flags[0]}") and out.count("\n") == 1


@pytest.mark.slow
def test_live_section_end_to_end(tmp_path: Path, data_dir: Path) -> None:
    """``--only live`` on the real model (synthetic weights), short: both tables, the targets."""
    out = tmp_path / "bench"
    assert bench_cli.main(["--only", "live", "--backend", "torch", "--threads", "2",
                           "--live-sizes", "320x240", "--live-modes", "size256+nopad",
                           "--live-seconds", "2", "--live-ks", "2", "--video",
                           str(data_dir / "videos" / "blackswan.mp4"),
                           "--output", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    (row,) = report["live"]
    assert row["camera"] == "320x240 @ 30" and row["mode"] == "size256+nopad"
    assert row["frames_shown"] > 0 and row["model_alone_ms"] > 0
    (carry,) = report["live_carry"]
    # The issue's own measurement of this flow on these frames: 0.735 carried, 0.635 held.
    assert carry["k"] == 2 and carry["pairs"] == 270
    assert carry["carried_J"] == pytest.approx(0.735, abs=0.02)
    assert carry["held_J"] == pytest.approx(0.636, abs=1e-3)
