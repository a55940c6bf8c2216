"""The live session: a tracker fed with the newest camera frames, and its latency counters."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vos.config import PromptConfig, TrackerConfig
from vos.io.camera import CapturedFrame
from vos.tracker import Segmenter, VideoTracker
from vos.types import FrameResult, Prompt, TrackStatus

logger = logging.getLogger(__name__)

__all__ = ["MAX_LATENCY_SAMPLES", "Correction", "LiveSession", "LiveStats"]

# Latencies kept for the summary: about an hour at 30 fps, 8 bytes each.
MAX_LATENCY_SAMPLES = 100_000


@dataclass(frozen=True)
class Correction:
    """A click that corrects a tracked object on the frame it was given on.

    Attributes:
        obj_id: the object corrected.
        point_xy: (x, y) in frame pixels.
        label: 1 adds the pixel's region to the object, 0 takes it away.
    """

    obj_id: int
    point_xy: tuple[float, float]
    label: int


class LiveStats:
    """Counters and latencies of a live run (read from any thread).

    Attributes:
        frames_captured: frames the camera delivered.
        frames_processed: frames the model ran on (keyframes).
        frames_dropped: frames never shown (replaced by a newer one first).
        frames_shown: frames shown with masks: the keyframes and, when masks are carried,
            every frame in between.
        frames_carried: shown frames whose masks were carried from an earlier keyframe.
        frames_before_model: shown frames with no model result to draw: before the first
            one, or after a reset until the next.
        frames_without_objects: shown frames, after the first model result, on which no
            object was visible (none tracked, or every one LOST or carried out of view).
        active_seconds: wall time from the first frame to the last one, pauses excluded.
        latencies_s: capture -> frame shown with its masks, per shown frame (the latest).
        model_latencies_s: capture -> model result ready, per keyframe (the latest).

    Args:
        max_samples: latencies kept per kind (memory stays flat on an endless stream).
    """

    def __init__(self, max_samples: int = MAX_LATENCY_SAMPLES) -> None:
        self.frames_captured = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.frames_shown = 0
        self.frames_carried = 0
        self.frames_before_model = 0
        self.frames_without_objects = 0
        self.active_seconds = 0.0
        self.latencies_s: deque[float] = deque(maxlen=max_samples)
        self.model_latencies_s: deque[float] = deque(maxlen=max_samples)

    @property
    def fps(self) -> float:
        """Model frames (keyframes) per second of active time."""
        return self.frames_processed / self.active_seconds if self.active_seconds > 0 else 0.0

    @property
    def display_fps(self) -> float:
        """Frames shown with masks per second of active time."""
        return self.frames_shown / self.active_seconds if self.active_seconds > 0 else 0.0

    @property
    def carried_share(self) -> float:
        """Fraction of the shown frames whose masks were carried (0 before the first)."""
        return self.frames_carried / self.frames_shown if self.frames_shown else 0.0

    def latency_ms(self, percentile: float = 50.0) -> float:
        """A percentile of capture -> shown in milliseconds (nan before the first frame)."""
        return _percentile_ms(self.latencies_s, percentile)

    def model_latency_ms(self, percentile: float = 50.0) -> float:
        """A percentile of capture -> model result in milliseconds (nan before the first)."""
        return _percentile_ms(self.model_latencies_s, percentile)

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready summary (latency median, p95 and max in ms)."""
        return {
            "frames_captured": self.frames_captured,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "frames_shown": self.frames_shown,
            "frames_carried": self.frames_carried,
            "frames_before_model": self.frames_before_model,
            "frames_without_objects": self.frames_without_objects,
            "active_seconds": round(self.active_seconds, 3),
            "fps": round(self.fps, 3),
            "display_fps": round(self.display_fps, 3),
            "latency_median_ms": round(self.latency_ms(50), 2),
            "latency_p95_ms": round(self.latency_ms(95), 2),
            "latency_max_ms": round(self.latency_ms(100), 2),
            "model_latency_median_ms": round(self.model_latency_ms(50), 2),
            "model_latency_p95_ms": round(self.model_latency_ms(95), 2),
        }


def _percentile_ms(samples: deque[float], percentile: float) -> float:
    # tuple() copies the deque in one C call, so another thread appending meanwhile is safe.
    values = tuple(samples)
    if not values:
        return float("nan")
    return 1000.0 * float(np.percentile(values, percentile))


