"""The tracker's motion model: a smoothed box-edge velocity with a remembered object size.

Pure functions over one :class:`~vos.types.Track`, so they can be checked on tiny arrays:
the velocity is measured on the box edge that moves most on each axis (an object sliding
behind an occluder or out of the frame keeps its true speed although one edge stops), and a
LOST track's box coasts on it at the object's remembered full size.
"""

from __future__ import annotations

import numpy as np

from vos.prompts import clip_box
from vos.types import Track, TrackStatus


def shift_mask(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Translate a (H, W) bool mask by whole pixels (motion compensation of the previous mask)."""
    ix, iy = round(dx), round(dy)
    if ix == 0 and iy == 0:
        return mask
    h, w = mask.shape
    out = np.zeros_like(mask)
    src = mask[max(0, -iy) : h - max(0, iy), max(0, -ix) : w - max(0, ix)]
    out[max(0, iy) : max(0, iy) + src.shape[0], max(0, ix) : max(0, ix) + src.shape[1]] = src
    return out


def predicted_box(track: Track, image_hw: tuple[int, int]) -> np.ndarray:
    """A track's last box moved by its velocity, clipped: where to prompt on the next frame."""
    dx, dy = (float(v) for v in track.velocity_xy)
    return clip_box(track.box_xyxy + np.array([dx, dy, dx, dy], np.float32), image_hw)


def coast(track: Track, image_hw: tuple[int, int]) -> np.ndarray:
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


def update_motion(track: Track, new_box: np.ndarray, smoothing: float) -> None:
    """Fold an accepted box into the track's velocity, anchor edges and remembered size.

    Args:
        track: the track, before its box is replaced by ``new_box``.
        new_box: (4,) float32 XYXY of the accepted mask.
        smoothing: weight of the previous velocity (``tracker.velocity_smoothing``).
    """
    if track.status is TrackStatus.ACTIVE:
        delta = new_box - track.box_xyxy
        for axis in (0, 1):
            lo, hi = delta[axis], delta[axis + 2]
            track.anchor_xy[axis] = 0 if abs(lo) >= abs(hi) else 1
            moved = lo if abs(lo) >= abs(hi) else hi
            track.velocity_xy[axis] = smoothing * track.velocity_xy[axis] + (1 - smoothing) * moved
    else:
        # Coming back from LOST: the coasted box says nothing about the real motion.
        track.velocity_xy = np.zeros(2, np.float32)
    size = new_box[2:] - new_box[:2]
    # A sudden shrink is occlusion or leaving the frame, not the object getting smaller:
    # keep the remembered size then, so the coasting box keeps the object's extent.
    if track.size_wh.prod() == 0 or size.prod() >= 0.9 * track.size_wh.prod():
        track.size_wh = size.astype(np.float32)
    else:
        track.size_wh = np.maximum(size, 0.97 * track.size_wh).astype(np.float32)
