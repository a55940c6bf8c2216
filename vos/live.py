"""Live tracking from a camera, a stream URL or a video file played as a camera.

Three parts, each usable alone:

- :class:`FrameGrabber` reads frames on its own thread and keeps only the newest one, so that
  when the model is slower than the camera the stale frames are dropped and the latency stays
  bounded by about one model period plus one frame period (a FIFO would grow without bound).
  :class:`FileCamera` plays a video file (or frame folder) the same way, paced at the
  file's own fps, which makes live runs reproducible without a camera.
- :class:`LiveSession` owns a :class:`~vos.tracker.VideoTracker` over any segmenter with
  ``encode``/``decode`` and measures per-frame latency (capture timestamp -> result ready).
- :class:`LiveApp` is the loop: it grabs the newest frame, tracks it, shows the overlay in an
  OpenCV window (optional), turns mouse gestures into prompts (:class:`PromptDrawer`) and
  keys into actions (:func:`key_to_action`), and records through a
  :class:`~vos.io.sinks.ResultSink`.

The model runs on the main thread with the window: OpenCV's HighGUI must be driven from one
thread, and the tracker's state is then never touched concurrently. The price is a window
that answers only between frames when the model is slow (CPU: about 1.6 s a frame).

Window controls: left-drag draws a box (a new object); a left click adds an object from that
point; shift+left-click / right-click collect positive / negative points that Enter turns
into one object. Keys: ``r`` reset, ``d``/``x`` remove the last object, ``p``/space pause,
``s`` save the current frame's masks, ``q``/Esc quit.

Example:
    >>> with FileCamera("clip.mp4") as camera:              # or open_camera("0")
    ...     app = LiveApp(camera, LiveSession(predictor), init_prompts=[Prompt(box_xyxy=box)])
    ...     stats = app.run()                               # headless: no window given
    >>> stats.latency_ms(50), stats.frames_dropped
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from vos.config import PromptConfig, TrackerConfig
from vos.io.sinks import ResultSink, draw_overlay
from vos.io.sources import FrameSource, SourceInfo, open_source
from vos.tracker import Segmenter, VideoTracker
from vos.types import FrameResult, Prompt

logger = logging.getLogger(__name__)

WINDOW_NAME = "RepViT-SAM live"
SUMMARY_NAME = "live_summary.json"
SNAPSHOT_DIR = "snapshots"
# Latencies kept for the summary: about an hour at 30 fps, 8 bytes each.
MAX_LATENCY_SAMPLES = 100_000


class LiveError(ValueError):
    """A live run cannot start (no display, a bad camera, an output folder in use)."""


# ---------------------------------------------------------------------------- capture
@dataclass(frozen=True)
class CapturedFrame:
    """One camera frame as handed to the model.

    Attributes:
        index: 0-based capture index (frames dropped before this one leave gaps).
        image: (H, W, 3) uint8 RGB.
        timestamp: ``time.perf_counter()`` when the frame arrived from the camera.
    """

    index: int
    image: np.ndarray
    timestamp: float


class FrameGrabber:
    """Reads frames on a daemon thread and hands out only the newest one.

    Args:
        frames: (H, W, 3) uint8 RGB frames; iterated on the capture thread only.
        info: size and fps of the stream.
        pace_fps: release frames at this rate (a file played as a camera); None releases
            each frame as soon as the iterator yields it (a real camera paces itself).
        drop_stale: True keeps only the newest frame (live); False makes the capture wait
            until the previous frame was read, so every frame is processed (offline).
        on_close: called once by :meth:`close` after the thread stopped (release a reader).

    Counters: ``frames_captured`` = ``frames_read`` + ``frames_dropped`` once closed.

    Example:
        >>> with FrameGrabber(iter(frames), info=info, pace_fps=30).start() as grabber:
        ...     while (captured := grabber.read(timeout=1.0)) is not None or not grabber.finished:
        ...         ...
    """

    def __init__(
        self,
        frames: Iterable[np.ndarray],
        *,
        info: SourceInfo,
        pace_fps: float | None = None,
        drop_stale: bool = True,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if pace_fps is not None and pace_fps <= 0:
            raise ValueError(f"pace_fps: expected > 0, got {pace_fps}")
        self.info = info
        self.pace_fps = pace_fps
        self.drop_stale = drop_stale
        self._frames = frames
        self._on_close = on_close
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._slot: CapturedFrame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.frames_captured = 0
        self.frames_read = 0
        self.frames_dropped = 0

    def start(self) -> FrameGrabber:
        """Start the capture thread (idempotent); returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._capture, name="live-capture", daemon=True)
            self._thread.start()
        return self

    @property
    def finished(self) -> bool:
        """True once the stream ended (or failed) and its last frame was read."""
        with self._cond:
            return self._ended and self._slot is None

    def read(self, timeout: float | None = None) -> CapturedFrame | None:
        """The newest frame not read yet, waiting for one up to ``timeout`` seconds.

        Returns:
            The frame, or None on timeout or once :attr:`finished`.

        Raises:
            SourceError: (or any error) raised by the frame iterator on the capture thread.
        """
        deadline = None if timeout is None else time.perf_counter() + timeout
        with self._cond:
            while self._slot is None and not self._ended:
                remaining = None if deadline is None else deadline - time.perf_counter()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            captured, self._slot = self._slot, None
            if captured is not None:
                self.frames_read += 1
                self._cond.notify_all()
                return captured
            error, self._error = self._error, None
        if error is not None:
            raise error
        return None

    def close(self) -> None:
        """Stop the thread, count an unread frame as dropped, and release the reader."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                logger.warning("%s: the capture thread did not stop within 5 s", self.info.name)
        with self._cond:
            if self._slot is not None:
                self._slot = None
                self.frames_dropped += 1
            self._ended = True
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> FrameGrabber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _capture(self) -> None:
        start: float | None = None
        iterator: Iterator[np.ndarray] = iter(self._frames)
        try:
            for index, image in enumerate(iterator):
                if self._stop.is_set():
                    return
                if self.pace_fps is not None:
                    # Frame i is due i/fps after the first; a reader slower than that
                    # simply falls behind, as a camera's driver would.
                    now = time.perf_counter()
                    start = now if start is None else start
                    delay = start + index / self.pace_fps - now
                    if delay > 0 and self._stop.wait(delay):
                        return
                self._publish(CapturedFrame(index, image, time.perf_counter()))
        except BaseException as exc:  # handed to the reader, who raises it in its thread
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _publish(self, captured: CapturedFrame) -> None:
        with self._cond:
            if not self.drop_stale:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return
            if self._slot is not None:
                self.frames_dropped += 1
            self._slot = captured
            self.frames_captured += 1
            self._cond.notify_all()


class FileCamera(FrameGrabber):
    """A video file or frame folder played as a live camera.

    With ``realtime`` (default) frames are released at the file's fps and the ones that
    arrive while the model is busy are dropped, exactly as with a camera; without it every
    frame is processed, as fast as the model goes.

    Args:
        path: video file or folder of frames.
        realtime: pace at the file's fps and drop stale frames.
        fps: pace at this rate instead of the file's.
        backend: video decoding backend of :func:`~vos.io.sources.open_source`.

    Raises:
        SourceError: the file cannot be read.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        realtime: bool = True,
        fps: float | None = None,
        backend: str = "opencv",
    ) -> None:
        source = open_source(Path(path), backend=backend)
        super().__init__(
            source.frames(),
            info=source.info,
            pace_fps=(fps or source.info.fps) if realtime else None,
            drop_stale=realtime,
            on_close=source.close,
        )
        self.source: FrameSource = source