class LiveSession:
    """A tracker fed with camera frames (the keyframes), with latency accounting.

    Every method acts on the tracker from the caller's thread: with the model on a worker
    thread (:class:`~vos.live.worker.ModelWorker`), only that thread calls them.

    Args:
        segmenter: anything with ``encode``/``decode`` (``repvit_sam.SamPredictor``).
        tracker_config: tracker thresholds (``configs/webcam.yaml`` favours latency).
        prompt_config: how prompts are derived from previous masks.
        seed: seed of the tracker's random generator.
        max_latency_samples: latencies kept in :attr:`stats`.

    Example:
        >>> session = LiveSession(SamPredictor(model))
        >>> result = session.process(captured, prompts=[Prompt(box_xyxy=box)])
        >>> session.stats.model_latency_ms(95)
    """

    def __init__(
        self,
        segmenter: Segmenter,
        tracker_config: TrackerConfig | None = None,
        prompt_config: PromptConfig | None = None,
        *,
        seed: int = 0,
        max_latency_samples: int = MAX_LATENCY_SAMPLES,
    ) -> None:
        self.tracker = VideoTracker(segmenter, tracker_config, prompt_config, seed=seed)
        self.stats = LiveStats(max_latency_samples)
        self.frame: CapturedFrame | None = None
        self.result: FrameResult | None = None
        self._added: list[int] = []
        self._recent: deque[float] = deque(maxlen=30)

    @property
    def recent_fps(self) -> float:
        """Model rate over the last (up to) 30 results."""
        recent = tuple(self._recent)
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def process(
        self,
        captured: CapturedFrame,
        prompts: Sequence[Prompt] = (),
        corrections: Sequence[Correction] = (),
    ) -> FrameResult:
        """Track every object onto a new frame, then add ``prompts`` and ``corrections``.

        Args:
            captured: the frame and its capture timestamp.
            prompts: new objects on this frame (invalid ones are logged and skipped).
            corrections: clicks on tracked objects of this frame (see :meth:`correct`).

        Returns:
            The frame's visible objects, including the new ones; ``frame_idx`` is the
            capture index.
        """
        image_hw = (int(captured.image.shape[0]), int(captured.image.shape[1]))
        valid: list[Prompt] = []
        for prompt in prompts:
            try:
                valid.append(prompt.checked(image_hw))
            except ValueError as exc:
                logger.warning("prompt ignored: %s", exc)
        self.tracker.step(captured.image, valid)
        self.frame = captured
        for obj_id in self.tracker.added_obj_ids:
            self._note_added(obj_id)
        for correction in corrections:
            self._apply(correction)
        self.result = self._current()
        now = time.perf_counter()
        self.stats.frames_processed += 1
        self.stats.model_latencies_s.append(now - captured.timestamp)
        self._recent.append(now)
        return self.result

    def add_object(self, prompt: Prompt) -> int | None:
        """Add an object on the current frame; returns its obj_id, or None if rejected."""
        if self.frame is None:
            logger.warning("no frame yet: the prompt is ignored")
            return None
        try:
            obj_id = self.tracker.add_prompt(prompt)
        except ValueError as exc:
            logger.warning("prompt ignored: %s", exc)
            return None
        self.result = self._current()
        self._note_added(obj_id)
        return obj_id

    def correct(self, correction: Correction) -> bool:
        """Refine one object's mask on the current frame with a click (SAM's mask input).

        The click goes to the decoder with the object's current low-res logits, so a
        positive click grows the mask to the clicked region and a negative one removes it.
        An object that is LOST here is re-prompted from a positive click alone.

        Returns:
            False (with a log line) where the click cannot apply: no frame yet, no such
            object, or a negative click on an object with no mask on this frame.
        """
        if self.frame is None:
            logger.warning("no frame yet: the correction is ignored")
            return False
        applied = self._apply(correction)
        self.result = self._current()
        return applied

    def remove_last(self) -> int | None:
        """Remove the most recently added object that is still tracked; returns its id."""
        live = self.tracker.tracks
        while self._added:
            obj_id = self._added.pop()
            if obj_id in live:
                break
        else:
            if not live:
                return None
            obj_id = max(live)  # objects given by id (or expired history): newest id
        return self.remove_object(obj_id)

    def remove_object(self, obj_id: int) -> int | None:
        """Stop tracking one object; returns its id, or None (logged) if it is not tracked."""
        if obj_id not in self.tracker.tracks:
            logger.warning("object %d is not tracked: nothing removed", obj_id)
            return None
        self.tracker.remove_object(obj_id)
        if self.frame is not None:
            self.result = self._current()
        logger.info("object %d removed", obj_id)
        return obj_id

    def reset(self) -> None:
        """Forget every object; the current frame stays, so prompts can follow at once."""
        self.tracker.reset()
        self._added.clear()
        if self.frame is not None:
            # A step with no objects runs no model, it only makes the frame current again.
            self.tracker.step(self.frame.image)
            self.result = self._current()
        logger.info("reset: all objects removed")

    def _current(self) -> FrameResult:
        """The tracker's result on the current frame, numbered by capture index."""
        assert self.frame is not None
        return dataclasses.replace(self.tracker.result(), frame_idx=self.frame.index)

    def _apply(self, correction: Correction) -> bool:
        track = self.tracker.tracks.get(correction.obj_id)
        if track is None:
            logger.warning("correction ignored: object %d is not tracked", correction.obj_id)
            return False
        label = int(correction.label)
        logits = track.low_res_logits if track.status is TrackStatus.ACTIVE else None
        if logits is None and label != 1:
            logger.warning("correction ignored: object %d has no mask here to take a region "
                           "from", correction.obj_id)
            return False
        prompt = Prompt(points_xy=np.array([correction.point_xy], np.float32),
                        point_labels=np.array([label], np.int64), obj_id=correction.obj_id,
                        mask_logits=None if logits is None else logits.reshape(1, 256, 256))
        try:
            self.tracker.add_prompt(prompt)
        except ValueError as exc:
            logger.warning("correction ignored: %s", exc)
            return False
        logger.info("object %d corrected (%s click at %.0f, %.0f)", correction.obj_id,
                    "positive" if label == 1 else "negative", *correction.point_xy)
        return True

    def _note_added(self, obj_id: int) -> None:
        assert self.frame is not None
        self._added.append(obj_id)
        logger.info("object %d added on capture frame %d", obj_id, self.frame.index)
