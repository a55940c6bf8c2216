"""The bench report: its rows, the issue's targets, markdown rendering and the two files.

:class:`Report` is what ``bench.json`` holds; :func:`render_markdown` is what ``bench.md``
holds and what ``python -m vos.bench`` prints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vos.io.atomic import write_text_atomic

# The targets (#7); each is checked against this run's own numbers.
TARGET_ENCODER_S = 1.40
TARGET_GEMM_FRACTION = 0.93
TARGET_DECODER_RATIO = 2.0
TARGET_LOOP_FRACTION = 0.9
TARGET_FAST_FPS = 5.0
# Issue #14: 100 objects cost at most 2.5x one object per frame; 254 objects fit in 2 GB.
TARGET_OBJECTS_RATIO = 2.5
TARGET_OBJECTS_RSS_MB = 2048
# Issue #21 (native bf16 CPU): bf16 encoder <= 0.55x float32's; decoder per extra object
# <= 0.5x float32's.
TARGET_BF16_ENCODER_RATIO = 0.55
TARGET_BF16_DECODER_RATIO = 0.5
# Issue #19: re-propagation per frame at most 0.15x the first pass, a click on a stored frame
# within 100 ms, and RSS flat over a long video (growth after 250 frames within 5%).
TARGET_REPROPAGATION_RATIO = 0.15
TARGET_ANNOTATOR_CLICK_MS = 100.0  # issue 27: median, stored frame, through HTTP
# issue 27: a restored session usable this soon (s) for 50 and 2,000 frames
TARGET_RESTORE_S = {50: 2.0, 2000: 10.0}
TARGET_CLICK_MS = 100.0
TARGET_LONG_VIDEO_GROWTH = 0.05
# Issue #29 (live at camera rate), 640x480, one object: display >= 25 frames/s with a mask on
# every frame; glass-to-mask p95 <= 100 ms in a fast mode, <= 150 ms + one model frame in
# exact mode; carried masks at least as good as held ones at every distance, +0.05 J at k=2.
TARGET_LIVE_DISPLAY_FPS = 25.0
TARGET_LIVE_FAST_P95_MS = 100.0
TARGET_LIVE_EXACT_P95_MS = 150.0
TARGET_LIVE_GAIN_K2 = 0.05


@dataclass
class Report:
    """Everything one bench run measured (``bench.json``)."""

    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    gemm_gflops: float = 0.0
    encoder: list[dict[str, Any]] = field(default_factory=list)
    decoder: list[dict[str, Any]] = field(default_factory=list)
    loop: list[dict[str, Any]] = field(default_factory=list)
    agreement: list[dict[str, Any]] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)
    uvo: list[dict[str, Any]] = field(default_factory=list)
    amg: list[dict[str, Any]] = field(default_factory=list)
    predictor: list[dict[str, Any]] = field(default_factory=list)
    predictor_memory: list[dict[str, Any]] = field(default_factory=list)
    annotator: list[dict[str, Any]] = field(default_factory=list)
    live: list[dict[str, Any]] = field(default_factory=list)
    live_carry: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def malloc(self) -> str | None:
        """This process's allocator setting (``retained`` or ``system``), as rows record it."""
        return self.machine.get("malloc")


def backend_column(segmenter: Any) -> str:
    """A row's ``backend`` cell: the runtime and variant (``torch[fused]``), under any ROI."""
    return getattr(segmenter, "inner", segmenter).name.split(" ")[0]