def is_device_spec(spec: str) -> bool:
    """True for a camera index ("0") or a stream URL ("rtsp://..."), False for a path."""
    return spec.isdigit() or "://" in spec


def open_camera(spec: str, *, realtime: bool = True) -> FrameGrabber:
    """A camera index, a stream URL, or a video file / frame folder played as a camera.

    Args:
        spec: "0", "1", ... for a local camera, an rtsp/http URL, or a path.
        realtime: for files, pace at the file's fps and drop stale frames; a device always
            runs in real time (it cannot wait for the model).

    Raises:
        SourceError: the camera or file cannot be opened or read.
    """
    if not is_device_spec(spec):
        return FileCamera(spec, realtime=realtime)
    source = open_source(spec)
    if not realtime:
        logger.warning("%s: a live camera cannot wait for the model; frames will be dropped",
                       spec)
    return FrameGrabber(source.frames(), info=source.info, drop_stale=True,
                        on_close=source.close)


# ---------------------------------------------------------------------------- session
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
        self.tracker.step(captured.image)
        self.frame = captured
        for prompt in prompts:
            self.add_object(prompt)
        self.result = self.tracker.result()
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
            obj_id = self.tracker.add_object(
                mask=prompt.mask, box_xyxy=prompt.box_xyxy, points_xy=prompt.points_xy,
                point_labels=prompt.point_labels, obj_id=prompt.obj_id,
            )
        except ValueError as exc:
            logger.warning("prompt ignored: %s", exc)
            return None
        self._added.append(obj_id)
        self.result = self.tracker.result()
        logger.info("object %d added on capture frame %d", obj_id, self.frame.index)
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


