"""The live loop: newest camera frame -> tracker -> window, keys, mouse prompts and recorder.

The model runs on the main thread with the window: OpenCV's HighGUI must be driven from one
thread, and the tracker's state is then never touched concurrently. The price is a window
that answers only between frames when the model is slow (CPU: about 1.6 s a frame).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vos.io.camera import FrameGrabber
from vos.io.sinks import ResultSink
from vos.live.session import LiveSession, LiveStats
from vos.live.ui import Action, Display, PromptDrawer, key_to_action, render_view
from vos.types import Prompt

logger = logging.getLogger(__name__)

__all__ = ["SNAPSHOT_DIR", "SUMMARY_NAME", "LiveApp", "frame_name"]

SUMMARY_NAME = "live_summary.json"
SNAPSHOT_DIR = "snapshots"


def frame_name(index: int) -> str:
    """File stem of a capture index (5 digits as in video mode; gaps mark dropped frames)."""
    return f"{index:05d}"


class LiveApp:
    """The live loop: newest frame -> tracker -> window and recorder.

    Args:
        camera: the frame grabber (started by :meth:`run`, closed by the caller).
        session: the tracking session.
        window: a :class:`~vos.live.ui.Display`, or None to run headless.
        recorder: writes every processed frame's masks (and overlay video); None for none.
        snapshot_dir: where ``s`` saves the current frame's masks; None disables saving.
        max_frames: stop after this many processed frames.
        init_prompts: objects to add on the first processed frame.
        drawer: the mouse prompt collector (one is made for the camera size by default).

    Example:
        >>> with open_camera("clip.mp4") as camera:
        ...     stats = LiveApp(camera, LiveSession(predictor), init_prompts=prompts).run()
    """

    def __init__(
        self,
        camera: FrameGrabber,
        session: LiveSession,
        *,
        window: Display | None = None,
        recorder: ResultSink | None = None,
        snapshot_dir: Path | None = None,
        max_frames: int | None = None,
        init_prompts: Sequence[Prompt] = (),
        drawer: PromptDrawer | None = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames: expected >= 1, got {max_frames}")
        self.camera = camera
        self.session = session
        self.window = window
        self.recorder = recorder
        self.snapshot_dir = snapshot_dir
        self.max_frames = max_frames
        self.drawer = drawer or PromptDrawer(camera.info.image_hw)
        self.paused = False
        self.quit = False
        self.snapshots_saved = 0
        self._init_prompts = list(init_prompts)
        self._paused_since: float | None = None
        self._paused_seconds = 0.0
        self._first_timestamp: float | None = None
        self._overlay_frames = 0  # frame periods the recorder's overlay holds so far

    @property
    def stats(self) -> LiveStats:
        """The session's statistics with the camera's counters filled in."""
        stats = self.session.stats
        stats.frames_captured = self.camera.frames_captured
        stats.frames_dropped = self.camera.frames_dropped
        return stats

    def handle_key(self, key: int) -> Action | None:
        """Apply the action bound to a key code; returns it (None for unbound keys)."""
        action = key_to_action(key)
        if action is Action.QUIT:
            self.quit = True
        elif action is Action.RESET:
            self.drawer.clear()
            self.session.reset()
        elif action is Action.REMOVE_LAST:
            self.session.remove_last()
        elif action is Action.PAUSE:
            self._set_paused(not self.paused)
        elif action is Action.SAVE:
            self.save_snapshot()
        elif action is Action.ADD_POINTS:
            if not self.drawer.commit_points():
                logger.warning("no positive point collected (shift+left-click adds one)")
        elif action is Action.CLEAR_POINTS:
            self.drawer.clear()
        return action

    def save_snapshot(self) -> Path | None:
        """Write the current frame's masks (PNG + JSON) under ``snapshot_dir``."""
        frame, result = self.session.frame, self.session.result
        if self.snapshot_dir is None or frame is None or result is None:
            logger.warning("nothing saved: no output folder or no frame yet")
            return None
        with ResultSink(self.snapshot_dir, frame.image.shape[:2], 1.0, save_video=False) as sink:
            sink.write(frame_name(frame.index), frame.image, result)
        self.snapshots_saved += 1
        logger.info("frame %d saved in %s", frame.index, self.snapshot_dir)
        return self.snapshot_dir

    def run(self) -> LiveStats:
        """Loop until quit, the end of the stream, or ``max_frames``; returns the stats."""
        self.camera.start()
        try:
            self._loop()
        finally:
            # Also on Ctrl-C or a reader error, so the summary covers the frames done.
            self._set_paused(False)
            if self._first_timestamp is not None:
                active = time.perf_counter() - self._first_timestamp - self._paused_seconds
                self.session.stats.active_seconds = max(active, 0.0)
        return self.stats

    def _loop(self) -> None:
        while not self.quit:
            if self.max_frames is not None and self.session.stats.frames_processed >= self.max_frames:
                break
            if self.paused:
                self._interact(wait_ms=30)
                continue
            # Headless runs have nothing else to do, so they block longer per wait.
            captured = self.camera.read(timeout=0.03 if self.window is not None else 0.5)
            if captured is None:
                if self.camera.finished:
                    break
                self._interact(wait_ms=1)
                continue
            if self._first_timestamp is None:
                self._first_timestamp = captured.timestamp
            prompts, self._init_prompts = self._init_prompts, []
            self.session.process(captured, prompts)
            self._interact(wait_ms=1)
            if self.recorder is not None:
                # Written after the window step so that prompts given on this frame count.
                assert self.session.result is not None
                self._pace_overlay(captured.timestamp)
                self.recorder.write(frame_name(captured.index), captured.image,
                                    self.session.result)

    def _pace_overlay(self, timestamp: float) -> None:
        """Hold the previous overlay frame over the capture time of the dropped frames.

        The overlay is encoded at the camera's fps; without this, 10 frames processed out of
        1.3 s of capture played in 0.33 s (issue 23). Time spent paused is left out.
        """
        assert self.recorder is not None and self._first_timestamp is not None
        elapsed = timestamp - self._first_timestamp - self._paused_seconds
        due = round(elapsed * self.camera.info.fps)
        if due > self._overlay_frames:
            self.recorder.repeat_overlay(due - self._overlay_frames)
        self._overlay_frames = max(due, self._overlay_frames) + 1

    def _interact(self, wait_ms: int) -> None:
        """Show the current view, then apply keys and finished mouse prompts."""
        if self.window is None or self.session.frame is None:
            if self.window is not None:
                self.window.show(np.zeros((*self.camera.info.image_hw, 3), np.uint8), wait_ms)
            return
        key = self.window.show(self._view(), wait_ms)
        self.handle_key(key)
        prompts = self.drawer.take()
        for prompt in prompts:
            self.session.add_object(prompt)
        if prompts and not self.quit:
            # Immediate feedback: the new object's mask on the frame it was drawn on.
            self.handle_key(self.window.show(self._view(), 1))

    def _view(self) -> np.ndarray:
        frame = self.session.frame
        assert frame is not None
        stats = self.stats
        text = (f"{self.session.recent_fps:4.1f} fps  "
                f"{1000 * (stats.latencies_s[-1] if stats.latencies_s else 0):.0f} ms  "
                f"dropped {stats.frames_dropped}")
        if self.paused:
            text += "  PAUSED"
        return render_view(frame.image, self.session.result, banner=text,
                           drag_box=self.drawer.drag_box, points=self.drawer.points)

    def _set_paused(self, paused: bool) -> None:
        now = time.perf_counter()
        if paused and not self.paused:
            self._paused_since = now
        elif not paused and self.paused and self._paused_since is not None:
            self._paused_seconds += now - self._paused_since
            self._paused_since = None
        self.paused = paused
