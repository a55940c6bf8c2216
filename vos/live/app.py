"""The live loop: camera -> model and masks on every frame -> window, keys, mouse and recorder.

With carrying (``live.carry``, the default for a camera), the model runs on its own thread on
the newest frame (:class:`~vos.live.worker.ModelWorker`) and this loop shows *every* captured
frame at once, with the latest model result's masks carried to it along the optical flow
(:class:`~vos.live.flow.MaskCarrier`); a new model result replaces the carried masks from the
next frame on. Without carrying, the model runs here, on each frame the loop reads, and the
frames that arrive meanwhile are dropped (before issue 29, the only way).

The window runs on this, the main thread: OpenCV's HighGUI must be driven from one thread.
The tracker is touched only by the worker (the main thread, without carrying).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vos.io.camera import CapturedFrame, FrameGrabber
from vos.io.sinks import ResultSink
from vos.live.flow import FlowFrame, MaskCarrier
from vos.live.recorder import LiveRecorder, View, frame_name
from vos.live.session import Correction, LiveSession, LiveStats
from vos.live.ui import Action, Display, PromptDrawer, key_to_action, object_at, render_view
from vos.live.worker import Keyframe, ModelWorker
from vos.types import FrameResult, Prompt

logger = logging.getLogger(__name__)

__all__ = ["SNAPSHOT_DIR", "SUMMARY_NAME", "LiveApp", "frame_name"]

SUMMARY_NAME = "live_summary.json"
SNAPSHOT_DIR = "snapshots"


class LiveApp:
    """The live loop (module docstring).

    Args:
        camera: the frame grabber (started by :meth:`run`, closed by the caller).
        session: the tracking session (from :meth:`run` on, driven by the model worker).
        window: a :class:`~vos.live.ui.Display`, or None to run headless.
        recorder: writes every shown frame's masks (and overlay video); None for none.
        snapshot_dir: where ``s`` saves the current frame's masks; None disables saving.
        max_frames: stop after this many shown frames.
        init_prompts: objects to add on the first frame.
        drawer: the mouse prompt collector (one is made for the camera size by default).
        carrier: carries masks to the frames between model results; None runs the model
            on every frame shown (as does a camera that waits for the model, a file played
            with ``realtime=False``).

    Example:
        >>> with open_camera("clip.mp4") as camera:
        ...     stats = LiveApp(camera, LiveSession(predictor), init_prompts=prompts,
        ...                     carrier=MaskCarrier()).run()
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
        carrier: MaskCarrier | None = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames: expected >= 1, got {max_frames}")
        self.camera = camera
        self.session = session
        self.window = window
        self.snapshot_dir = snapshot_dir
        self.max_frames = max_frames
        self.drawer = drawer or PromptDrawer(camera.info.image_hw)
        # Carrying needs a camera that does not wait for the model.
        self.carrier = carrier if camera.drop_stale else None
        self.worker = ModelWorker(session, threaded=self.carrier is not None)
        self.recorder = None if recorder is None else LiveRecorder(
            recorder, camera.info.fps, self.carrier)
        self.view: View | None = None
        self.paused = False
        self.quit = False
        self.snapshots_saved = 0
        self._init_prompts = list(init_prompts)
        self._paused_since: float | None = None
        self._paused_seconds = 0.0
        self._first_timestamp: float | None = None
        self._presented = True  # the current view's latency was counted
        self._shown_times: deque[float] = deque(maxlen=30)
        self._reset_generation = 0  # keyframes older than the last reset show nothing
        # Prompts and clicks given to the model, not yet in a result: (capture index, the
        # generation that holds them, the prompt), drawn until their result shows.
        self._waiting: list[tuple[int, int, Prompt | Correction]] = []

    @property
    def stats(self) -> LiveStats:
        """The session's statistics with the camera's counters filled in."""
        stats = self.session.stats
        stats.frames_captured = self.camera.frames_captured
        stats.frames_dropped = self.camera.frames_dropped
        return stats

    @property
    def carrying(self) -> bool:
        """Whether masks are carried between model results."""
        return self.carrier is not None

    @property
    def display_fps(self) -> float:
        """Frames shown per second over the last (up to) 30."""
        times = self._shown_times
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def handle_key(self, key: int) -> Action | None:
        """Apply the action bound to a key code; returns it (None for unbound keys)."""
        action = key_to_action(key)
        if action is Action.QUIT:
            self.quit = True
        elif action is Action.RESET:
            self.drawer.clear()
            self._waiting.clear()
            self.worker.command(LiveSession.reset)
            self._reset_generation = self.worker.generation
            self._refresh_view()
        elif action is Action.REMOVE_LAST:
            self.worker.command(LiveSession.remove_last)
            self._refresh_view()
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
        """Write the shown frame's masks (PNG + JSON) under ``snapshot_dir``."""
        view = self.view
        if self.snapshot_dir is None or view is None or view.result is None:
            logger.warning("nothing saved: no output folder or no frame yet")
            return None
        frame = view.captured
        with ResultSink(self.snapshot_dir, frame.image.shape[:2], 1.0, save_video=False) as sink:
            sink.write(frame_name(frame.index), frame.image, view.result,
                       extra={"source": view.source})
        self.snapshots_saved += 1
        logger.info("frame %d saved in %s", frame.index, self.snapshot_dir)
        return self.snapshot_dir

    def run(self) -> LiveStats:
        """Loop until quit, the end of the stream, or ``max_frames``; returns the stats."""
        self.camera.start()
        self.worker.start()
        try:
            self._loop()
            if self.recorder is not None and not self.quit:
                # The end of a file: let the model finish, so the last frames get its result.
                self.worker.wait_idle(timeout=30.0)
        finally:
            # Also on Ctrl-C or a reader error, so the summary covers the frames done.
            self._set_paused(False)
            if self._first_timestamp is not None:
                active = time.perf_counter() - self._first_timestamp - self._paused_seconds
                self.session.stats.active_seconds = max(active, 0.0)
            self.worker.close()
            if self.recorder is not None:
                self.recorder.finish(self.worker.recent())
        return self.stats

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while not self.quit:
            if self.max_frames is not None and self.session.stats.frames_shown >= self.max_frames:
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
            if prompts:
                self._waiting += [(captured.index, self.worker.generation, p) for p in prompts]
            flow = self.carrier.prepare(captured.image) if self.carrier is not None else None
            self.worker.submit(captured, flow, prompts)
            self._set_view(captured, flow)
            self._interact(wait_ms=1)
            if self.recorder is not None:
                assert self.view is not None
                elapsed = captured.timestamp - self._first_timestamp - self._paused_seconds
                self.recorder.add(self.view, elapsed)
                self.recorder.advance(self.worker.recent(), self.worker.busy_from)

    def _set_view(self, captured: CapturedFrame, flow: FlowFrame | None) -> None:
        """Give a new frame its masks: its own model result, or carried from the latest."""
        key = self.worker.latest()
        self.view = self._view_of(captured, flow, key)
        stats = self.session.stats
        stats.frames_shown += 1
        if self.view.source == "carried":
            stats.frames_carried += 1
        if self.view.keyframe is None:
            stats.frames_before_model += 1
        elif self.view.result is None or not self.view.result.masks.any():
            stats.frames_without_objects += 1
        self._presented = False
        if self.window is None:
            self._count_presented()

    def _view_of(self, captured: CapturedFrame, flow: FlowFrame | None,
                 key: Keyframe | None) -> View:
        if key is None:
            return View(captured, flow, None, None, self._reset_generation)
        if key.generation < self._reset_generation:
            empty = FrameResult.empty(captured.index, captured.image.shape[:2])
            return View(captured, flow, empty, None, self._reset_generation)
        if key.index == captured.index:
            result = key.result
        elif self.carrier is not None and key.flow is not None and flow is not None:
            result = self.carrier.carry(key.result, key.flow, flow, frame_idx=captured.index)
        else:
            result = key.result
        self._waiting = [(i, g, w) for i, g, w in self._waiting
                         if i > key.index or g > key.generation]
        return View(captured, flow, result, key, self._reset_generation)

    def _refresh_view(self) -> None:
        """Re-derive the shown frame's masks after a command (inline: at once)."""
        if self.view is not None:
            self.view = self._view_of(self.view.captured, self.view.flow, self.worker.latest())

    def _count_presented(self) -> None:
        if self._presented or self.view is None:
            return
        self._presented = True
        now = time.perf_counter()
        self.session.stats.latencies_s.append(now - self.view.captured.timestamp)
        self._shown_times.append(now)

    def _interact(self, wait_ms: int) -> None:
        """Show the current view, then apply keys, clicks and finished mouse prompts."""
        if self.window is None:
            return
        if self.view is None:
            self.window.show(np.zeros((*self.camera.info.image_hw, 3), np.uint8), wait_ms)
            return
        key = self.window.show(self._render(), wait_ms)
        self._count_presented()
        self.handle_key(key)
        prompts = self.drawer.take()
        corrections: list[Correction] = []
        for click in self.drawer.take_clicks():
            obj_id = object_at(self.view.result, click.x, click.y)
            if obj_id is not None:
                corrections.append(Correction(obj_id, (float(click.x), float(click.y)),
                                              click.label))
            elif click.label == 1:
                prompts.append(Prompt(points_xy=np.array([[click.x, click.y]], np.float32),
                                      point_labels=np.ones(1, np.int64)))
            else:
                logger.warning("ctrl+click at (%d, %d): no tracked object there", click.x,
                               click.y)
        if not (prompts or corrections) or self.quit:
            return
        view = self.view
        self.worker.submit(view.captured, view.flow, prompts, corrections)
        given: list[Prompt | Correction] = [*prompts, *corrections]
        self._waiting += [(view.captured.index, self.worker.generation, w) for w in given]
        self._refresh_view()
        # Immediate feedback: the new object's mask (inline), or the prompt marked until
        # the model's result with it arrives (carrying).
        self.handle_key(self.window.show(self._render(), 1))

    def _render(self) -> np.ndarray:
        view = self.view
        assert view is not None
        stats = self.session.stats
        latency = stats.latencies_s[-1] if stats.latencies_s else 0.0
        model_latency = stats.model_latencies_s[-1] if stats.model_latencies_s else 0.0
        lines = [f"display {self.display_fps:4.1f} fps  latency {1000 * latency:4.0f} ms | "
                 f"model {self.session.recent_fps:4.1f} fps  {1000 * model_latency:4.0f} ms"]
        if view.source == "carried":
            assert view.keyframe is not None
            status = (f"masks carried +{view.captured.index - view.keyframe.index} frames "
                      f"from the model's frame {view.keyframe.index}")
        elif view.source == "model":
            status = "masks from the model on this frame"
        else:
            status = "no model result yet"
        if self.paused:
            status += "  PAUSED"
        lines.append(status)
        points = list(self.drawer.points)
        boxes = []
        for _, _, waiting in self._waiting:
            if isinstance(waiting, Correction):
                x, y = waiting.point_xy
                points.append((int(x), int(y), waiting.label))
            elif waiting.box_xyxy is not None:
                boxes.append(waiting.box_xyxy)
            elif waiting.points_xy is not None:
                points += [(int(x), int(y), 1) for x, y in waiting.points_xy]
        return render_view(view.captured.image, view.result, banner="\n".join(lines),
                           drag_box=self.drawer.drag_box, points=points, pending_boxes=boxes)

    def _set_paused(self, paused: bool) -> None:
        now = time.perf_counter()
        if paused and not self.paused:
            self._paused_since = now
        elif not paused and self.paused and self._paused_since is not None:
            self._paused_seconds += now - self._paused_since
            self._paused_since = None
        self.paused = paused
