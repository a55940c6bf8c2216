"""SAM 2's video-predictor API on the streaming tracker: prompt any frame, correct, propagate
forward and backward, re-propagate at decoder speed.

Code written for ``sam2.build_sam.build_sam2_video_predictor`` runs with its import line and
config name changed::

    from vos import build_sam2_video_predictor
    predictor = build_sam2_video_predictor("repvit", "weights/repvit_sam.pt", device="cpu")
    state = predictor.init_state("video.mp4")
    _, obj_ids, logits = predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1,
                                                         points=[[210, 350]], labels=[1])
    for frame_idx, obj_ids, logits in predictor.propagate_in_video(state):
        masks = logits[:, 0] > 0

How it maps onto :class:`~vos.tracker.VideoTracker` (the one frame loop; nothing here steps
through frames on its own):

- A prompt on frame k is decoded at once on k's embedding (from the :class:`EmbeddingStore`),
  through the tracker's own prompt path. Where the object already has a mask on k, its low-res
  logits go in as the mask prompt, so a click refines that mask (as SAM 2 does). The decoded
  result is kept as the object's *prompted result* on k.
- A pass runs a fresh tracker over the frames in time order (forward) or reversed order
  (backward). On every frame that holds prompted results, the tracker takes them in place of
  the propagated ones (``VideoTracker.step(..., given=...)``, applied where a prompt would
  be), so a correction persists through every re-propagation -- SAM 2 1.x recomputes and
  loses it (sam2 issues #546, #719). Objects enter at their own first prompted frame.
- After each frame the tracker's state is kept (a few hundred KB per object, in a bounded
  :class:`~vos.embedding_store.SpillCache` that spills to disk). A pass that starts at frame s
  continues from the state of frame s-1 when that state is still valid for the current
  prompts; otherwise it re-tracks silently from the newest valid state. Together with the
  embedding store, re-propagating after a correction re-encodes no stored frame.
- An object's output on frame t: its prompted result on t; else, for t at or after its first
  prompted frame, the forward pass's result (the backward pass's if there is none); before
  its first prompted frame, the backward pass's. Absent or LOST objects get SAM 2's
  ``NO_OBJ_SCORE`` (-1024) everywhere.

Deviations from SAM 2, each on purpose:

- ``reverse=True`` with ``start_frame_idx=None`` starts at the *latest* prompted frame, not the
  earliest, so that every object enters the backward pass at its own frame (with all prompts
  on one frame, as in SAM 2's notebook, the two are the same).
- New objects may be added after tracking started (SAM 2 asks for ``reset_state``).
- Negative clicks alone are a prompt only where the object already has a mask on that frame
  (they refine it); on a frame where it has none they select nothing, and are refused.
- ``obj_id`` is any int; the tracker numbers objects 1, 2, ... in the order they were added,
  and overlaps between objects are resolved by the tracker's rule (``tracker.overlap``).
- Frames are read lazily and never all loaded; ``offload_video_to_cpu``,
  ``offload_state_to_cpu`` and ``async_loading_frames`` are accepted for compatibility and
  change nothing (frames and states live on the CPU already, embeddings in the store).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from repvit_sam.utils.transforms import ResizeLongestSide
from vos.config import RunConfig, load_config
from vos.embedding_store import EmbeddingStore, SpillCache, StoredSegmenter, model_key_of
from vos.io.resume_state import Snapshot, snapshot_bytes, snapshot_from_bytes, take_snapshot
from vos.io.sources import FrameSource, SourceError, open_source
from vos.tracker import VideoTracker
from vos.types import Prompt, PromptError, Track, TrackerState, TrackStatus

logger = logging.getLogger(__name__)

__all__ = ["NO_OBJ_SCORE", "InferenceState", "VideoPredictor", "build_sam2_video_predictor"]

# SAM 2's logit for "no object here" (sam2.modeling.sam2_base.NO_OBJ_SCORE).
NO_OBJ_SCORE = -1024.0
# Logits of pixels whose sign the tracker changed (overlap resolution) are pushed just past 0,
# so that ``logits > 0`` is exactly the tracker's mask.
_SIGN_MARGIN = 1e-3
_IMG_SIZE = 1024

FORWARD, BACKWARD = "forward", "backward"


@contextlib.contextmanager
def _exact_precision() -> Iterator[None]:
    """Run the model as configured, whatever autocast block the caller is in.

    SAM 2 users wrap their calls in ``torch.autocast(..., dtype=torch.bfloat16)``; here that
    would silently change exact mode's masks (and the kept states' dtype). Reduced precision
    is the model's own fast mode (``model.fast_mode``), not the caller's block.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        stack.enter_context(torch.inference_mode())
        yield