def check_targets(report: Report, default_backend: str) -> None:
    """Compare this run's numbers with the issue's targets (appends ``report.targets``)."""
    targets = report.targets
    exact_1024 = [
        r for r in report.encoder
        if r["model"] == "repvit" and r["input"] == "1024x1024" and r.get("malloc") == report.malloc
        and r.get("precision", "f32") == "f32"
    ]
    default_rows = [r for r in exact_1024 if r["backend"].startswith(default_backend)]
    if default_rows:
        best = min(default_rows, key=lambda r: r["median_s"])
        targets.append(_target(f"encoder 1024 exact, default backend ({best['backend']}) [s]",
                               f"<= {TARGET_ENCODER_S}", best["median_s"],
                               best["median_s"] <= TARGET_ENCODER_S))
    if exact_1024:
        best = max(exact_1024, key=lambda r: r["gemm_fraction"])
        targets.append(_target(f"encoder 1024 fraction of GEMM bound ({best['backend']})",
                               f">= {TARGET_GEMM_FRACTION}", best["gemm_fraction"],
                               best["gemm_fraction"] >= TARGET_GEMM_FRACTION))
    by_backend: dict[str, dict[int, float]] = {}
    for row in report.decoder:
        if row.get("malloc") == report.malloc:
            by_backend.setdefault(row["backend"], {})[row["objects"]] = row["median_ms"]
    for backend, times in by_backend.items():
        if 1 in times and 8 in times:
            ratio = times[8] / times[1]
            targets.append(_target(f"decoder 8 objects / 1 object ({backend})",
                                   f"<= {TARGET_DECODER_RATIO}", round(ratio, 2),
                                   ratio <= TARGET_DECODER_RATIO))
    for row in report.loop:
        if row["mode"] == "exact" and row["fps_vs_encoder"] is not None:
            targets.append(_target(f"loop FPS x encoder time ({row['model']}, {row['backend']}, "
                                   f"{row['overlap']})",
                                   f">= {TARGET_LOOP_FRACTION}", row["fps_vs_encoder"],
                                   row["fps_vs_encoder"] >= TARGET_LOOP_FRACTION))
    by_count = {r["objects"]: r for r in report.objects if r["mode"] == "exact"}
    if 1 in by_count and 100 in by_count:
        ratio = by_count[100]["frame_ms"] / by_count[1]["frame_ms"]
        targets.append(_target("frame 100 objects / 1 object (exact)",
                               f"<= {TARGET_OBJECTS_RATIO}", round(ratio, 2),
                               ratio <= TARGET_OBJECTS_RATIO))
    if 254 in by_count:
        rss = by_count[254]["peak_rss_mb"]
        targets.append(_target("peak RSS with 254 objects [MB]", f"<= {TARGET_OBJECTS_RSS_MB}",
                               rss, rss <= TARGET_OBJECTS_RSS_MB))
    _predictor_targets(report)
    _annotator_targets(report)
    _bf16_targets(report)
    _live_targets(report)
    fast_rows = [r for r in report.loop if r["mode"] != "exact"]
    if fast_rows:
        best = max(fast_rows, key=lambda r: r["fps"])
        targets.append(_target(f"best fast mode loop FPS ({best['mode']}, {best['backend']})",
                               f">= {TARGET_FAST_FPS}", best["fps"], best["fps"] >= TARGET_FAST_FPS))


def _bf16_targets(report: Report) -> None:
    """Issue #21's targets: bf16 against float32 rows of this run (native bf16 only).

    Ratios of process CPU time where the rows have it (``cpu_s``, ``cpu_ms``; read them with
    ``--threads 1`` on a shared machine), else of wall time.
    """
    enc_key = "cpu_s" if all(r.get("cpu_s") for r in report.encoder) else "median_s"
    dec_key = "cpu_ms" if all(r.get("cpu_ms") for r in report.decoder) else "median_ms"
    f32_encoders = {(r["backend"], r["input"]): r[enc_key] for r in report.encoder
                    if r["model"] == "repvit" and r.get("precision") == "f32"}
    for row in report.encoder:
        base = f32_encoders.get((row["backend"], row["input"]))
        if row.get("precision") == "bf16" and row["input"] == "1024x1024" and base:
            ratio = round(row[enc_key] / base, 2)
            report.targets.append(_target(f"encoder 1024 bf16 / f32 ({row['backend']})",
                                          f"<= {TARGET_BF16_ENCODER_RATIO}", ratio,
                                          ratio <= TARGET_BF16_ENCODER_RATIO))
    per_object: dict[str, float] = {}
    for backend in ("torch", "torch bf16"):
        times = {r["objects"]: r[dec_key] for r in report.decoder
                 if r["backend"] == backend and r.get("malloc") == report.malloc}
        counts = sorted(times)
        if len(counts) >= 2:
            per_object[backend] = (times[counts[-1]] - times[counts[0]]) / (counts[-1] - counts[0])
    if len(per_object) == 2 and per_object["torch"] > 0:
        ratio = round(per_object["torch bf16"] / per_object["torch"], 2)
        report.targets.append(_target("decoder per extra object, bf16 / f32",
                                      f"<= {TARGET_BF16_DECODER_RATIO}", ratio,
                                      ratio <= TARGET_BF16_DECODER_RATIO))
    by_count = {r["objects"]: r for r in report.objects if r["mode"] == "bf16"}
    if 1 in by_count and 100 in by_count:
        ratio = round(by_count[100]["frame_ms"] / by_count[1]["frame_ms"], 2)
        report.targets.append(_target("frame 100 objects / 1 object (bf16)",
                                      f"<= {TARGET_OBJECTS_RATIO}", ratio,
                                      ratio <= TARGET_OBJECTS_RATIO))
    if 254 in by_count:
        rss = by_count[254]["peak_rss_mb"]
        report.targets.append(_target("peak RSS with 254 objects, bf16 [MB]",
                                      f"<= {TARGET_OBJECTS_RSS_MB}", rss,
                                      rss <= TARGET_OBJECTS_RSS_MB))


