"""The object-scaling section (issue #14): what a frame costs with 1 to 254 objects.

Every object count runs in a fresh interpreter, so that its peak RSS is its own: the frames of
a real video, a grid of real-sized objects given as masks on frame 0 (the layout of a 254-id
DAVIS palette mask, cut to the first N cells, so every object has the same size whatever N),
the CLI's segmenter and sinks (palette PNG, JSON, overlay). Per frame it measures the whole
frame, the encoder, the mask decoder and the rest (tracker and queueing the outputs); frame 0,
where the objects are added, is left out of the medians.

Synthetic weights answer any prompt with a frame-sized blob, which no trained model does. So
without a checkpoint the decoder still runs in full (its cost is measured), but its answer is
then replaced by the object's own shape (:class:`ObjectShaped`): logits +8 inside the grid
ellipse the prompt points at and -8 outside, in the decoder's low-res frame, three candidates
(the ellipse, and 15% smaller and larger). The masks are made from those logits by the
segmenter's own post-processing, so the timings describe tracking N real-sized objects.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repvit_sam.segmenter import DecodePrompts, MaskPrediction, SegmenterWrapper
from vos.types import Prompt

logger = logging.getLogger(__name__)

GRID_CAPACITY = 254  # a DAVIS palette's object ids


def object_grid(image_hw: tuple[int, int], count: int,
                capacity: int = GRID_CAPACITY) -> list[Prompt]:
    """``count`` mask prompts (obj_ids 1..N) on a grid laid out for ``capacity`` objects.

    Each object is an ellipse filling 70% of its grid cell, so its size does not depend on
    ``count``.

    Raises:
        ValueError: ``count`` above ``capacity``.
    """
    if not 1 <= count <= capacity:
        raise ValueError(f"objects: expected 1 to {capacity}, got {count}")
    h, w = image_hw
    cols = int(np.ceil(np.sqrt(capacity * w / h)))
    rows = int(np.ceil(capacity / cols))
    cell_h, cell_w = h / rows, w / cols
    yy, xx = np.mgrid[0:h, 0:w]
    prompts = []
    for i in range(count):
        r, c = divmod(i, cols)
        cy, cx = (r + 0.5) * cell_h, (c + 0.5) * cell_w
        mask = ((yy - cy) / (0.35 * cell_h)) ** 2 + ((xx - cx) / (0.35 * cell_w)) ** 2 <= 1
        prompts.append(Prompt(mask=mask, obj_id=i + 1))
    return prompts


class ObjectShaped(SegmenterWrapper):
    """The real decoder's cost, the grid objects' shapes (see the module docstring).

    Args:
        inner: the segmenter (exact mode: its embeddings are ``ImageEmbedding``).
        objects: the grid's prompts (masks in frame pixels).
    """

    IOU = (0.9, 0.85, 0.8)

    def __init__(self, inner: Any, objects: Sequence[Prompt]) -> None:
        super().__init__(inner)
        from repvit_sam.utils.transforms import ResizeLongestSide

        centres = []
        for p in objects:
            ys, xs = np.flatnonzero(p.mask.any(1)), np.flatnonzero(p.mask.any(0))
            centres.append([xs.mean(), ys.mean()])
        self.centres = np.array(centres, np.float32)
        h, w = objects[0].mask.shape
        self.frame_hw = (h, w)
        input_hw = ResizeLongestSide.get_preprocess_shape(h, w, 1024)
        # Kept as booleans (N, 3, 256, 256); the logits are made per call, as a decoder would.
        self.shapes = np.stack([self._shapes(p.mask, input_hw) for p in objects])

    @staticmethod
    def _shapes(mask: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
        import cv2

        small = cv2.resize(mask.astype(np.uint8), (input_hw[1] // 4, input_hw[0] // 4),
                           interpolation=cv2.INTER_NEAREST)
        out = np.zeros((3, 256, 256), bool)
        size = max(3, int(0.15 * max(small.shape)))
        kernel = np.ones((size, size), np.uint8)
        for k, shape in enumerate((small, cv2.erode(small, kernel), cv2.dilate(small, kernel))):
            out[k, : shape.shape[0], : shape.shape[1]] = shape.astype(bool)
        return out

    def decode_prompts(self, embedding: Any, prompts: DecodePrompts) -> MaskPrediction:
        import inspect

        import torch

        self.inner.decode(embedding, prompts)  # the cost (and peak memory) of the decoder
        where = self._targets(prompts)
        c = 3 if prompts.multimask_output else 1
        logits = torch.from_numpy(np.where(self.shapes[where, :c], np.float32(8.0),
                                           np.float32(-8.0)))
        ious = torch.tensor([self.IOU[:c]] * len(where), dtype=torch.float32)
        if "lazy" in inspect.signature(MaskPrediction.__init__).parameters:
            from repvit_sam.mask_upscale import MaskUpscaler

            upscaler = MaskUpscaler(embedding.input_hw, embedding.orig_hw)
            return MaskPrediction(None, ious, logits, lazy=_ShapedMasks(upscaler, logits))
        # An earlier version: every mask at once, as its decode made them.
        from torch.nn import functional as F

        up = F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)
        up = up[..., : embedding.input_hw[0], : embedding.input_hw[1]]
        masks = F.interpolate(up, embedding.orig_hw, mode="bilinear", align_corners=False) > 0
        return MaskPrediction(masks=masks, iou_scores=ious, low_res_logits=logits)

    def _targets(self, prompts: DecodePrompts) -> np.ndarray:
        """The grid object each prompt row points at: the nearest centre."""
        if prompts.boxes_xyxy is not None:
            boxes = prompts.boxes_xyxy.cpu().numpy()
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        elif prompts.points_xy is not None:
            points = prompts.points_xy.cpu().numpy()
            real = (prompts.point_labels.cpu().numpy() == 1)[..., None]
            centres = (points * real).sum(1) / np.maximum(real.sum(1), 1)
        else:  # previous logits only: their positive area's centre, in frame pixels
            low = prompts.mask_logits.cpu().numpy()[:, 0] > 0
            to_frame = 4.0 * max(self.frame_hw) / 1024
            centres = np.array([(np.argwhere(m).mean(0)[::-1] + 0.5) * to_frame if m.any()
                                else (0.0, 0.0) for m in low], np.float32)
        distance = ((centres[:, None] - self.centres[None]) ** 2).sum(-1)
        return np.argmin(distance, axis=1)


class _ShapedMasks:
    def __init__(self, upscaler: Any, logits: Any) -> None:
        self.upscaler, self.logits = upscaler, logits
        self._crops = upscaler.candidate_crops(logits)

    def full(self) -> Any:
        import torch

        n, c = self.logits.shape[:2]
        return self.upscaler.full(self.logits.flatten(0, 1)).reshape(
            n, c, *self.upscaler.orig_hw).to(torch.bool)

    def crop(self, obj_idx: int, cand_idx: int) -> Any:
        return self._crops(obj_idx, cand_idx)


class _StageClock(SegmenterWrapper):
    """Adds up the seconds of ``encode`` and ``decode`` calls (read and reset per frame)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.encode_s = self.decode_s = 0.0

    def encode(self, image: np.ndarray) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.encode(image)
        finally:
            self.encode_s += time.perf_counter() - start

    def decode_prompts(self, embedding: Any, prompts: DecodePrompts) -> MaskPrediction:
        start = time.perf_counter()
        try:
            return self.inner.decode(embedding, prompts)
        finally:
            self.decode_s += time.perf_counter() - start


