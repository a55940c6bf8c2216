"""SAM 2's real-time camera-predictor API (``segment-anything-2-real-time``) on the live session.

Code written for the community camera predictor of SAM 2 (Gy920/segment-anything-2-real-time,
``sam2.build_sam.build_sam2_camera_predictor``) runs with its import line and config name
changed::

    from vos import build_sam2_camera_predictor
    predictor = build_sam2_camera_predictor("repvit", "weights/repvit_sam.pt", device="cpu")
    predictor.load_first_frame(first_rgb)
    _, obj_ids, logits = predictor.add_new_prompt(frame_idx=0, obj_id=1, bbox=[[x0, y0], [x1, y1]])
    while camera_is_open:
        obj_ids, logits = predictor.track(next_rgb)       # (N, 1, H, W) float32 logits
        masks = logits[:, 0] > 0

Every call drives one :class:`~vos.live.session.LiveSession` (and so the one
:class:`~vos.tracker.VideoTracker` frame loop): ``load_first_frame`` and ``track`` are
:meth:`LiveSession.process`, prompts are the tracker's prompts on the current frame. Beyond
the original:

- objects may be added, corrected or removed on any frame, with no ``reset_state`` and no
  ``load_first_frame`` again (the original refuses new object ids once tracking started);
- a click on a tracked object refines its current mask (its low-res logits go to the decoder
  as the mask prompt, as SAM 2's video predictor does);
- memory stays flat on an endless stream: the session holds the current frame and each
  object's previous result, never a history (the original keeps a growing list of the
  conditioning frames' images);
- ``remove_object(obj_id)`` (the original has none).

Semantics kept: ``frame_idx`` counts frames from ``load_first_frame`` (0) and prompts apply to
the current frame; coordinates are pixels with ``normalize_coords=True`` and fractions of the
frame otherwise; ``bbox`` is ``[[x0, y0], [x1, y1]]`` or ``[x0, y0, x1, y1]``; outputs are
float32 logits ``(len(obj_ids), 1, H, W)`` at the frame's resolution, every object in the
order it was added, an object not visible on the frame (LOST, or given up after
``tracker.max_missed_frames``) at SAM 2's ``NO_OBJ_SCORE`` (-1024) everywhere. Images are
RGB arrays (H, W, 3) uint8 or PIL images, as the original's demo gives them (convert OpenCV's
BGR frames with ``cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from repvit_sam.utils.transforms import ResizeLongestSide
from vos.config import RunConfig, load_config
from vos.io.camera import CapturedFrame
from vos.live.session import LiveSession
from vos.precision import runs_as_configured
from vos.types import Prompt, PromptError, Track, TrackStatus

logger = logging.getLogger(__name__)

__all__ = ["NO_OBJ_SCORE", "CameraPredictor", "build_sam2_camera_predictor"]

# SAM 2's logit for "no object here" (sam2.modeling.sam2_base.NO_OBJ_SCORE).
NO_OBJ_SCORE = -1024.0
# Logits whose sign the tracker's final mask overrides sit this far past 0.
_SIGN_MARGIN = 1e-3
# The latencies a session keeps: few, so an endless stream keeps flat memory.
_LATENCY_SAMPLES = 256


@dataclass
class _Clicks:
    """One object's prompts on the current frame (pixels), kept for ``clear_old_points``."""

    points_xy: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box_xyxy: np.ndarray | None = None


