"""The live session: a tracker fed with the newest camera frames, and its latency counters."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vos.config import PromptConfig, TrackerConfig
from vos.io.camera import CapturedFrame
from vos.tracker import Segmenter, VideoTracker
from vos.types import FrameResult, Prompt

logger = logging.getLogger(__name__)

__all__ = ["MAX_LATENCY_SAMPLES", "LiveSession", "LiveStats"]

# Latencies kept for the summary: about an hour at 30 fps, 8 bytes each.
MAX_LATENCY_SAMPLES = 100_000


@dataclass
class LiveStats:
    """Counters and latencies of a live run.

    Attributes:
        frames_captured: frames the camera delivered.
        frames_processed: frames the tracker ran on.
        frames_dropped: frames replaced by a newer one before the model was free.
        active_seconds: wall time from the first frame to the last result, pauses excluded.
        latencies_s: capture -> result-ready seconds of the latest processed frames.
    """

    frames_captured: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    active_seconds: float = 0.0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_LATENCY_SAMPLES))

    @property
    def fps(self) -> float:
        """Processed frames per second of active time."""
        return self.frames_processed / self.active_seconds if self.active_seconds > 0 else 0.0

    def latency_ms(self, percentile: float = 50.0) -> float:
        """A percentile of the latency in milliseconds (nan before the first frame)."""
        if not self.latencies_s:
            return float("nan")
        return 1000.0 * float(np.percentile(np.fromiter(self.latencies_s, float), percentile))

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready summary (latency median, p95 and max in ms)."""
        return {
            "frames_captured": self.frames_captured,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "active_seconds": round(self.active_seconds, 3),
            "fps": round(self.fps, 3),
            "latency_median_ms": round(self.latency_ms(50), 2),
            "latency_p95_ms": round(self.latency_ms(95), 2),
            "latency_max_ms": round(self.latency_ms(100), 2),
        }


class LiveSession:
    """A tracker fed with the newest camera frames, with latency accounting.

    Args:
        segmenter: anything with ``encode``/``decode`` (``repvit_sam.SamPredictor``).
        tracker_config: tracker thresholds (``configs/webcam.yaml`` favours latency).
        prompt_config: how prompts are derived from previous masks.
        seed: seed of the tracker's random generator.

    Example:
        >>> session = LiveSession(SamPredictor(model))
        >>> result = session.process(captured, prompts=[Prompt(box_xyxy=box)])
        >>> session.stats.latency_ms(95)
    """

    def __init__(
        self,
        segmenter: Segmenter,
        tracker_config: TrackerConfig | None = None,
        prompt_config: PromptConfig | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.tracker = VideoTracker(segmenter, tracker_config, prompt_config, seed=seed)
        self.stats = LiveStats()
        self.frame: CapturedFrame | None = None
        self.result: FrameResult | None = None
        self._added: list[int] = []
        self._recent: deque[float] = deque(maxlen=30)

    @property
    def recent_fps(self) -> float:
        """Processing rate over the last (up to) 30 results."""
        if len(self._recent) < 2:
            return 0.0
        span = self._recent[-1] - self._recent[0]
        return (len(self._recent) - 1) / span if span > 0 else 0.0

    def process(self, captured: CapturedFrame, prompts: Sequence[Prompt] = ()) -> FrameResult:
        """Track every object onto a new frame, then add ``prompts`` on it.

        Args:
            captured: the frame and its capture timestamp.
            prompts: new objects on this frame (invalid ones are logged and skipped).

        Returns:
            The frame's visible objects, including the new ones.
        """
        image_hw = (int(captured.image.shape[0]), int(captured.image.shape[1]))
        valid: list[Prompt] = []
        for prompt in prompts:
            try:
                valid.append(prompt.checked(image_hw))
            except ValueError as exc:
                logger.warning("prompt ignored: %s", exc)
        self.result = self.tracker.step(captured.image, valid)
        self.frame = captured
        for obj_id in self.tracker.added_obj_ids:
            self._note_added(obj_id)
        now = time.perf_counter()
        self.stats.frames_processed += 1
        self.stats.latencies_s.append(now - captured.timestamp)
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
        self.result = self.tracker.result()
        self._note_added(obj_id)
        return obj_id

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
        self.tracker.remove_object(obj_id)
        if self.frame is not None:
            self.result = self.tracker.result()
        logger.info("object %d removed", obj_id)
        return obj_id

    def reset(self) -> None:
        """Forget every object; the current frame stays, so prompts can follow at once."""
        self.tracker.reset()
        self._added.clear()
        if self.frame is not None:
            # A step with no objects runs no model, it only makes the frame current again.
            self.result = self.tracker.step(self.frame.image)
        logger.info("reset: all objects removed")

    def _note_added(self, obj_id: int) -> None:
        assert self.frame is not None
        self._added.append(obj_id)
        logger.info("object %d added on capture frame %d", obj_id, self.frame.index)
