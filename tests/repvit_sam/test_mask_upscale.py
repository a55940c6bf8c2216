"""Masks of a crop equal the whole image's masks there; extents hold every positive pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from repvit_sam import SamPredictor, build_repvit_sam
from repvit_sam.mask_upscale import CropMask, MaskUpscaler
from repvit_sam.utils.transforms import ResizeLongestSide


def _full_masks(low_res: torch.Tensor, input_hw: tuple[int, int],
                orig_hw: tuple[int, int]) -> np.ndarray:
    """SAM's post-processing (``Sam.postprocess_masks``'s two resizes), thresholded at 0."""
    up = F.interpolate(low_res[:, None], (1024, 1024), mode="bilinear", align_corners=False)
    up = up[..., : input_hw[0], : input_hw[1]]
    return (F.interpolate(up, orig_hw, mode="bilinear", align_corners=False)[:, 0] > 0).numpy()


@pytest.mark.parametrize("orig_hw", [(480, 854), (720, 1280), (300, 420), (97, 131), (1080, 1920)])
def test_crops_equal_the_full_masks_bit_for_bit(orig_hw: tuple[int, int]) -> None:
    torch.manual_seed(orig_hw[0])
    low_res = 3 * torch.randn(2, 256, 256)
    input_hw = ResizeLongestSide.get_preprocess_shape(*orig_hw, 1024)
    upscaler = MaskUpscaler(input_hw, orig_hw)
    full = _full_masks(low_res, input_hw, orig_hw)
    assert np.array_equal(upscaler.full(low_res).numpy(), full)
    rng = np.random.default_rng(orig_hw[1])
    for _ in range(25):
        x0, y0 = int(rng.integers(0, orig_hw[1] - 1)), int(rng.integers(0, orig_hw[0] - 1))
        x1 = int(rng.integers(x0 + 1, orig_hw[1] + 1))
        y1 = int(rng.integers(y0 + 1, orig_hw[0] + 1))
        crop = upscaler.crop(low_res[1], (x0, y0, x1, y1))
        assert np.array_equal(crop, full[1, y0:y1, x0:x1]), (x0, y0, x1, y1)


def test_extent_holds_every_positive_pixel_and_little_more() -> None:
    orig_hw = (480, 854)
    input_hw = ResizeLongestSide.get_preprocess_shape(*orig_hw, 1024)
    upscaler = MaskUpscaler(input_hw, orig_hw)
    for r0, c0, r1, c1 in ((100, 30, 110, 45), (0, 0, 3, 4), (140, 250, 144, 256), (60, 60, 61, 61)):
        logits = torch.full((256, 256), -5.0)
        logits[r0:r1, c0:c1] = 5.0
        full = _full_masks(logits[None], input_hw, orig_hw)[0]
        ys, xs = np.nonzero(full)
        x0, y0, x1, y1 = upscaler.extent(logits)
        assert x0 <= xs.min() and y0 <= ys.min() and xs.max() < x1 and ys.max() < y1
        # A margin of about one low-res cell (3.3 px here) and a pixel of rounding, no more.
        assert (xs.min() - x0, ys.min() - y0, x1 - xs.max() - 1, y1 - ys.max() - 1) < (12,) * 4
    assert upscaler.extent(torch.full((256, 256), -1.0)) is None


def test_extents_of_a_batch_hold_each_candidates_positive_pixels() -> None:
    orig_hw = (480, 854)
    input_hw = ResizeLongestSide.get_preprocess_shape(*orig_hw, 1024)
    upscaler = MaskUpscaler(input_hw, orig_hw)
    logits = torch.full((5, 256, 256), -5.0)
    logits[0, 100:110, 30:45] = 5.0
    logits[2, 0:3, 200:256] = 5.0
    logits[3, 140:144, 0:2] = 5.0
    logits[4, 50:52, 60:61] = 5.0
    logits[4, 120:121, 10:12] = 5.0  # two blobs: the extent spans both
    extents = upscaler.extents(logits)
    assert len(extents) == 5 and extents[1] is None
    full = _full_masks(logits, input_hw, orig_hw)
    for k in (0, 2, 3, 4):
        box = extents[k]
        assert box is not None and box == upscaler.extent(logits[k])
        ys, xs = np.nonzero(full[k])
        x0, y0, x1, y1 = box
        assert x0 <= xs.min() and y0 <= ys.min() and xs.max() < x1 and ys.max() < y1
        crop = upscaler.crop_mask(logits[k], box)
        assert crop is not None and np.array_equal(crop.full(orig_hw), full[k])
    assert upscaler.crop_mask(logits[1], None) is None


def test_lazy_decode_masks_match_eager_ones() -> None:
    torch.manual_seed(0)
    model = build_repvit_sam().eval()
    predictor = SamPredictor(model)
    image = np.random.default_rng(0).integers(0, 256, (96, 160, 3), dtype=np.uint8)
    pred = predictor.decode(predictor.encode(image),
                            boxes_xyxy=np.array([[10, 10, 60, 50], [70, 20, 150, 90]]),
                            multimask_output=True)
    crops = pred.candidate_masks([(i, c) for i in range(2) for c in range(3)])
    masks = pred.masks.numpy()  # the whole set, computed on demand
    for (i, c), crop in zip([(i, c) for i in range(2) for c in range(3)], crops, strict=True):
        if crop is None:
            assert not masks[i, c].any()
            continue
        assert isinstance(crop, CropMask)
        assert np.array_equal(crop.full(masks.shape[-2:]), masks[i, c])