class CameraPredictor:
    """The camera predictor (module docstring) over a segmenter and a run config.

    Args:
        segmenter: the model, as :func:`vos.models.build_segmenter` makes it (or a fake).
        config: tracker and prompt settings (``configs/webcam.yaml`` favours speed).
        device: where the returned logits go (default: the CPU).

    Example:
        >>> predictor = CameraPredictor(segmenter)
        >>> predictor.load_first_frame(frame0)
        >>> predictor.add_new_prompt(0, obj_id=1, points=[[210, 350]], labels=[1])
        >>> obj_ids, logits = predictor.track(frame1)
    """

    image_size = 1024  # the model's input side, as the original exposes it

    def __init__(self, segmenter: Any, config: RunConfig | None = None, *,
                 device: str | torch.device = "cpu") -> None:
        self.config = config or RunConfig()
        self.device = torch.device(device)
        self.segmenter = segmenter
        self.session = self._new_session()
        self.frame_idx = -1  # the current frame (-1 before load_first_frame)
        self.obj_ids: list[Any] = []  # the caller's ids, in the order they were added
        self._track_ids: dict[Any, int] = {}  # caller's id -> the tracker's obj_id
        self._next_track_id = 1
        self._clicks: dict[Any, _Clicks] = {}  # on the current frame only

    # ------------------------------------------------------------------ frames
    @runs_as_configured
    def load_first_frame(self, img: Any) -> None:
        """Start a new stream on this frame (frame 0); every object is forgotten.

        Args:
            img: (H, W, 3) uint8 RGB array, or a PIL image.
        """
        image = _rgb(img)
        self.session = self._new_session()
        self.obj_ids, self._track_ids, self._clicks = [], {}, {}
        self._next_track_id = 1
        self.frame_idx = 0
        self.session.process(CapturedFrame(0, image, time.perf_counter()))

    @runs_as_configured
    def track(self, img: Any) -> tuple[list[Any], torch.Tensor]:
        """Track every object onto the next frame.

        Args:
            img: (H, W, 3) uint8 RGB array, or a PIL image, of the first frame's size.

        Returns:
            ``(obj_ids, masks)``: masks (len(obj_ids), 1, H, W) float32 logits.

        Raises:
            RuntimeError: before :meth:`load_first_frame`.
            ValueError: an image that is not RGB uint8, or of another size.
        """
        self._started()
        image = _rgb(img)
        self.session.process(CapturedFrame(self.frame_idx + 1, image, time.perf_counter()))
        self.frame_idx += 1
        self._clicks = {}
        return list(self.obj_ids), self._logits()

    # ------------------------------------------------------------------ prompts
    @runs_as_configured
    def add_new_prompt(
        self,
        frame_idx: int,
        obj_id: Any,
        points: Any = None,
        labels: Any = None,
        bbox: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
    ) -> tuple[int, list[Any], torch.Tensor]:
        """Add an object, or correct one, on the current frame by clicks and/or a box.

        Args:
            frame_idx: the current frame (the last one loaded or tracked).
            obj_id: the object's id; a new id adds an object (at any frame), a known one
                corrects it: the clicks refine its current mask.
            points: (P, 2) XY, pixels with ``normalize_coords=True``, else fractions of the
                frame in [0, 1].
            labels: (P,) 1 positive, 0 negative; required with ``points``.
            bbox: ``[[x0, y0], [x1, y1]]`` or ``[x0, y0, x1, y1]``, in the points' units.
            clear_old_points: replace this object's earlier clicks on this frame (False adds
                to them and keeps their box).
            normalize_coords: see ``points``.

        Returns:
            ``(frame_idx, obj_ids, masks)``: every object's logits on this frame,
            (len(obj_ids), 1, H, W) float32.

        Raises:
            RuntimeError: before :meth:`load_first_frame`.
            ValueError: another frame than the current one, points without labels (or the
                reverse), no points and no box, NaN or out-of-frame coordinates.
        """
        self._started()
        self._check_frame_idx(frame_idx)
        if (points is None) != (labels is None):
            raise PromptError("points and labels must be provided together")
        if points is None and bbox is None:
            raise PromptError("add_new_prompt needs points (with labels) or a bbox")
        hw = self._hw()
        points_xy = None if points is None else _xy(points, hw, normalize_coords, "points")
        point_labels = None if labels is None else _labels(labels, len(points_xy))  # type: ignore[arg-type]
        box = None
        if bbox is not None:
            corners = _xy(bbox, hw, normalize_coords, "bbox", clip=False)
            if corners.shape != (2, 2):
                raise PromptError(f"bbox: expected [[x0, y0], [x1, y1]] or 4 numbers, got "
                                  f"{len(corners)} points")
            box = corners.reshape(4)
        old = self._clicks.get(obj_id)
        if not clear_old_points and old is not None:
            if old.points_xy is not None and points_xy is not None:
                points_xy = np.concatenate([old.points_xy, points_xy])
                point_labels = np.concatenate([old.point_labels, point_labels])  # type: ignore[list-item]
            elif points_xy is None:
                points_xy, point_labels = old.points_xy, old.point_labels
            box = old.box_xyxy if box is None else box
        clicks = _Clicks(points_xy, point_labels, box)
        self._prompt(obj_id, Prompt(box_xyxy=box, points_xy=points_xy,
                                    point_labels=point_labels, obj_id=self._track_id(obj_id),
                                    mask_logits=self._refining(obj_id)))
        self._clicks[obj_id] = clicks
        return self.frame_idx, list(self.obj_ids), self._logits()

    @runs_as_configured
    def add_new_points(
        self,
        frame_idx: int,
        obj_id: Any,
        points: Any,
        labels: Any,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
    ) -> tuple[int, list[Any], torch.Tensor]:
        """:meth:`add_new_prompt` with clicks only (the original's older name)."""
        return self.add_new_prompt(frame_idx, obj_id, points=points, labels=labels,
                                   clear_old_points=clear_old_points,
                                   normalize_coords=normalize_coords)

    @runs_as_configured
    def add_new_mask(self, frame_idx: int, obj_id: Any, mask: Any) -> tuple[int, list[Any],
                                                                            torch.Tensor]:
        """Give one object's mask on the current frame (a new object or a replacement).

        Args:
            mask: (H, W) bool, or 0/1 numbers (above 0.5 counts), at the frame's size.

        Returns:
            ``(frame_idx, obj_ids, masks)`` as :meth:`add_new_prompt`.

        Raises:
            ValueError: another frame than the current one, a mask of another shape, an empty
                mask.
        """
        self._started()
        self._check_frame_idx(frame_idx)
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask)
        if mask.shape != self._hw():
            raise PromptError(f"mask: expected shape {self._hw()} (the frame's height and "
                              f"width), got {mask.shape}")
        if mask.dtype != bool:
            if not np.isfinite(mask.astype(np.float64)).all():
                raise PromptError("mask: expected finite values (got NaN or infinity)")
            mask = mask > 0.5
        self._prompt(obj_id, Prompt(mask=mask, obj_id=self._track_id(obj_id)))
        self._clicks.pop(obj_id, None)
        return self.frame_idx, list(self.obj_ids), self._logits()

    @runs_as_configured
    def remove_object(self, obj_id: Any, strict: bool = False) -> tuple[list[Any],
                                                                        torch.Tensor]:
        """Stop tracking one object (at any frame); its id may be given again later.

        Args:
            obj_id: the object.
            strict: raise for an unknown id (False: nothing happens).

        Returns:
            ``(obj_ids, masks)`` of the current frame without it.

        Raises:
            ValueError: an unknown id with ``strict=True``.
        """
        self._started()
        if obj_id not in self._track_ids:
            if strict:
                raise ValueError(f"obj_id {obj_id!r}: no such object (objects: {self.obj_ids})")
            return list(self.obj_ids), self._logits()
        track_id = self._track_ids.pop(obj_id)
        self.obj_ids.remove(obj_id)
        self._clicks.pop(obj_id, None)
        if track_id in self.session.tracker.tracks:
            self.session.remove_object(track_id)
        return list(self.obj_ids), self._logits()

    @runs_as_configured
    def reset_state(self) -> None:
        """Forget every object and prompt; the current frame stays, so prompts can follow."""
        self.obj_ids, self._track_ids, self._clicks = [], {}, {}
        if self.frame_idx >= 0:
            self.session.reset()

    # ------------------------------------------------------------------ internals
    def _new_session(self) -> LiveSession:
        cfg = self.config
        return LiveSession(self.segmenter, cfg.tracker, cfg.prompt, seed=cfg.seed,
                           max_latency_samples=_LATENCY_SAMPLES)

    def _started(self) -> None:
        if self.frame_idx < 0:
            raise RuntimeError("call load_first_frame(img) first: prompts and tracking need a "
                               "frame")

    def _hw(self) -> tuple[int, int]:
        hw = self.session.tracker.state.image_hw
        assert hw is not None
        return hw

    def _check_frame_idx(self, frame_idx: Any) -> None:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, int | np.integer):
            raise ValueError(f"frame_idx: expected an int, got {frame_idx!r}")
        if frame_idx != self.frame_idx:
            raise ValueError(f"frame_idx {frame_idx}: prompts apply to the current frame "
                             f"({self.frame_idx}); a camera stream keeps no past frames")

    def _track_id(self, obj_id: Any) -> int:
        if isinstance(obj_id, bool) or not isinstance(obj_id, int | np.integer | str):
            raise PromptError(f"obj_id: expected an int (or a str), got {obj_id!r}")
        return self._track_ids.get(obj_id, self._next_track_id)

    def _refining(self, obj_id: Any) -> torch.Tensor | None:
        """The object's current low-res logits where it is tracked on this frame."""
        track = self._track(obj_id)
        if track is None or track.status is not TrackStatus.ACTIVE \
                or track.low_res_logits is None:
            return None
        return track.low_res_logits.detach().float().cpu().reshape(1, 256, 256)

    def _track(self, obj_id: Any) -> Track | None:
        track_id = self._track_ids.get(obj_id)
        return None if track_id is None else self.session.tracker.tracks.get(track_id)

    def _prompt(self, obj_id: Any, prompt: Prompt) -> None:
        """Decode one object's prompt on the current frame; a bad one changes nothing."""
        prompt = prompt.checked(self._hw())
        added = self.session.add_object(prompt)
        if added is None:
            raise RuntimeError(f"obj_id {obj_id!r}: the prompt could not be decoded (see the "
                               "log)")
        if obj_id not in self._track_ids:
            self._track_ids[obj_id] = added
            self.obj_ids.append(obj_id)
            self._next_track_id = max(self._next_track_id, added + 1)

    def _logits(self) -> torch.Tensor:
        """(len(obj_ids), 1, H, W) float32 logits of every object on the current frame."""
        hw = self._hw()
        out = np.full((len(self.obj_ids), 1, *hw), NO_OBJ_SCORE, np.float32)
        for i, obj_id in enumerate(self.obj_ids):
            track = self._track(obj_id)
            if track is not None and track.status is TrackStatus.ACTIVE and track.mask.any():
                out[i, 0] = _frame_logits(track, hw)
        return torch.from_numpy(out).to(self.device)


