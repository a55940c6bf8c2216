"""Live tracking from a camera, a stream URL or a video file played as a camera.

Three parts, each usable alone:

- capture (:mod:`vos.io.camera`): :class:`FrameGrabber` hands out only the newest frame, so
  the latency stays bounded when the model is slower than the camera; :class:`FileCamera`
  plays a file at its own fps, which makes live runs reproducible without a camera.
- :class:`LiveSession` (:mod:`vos.live.session`) owns a :class:`~vos.tracker.VideoTracker`
  over any segmenter with ``encode``/``decode`` and measures per-frame latency (capture
  timestamp -> result ready).
- :class:`LiveApp` (:mod:`vos.live.app`) is the loop: it grabs the newest frame, tracks it,
  shows the overlay in an OpenCV window (optional), turns mouse gestures into prompts
  (:class:`PromptDrawer`) and keys into actions (:func:`key_to_action`), both in
  :mod:`vos.live.ui`, and records through a :class:`~vos.io.sinks.ResultSink`.

Example:
    >>> with FileCamera("clip.mp4") as camera:              # or open_camera("0")
    ...     app = LiveApp(camera, LiveSession(predictor), init_prompts=[Prompt(box_xyxy=box)])
    ...     stats = app.run()                               # headless: no window given
    >>> stats.latency_ms(50), stats.frames_dropped
"""

from __future__ import annotations

from vos.io.camera import CapturedFrame, FileCamera, FrameGrabber, is_device_spec, open_camera
from vos.live.app import SNAPSHOT_DIR, SUMMARY_NAME, LiveApp, frame_name
from vos.live.session import MAX_LATENCY_SAMPLES, LiveSession, LiveStats
from vos.live.ui import (
    KEY_ACTIONS,
    WINDOW_NAME,
    Action,
    Display,
    LiveError,
    LiveWindow,
    PromptDrawer,
    check_display,
    key_to_action,
    render_view,
)

__all__ = [
    "KEY_ACTIONS",
    "MAX_LATENCY_SAMPLES",
    "SNAPSHOT_DIR",
    "SUMMARY_NAME",
    "WINDOW_NAME",
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
    "is_device_spec",
    "key_to_action",
    "open_camera",
    "render_view",
]
