"""Typed per-frame state of the video tracker (STYLE 5.6).

``Track`` holds one object's *previous-frame* result only, so memory stays bounded on
unbounded streams; the history of masks goes to sinks, never to the state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch


class TrackStatus(enum.Enum):
    """Life cycle of a track, after ByteTrack's tracked / lost / removed lists."""

    ACTIVE = "active"
    LOST = "lost"
    REMOVED = "removed"


@dataclass(frozen=True)
class Prompt:
    """A user prompt for one object on one frame.

    Exactly one kind of prompt is given: a mask, a box, or points (a box may be combined
    with points).

    Attributes:
        mask: (H, W) bool in original-frame pixels.
        box_xyxy: (4,) float32, XYXY in original-frame pixels.
        points_xy: (P, 2) float32, XY in original-frame pixels.
        point_labels: (P,) int, 1 positive, 0 negative.
        obj_id: persistent id to use (>= 1); None assigns the next free id.
    """

    mask: np.ndarray | None = None
    box_xyxy: np.ndarray | None = None
    points_xy: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    obj_id: int | None = None


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


@dataclass
class TrackerState:
    """Everything the tracker carries from one frame to the next.

    Attributes:
        frame_idx: index of the current frame (0-based); -1 before the first frame.
        tracks: live tracks (ACTIVE or LOST) by obj_id.
        next_obj_id: the id the next new object gets (an instance counter).
    """

    frame_idx: int = -1
    tracks: dict[int, Track] = field(default_factory=dict)
    next_obj_id: int = 1


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