def _exact(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a predictor method to run under :func:`_exact_precision`."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _exact_precision():
            return method(*args, **kwargs)

    return wrapper


@dataclass
class ObjectPrompts:
    """The prompts of one object on one frame (video pixels).

    Attributes:
        points_xy: (P, 2) float32 XY in video pixels, or None.
        point_labels: (P,) int64, 1 positive / 0 negative, or None.
        box_xyxy: (4,) float32 XYXY in video pixels, or None.
        mask: (H, W) bool at the video's resolution, or None.
    """

    points_xy: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box_xyxy: np.ndarray | None = None
    mask: np.ndarray | None = None


class FrameReader:
    """Random access to a source's frames, read lazily (never all at once).

    Sequential reads, forward or backward, cost one decode per frame: forward reads continue
    the source's iterator; backward reads fill a small cache with the chunk of frames before.

    Args:
        source: an opened frame source with a known frame count.
        cache_frames: decoded frames kept (also the backward chunk size).
    """

    def __init__(self, source: FrameSource, cache_frames: int = 8) -> None:
        if source.info.num_frames is None:
            raise SourceError(f"{source.info.name}: a live source has no frames to revisit")
        self.source = source
        self.num_frames = int(source.info.num_frames)
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._cache_frames = max(2, cache_frames)
        self._iter: Iterator[np.ndarray] | None = None
        self._next = -1

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, frame_idx: int) -> np.ndarray:
        frame = self._cache.get(frame_idx)
        if frame is not None:
            self._cache.move_to_end(frame_idx)
            return frame
        if frame_idx + 1 < self.num_frames and (frame_idx + 1) in self._cache:
            # Reading backward: decode the chunk that ends here in one sequential read.
            start = max(0, frame_idx - self._cache_frames + 2)
            for idx in range(start, frame_idx + 1):
                self._read(idx)
            return self._cache[frame_idx]
        return self._read(frame_idx)

    def _read(self, frame_idx: int) -> np.ndarray:
        if frame_idx in self._cache:
            return self._cache[frame_idx]
        if self._iter is None or self._next != frame_idx:
            self._iter = self.source.frames(frame_idx, self.num_frames)
        try:
            frame = next(self._iter)
        except StopIteration:
            raise SourceError(f"{self.source.info.name}: frame {frame_idx} cannot be read "
                              f"(the video has {self.num_frames} frames)") from None
        self._next = frame_idx + 1
        self._cache[frame_idx] = frame
        while len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)
        return frame

    def close(self) -> None:
        self._cache.clear()
        self._iter = None
        self.source.close()


@dataclass
class _PassRecord:
    """What one direction's passes left: a state per frame, and how far it is valid.

    Frames are counted in the pass's own time: ``u = t`` forward, ``u = N - 1 - t`` backward,
    so both directions run "forward in u". States of frames ``u < valid_end`` were computed
    under the current prompts, without gaps from the pass's first prompted frame.
    """

    direction: str
    valid_end: int = 0
    frames: set[int] = field(default_factory=set)  # t with a kept state


