"""Live tracking from a camera, a stream URL or a video file played as a camera.

Three parts, each usable alone:

- capture (:mod:`vos.io.camera`): :class:`FrameGrabber` hands out only the newest frame, so
  the latency stays bounded when the model is slower than the camera; :class:`FileCamera`
  plays a file at its own fps, which makes live runs reproducible without a camera.
- :class:`LiveSession` (:mod:`vos.live.session`) owns a :class:`~vos.tracker.VideoTracker`
  over any segmenter with ``encode``/``decode`` and measures per-frame latency (capture
  timestamp -> result ready).
- :class:`ModelWorker` (:mod:`vos.live.worker`) runs the session on the newest frame, on
  its own thread, and publishes each result as a :class:`Keyframe`.
- :class:`MaskCarrier` (:mod:`vos.live.flow`) carries a keyframe's masks to the frames after
  it along dense optical flow (OpenCV DIS), so every captured frame is shown with masks.
- :class:`LiveApp` (:mod:`vos.live.app`) is the loop: it shows every frame with its masks in
  an OpenCV window (optional), turns mouse gestures into prompts and corrections
  (:class:`PromptDrawer`, :func:`object_at`) and keys into actions (:func:`key_to_action`),
  all in :mod:`vos.live.ui`, and records through :class:`LiveRecorder`
  (:mod:`vos.live.recorder`).

Example:
    >>> with FileCamera("clip.mp4") as camera:              # or open_camera("0")
    ...     app = LiveApp(camera, LiveSession(predictor), init_prompts=[Prompt(box_xyxy=box)],
    ...                   carrier=MaskCarrier())
    ...     stats = app.run()                               # headless: no window given
    >>> stats.display_fps, stats.latency_ms(95), stats.carried_share
"""

from __future__ import annotations

from vos.io.camera import CapturedFrame, FileCamera, FrameGrabber, is_device_spec, open_camera
from vos.live.app import SNAPSHOT_DIR, SUMMARY_NAME, LiveApp
from vos.live.flow import FLOW_PRESETS, FlowFrame, MaskCarrier, warp_masks
from vos.live.recorder import LiveRecorder, View, frame_name
from vos.live.session import MAX_LATENCY_SAMPLES, Correction, LiveSession, LiveStats
from vos.live.ui import (
    KEY_ACTIONS,
    WINDOW_NAME,
    Action,
    Click,
    Display,
    LiveError,
    LiveWindow,
    PromptDrawer,
    check_display,
    key_to_action,
    object_at,
    render_view,
)
from vos.live.worker import Keyframe, ModelWorker

__all__ = [
    "FLOW_PRESETS",
    "KEY_ACTIONS",
    "MAX_LATENCY_SAMPLES",
    "SNAPSHOT_DIR",
    "SUMMARY_NAME",
    "WINDOW_NAME",
    "Action",
    "CapturedFrame",
    "Click",
    "Correction",
    "Display",
    "FileCamera",
    "FlowFrame",
    "FrameGrabber",
    "Keyframe",
    "LiveApp",
    "LiveError",
    "LiveRecorder",
    "LiveSession",
    "LiveStats",
    "LiveWindow",
    "MaskCarrier",
    "ModelWorker",
    "PromptDrawer",
    "View",
    "check_display",
    "frame_name",
    "is_device_spec",
    "key_to_action",
    "object_at",
    "open_camera",
    "render_view",
    "warp_masks",
]
