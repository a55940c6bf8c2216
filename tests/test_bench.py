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
