"""ROI-crop encoding (fast mode ``roi``): encode only the part of the frame around the objects.

The encoder's cost grows with its input, the decoder's does not, and the tracked objects often
fill a small part of the frame. :class:`RoiSegmenter` wraps a segmenter whose encoder takes a
reduced input (``size512+nopad`` for ``roi+size512``): each frame it crops the union of the
objects' last boxes plus a margin, and encodes that crop. As long as the crop's long side is at
most S/1024 of the frame's, the objects get at least exact mode's pixels per embedding cell at
(S/1024)^2 of its encoder cost; the rest of the frame is not seen at all.

It speaks the tracker's segmenter protocol, so the tracker is unchanged:

- prompts (boxes, points) arrive in frame pixels and are shifted into the crop;
- low-res logits go in and come out in the *frame's* 256x256 frame (resampled through the
  crop's), so the tracker's stored logits stay valid when the crop moves;
- masks come back at the frame's size, zero outside the crop.

When a prompt reaches outside the crop (a new object, a re-acquisition search around a lost
one), the frame is encoded whole for that decode instead, so nothing outside the crop is ever
decoded against a wrong embedding. An approximation like every fast mode: check it with
``python -m vos.bench --agreement``.

It serves one stream: where the next crop goes depends on the calls before it. Calls from
several threads are nonetheless safe: each reads and updates that state whole, under a lock
(the model itself runs outside it, so threads still overlap), and a decode's result depends
only on its embedding and prompts, never on what another thread did meanwhile.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from repvit_sam.mask_upscale import CropMask
from repvit_sam.runtime.fast_mode import FastMode
from repvit_sam.segmenter import DecodePrompts, MaskPrediction, SegmenterWrapper

# Logit given to the frame outside the crop: far below SAM's threshold of 0 (background).
OUTSIDE_LOGIT = -20.0
LOW_RES = 256
MODEL_SIZE = 1024


@dataclass(frozen=True)
class RoiEmbedding:
    """One frame's embedding of a crop (or of the whole frame).

    Attributes:
        inner: the wrapped segmenter's embedding of ``frame[y0:y1, x0:x1]``.
        crop_xyxy: (x0, y0, x1, y1) integer crop in frame pixels.
        frame_hw: (H, W) of the frame.
        frame: the frame itself, for a whole-frame encode when a prompt leaves the crop.
    """

    inner: Any
    crop_xyxy: tuple[int, int, int, int]
    frame_hw: tuple[int, int]
    frame: np.ndarray

    @property
    def is_whole_frame(self) -> bool:
        return self.crop_xyxy == (0, 0, self.frame_hw[1], self.frame_hw[0])


def crop_around(
    boxes_xyxy: np.ndarray,
    frame_hw: tuple[int, int],
    *,
    margin: float = 0.5,
    min_side: int = 64,
    max_area_fraction: float = 0.6,
) -> tuple[int, int, int, int]:
    """The square crop that holds every box with a margin, or the whole frame.

    Crops are square so that the encoder always sees one input shape (S x S): the graph
    backends compile one graph per shape (~5 s each), and a crop that followed the objects'
    aspect ratio would need a new one on almost every frame.

    Args:
        boxes_xyxy: (N, 4) float XYXY in frame pixels (N >= 0).
        frame_hw: (H, W) of the frame.
        margin: added on each side, as a fraction of the union box's width/height.
        min_side: the crop is at least this many pixels wide and high (when the frame is).
        max_area_fraction: a crop larger than this fraction of the frame, or one that does
            not fit in it as a square, becomes the frame.

    Returns:
        (x0, y0, x1, y1) integers with x1 - x0 == y1 - y0 (or the whole frame), inside it.
    """
    h, w = frame_hw
    whole = (0, 0, w, h)
    if len(boxes_xyxy) == 0:
        return whole
    boxes = np.asarray(boxes_xyxy, np.float64)
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    side = int(np.ceil(max((1 + 2 * margin) * max(x1 - x0, y1 - y0), min_side)))
    if side > min(h, w) or side * side > max_area_fraction * h * w:
        return whole
    # Centred on the boxes, then shifted (not cut) to lie inside the frame.
    cx0 = int(np.clip(np.floor((x0 + x1 - side) / 2), 0, w - side))
    cy0 = int(np.clip(np.floor((y0 + y1 - side) / 2), 0, h - side))
    return cx0, cy0, cx0 + side, cy0 + side


def _low_res_grid(
    src_hw: tuple[int, int],
    src_offset_xy: tuple[int, int],
    dst_hw: tuple[int, int],
    dst_offset_xy: tuple[int, int],
) -> torch.Tensor:
    """grid_sample grid (1, 256, 256, 2) reading src low-res logits at dst low-res cells.

    Low-res cell (u, v) of an image of size (h, w) covers image pixels
    ``[u, u + 1) * 4 * max(h, w) / 1024``; the image itself starts at ``offset`` in the frame.
    """
    cell = torch.arange(LOW_RES, dtype=torch.float64) + 0.5
    dst_scale = 4.0 * max(dst_hw) / MODEL_SIZE  # frame pixels per dst cell
    src_scale = 4.0 * max(src_hw) / MODEL_SIZE
    # Frame pixel of each dst cell centre, then its src cell coordinate, then [-1, 1].
    xs = (cell * dst_scale + dst_offset_xy[0] - src_offset_xy[0]) / src_scale
    ys = (cell * dst_scale + dst_offset_xy[1] - src_offset_xy[1]) / src_scale
    gx = xs / LOW_RES * 2 - 1
    gy = ys / LOW_RES * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    return grid[None].float()


def resample_logits(
    logits: torch.Tensor,
    src: tuple[tuple[int, int], tuple[int, int]],
    dst: tuple[tuple[int, int], tuple[int, int]],
) -> torch.Tensor:
    """(N, C, 256, 256) low-res logits of image ``src`` re-expressed for image ``dst``.

    Args:
        logits: in the padded 1024 frame of the source image, at 1/4 scale.
        src: ((h, w), (x0, y0)) size of the source image and its offset in the frame.
        dst: the same for the destination image.

    Returns:
        (N, C, 256, 256) logits; cells outside the source image get ``OUTSIDE_LOGIT``.
    """
    n, c = logits.shape[:2]
    grid = _low_res_grid(src[0], src[1], dst[0], dst[1]).to(logits.device)
    flat = logits.reshape(n * c, 1, LOW_RES, LOW_RES) - OUTSIDE_LOGIT
    # Zero padding of (logits - OUTSIDE) reads OUTSIDE_LOGIT outside the source image.
    out = F.grid_sample(flat, grid.expand(n * c, -1, -1, -1), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    # The source's own padding region (beyond its h, w in the 1024 frame) is not image either.
    src_valid = _valid_cells(src[0])
    inside = F.grid_sample(src_valid[None, None].to(logits), grid, mode="nearest",
                           padding_mode="zeros", align_corners=False)
    out = out * inside
    return (out + OUTSIDE_LOGIT).reshape(n, c, LOW_RES, LOW_RES)


def _valid_cells(image_hw: tuple[int, int]) -> torch.Tensor:
    """(256, 256) 1 where a low-res cell lies on the image, 0 on its padding."""
    scale = MODEL_SIZE / max(image_hw) / 4.0
    rows = int(np.ceil(image_hw[0] * scale))
    cols = int(np.ceil(image_hw[1] * scale))
    valid = torch.zeros(LOW_RES, LOW_RES)
    valid[:rows, :cols] = 1.0
    return valid


class RoiSegmenter(SegmenterWrapper):
    """A segmenter that encodes a crop around the objects (see the module docstring).

    Args:
        inner: the segmenter that encodes crops (``encode``/``decode``), e.g. a
            ``BackendSegmenter`` in mode ``size512+nopad``.
        margin: crop margin on each side, as a fraction of the objects' union box.
        min_side: smallest crop side in pixels.
        max_area_fraction: a crop above this fraction of the frame is the whole frame.

    Example:
        >>> inner = BackendSegmenter(sam, mode="size512+nopad")
        >>> tracker = VideoTracker(RoiSegmenter(inner))
    """

    def __init__(
        self,
        inner: Any,
        *,
        margin: float = 0.5,
        min_side: int = 64,
        max_area_fraction: float = 0.6,
    ) -> None:
        super().__init__(inner)
        self.margin = margin
        self.min_side = min_side
        self.max_area_fraction = max_area_fraction
        # Boxes seen by the decodes since the last encode (the next crop holds them all).
        self._boxes = np.zeros((0, 4), np.float32)
        self._seen: list[np.ndarray] = []
        self._whole: RoiEmbedding | None = None  # the last frame's whole-frame fallback
        self.crop_encodes = 0
        self.whole_encodes = 0
        # Guards the stream state above (module docstring); never held while the model runs.
        self._state_lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"roi({getattr(self.inner, 'name', type(self.inner).__name__)})"

    @property
    def mode(self) -> FastMode:
        """The fast mode, e.g. ``roi+size512`` (the inner segmenter's, with ``roi``)."""
        inner = getattr(self.inner, "mode", None)
        inner = inner if isinstance(inner, FastMode) else FastMode(pad_square=False)
        return dataclasses.replace(inner, pad_square=False, roi=True)

    def stream_state(self) -> dict[str, np.ndarray]:
        """The boxes the next crop must hold (those seen since the last encode, or before)."""
        with self._state_lock:
            seen = np.concatenate(self._seen) if self._seen else np.zeros((0, 4), np.float32)
            own = {"roi.boxes": self._boxes.copy(), "roi.seen": seen.astype(np.float32),
                   "roi.has_seen": np.array(bool(self._seen))}
        return {**own, **super().stream_state()}

    def load_stream_state(self, state: dict[str, np.ndarray]) -> None:
        own = {k: v for k, v in state.items() if k.startswith("roi.")}
        super().load_stream_state({k: v for k, v in state.items() if k not in own})
        if own:
            boxes = np.asarray(own["roi.boxes"], np.float32).reshape(-1, 4)
            seen = np.asarray(own["roi.seen"], np.float32).reshape(-1, 4)
            with self._state_lock:
                self._boxes = boxes
                self._seen = [seen] if bool(own["roi.has_seen"]) else []

    def encode(self, image: np.ndarray) -> RoiEmbedding:
        """Encode the crop around the last known object boxes ((H, W, 3) uint8 RGB frame)."""
        frame_hw = (int(image.shape[0]), int(image.shape[1]))
        with self._state_lock:
            if self._seen:
                self._boxes = np.concatenate(self._seen)
                self._seen = []
            self._whole = None
            boxes = self._boxes
        crop = crop_around(boxes, frame_hw, margin=self.margin, min_side=self.min_side,
                           max_area_fraction=self.max_area_fraction)
        return self._encode(image, crop)

    def _encode(self, image: np.ndarray, crop: tuple[int, int, int, int]) -> RoiEmbedding:
        x0, y0, x1, y1 = crop
        frame_hw = (int(image.shape[0]), int(image.shape[1]))
        inner = self.inner.encode(np.ascontiguousarray(image[y0:y1, x0:x1]))
        embedding = RoiEmbedding(inner, crop, frame_hw, image)
        with self._state_lock:
            if embedding.is_whole_frame:
                self.whole_encodes += 1
            else:
                self.crop_encodes += 1
        return embedding

    def decode_prompts(self, embedding: RoiEmbedding, prompts: DecodePrompts) -> MaskPrediction:
        """``SamPredictor.decode`` in frame coordinates; masks are (N, C, H, W) of the frame."""
        if not isinstance(embedding, RoiEmbedding):
            raise TypeError(f"embedding: expected RoiEmbedding from encode(), got "
                            f"{type(embedding).__name__}")
        prompts = prompts.to("cpu")
        boxes = None if prompts.boxes_xyxy is None else prompts.boxes_xyxy.numpy()
        points = None if prompts.points_xy is None else prompts.points_xy.numpy()
        labels = None if prompts.point_labels is None else prompts.point_labels.numpy()
        if not embedding.is_whole_frame and not self._inside(embedding, boxes, points, labels):
            # A prompt outside the crop: decode against the whole frame, encoded once. Read
            # and kept through a local: another thread may replace self._whole meanwhile.
            with self._state_lock:
                whole = self._whole
            if whole is None or whole.frame is not embedding.frame:
                h, w = embedding.frame_hw
                whole = self._encode(embedding.frame, (0, 0, w, h))
                with self._state_lock:
                    self._whole = whole
            embedding = whole
        x0, y0, x1, y1 = embedding.crop_xyxy
        offset = torch.tensor([x0, y0], dtype=torch.float32)
        crop_hw = (y1 - y0, x1 - x0)
        frame_geometry = (embedding.frame_hw, (0, 0))
        crop_geometry = (crop_hw, (x0, y0))
        logits = prompts.mask_logits
        if logits is not None and not embedding.is_whole_frame:
            logits = resample_logits(logits, frame_geometry, crop_geometry)
        pred = self.inner.decode(
            embedding.inner,
            prompts.replace(
                boxes_xyxy=None if prompts.boxes_xyxy is None
                else prompts.boxes_xyxy - offset.repeat(2),
                points_xy=None if prompts.points_xy is None else prompts.points_xy - offset,
                mask_logits=logits,
            ),
        )
        if embedding.is_whole_frame:
            self._remember(pred, (0, 0), boxes)
            return pred
        low_res = resample_logits(pred.low_res_logits.float().cpu(), crop_geometry,
                                  frame_geometry)
        self._remember(pred, (x0, y0), boxes)
        return MaskPrediction(None, pred.iou_scores, low_res,
                              lazy=_PastedMasks(pred, (x0, y0), embedding.frame_hw))

    def _inside(
        self,
        embedding: RoiEmbedding,
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
    ) -> bool:
        """Whether every box and every real point lies within the crop."""
        x0, y0, x1, y1 = embedding.crop_xyxy
        if boxes is not None and len(boxes):
            if (boxes[:, 0] < x0).any() or (boxes[:, 1] < y0).any():
                return False
            if (boxes[:, 2] > x1).any() or (boxes[:, 3] > y1).any():
                return False
        if points is not None and points.size:
            real = labels != -1 if labels is not None else np.ones(points.shape[:2], bool)
            xy = points[real]
            if ((xy[:, 0] < x0) | (xy[:, 0] >= x1) | (xy[:, 1] < y0) | (xy[:, 1] >= y1)).any():
                return False
        return True

    def _remember(
        self, pred: MaskPrediction, offset_xy: tuple[int, int], boxes: np.ndarray | None
    ) -> None:
        """Note the prompt boxes and each object's best-scored candidate's extent."""
        found = [] if boxes is None else boxes.reshape(-1, 4).tolist()
        best = torch.argmax(pred.iou_scores.cpu(), dim=1).tolist()
        for crop in pred.candidate_masks(list(enumerate(best))):
            if crop is None:
                continue
            rows = np.flatnonzero(crop.crop.any(axis=1))
            if len(rows):
                cols = np.flatnonzero(crop.crop.any(axis=0))
                x0, y0 = crop.x0 + offset_xy[0], crop.y0 + offset_xy[1]
                found.append([x0 + int(cols[0]), y0 + int(rows[0]),
                              x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1])
        if found:
            with self._state_lock:
                self._seen.append(np.array(found, np.float32))


class _PastedMasks:
    """A crop's prediction placed in its frame, computed on demand."""

    def __init__(self, inner: MaskPrediction, offset_xy: tuple[int, int],
                 frame_hw: tuple[int, int]) -> None:
        self.inner, self.offset_xy, self.frame_hw = inner, offset_xy, frame_hw

    def full(self) -> torch.Tensor:
        crop = self.inner.masks.cpu()
        x0, y0 = self.offset_xy
        masks = torch.zeros((*crop.shape[:2], *self.frame_hw), dtype=torch.bool)
        masks[..., y0 : y0 + crop.shape[-2], x0 : x0 + crop.shape[-1]] = crop
        return masks

    def crop(self, obj_idx: int, cand_idx: int) -> CropMask | None:
        (found,) = self.inner.candidate_masks([(obj_idx, cand_idx)])
        if found is None:
            return None
        return CropMask(found.x0 + self.offset_xy[0], found.y0 + self.offset_xy[1], found.crop)
