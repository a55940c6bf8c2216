"""Streaming video object tracker on a promptable image segmenter (RepViT-SAM).

Per frame the tracker encodes the image once, derives prompts for every tracked object from
its previous mask (box with a margin, interior positive points, optional negatives, and the
previous low-res logits as the mask prompt), decodes all objects in one batched call, picks
one candidate per object, re-checks identities with a gated Hungarian assignment, and moves
objects whose masks collapse to LOST, from where they are re-acquired with the same id.

The model is reached only through ``encode``/``decode`` (the :class:`Segmenter` protocol),
so the tests drive this class with a ground-truth-backed fake segmenter.

Example:
    >>> from repvit_sam import SamPredictor, sam_model_registry
    >>> predictor = SamPredictor(sam_model_registry["repvit"](checkpoint="repvit_sam.pt"))
    >>> tracker = VideoTracker(predictor)
    >>> first = tracker.step(frames[0])
    >>> obj_id = tracker.add_object(box_xyxy=np.array([100, 80, 220, 240]))
    >>> for result in tracker.track(frames[1:]):
    ...     index_mask = result.to_index_mask()
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from vos.config import PromptConfig, TrackerConfig
from vos.matching import exclusive_masks, linear_assignment, mask_iou
from vos.prompts import (
    background_points,
    clip_box,
    expand_box,
    interior_points,
    jitter_box,
    mask_area,
    mask_to_box,
    pad_points,
)
from vos.types import FrameResult, Prompt, Track, TrackerState, TrackStatus

logger = logging.getLogger(__name__)

_PROMPT_KINDS = ("box", "points", "box+points", "mask")
_SELECTIONS = ("iou", "iou+agreement")
_OVERLAPS = ("higher_score_wins", "lower_id_wins", "none")


class Segmenter(Protocol):
    """What the tracker needs from a model: ``SamPredictor.encode``/``decode``."""

    def encode(self, image: np.ndarray) -> Any:
        """Encode a (H, W, 3) uint8 RGB frame; the result has ``orig_hw``."""
        ...

    def decode(
        self,
        embedding: Any,
        *,
        boxes_xyxy: np.ndarray | None = None,
        points_xy: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        mask_logits: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> Any:
        """Decode N objects at once; returns masks (N,C,H,W), iou_scores, low_res_logits."""
        ...


def _shift_mask(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Translate a (H, W) bool mask by whole pixels (motion compensation of the previous mask)."""
    ix, iy = round(dx), round(dy)
    if ix == 0 and iy == 0:
        return mask
    h, w = mask.shape
    out = np.zeros_like(mask)
    src = mask[max(0, -iy) : h - max(0, iy), max(0, -ix) : w - max(0, ix)]
    out[max(0, iy) : max(0, iy) + src.shape[0], max(0, ix) : max(0, ix) + src.shape[1]] = src
    return out


def _coast(track: Track, image_hw: tuple[int, int]) -> np.ndarray:
    """Where a track's box should be one frame later under constant velocity.

    The edge that carried the motion moves by the velocity and the box takes back the
    remembered full size from there, so a box that was shrinking behind an occluder grows
    back to the object's size on the far side.
    """
    box = track.box_xyxy.astype(np.float32).copy()
    for axis in (0, 1):
        lo, hi = axis, axis + 2
        box[lo] += track.velocity_xy[axis]
        box[hi] += track.velocity_xy[axis]
        size = float(track.size_wh[axis])
        if size > 0:
            if track.anchor_xy[axis] == 0:
                box[hi] = box[lo] + size
            else:
                box[lo] = box[hi] - size
    return clip_box(box, image_hw)


