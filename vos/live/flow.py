"""Masks carried from the latest model result to later frames by dense optical flow (issue 29).

The model runs on one frame in several when the camera is faster than it; every frame in
between gets the latest result's masks moved along the motion between the two frames.
OpenCV's DIS flow (Kroeger et al., ECCV 2016) is computed on small grey frames, backwards
(from the frame shown to the model's frame), so each shown pixel looks up where it came from
and every mask is resampled once, at full size, inside its own region only.

Measured on the 5 DAVIS sequences of ``../shared/data/davis-mini`` (ground-truth mask of frame
t carried to t+k, mean J against the ground truth of t+k; this 2-core AMD EPYC):

======================  =========  =====  =====  =====  =====  =====
flow (long side)        ms a pair  k=1    k=2    k=3    k=5    k=10
======================  =========  =====  =====  =====  =====  =====
hold the mask           --         0.732  0.636  0.576  0.491  0.363
DIS ultrafast, 320      0.6        0.786  0.722  0.670  0.610  0.495
DIS ultrafast, 427      1.2        0.798  0.734  0.667  0.611  0.520
DIS fast, 427           2.3        0.786  0.711  0.642  0.585  0.507
DIS medium, 427         11.2       0.826  0.758  0.687  0.601  0.528
======================  =========  =====  =====  =====  =====  =====

Ultrafast at about 430 pixels is the default: "fast" is slower and worse, "medium" gains
0.02-0.03 J for nine times the time. Chaining frame-to-frame flows instead of one flow from
the model's frame tied at k <= 5 and lost at k >= 10 (0.49 / 0.25 at k = 10 / 30 against
0.52 / 0.31), as resampling errors accumulate; so the flow always goes straight to the
keyframe. ``python -m vos.bench --only live`` re-measures the table with this module.

Example:
    >>> carrier = MaskCarrier()
    >>> key = carrier.prepare(keyframe_image)
    >>> shown = carrier.carry(model_result, key, carrier.prepare(new_image))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from vos.types import FrameResult

__all__ = ["FLOW_PRESETS", "FlowFrame", "MaskCarrier", "warp_masks"]

FLOW_PRESETS: dict[str, int] = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass(frozen=True)
class FlowFrame:
    """A frame as the flow sees it.

    Attributes:
        gray: (h, w) uint8, the frame in grey at the flow's working size.
        image_hw: (H, W) of the full frame.
    """

    gray: np.ndarray
    image_hw: tuple[int, int]


class MaskCarrier:
    """Moves a model result's masks onto a later frame along the optical flow between them.

    Ids, scores and LOST ids are the model's, untouched: the flow only moves pixels, it never
    adds, removes or re-identifies an object (an object carried out of the frame keeps its
    id with an empty mask until the next model result).

    Not thread-safe (one DIS instance): give each thread its own carrier.

    Args:
        preset: DIS preset, one of ``FLOW_PRESETS`` (module docstring: "ultrafast").
        flow_size: long side in pixels the flow is computed at (smaller frames stay as they
            are); the masks are resampled at full size all the same.

    Raises:
        ValueError: an unknown preset or a flow size below 16.
    """

    def __init__(self, *, preset: str = "ultrafast", flow_size: int = 432) -> None:
        if preset not in FLOW_PRESETS:
            raise ValueError(f"preset {preset!r}: expected one of {', '.join(FLOW_PRESETS)}")
        if flow_size < 16:
            raise ValueError(f"flow_size: expected >= 16 pixels, got {flow_size}")
        self.preset = preset
        self.flow_size = flow_size
        self._dis = cv2.DISOpticalFlow_create(FLOW_PRESETS[preset])  # type: ignore[attr-defined]

    def prepare(self, image: np.ndarray) -> FlowFrame:
        """The grey, downscaled frame the flow works on (once per frame, ~0.3 ms at 640x480).

        Args:
            image: (H, W, 3) uint8 RGB.
        """
        h, w = image.shape[:2]
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        scale = self.flow_size / max(h, w)
        if scale < 1.0:
            size = (max(round(w * scale), 8), max(round(h * scale), 8))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return FlowFrame(gray, (int(h), int(w)))

    def flow(self, key: FlowFrame, target: FlowFrame) -> np.ndarray:
        """Backward flow: for each pixel of ``target``, its displacement to ``key``.

        Returns:
            (h, w, 2) float32 XY displacement in the working size's pixels: the target's
            pixel p was at p + flow[p] on the keyframe.

        Raises:
            ValueError: frames of different sizes.
        """
        if key.gray.shape != target.gray.shape or key.image_hw != target.image_hw:
            raise ValueError(f"flow between frames of sizes {key.image_hw} and "
                             f"{target.image_hw}: expected one size")
        return self._dis.calc(target.gray, key.gray, None)

    def carry(self, result: FrameResult, key: FlowFrame, target: FlowFrame,
              *, frame_idx: int | None = None) -> FrameResult:
        """The keyframe's objects moved onto the target frame.

        Args:
            result: the model's objects on the keyframe.
            key: the keyframe, prepared.
            target: the frame to carry the masks to, prepared.
            frame_idx: the carried result's ``frame_idx`` (default: the keyframe's).

        Returns:
            A result with the same ids, scores and LOST ids, the masks moved and their
            boxes recomputed ((0, 0, 0, 0) for a mask carried out of the frame).
        """
        frame_idx = result.frame_idx if frame_idx is None else frame_idx
        if len(result) == 0:
            return dataclasses.replace(result, frame_idx=frame_idx)
        masks = warp_masks(result.masks, result.boxes_xyxy, self.flow(key, target))
        return dataclasses.replace(result, frame_idx=frame_idx, masks=masks,
                                   boxes_xyxy=_boxes_of(masks))


def warp_masks(masks: np.ndarray, boxes_xyxy: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Resample masks along a backward flow, each inside the region it can reach.

    Args:
        masks: (N, H, W) bool on the keyframe, full size.
        boxes_xyxy: (N, 4) float32 XYXY of the masks in full-size pixels (exclusive right and
            bottom edges).
        flow: (h, w, 2) float32 backward flow at the working size (:meth:`MaskCarrier.flow`).

    Returns:
        (N, H, W) bool: pixel p of object i is set where the keyframe's mask is set at
        p + flow(p) (bilinear, threshold one half).
    """
    n, big_h, big_w = masks.shape
    h, w = flow.shape[:2]
    sx, sy = w / big_w, h / big_h  # full -> working size
    # Where every working-size pixel came from on the keyframe, in working-size pixels.
    cols = np.arange(w, dtype=np.float32)[None, :]
    rows = np.arange(h, dtype=np.float32)[:, None]
    src_x, src_y = cols + flow[..., 0], rows + flow[..., 1]
    out = np.zeros((n, big_h, big_w), bool)
    for i in range(n):
        x0, y0, x1, y1 = (float(v) for v in boxes_xyxy[i])
        if x1 <= x0 or y1 <= y0:
            continue
        # Working-size pixels whose source lies in the object's box (one pixel of slack
        # for the interpolation): the carried mask cannot reach outside them.
        inside = ((src_x >= x0 * sx - 1) & (src_x <= x1 * sx + 1)
                  & (src_y >= y0 * sy - 1) & (src_y <= y1 * sy + 1))
        ys, xs = np.nonzero(inside.any(1))[0], np.nonzero(inside.any(0))[0]
        if len(ys) == 0:
            continue
        # That region at full size, one working pixel wider for the flow's interpolation.
        rx0 = max(int((xs[0] - 1) / sx), 0)
        rx1 = min(int(np.ceil((xs[-1] + 2) / sx)), big_w)
        ry0 = max(int((ys[0] - 1) / sy), 0)
        ry1 = min(int(np.ceil((ys[-1] + 2) / sy)), big_h)
        out[i, ry0:ry1, rx0:rx1] = _warp_region(masks[i], (x0, y0, x1, y1), flow,
                                                (rx0, ry0, rx1, ry1), sx, sy)
    return out