# ---------------------------------------------------------------------------- interaction
class Action(enum.Enum):
    """What a key does in the live window."""

    QUIT = "quit"
    RESET = "reset"
    REMOVE_LAST = "remove last object"
    PAUSE = "pause / resume"
    SAVE = "save masks"
    ADD_POINTS = "add object from the collected points"
    CLEAR_POINTS = "clear the collected points"


KEY_ACTIONS: dict[int, Action] = {
    ord("q"): Action.QUIT,
    27: Action.QUIT,  # Esc
    ord("r"): Action.RESET,
    ord("d"): Action.REMOVE_LAST,
    ord("x"): Action.REMOVE_LAST,
    ord("p"): Action.PAUSE,
    ord(" "): Action.PAUSE,
    ord("s"): Action.SAVE,
    13: Action.ADD_POINTS,  # Enter
    10: Action.ADD_POINTS,
    ord("c"): Action.CLEAR_POINTS,
}


def key_to_action(key: int) -> Action | None:
    """Map a ``cv2.waitKey`` code to an action (None for no key or an unbound key).

    Modifier bits above the low byte are ignored, and letters are case-insensitive.
    """
    if key < 0:
        return None
    key &= 0xFF
    if ord("A") <= key <= ord("Z"):
        key += ord("a") - ord("A")
    return KEY_ACTIONS.get(key)


class PromptDrawer:
    """Turns OpenCV mouse events into prompts (pass :meth:`on_mouse` to setMouseCallback).

    A left-drag gives a box, a left click a one-point object; shift+left-click and
    right-click collect positive and negative points for :meth:`commit_points`. Points
    collected before a drag go with its box.

    Args:
        image_hw: (H, W) of the frames; events are clipped to it.
        min_drag: a drag shorter than this many pixels on either axis counts as a click.
    """

    def __init__(self, image_hw: tuple[int, int], *, min_drag: int = 5) -> None:
        self.image_hw = image_hw
        self.min_drag = min_drag
        self.drag_start: tuple[int, int] | None = None
        self.drag_end: tuple[int, int] | None = None
        self.points: list[tuple[int, int, int]] = []  # (x, y, label)
        self._ready: list[Prompt] = []

    def on_mouse(self, event: int, x: int, y: int, flags: int, param: Any = None) -> None:
        """OpenCV mouse callback (window pixels equal frame pixels)."""
        h, w = self.image_hw
        x, y = min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)
        shift = bool(flags & cv2.EVENT_FLAG_SHIFTKEY)
        if event == cv2.EVENT_LBUTTONDOWN:
            if shift:
                self.points.append((x, y, 1))
            else:
                self.drag_start = self.drag_end = (x, y)
        elif event == cv2.EVENT_RBUTTONDOWN:
            self.points.append((x, y, 0))
        elif event == cv2.EVENT_MOUSEMOVE and self.drag_start is not None:
            self.drag_end = (x, y)
        elif event == cv2.EVENT_LBUTTONUP and self.drag_start is not None:
            (x0, y0), self.drag_start, self.drag_end = self.drag_start, None, None
            if abs(x - x0) >= self.min_drag and abs(y - y0) >= self.min_drag:
                box = np.array([min(x0, x), min(y0, y), max(x0, x) + 1, max(y0, y) + 1],
                               np.float32)
                self._ready.append(self._with_points(box))
            else:
                self._ready.append(Prompt(points_xy=np.array([[x, y]], np.float32),
                                          point_labels=np.ones(1, np.int64)))

    @property
    def drag_box(self) -> np.ndarray | None:
        """(4,) XYXY of the box being dragged, for drawing; None when not dragging."""
        if self.drag_start is None or self.drag_end is None:
            return None
        (x0, y0), (x1, y1) = self.drag_start, self.drag_end
        return np.array([min(x0, x1), min(y0, y1), max(x0, x1) + 1, max(y0, y1) + 1], np.float32)

    def commit_points(self) -> bool:
        """Turn the collected points into one object; False if none of them is positive."""
        if not any(label == 1 for _, _, label in self.points):
            return False
        self._ready.append(self._with_points(None))
        return True

    def clear(self) -> None:
        """Drop the collected points and any drag in progress."""
        self.points.clear()
        self.drag_start = self.drag_end = None

    def take(self) -> list[Prompt]:
        """The prompts completed since the last call."""
        ready, self._ready = self._ready, []
        return ready

    def _with_points(self, box: np.ndarray | None) -> Prompt:
        points = labels = None
        if self.points:
            points = np.array([p[:2] for p in self.points], np.float32)
            labels = np.array([p[2] for p in self.points], np.int64)
        self.points = []
        return Prompt(box_xyxy=box, points_xy=points, point_labels=labels)