def _annotator_targets(report: Report) -> None:
    """Issue #27's targets from the annotator section's rows."""
    rss = {}
    for row in report.annotator:
        measure, value = row["measure"], row["value"]
        if measure.startswith("click to mask, stored frame"):
            report.targets.append(_target("annotator click-to-mask, stored frame [ms]",
                                          f"<= {TARGET_ANNOTATOR_CLICK_MS:g}", value,
                                          value <= TARGET_ANNOTATOR_CLICK_MS))
        if measure.startswith("restore,") and measure.endswith("first click answered"):
            frames = int(measure.split()[1])
            if frames in TARGET_RESTORE_S:
                goal = TARGET_RESTORE_S[frames]
                report.targets.append(_target(f"annotator restore, {frames} frames, usable [s]",
                                              f"<= {goal:g}", value, value <= goal))
        if measure.startswith("server RSS after"):
            rss[int(measure.split()[3])] = value
    if 3 in rss and max(rss) > 3:
        growth = (rss[max(rss)] - rss[3]) / rss[3]
        report.targets.append(_target(f"annotator RSS growth, 3 -> {max(rss)} sessions",
                                      "<= 0.05", round(growth, 3), growth <= 0.05))


def _predictor_targets(report: Report) -> None:
    """Issue #19's targets from the predictor section's rows."""
    for row in report.predictor:
        if row["step"].startswith("re-propagation"):
            report.targets.append(_target("predictor re-propagation / first pass, per frame",
                                          f"<= {TARGET_REPROPAGATION_RATIO}",
                                          row["vs_first_pass"],
                                          row["vs_first_pass"] <= TARGET_REPROPAGATION_RATIO))
            report.targets.append(_target("predictor re-propagation / first pass, per frame "
                                          "(process CPU time)",
                                          f"<= {TARGET_REPROPAGATION_RATIO}",
                                          row["cpu_vs_first_pass"],
                                          row["cpu_vs_first_pass"] <= TARGET_REPROPAGATION_RATIO))
            report.targets.append(_target("predictor frames encoded by the re-propagation",
                                          "0", row["encodes"], row["encodes"] == 0))
        if row["step"].startswith("click-to-mask"):
            report.targets.append(_target("predictor click-to-mask on a stored frame [ms]",
                                          f"<= {TARGET_CLICK_MS:g}", row["median_ms"],
                                          row["median_ms"] <= TARGET_CLICK_MS))
    ours = {r["frames"]: r["rss_mb"] for r in report.predictor_memory
            if r["run"].startswith("ours")}
    if len(ours) >= 2:
        start = min((f for f in ours if f >= 250), default=min(ours))
        growth = (ours[max(ours)] - ours[start]) / ours[start]
        report.targets.append(_target(f"predictor RSS growth, {start} -> {max(ours)} frames",
                                      f"<= {TARGET_LONG_VIDEO_GROWTH}", round(growth, 3),
                                      growth <= TARGET_LONG_VIDEO_GROWTH))


def _live_targets(report: Report) -> None:
    """Issue #29's targets from the live rows at 640x480 and the carry rows."""
    for row in report.live:
        if not row["camera"].startswith("640x480"):
            continue
        mode = row["mode"]
        report.targets.append(_target(f"live 640x480 display frames/s ({mode})",
                                      f">= {TARGET_LIVE_DISPLAY_FPS:g}", row["display_fps"],
                                      row["display_fps"] >= TARGET_LIVE_DISPLAY_FPS))
        report.targets.append(_target(f"live 640x480 frames shown with the mask ({mode})",
                                      "1.0", row["masked_share"], row["masked_share"] >= 1.0))
        if mode == "exact":
            model_ms = 1000.0 / max(row["model_fps"], 1e-9)
            goal = TARGET_LIVE_EXACT_P95_MS + model_ms
            report.targets.append(_target(
                f"live 640x480 latency p95, exact [ms] (150 + one model frame, "
                f"{model_ms:.0f} ms)", f"<= {goal:.0f}", row["latency_p95_ms"],
                row["latency_p95_ms"] <= goal))
        else:
            report.targets.append(_target(f"live 640x480 latency p95, {mode} [ms]",
                                          f"<= {TARGET_LIVE_FAST_P95_MS:g}",
                                          row["latency_p95_ms"],
                                          row["latency_p95_ms"] <= TARGET_LIVE_FAST_P95_MS))
    if report.live_carry:
        worst = min(report.live_carry, key=lambda r: r["gain"])
        report.targets.append(_target("live carried J - held J, worst distance "
                                      f"(k={worst['k']})", ">= 0", worst["gain"],
                                      worst["gain"] >= 0))
        for row in report.live_carry:
            if row["k"] == 2:
                report.targets.append(_target("live carried J - held J at k=2",
                                              f">= {TARGET_LIVE_GAIN_K2:g}", row["gain"],
                                              row["gain"] >= TARGET_LIVE_GAIN_K2))


