"""The video predictor section (issue 19): what SAM 2's API costs on our tracker.

``python -m vos.bench --only predictor`` drives :mod:`vos.video_predictor` as SAM 2 code does
(exact mode by default, one object, a real video) and measures:

- **re-propagation against the first pass.** A box on frame 0, a forward pass over the first
  N frames (every frame encoded and decoded), a correction click on frame k = N // 2, and a
  second pass from k. Both passes are timed per frame on the same frames (k+1 .. N-1), and
  the second must encode no frame: the embedding store holds them all. The segmenter's
  encode counter and the store's hit counters are reported beside the times.
- **click-to-mask on a stored frame**: ``add_new_points_or_box`` on frames whose embedding is
  stored, the median over several clicks (frame read, decode, the video-sized logits).
- **memory over a long video.** The video's first frames played back and forth (0, 1, ...,
  M-1, M-2, ..., 1, 0, 1, ...) up to 2,000 frames, as a folder of links, tracked by one
  forward pass in a fresh interpreter with small store budgets (so embeddings and per-frame
  states spill to disk and come back); RSS is read at 100 / 250 / 500 / 1000 / 2000 frames.
  Repeated frames share one embedding (the store is keyed by frame content), so only the M
  distinct frames are encoded; the other frames load theirs from the disk tier.
- **SAM 2's growth**: ``sam2`` 1.1.0 (the test oracle, when installed), random weights, RSS
  after ``init_state`` on 100 / 200 / 400 frames of the same folder, one fresh interpreter
  each. ``init_state`` alone loads every frame as a 3x1024x1024 float32 tensor; its model is
  not run (its per-frame state would add to that), so the slope is a lower bound.

Without ``--checkpoint`` the model carries :func:`~vos.bench.inputs.fill_fan_in_weights`
weights, and, as in the object-scaling section, the decoder runs in full but its answers take
the object's shape (:class:`~vos.bench.objects.ObjectShaped`, an ellipse inside the box):
synthetic weights answer with shapes no trained model makes, and would lose the object.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vos.bench.timing import run_in_child

MiB = 1 << 20
LONG_MARKS = (100, 250, 500, 1000, 2000)
SAM2_FRAMES = (100, 200, 400)
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def ellipse_mask(image_hw: tuple[int, int], box_xyxy: np.ndarray) -> np.ndarray:
    """(H, W) bool: the ellipse inscribed in a box.

    Args:
        image_hw: (H, W) of the frame.
        box_xyxy: (4,) float32 XYXY in frame pixels.
    """
    h, w = image_hw
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    yy, xx = np.mgrid[0:h, 0:w]
    rx, ry = max((x1 - x0) / 2, 1.0), max((y1 - y0) / 2, 1.0)
    return ((xx + 0.5 - (x0 + x1) / 2) / rx) ** 2 + ((yy + 0.5 - (y0 + y1) / 2) / ry) ** 2 <= 1


def build_predictor(
    *,
    checkpoint: str | None,
    image_hw: tuple[int, int],
    box_xyxy: np.ndarray,
    fast_mode: str = "exact",
    backend: str = "auto",
    overrides: Sequence[str] = (),
    threads: int | None = None,
) -> Any:
    """The video predictor the section measures.

    With a checkpoint it is SAM 2's factory call, ``build_sam2_video_predictor("repvit",
    checkpoint, device="cpu")``; without one, the same predictor over a model with fan-in
    synthetic weights whose decoder answers take the object's shape (module docstring).

    Args:
        checkpoint: RepViT-SAM weights, or None (synthetic).
        image_hw: (H, W) of the video (for the object's shape).
        box_xyxy: (4,) float32 XYXY in video pixels, the object's box on frame 0.
        fast_mode: ``model.fast_mode``.
        backend: ``model.backend``.
        overrides: more ``section.key=value`` settings (``store.memory_mb=64``, ...).
        threads: runtime threads of the synthetic-weights model (None: the runtime's
            default); SAM 2's factory call leaves them to the runtime.
    """
    settings = [f"model.fast_mode={fast_mode}", f"model.backend={backend}", *overrides]
    if checkpoint is not None:
        from vos.video_predictor import build_sam2_video_predictor

        return build_sam2_video_predictor("repvit", checkpoint, device="cpu",
                                          hydra_overrides_extra=settings)
    from repvit_sam import sam_model_registry
    from repvit_sam.runtime import build_segmenter
    from repvit_sam.runtime.graphs import model_fingerprint
    from vos.bench.inputs import fill_fan_in_weights
    from vos.bench.objects import ObjectShaped
    from vos.config import load_config
    from vos.types import Prompt
    from vos.video_predictor import VideoPredictor

    cfg = load_config(None, ["model.model_type=repvit", "model.device=cpu", *settings])
    model = sam_model_registry["repvit"](None).eval()
    fill_fan_in_weights(model)
    if cfg.model.fuse:
        model.fuse()
    segmenter = build_segmenter(model, cfg.model.backend, mode=cfg.model.fast_mode,
                                threads=threads)
    shaped = ObjectShaped(segmenter, [Prompt(mask=ellipse_mask(image_hw, box_xyxy), obj_id=1)])
    return VideoPredictor(shaped, cfg, checkpoint_sha256=model_fingerprint(model))


class _Clock:
    """Wall and process CPU seconds since the last :meth:`lap` (or creation).

    The CPU time (every thread of this process) barely moves when other processes share the
    cores, where the wall time can grow several-fold; the report gives both.
    """

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = (wall - self._wall, cpu - self._cpu)
        self._wall, self._cpu = wall, cpu
        return out


def _timed(results: Iterator[tuple[int, Any, Any]]) -> dict[int, tuple[float, float]]:
    """(wall, CPU) seconds per yielded frame of a propagation generator (each frame's wait)."""
    seconds: dict[int, tuple[float, float]] = {}
    clock = _Clock()
    for frame_idx, _, _ in results:
        seconds[frame_idx] = clock.lap()
    return seconds


def _store_counts(predictor: Any) -> dict[str, int]:
    return {"encodes": int(predictor.segmenter.encodes), **asdict(predictor.store.stats)}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


def measure_speed(
    predictor: Any,
    video: str,
    box_xyxy: np.ndarray,
    *,
    frames: int,
    clicks: int,
) -> dict[str, Any]:
    """First pass, correction, re-propagation and clicks on one video (module docstring).

    Args:
        predictor: a :class:`~vos.video_predictor.VideoPredictor` (its store large enough
            for ``frames`` embeddings, as the default 1 GiB is for 256).
        video: a video file or frame folder.
        box_xyxy: (4,) float32 XYXY in video pixels: the object on frame 0; clicks go to
            its centre.
        frames: N, the frames of the first pass (at most the video's; at least 4).
        clicks: timed clicks on stored frames.

    Returns:
        (wall, CPU) seconds of each step: per frame of each pass (``first_s``, ``again_s``:
        frame -> seconds), the box, the correction and every click; the correction frame
        ``k``; the encode and store counts of each step (``first``, ``again``,
        ``clicks_counts``).

    Raises:
        ValueError: a video shorter than 4 frames.
    """
    state = predictor.init_state(video)
    try:
        n = min(frames, state.num_frames)
        if n < 4:
            raise ValueError(f"predictor: needs 4 frames or more, the video has {n}")
        k = n // 2
        centre = [[float(box_xyxy[0] + box_xyxy[2]) / 2, float(box_xyxy[1] + box_xyxy[3]) / 2]]
        clock = _Clock()
        predictor.add_new_points_or_box(state, 0, 1, box=np.asarray(box_xyxy).tolist())
        box_s = clock.lap()
        before = _store_counts(predictor)
        first_s = _timed(predictor.propagate_in_video(state, 0, n - 1))
        first = _delta(_store_counts(predictor), before)
        # The correction: a click on a frame the first pass tracked (it refines that mask).
        clock = _Clock()
        predictor.add_new_points_or_box(state, k, 1, points=centre, labels=[1],
                                        clear_old_points=False)
        correction_s = clock.lap()
        before = _store_counts(predictor)
        again_s = _timed(predictor.propagate_in_video(state, k, n - 1 - k))
        again = _delta(_store_counts(predictor), before)
        # Clicks on stored frames other than k, spread over the video.
        targets = [t for t in np.linspace(1, n - 1, clicks + 1).round().astype(int).tolist()
                   if t != k]
        targets = list(dict.fromkeys(targets))[:clicks]
        before = _store_counts(predictor)
        click_s = []
        for frame_idx in targets:
            clock = _Clock()
            predictor.add_new_points_or_box(state, frame_idx, 1, points=centre, labels=[1])
            click_s.append(clock.lap())
        clicked = _delta(_store_counts(predictor), before)
    finally:
        predictor.close_state(state)
    return {"n": n, "k": k, "box_s": box_s, "first_s": first_s, "first": first,
            "correction_s": correction_s, "again_s": again_s, "again": again,
            "click_frames": targets, "click_s": click_s, "clicks_counts": clicked}


def speed_rows(measured: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed table of :func:`measure_speed`'s figures (medians in milliseconds).

    Both passes are compared on the same frames, k+1 .. N-1.
    """
    n, k = measured["n"], measured["k"]
    same = [t for t in range(k + 1, n) if t in measured["first_s"] and t in measured["again_s"]]

    def median_ms(times: Sequence[tuple[float, float]]) -> tuple[float, float]:
        return (1000 * statistics.median(w for w, _ in times),
                1000 * statistics.median(c for _, c in times))

    first_ms = median_ms([measured["first_s"][t] for t in same])
    again_ms = median_ms([measured["again_s"][t] for t in same])

    def row(step: str, frames: str, ms: tuple[float, float], counts: dict[str, int] | None,
            base: tuple[float, float] | None = None) -> dict[str, Any]:
        return {"step": step, "frames": frames, "median_ms": round(ms[0], 1),
                "cpu_ms": round(ms[1], 1),
                "vs_first_pass": None if base is None else round(ms[0] / base[0], 3),
                "cpu_vs_first_pass": None if base is None else round(ms[1] / base[1], 3),
                "encodes": None if counts is None else counts["encodes"],
                "store_memory_hits": None if counts is None else counts["memory_hits"],
                "store_disk_hits": None if counts is None else counts["disk_hits"]}

    span = f"{k + 1}..{n - 1}"
    return [
        row("box on frame 0 (encode + decode)", "0", median_ms([measured["box_s"]]), None),
        row("first pass (encode + decode), per frame", span, first_ms, measured["first"],
            first_ms),
        row(f"correction click on frame {k} (stored)", str(k),
            median_ms([measured["correction_s"]]), None),
        row(f"re-propagation from frame {k}, per frame", span, again_ms, measured["again"],
            first_ms),
        row(f"click-to-mask on a stored frame (median of {len(measured['click_s'])})",
            ",".join(str(t) for t in measured["click_frames"]),
            median_ms(measured["click_s"]), measured["clicks_counts"]),
    ]


# ---------------------------------------------------------------------- long video
def base_frames(video: str | None, count: int, folder: Path) -> list[Path]:
    """Up to ``count`` frame files of a video: a folder's own files (sorted as our reader
    sorts them), else the decoded frames written as JPEG (quality 95) into ``folder``.

    Args:
        video: a video file or frame folder; None writes synthetic frames.
        count: frames at most (each distinct frame is one encode in the long run).
        folder: where decoded frames are written.
    """
    import cv2

    from vos.bench.inputs import load_frames
    from vos.io.sources import open_source

    if video is not None and Path(video).is_dir():
        with open_source(video) as source:
            paths = list(getattr(source, "paths", []))
        if paths and all(Path(p).suffix.lower() in (".jpg", ".jpeg") for p in paths[:count]):
            return [Path(p).resolve() for p in paths[:count]]
    frames, _ = load_frames(video, count)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for idx, frame in enumerate(frames):
        path = folder / f"{idx:05d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        out.append(path)
    return out


def ping_pong(num_distinct: int, num_frames: int) -> list[int]:
    """Indices 0, 1, ..., M-1, M-2, ..., 1, 0, 1, ... (no jump between repeats), N of them."""
    if num_distinct < 1:
        raise ValueError("ping_pong: needs at least one frame")
    if num_distinct == 1:
        return [0] * num_frames
    period = 2 * (num_distinct - 1)
    return [i % period if i % period < num_distinct else period - i % period
            for i in range(num_frames)]


def looped_folder(files: Sequence[Path], num_frames: int, folder: Path) -> Path:
    """A folder of ``num_frames`` links ``00000.jpg`` ... to ``files`` played back and forth.

    SAM 2's ``init_state`` reads such a folder too (JPEG files with integer names).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for idx, src in enumerate(ping_pong(len(files), num_frames)):
        link = folder / f"{idx:05d}{files[src].suffix.lower()}"
        link.symlink_to(Path(files[src]).resolve())
    return folder


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / MiB


def measure_long(settings: dict[str, Any]) -> dict[str, Any]:
    """One forward pass over a long frame folder, in this process: RSS at the marks.

    Args:
        settings: ``folder``, ``checkpoint`` (or None), ``image_hw``, ``box``, ``fast_mode``,
            ``backend``, ``threads``, ``marks``, ``overrides`` (the store budgets).
    """
    import torch

    from repvit_sam.utils.malloc import retain_freed_memory

    retain_freed_memory()  # as the CLI does
    torch.set_num_threads(int(settings["threads"]))
    box = np.asarray(settings["box"], np.float32)
    predictor = build_predictor(checkpoint=settings["checkpoint"],
                                image_hw=tuple(settings["image_hw"]), box_xyxy=box,
                                fast_mode=settings["fast_mode"], backend=settings["backend"],
                                overrides=settings["overrides"],
                                threads=int(settings["threads"]))
    marks = set(settings["marks"])
    state = predictor.init_state(settings["folder"])
    predictor.add_new_points_or_box(state, 0, 1, box=box.tolist())
    rss: dict[int, float] = {}
    seconds = []
    start = time.perf_counter()
    for count, (_, _, logits) in enumerate(predictor.propagate_in_video(state), start=1):
        now = time.perf_counter()
        seconds.append(now - start)
        del logits
        if count in marks:
            rss[count] = round(_rss_mb(), 1)
        start = time.perf_counter()
    states = asdict(state.states.stats)
    predictor.close_state(state)
    predictor.store.close()  # its temporary folder
    return {
        "frames": len(seconds),
        "rss_mb": rss,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "median_frame_ms": round(1000 * statistics.median(seconds), 1),
        "seconds": round(sum(seconds), 1),
        "encodes": int(predictor.segmenter.encodes),
        "store": asdict(predictor.store.stats),
        "states": states,
    }


def measure_sam2(settings: dict[str, Any]) -> dict[str, Any]:
    """SAM 2's RSS before and after ``init_state`` on a folder, in this process.

    Args:
        settings: ``folder``, ``frames``, ``threads``.
    """
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    torch.set_num_threads(int(settings["threads"]))
    predictor = build_sam2_video_predictor(SAM2_CONFIG, None, device="cpu")
    before = _rss_mb()
    state = predictor.init_state(settings["folder"])
    after = _rss_mb()
    return {"frames": int(state["num_frames"]), "rss_before_mb": round(before, 1),
            "rss_mb": round(after, 1)}


def child_main() -> None:
    """``python -c "from vos.bench.predictor import child_main; child_main()" TASK SETTINGS``."""
    task, settings = sys.argv[1], json.loads(sys.argv[2])
    result = measure_long(settings) if task == "long" else measure_sam2(settings)
    print(json.dumps(result))


def slope_mb_per_frame(points: dict[int, float]) -> float:
    """Least-squares slope of RSS (MB) over frame count."""
    x = np.array(sorted(points), np.float64)
    y = np.array([points[int(v)] for v in x], np.float64)
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else 0.0


def memory_rows(
    ours: dict[int, float], sam2: dict[int, float], *, ours_label: str, sam2_label: str
) -> list[dict[str, Any]]:
    """The memory table: RSS per frame count, each curve's slope, SAM 2's line at 2,000.

    Args:
        ours: frames -> RSS (MB) during our forward pass.
        sam2: frames -> RSS (MB) after SAM 2's ``init_state`` (may be empty).
        ours_label, sam2_label: what each row's first column says.
    """
    rows: list[dict[str, Any]] = []
    for label, points in ((ours_label, ours), (sam2_label, sam2)):
        if not points:
            continue
        slope = slope_mb_per_frame(points)
        for frames in sorted(points):
            rows.append({"run": label, "frames": frames, "rss_mb": points[frames],
                         "mb_per_frame": None})
        rows[-1]["mb_per_frame"] = round(slope, 3)
        last = max(points)
        if points is sam2 and last < 2000:
            rows.append({"run": label + " (its line, extrapolated)", "frames": 2000,
                         "rss_mb": round(points[last] + slope * (2000 - last), 1),
                         "mb_per_frame": round(slope, 3)})
    return rows


def bench_predictor(
    report: Any,
    *,
    video: str | None,
    checkpoint: str | None,
    box_xyxy: np.ndarray | None,
    frames: int,
    clicks: int,
    long_frames: int,
    long_distinct: int,
    long_mode: str,
    long_memory_mb: float,
    sam2_frames: Sequence[int],
    backend: str,
    threads: int,
) -> None:
    """The predictor section: speed rows (this process) and memory rows (child processes).

    Args:
        report: gets ``predictor`` and ``predictor_memory`` rows and the notes.
        video: a video file or frame folder; None: synthetic frames.
        checkpoint: RepViT-SAM weights, or None (synthetic, module docstring).
        box_xyxy: (4,) float32 XYXY in video pixels, the object on frame 0; None: central.
        frames: frames of the first pass (N; 0 skips the speed rows).
        clicks: timed clicks on stored frames.
        long_frames: frames of the memory run (0 skips it).
        long_distinct: distinct frames the long run loops over (each encoded once).
        long_mode: ``model.fast_mode`` of the long run.
        long_memory_mb: ``store.memory_mb`` of the long run (per-frame states get 32 MiB).
        sam2_frames: frame counts of SAM 2's ``init_state`` runs (empty skips them).
        backend: ``model.backend``.
        threads: torch threads.
    """
    from vos.bench.inputs import default_boxes
    from vos.io.sources import read_rgb

    with tempfile.TemporaryDirectory(prefix="vos-bench-predictor-") as tmp:
        root = Path(tmp)
        files = base_frames(video, max(frames, long_distinct), root / "base")
        speed_video = video if video is not None else str(root / "base")
        image_hw = read_rgb(files[0]).shape[:2]
        box = np.asarray(box_xyxy if box_xyxy is not None else default_boxes(image_hw, 1)[0],
                         np.float32)
        load = [os.getloadavg()[0]]
        if frames > 0:
            predictor = build_predictor(checkpoint=checkpoint, image_hw=image_hw,
                                        box_xyxy=box, backend=backend, threads=threads)
            measured = measure_speed(predictor, speed_video, box, frames=frames, clicks=clicks)
            predictor.store.close()
            report.predictor.extend(speed_rows(measured))
            load.append(os.getloadavg()[0])
        ours: dict[int, float] = {}
        if long_frames > 0:
            folder = looped_folder(files[:long_distinct], long_frames, root / "long")
            budgets = [f"store.memory_mb={long_memory_mb:g}", "store.state_memory_mb=32"]
            long = run_in_child(__name__, "long", {
                "folder": str(folder), "checkpoint": checkpoint, "image_hw": list(image_hw),
                "box": box.tolist(), "fast_mode": long_mode, "backend": backend,
                "threads": threads, "overrides": budgets,
                "marks": [m for m in LONG_MARKS if m <= long_frames] + [long_frames]})
            ours = {int(k): v for k, v in long["rss_mb"].items()}
            report.notes.append(
                f"predictor memory: {long['frames']} frames = the first {long_distinct} frames "
                f"played back and forth (links; repeats share one embedding by content, so "
                f"{long['encodes']} frames were encoded and the rest loaded from the store), "
                f"fast mode {long_mode}, {' '.join(budgets)} (embeddings and per-frame states "
                f"spill to disk: store {long['store']}, states {long['states']}); "
                f"{long['median_frame_ms']} ms/frame median, {long['seconds']} s, "
                f"peak RSS {long['peak_rss_mb']} MB; one fresh interpreter")
            load.append(os.getloadavg()[0])
        sam2: dict[int, float] = {}
        if sam2_frames and long_frames > 0:
            import importlib.util

            if importlib.util.find_spec("sam2") is None:
                report.notes.append("predictor memory: sam2 is not installed, its rows skipped")
            else:
                for count in sam2_frames:
                    folder = looped_folder(files[:long_distinct], count, root / f"sam2-{count}")
                    row = run_in_child(__name__, "sam2", {"folder": str(folder), "frames": count,
                                          "threads": threads})
                    sam2[row["frames"]] = row["rss_mb"]
                report.notes.append(
                    "predictor memory, SAM 2: sam2 1.1.0 sam2.1_hiera_t with random weights, "
                    "RSS after init_state (every frame pre-loaded as 3x1024x1024 float32; its "
                    "model not run, so its per-frame state is not counted); one fresh "
                    "interpreter per count")
                load.append(os.getloadavg()[0])
    report.predictor_memory.extend(memory_rows(
        ours, sam2, ours_label=f"ours, forward pass ({long_mode})",
        sam2_label="SAM 2 1.1.0, after init_state"))
    if frames <= 0:
        return
    report.notes.append(
        f"predictor speed: {Path(speed_video).name if video else 'synthetic frames'}, one "
        f"object (box {box.round(1).tolist()} on frame 0), exact mode, backend {backend}, "
        f"{threads} threads; per-frame times are the waits for each yielded frame (tracking "
        "and the video-sized logits included); 1-minute load average during the section "
        f"{', '.join(f'{v:.1f}' for v in load)}"
        + ("; synthetic fan-in weights, decoder answers shaped as the object (ObjectShaped)"
           if checkpoint is None else ""))