def _frame_logits(track: Track, image_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 logits of a track whose sign is exactly its mask.

    The decoder's low-res logits, cropped to the image's part of the padded model frame and
    resized to the frame in one bilinear step (SAM resizes in two; the values differ a
    little, the sign is the tracker's final mask either way). NumPy and OpenCV rather than
    torch: a few element-wise passes on one frame, where torch's thread hand-offs cost more
    than the work on a busy CPU.
    """
    mask = track.mask
    if track.low_res_logits is None:
        return np.where(mask, np.float32(1.0), np.float32(-1.0))
    low = track.low_res_logits.detach().float().cpu().numpy().reshape(256, 256)
    input_h, input_w = ResizeLongestSide.get_preprocess_shape(image_hw[0], image_hw[1], 1024)
    low = np.ascontiguousarray(low[: max(1, -(-input_h // 4)), : max(1, -(-input_w // 4))])
    logits = cv2.resize(low, (image_hw[1], image_hw[0]), interpolation=cv2.INTER_LINEAR)
    return np.where(mask, np.maximum(logits, _SIGN_MARGIN), np.minimum(logits, -_SIGN_MARGIN))


def _rgb(img: Any) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from an array or a PIL image."""
    if hasattr(img, "convert") and hasattr(img, "size"):  # a PIL image
        img = np.asarray(img.convert("RGB"))
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 \
            or img.dtype != np.uint8:
        shape = getattr(img, "shape", type(img).__name__)
        dtype = getattr(img, "dtype", "")
        raise ValueError(f"img: expected an (H, W, 3) uint8 RGB array or a PIL image, got "
                         f"{shape} {dtype}".rstrip())
    return np.ascontiguousarray(img)


def _xy(values: Any, image_hw: tuple[int, int], normalize_coords: bool, what: str,
        *, clip: bool = True) -> np.ndarray:
    """(P, 2) float32 XY in frame pixels from pixels or fractions of the frame."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        xy = np.asarray(values, dtype=np.float32).reshape(-1, 2)
    except (TypeError, ValueError):
        raise PromptError(f"{what}: expected (P, 2) XY numbers, got {values!r}") from None
    if len(xy) == 0 or not np.isfinite(xy).all():
        raise PromptError(f"{what}: expected finite XY coordinates, got {values!r}")
    h, w = image_hw
    if not normalize_coords:
        if (xy < 0).any() or (xy > 1).any():
            raise PromptError(f"{what}: with normalize_coords=False coordinates are fractions "
                              "of the frame, expected in [0, 1]")
        xy = xy * np.array([w, h], np.float32)
    if clip:
        if (xy < 0).any() or (xy[:, 0] > w).any() or (xy[:, 1] > h).any():
            raise PromptError(f"{what}: a point lies outside the {w}x{h} frame")
        # A click exactly on the right or bottom edge is on the last pixel.
        xy = np.minimum(xy, np.array([w - 1e-3, h - 1e-3], np.float32))
    return xy


def _labels(labels: Any, count: int) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    lab = np.asarray(labels).reshape(-1)
    if lab.shape != (count,) or not np.isin(lab, (0, 1)).all():
        raise PromptError(f"labels: expected {count} labels of 1 (positive) or 0 (negative)")
    return lab.astype(np.int64)


# ---------------------------------------------------------------------- factory
def build_sam2_camera_predictor(
    config_file: str,
    ckpt_path: str | os.PathLike[str] | None = None,
    device: str = "cuda",
    mode: str = "eval",
    hydra_overrides_extra: Sequence[str] = (),
    apply_postprocessing: bool = True,
    vos_optimized: bool = False,
    **kwargs: Any,
) -> CameraPredictor:
    """The original's factory, on RepViT-SAM (or any model type of ``sam_model_registry``).

    Args:
        config_file: a model type (``"repvit"``, ``"vit_t"``, ...) or a repvit-vos YAML config
            (``configs/webcam.yaml`` favours speed).
        ckpt_path: the checkpoint; None takes ``model.checkpoint`` of the config or the
            ``REPVIT_SAM_CHECKPOINT`` environment variable.
        device: as in the original ("cuda" by default); without CUDA the CPU, with a warning.
        mode: "eval" (the only mode).
        hydra_overrides_extra: config overrides, ``section.key=value`` (the ``++`` prefix of
            Hydra is accepted and ignored).
        apply_postprocessing, vos_optimized: accepted for the original's code; no effect.
        **kwargs: ignored, as the original passes them on.

    Raises:
        ValueError: an unknown model type or config, a SAM 2 config, no checkpoint, a mode
            other than "eval".
    """
    from repvit_sam import sam_model_registry
    from vos.models import CHECKPOINT_ENV, build_segmenter, load_model

    del apply_postprocessing, vos_optimized, kwargs  # see docstring
    if mode != "eval":
        raise ValueError(f"mode={mode!r}: the camera predictor runs in eval mode only")
    overrides = [o.lstrip("+") for o in hydra_overrides_extra]
    text = str(config_file)
    if text in sam_model_registry:
        cfg = load_config(None, [f"model.model_type={text}", *overrides])
    elif text.endswith((".yaml", ".yml")) and Path(text).is_file():
        cfg = load_config(text, overrides)
    else:
        raise ValueError(f"config_file {text!r}: expected a model type "
                         f"({', '.join(sorted(sam_model_registry))}) or a repvit-vos YAML "
                         "config file (a SAM 2 config names a SAM 2 model)")
    checkpoint = ckpt_path or cfg.model.checkpoint or os.environ.get(CHECKPOINT_ENV)
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("device=%r: no CUDA device here; running on the CPU", device)
        device = "cpu"
    model_cfg = replace(cfg.model, checkpoint=None if checkpoint is None else str(checkpoint),
                        device=str(device))
    cfg = replace(cfg, model=model_cfg)
    segmenter = build_segmenter(model_cfg, load_model(model_cfg))
    return CameraPredictor(segmenter, cfg, device=device)
