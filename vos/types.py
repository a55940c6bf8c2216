"""Typed per-frame state of the video tracker (STYLE 5.6).

``Track`` holds one object's *previous-frame* result only, so memory stays bounded on
unbounded streams; the history of masks goes to sinks, never to the state.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from vos.prompts import clip_box


class TrackStatus(enum.Enum):
    """Life cycle of a track, after ByteTrack's tracked / lost / removed lists."""

    ACTIVE = "active"
    LOST = "lost"
    REMOVED = "removed"


# Points per object the decoder is given at most (interior + negatives): SAM was trained with
# a handful; thousands would only cost memory (issue #13: 400,000 points asked for 5 TB).
MAX_POINTS = 64


class PromptError(ValueError):
    """A prompt is malformed or does not fit the frame it applies to."""


def _float_array(value: Any, name: str, shape_text: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise PromptError(f"{name}: expected {shape_text} numbers, got {value!r}") from None
    return array


@dataclass(frozen=True)
class Prompt:
    """A user prompt for one object on one frame, checked and normalised on creation.

    One kind of prompt is given: a mask, a box, or points (a box may be combined with
    points). This is the one validator of prompts: the CLI checks them with it before the
    model loads, and ``VideoTracker.add_object`` builds one for every call.

    Attributes:
        mask: (H, W) bool in original-frame pixels.
        box_xyxy: (4,) float32, XYXY in original-frame pixels.
        points_xy: (P, 2) float32, XY in original-frame pixels, 1 <= P <= ``MAX_POINTS``.
        point_labels: (P,) int64, 1 positive, 0 negative (default all positive).
        obj_id: persistent id to use (>= 1); None assigns the next free id.
        mask_logits: (1, 256, 256) float32 low-res logits of the object's current mask on
            this frame (model frame), given to the decoder as its mask prompt so that a click
            refines that mask (SAM's ``mask_input``); only with a box or points.

    Raises:
        PromptError: no prompt, a mask together with a box or points, non-finite or
            mis-shaped values, labels other than 0/1, points without a positive one and no
            box, or an obj_id below 1.
    """

    mask: np.ndarray | None = None
    box_xyxy: np.ndarray | None = None
    points_xy: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    obj_id: int | None = None
    mask_logits: torch.Tensor | None = None

    def __post_init__(self) -> None:
        obj_id = self.obj_id
        if obj_id is not None:
            if isinstance(obj_id, bool) or not isinstance(obj_id, int | np.integer) or obj_id < 1:
                raise PromptError(f"obj_id: expected an integer >= 1, got {obj_id!r}")
            object.__setattr__(self, "obj_id", int(obj_id))
        if self.mask is None and self.box_xyxy is None and self.points_xy is None:
            raise PromptError("a prompt needs a mask, a box or points")
        if self.mask is not None:
            if self.box_xyxy is not None or self.points_xy is not None:
                raise PromptError("give either mask or box/points for one object, not both")
            mask = np.asarray(self.mask)
            if mask.ndim != 2:
                raise PromptError(f"mask: expected a (H, W) array, got shape {mask.shape}")
            mask = mask.astype(bool)
            if not mask.any():
                raise PromptError("mask: the initial mask is empty")
            object.__setattr__(self, "mask", mask)
        if self.box_xyxy is not None:
            box = _float_array(self.box_xyxy, "box", "4 finite").reshape(-1)
            if box.shape != (4,) or not np.isfinite(box).all():
                raise PromptError(f"box: expected 4 finite numbers x0, y0, x1, y1, got {self.box_xyxy!r}")
            if not (box[0] < box[2] and box[1] < box[3]):
                raise PromptError(
                    f"box {_fmt(box)}: expected x0 < x1 and y0 < y1"
                )
            object.__setattr__(self, "box_xyxy", box)
        if self.points_xy is not None:
            self._normalise_points()
        elif self.point_labels is not None:
            raise PromptError("point labels were given without points")
        if self.mask_logits is not None:
            logits = torch.as_tensor(self.mask_logits, dtype=torch.float32)
            if self.mask is not None or tuple(logits.shape) != (1, 256, 256):
                raise PromptError("mask_logits: expected (1, 256, 256) logits with a box or "
                                  f"points, got {tuple(logits.shape)}"
                                  + (" with a mask" if self.mask is not None else ""))
            object.__setattr__(self, "mask_logits", logits)

    def _normalise_points(self) -> None:
        points = _float_array(self.points_xy, "points", "(P, 2)")
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise PromptError(f"points: expected one or more x, y pairs, got an array of shape {points.shape}")
        if len(points) > MAX_POINTS:
            raise PromptError(
                f"points: {len(points)} points for one object; at most {MAX_POINTS}"
            )
        if not np.isfinite(points).all():
            raise PromptError("points: expected finite numbers (got NaN or infinity)")
        if self.point_labels is None:
            labels = np.ones(len(points), np.int64)
        else:
            raw = np.asarray(self.point_labels).reshape(-1)
            if raw.shape != (len(points),) or not np.isin(raw, (0, 1)).all():
                raise PromptError(f"point labels: expected one label per point ({len(points)}), each 1 (positive) or 0 (negative)")
            labels = raw.astype(np.int64)
        if not (labels == 1).any() and self.box_xyxy is None and self.mask_logits is None:
            # Negative clicks alone select nothing, unless they refine a mask (mask_logits).
            raise PromptError("points: at least one positive point is needed")
        object.__setattr__(self, "points_xy", points)
        object.__setattr__(self, "point_labels", labels)

    def checked(self, image_hw: tuple[int, int], *, clip: bool = True) -> Prompt:
        """This prompt on a frame of ``image_hw`` pixels, its box clipped to the frame.

        Args:
            image_hw: (H, W) of the frame the prompt applies to.
            clip: a box reaching past the frame is clipped (library calls: a detector's box
                may overshoot); False rejects it (the CLI: coordinates past the frame are a
                mistake worth telling).

        Returns:
            The same prompt, with the box clipped when it reached outside.

        Raises:
            PromptError: a mask of another size, a box outside the frame (partly, with
                ``clip=False``), or points outside the frame.
        """
        h, w = image_hw
        if self.mask is not None and self.mask.shape != (h, w):
            raise PromptError(
                f"mask: expected shape ({h}, {w}) of the {w}x{h} frame, got {self.mask.shape}"
            )
        box = self.box_xyxy
        if box is not None:
            wholly_out = box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h
            partly_out = box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h
            if wholly_out or (partly_out and not clip):
                raise PromptError(f"box {_fmt(box)}: outside the {w}x{h} frame")
            box = clip_box(box, image_hw)
        points = self.points_xy
        if points is not None and (
            (points < 0).any() or (points[:, 0] >= w).any() or (points[:, 1] >= h).any()
        ):
            raise PromptError(f"points: a point lies outside the {w}x{h} frame")
        if box is None or np.array_equal(box, self.box_xyxy):
            return self
        return dataclasses.replace(self, box_xyxy=box)


def _fmt(values: np.ndarray) -> str:
    return ",".join(f"{float(v):g}" for v in values)


@dataclass
class Track:
    """One tracked object's state after the latest frame it was processed on.

    Attributes:
        obj_id: persistent, user-visible id (>= 1, never reused).
        mask: (H, W) bool, the last accepted mask in original-frame pixels.
        box_xyxy: (4,) float32, XYXY of ``mask`` (exclusive right/bottom edges); for a LOST
            track, the motion-predicted box.
        low_res_logits: (1, 256, 256) float32 decoder logits of ``mask`` (model frame), fed
            back as the next frame's mask prompt.
        score: decoder-predicted IoU of the last accepted mask.
        last_seen_frame: frame_idx of the last accepted mask.
        missed_frames: consecutive frames without an accepted mask (Cutie's poke_count).
        status: ACTIVE, LOST or REMOVED.
        velocity_xy: (2,) float32, smoothed per-frame motion in pixels (x, y), measured on the
            box edge that moves most on each axis, so that an object sliding behind an
            occluder or out of the frame (one edge stops) still gets its true speed.
        anchor_xy: (2,) int, per axis which box edge carried the motion (0 = left/top,
            1 = right/bottom); a coasting box keeps that edge and its remembered size.
        size_wh: (2,) float32, the object's remembered full box size; not updated when the
            mask shrinks suddenly (occlusion, leaving the frame).
    """

    obj_id: int
    mask: np.ndarray
    box_xyxy: np.ndarray
    low_res_logits: torch.Tensor | None
    score: float
    last_seen_frame: int
    missed_frames: int = 0
    status: TrackStatus = TrackStatus.ACTIVE
    velocity_xy: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    anchor_xy: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    size_wh: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))

    def copy(self, *, logits_device: torch.device | str | None = None) -> Track:
        """A copy that later frames cannot change (arrays and logits copied).

        Args:
            logits_device: where the copied logits go (None: where they are).
        """
        logits = self.low_res_logits
        if logits is not None:
            logits = logits.detach().clone() if logits_device is None \
                else logits.detach().to(logits_device, copy=True)
        return dataclasses.replace(
            self, mask=self.mask.copy(), box_xyxy=self.box_xyxy.copy(), low_res_logits=logits,
            velocity_xy=self.velocity_xy.copy(), anchor_xy=self.anchor_xy.copy(),
            size_wh=self.size_wh.copy())