def _warp_region(mask: np.ndarray, box_xyxy: tuple[float, float, float, float],
                 flow: np.ndarray, region: tuple[int, int, int, int], sx: float,
                 sy: float) -> np.ndarray:
    """One mask's resampling inside a full-size region (x0, y0, x1, y1) of the target."""
    x0, y0, x1, y1 = region
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    # The flow sampled at the region's pixel centres, as cv2.resize would upscale it (the
    # same half-pixel convention), without upscaling the whole field.
    map_x = np.broadcast_to(((xs + 0.5) * sx - 0.5)[None, :], (len(ys), len(xs)))
    map_y = np.broadcast_to(((ys + 0.5) * sy - 0.5)[:, None], (len(ys), len(xs)))
    local = cv2.remap(flow, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y),
                      cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # The source is the keyframe mask's own box (one pixel wider), read with offsets.
    h, w = mask.shape
    bx0, by0 = max(int(box_xyxy[0]) - 1, 0), max(int(box_xyxy[1]) - 1, 0)
    bx1, by1 = min(int(np.ceil(box_xyxy[2])) + 1, w), min(int(np.ceil(box_xyxy[3])) + 1, h)
    source = mask[by0:by1, bx0:bx1].astype(np.uint8) * np.uint8(255)
    src_x = (xs[None, :] + local[..., 0] / sx - bx0).astype(np.float32)
    src_y = (ys[:, None] + local[..., 1] / sy - by0).astype(np.float32)
    moved = cv2.remap(source, src_x, src_y, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return moved >= 128


def _boxes_of(masks: np.ndarray) -> np.ndarray:
    """(N, 4) float32 XYXY of each mask (exclusive right/bottom edges; zeros if empty)."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if len(rows):
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes
