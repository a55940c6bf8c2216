"""Which pass tracks which object on which frame, in a run of both directions.

SAM 2's video-predictor rule (``vos/video_predictor.py`` follows it too): objects enter at
their own first prompted frame; a forward pass gives each object's masks from that frame on,
a backward pass (a fresh tracker over the time-reversed frames, from the latest prompted frame
down to frame 0) those before it. :class:`PassPlan` says which prompts each pass applies and
which objects each frame takes from the backward pass; :func:`selected` and :func:`merged`
make a frame's result of the two. ``vos.pipeline.run_video`` drives the passes (through
``VideoTracker.track``, the one frame loop) and writes the merged frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vos.types import FrameResult, Prompt, PromptError

__all__ = ["DIRECTIONS", "PassPlan", "merged", "selected"]

DIRECTIONS = ("forward", "backward", "both")


@dataclass(frozen=True)
class PassPlan:
    """Which pass tracks which object on which frame (SAM 2's video-predictor rule).

    The forward pass runs from frame 0 (nothing is tracked before the first prompt) and
    applies every prompt on its frame: an object enters at its first prompted frame, and a
    later prompt replaces its mask there. The backward pass runs a fresh tracker over the
    time-reversed frames from the latest prompted frame down to frame 0, with the same
    prompts. An object's result on frame t is its forward result for t >= its first prompted
    frame and its backward result before (``both``); ``backward`` takes every result from
    the backward pass (frames after the latest prompt stay empty), ``forward`` none.

    Attributes:
        direction: ``forward``, ``backward`` or ``both``; ``both`` without an object
            prompted after frame 0 is ``forward`` (nothing lies before any first prompt).
        prompts: frame_idx -> the prompts on that frame, each with its obj_id.
        first_frame: obj_id -> its first prompted frame.
        latest: the latest prompted frame (the backward pass starts there).
    """

    direction: str
    prompts: dict[int, list[Prompt]]
    first_frame: dict[int, int]
    latest: int

    @classmethod
    def of(cls, prompts: Mapping[int, Sequence[Prompt]], direction: str) -> PassPlan:
        """The plan of ``prompts`` (by frame, with ids) run in ``direction``.

        Raises:
            ValueError: an unknown direction, no prompt, or a prompt without obj_id.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
        by_frame = {int(t): list(ps) for t, ps in sorted(prompts.items()) if ps}
        if not by_frame:
            raise PromptError("no prompt to track")
        first: dict[int, int] = {}
        for t, frame_prompts in by_frame.items():
            for prompt in frame_prompts:
                if prompt.obj_id is None:
                    raise PromptError(f"frame {t}: a prompt without obj_id (number them with "
                                      "vos.io.prompt_input.prompt_plan)")
                first.setdefault(prompt.obj_id, t)
        if direction == "both" and max(first.values()) == 0:
            direction = "forward"
        return cls(direction, by_frame, first, max(by_frame))

    @property
    def forward_prompts(self) -> dict[int, list[Prompt]]:
        """The forward tracker's prompts, by frame_idx (none for ``backward``)."""
        return {} if self.direction == "backward" else self.prompts

    @property
    def backward_prompts(self) -> dict[int, list[Prompt]]:
        """The backward tracker's prompts, by its own frame_idx (``latest - t``)."""
        return {self.latest - t: ps for t, ps in self.prompts.items()}

    @property
    def backward_end(self) -> int:
        """Frames below this one take results from the backward pass (0: no backward pass)."""
        if self.direction == "backward":
            return self.latest + 1
        if self.direction == "both":
            return max(self.first_frame.values())
        return 0

    def backward_ids(self, frame_idx: int) -> list[int]:
        """The objects whose result on ``frame_idx`` comes from the backward pass."""
        if self.direction == "backward":
            return sorted(self.first_frame)
        if self.direction == "both":
            return sorted(o for o, first in self.first_frame.items() if first > frame_idx)
        return []


def selected(result: FrameResult, obj_ids: Sequence[int]) -> FrameResult:
    """``result`` with only the objects ``obj_ids`` (visible and LOST ones)."""
    keep = np.isin(result.obj_ids, np.asarray(obj_ids, np.int64))
    lost = result.lost_obj_ids[np.isin(result.lost_obj_ids, np.asarray(obj_ids, np.int64))]
    return dataclasses.replace(result, obj_ids=result.obj_ids[keep], masks=result.masks[keep],
                               scores=result.scores[keep], boxes_xyxy=result.boxes_xyxy[keep],
                               lost_obj_ids=lost)


def merged(forward: FrameResult, backward: FrameResult) -> FrameResult:
    """One frame's objects of both passes (disjoint ids), ids ascending.

    Raises:
        ValueError: the two results are of different frames or share an object.
    """
    if forward.frame_idx != backward.frame_idx or forward.image_hw != backward.image_hw:
        raise ValueError(f"frame {forward.frame_idx} {forward.image_hw} and frame "
                         f"{backward.frame_idx} {backward.image_hw}: not the same frame")
    ids = np.concatenate([forward.obj_ids, backward.obj_ids])
    order = np.argsort(ids, kind="stable")
    return FrameResult(
        frame_idx=forward.frame_idx,
        obj_ids=ids[order],
        masks=np.concatenate([forward.masks, backward.masks])[order],
        scores=np.concatenate([forward.scores, backward.scores])[order],
        boxes_xyxy=np.concatenate([forward.boxes_xyxy, backward.boxes_xyxy])[order],
        lost_obj_ids=np.sort(np.concatenate([forward.lost_obj_ids, backward.lost_obj_ids])),
    )
