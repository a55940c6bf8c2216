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

The modules: :mod:`~vos.video_predictor.predictor` (the API and the pass bookkeeping),
:mod:`~vos.video_predictor.state` (the session, typed and as SAM 2's dict),
:mod:`~vos.video_predictor.frames` (lazy frames), :mod:`~vos.video_predictor.outputs` (logits,
hole filling, the non-overlap rule) and :mod:`~vos.video_predictor.build` (the factory and
SAM 2's overrides). ``docs/sam2-video-predictor.md`` is the user's page.

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

Deviations from SAM 2 (sam2 1.1.0), each on purpose:

- ``reverse=True`` with ``start_frame_idx=None`` starts at the *latest* prompted frame, not the
  earliest, so that every object enters the backward pass at its own frame (with all prompts
  on one frame, as in SAM 2's notebook, the two are the same).
- Negative clicks alone are a prompt only where the object already has a mask on that frame
  (they refine it); on a frame where it has none they select nothing, and are refused. An
  empty mask prompt is refused too (nothing to track); SAM 2 tracks an absent object.
- ``obj_id`` is any int; the tracker numbers objects 1, 2, ... in the order they were added,
  and overlaps between objects are resolved by the tracker's rule (``tracker.overlap``; SAM
  2's ``non_overlap_masks`` sets it). SAM 2's outputs may overlap by default, ours do not.
- A backward start past the last frame, a negative start and a negative frame count raise
  (SAM 2 fails on the first two further in, and yields nothing for the third); a forward
  start past the last frame yields nothing, as in SAM 2.
- ``_obj_id_to_idx`` of an unknown id raises (SAM 2 adds an object without prompts).
- Frames are read lazily and never all loaded; ``offload_state_to_cpu`` and
  ``async_loading_frames`` change nothing (states live on the CPU already, embeddings in the
  store), ``offload_video_to_cpu`` only where ``inference_state["images"]`` puts its tensors.
- The model runs in float32 and eval mode; ``.half()`` and ``.train()`` raise.
"""

from __future__ import annotations

from vos.video_predictor.build import build_sam2_video_predictor
from vos.video_predictor.frames import FrameImages, FrameReader
from vos.video_predictor.outputs import NO_OBJ_SCORE
from vos.video_predictor.predictor import VideoPredictor
from vos.video_predictor.state import BACKWARD, FORWARD, InferenceState, ObjectPrompts

__all__ = [
    "BACKWARD",
    "FORWARD",
    "NO_OBJ_SCORE",
    "FrameImages",
    "FrameReader",
    "InferenceState",
    "ObjectPrompts",
    "VideoPredictor",
    "build_sam2_video_predictor",
]
