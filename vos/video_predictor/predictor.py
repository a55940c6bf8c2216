"""SAM 2's ``SAM2VideoPredictor`` over the streaming tracker (see the package docstring)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repvit_sam.segmenter import ImageEmbedding
from vos.config import RunConfig
from vos.embedding_store import EmbeddingStore, SpillCache, StoredSegmenter, model_key_of
from vos.io.resume_state import Snapshot, snapshot_bytes, snapshot_from_bytes, take_snapshot
from vos.io.sources import open_source
from vos.precision import as_configured, runs_as_configured
from vos.tracker import VideoTracker
from vos.types import Prompt, PromptError, Track, TrackerState, TrackStatus
from vos.video_predictor.frames import FrameReader
from vos.video_predictor.outputs import (
    FILLED_HOLE_SCORE,
    IMAGE_SIZE,
    NO_OBJ_SCORE,
    fill_small_holes,
    hole_area_pixels,
    keep_highest_score,
    video_logits,
)
from vos.video_predictor.state import BACKWARD, FORWARD, InferenceState, ObjectPrompts

logger = logging.getLogger(__name__)

__all__ = ["VideoPredictor"]


def _model_of(segmenter: Any) -> nn.Module | None:
    """The torch model a segmenter runs (through wrappers such as ``RoiSegmenter``), if any."""
    for _ in range(4):
        model = getattr(segmenter, "model", None)
        if isinstance(model, nn.Module):
            return model
        segmenter = getattr(segmenter, "inner", None)
        if segmenter is None:
            break
    return None


def _model_device(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _device_of(segmenter: Any) -> torch.device:
    device = getattr(segmenter, "device", None)
    return torch.device(device) if device is not None else torch.device("cpu")


class VideoPredictor(nn.Module):
    """SAM 2.1's ``SAM2VideoPredictor`` API over :class:`VideoTracker` and an embedding store.

    Build it with :func:`~vos.video_predictor.build_sam2_video_predictor`. Every method takes
    and returns what SAM 2's does (see the package docstring for the deliberate differences).
    Like SAM 2's, the predictor is a ``torch.nn.Module`` holding the model: ``.to(device)``,
    ``.cuda()``, ``.cpu()``, ``.eval()``, ``.parameters()``, ``.state_dict()`` and
    ``.load_state_dict()`` act on it (its ``state_dict`` is the model's, with the model's own
    keys). The model runs in float32 and eval mode only: ``.half()``, ``.bfloat16()`` and
    ``.train()`` raise (reduced precision is ``model.fast_mode=bf16``). Moving the model to
    another device, or loading other weights, rebuilds the segmenter from the config's backend
    and starts a fresh embedding store.

    Args:
        segmenter: the model (``encode``/``decode``), e.g. ``vos.models.build_segmenter``'s.
        config: tracker, prompt and store settings (``model`` names what the embeddings
            depend on).
        checkpoint_sha256: the checkpoint's hash (part of every embedding's store key).
        model: the torch model ``segmenter`` runs; None: found on the segmenter (its
            ``model``), or none (then ``.parameters()`` is empty and ``.to`` moves nothing).
        fill_hole_area: SAM 2's hole filling of the returned masks (see the attribute).

    Attributes:
        image_size: SAM 2's model input size, 1024.
        fill_hole_area: background regions of at most this many pixels of SAM 2's 256x256
            low-res mask (``fill_hole_area * H * W / 256**2`` video pixels, 8-connected)
            inside or beside an object's returned mask become part of it (score 0.1), as SAM
            2's post-processing does; 0 (default) fills nothing. Outputs only: the tracker
            propagates the unfilled masks.
        non_overlap_masks: whether masks of different objects may overlap: False sets the
            tracker's ``tracker.overlap`` rule to ``none``, True to ``higher_score_wins``
            (the default). Setting it re-tracks on the next propagation.
        clear_non_cond_mem_around_input, add_all_frames_to_correct_as_cond: SAM 2's memory
            settings, read-only here: there is no memory bank to clear, and every corrected
            frame keeps its prompted result (as SAM 2 with the second one True).

    Example:
        >>> predictor = build_sam2_video_predictor("repvit", "weights/repvit_sam.pt")
        >>> state = predictor.init_state("frames/")
        >>> predictor.add_new_points_or_box(state, 0, 1, box=[100, 80, 220, 240])
        >>> results = {t: (ids, m) for t, ids, m in predictor.propagate_in_video(state)}
    """

    def __init__(self, segmenter: Any, config: RunConfig | None = None,
                 *, checkpoint_sha256: str | None = None, model: nn.Module | None = None,
                 fill_hole_area: int = 0) -> None:
        super().__init__()
        self.config = config or RunConfig()
        if getattr(self.config.model.fast_mode, "roi", False):
            raise ValueError("model.fast_mode with roi: the video predictor revisits frames in "
                             "any order, and an ROI crop depends on the frames before; use a "
                             "mode without roi")
        self.model = model if model is not None else _model_of(segmenter)
        self.image_size = IMAGE_SIZE
        self.fill_hole_area = fill_hole_area
        self._checkpoint = self.config.model.checkpoint
        self._weights_sha256 = checkpoint_sha256
        self._settings_epoch = 0
        self._attach(segmenter)

    def _attach(self, segmenter: Any) -> None:
        """Serve ``segmenter`` through a fresh embedding store of its model and device."""
        store_cfg = self.config.store
        self.store = EmbeddingStore(
            model_key_of(self.config.model, self._weights_sha256),
            memory_mb=store_cfg.memory_mb, disk_mb=store_cfg.disk_mb,
            cache_dir=store_cfg.cache_dir, device=_device_of(segmenter))
        self.segmenter = StoredSegmenter(segmenter, self.store)
        self._placed_on = _device_of(segmenter)

    # ------------------------------------------------------------------ SAM 2's attributes
    @property
    def device(self) -> torch.device:
        """The model's device."""
        return _device_of(self.segmenter.inner)

    @property
    def fill_hole_area(self) -> int:
        return self._fill_hole_area

    @fill_hole_area.setter
    def fill_hole_area(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"fill_hole_area: expected an integer >= 0 (pixels of SAM 2's "
                             f"256x256 mask), got {value!r}")
        self._fill_hole_area = int(value)

    @property
    def non_overlap_masks(self) -> bool:
        return self.config.tracker.overlap != "none"

    @non_overlap_masks.setter
    def non_overlap_masks(self, value: bool) -> None:
        current = self.config.tracker.overlap
        wanted = ("higher_score_wins" if current == "none" else current) if value else "none"
        if wanted != current:
            tracker = dataclasses.replace(self.config.tracker, overlap=wanted)
            self.config = dataclasses.replace(self.config, tracker=tracker)
            self._settings_epoch += 1  # every session's kept states: tracked under the old rule

    @property
    def clear_non_cond_mem_around_input(self) -> bool:
        return False

    @clear_non_cond_mem_around_input.setter
    def clear_non_cond_mem_around_input(self, value: bool) -> None:
        logger.info("clear_non_cond_mem_around_input=%s has no effect here (no memory bank)",
                    value)

    @property
    def add_all_frames_to_correct_as_cond(self) -> bool:
        return True

    @add_all_frames_to_correct_as_cond.setter
    def add_all_frames_to_correct_as_cond(self, value: bool) -> None:
        logger.info("add_all_frames_to_correct_as_cond=%s has no effect here (every corrected "
                    "frame keeps its prompted result)", value)

    # ------------------------------------------------------------------ nn.Module
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the video predictor is not called: use its methods "
                                  "(init_state, add_new_points_or_box, propagate_in_video, "
                                  "...), as with SAM 2's")

    def to(self, *args: Any, **kwargs: Any) -> VideoPredictor:  # type: ignore[override]
        """Move the model (SAM 2 scripts call ``predictor.to(device)``).

        The device follows the one device rule of :func:`repvit_sam.build.resolve_device`
        (a CUDA device this machine lacks falls back to the CPU with one warning).

        Raises:
            ValueError: a dtype other than float32, or a device name this machine cannot
                have (see :func:`~repvit_sam.build.resolve_device`).
        """
        from repvit_sam.build import resolve_device

        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        self._check_dtype(dtype)
        if device is None:
            return self
        return super().to(resolve_device(device))

    def cuda(self, device: int | torch.device | None = None) -> VideoPredictor:  # type: ignore[override]
        if isinstance(device, int):
            device = torch.device("cuda", device)
        return self.to(device or "cuda")

    def cpu(self) -> VideoPredictor:  # type: ignore[override]
        return self.to("cpu")

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor],
               recurse: bool = True) -> VideoPredictor:  # type: ignore[override]
        # Every cast and move goes through here (half(), bfloat16(), to(dtype), ...): try it
        # on a probe first, so a refused one changes nothing.
        self._check_dtype(fn(torch.zeros(1)).dtype)
        super()._apply(fn, recurse)
        if self.model is not None and _model_device(self.model) != self._placed_on:
            self._rebuild()
        return self

    @staticmethod
    def _check_dtype(dtype: torch.dtype | None) -> None:
        if dtype is not None and dtype != torch.float32:
            raise ValueError(f"the video predictor's model runs in float32, not {dtype}; for "
                             "bfloat16 compute set model.fast_mode=bf16")

    def train(self, mode: bool = True) -> VideoPredictor:
        """Eval mode only (``.eval()`` works; SAM 2's training is not supported)."""
        if mode:
            raise ValueError("the video predictor runs in eval mode only (it does not train)")
        return super().train(False)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The model's state_dict, with the model's own keys (as SAM 2's predictor)."""
        if self.model is None:
            return super().state_dict(*args, **kwargs)
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        """Load weights into the model, then rebuild the segmenter and the embedding store
        (stored embeddings and kept states came from the old weights)."""
        if self.model is None:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        from repvit_sam.runtime.graphs import model_fingerprint

        result = self.model.load_state_dict(state_dict, strict=strict, assign=assign)
        self._checkpoint = None  # graph backends export these weights, not the file's
        self._weights_sha256 = model_fingerprint(self.model)
        self._rebuild()
        return result

    def _rebuild(self) -> None:
        """A segmenter for the model as it now is (device, weights), with a fresh store."""
        from repvit_sam.runtime import build_segmenter

        assert self.model is not None
        model_cfg = dataclasses.replace(self.config.model,
                                        device=str(_model_device(self.model)))
        self.config = dataclasses.replace(self.config, model=model_cfg)
        try:
            segmenter = build_segmenter(self.model, model_cfg.backend,  # type: ignore[arg-type]
                                        mode=model_cfg.fast_mode, checkpoint=self._checkpoint)
        except (ImportError, ValueError) as exc:
            raise ValueError(f"the model cannot run on {model_cfg.device} with backend "
                             f"{model_cfg.backend}: {exc}") from None
        old = self.store
        self._attach(segmenter)
        old.close()
        self._settings_epoch += 1

    # ------------------------------------------------------------------ session
    def init_state(
        self,
        video_path: str | os.PathLike[str],
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
    ) -> InferenceState:
        """Open a video (file or frame folder) for prompting and propagation.

        Frames are read lazily: nothing is decoded or encoded until a prompt, a pass or
        ``inference_state["images"][t]`` needs it. A folder's frames are taken in our
        reader's order (integer names numerically, as SAM 2 does; any other names by name).

        Args:
            video_path: a video file or a folder of frames.
            offload_video_to_cpu: ``inference_state["images"]`` gives CPU tensors (else the
                model's device); the frames themselves always stay on the CPU.
            offload_state_to_cpu: recorded for SAM 2 code; per-frame states always live in
                CPU memory or the disk cache.
            async_loading_frames: accepted for SAM 2 code; frames are always read lazily.

        Raises:
            SourceError: a missing, unreadable or empty video or folder.
        """
        del async_loading_frames  # see docstring
        text = str(video_path)
        source = open_source(text)
        reader = FrameReader(source)
        h, w = source.info.image_hw
        store_cfg = self.config.store
        states: SpillCache[bytes] = SpillCache(
            bytes, bytes, len, memory_bytes=int(store_cfg.state_memory_mb * (1 << 20)),
            disk_bytes=int(store_cfg.state_disk_mb * (1 << 20)), name="frame state")
        return InferenceState(owner=self, video_path=text, frames=reader, video_height=h,
                              video_width=w, states=states, device=self.device,
                              offload_video_to_cpu=offload_video_to_cpu,
                              offload_state_to_cpu=offload_state_to_cpu,
                              settings_epoch=self._settings_epoch)

    def reset_state(self, inference_state: InferenceState) -> None:
        """Forget every object, prompt and result; keep the video (and the stored embeddings)."""
        self._checked_state(inference_state).forget_objects()

    def close_state(self, inference_state: InferenceState) -> None:
        """Release a session's frames and states (its temporary state folder is removed)."""
        inference_state.frames.close()
        inference_state.states.close()

    # ------------------------------------------------------------------ prompts
    @runs_as_configured
    def add_new_points_or_box(
        self,
        inference_state: InferenceState,
        frame_idx: int,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
    ) -> tuple[int, list[Any], torch.Tensor]:
        """Add clicks and/or a box for one object on one frame, and decode it at once.

        Args:
            inference_state: from :meth:`init_state`.
            frame_idx: the frame (0-based).
            obj_id: the object's id (a new id adds an object, at any time).
            points: (P, 2) XY; video pixels with ``normalize_coords=True``, else in [0, 1].
            labels: (P,) 1 positive, 0 negative (required with ``points``).
            clear_old_points: replace this object's earlier clicks on this frame; False adds
                to them (a box needs True).
            normalize_coords: see ``points``.
            box: (4,) XYXY in the same coordinates as ``points``.

        Returns:
            ``(frame_idx, obj_ids, masks)``: every object's logits on this frame,
            (len(obj_ids), 1, H, W) float32 at the video's resolution.

        Raises:
            ValueError: a frame index out of range, points without labels, NaN or
                out-of-frame coordinates, a box with ``clear_old_points=False``.
        """
        state = self._checked_state(inference_state)
        frame_idx = self._checked_frame_idx(state, frame_idx)
        obj_id = _checked_obj_id(obj_id)
        if (points is None) != (labels is None):
            raise PromptError("points and labels must be provided together")
        if points is None and box is None:
            raise PromptError("at least one of points or box must be provided as input")
        if box is not None and not clear_old_points:
            raise PromptError("cannot add box without clearing old points, since box prompt "
                              "must be provided before any point prompt (please use "
                              "clear_old_points=True instead)")
        points_xy, point_labels = self._points_in_pixels(state, points, labels,
                                                         normalize_coords)
        box_xyxy = None
        if box is not None:
            corners = box.detach().cpu().numpy() if isinstance(box, torch.Tensor) else box
            corners = np.asarray(corners, np.float32)
            if corners.size != 4:
                raise PromptError(f"box: expected 4 numbers x0, y0, x1, y1, got shape "
                                  f"{corners.shape}")
            corner_xy, _ = self._points_in_pixels(state, corners.reshape(2, 2), None,
                                                  normalize_coords, what="box")
            assert corner_xy is not None
            box_xyxy = corner_xy.reshape(4)
        old = state.prompts.get(frame_idx, {}).get(obj_id)
        if not clear_old_points and old is not None and old.mask is None:
            if old.points_xy is not None and points_xy is not None:
                points_xy = np.concatenate([old.points_xy, points_xy])
                point_labels = np.concatenate([old.point_labels, point_labels])  # type: ignore[list-item]
            elif points_xy is None:
                points_xy, point_labels = old.points_xy, old.point_labels
            box_xyxy = old.box_xyxy
        prompts = ObjectPrompts(points_xy=points_xy, point_labels=point_labels,
                                box_xyxy=box_xyxy)
        return self._add_prompt(state, frame_idx, obj_id, prompts)

    # SAM 2 keeps the old name as an alias.
    add_new_points = add_new_points_or_box

    @runs_as_configured
    def add_new_mask(
        self,
        inference_state: InferenceState,
        frame_idx: int,
        obj_id: int,
        mask: Any,
    ) -> tuple[int, list[Any], torch.Tensor]:
        """Give one object's mask on one frame.

        Args:
            mask: (h, w) bool (or numbers: > 0.5 for floats, nonzero otherwise). A mask of
                another size than the video's is taken to cover the whole frame and resized
                to it, as SAM 2 does (antialiased bilinear, then >= 0.5).

        Returns:
            ``(frame_idx, obj_ids, masks)`` as :meth:`add_new_points_or_box`.

        Raises:
            ValueError: a frame index out of range, a mask that is not 2-D or is empty.
        """
        state = self._checked_state(inference_state)
        frame_idx = self._checked_frame_idx(state, frame_idx)
        obj_id = _checked_obj_id(obj_id)
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask)
        hw = (state.video_height, state.video_width)
        if mask.ndim != 2 or 0 in mask.shape:
            raise PromptError(f"mask: expected a 2-D mask (the video is {hw[0]}x{hw[1]} "
                              f"pixels, height x width), got shape {mask.shape}")
        if mask.dtype != bool:
            if not np.isfinite(mask.astype(np.float64)).all():
                raise PromptError("mask: expected finite values (got NaN or infinity)")
            mask = mask > 0.5 if mask.dtype.kind == "f" else mask != 0
        if mask.shape != hw:
            resized = F.interpolate(torch.from_numpy(mask)[None, None].float(), hw,
                                    mode="bilinear", align_corners=False, antialias=True)
            mask = (resized[0, 0] >= 0.5).numpy()
        return self._add_prompt(state, frame_idx, obj_id, ObjectPrompts(mask=mask))

    @runs_as_configured
    def clear_all_prompts_in_frame(
        self,
        inference_state: InferenceState,
        frame_idx: int,
        obj_id: int,
        need_output: bool = True,
    ) -> tuple[int, list[Any], torch.Tensor] | None:
        """Remove one object's prompts (and prompted result) on one frame.

        Returns:
            ``(frame_idx, obj_ids, masks)`` with ``need_output``, else None.

        Raises:
            ValueError: an unknown obj_id or a frame index out of range.
        """
        state = self._checked_state(inference_state)
        frame_idx = self._checked_frame_idx(state, frame_idx)
        self._known(state, obj_id)
        had = obj_id in state.prompted.get(frame_idx, {})
        state.prompts.get(frame_idx, {}).pop(obj_id, None)
        state.prompted.get(frame_idx, {}).pop(obj_id, None)
        for table in (state.prompts, state.prompted):
            if frame_idx in table and not table[frame_idx]:
                del table[frame_idx]
        if had:
            self._invalidate(state, frame_idx)
        if not need_output:
            return None
        return frame_idx, list(state.obj_ids), self._frame_logits(state, frame_idx)

    @runs_as_configured
    def remove_object(
        self,
        inference_state: InferenceState,
        obj_id: int,
        strict: bool = False,
        need_output: bool = True,
    ) -> tuple[list[Any], list[tuple[int, torch.Tensor]]]:
        """Remove an object from every frame.

        The other objects' results stay as they are until the next propagation (which tracks
        again from the earliest prompt: they were computed with this object present).

        Args:
            strict: raise on an unknown obj_id (else return unchanged).
            need_output: also return the logits of every frame where the removed object
                had prompts (the remaining objects' masks there).

        Returns:
            ``(obj_ids, updated_frames)``: the remaining ids and ``[(frame_idx, masks)]``.

        Raises:
            RuntimeError: with ``strict``, an unknown obj_id (SAM 2's message).
        """
        state = self._checked_state(inference_state)
        if obj_id not in state.track_ids:
            if strict:
                raise RuntimeError(f"Cannot remove object id {obj_id} as it doesn't exist. "
                                   f"All existing object ids: {list(state.obj_ids)}.")
            return list(state.obj_ids), []
        # SAM 2's updated frames: those where the removed object had prompts (the others'
        # masks there may change). Removing the last object resets the session, as there.
        touched = sorted(t for t, objs in state.prompted.items() if obj_id in objs)
        if len(state.obj_ids) == 1:
            state.forget_objects()
            return [], []
        state.drop_object(obj_id)
        for table in (state.prompts, state.prompted):
            for frame_idx in list(table):
                table[frame_idx].pop(obj_id, None)  # type: ignore[attr-defined]
                if not table[frame_idx]:
                    del table[frame_idx]
        # The other objects were tracked beside this one (overlaps, identities): their kept
        # states are no longer those of the current prompts.
        for record in state.passes.values():
            record.valid_end = 0
        updated: list[tuple[int, torch.Tensor]] = []
        if need_output:
            updated = [(t, self._frame_logits(state, t)) for t in touched]
        return list(state.obj_ids), updated

    # ------------------------------------------------------------------ propagation
    def propagate_in_video_preflight(self, inference_state: InferenceState) -> None:
        """Check that there is something to propagate.

        Raises:
            RuntimeError: no object has a prompt (SAM 2's message).
        """
        state = self._checked_state(inference_state)
        if not state.prompted:
            raise RuntimeError("No input points or masks are provided for any object; please "
                               "add inputs first.")

    def propagate_in_video(
        self,
        inference_state: InferenceState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[int, list[Any], torch.Tensor]]:
        """Track every object through the video, one frame at a time (a generator).

        Args:
            start_frame_idx: the first frame; None: the earliest prompted frame forward, the
                latest prompted frame backward. Forward from past the last frame yields
                nothing, as in SAM 2.
            max_frame_num_to_track: frames after the first at most (None: to the end).
            reverse: run backward in time; starting at frame 0 yields nothing.

        Yields:
            ``(frame_idx, obj_ids, masks)`` per frame, masks (len(obj_ids), 1, H, W)
            float32 logits at the video's resolution.

        Raises:
            RuntimeError: no prompts (see :meth:`propagate_in_video_preflight`).
            ValueError: a negative start frame, a backward start past the last frame, or a
                negative frame count.
        """
        self.propagate_in_video_preflight(inference_state)
        state = inference_state
        n = state.num_frames
        direction = BACKWARD if reverse else FORWARD
        if start_frame_idx is None:
            start_frame_idx = max(state.prompted) if reverse else min(state.prompted)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = n
        if max_frame_num_to_track < 0:
            raise ValueError(f"max_frame_num_to_track: expected >= 0, got "
                             f"{max_frame_num_to_track}")
        if not reverse and _is_index(start_frame_idx) and start_frame_idx >= n:
            return  # SAM 2: nothing after the last frame
        start = self._checked_frame_idx(state, start_frame_idx, "start_frame_idx")
        if reverse:
            if start == 0:
                return  # SAM 2: nothing before frame 0
            end = max(start - max_frame_num_to_track, 0)
            order = range(start, end - 1, -1)
        else:
            end = min(start + max_frame_num_to_track, n - 1)
            order = range(start, end + 1)
        yield from self._run_pass(state, direction, list(order))

    # ------------------------------------------------------------------ SAM 2's helpers
    def _apply_non_overlapping_constraints(self, pred_masks: torch.Tensor) -> torch.Tensor:
        """SAM 2's helper (``tools/vos_inference.py`` calls it): on each pixel only the
        highest-scoring object keeps its score, the others get at most -10.

        Args:
            pred_masks: (N, 1, H, W) float logits of N objects.
        """
        return keep_highest_score(pred_masks)

    def _get_orig_video_res_output(self, inference_state: InferenceState,
                                   any_res_masks: torch.Tensor
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 2's helper: (N, 1, h, w) logits resized to the video's resolution, with the
        non-overlapping constraint when ``non_overlap_masks`` is set.

        Returns:
            ``(any_res_masks, video_res_masks)``, both on the state's device.
        """
        state = self._checked_state(inference_state)
        any_res_masks = any_res_masks.to(state.device)
        hw = (state.video_height, state.video_width)
        video_res = any_res_masks if tuple(any_res_masks.shape[-2:]) == hw else F.interpolate(
            any_res_masks, hw, mode="bilinear", align_corners=False)
        if self.non_overlap_masks:
            video_res = keep_highest_score(video_res)
        return any_res_masks, video_res

    def _obj_id_to_idx(self, inference_state: InferenceState, obj_id: Any) -> int:
        """SAM 2's helper: an object's obj_idx (its row in every returned mask tensor).

        Raises:
            ValueError: an unknown obj_id (SAM 2 would add the object; here an object comes
                with its first prompt).
        """
        state = self._checked_state(inference_state)
        self._known(state, obj_id)
        return state.obj_ids.index(obj_id)

    def _obj_idx_to_id(self, inference_state: InferenceState, obj_idx: int) -> Any:
        """SAM 2's helper: the obj_id of row ``obj_idx``."""
        return self._checked_state(inference_state)["obj_idx_to_id"][obj_idx]

    def _get_obj_num(self, inference_state: InferenceState) -> int:
        """SAM 2's helper: the number of objects in the session."""
        return len(self._checked_state(inference_state).obj_ids)

    # ------------------------------------------------------------------ internals
    def _checked_state(self, inference_state: Any) -> InferenceState:
        if not isinstance(inference_state, InferenceState):
            raise TypeError("inference_state: expected the object returned by init_state(), "
                            f"got {type(inference_state).__name__}")
        if inference_state.settings_epoch != self._settings_epoch:
            # The model or the overlap rule changed since these states were kept.
            for record in inference_state.passes.values():
                record.valid_end = 0
            inference_state.settings_epoch = self._settings_epoch
        inference_state.sync()
        return inference_state

    @staticmethod
    def _checked_frame_idx(state: InferenceState, frame_idx: Any,
                           name: str = "frame_idx") -> int:
        if not _is_index(frame_idx):
            raise ValueError(f"{name}: expected a frame index (an int), got {frame_idx!r}")
        if not 0 <= frame_idx < state.num_frames:
            raise ValueError(f"{name} {frame_idx}: out of range; the video has "
                             f"{state.num_frames} frames (0..{state.num_frames - 1})")
        return int(frame_idx)

    @staticmethod
    def _known(state: InferenceState, obj_id: Any) -> None:
        if obj_id not in state.track_ids:
            raise ValueError(f"obj_id {obj_id!r}: no such object (objects: "
                             f"{list(state.obj_ids)})")

    @staticmethod
    def _points_in_pixels(state: InferenceState, points: Any, labels: Any,
                          normalize_coords: bool, what: str = "points"
                          ) -> tuple[np.ndarray | None, np.ndarray | None]:
        if points is None:
            return None, None
        if isinstance(points, torch.Tensor):
            points = points.detach().cpu().numpy()
        try:
            xy = np.asarray(points, dtype=np.float32)
        except (TypeError, ValueError):
            raise PromptError(f"{what}: expected (P, 2) numbers, got {points!r}") from None
        xy = xy.reshape(-1, 2) if xy.ndim == 3 and xy.shape[0] == 1 else xy
        if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0:
            raise PromptError(f"{what}: expected (P, 2) XY coordinates, got shape {xy.shape}")
        if not np.isfinite(xy).all():
            raise PromptError(f"{what}: expected finite numbers (got NaN or infinity)")
        if not normalize_coords:
            if (xy < 0).any() or (xy > 1).any():
                raise PromptError(f"{what}: with normalize_coords=False coordinates are "
                                  "fractions of the frame, expected in [0, 1]")
            xy = xy * np.array([state.video_width, state.video_height], np.float32)
        lab = None
        if labels is not None:
            if isinstance(labels, torch.Tensor):
                labels = labels.detach().cpu().numpy()
            lab = np.asarray(labels).reshape(-1)
            if lab.shape != (len(xy),):
                raise PromptError(f"labels: expected one label per point ({len(xy)}), got "
                                  f"{lab.size}")
            if not np.isin(lab, (0, 1)).all():
                raise PromptError("labels: expected 1 (positive) or 0 (negative) for each "
                                  "point")
            lab = lab.astype(np.int64)
        if what == "points":
            # A click exactly on the right/bottom edge (x == W) is on the last pixel.
            outside = ((xy < 0).any(axis=1) | (xy[:, 0] > state.video_width)
                       | (xy[:, 1] > state.video_height))
            if outside.any():
                raise PromptError(f"points: a point lies outside the {state.video_width}x"
                                  f"{state.video_height} frame")
            xy = np.minimum(xy, np.array([state.video_width - 1e-3, state.video_height - 1e-3],
                                         np.float32))
        return xy, lab

    def _add_prompt(self, state: InferenceState, frame_idx: int, obj_id: Any,
                    prompts: ObjectPrompts) -> tuple[int, list[Any], torch.Tensor]:
        """Decode one object's prompt on one frame and keep it as its prompted result.

        Clicks on a frame where the object has a mask refine it: its low-res logits go in as
        the mask prompt (then negative clicks alone are a valid correction).
        """
        known = obj_id in state.track_ids
        current = self._output(state, frame_idx, obj_id) if known else None
        refine = None
        if prompts.mask is None and current is not None \
                and current.low_res_logits is not None and current.status is TrackStatus.ACTIVE:
            refine = current.low_res_logits
        track_id = state.track_ids[obj_id] if known else state.next_track_id
        # Checked before anything changes: a bad prompt leaves the session as it was.
        prompt = Prompt(mask=prompts.mask, box_xyxy=prompts.box_xyxy,
                        points_xy=prompts.points_xy, point_labels=prompts.point_labels,
                        obj_id=track_id, mask_logits=refine)
        prompt.checked((state.video_height, state.video_width))
        if not known:
            state.add_object(obj_id)
        tracker = self._tracker()
        tracker.step(state.frames[frame_idx])
        state.visited.add(frame_idx)
        tracker.add_prompt(prompt)
        track = tracker.state.tracks[track_id]
        state.prompts.setdefault(frame_idx, {})[obj_id] = prompts
        state.prompted.setdefault(frame_idx, {})[obj_id] = track.copy()
        self._invalidate(state, frame_idx)
        return frame_idx, list(state.obj_ids), self._frame_logits(state, frame_idx)

    def _tracker(self) -> VideoTracker:
        cfg = self.config
        return VideoTracker(self.segmenter, cfg.tracker, cfg.prompt, seed=cfg.seed)

    @staticmethod
    def _invalidate(state: InferenceState, frame_idx: int) -> None:
        """Prompts on ``frame_idx`` changed: kept states from there on (in each pass's own
        time) no longer follow from the prompts."""
        n = state.num_frames
        fwd, bwd = state.passes[FORWARD], state.passes[BACKWARD]
        fwd.valid_end = min(fwd.valid_end, frame_idx)
        bwd.valid_end = min(bwd.valid_end, n - 1 - frame_idx)

    def _run_pass(self, state: InferenceState, direction: str,
                  order: list[int]) -> Iterator[tuple[int, list[Any], torch.Tensor]]:
        """Drive a tracker over ``order`` (consecutive frames, one direction), yielding each.

        The tracker starts from the kept state before ``order[0]`` when it is valid, else
        from the newest valid kept state (re-tracking the frames in between without yielding
        them), else empty at the pass's first prompted frame.
        """
        n = state.num_frames
        record = state.passes[direction]

        def u_of(t: int) -> int:  # the pass's own time
            return t if direction == FORWARD else n - 1 - t

        def t_of(u: int) -> int:
            return u if direction == FORWARD else n - 1 - u

        prompted_u = sorted(u_of(t) for t in state.prompted)
        first_u = u_of(order[0])
        # Where to begin: right after the newest valid kept state before first_u, or, when
        # none is valid, at the pass's first prompted frame (nothing before it to carry).
        begin_u = first_u
        snapshot: Snapshot | None = None
        if prompted_u and first_u > prompted_u[0]:
            begin_u = prompted_u[0]
            for u in range(min(first_u, record.valid_end) - 1, prompted_u[0] - 1, -1):
                snapshot = self._load_state(state, direction, t_of(u))
                if snapshot is not None:
                    begin_u = u + 1
                    break
        tracker = self._tracker()
        if snapshot is not None:
            tracker.restore(snapshot.tracker)
        else:
            # Nothing is carried into the pass's first prompted frame: the (empty) states
            # before it are valid whatever the prompts.
            record.valid_end = max(record.valid_end, begin_u)
            tracker.restore(TrackerState(frame_idx=begin_u - 1,
                                         rng=np.random.default_rng(self.config.seed)))
        if begin_u < first_u:
            logger.info("%s pass: tracking frames %d..%d again first (their kept states "
                        "predate the latest prompts)", direction, t_of(begin_u),
                        t_of(first_u - 1))
        given = {u_of(t): [objs[o] for o in state.obj_ids if o in objs]
                 for t, objs in state.prompted.items()}
        frames_u = range(begin_u, u_of(order[-1]) + 1)
        # The only frame loop: the tracker's own, advanced one frame per yield (the model
        # runs under as_configured, the caller's code between yields does not).
        frames = (state.frames[t_of(u)] for u in frames_u)
        results = tracker.track(frames, given=given)
        for u in frames_u:
            t = t_of(u)
            with as_configured():
                next(results)
                state.visited.add(t)
                self._keep_state(state, direction, t, tracker.state)
                if record.valid_end >= u:
                    record.valid_end = u + 1
                output = (self._frame_logits(state, t, (direction, tracker.state))
                          if u >= first_u else None)
            if output is not None:
                yield t, list(state.obj_ids), output

    def _keep_state(self, state: InferenceState, direction: str, frame_idx: int,
                    tracker_state: TrackerState) -> None:
        data = snapshot_bytes(take_snapshot(tracker_state, {}, {}))
        state.states.put(f"{direction}:{frame_idx}", data)
        record = state.passes[direction]
        record.frames.add(frame_idx)
        record.tracks_at[frame_idx] = frozenset(tracker_state.tracks)

    @staticmethod
    def _load_state(state: InferenceState, direction: str, frame_idx: int) -> Snapshot | None:
        data = state.states.get(f"{direction}:{frame_idx}")
        if data is None:
            return None
        snapshot = snapshot_from_bytes(data, f"{direction} state of frame {frame_idx}")
        # Objects removed since this state was kept are dropped from it.
        live = set(state.track_ids.values())
        snapshot.tracker.tracks = {k: v for k, v in snapshot.tracker.tracks.items()
                                   if k in live}
        return snapshot

    def _output(self, state: InferenceState, frame_idx: int, obj_id: Any) -> Track | None:
        """One object's current result on one frame (see the package docstring), or None."""
        return self._outputs(state, frame_idx, [obj_id])[obj_id]

    def _outputs(self, state: InferenceState, frame_idx: int, obj_ids: Sequence[Any],
                 live: tuple[str, TrackerState] | None = None) -> dict[Any, Track | None]:
        """Each object's current result on one frame, reading each kept state at most once.

        Args:
            live: (direction, tracker state) of a pass standing on this frame: read in place
                of that direction's kept state (the same content, without decoding it).
        """
        kept: dict[str, dict[int, Track]] = {}

        def tracks_of(direction: str) -> dict[int, Track]:
            if direction not in kept:
                if live is not None and live[0] == direction:
                    kept[direction] = live[1].tracks
                else:
                    snapshot = self._load_state(state, direction, frame_idx)
                    kept[direction] = {} if snapshot is None else snapshot.tracker.tracks
            return kept[direction]

        out: dict[Any, Track | None] = {}
        for obj_id in obj_ids:
            out[obj_id] = state.prompted.get(frame_idx, {}).get(obj_id)
            if out[obj_id] is None:
                direction = state.output_direction(obj_id, frame_idx)
                if direction is not None:
                    out[obj_id] = tracks_of(direction).get(state.track_ids[obj_id])
        return out

    def _frame_logits(self, state: InferenceState, frame_idx: int,
                      live: tuple[str, TrackerState] | None = None) -> torch.Tensor:
        """(len(obj_ids), 1, H, W) float32 logits of every object on one frame."""
        hw = (state.video_height, state.video_width)
        out = torch.full((len(state.obj_ids), 1, *hw), NO_OBJ_SCORE, dtype=torch.float32)
        tracks = self._outputs(state, frame_idx, state.obj_ids, live)
        masks: dict[int, np.ndarray] = {}
        for obj_idx, obj_id in enumerate(state.obj_ids):
            track = tracks[obj_id]
            if track is None or track.status is not TrackStatus.ACTIVE or not track.mask.any():
                continue
            out[obj_idx, 0] = video_logits(track, hw)
            masks[obj_idx] = track.mask
        if self.fill_hole_area > 0 and masks:
            limit = hole_area_pixels(self.fill_hole_area, hw)
            # Where masks must not overlap, a hole is filled only where no other object is.
            taken = np.logical_or.reduce(list(masks.values())) \
                if self.non_overlap_masks and len(masks) > 1 else None
            for obj_idx, mask in masks.items():
                filled = fill_small_holes(mask, limit)
                if taken is not None:
                    filled &= ~taken
                if filled.any():
                    out[obj_idx, 0][torch.from_numpy(filled)] = FILLED_HOLE_SCORE
        return out.to(state.device)

    def _has_embedding(self, state: InferenceState, frame_idx: int) -> bool:
        return self.store.key(state.frames[frame_idx]) in self.store.cache

    def _stored_embedding(self, state: InferenceState,
                          frame_idx: int) -> ImageEmbedding | None:
        return self.store.get(state.frames[frame_idx])


def _is_index(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


def _checked_obj_id(obj_id: Any) -> Any:
    if not _is_index(obj_id):
        raise PromptError(f"obj_id: expected an int, got {obj_id!r}")
    return int(obj_id)