class VideoTracker:
    """Tracks any number of objects through a stream of frames.

    Args:
        predictor: a :class:`Segmenter`, normally ``repvit_sam.SamPredictor``.
        config: decision thresholds; defaults are the documented DAVIS defaults.
        prompt_config: how prompts are derived from the previous masks.
        seed: seed of the box-jitter random generator (only used when jitter is on).

    Example:
        >>> tracker = VideoTracker(predictor)
        >>> results = list(tracker.track(frames, prompts={0: [Prompt(box_xyxy=box)]}))
    """

    def __init__(
        self,
        predictor: Segmenter,
        config: TrackerConfig | None = None,
        prompt_config: PromptConfig | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.predictor = predictor
        self.config = config or TrackerConfig()
        self.prompt_config = prompt_config or PromptConfig()
        _check_choice("prompt.kind", self.prompt_config.kind, _PROMPT_KINDS)
        _check_choice(
            "tracker.candidate_selection", self.config.candidate_selection, _SELECTIONS
        )
        _check_choice("tracker.overlap", self.config.overlap, _OVERLAPS)
        if self.prompt_config.kind == "mask" and not self.prompt_config.use_prev_logits:
            raise ValueError("prompt.kind='mask' needs prompt.use_prev_logits=true")
        self._seed = seed
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget every object and frame; ids restart at 1."""
        self.state = TrackerState()
        self._embedding: Any = None
        self._frame: np.ndarray | None = None
        self._image_hw: tuple[int, int] | None = None
        self._rng = np.random.default_rng(self._seed)

    @property
    def frame_idx(self) -> int:
        """Index of the current frame (-1 before the first ``step``)."""
        return self.state.frame_idx

    @property
    def tracks(self) -> dict[int, Track]:
        """Live tracks (ACTIVE or LOST) by obj_id."""
        return self.state.tracks

    def step(self, frame: np.ndarray, *, run_decoder: bool = True) -> FrameResult:
        """Advance to the next frame and propagate every object onto it.

        Args:
            frame: (H, W, 3) uint8 RGB; all frames of a stream have the same size.
            run_decoder: False skips the model on this frame (frame skipping): objects keep
                their previous masks, and LOST objects still age.

        Returns:
            The visible objects on this frame.

        Raises:
            ValueError: on a frame of the wrong shape, dtype or size.
        """
        self._check_frame(frame)
        self.state.frame_idx += 1
        self._frame = frame
        self._embedding = None
        if not run_decoder:
            for track in self._tracks_with(TrackStatus.LOST):
                self._miss(track)
            self._expire()
            return self.result()
        if self.state.tracks:
            self._embedding = self.predictor.encode(frame)
            active = self._tracks_with(TrackStatus.ACTIVE)
            lost = self._tracks_with(TrackStatus.LOST)
            if active:
                self._propagate(active)
            if lost:
                self._reacquire(lost)
            self._resolve_overlaps()
            self._expire()
        return self.result()

    def track(
        self,
        frames: Iterable[np.ndarray],
        prompts: Mapping[int, Sequence[Prompt]] | None = None,
        *,
        decode_every: int = 1,
    ) -> Iterator[FrameResult]:
        """Run over a stream lazily, like sam2's ``propagate_in_video``.

        Args:
            frames: (H, W, 3) uint8 RGB frames.
            prompts: user prompts keyed by the frame_idx they apply to; they are applied after
                that frame is propagated, and the yielded result includes them.
            decode_every: run the model on every k-th frame only (1 = every frame).

        Yields:
            One :class:`FrameResult` per frame.
        """
        if decode_every < 1:
            raise ValueError(f"decode_every: expected >= 1, got {decode_every}")
        prompts = prompts or {}
        for frame in frames:
            run = (self.state.frame_idx + 1) % decode_every == 0
            result = self.step(frame, run_decoder=run)
            for prompt in prompts.get(self.state.frame_idx, ()):
                self.add_object(
                    mask=prompt.mask,
                    box_xyxy=prompt.box_xyxy,
                    points_xy=prompt.points_xy,
                    point_labels=prompt.point_labels,
                    obj_id=prompt.obj_id,
                )
            if prompts.get(self.state.frame_idx):
                result = self.result()
            yield result

    def add_object(
        self,
        *,
        mask: np.ndarray | None = None,
        box_xyxy: np.ndarray | Sequence[float] | None = None,
        points_xy: np.ndarray | Sequence[Sequence[float]] | None = None,
        point_labels: np.ndarray | Sequence[int] | None = None,
        obj_id: int | None = None,
    ) -> int:
        """Add (or correct) an object on the current frame.

        Args:
            mask: (H, W) bool in frame pixels; taken as the object's mask on this frame.
            box_xyxy: (4,) XYXY in frame pixels.
            points_xy: (P, 2) XY in frame pixels (may be combined with ``box_xyxy``).
            point_labels: (P,) 1 positive / 0 negative; defaults to all positive.
            obj_id: id to use; an existing id is overwritten (a correction). None takes the
                next free id.

        Returns:
            The object's obj_id.

        Raises:
            RuntimeError: before the first ``step``.
            ValueError: on an empty or mis-sized mask, a box outside the frame or inverted,
                points outside the frame, or no prompt at all.
        """
        if self._frame is None or self._image_hw is None:
            raise RuntimeError("call step(frame) before add_object(): prompts apply to a frame")
        h, w = self._image_hw
        if obj_id is not None and (not isinstance(obj_id, int | np.integer) or obj_id < 1):
            raise ValueError(f"obj_id: expected an int >= 1, got {obj_id!r}")
        if mask is not None:
            if box_xyxy is not None or points_xy is not None:
                raise ValueError("give either mask or box/points for one object, not both")
            mask = np.asarray(mask)
            if mask.shape != (h, w):
                raise ValueError(f"mask: expected shape ({h}, {w}), got {mask.shape}")
            mask = mask.astype(bool)
            if not mask.any():
                raise ValueError("mask: the initial mask is empty")
        box = None
        if box_xyxy is not None:
            box = np.asarray(box_xyxy, np.float32).reshape(-1)
            if box.shape != (4,) or not np.isfinite(box).all():
                raise ValueError(f"box_xyxy: expected 4 finite numbers, got {box_xyxy!r}")
            if not (box[0] < box[2] and box[1] < box[3]):
                raise ValueError(f"box_xyxy: expected x0 < x1 and y0 < y1, got {box.tolist()}")
            if box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h:
                raise ValueError(f"box_xyxy: {box.tolist()} lies outside the {w}x{h} frame")
            box = clip_box(box, (h, w))
        points = labels = None
        if points_xy is not None:
            points = np.asarray(points_xy, np.float32)
            if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
                raise ValueError(f"points_xy: expected (P, 2) with P >= 1, got {points.shape}")
            if (points < 0).any() or (points[:, 0] >= w).any() or (points[:, 1] >= h).any():
                raise ValueError(f"points_xy: points outside the {w}x{h} frame")
            labels = (
                np.ones(len(points), np.int64)
                if point_labels is None
                else np.asarray(point_labels, np.int64).reshape(-1)
            )
            if labels.shape != (len(points),) or not np.isin(labels, (0, 1)).all():
                raise ValueError(f"point_labels: expected {len(points)} labels of 0/1")
            if not (labels == 1).any() and box is None:
                raise ValueError("points_xy: at least one positive point is needed")
        if mask is None and box is None and points is None:
            raise ValueError("add_object needs a mask, a box or points")

        embedding = self._current_embedding()
        if mask is not None:
            # A given mask is the truth on this frame; decode its box and inner points once,
            # only to get low-res logits to feed back as next frame's mask prompt.
            box = mask_to_box(mask)
            points = interior_points(mask, max(self.prompt_config.num_points, 1))
            labels = np.ones(len(points), np.int64)
        pred = self.predictor.decode(
            embedding,
            boxes_xyxy=None if box is None else box[None],
            points_xy=None if points is None else points[None],
            point_labels=None if labels is None else labels[None],
            # A box alone is unambiguous; points alone are not (SAM's own advice).
            multimask_output=box is None,
        )
        pred_masks = pred.masks[0].cpu().numpy()
        ious = pred.iou_scores[0].float().cpu().numpy()
        best = int(np.argmax(ious))
        low_res = pred.low_res_logits[0, best : best + 1]
        if mask is None:
            mask = pred_masks[best]
        score = float(ious[best])
        new_box = mask_to_box(mask)
        if new_box is None:
            # The decoder found nothing for this prompt: keep the object, LOST at the box.
            new_box = box if box is not None else clip_box(
                np.concatenate([points.min(0), points.max(0) + 1]), (h, w)  # type: ignore[union-attr]
            )
        if obj_id is None:
            obj_id = self.state.next_obj_id
        obj_id = int(obj_id)
        self.state.next_obj_id = max(self.state.next_obj_id, obj_id + 1)
        track = Track(
            obj_id=obj_id,
            mask=mask,
            box_xyxy=new_box,
            low_res_logits=low_res,
            score=score,
            last_seen_frame=self.state.frame_idx,
        )
        if mask_area(mask) < self.config.min_mask_area:
            track.status = TrackStatus.LOST
            logger.warning("object %d: initial mask has fewer than %d pixels; marked LOST",
                           obj_id, self.config.min_mask_area)
        self.state.tracks[obj_id] = track
        return obj_id

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking an object; its id is never reused.

        Raises:
            ValueError: if no live object has this id.
        """
        if obj_id not in self.state.tracks:
            raise ValueError(f"obj_id {obj_id}: no such object (live: {sorted(self.state.tracks)})")
        self.state.tracks[obj_id].status = TrackStatus.REMOVED
        del self.state.tracks[obj_id]

    def result(self) -> FrameResult:
        """The visible (ACTIVE) objects on the current frame.

        Raises:
            RuntimeError: before the first ``step``.
        """
        if self._image_hw is None:
            raise RuntimeError("no frame yet: call step(frame) first")
        active = sorted(self._tracks_with(TrackStatus.ACTIVE), key=lambda t: t.obj_id)
        lost = sorted(t.obj_id for t in self._tracks_with(TrackStatus.LOST))
        if not active:
            empty = FrameResult.empty(self.state.frame_idx, self._image_hw)
            return FrameResult(
                frame_idx=empty.frame_idx,
                obj_ids=empty.obj_ids,
                masks=empty.masks,
                scores=empty.scores,
                boxes_xyxy=empty.boxes_xyxy,
                lost_obj_ids=np.array(lost, np.int64),
            )
        return FrameResult(
            frame_idx=self.state.frame_idx,
            obj_ids=np.array([t.obj_id for t in active], np.int64),
            masks=np.stack([t.mask for t in active]),
            scores=np.array([t.score for t in active], np.float32),
            boxes_xyxy=np.stack([t.box_xyxy for t in active]).astype(np.float32),
            lost_obj_ids=np.array(lost, np.int64),
        )

    # ------------------------------------------------------------------ internals
    def _check_frame(self, frame: np.ndarray) -> None:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            shape = getattr(frame, "shape", type(frame).__name__)
            raise ValueError(f"frame: expected (H, W, 3) uint8 RGB, got {shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frame: expected dtype uint8, got {frame.dtype}")
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        if self._image_hw is not None and hw != self._image_hw:
            raise ValueError(f"frame: size changed from {self._image_hw} to {hw} mid-stream")
        self._image_hw = hw

    def _current_embedding(self) -> Any:
        if self._embedding is None:
            self._embedding = self.predictor.encode(self._frame)  # type: ignore[arg-type]
        return self._embedding

    def _tracks_with(self, status: TrackStatus) -> list[Track]:
        return [t for t in self.state.tracks.values() if t.status is status]

    def _object_prompts(
        self, track: Track, others: list[Track]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Box, points and labels for one ACTIVE track on the new frame."""
        pc = self.prompt_config
        assert self._image_hw is not None
        dx, dy = (float(v) for v in track.velocity_xy)
        # Move last frame's box by the smoothed velocity, then give it a margin: the margin
        # absorbs the motion the constant-velocity model does not predict.
        box = clip_box(track.box_xyxy + np.array([dx, dy, dx, dy], np.float32), self._image_hw)
        box = expand_box(box, pc.box_margin, self._image_hw)
        box = jitter_box(box, pc.box_jitter, self._rng, self._image_hw)
        positives = interior_points(track.mask, pc.num_points) + np.array([dx, dy], np.float32)
        negatives = np.zeros((0, 2), np.float32)
        if pc.num_negative_points > 0:
            # Other objects inside our box are the most useful negatives (SAM-PT adds other
            # objects' positives as negatives); background fills the remaining budget.
            for other in others:
                if len(negatives) >= pc.num_negative_points:
                    break
                inside = interior_points(other.mask, 1)
                if len(inside) and box[0] <= inside[0, 0] < box[2] and box[1] <= inside[0, 1] < box[3]:
                    negatives = np.concatenate([negatives, inside])
            rest = pc.num_negative_points - len(negatives)
            negatives = np.concatenate([negatives, background_points(track.mask, box, rest)])
        h, w = self._image_hw
        points = np.concatenate([positives, negatives]).astype(np.float32)
        points[:, 0] = np.clip(points[:, 0], 0, w - 1)
        points[:, 1] = np.clip(points[:, 1], 0, h - 1)
        labels = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))]).astype(np.int64)
        return box, points, labels

    def _decode(
        self,
        boxes: np.ndarray | None,
        point_sets: list[tuple[np.ndarray, np.ndarray]] | None,
        logits: torch.Tensor | None,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        coords = labels = None
        if point_sets is not None:
            coords, labels = pad_points(point_sets)
        pred = self.predictor.decode(
            self._embedding,
            boxes_xyxy=boxes,
            points_xy=coords,
            point_labels=labels,
            mask_logits=logits,
            multimask_output=multimask,
        )
        masks = pred.masks.cpu().numpy().astype(bool, copy=False)
        ious = pred.iou_scores.float().cpu().numpy()
        return masks, ious, pred.low_res_logits

    def _propagate(self, active: list[Track]) -> None:
        pc, cfg = self.prompt_config, self.config
        prompts = [self._object_prompts(t, [o for o in active if o is not t]) for t in active]
        use_box = pc.kind in ("box", "box+points")
        use_points = pc.kind in ("points", "box+points")
        boxes = np.stack([p[0] for p in prompts]) if use_box else None
        point_sets = [(p[1], p[2]) for p in prompts] if use_points else None
        logits = None
        if pc.use_prev_logits and all(t.low_res_logits is not None for t in active):
            logits = torch.stack([t.low_res_logits for t in active])  # type: ignore[misc]
        if boxes is None and point_sets is None and logits is None:
            raise RuntimeError("no prompt kind is enabled for propagation")
        # One batched decoder call for all objects.
        masks, ious, low_res = self._decode(boxes, point_sets, logits, cfg.multimask_output)

        prev_shifted = [_shift_mask(t.mask, *t.velocity_xy) for t in active]
        chosen = np.empty((len(active), *masks.shape[2:]), bool)
        scores = np.empty(len(active), np.float32)
        chosen_logits = []
        for i in range(len(active)):
            pick = self._select_candidate(masks[i], ious[i], prev_shifted[i])
            chosen[i], scores[i] = masks[i, pick], ious[i, pick]
            chosen_logits.append(low_res[i, pick : pick + 1])
        chosen_low_res = torch.stack(chosen_logits)

        for _ in range(cfg.refine_iterations):
            chosen, scores, chosen_low_res = self._refine(chosen, scores, chosen_low_res, point_sets)

        # Identity check: each new mask goes to the track whose (motion-compensated) previous
        # mask it overlaps most, by an optimal gated assignment. Normally the diagonal wins;
        # when one object's prompt latched onto its neighbour, that neighbour takes the mask
        # and the first object misses a frame instead of swapping ids.
        iou = mask_iou(chosen, np.stack(prev_shifted))
        assignment = linear_assignment(1.0 - iou, max_cost=1.0 - cfg.match_iou_min)
        proposals: dict[int, int] = {int(col): int(row) for row, col in assignment.matches}
        masks_for = {col: chosen[row] for col, row in proposals.items()}
        if cfg.overlap != "none":
            # Resolve contested pixels before accepting anything, so a track that loses its
            # whole mask to a neighbour (two prompts answered with one object) is a clean miss.
            cols = list(proposals)

            def priority(k: int) -> tuple:
                col = cols[k]
                if cfg.overlap == "lower_id_wins":
                    return (active[col].obj_id,)
                row = proposals[col]
                return (-float(scores[row]), -float(iou[row, col]), active[col].obj_id)

            order = sorted(range(len(cols)), key=priority)
            resolved = exclusive_masks([masks_for[c] for c in cols], order)
            masks_for = dict(zip(cols, resolved, strict=True))
        for col, track in enumerate(active):
            row = proposals.get(col)
            if row is not None and self._acceptable(
                masks_for[col], float(scores[row]), mask_area(track.mask)
            ):
                self._accept(track, masks_for[col], float(scores[row]), chosen_low_res[row])
            else:
                self._miss(track)

    def _select_candidate(self, candidates: np.ndarray, ious: np.ndarray, prev: np.ndarray) -> int:
        """Index of the candidate to keep among (C, H, W) masks with (C,) predicted IoU."""
        if len(candidates) == 1:
            return 0
        if self.config.candidate_selection == "iou":
            return int(np.argmax(ious))
        # Predicted IoU alone flips between part and whole from frame to frame; agreement
        # with the previous mask keeps the granularity the user chose.
        agreement = mask_iou(candidates, prev[None])[:, 0]
        return int(np.argmax(0.5 * ious + 0.5 * agreement))

    def _refine(
        self,
        masks: np.ndarray,
        scores: np.ndarray,
        low_res: torch.Tensor,
        point_sets: list[tuple[np.ndarray, np.ndarray]] | None,
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """One more decoder pass with the box of each current mask and its own logits."""
        assert self._image_hw is not None
        boxes = []
        for m in masks:
            box = mask_to_box(m)
            boxes.append(box if box is not None else np.array([0, 0, 1, 1], np.float32))
        new_masks, new_ious, new_low_res = self._decode(
            np.stack(boxes), point_sets, low_res, multimask=False
        )
        keep = np.array([mask_area(m) > 0 for m in masks])
        masks = np.where(keep[:, None, None], new_masks[:, 0], masks)
        scores = np.where(keep, new_ious[:, 0], scores).astype(np.float32)
        keep_t = torch.as_tensor(keep, device=low_res.device)[:, None, None, None]
        low_res = torch.where(keep_t, new_low_res[:, :1], low_res)
        return masks, scores, low_res

    def _acceptable(self, mask: np.ndarray, score: float, prev_area: int) -> bool:
        cfg = self.config
        area = mask_area(mask)
        return (
            area >= cfg.min_mask_area
            and score >= cfg.min_score
            and area >= cfg.min_area_ratio * prev_area
        )

    def _accept(self, track: Track, mask: np.ndarray, score: float, low_res: torch.Tensor) -> None:
        box = mask_to_box(mask)
        assert box is not None
        if track.status is TrackStatus.ACTIVE:
            s = self.config.velocity_smoothing
            delta = box - track.box_xyxy
            for axis in (0, 1):
                lo, hi = delta[axis], delta[axis + 2]
                track.anchor_xy[axis] = 0 if abs(lo) >= abs(hi) else 1
                moved = lo if abs(lo) >= abs(hi) else hi
                track.velocity_xy[axis] = s * track.velocity_xy[axis] + (1 - s) * moved
        else:
            track.velocity_xy = np.zeros(2, np.float32)
        size = box[2:] - box[:2]
        # A sudden shrink is occlusion or leaving the frame, not the object getting smaller:
        # keep the remembered size then, so the coasting box keeps the object's extent.
        if track.size_wh.prod() == 0 or size.prod() >= 0.9 * track.size_wh.prod():
            track.size_wh = size.astype(np.float32)
        else:
            track.size_wh = np.maximum(size, 0.97 * track.size_wh).astype(np.float32)
        track.mask, track.box_xyxy, track.low_res_logits = mask, box, low_res
        track.score = score
        track.last_seen_frame = self.state.frame_idx
        track.missed_frames = 0
        track.status = TrackStatus.ACTIVE

    def _miss(self, track: Track) -> None:
        assert self._image_hw is not None
        track.status = TrackStatus.LOST
        track.missed_frames += 1
        # Coast on the motion model so re-acquisition looks where the object should be.
        track.box_xyxy = _coast(track, self._image_hw)

    def _reacquire(self, lost: list[Track]) -> None:
        """Search each LOST object in its predicted box; accept only plausible, free masks."""
        assert self._image_hw is not None
        cfg = self.config
        # The search region grows with the time lost: the velocity's error accumulates.
        regions = np.stack(
            [
                expand_box(
                    t.box_xyxy, cfg.reacquire_margin * (1 + 0.2 * t.missed_frames), self._image_hw
                )
                for t in lost
            ]
        )
        # Prompt with the coasted box at the object's remembered size (a box as large as the
        # search region would frame whatever big neighbour is near); the region only bounds
        # where an answer may lie.
        prompt_boxes = np.stack([t.box_xyxy for t in lost]).astype(np.float32)
        masks, ious, low_res = self._decode(prompt_boxes, None, None, multimask=True)
        taken = [t.mask for t in self._tracks_with(TrackStatus.ACTIVE)]
        order = np.argsort(-ious.max(1), kind="stable")
        for i in order:
            track = lost[int(i)]
            pick = int(np.argmax(ious[i]))
            mask, score = masks[i, pick], float(ious[i, pick])
            prev_area = mask_area(track.mask)
            area = mask_area(mask)
            plausible = self._acceptable(mask, score, prev_area) and (
                cfg.min_area_ratio <= 0 or area <= prev_area / cfg.min_area_ratio
            )
            box = mask_to_box(mask)
            if plausible and box is not None:
                # The mask must lie where we searched: its centre inside the search region.
                cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
                region = regions[i]
                plausible = bool(region[0] <= cx <= region[2] and region[1] <= cy <= region[3])
            if plausible and taken:
                plausible = float(mask_iou(mask[None], np.stack(taken)).max()) <= cfg.reacquire_overlap_max
            if plausible:
                self._accept(track, mask, score, low_res[i, pick : pick + 1])
                taken.append(mask)
                logger.info("object %d re-acquired on frame %d", track.obj_id, self.state.frame_idx)
            else:
                self._miss(track)

    def _resolve_overlaps(self) -> None:
        """Give each pixel claimed by several ACTIVE objects to one of them (config.overlap)."""
        if self.config.overlap == "none":
            return
        active = self._tracks_with(TrackStatus.ACTIVE)
        if len(active) < 2:
            return
        if self.config.overlap == "higher_score_wins":
            order = sorted(range(len(active)), key=lambda i: (-active[i].score, active[i].obj_id))
        else:
            order = sorted(range(len(active)), key=lambda i: active[i].obj_id)
        resolved = exclusive_masks([t.mask for t in active], order)
        for track, mask in zip(active, resolved, strict=True):
            if mask_area(mask) == mask_area(track.mask):
                continue
            track.mask = mask
            box = mask_to_box(mask)
            if box is None:
                self._miss(track)
            else:
                track.box_xyxy = box

    def _expire(self) -> None:
        for obj_id in [
            t.obj_id for t in self.state.tracks.values()
            if t.missed_frames > self.config.max_missed_frames
        ]:
            logger.info("object %d removed after %d missed frames", obj_id,
                        self.state.tracks[obj_id].missed_frames)
            self.state.tracks[obj_id].status = TrackStatus.REMOVED
            del self.state.tracks[obj_id]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
