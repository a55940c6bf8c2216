"""What the video predictor hands back: SAM 2-style logits at the video's resolution.

Pure functions on tensors and masks (no session state), so each is tested on its own:

- :func:`video_logits` turns a tracker :class:`~vos.types.Track` into (H, W) logits whose sign
  is exactly the tracker's mask;
- :func:`fill_small_holes` is SAM 2's ``fill_hole_area`` post-processing, on the final mask;
- :func:`keep_highest_score` is SAM 2's non-overlapping constraint on stacked logits.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from repvit_sam.utils.transforms import ResizeLongestSide
from vos.types import Track

__all__ = ["NO_OBJ_SCORE", "fill_small_holes", "keep_highest_score", "video_logits"]

# SAM 2's logit for "no object here" (sam2.modeling.sam2_base.NO_OBJ_SCORE).
NO_OBJ_SCORE = -1024.0
# Logits of pixels whose sign the tracker changed (overlap resolution) are pushed just past 0,
# so that ``logits > 0`` is exactly the tracker's mask.
SIGN_MARGIN = 1e-3
# SAM 2 gives a filled hole this small positive score.
FILLED_HOLE_SCORE = 0.1
# The score SAM 2's non-overlapping constraint leaves a pixel's losers at most.
OVERLAP_LOSER_MAX = -10.0
IMAGE_SIZE = 1024
# SAM 2 measures hole areas on its 256x256 low-res mask, which spans the whole frame.
LOW_RES_AREA = 256 * 256


def video_logits(track: Track, image_hw: tuple[int, int]) -> torch.Tensor:
    """(H, W) float32 logits of a track at the video's resolution.

    The decoder's low-res logits are upsampled as SAM does (to the padded 1024 frame, cropped
    to the image, then to the video size); where the tracker's final mask (which overlap
    resolution may have trimmed) disagrees with their sign, they are moved just past 0, so
    ``logits > 0`` equals ``track.mask``.

    Args:
        track: the object's result on the frame; ``mask`` (H, W) bool, ``low_res_logits``
            (1, 256, 256) float32 in the model frame, or None (then +1 / -1 logits).
        image_hw: (H, W) of the video.
    """
    mask = torch.from_numpy(np.ascontiguousarray(track.mask))
    if track.low_res_logits is None:
        return torch.where(mask, torch.tensor(1.0), torch.tensor(-1.0))
    low = track.low_res_logits.detach().float().cpu().reshape(1, 1, 256, 256)
    input_hw = ResizeLongestSide.get_preprocess_shape(image_hw[0], image_hw[1], IMAGE_SIZE)
    up = F.interpolate(low, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    up = up[..., : input_hw[0], : input_hw[1]]
    logits = F.interpolate(up, image_hw, mode="bilinear", align_corners=False)[0, 0]
    return torch.where(mask, logits.clamp(min=SIGN_MARGIN), logits.clamp(max=-SIGN_MARGIN))


def hole_area_pixels(fill_hole_area: int, image_hw: tuple[int, int]) -> float:
    """SAM 2's ``fill_hole_area`` (pixels of its 256x256 low-res mask, which covers the whole
    frame) as an area in video pixels: ``fill_hole_area * H * W / 256**2``."""
    return fill_hole_area * image_hw[0] * image_hw[1] / LOW_RES_AREA


def fill_small_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """The background pixels that SAM 2's hole filling would turn into foreground.

    A hole is a connected region of background (8-connectivity, as SAM 2 counts it) of at
    most ``max_area`` pixels; like SAM 2, a small background region at the frame's border
    counts too.

    Args:
        mask: (H, W) bool, the object's mask.
        max_area: largest hole filled, in pixels of ``mask``.

    Returns:
        (H, W) bool, the pixels filled (False where ``mask`` is True).
    """
    if max_area <= 0 or mask.all():
        return np.zeros_like(mask, dtype=bool)
    background = np.ascontiguousarray(~mask, dtype=np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] <= max_area
    small[0] = False  # label 0 is the mask itself
    if not small[1:count].any():
        return np.zeros_like(mask, dtype=bool)
    return small[labels]


def keep_highest_score(scores: torch.Tensor) -> torch.Tensor:
    """SAM 2's non-overlapping constraint: each pixel stays with its highest-scoring object.

    On every pixel, the object with the largest score (the first one on a tie) keeps it; every
    other object's score there is lowered to at most -10 (sigmoid ~4.5e-5). One object is
    returned unchanged.

    Args:
        scores: (N, 1, H, W) float logits of N objects, any device.

    Returns:
        (N, 1, H, W) logits of the same dtype and device.
    """
    count = scores.shape[0]
    if count <= 1:
        return scores
    winner = scores.argmax(dim=0, keepdim=True)
    rows = torch.arange(count, device=scores.device).reshape(count, 1, 1, 1)
    return torch.where(winner == rows, scores, scores.clamp(max=OVERLAP_LOSER_MAX))