@dataclass
class TrackerState:
    """Everything the tracker carries from one frame to the next.

    Attributes:
        frame_idx: index of the current frame (0-based); -1 before the first frame.
        tracks: live tracks (ACTIVE or LOST) by obj_id.
        next_obj_id: the id the next new object gets (an instance counter).
        image_hw: (H, W) of the stream's frames; None before the first frame.
        frame: the current frame, (H, W, 3) uint8 RGB; None before the first frame.
        embedding: the segmenter's embedding of ``frame``, computed at most once per frame
            (None until a decode needs it).
        rng: the random generator of box jitter (seeded by the tracker).
    """

    frame_idx: int = -1
    tracks: dict[int, Track] = field(default_factory=dict)
    next_obj_id: int = 1
    image_hw: tuple[int, int] | None = None
    frame: np.ndarray | None = None
    embedding: Any = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


OverlapRule = Literal["lower_id_wins", "higher_id_wins", "higher_score_wins"]


@dataclass(frozen=True)
class FrameResult:
    """The visible objects of one frame.

    Attributes:
        frame_idx: 0-based index of the frame in the stream.
        obj_ids: (N,) int64 persistent ids, ascending.
        masks: (N, H, W) bool in original-frame pixels.
        scores: (N,) float32 decoder-predicted IoU.
        boxes_xyxy: (N, 4) float32, XYXY in original-frame pixels.
        lost_obj_ids: (L,) int64 ids of tracks currently LOST (kept, not shown).

    Raises:
        ValueError: if the arrays disagree in N or have the wrong rank or dtype.
    """

    frame_idx: int
    obj_ids: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    boxes_xyxy: np.ndarray
    lost_obj_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        n = len(self.obj_ids)
        if self.obj_ids.ndim != 1:
            raise ValueError(f"obj_ids: expected (N,), got {self.obj_ids.shape}")
        if self.masks.ndim != 3 or self.masks.shape[0] != n or self.masks.dtype != bool:
            raise ValueError(
                f"masks: expected ({n}, H, W) bool, got {self.masks.shape} {self.masks.dtype}"
            )
        if self.scores.shape != (n,):
            raise ValueError(f"scores: expected ({n},), got {self.scores.shape}")
        if self.boxes_xyxy.shape != (n, 4):
            raise ValueError(f"boxes_xyxy: expected ({n}, 4), got {self.boxes_xyxy.shape}")
        if len(set(self.obj_ids.tolist())) != n:
            raise ValueError(f"obj_ids must be unique, got {self.obj_ids.tolist()}")

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the frame."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    def __len__(self) -> int:
        return len(self.obj_ids)

    @classmethod
    def empty(cls, frame_idx: int, image_hw: tuple[int, int]) -> FrameResult:
        """A result with no visible objects."""
        return cls(
            frame_idx=frame_idx,
            obj_ids=np.zeros(0, np.int64),
            masks=np.zeros((0, *image_hw), bool),
            scores=np.zeros(0, np.float32),
            boxes_xyxy=np.zeros((0, 4), np.float32),
        )

    def to_index_mask(self, overlap: OverlapRule = "lower_id_wins") -> np.ndarray:
        """Merge the masks into one id map, as DAVIS palette PNGs store them.

        Args:
            overlap: who keeps a pixel claimed by several objects: the lower obj_id (sam2's
                ``put_per_obj_mask`` order), the higher obj_id, or the higher score (ties go
                to the lower id).

        Returns:
            (H, W) uint8 (uint16 when an id exceeds 255) map, 0 = background.
        """
        dtype = np.uint8 if (len(self.obj_ids) == 0 or self.obj_ids.max() < 256) else np.uint16
        index = np.zeros(self.image_hw, dtype)
        if overlap == "lower_id_wins":
            order = np.argsort(-self.obj_ids, kind="stable")
        elif overlap == "higher_id_wins":
            order = np.argsort(self.obj_ids, kind="stable")
        elif overlap == "higher_score_wins":
            # Paint the winner last: ascending score, and among equal scores higher ids first.
            order = np.lexsort((-self.obj_ids, self.scores))
        else:
            raise ValueError(f"overlap: expected one of {OverlapRule}, got {overlap!r}")
        for i in order:
            index[self.masks[i]] = self.obj_ids[i]
        return index