def render_view(
    frame: np.ndarray,
    result: FrameResult | None,
    *,
    banner: str | None = None,
    drag_box: np.ndarray | None = None,
    points: Sequence[tuple[int, int, int]] = (),
) -> np.ndarray:
    """The window image: object overlay with ids and scores, banner, prompts being drawn.

    Args:
        frame: (H, W, 3) uint8 RGB.
        result: the frame's objects (None: the plain frame).
        banner: text for the top-left corner (FPS, latency).
        drag_box: (4,) XYXY in frame pixels of the box being dragged.
        points: (x, y, label) points being collected.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    if result is not None and len(result):
        index = result.to_index_mask("lower_id_wins")
        labels = {int(i): f"{int(i)} {s:.2f}" for i, s in zip(result.obj_ids, result.scores,
                                                                  strict=True)}
        view = draw_overlay(frame, index, labels=labels, banner=banner)
    else:
        view = draw_overlay(frame, np.zeros(frame.shape[:2], np.uint8), banner=banner)
    if drag_box is not None:
        x0, y0, x1, y1 = (int(v) for v in drag_box)
        cv2.rectangle(view, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 0), 1, cv2.LINE_AA)
    for x, y, label in points:
        colour = (0, 255, 0) if label == 1 else (255, 0, 0)
        cv2.circle(view, (x, y), 4, colour, -1, cv2.LINE_AA)
        cv2.circle(view, (x, y), 4, (255, 255, 255), 1, cv2.LINE_AA)
    return view


class Display(Protocol):
    """Where :class:`LiveApp` shows frames: :class:`LiveWindow`, or a fake in tests."""

    def show(self, image: np.ndarray, wait_ms: int) -> int:
        """Show a (H, W, 3) uint8 RGB image; return the key pressed (-1 for none)."""
        ...

    def close(self) -> None:
        """Close the window."""
        ...


def check_display() -> None:
    """Fail early, with a hint, where no window can open.

    Raises:
        LiveError: on Linux with neither DISPLAY nor WAYLAND_DISPLAY set.
    """
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise LiveError("no display (DISPLAY is not set): run headless with --no-window")


class LiveWindow:
    """An OpenCV HighGUI window whose mouse events go to ``on_mouse``.

    Args:
        name: window title.
        on_mouse: an OpenCV mouse callback, e.g. :meth:`PromptDrawer.on_mouse`.

    Raises:
        LiveError: no display, or an OpenCV build without GUI support (the -headless wheel).
    """

    def __init__(self, name: str = WINDOW_NAME, on_mouse: Callable[..., None] | None = None) -> None:
        check_display()
        self.name = name
        try:
            # AUTOSIZE keeps window pixels equal to frame pixels, so mouse positions need
            # no rescaling.
            cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE)
            if on_mouse is not None:
                cv2.setMouseCallback(name, on_mouse)
        except cv2.error as exc:
            raise LiveError(
                f"cannot open a window ({' '.join(str(exc).split())[:160]}); an OpenCV "
                "build with GUI support is needed (opencv-python, not -headless), "
                "or run with --no-window"
            ) from None
        self._seen_visible = False

    def show(self, image: np.ndarray, wait_ms: int = 1) -> int:
        """Show an RGB image and pump events; returns the key code, Esc if closed."""
        cv2.imshow(self.name, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        key = int(cv2.waitKey(max(1, wait_ms)))
        try:
            visible = cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE)
        except cv2.error:
            visible = 0.0
        # Backends without the property answer -1 from the start: trust a drop below 1
        # only after the window was once reported visible.
        if visible >= 1:
            self._seen_visible = True
        elif self._seen_visible:
            return 27  # closed with the title-bar button: quit like Esc
        return key

    def close(self) -> None:
        """Destroy the window."""
        try:
            cv2.destroyWindow(self.name)
            cv2.waitKey(1)
        except cv2.error:
            pass


# ---------------------------------------------------------------------------- loop
class LiveApp:
    """The live loop: newest frame -> tracker -> window and recorder.

    Args:
        camera: the frame grabber (started by :meth:`run`, closed by the caller).
        session: the tracking session.
        window: a :class:`Display`, or None to run headless.
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
                self.recorder.write(frame_name(captured.index), captured.image,
                                    self.session.result)

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


def frame_name(index: int) -> str:
    """File stem of a capture index (zero-padded; gaps mark dropped frames)."""
    return f"{index:06d}"


__all__ = [
    "Action",
    "CapturedFrame",
    "Display",
    "FileCamera",
    "FrameGrabber",
    "LiveApp",
    "LiveError",
    "LiveSession",
    "LiveStats",
    "LiveWindow",
    "PromptDrawer",
    "check_display",
    "frame_name",
    "key_to_action",
    "open_camera",
    "render_view",
]