def measure_objects(settings: dict[str, Any]) -> dict[str, Any]:
    """One object count, in this process: its table row (see the module docstring).

    Args:
        settings: ``objects``, ``video``, ``frames``, ``checkpoint`` (or None: synthetic
            weights), ``backend``, ``fast_mode``, ``threads``.
    """
    import torch

    from repvit_sam import sam_model_registry
    from repvit_sam.runtime import FastMode, build_segmenter
    from repvit_sam.utils.malloc import retain_freed_memory
    from vos.bench.inputs import fill_synthetic_weights, load_frames
    from vos.io.sinks import ResultSink
    from vos.tracker import VideoTracker

    retain_freed_memory()  # as the CLI does
    torch.set_num_threads(int(settings["threads"]))
    frames, _ = load_frames(settings["video"], int(settings["frames"]))
    image_hw = (frames[0].shape[0], frames[0].shape[1])
    model = sam_model_registry["repvit"](settings["checkpoint"], fuse=True).eval()
    if settings["checkpoint"] is None:
        fill_synthetic_weights(model)
    segmenter = build_segmenter(model, settings["backend"],
                                mode=FastMode.parse(settings["fast_mode"]),
                                checkpoint=settings["checkpoint"])
    if hasattr(segmenter, "prepare"):
        segmenter.prepare(image_hw)
    grid = object_grid(image_hw, int(settings["objects"]))
    if settings["checkpoint"] is None:
        segmenter = ObjectShaped(segmenter, grid)
    clock = _StageClock(segmenter)
    tracker = VideoTracker(clock)
    prompts = {0: grid}
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="vos-bench-objects-") as tmp, \
            ResultSink(Path(tmp), image_hw, 25.0) as sink:
        start = time.perf_counter()
        for result in tracker.track(frames, prompts):
            sink.write(f"{result.frame_idx:05d}", tracker.state.frame, result)
            now = time.perf_counter()
            rows.append({"frame": now - start, "encode": clock.encode_s,
                         "decode": clock.decode_s, "visible": len(result)})
            clock.encode_s = clock.decode_s = 0.0
            start = now
    tracked = rows[1:] or rows  # frame 0 adds the objects
    median = {key: statistics.median(r[key] for r in tracked)
              for key in ("frame", "encode", "decode")}
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "objects": int(settings["objects"]),
        "frames": len(tracked),
        "frame_ms": round(1000 * median["frame"], 1),
        "encode_ms": round(1000 * median["encode"], 1),
        "decode_ms": round(1000 * median["decode"], 1),
        "tracker_ms": round(1000 * (median["frame"] - median["encode"] - median["decode"]), 1),
        "add_objects_ms": round(1000 * rows[0]["frame"], 1),
        "visible_mean": round(statistics.mean(r["visible"] for r in tracked), 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def child_main() -> None:
    """``python -c "from vos.bench.objects import child_main; child_main()" SETTINGS_JSON``."""
    print(json.dumps(measure_objects(json.loads(sys.argv[1]))))


def bench_objects(
    report: Any,
    counts: Sequence[int],
    *,
    video: str | None,
    frames: int,
    checkpoint: str | None,
    backend: str,
    fast_mode: str,
    threads: int,
) -> None:
    """One ``objects`` row per count, each measured in a child interpreter.

    Args:
        report: gets the rows (``report.objects``) and the notes.
        counts: object counts N, e.g. 1, 8, 32, 100, 254.
        video: the video (or frame folder) whose frames are tracked; None: synthetic frames.
        frames: frames per run (frame 0 adds the objects and is not in the medians).
        checkpoint: the model's weights, or None (synthetic).
        backend: ``model.backend`` of the run (``auto`` is the CLI's default).
        fast_mode: ``model.fast_mode`` of the run.
        threads: torch threads.
    """
    base: dict[str, Any] | None = None
    for count in counts:
        settings = {"objects": count, "video": video, "frames": frames, "checkpoint": checkpoint,
                    "backend": backend, "fast_mode": fast_mode, "threads": threads}
        done = subprocess.run(
            [sys.executable, "-c", "from vos.bench.objects import child_main; child_main()",
             json.dumps(settings)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            report.notes.append(f"objects {count}: the run failed "
                                f"({done.stderr.strip().splitlines()[-1:] or ['?']})")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        base = base or row
        row["frame_vs_1"] = round(row["frame_ms"] / max(base["frame_ms"], 1e-9), 2)
        row["decode_vs_1"] = round(row["decode_ms"] / max(base["decode_ms"], 1e-9), 2)
        report.objects.append({"backend": backend, "mode": fast_mode, **row})
        logger.info("objects %s", row)
    report.notes.append(
        "objects: a grid of same-sized ellipses given as masks on frame 0 (the 254-id layout, "
        "first N cells); medians over the frames after frame 0; one interpreter per count "
        "(its own peak RSS)" + ("; synthetic weights: the decoder runs in full, its answers "
                                "are replaced by the objects' shapes (ObjectShaped)"
                                if checkpoint is None else ""))


def bench_uvo(report: Any, model: Any, frames_root: Path, annotations: Path, *,
              max_proposals: int = 100, backend: str = "auto") -> None:
    """The UVO mode's seconds per video on a sample: proposals on frame 0, all tracked.

    The mask generator's quality thresholds are off, so that synthetic weights also give it
    ``max_proposals`` objects to track (a trained model passes about that many on UVO).
    """
    from repvit_sam import SamAutomaticMaskGenerator
    from repvit_sam.runtime import build_segmenter
    from vos.config import PromptConfig, TrackerConfig
    from vos.eval.drivers import run_uvo

    gt = json.loads(annotations.read_text())
    generator = SamAutomaticMaskGenerator(model, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                          box_nms_thresh=1.0, max_num_masks=max_proposals)
    propose_s: list[float] = []

    def propose(frame: np.ndarray) -> list[np.ndarray]:
        start = time.perf_counter()
        masks = [r["segmentation"] for r in generator.generate(frame)]
        propose_s.append(time.perf_counter() - start)
        return masks

    tracker = dataclasses.replace(TrackerConfig(), min_score=0.0, min_area_ratio=0.0)
    with tempfile.TemporaryDirectory(prefix="vos-bench-uvo-") as tmp:
        pred, timings = run_uvo(gt, frames_root, Path(tmp), build_segmenter(model, backend),
                                propose, tracker, PromptConfig(), progress=False)
    for timing, seconds in zip(timings, propose_s, strict=False):
        report.uvo.append({"video": timing.name, "frames": timing.frames,
                           "tracks": sum(1 for t in pred if str(t["video_id"]) == timing.name),
                           "seconds": round(timing.seconds, 1),
                           "proposals_s": round(seconds, 1),
                           "s_per_frame": round(timing.seconds / max(timing.frames, 1), 2)})
