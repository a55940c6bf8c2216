"""repvit-vos: streaming video object segmentation on RepViT-SAM.

Example:
    >>> from repvit_sam import SamPredictor, sam_model_registry
    >>> from vos import VideoTracker
    >>> tracker = VideoTracker(SamPredictor(sam_model_registry["repvit"](checkpoint="w.pt")))
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from vos.camera_predictor import CameraPredictor, build_sam2_camera_predictor
from vos.config import RunConfig, TrackerConfig, load_config
from vos.tracker import VideoTracker
from vos.types import FrameResult, Prompt, Track, TrackStatus
from vos.video_predictor import VideoPredictor, build_sam2_video_predictor

try:
    __version__ = version("repvit-vos")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "CameraPredictor",
    "FrameResult",
    "Prompt",
    "RunConfig",
    "Track",
    "TrackStatus",
    "TrackerConfig",
    "VideoPredictor",
    "VideoTracker",
    "__version__",
    "build_sam2_camera_predictor",
    "build_sam2_video_predictor",
    "load_config",
]
