"""ROI-crop encoding: crop choice, logit resampling between frames, and tracking through it.

The segmenter inside is a colour segmenter that works on whatever image it is given (frame or
crop), so the wrapper's coordinate shifts, mask pasting and logit resampling are what decides
whether the tracked masks land on the object.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from repvit_sam.runtime import FastMode
from repvit_sam.runtime.roi import OUTSIDE_LOGIT, RoiSegmenter, crop_around, resample_logits
from repvit_sam.segmenter import DecodePrompts, ImageEmbedding, MaskPrediction, SegmenterBase
from vos.tracker import VideoTracker

FRAME_HW = (240, 320)
SIDE = 30


class ColourSegmenter(SegmenterBase):
    """Segments the non-grey pixels inside each box prompt (grown by 8 px) of its image."""

    mask_threshold = 0.0

    def __init__(self) -> None:
        self.encoded_hw: list[tuple[int, int]] = []
        self.logit_iou: list[float] = []  # previous-mask prompt vs this image's object

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        self.encoded_hw.append(image.shape[:2])
        scale = 1024 / max(image.shape[:2])
        input_hw = (round(image.shape[0] * scale), round(image.shape[1] * scale))
        return ImageEmbedding(torch.as_tensor(image), image.shape[:2], input_hw)

    def decode_prompts(self, embedding, prompts: DecodePrompts) -> MaskPrediction:
        boxes_xyxy, mask_logits = prompts.boxes_xyxy, prompts.mask_logits
        image = embedding.features.numpy()
        h, w = image.shape[:2]
        foreground = np.abs(image.astype(int) - 128).sum(-1) > 60
        scale = 256 / max(h, w)
        grid_hw = (round(h * scale), round(w * scale))
        if mask_logits is not None:
            # Where the mask prompt says the object was, in this image's low-res frame.
            prompt = torch.as_tensor(mask_logits)[0, 0, : grid_hw[0], : grid_hw[1]] > 0
            fg = F.interpolate(torch.as_tensor(foreground)[None, None].float(), grid_hw)[0, 0] > 0
            self.logit_iou.append(float((prompt & fg).sum() / max(int((prompt | fg).sum()), 1)))
        masks = []
        for box in np.asarray(boxes_xyxy):
            x0, y0 = max(int(box[0]) - 8, 0), max(int(box[1]) - 8, 0)
            x1, y1 = min(int(np.ceil(box[2])) + 8, w), min(int(np.ceil(box[3])) + 8, h)
            mask = np.zeros((h, w), bool)
            mask[y0:y1, x0:x1] = foreground[y0:y1, x0:x1]
            masks.append(mask)
        masks_t = torch.as_tensor(np.stack(masks))[:, None]
        # Low-res logits in this image's padded 1024 frame, as SAM lays them out.
        small = F.interpolate(masks_t.float(), grid_hw)
        low_res = torch.full((len(masks), 1, 256, 256), -10.0)
        low_res[..., : small.shape[-2], : small.shape[-1]] = small * 20 - 10
        return MaskPrediction(masks_t, torch.ones(len(masks), 1), low_res)


def _frame(t: int) -> tuple[np.ndarray, np.ndarray]:
    frame = np.full((*FRAME_HW, 3), 128, np.uint8)
    x, y = 40 + 6 * t, 60 + 3 * t
    frame[y : y + SIDE, x : x + SIDE] = (230, 40, 40)
    gt = np.zeros(FRAME_HW, bool)
    gt[y : y + SIDE, x : x + SIDE] = True
    return frame, gt


def test_crop_around_boxes() -> None:
    boxes = np.array([[100, 100, 140, 120], [150, 110, 160, 130]], np.float32)
    # Union (100, 100, 160, 130): its long side 60 plus half on each side, as a square
    # centred on it (one encoder input shape for every crop).
    assert crop_around(boxes, FRAME_HW, margin=0.5) == (70, 55, 190, 175)
    assert crop_around(np.zeros((0, 4)), FRAME_HW) == (0, 0, 320, 240)
    # Too big a share of the frame, or no square fits: encode it whole.
    assert crop_around(np.array([[10, 10, 300, 200]]), FRAME_HW) == (0, 0, 320, 240)
    assert crop_around(np.array([[10, 100, 200, 110]]), FRAME_HW, margin=0.2) == (0, 0, 320, 240)
    # A tiny box still gets min_side pixels; crops are shifted inside the frame.
    assert crop_around(np.array([[0, 0, 4, 4]]), FRAME_HW, min_side=64) == (0, 0, 64, 64)
    assert crop_around(np.array([[310, 230, 318, 238]]), FRAME_HW) == (256, 176, 320, 240)


def test_resample_logits_follows_frame_geometry() -> None:
    """A field linear in frame pixels reads the same at every crop cell's frame position."""
    frame_geom = (FRAME_HW, (0, 0))
    crop_hw, offset = (90, 120), (100, 60)
    cell = torch.arange(256) + 0.5
    frame_px = cell * 4 * max(FRAME_HW) / 1024  # frame pixel of each frame low-res cell
    field = (0.05 * frame_px[None, :] - 0.02 * frame_px[:, None])[None, None]
    crop = resample_logits(field, frame_geom, (crop_hw, offset))
    crop_px = cell * 4 * max(crop_hw) / 1024
    expected = 0.05 * (crop_px[None, :] + offset[0]) - 0.02 * (crop_px[:, None] + offset[1])
    rows, cols = 256 * crop_hw[0] // max(crop_hw), 256
    np.testing.assert_allclose(crop[0, 0, 2 : rows - 2, 2 : cols - 2],
                               expected[2 : rows - 2, 2 : cols - 2], atol=1e-4)
    # Back to the frame: the crop's area is restored, everything else is background.
    back = resample_logits(crop, (crop_hw, offset), frame_geom)
    assert back[0, 0, 0, 0] == pytest.approx(OUTSIDE_LOGIT)
    inside = (slice(55, 110), slice(90, 170))  # frame cells well inside the crop
    np.testing.assert_allclose(back[0, 0][inside], field[0, 0][inside], atol=1e-3)


