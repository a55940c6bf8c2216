"""Prompt strategies: how an object's prompts on the next frame come from its last state.

One strategy per ``prompt.kind`` (see :data:`STRATEGIES`); the tracker asks the configured one
for every prompt it builds: propagating an ACTIVE object, searching for a LOST one, and
turning a user's mask into the decoder call that yields its low-res logits. To add a
strategy, subclass :class:`PromptStrategy` here and register it in :data:`STRATEGIES`: the
config accepts its ``kind`` from then on and the tracker itself does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from repvit_sam.segmenter import DecodePrompts
from vos.motion import predicted_box
from vos.prompts import (
    background_points,
    expand_box,
    interior_points,
    jitter_box,
    mask_to_box,
    pad_points,
)
from vos.types import Track

if TYPE_CHECKING:  # vos.config validates prompt.kind against STRATEGIES: no import back
    from vos.config import PromptConfig


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's decoder prompt in frame pixels (either part may be absent).

    Attributes:
        box_xyxy: (4,) float32 XYXY, or None.
        points_xy: (P, 2) float32 XY, or None.
        point_labels: (P,) int64, 1 positive / 0 negative, or None.
    """

    box_xyxy: np.ndarray | None = None
    points_xy: np.ndarray | None = None
    point_labels: np.ndarray | None = None


def batch_prompts(
    prompts: Sequence[ObjectPrompt],
    mask_logits: torch.Tensor | None = None,
    *,
    multimask_output: bool = False,
) -> DecodePrompts:
    """The prompts of N objects as one batched decoder call.

    Every object must carry the same parts (all boxes or none, all points or none); point
    sets of different lengths are padded with label -1 ("not a point").

    Args:
        prompts: one per object.
        mask_logits: (N, 1, 256, 256) previous low-res logits, or None.
        multimask_output: 3 candidates per object.
    """
    boxes = None
    if prompts and prompts[0].box_xyxy is not None:
        boxes = np.stack([p.box_xyxy for p in prompts])  # type: ignore[misc]
    coords = labels = None
    if prompts and prompts[0].points_xy is not None:
        coords, labels = pad_points([(p.points_xy, p.point_labels) for p in prompts])  # type: ignore[misc]
    return DecodePrompts.of(boxes_xyxy=boxes, points_xy=coords, point_labels=labels,
                            mask_logits=mask_logits, multimask_output=multimask_output)


class PromptStrategy:
    """Box with a margin around the motion-predicted box, plus interior (and negative) points.

    The base strategy computes both parts; ``use_box`` and ``use_points`` say which reach
    the decoder (the previous low-res logits go too when ``prompt.use_prev_logits``).

    Args:
        config: the prompt settings.
    """

    kind = "box+points"
    use_box = True
    use_points = True

    def __init__(self, config: PromptConfig) -> None:
        self.config = config

    @property
    def prompts_anything(self) -> bool:
        """Whether propagation sends a box, points or logits at all."""
        return self.use_box or self.use_points or self.config.use_prev_logits

    def propagate(
        self,
        track: Track,
        others: Sequence[Track],
        image_hw: tuple[int, int],
        rng: np.random.Generator,
    ) -> ObjectPrompt:
        """The prompt of an ACTIVE track on the next frame.

        Args:
            track: the object, with its previous mask, box and velocity.
            others: the other ACTIVE tracks (their interiors can serve as negatives).
            image_hw: (H, W) of the frame.
            rng: the tracker's generator (box jitter).
        """
        pc = self.config
        dx, dy = (float(v) for v in track.velocity_xy)
        # Move last frame's box by the smoothed velocity, then give it a margin: the margin
        # absorbs the motion the constant-velocity model does not predict.
        box = expand_box(predicted_box(track, image_hw), pc.box_margin, image_hw)
        box = jitter_box(box, pc.box_jitter, rng, image_hw)
        positives = interior_points(track.mask, pc.num_points, track.box_xyxy) + np.array(
            [dx, dy], np.float32)
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
        h, w = image_hw
        points = np.concatenate([positives, negatives]).astype(np.float32)
        points[:, 0] = np.clip(points[:, 0], 0, w - 1)
        points[:, 1] = np.clip(points[:, 1], 0, h - 1)
        labels = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))]).astype(np.int64)
        return ObjectPrompt(
            box_xyxy=box if self.use_box else None,
            points_xy=points if self.use_points else None,
            point_labels=labels if self.use_points else None,
        )

    def reacquire(self, track: Track) -> ObjectPrompt:
        """The prompt that searches for a LOST track: its coasted box at the remembered size.

        A box as large as the search region would frame whatever big neighbour is near; the
        region only bounds where an answer may lie (``VideoTracker`` checks that).
        """
        return ObjectPrompt(box_xyxy=track.box_xyxy.astype(np.float32))

    def from_mask(self, mask: np.ndarray) -> ObjectPrompt:
        """The prompt whose decoding gives the low-res logits of a user-given mask.

        The mask is the truth on its frame; its box and inner points are decoded once, only
        to get logits to feed back as the next frame's mask prompt.
        """
        box = mask_to_box(mask)
        points = interior_points(mask, max(self.config.num_points, 1))
        return ObjectPrompt(box_xyxy=box, points_xy=points,
                            point_labels=np.ones(len(points), np.int64))


class BoxStrategy(PromptStrategy):
    """Only the box (with margin) and the previous logits."""

    kind = "box"
    use_points = False


class PointsStrategy(PromptStrategy):
    """Only the interior (and negative) points and the previous logits."""

    kind = "points"
    use_box = False


class MaskStrategy(PromptStrategy):
    """Only the previous low-res logits (``prompt.use_prev_logits`` must be on)."""

    kind = "mask"
    use_box = False
    use_points = False


STRATEGIES: dict[str, type[PromptStrategy]] = {
    cls.kind: cls for cls in (PromptStrategy, BoxStrategy, PointsStrategy, MaskStrategy)
}


def strategy_for(config: PromptConfig) -> PromptStrategy:
    """The strategy of ``config.kind``.

    Raises:
        ValueError: an unknown kind.
    """
    if config.kind not in STRATEGIES:
        raise ValueError(f"prompt.kind: expected one of {', '.join(STRATEGIES)}, got {config.kind!r}")
    return STRATEGIES[config.kind](config)
