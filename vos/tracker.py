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

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from repvit_sam.segmenter import DecodePrompts, MaskPrediction, Segmenter
from vos.config import PromptConfig, TrackerConfig
from vos.masks import Crop, area, crop_of, exclusive, pairwise_iou, shift, tight
from vos.matching import linear_assignment
from vos.motion import coast, update_motion
from vos.prompts import clip_box, expand_box, mask_area
from vos.strategies import ObjectPrompt, batch_prompts, strategy_for
from vos.types import FrameResult, Prompt, Track, TrackerState, TrackStatus

logger = logging.getLogger(__name__)

__all__ = ["Segmenter", "VideoTracker"]


class VideoTracker:
    """Tracks any number of objects through a stream of frames.

    Args:
        predictor: a :class:`~repvit_sam.segmenter.Segmenter`, normally
            ``repvit_sam.SamPredictor`` or the segmenter of ``vos.models.build_segmenter``.
        config: decision thresholds; defaults are the documented DAVIS defaults.
        prompt_config: how prompts are derived from the previous masks (its ``kind`` picks
            the strategy of ``vos.strategies``).
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
        self.strategy = strategy_for(self.prompt_config)
        self._seed = seed
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget every object and frame; ids restart at 1."""
        self.state = TrackerState(rng=np.random.default_rng(self._seed))
        # The obj_ids the prompts of the latest ``step`` got, in order.
        self.added_obj_ids: tuple[int, ...] = ()

    def restore(self, state: TrackerState) -> None:
        """Continue from a saved state (resume): the next ``step`` is frame ``frame_idx + 1``.

        Args:
            state: what the tracker carried after a frame; the tracker keeps it (no copy).
        """
        if not isinstance(state, TrackerState):
            raise TypeError(f"state: expected TrackerState, got {type(state).__name__}")
        self.state = state

    @property
    def frame_idx(self) -> int:
        """Index of the current frame (-1 before the first ``step``)."""
        return self.state.frame_idx

    @property
    def tracks(self) -> dict[int, Track]:
        """Live tracks (ACTIVE or LOST) by obj_id."""
        return self.state.tracks

    def step(
        self,
        frame: np.ndarray,
        prompts: Sequence[Prompt] = (),
        *,
        run_decoder: bool = True,
        given: Sequence[Track] = (),
    ) -> FrameResult:
        """Advance to the next frame, propagate every object onto it, then add ``prompts``.

        Args:
            frame: (H, W, 3) uint8 RGB; all frames of a stream have the same size.
            prompts: new (or corrected) objects on this frame, applied after propagation as
                :meth:`add_object` does; the result includes them, and ``added_obj_ids`` holds
                the ids they got.
            run_decoder: False skips the model on this frame (frame skipping): objects keep
                their previous masks, and LOST objects still age.
            given: objects whose result on this frame is already known (a prompt decoded
                earlier, e.g. an interactive click of ``vos.video_predictor``); each replaces
                the object's track after propagation, exactly where a prompt's decoded result
                would go, so replaying a decoded prompt equals decoding it again.

        Returns:
            The visible objects on this frame.

        Raises:
            ValueError: on a frame of the wrong shape, dtype or size, or a bad prompt.
        """
        self._check_frame(frame)
        state = self.state
        state.frame_idx += 1
        state.frame = frame
        state.embedding = None
        if not run_decoder:
            for track in self._tracks_with(TrackStatus.LOST):
                self._miss(track)
            self._expire()
        elif state.tracks:
            active = self._tracks_with(TrackStatus.ACTIVE)
            lost = self._tracks_with(TrackStatus.LOST)
            if active:
                self._propagate(active)
            if lost:
                self._reacquire(lost)
            self._resolve_overlaps()
            self._expire()
        for track in given:
            self._install(track)
        self.added_obj_ids = tuple(self._add_prompts(prompts)) if prompts else ()
        return self.result()

    def track(
        self,
        frames: Iterable[np.ndarray],
        prompts: Mapping[int, Sequence[Prompt]] | None = None,
        *,
        decode_every: int = 1,
        given: Mapping[int, Sequence[Track]] | None = None,
    ) -> Iterator[FrameResult]:
        """Run over a stream lazily, like sam2's ``propagate_in_video``.

        Args:
            frames: (H, W, 3) uint8 RGB frames; the first is frame ``frame_idx + 1`` (0 for a
                fresh tracker, later after :meth:`restore`).
            prompts: user prompts keyed by the frame_idx they apply to; they are applied after
                that frame is propagated, and the yielded result includes them.
            decode_every: run the model on every k-th frame only (1 = every frame).
            given: known results keyed by frame_idx (see :meth:`step`).

        Yields:
            One :class:`FrameResult` per frame.
        """
        if decode_every < 1:
            raise ValueError(f"decode_every: expected >= 1, got {decode_every}")
        prompts = prompts or {}
        given = given or {}
        for frame in frames:
            frame_idx = self.state.frame_idx + 1
            yield self.step(frame, prompts.get(frame_idx, ()),
                            run_decoder=frame_idx % decode_every == 0,
                            given=given.get(frame_idx, ()))

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
            box_xyxy: (4,) XYXY in frame pixels (clipped to the frame).
            points_xy: (P, 2) XY in frame pixels (may be combined with ``box_xyxy``).
            point_labels: (P,) 1 positive / 0 negative; defaults to all positive.
            obj_id: id to use; an existing id is overwritten (a correction). None takes the
                next free id.

        Returns:
            The object's obj_id.

        Raises:
            RuntimeError: before the first ``step``.
            ValueError: on an empty or mis-sized mask, a box outside the frame or inverted,
                points outside the frame, or no prompt at all (``vos.types.PromptError``).
        """
        if self.state.frame is None:
            raise RuntimeError("call step(frame) before add_object(): prompts apply to a frame")
        return self.add_prompt(
            Prompt(mask=mask, box_xyxy=box_xyxy, points_xy=points_xy, point_labels=point_labels,
                   obj_id=obj_id)
        )

    def add_prompt(self, prompt: Prompt) -> int:
        """:meth:`add_object` for a :class:`~vos.types.Prompt`; returns the obj_id."""
        return self._add_prompts([prompt])[0]

    def _add_prompts(self, prompts: Sequence[Prompt]) -> list[int]:
        """Add objects on the current frame, decoding prompts of one shape in one call."""
        state = self.state
        if state.frame is None or state.image_hw is None:
            raise RuntimeError("call step(frame) before add_object(): prompts apply to a frame")
        checked = [prompt.checked(state.image_hw) for prompt in prompts]
        requests = [
            self.strategy.from_mask(p.mask) if p.mask is not None
            else ObjectPrompt(p.box_xyxy, p.points_xy, p.point_labels)
            for p in checked
        ]
        # Prompts with the same parts and point count share a decoder call (padding a point
        # set would change its answer). A box alone is unambiguous, points alone are not
        # (SAM's own advice): those get three candidates.
        # A refining prompt (SAM's mask input: the object's current logits on this frame)
        # is decoded apart from fresh ones, as its decoder call carries a mask prompt.
        groups: dict[tuple[bool, int, bool], list[int]] = {}
        for i, request in enumerate(requests):
            points = 0 if request.points_xy is None else len(request.points_xy)
            refining = checked[i].mask_logits is not None
            groups.setdefault((request.box_xyxy is not None, points, refining), []).append(i)
        decoded: dict[int, tuple[MaskPrediction, int]] = {}
        for (has_box, _, refining), members in groups.items():
            logits = None
            if refining:
                logits = torch.stack([checked[i].mask_logits for i in members])  # type: ignore[misc]
            pred = self._decode(batch_prompts([requests[i] for i in members], logits,
                                              multimask_output=not has_box))
            decoded.update({i: (pred, row) for row, i in enumerate(members)})
        return [self._new_track(checked[i], *decoded[i]) for i in range(len(checked))]

    def _new_track(self, prompt: Prompt, pred: MaskPrediction, row: int) -> int:
        """The track of one decoded prompt (its mask is the prompt's own mask, if given)."""
        state = self.state
        assert state.image_hw is not None
        ious = pred.iou_scores[row].float().cpu().numpy()
        best = int(np.argmax(ious))
        low_res = pred.low_res_logits[row, best : best + 1]
        if prompt.mask is not None:
            mask = prompt.mask
            found = tight(crop_of(mask, (0, 0, mask.shape[1], mask.shape[0])))
        else:
            (found,) = pred.candidate_masks([(row, best)])
            found = tight(found)
            mask = found.full(state.image_hw) if found is not None else np.zeros(
                state.image_hw, bool)
        if found is not None:
            new_box = np.array(found.box_xyxy, np.float32)
        elif prompt.box_xyxy is not None:
            # The decoder found nothing for this prompt: keep the object, LOST at the box.
            new_box = prompt.box_xyxy
        else:
            points = prompt.points_xy
            new_box = clip_box(np.concatenate([points.min(0), points.max(0) + 1]),  # type: ignore[union-attr]
                               state.image_hw)
        obj_id = state.next_obj_id if prompt.obj_id is None else prompt.obj_id
        state.next_obj_id = max(state.next_obj_id, obj_id + 1)
        track = Track(
            obj_id=obj_id,
            mask=mask,
            box_xyxy=new_box,
            low_res_logits=low_res,
            score=float(ious[best]),
            last_seen_frame=state.frame_idx,
        )
        if area(found) < self.config.min_mask_area:
            track.status = TrackStatus.LOST
            logger.warning("object %d: initial mask has fewer than %d pixels; marked LOST",
                           obj_id, self.config.min_mask_area)
        state.tracks[obj_id] = track
        return obj_id

    def _install(self, given: Track) -> None:
        """Take a known result as the object's track on the current frame (a copy)."""
        state = self.state
        if given.mask.shape != state.image_hw:
            raise ValueError(f"object {given.obj_id}: mask of shape {given.mask.shape}, "
                             f"expected the frame's {state.image_hw}")
        track = dataclasses.replace(given.copy(), last_seen_frame=state.frame_idx)
        state.tracks[track.obj_id] = track
        state.next_obj_id = max(state.next_obj_id, track.obj_id + 1)

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
        state = self.state
        if state.image_hw is None:
            raise RuntimeError("no frame yet: call step(frame) first")
        active = sorted(self._tracks_with(TrackStatus.ACTIVE), key=lambda t: t.obj_id)
        lost = np.array(sorted(t.obj_id for t in self._tracks_with(TrackStatus.LOST)), np.int64)
        if not active:
            empty = FrameResult.empty(state.frame_idx, state.image_hw)
            return dataclasses.replace(empty, lost_obj_ids=lost)
        return FrameResult(
            frame_idx=state.frame_idx,
            obj_ids=np.array([t.obj_id for t in active], np.int64),
            masks=np.stack([t.mask for t in active]),
            scores=np.array([t.score for t in active], np.float32),
            boxes_xyxy=np.stack([t.box_xyxy for t in active]).astype(np.float32),
            lost_obj_ids=lost,
        )

    # ------------------------------------------------------------------ internals
    def _check_frame(self, frame: np.ndarray) -> None:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            shape = getattr(frame, "shape", type(frame).__name__)
            raise ValueError(f"frame: expected (H, W, 3) uint8 RGB, got {shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frame: expected dtype uint8, got {frame.dtype}")
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        if self.state.image_hw is not None and hw != self.state.image_hw:
            raise ValueError(f"frame: size changed from {self.state.image_hw} to {hw} mid-stream")
        self.state.image_hw = hw

    def _decode(self, prompts: DecodePrompts) -> MaskPrediction:
        """Decode against the current frame, encoding it on first need (once per frame)."""
        state = self.state
        if state.embedding is None:
            state.embedding = self.predictor.encode(state.frame)  # type: ignore[arg-type]
        return self.predictor.decode(state.embedding, prompts)

    def _tracks_with(self, status: TrackStatus) -> list[Track]:
        return [t for t in self.state.tracks.values() if t.status is status]

    def _crop(self, track: Track) -> Crop:
        """A track's mask as its crop (a view; the track keeps the full mask)."""
        return crop_of(track.mask, track.box_xyxy)

    def _propagate(self, active: list[Track]) -> None:
        cfg, state = self.config, self.state
        assert state.image_hw is not None
        requests = [
            self.strategy.propagate(t, [o for o in active if o is not t], state.image_hw,
                                    state.rng)
            for t in active
        ]
        logits = None
        if self.prompt_config.use_prev_logits and all(t.low_res_logits is not None for t in active):
            logits = torch.stack([t.low_res_logits for t in active])  # type: ignore[misc]
        if not self.strategy.prompts_anything or (
            not (self.strategy.use_box or self.strategy.use_points) and logits is None
        ):
            raise RuntimeError("no prompt kind is enabled for propagation")
        # One batched decoder call for all objects.
        prompts = batch_prompts(requests, logits, multimask_output=cfg.multimask_output)
        pred = self._decode(prompts)
        ious = pred.iou_scores.float().cpu().numpy()

        # Masks are upsampled only for the candidates looked at, only where they can be
        # positive: an object costs in proportion to its size, not the frame's.
        prev_shifted = [shift(self._crop(t), *t.velocity_xy, state.image_hw) for t in active]
        picks = [self._select_candidate(pred, i, ious[i], prev_shifted[i])
                 for i in range(len(active))]
        chosen = pred.candidate_masks(list(enumerate(picks)))
        scores = ious[np.arange(len(active)), picks].astype(np.float32)
        chosen_low_res = torch.stack(
            [pred.low_res_logits[i, pick : pick + 1] for i, pick in enumerate(picks)])

        for _ in range(cfg.refine_iterations):
            chosen, scores, chosen_low_res = self._refine(chosen, scores, chosen_low_res, prompts)

        # Identity check: each new mask goes to the track whose (motion-compensated) previous
        # mask it overlaps most, by an optimal gated assignment. Normally the diagonal wins;
        # when one object's prompt latched onto its neighbour, that neighbour takes the mask
        # and the first object misses a frame instead of swapping ids. Only pairs whose boxes
        # meet are compared.
        iou = pairwise_iou(chosen, prev_shifted)
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
            resolved = exclusive([masks_for[c] for c in cols], order)
            masks_for = dict(zip(cols, resolved, strict=True))
        for col, track in enumerate(active):
            row = proposals.get(col)
            if row is not None and self._acceptable(
                masks_for[col], float(scores[row]), mask_area(track.mask)
            ):
                self._accept(track, masks_for[col], float(scores[row]), chosen_low_res[row])
            else:
                self._miss(track)

    def _select_candidate(self, pred: MaskPrediction, obj_idx: int, ious: np.ndarray,
                          prev: Crop) -> int:
        """Index of the candidate to keep among an object's (C,) candidates."""
        if len(ious) == 1:
            return 0
        if self.config.candidate_selection == "iou":
            return int(np.argmax(ious))
        # Predicted IoU alone flips between part and whole from frame to frame; agreement
        # with the previous mask keeps the granularity the user chose.
        candidates = pred.candidate_masks([(obj_idx, c) for c in range(len(ious))])
        agreement = pairwise_iou(candidates, [prev])[:, 0]
        return int(np.argmax(0.5 * ious + 0.5 * agreement))

    def _refine(
        self,
        masks: list[Crop],
        scores: np.ndarray,
        low_res: torch.Tensor,
        prompts: DecodePrompts,
    ) -> tuple[list[Crop], np.ndarray, torch.Tensor]:
        """One more decoder pass with the box of each current mask and its own logits."""
        tight_masks = [tight(m) for m in masks]
        boxes = [np.array(m.box_xyxy, np.float32) if m is not None
                 else np.array([0, 0, 1, 1], np.float32) for m in tight_masks]
        again = DecodePrompts.of(boxes_xyxy=np.stack(boxes), points_xy=prompts.points_xy,
                                 point_labels=prompts.point_labels, mask_logits=low_res)
        pred = self._decode(again)
        new_ious = pred.iou_scores.float().cpu().numpy()
        keep = np.array([m is not None for m in tight_masks])
        refined = pred.candidate_masks([(i, 0) for i in range(len(masks))])
        masks = [new if k else old for new, old, k in zip(refined, masks, keep, strict=True)]
        scores = np.where(keep, new_ious[:, 0], scores).astype(np.float32)
        keep_t = torch.as_tensor(keep, device=low_res.device)[:, None, None, None]
        low_res = torch.where(keep_t, pred.low_res_logits[:, :1], low_res)
        return masks, scores, low_res

    def _acceptable(self, mask: Crop, score: float, prev_area: int) -> bool:
        cfg = self.config
        size = area(mask)
        return (
            size >= cfg.min_mask_area
            and score >= cfg.min_score
            and size >= cfg.min_area_ratio * prev_area
        )

    def _accept(self, track: Track, mask: Crop, score: float, low_res: torch.Tensor) -> None:
        found = tight(mask)
        assert found is not None and self.state.image_hw is not None
        box = np.array(found.box_xyxy, np.float32)
        update_motion(track, box, self.config.velocity_smoothing)
        track.mask, track.box_xyxy, track.low_res_logits = (
            found.full(self.state.image_hw), box, low_res)
        track.score = score
        track.last_seen_frame = self.state.frame_idx
        track.missed_frames = 0
        track.status = TrackStatus.ACTIVE

    def _miss(self, track: Track) -> None:
        assert self.state.image_hw is not None
        track.status = TrackStatus.LOST
        track.missed_frames += 1
        # Coast on the motion model so re-acquisition looks where the object should be.
        track.box_xyxy = coast(track, self.state.image_hw)

    def _reacquire(self, lost: list[Track]) -> None:
        """Search each LOST object in its predicted box; accept only plausible, free masks."""
        image_hw = self.state.image_hw
        assert image_hw is not None
        cfg = self.config
        # The search region grows with the time lost: the velocity's error accumulates.
        regions = np.stack(
            [
                expand_box(t.box_xyxy, cfg.reacquire_margin * (1 + 0.2 * t.missed_frames), image_hw)
                for t in lost
            ]
        )
        prompts = batch_prompts([self.strategy.reacquire(t) for t in lost], multimask_output=True)
        pred = self._decode(prompts)
        ious = pred.iou_scores.float().cpu().numpy()
        picks = [int(np.argmax(ious[i])) for i in range(len(lost))]
        found = [tight(m) for m in pred.candidate_masks(list(enumerate(picks)))]
        taken = [self._crop(t) for t in self._tracks_with(TrackStatus.ACTIVE)]
        order = np.argsort(-ious.max(1), kind="stable")
        for i in order:
            track = lost[int(i)]
            pick = picks[int(i)]
            mask, score = found[int(i)], float(ious[i, pick])
            prev_area = mask_area(track.mask)
            size = area(mask)
            plausible = self._acceptable(mask, score, prev_area) and (
                cfg.min_area_ratio <= 0 or size <= prev_area / cfg.min_area_ratio
            )
            if plausible and mask is not None:
                # The mask must lie where we searched: its centre inside the search region.
                x0, y0, x1, y1 = mask.box_xyxy
                cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
                region = regions[i]
                plausible = bool(region[0] <= cx <= region[2] and region[1] <= cy <= region[3])
            if plausible and taken:
                plausible = float(pairwise_iou([mask], taken).max()) <= cfg.reacquire_overlap_max
            if plausible:
                self._accept(track, mask, score, pred.low_res_logits[i, pick : pick + 1])
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
        crops = [self._crop(t) for t in active]
        resolved = exclusive(crops, order)
        for track, before, after in zip(active, crops, resolved, strict=True):
            if after is before:
                continue  # lost no pixel (exclusive copies only the masks it changes)
            if area(after) == area(before):
                continue
            found = tight(after)
            if found is None:
                track.mask = np.zeros_like(track.mask)
                self._miss(track)
            else:
                assert self.state.image_hw is not None
                track.mask = found.full(self.state.image_hw)
                track.box_xyxy = np.array(found.box_xyxy, np.float32)

    def _expire(self) -> None:
        for obj_id in [
            t.obj_id for t in self.state.tracks.values()
            if t.missed_frames > self.config.max_missed_frames
        ]:
            logger.info("object %d removed after %d missed frames", obj_id,
                        self.state.tracks[obj_id].missed_frames)
            self.state.tracks[obj_id].status = TrackStatus.REMOVED
            del self.state.tracks[obj_id]
