"""The live section (issue 29): ``python -m vos.bench --only live``.

Two measurements:

- **Rate and latency of the live path.** A real video, resized to each size asked for
  (640x480 and 1280x720 by default) and played back and forth to the length asked for, is
  paced as a 30 frames/s camera (:class:`~vos.io.camera.FrameGrabber`) through
  :class:`~vos.live.app.LiveApp` itself: the model on its worker thread, masks carried by
  optical flow on every other frame, and each view rendered as the window would show it (a
  display that renders and discards, so no screen is needed). Reported: display frames/s
  (frames shown with masks), model frames/s, glass-to-mask latency p50/p95 (capture ->
  view rendered), the model's own latency (capture -> result), the share of frames with
  carried masks, the share of frames shown after the first result that had the object's
  mask, and frames the display never showed. One object, the tracker settings of
  ``configs/webcam.yaml``.
- **Carried against held masks** on DAVIS frames with ground truth
  (``../shared/data/davis-mini``): the ground-truth mask of frame t carried to frame t+k by
  :class:`~vos.live.flow.MaskCarrier` (the live path's own code) against the same mask held
  unchanged, mean J against the ground truth of t+k over every pair of every sequence.

Without ``--checkpoint`` the model has fan-in synthetic weights and, as in the predictor and
object-scaling sections, its decoder runs in full but answers with the object's shape
(:class:`~vos.bench.objects.ObjectShaped`): synthetic weights lose any object within frames,
and a lost object costs a different decoder call than a tracked one.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

WEBCAM_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "webcam.yaml"
DEFAULT_KS = (1, 2, 3, 5, 10, 20, 30)


def default_modes() -> str:
    """``exact`` and the fast mode of ``configs/webcam.yaml`` (the live runs' default)."""
    from vos.config import load_config

    if not WEBCAM_CONFIG.is_file():
        return "exact"
    fast = load_config(WEBCAM_CONFIG).model.fast_mode.name
    return "exact" if fast == "exact" else f"exact,{fast}"


class RenderingDisplay:
    """A window that renders nothing to a screen: :class:`~vos.live.app.LiveApp` still builds
    every view (overlay, banner), which is the display's cost; the image is dropped."""

    def __init__(self) -> None:
        self.shown = 0

    def show(self, image: np.ndarray, wait_ms: int) -> int:
        self.shown += 1
        return -1

    def close(self) -> None:
        pass


def ping_pong(frames: Sequence[np.ndarray], count: int) -> list[np.ndarray]:
    """``count`` frames: the clip forward, backward, forward... (no jump at the turns)."""
    if len(frames) < 2:
        return [frames[0]] * count
    cycle = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    return [frames[cycle[i % len(cycle)]] for i in range(count)]


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (H, W) = (480, 640).

    Raises:
        ValueError: not WIDTHxHEIGHT with both at least 16.
    """
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() \
            or int(width) < 16 or int(height) < 16:
        raise ValueError(f"--live-sizes {text!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    return int(height), int(width)


def live_segmenter(image_hw: tuple[int, int], box_xyxy: np.ndarray, *, checkpoint: str | None,
                   fast_mode: str, backend: str, threads: int | None) -> Any:
    """The segmenter of a live run: the CLI's, or synthetic weights answering in shape."""
    from vos.config import load_config

    overrides = [f"model.fast_mode={fast_mode}", f"model.backend={backend}"]
    if checkpoint is not None:
        from vos.models import build_segmenter

        cfg = load_config(None, [f"model.checkpoint={checkpoint}", *overrides])
        return build_segmenter(cfg.model)
    from repvit_sam import sam_model_registry
    from repvit_sam.runtime import build_segmenter as build_runtime
    from vos.bench.inputs import fill_fan_in_weights
    from vos.bench.objects import ObjectShaped
    from vos.bench.predictor import ellipse_mask
    from vos.types import Prompt

    cfg = load_config(None, overrides)
    model = sam_model_registry["repvit"](None).eval()
    fill_fan_in_weights(model)
    model.fuse()
    inner = build_runtime(model, cfg.model.backend, mode=cfg.model.fast_mode, threads=threads)
    return ObjectShaped(inner, [Prompt(mask=ellipse_mask(image_hw, box_xyxy), obj_id=1)])


def measure_live(segmenter: Any, frames: Sequence[np.ndarray], box_xyxy: np.ndarray, *,
                 fps: float, carry: bool = True, flow_preset: str = "ultrafast",
                 flow_size: int = 432) -> dict[str, Any]:
    """One live run: ``frames`` paced at ``fps`` through :class:`LiveApp`.

    Args:
        segmenter: the model (warmed up by the caller).
        frames: (H, W, 3) uint8 RGB frames, played once at ``fps``.
        box_xyxy: (4,) float32 XYXY of the object on the first frame.
        fps: the camera's rate.
        carry: carry masks between model results (False: the model's frames only).

    Returns:
        The row's measurements (see the module docstring).
    """
    from vos.config import load_config
    from vos.io.camera import FrameGrabber
    from vos.io.sources import SourceInfo
    from vos.live import LiveApp, LiveSession, MaskCarrier
    from vos.types import Prompt

    cfg = load_config(WEBCAM_CONFIG if WEBCAM_CONFIG.is_file() else None)
    image_hw = (frames[0].shape[0], frames[0].shape[1])
    info = SourceInfo("bench", image_hw, len(frames), fps)
    camera = FrameGrabber(frames, info=info, pace_fps=fps, drop_stale=True)
    session = LiveSession(segmenter, cfg.tracker, cfg.prompt, seed=cfg.seed)
    carrier = MaskCarrier(preset=flow_preset, flow_size=flow_size) if carry else None
    display = RenderingDisplay()
    app = LiveApp(camera, session, window=display, carrier=carrier,
                  init_prompts=[Prompt(box_xyxy=box_xyxy, obj_id=1)])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        stats = app.run()
    finally:
        camera.close()
    wall = time.perf_counter() - wall0
    first = stats.model_latencies_s[0] if stats.model_latencies_s else float("nan")
    after_first = stats.frames_shown - stats.frames_before_model
    return {
        "frames_captured": stats.frames_captured,
        "frames_shown": stats.frames_shown,
        "display_fps": round(stats.display_fps, 2),
        "model_fps": round(stats.fps, 2),
        "latency_p50_ms": round(stats.latency_ms(50), 1),
        "latency_p95_ms": round(stats.latency_ms(95), 1),
        "model_latency_p50_ms": round(stats.model_latency_ms(50), 1),
        "model_latency_p95_ms": round(stats.model_latency_ms(95), 1),
        "carried_share": round(stats.carried_share, 3),
        "masked_share": round(1 - stats.frames_without_objects / after_first, 4)
        if after_first else 0.0,
        "first_result_s": round(first, 2),
        "dropped": stats.frames_dropped,
        "cpu_per_wall": round((time.process_time() - cpu0) / max(wall, 1e-9), 2),
    }


def carry_quality(root: Path, ks: Sequence[int] = DEFAULT_KS, *, flow_preset: str = "ultrafast",
                  flow_size: int = 432) -> tuple[list[dict[str, Any]], float]:
    """J of ground-truth masks carried k frames against the same masks held (DAVIS layout).

    Args:
        root: a DAVIS root (``JPEGImages/480p``, ``Annotations/480p``, ``ImageSets/2017/val.txt``).
        ks: distances from the keyframe.

    Returns:
        One row per k (pairs, held J, carried J, gain), and the median milliseconds of one
        carry (flow and warp, one object).
    """
    from vos.io.davis_png import read_palette_png
    from vos.live import MaskCarrier
    from vos.types import FrameResult

    carrier = MaskCarrier(preset=flow_preset, flow_size=flow_size)
    names = (root / "ImageSets" / "2017" / "val.txt").read_text().split()
    held: dict[int, list[float]] = {k: [] for k in ks}
    carried: dict[int, list[float]] = {k: [] for k in ks}
    seconds: list[float] = []
    for name in names:
        images = sorted((root / "JPEGImages" / "480p" / name).glob("*.jpg"))
        annotations = sorted((root / "Annotations" / "480p" / name).glob("*.png"))
        prepared = [carrier.prepare(_read_rgb(p)) for p in images]
        truth = [read_palette_png(p) > 0 for p in annotations]
        for t in range(len(truth)):
            if not truth[t].any():
                continue
            ys, xs = np.flatnonzero(truth[t].any(1)), np.flatnonzero(truth[t].any(0))
            result = FrameResult(t, np.array([1]), truth[t][None], np.ones(1, np.float32),
                                 np.array([[xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]], np.float32))
            for k in ks:
                if t + k >= len(truth):
                    continue
                start = time.perf_counter()
                moved = carrier.carry(result, prepared[t], prepared[t + k]).masks[0]
                seconds.append(time.perf_counter() - start)
                carried[k].append(_jaccard(moved, truth[t + k]))
                held[k].append(_jaccard(truth[t], truth[t + k]))
    rows = [{"k": k, "pairs": len(held[k]), "held_J": round(float(np.mean(held[k])), 3),
             "carried_J": round(float(np.mean(carried[k])), 3),
             "gain": round(float(np.mean(carried[k]) - np.mean(held[k])), 3)}
            for k in ks if held[k]]
    return rows, 1000.0 * statistics.median(seconds) if seconds else float("nan")


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise OSError(f"{path}: cannot be read as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def bench_live(
    report: Any,
    *,
    video: str | None,
    checkpoint: str | None,
    box_xyxy: np.ndarray | None,
    sizes: Sequence[tuple[int, int]],
    modes: Sequence[str],
    seconds: float,
    fps: float,
    backend: str,
    threads: int | None,
    davis_root: Path | None,
    ks: Sequence[int] = DEFAULT_KS,
) -> None:
    """The live rows (``report.live``) and the carried-versus-held rows (``report.live_carry``).

    Args:
        report: gets the rows and notes.
        video: the clip played as a camera (None: synthetic frames).
        checkpoint: RepViT-SAM weights, or None (synthetic weights, answers in shape).
        box_xyxy: (4,) XYXY of the object on the video's first frame, in video pixels
            (None: a central box).
        sizes: (H, W) camera sizes.
        modes: ``model.fast_mode`` of each run ("exact", "size512+nopad", ...).
        seconds: length of each run at ``fps``.
        fps: the camera's rate.
        backend: ``model.backend``.
        threads: the runtime's threads (None: its default).
        davis_root: DAVIS frames with ground truth for the carry rows (None or absent: skipped).
        ks: distances from the keyframe of the carry rows.
    """
    from vos.bench.inputs import default_boxes, load_frames

    clip, name = load_frames(video, 10_000)
    src_hw = clip[0].shape[:2]
    base_box = box_xyxy if box_xyxy is not None else default_boxes(src_hw, 1)[0]
    count = max(2, round(seconds * fps))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for image_hw in sizes:
        h, w = image_hw
        frames = ping_pong([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in clip],
                           count)
        scale = np.array([w / src_hw[1], h / src_hw[0]] * 2, np.float32)
        box = np.asarray(base_box, np.float32) * scale
        for mode in modes:
            segmenter = live_segmenter(image_hw, box, checkpoint=checkpoint, fast_mode=mode,
                                       backend=backend, threads=threads)
            # Graph export and the first calls are not the camera's business; then the model
            # alone, timed just before the run, so the run's model rate can be read against it.
            warm = segmenter.encode(frames[0])
            segmenter.decode(warm, boxes_xyxy=box[None])
            alone = []
            for frame in frames[1:4]:
                start = time.perf_counter()
                segmenter.decode(segmenter.encode(frame), boxes_xyxy=box[None])
                alone.append(time.perf_counter() - start)
            row = {"camera": f"{w}x{h} @ {fps:g}", "video": name, "mode": mode,
                   "backend": getattr(getattr(segmenter, "inner", segmenter), "name",
                                      type(segmenter).__name__).split(" ")[0],
                   "carry": True, "load_1min": None if load is None else round(load, 2)}
            row.update(measure_live(segmenter, frames, box, fps=fps))
            row["model_alone_ms"] = round(1000 * statistics.median(alone), 1)
            report.live.append(row)
            logger.info("live %s", row)
    if not checkpoint:
        report.notes.append("live: synthetic weights answering in the object's shape "
                            "(ObjectShaped); rates and latencies hold, the masks do not "
                            "describe a trained model")
    if davis_root is None or not (davis_root / "ImageSets" / "2017" / "val.txt").is_file():
        report.notes.append(f"live carry: no DAVIS frames with ground truth at {davis_root}, "
                            "skipped")
        return
    rows, carry_ms = carry_quality(davis_root, ks)
    for row in rows:
        report.live_carry.append({"data": davis_root.name, **row})
    report.notes.append(f"live carry: one carry (DIS ultrafast flow at 432 px + warp, one "
                        f"object, 854x480) took {carry_ms:.2f} ms (median)")