@dataclass
class InferenceState:
    """Everything one video's session holds (SAM 2's ``inference_state``, typed).

    SAM 2 code reads a few keys of its dict; they work here too:
    ``state["num_frames"]``, ``["video_height"]``, ``["video_width"]``, ``["obj_ids"]``,
    ``["device"]``.

    Attributes:
        video_path: what ``init_state`` opened.
        frames: lazy random access to the frames.
        num_frames, video_height, video_width: the video's size.
        obj_ids: user object ids, in the order they were added (obj_idx = position).
        track_ids: user obj_id -> the tracker's id (1, 2, ... in order of addition).
        prompts: frame_idx -> obj_id -> the prompts given there.
        prompted: frame_idx -> obj_id -> the decoded prompted result (a tracker Track).
        passes: the forward and backward pass records.
        states: per-frame tracker states (key ``"<direction>:<frame_idx>"``).
        device: the model's device.
    """

    video_path: str
    frames: FrameReader
    num_frames: int
    video_height: int
    video_width: int
    states: SpillCache[bytes]
    device: torch.device
    obj_ids: list[Any] = field(default_factory=list)
    track_ids: dict[Any, int] = field(default_factory=dict)
    next_track_id: int = 1
    prompts: dict[int, dict[Any, ObjectPrompts]] = field(default_factory=dict)
    prompted: dict[int, dict[Any, Track]] = field(default_factory=dict)
    passes: dict[str, _PassRecord] = field(default_factory=lambda: {
        FORWARD: _PassRecord(FORWARD), BACKWARD: _PassRecord(BACKWARD)})

    _KEYS = ("num_frames", "video_height", "video_width", "obj_ids", "device")

    def __getitem__(self, key: str) -> Any:
        if key not in self._KEYS:
            raise KeyError(f"{key!r}: this inference state exposes {', '.join(self._KEYS)}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self._KEYS

    def first_prompt(self, obj_id: Any) -> int | None:
        """The earliest frame holding a prompt of ``obj_id`` (None without one)."""
        frames = [t for t, objs in self.prompted.items() if obj_id in objs]
        return min(frames) if frames else None


class VideoPredictor:
    """SAM 2.1's ``SAM2VideoPredictor`` API over :class:`VideoTracker` and an embedding store.

    Build it with :func:`build_sam2_video_predictor`. Every method takes and returns what
    SAM 2's does (see the module docstring for the few deliberate differences).

    Args:
        segmenter: the model (``encode``/``decode``), e.g. ``vos.models.build_segmenter``'s.
        config: tracker, prompt and store settings (``model`` names what the embeddings
            depend on).
        checkpoint_sha256: the checkpoint's hash (part of every embedding's store key).

    Example:
        >>> predictor = build_sam2_video_predictor("repvit", "weights/repvit_sam.pt")
        >>> state = predictor.init_state("frames/")
        >>> predictor.add_new_points_or_box(state, 0, 1, box=[100, 80, 220, 240])
        >>> results = {t: (ids, m) for t, ids, m in predictor.propagate_in_video(state)}
    """

    def __init__(self, segmenter: Any, config: RunConfig | None = None,
                 *, checkpoint_sha256: str | None = None) -> None:
        self.config = config or RunConfig()
        if getattr(self.config.model.fast_mode, "roi", False):
            raise ValueError("model.fast_mode with roi: the video predictor revisits frames in "
                             "any order, and an ROI crop depends on the frames before; use a "
                             "mode without roi")
        store_cfg = self.config.store
        self.store = EmbeddingStore(
            model_key_of(self.config.model, checkpoint_sha256),
            memory_mb=store_cfg.memory_mb, disk_mb=store_cfg.disk_mb,
            cache_dir=store_cfg.cache_dir, device=self._device_of(segmenter))
        self.segmenter = StoredSegmenter(segmenter, self.store)
        self.image_size = _IMG_SIZE

    @staticmethod
    def _device_of(segmenter: Any) -> torch.device:
        device = getattr(segmenter, "device", None)
        return torch.device(device) if device is not None else torch.device("cpu")

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return self._device_of(self.segmenter.inner)

    # ------------------------------------------------------------------ session
    def init_state(
        self,
        video_path: str | os.PathLike[str],
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
    ) -> InferenceState:
        """Open a video (file or frame folder) for prompting and propagation.

        Frames are read lazily: nothing is decoded or encoded until a prompt or a pass needs
        it. A folder's frames are taken in our reader's order (integer names numerically, as
        SAM 2 does; any other names by name).

        Args:
            video_path: a video file or a folder of frames.
            offload_video_to_cpu: accepted for SAM 2 code; frames always stay on the CPU.
            offload_state_to_cpu: accepted for SAM 2 code; per-frame states always live in
                CPU memory or the disk cache.
            async_loading_frames: accepted for SAM 2 code; frames are always read lazily.

        Raises:
            SourceError: a missing, unreadable or empty video or folder.
        """
        del offload_video_to_cpu, offload_state_to_cpu, async_loading_frames  # see docstring
        text = str(video_path)
        source = open_source(text)
        reader = FrameReader(source)
        h, w = source.info.image_hw
        store_cfg = self.config.store
        states: SpillCache[bytes] = SpillCache(
            bytes, bytes, len, memory_bytes=int(store_cfg.state_memory_mb * (1 << 20)),
            disk_bytes=int(store_cfg.state_disk_mb * (1 << 20)), name="frame state")
        return InferenceState(video_path=text, frames=reader, num_frames=reader.num_frames,
                              video_height=h, video_width=w, states=states, device=self.device)

    def reset_state(self, inference_state: InferenceState) -> None:
        """Forget every object, prompt and result; keep the video (and the stored embeddings)."""
        state = self._checked_state(inference_state)
        state.obj_ids.clear()
        state.track_ids.clear()
        state.next_track_id = 1
        state.prompts.clear()
        state.prompted.clear()
        state.states.clear()
        state.passes = {FORWARD: _PassRecord(FORWARD), BACKWARD: _PassRecord(BACKWARD)}

    def close_state(self, inference_state: InferenceState) -> None:
        """Release a session's frames and states (its temporary state folder is removed)."""
        inference_state.frames.close()
        inference_state.states.close()

    # ------------------------------------------------------------------ prompts
    @_exact
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
            box_xyxy = self._points_in_pixels(state, corners.reshape(2, 2), None,
                                              normalize_coords, what="box")[0].reshape(4)
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

    @_exact
    def add_new_mask(
        self,
        inference_state: InferenceState,
        frame_idx: int,
        obj_id: int,
        mask: Any,
    ) -> tuple[int, list[Any], torch.Tensor]:
        """Give one object's mask on one frame.

        Args:
            mask: (H, W) bool (or 0/1 numbers) at the video's resolution.

        Returns:
            ``(frame_idx, obj_ids, masks)`` as :meth:`add_new_points_or_box`.

        Raises:
            ValueError: a frame index out of range, a mask of another shape, an empty mask.
        """
        state = self._checked_state(inference_state)
        frame_idx = self._checked_frame_idx(state, frame_idx)
        obj_id = _checked_obj_id(obj_id)
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask)
        hw = (state.video_height, state.video_width)
        if mask.ndim != 2 or mask.shape != hw:
            raise PromptError(f"mask: expected a 2-D mask of shape {hw} (the video's height "
                              f"and width), got shape {mask.shape}")
        if mask.dtype != bool:
            if not np.isfinite(mask.astype(np.float64)).all():
                raise PromptError("mask: expected finite values (got NaN or infinity)")
            mask = mask > 0.5 if mask.dtype.kind == "f" else mask > 0
        return self._add_prompt(state, frame_idx, obj_id, ObjectPrompts(mask=mask))

    @_exact
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

    @_exact
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
                                   f"All existing object ids: {state.obj_ids}.")
            return list(state.obj_ids), []
        # SAM 2's updated frames: those where the removed object had prompts (the others'
        # masks there may change). Removing the last object resets the session, as there.
        touched = sorted(t for t, objs in state.prompted.items() if obj_id in objs)
        if len(state.obj_ids) == 1:
            self.reset_state(state)
            return [], []
        state.obj_ids.remove(obj_id)
        del state.track_ids[obj_id]
        for table in (state.prompts, state.prompted):
            for frame_idx in list(table):
                table[frame_idx].pop(obj_id, None)
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
                latest prompted frame backward.
            max_frame_num_to_track: frames after the first at most (None: to the end).
            reverse: run backward in time; starting at frame 0 yields nothing.

        Yields:
            ``(frame_idx, obj_ids, masks)`` per frame, masks (len(obj_ids), 1, H, W)
            float32 logits at the video's resolution.

        Raises:
            RuntimeError: no prompts (see :meth:`propagate_in_video_preflight`).
            ValueError: a start frame out of range or a negative frame count.
        """
        self.propagate_in_video_preflight(inference_state)
        state = inference_state
        n = state.num_frames
        direction = BACKWARD if reverse else FORWARD
        if start_frame_idx is None:
            start_frame_idx = max(state.prompted) if reverse else min(state.prompted)
        start = self._checked_frame_idx(state, start_frame_idx, "start_frame_idx")
        if max_frame_num_to_track is None:
            max_frame_num_to_track = n
        if max_frame_num_to_track < 0:
            raise ValueError(f"max_frame_num_to_track: expected >= 0, got "
                             f"{max_frame_num_to_track}")
        if reverse:
            if start == 0:
                return  # SAM 2: nothing before frame 0
            end = max(start - max_frame_num_to_track, 0)
            order = range(start, end - 1, -1)
        else:
            end = min(start + max_frame_num_to_track, n - 1)
            order = range(start, end + 1)
        yield from self._run_pass(state, direction, list(order))

    # ------------------------------------------------------------------ internals
    def _checked_state(self, inference_state: Any) -> InferenceState:
        if not isinstance(inference_state, InferenceState):
            raise TypeError("inference_state: expected the object returned by init_state(), "
                            f"got {type(inference_state).__name__}")
        return inference_state

    @staticmethod
    def _checked_frame_idx(state: InferenceState, frame_idx: Any,
                           name: str = "frame_idx") -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, int | np.integer):
            raise ValueError(f"{name}: expected an int, got {frame_idx!r}")
        if not 0 <= frame_idx < state.num_frames:
            raise ValueError(f"{name} {frame_idx}: out of range; the video has "
                             f"{state.num_frames} frames (0..{state.num_frames - 1})")
        return int(frame_idx)

    @staticmethod
    def _known(state: InferenceState, obj_id: Any) -> None:
        if obj_id not in state.track_ids:
            raise ValueError(f"obj_id {obj_id!r}: no such object (objects: {state.obj_ids})")

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
                raise PromptError(f"labels: expected {len(xy)} labels for {len(xy)} points, "
                                  f"got shape {np.asarray(labels).shape}")
            if not np.isin(lab, (0, 1)).all():
                raise PromptError("labels: expected 1 (positive) or 0 (negative)")
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
            state.obj_ids.append(obj_id)
            state.track_ids[obj_id] = track_id
            state.next_track_id += 1
        tracker = self._tracker()
        tracker.step(state.frames[frame_idx])
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
        # runs under _exact_precision, the caller's code between yields does not).
        frames = (state.frames[t_of(u)] for u in frames_u)
        results = tracker.track(frames, given=given)
        for u in frames_u:
            t = t_of(u)
            with _exact_precision():
                next(results)
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
        state.passes[direction].frames.add(frame_idx)

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
        """One object's current result on one frame (see the module docstring), or None."""
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
                elif frame_idx in state.passes[direction].frames:
                    snapshot = self._load_state(state, direction, frame_idx)
                    kept[direction] = {} if snapshot is None else snapshot.tracker.tracks
                else:
                    kept[direction] = {}
            return kept[direction]

        out: dict[Any, Track | None] = {}
        for obj_id in obj_ids:
            out[obj_id] = state.prompted.get(frame_idx, {}).get(obj_id)
            first = state.first_prompt(obj_id)
            if out[obj_id] is not None or first is None:
                continue
            track_id = state.track_ids[obj_id]
            for direction in (FORWARD, BACKWARD) if frame_idx >= first else (BACKWARD,):
                track = tracks_of(direction).get(track_id)
                if track is not None:
                    out[obj_id] = track
                    break
        return out

    def _frame_logits(self, state: InferenceState, frame_idx: int,
                      live: tuple[str, TrackerState] | None = None) -> torch.Tensor:
        """(len(obj_ids), 1, H, W) float32 logits of every object on one frame."""
        hw = (state.video_height, state.video_width)
        out = torch.full((len(state.obj_ids), 1, *hw), NO_OBJ_SCORE, dtype=torch.float32)
        tracks = self._outputs(state, frame_idx, state.obj_ids, live)
        for obj_idx, obj_id in enumerate(state.obj_ids):
            track = tracks[obj_id]
            if track is None or track.status is not TrackStatus.ACTIVE or not track.mask.any():
                continue
            out[obj_idx, 0] = _video_logits(track, hw)
        return out.to(state.device)


