"""The agreement section: each fast mode's masks against exact mode's, on the same frames.

With real weights this tells how far a fast mode moves the masks; with synthetic weights the
figures describe no trained model (the report's ``real_weights`` column says which).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repvit_sam.segmenter import SegmenterWrapper
from vos.bench.inputs import box_prompts
from vos.bench.report import Report, backend_column
from vos.config import PromptConfig, TrackerConfig
from vos.matching import mask_iou
from vos.prompts import mask_to_box
from vos.tracker import VideoTracker

logger = logging.getLogger(__name__)

NOISE_MODE = "exact, input ±1 noise (reference)"


class EmbeddingRecorder(SegmenterWrapper):
    """A segmenter wrapper that keeps every embedding it computes, in order.

    Args:
        inner: the segmenter.
        known: embeddings computed already, by ``id`` of their frame (each used once).
    """

    def __init__(self, inner: Any, known: dict[int, Any] | None = None) -> None:
        super().__init__(inner)
        self.known = known or {}
        self.embeddings: list[Any] = []
        self.encode_s: list[float] = []

    def encode(self, image: np.ndarray) -> Any:
        start = time.perf_counter()
        embedding = self.known.pop(id(image), None) or self.inner.encode(image)
        self.encode_s.append(time.perf_counter() - start)
        self.embeddings.append(embedding)
        return embedding


@dataclass
class TrackedRun:
    """One tracker run of the agreement section.

    Attributes:
        masks: per frame, {obj_id: (H, W) bool mask} of the visible objects.
        recorder: the embeddings of every frame and each encode's seconds.
        seconds: wall time of the whole run.
    """

    masks: list[dict[int, np.ndarray]]
    recorder: EmbeddingRecorder
    seconds: float


def track_masks(
    segmenter: Any,
    frames: Sequence[np.ndarray],
    boxes: np.ndarray,
    known: dict[int, Any] | None = None,
) -> TrackedRun:
    """Track the frame-0 ``boxes`` ((N, 4) float32 XYXY) through ``frames`` with the default
    tracker config; ``known`` as for :class:`EmbeddingRecorder`."""
    recorder = EmbeddingRecorder(segmenter, known)
    tracker = VideoTracker(recorder, TrackerConfig(), PromptConfig(), seed=0)
    start = time.perf_counter()
    masks = [
        dict(zip(result.obj_ids.tolist(), result.masks, strict=True))
        for result in tracker.track(frames, prompts={0: box_prompts(boxes)})
    ]
    return TrackedRun(masks, recorder, time.perf_counter() - start)


def _iou(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """IoU of two (H, W) bool masks where a missing object is None (both missing, or both
    empty, agree: 1.0; unlike ``mask_iou``, which scores two empty masks 0)."""
    if a is None and b is None:
        return 1.0
    if a is None or b is None:
        return 0.0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _same_prompt_ious(
    exact: Any, exact_embedding: Any, other: Any, other_embedding: Any, boxes: np.ndarray
) -> list[float]:
    """Per box ((N, 4) float32 XYXY), the IoU of ``other``'s mask with ``exact``'s."""
    ref = exact.decode(exact_embedding, boxes_xyxy=boxes)
    out = other.decode(other_embedding, boxes_xyxy=boxes)
    return np.diag(mask_iou(out.masks[:, 0].numpy(), ref.masks[:, 0].numpy())).tolist()


def _row(
    mode: str, backend: str, frames: int, same: list[float], tracked: list[float], **extra: Any
) -> dict[str, Any]:
    """An agreement row: mean and min of the same-prompt IoUs, mean of the tracked ones."""
    return {
        "mode": mode,
        "backend": backend,
        "frames": frames,
        "iou_same_prompts": round(float(np.mean(same)), 4) if same else None,
        "iou_same_prompts_min": round(float(np.min(same)), 4) if same else None,
        "iou_tracked": round(float(np.mean(tracked)), 4) if tracked else None,
        **extra,
    }


def bench_agreement(
    report: Report,
    exact: Any,
    fast: Sequence[Any],
    frames: Sequence[np.ndarray],
    user_boxes: np.ndarray,
    *,
    weights_are_real: bool,
    noise_frames: int = 3,
) -> None:
    """Agreement rows: each fast mode's masks against exact mode's on the same frames.

    The exact mode's first-frame masks for ``user_boxes`` give the box prompts (tight boxes of
    those masks) that every mode starts from. Two figures per mode:

    - ``iou_same_prompts``: on every frame, decode exact mode's tracked boxes on the fast
      mode's embedding; mean IoU with exact mode's masks. Isolates the encoder approximation.
    - ``iou_tracked``: run the whole tracker in the fast mode; mean IoU of its masks with
      exact mode's tracked masks. Includes drift, which compounds over frames.

    Args:
        report: gets the noise-floor row, then one row per mode (exact first).
        exact: the exact-mode segmenter.
        fast: the fast-mode segmenters.
        frames: (H, W, 3) uint8 RGB frames.
        user_boxes: (N, 4) float32 XYXY frame-0 boxes in frame pixels.
        weights_are_real: whether the model was loaded from a checkpoint.
        noise_frames: frames of the noise-floor row.
    """
    first_embedding = exact.encode(frames[0])
    first = exact.decode(first_embedding, boxes_xyxy=user_boxes, multimask_output=False)
    boxes = []
    for mask, user_box in zip(first.masks[:, 0].numpy(), user_boxes, strict=True):
        box = mask_to_box(mask)
        boxes.append(box if box is not None else user_box)
    prompt_boxes = np.asarray(boxes, np.float32)
    reference = track_masks(exact, frames, prompt_boxes, {id(frames[0]): first_embedding})
    runs = [("exact", exact, reference)]
    runs += [(seg.mode.name, seg, track_masks(seg, frames, prompt_boxes)) for seg in fast]
    report.agreement.append(
        _noise_floor(exact, frames, reference, weights_are_real, noise_frames)
    )
    for name, seg, run in runs:
        same, tracked = [], []
        for frame_idx, exact_frame in enumerate(reference.masks):
            ids = sorted(set(exact_frame) | set(run.masks[frame_idx]))
            tracked += [_iou(exact_frame.get(i), run.masks[frame_idx].get(i)) for i in ids]
            if not exact_frame:
                continue
            obj_boxes = []
            for obj_id in sorted(exact_frame):
                box = mask_to_box(exact_frame[obj_id])
                obj_boxes.append(box if box is not None else np.zeros(4, np.float32))
            same += _same_prompt_ious(
                exact, reference.recorder.embeddings[frame_idx],
                seg, run.recorder.embeddings[frame_idx], np.asarray(obj_boxes, np.float32),
            )
        report.agreement.append(
            _row(name, backend_column(seg), len(frames), same, tracked,
                 encode_ms=round(1000 * statistics.median(run.recorder.encode_s), 1),
                 tracker_fps=round(len(frames) / run.seconds, 3),
                 real_weights=weights_are_real)
        )
        logger.info("agreement %s", report.agreement[-1])


def _noise_floor(
    exact: Any,
    frames: Sequence[np.ndarray],
    reference: TrackedRun,
    weights_are_real: bool,
    max_frames: int = 3,
) -> dict[str, Any]:
    """A reference row: exact mode on frames with +-1 grey-level noise, same prompts.

    It tells how far this checkpoint's masks move under an imperceptible input change, which
    is the scale to read the fast modes' agreement on (untrained weights move a lot).
    """
    rng = np.random.default_rng(0)
    same: list[float] = []
    for frame_idx in range(min(max_frames, len(frames))):
        objects = reference.masks[frame_idx]
        boxes = [mask_to_box(objects[i]) for i in sorted(objects)]
        boxes = [b for b in boxes if b is not None]
        if not boxes:
            continue
        noise = rng.integers(-1, 2, frames[frame_idx].shape)
        noisy = np.clip(frames[frame_idx].astype(np.int16) + noise, 0, 255).astype(np.uint8)
        same += _same_prompt_ious(
            exact, reference.recorder.embeddings[frame_idx],
            exact, exact.encode(noisy), np.asarray(boxes, np.float32),
        )
    return _row(NOISE_MODE, backend_column(exact), min(max_frames, len(frames)), same, [],
                encode_ms=None, tracker_fps=None, real_weights=weights_are_real)
