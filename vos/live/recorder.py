"""The live recording: every shown frame written in capture order, with where its masks came from.

The window can only carry masks from a keyframe whose model result is already finished, so it
shows each frame with masks from one or two model periods back. The recording needs no such
haste: :class:`LiveRecorder` holds the shown frames until no newer keyframe can come for them
(the model has moved past them), then writes each with its own model result if it was a
keyframe, or with masks carried from the nearest keyframe before it. It runs about one model
period behind the window, on the window's thread; the files themselves are written by the
:class:`~vos.io.sinks.ResultSink`'s writer thread.

Each frame's JSON says ``"source": "model"`` or ``"carried"`` (``"none"`` before the first
result), ``"keyframe"`` (its capture index) and ``"keyframe_distance"`` (frames since it).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from vos.io.camera import CapturedFrame
from vos.io.sinks import ResultSink
from vos.live.flow import FlowFrame, MaskCarrier
from vos.live.worker import Keyframe
from vos.types import FrameResult

logger = logging.getLogger(__name__)

__all__ = ["LiveRecorder", "View", "frame_name"]

MiB = 1 << 20


def frame_name(index: int) -> str:
    """File stem of a capture index (5 digits as in video mode; gaps mark dropped frames)."""
    return f"{index:05d}"


@dataclass(frozen=True)
class View:
    """One frame as the window showed it.

    Attributes:
        captured: the camera frame.
        flow: the frame as the optical flow sees it (None without carrying).
        result: its objects (None: no model result yet); ``frame_idx`` = capture index.
        keyframe: the keyframe its masks came from (None: no model result yet).
        min_generation: the oldest keyframe generation that may give it masks (results
            from before a reset may not).
    """

    captured: CapturedFrame
    flow: FlowFrame | None
    result: FrameResult | None
    keyframe: Keyframe | None
    min_generation: int = 0

    @property
    def source(self) -> str:
        """"model" (its own keyframe), "carried", or "none" (no result yet)."""
        if self.keyframe is None or self.result is None:
            return "none"
        return "model" if self.keyframe.index == self.captured.index else "carried"


class LiveRecorder:
    """Writes shown frames in order, each with the nearest keyframe's masks (module docstring).

    Args:
        sink: where the frames go (PNG, JSON, overlay video).
        fps: the camera's frame rate: the overlay holds a frame over the capture time of
            frames never shown, so it plays as long as the capture took.
        carrier: moves masks from a keyframe to a later frame; None writes frames as shown.
        max_pending_mb: frames held at most (their pixels); beyond, the oldest are written
            as shown, so memory stays bounded however slow the model is.
    """

    def __init__(self, sink: ResultSink, fps: float, carrier: MaskCarrier | None = None,
                 *, max_pending_mb: float = 256.0) -> None:
        self.sink = sink
        self.fps = fps
        self.carrier = carrier
        self.max_pending_bytes = int(max_pending_mb * MiB)
        self.frames_written = 0
        self.frames_recarried = 0
        self._pending: deque[tuple[View, float]] = deque()
        self._pending_bytes = 0
        self._keys: deque[Keyframe] = deque(maxlen=16)
        self._overlay_frames = 0  # frame periods the overlay holds so far

    def add(self, view: View, elapsed_s: float) -> None:
        """Hold a shown frame until it is final.

        Args:
            view: the frame and what the window showed.
            elapsed_s: capture time since the first frame, pauses left out (for the overlay).
        """
        self._pending.append((view, elapsed_s))
        self._pending_bytes += view.captured.image.nbytes

    def advance(self, keys: Sequence[Keyframe], busy_from: int | None,
                *, max_carries: int = 2) -> None:
        """Write the frames no newer keyframe can come for.

        Args:
            keys: the newest keyframes, oldest first (the worker's
                :meth:`~vos.live.worker.ModelWorker.recent`).
            busy_from: the lowest capture index the model may still give a result for (None:
                it is idle, every held frame is final).
            max_carries: frames to carry again in this call at most (each costs a flow,
                ~2 ms at 640x480): the rest wait for the next call, so a burst of final
                frames never stalls the window.
        """
        self._note(keys)
        carries = 0
        while self._pending:
            view, elapsed = self._pending[0]
            over = self._pending_bytes > self.max_pending_bytes
            if not over and busy_from is not None and view.captured.index >= busy_from:
                break
            best = None if over else self._best_key(view)
            needs_carry = best is not None and best is not view.keyframe \
                and best.index != view.captured.index
            if needs_carry:
                if carries >= max_carries:
                    break
                carries += 1
            self._pending.popleft()
            self._pending_bytes -= view.captured.image.nbytes
            self._write(view, elapsed, best)

    def finish(self, keys: Sequence[Keyframe]) -> None:
        """Write every held frame (the end of a run)."""
        self.advance(keys, None, max_carries=len(self._pending))

    def _note(self, keys: Sequence[Keyframe]) -> None:
        """Keep the keyframes not seen yet (a republished one replaces its older result)."""
        for key in keys:
            if any(k is key for k in self._keys):
                continue
            if self._keys and self._keys[-1].index == key.index:
                self._keys.pop()  # the same frame again, after a removal: the newer result
            self._keys.append(key)

    def _best_key(self, view: View) -> Keyframe | None:
        """The newest keyframe at or before the view's frame that may give it masks."""
        best = view.keyframe
        for key in self._keys:
            if key.index <= view.captured.index and key.generation >= view.min_generation \
                    and (best is None or key.index > best.index
                         or (key.index == best.index and key.generation > best.generation)):
                best = key
        return best

    def _write(self, view: View, elapsed: float, best: Keyframe | None) -> None:
        index = view.captured.index
        result, key = view.result, view.keyframe
        if best is not None and best is not key:
            if best.index == index:
                result, key = best.result, best
            elif self.carrier is not None and best.flow is not None and view.flow is not None:
                result = self.carrier.carry(best.result, best.flow, view.flow, frame_idx=index)
                key = best
                self.frames_recarried += 1
        if result is None:
            result = FrameResult.empty(index, view.captured.image.shape[:2])
            key = None
        source = "none" if key is None else ("model" if key.index == index else "carried")
        extra = {"source": source, "keyframe": None if key is None else key.index,
                 "keyframe_distance": None if key is None else index - key.index}
        self._pace(elapsed)
        self.sink.write(frame_name(index), view.captured.image, result, extra=extra)
        self.frames_written += 1

    def _pace(self, elapsed: float) -> None:
        """Hold the previous overlay frame over the capture time of frames never shown.

        The overlay is encoded at the camera's fps; without this, frames shown out of 1.3 s
        of capture would play in less (issue 23).
        """
        due = round(elapsed * self.fps)
        if due > self._overlay_frames and self.frames_written:
            self.sink.repeat_overlay(due - self._overlay_frames)
        self._overlay_frames = max(due, self._overlay_frames) + 1