def _video_logits(track: Track, image_hw: tuple[int, int]) -> torch.Tensor:
    """(H, W) float32 logits of a track: its decoder logits upsampled as SAM does, with the
    sign set by the tracker's final mask (which overlap resolution may have trimmed)."""
    mask = torch.from_numpy(track.mask)
    if track.low_res_logits is None:
        return torch.where(mask, torch.tensor(1.0), torch.tensor(-1.0))
    low = track.low_res_logits.detach().float().cpu().reshape(1, 1, 256, 256)
    input_hw = ResizeLongestSide.get_preprocess_shape(image_hw[0], image_hw[1], _IMG_SIZE)
    up = F.interpolate(low, (_IMG_SIZE, _IMG_SIZE), mode="bilinear", align_corners=False)
    up = up[..., : input_hw[0], : input_hw[1]]
    logits = F.interpolate(up, image_hw, mode="bilinear", align_corners=False)[0, 0]
    return torch.where(mask, logits.clamp(min=_SIGN_MARGIN), logits.clamp(max=-_SIGN_MARGIN))


def _checked_obj_id(obj_id: Any) -> Any:
    if isinstance(obj_id, bool) or not isinstance(obj_id, int | np.integer):
        raise PromptError(f"obj_id: expected an int, got {obj_id!r}")
    return int(obj_id)