def _target(name: str, goal: str, value: float, met: bool) -> dict[str, Any]:
    return {"target": name, "goal": goal, "measured": value, "met": bool(met)}


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return "_(none)_\n"
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        return "–" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    """The whole report as markdown."""
    m = report.machine
    out = [
        "# vos.bench",
        "",
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('threads')} threads; torch "
        f"{m.get('torch')}, onnxruntime {m.get('onnxruntime')}, openvino {m.get('openvino')}.",
        f"fp32 GEMM bound measured in this run (best torch.mm rate, n = 2048 and 4096): "
        f"**{report.gemm_gflops:.1f} GFLOP/s**. "
        f"Timings are medians of {report.settings.get('repeats')} calls after "
        f"{report.settings.get('warmup')} warm-up call(s).",
        "",
        "## Encoder",
        "",
        markdown_table(report.encoder),
        "## Decoder (one batched call: box + point + previous logits, 3 candidates each)",
        "",
        markdown_table(report.decoder),
        "## Per-frame loop (vos.pipeline.run_video: source, tracker, sinks)",
        "",
        "fps_vs_encoder = loop FPS x encoder_alone (``encode`` timed alone just before the "
        "loop); other_ms = frame time not spent in encode or decode (tracker, queueing).",
        "",
        markdown_table(report.loop),
    ]
    if report.agreement:
        out += [
            "## Fast-mode agreement with exact mode (mean mask IoU)",
            "",
            markdown_table(report.agreement),
        ]
    if report.objects:
        out += [
            "## Object scaling (one frame: encoder, batched decoder, tracker, sinks)",
            "",
            "Medians over the frames after frame 0 (add_objects_ms: frame 0, where the N "
            "objects are added); tracker_ms = frame - encode - decode; one interpreter per row.",
            "",
            markdown_table(report.objects),
        ]
    if report.uvo:
        out += ["## UVO mode (proposals on frame 0, every one tracked)", "",
                markdown_table(report.uvo)]
    if report.amg:
        out += ["## Automatic mask generator against segment-anything 1.0 (same image, same "
                "weights; seconds per generate)", "", markdown_table(report.amg)]
    if report.predictor:
        out += ["## Video predictor, SAM 2's API (one object; medians; vs_first_pass on the "
                "same frames, measured side by side)", "", markdown_table(report.predictor)]
    if report.predictor_memory:
        out += ["## Video predictor memory over a long video (RSS)", "",
                markdown_table(report.predictor_memory)]
    if report.annotator:
        out += ["## Web annotator (default settings; clicks through its HTTP API; restore in a "
                "fresh process)", "", markdown_table(report.annotator)]
    if report.live:
        out += ["## Live at camera rate (LiveApp: a video paced as a camera, one object, the "
                "model on the newest frame, masks carried by optical flow between)", "",
                "latency = capture -> view rendered with its masks; model_latency = capture -> "
                "model result; carried_share = frames shown with carried masks; masked_share "
                "= frames shown after the first result that had the object's mask; "
                "model_alone_ms = encoder + decoder timed alone just before the run; "
                "cpu_per_wall = process CPU seconds per wall second (2 = both cores busy); "
                "load_1min = the machine's load average when the section started.",
                "", markdown_table(report.live)]
    if report.live_carry:
        out += ["## Carried against held masks (ground-truth mask of frame t carried to t+k by "
                "the live path's optical flow, mean J against the ground truth of t+k)", "",
                markdown_table(report.live_carry)]
    out += ["## Targets (issues #7, #14, #19, #27, #29)", "", markdown_table(report.targets)]
    if report.notes:
        out += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    return "\n".join(out)


def write_report(report: Report, output: Path) -> tuple[Path, Path]:
    """Write ``bench.md`` and ``bench.json`` into ``output`` (each atomically)."""
    md_path, json_path = output / "bench.md", output / "bench.json"
    write_text_atomic(md_path, render_markdown(report))
    write_text_atomic(json_path, json.dumps(asdict(report), indent=2))
    return md_path, json_path