def test_tracker_follows_object_through_crops() -> None:
    inner = ColourSegmenter()
    roi = RoiSegmenter(inner)
    tracker = VideoTracker(roi)
    for t in range(15):
        frame, gt = _frame(t)
        tracker.step(frame)
        if t == 0:
            tracker.add_object(box_xyxy=np.array([40, 60, 40 + SIDE, 60 + SIDE], np.float32))
        result = tracker.result()
        assert list(result.obj_ids) == [1], t
        mask = result.masks[0]
        iou = (mask & gt).sum() / (mask | gt).sum()
        assert iou > 0.95, (t, iou)
    # After the first frame every encode is a crop much smaller than the frame.
    assert roi.crop_encodes >= 13 and roi.whole_encodes <= 2
    crops = inner.encoded_hw[2:]
    assert all(h == w and h * w < 0.3 * FRAME_HW[0] * FRAME_HW[1] for h, w in crops)
    # The previous frame's logits reached the inner segmenter in its crop's frame: they cover
    # the object there, one frame's motion (6, 3 px) apart (IoU 0.56 for a perfect shift).
    assert len(inner.logit_iou) >= 13
    assert min(inner.logit_iou) > 0.4


def test_prompt_outside_crop_decodes_on_whole_frame_once() -> None:
    inner = ColourSegmenter()
    roi = RoiSegmenter(inner)
    tracker = VideoTracker(roi)
    for t in range(4):
        frame, _ = _frame(t)
        if t == 3:
            frame[180:210, 260:290] = (40, 200, 40)  # a second object far from the first
        tracker.step(frame)
        if t == 0:
            tracker.add_object(box_xyxy=np.array([40, 60, 70, 90], np.float32))
    whole_before = roi.whole_encodes
    tracker.add_object(box_xyxy=np.array([260, 180, 290, 210], np.float32))
    tracker.add_object(box_xyxy=np.array([255, 175, 295, 215], np.float32), obj_id=5)
    assert roi.whole_encodes == whole_before + 1  # one whole-frame encode serves both
    masks = dict(zip(tracker.result().obj_ids.tolist(), tracker.result().masks, strict=True))
    assert masks[2][180:210, 260:290].all() and masks[2].sum() == SIDE * SIDE


def test_roi_mode_parses_to_an_unpadded_inner_mode() -> None:
    # The crops' encoder never pads: roi implies nopad, and the name leaves it out.
    assert FastMode.parse("roi+size512").without_roi() == FastMode.parse("size512+nopad")
    assert FastMode.parse("size512+nopad").without_roi() == FastMode.parse("size512+nopad")
    assert not FastMode.parse("size512+nopad").roi
    assert FastMode.parse("roi").without_roi() == FastMode.parse("nopad")
    assert FastMode.parse("roi+size512").name == "roi+size512"
    assert FastMode.parse("roi+nopad+size256") == FastMode.parse("roi+size256")