# ---------------------------------------------------------------------- factory
def build_sam2_video_predictor(
    config_file: str,
    ckpt_path: str | os.PathLike[str] | None = None,
    device: str = "cuda",
    mode: str = "eval",
    hydra_overrides_extra: Sequence[str] = (),
    apply_postprocessing: bool = True,
    vos_optimized: bool = False,
    **kwargs: Any,
) -> VideoPredictor:
    """SAM 2's factory, on RepViT-SAM (or any model type of ``sam_model_registry``).

    Args:
        config_file: a model type (``"repvit"``, ``"vit_t"``, ``"vit_b"``, ...) or a
            repvit-vos YAML config (``configs/*.yaml``).
        ckpt_path: the checkpoint; None takes ``model.checkpoint`` of the config or the
            ``REPVIT_SAM_CHECKPOINT`` environment variable.
        device: as in SAM 2 ("cuda" by default); on a machine without CUDA the default falls
            back to the CPU with a warning.
        mode: "eval" (the only mode; SAM 2 accepts "train" for fine-tuning).
        hydra_overrides_extra: config overrides, ``section.key=value`` (SAM 2's ``++``
            prefixes are accepted and ignored).
        apply_postprocessing, vos_optimized: accepted for SAM 2 code; no effect.
        **kwargs: ignored, as SAM 2 passes them to Hydra.

    Raises:
        ValueError: an unknown model type or config, no checkpoint, an unavailable device.
    """
    from repvit_sam import sam_model_registry
    from vos.models import CHECKPOINT_ENV, build_segmenter, checkpoint_digest, load_model

    del apply_postprocessing, vos_optimized, kwargs  # see docstring
    if mode != "eval":
        raise ValueError(f"mode={mode!r}: the video predictor runs in eval mode only")
    overrides = [o.lstrip("+") for o in hydra_overrides_extra]
    text = str(config_file)
    if text in sam_model_registry:
        cfg = load_config(None, [f"model.model_type={text}", *overrides])
    elif text.endswith((".yaml", ".yml")):
        if "sam2" in Path(text).name and not Path(text).is_file():
            raise ValueError(f"config_file {text!r}: a SAM 2 config; repvit-vos takes a model "
                             f"type ({', '.join(sorted(sam_model_registry))}) or one of its "
                             "own YAML configs")
        cfg = load_config(text, overrides)
    else:
        raise ValueError(f"config_file {text!r}: expected a model type "
                         f"({', '.join(sorted(sam_model_registry))}) or a YAML config file")
    checkpoint = ckpt_path or cfg.model.checkpoint or os.environ.get(CHECKPOINT_ENV)
    if device == "cuda" and not torch.cuda.is_available():
        logger.warning("device='cuda': no CUDA device here; running on the CPU")
        device = "cpu"
    model_cfg = dataclasses.replace(cfg.model, checkpoint=None if checkpoint is None
                                    else str(checkpoint), device=str(device))
    cfg = dataclasses.replace(cfg, model=model_cfg)
    segmenter = build_segmenter(model_cfg, load_model(model_cfg))
    return VideoPredictor(segmenter, cfg, checkpoint_sha256=checkpoint_digest(model_cfg))
