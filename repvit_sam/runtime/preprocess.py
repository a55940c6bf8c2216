"""Frame pre-processing for the encoder runners, and embeddings brought onto SAM's grid.

One ``preprocess`` serves every runtime (PyTorch modules, ONNX Runtime, OpenVINO): in exact
mode it equals ``Sam.preprocess`` of ``SamPredictor``'s resized image bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from repvit_sam.runtime.fast_mode import FastMode
from repvit_sam.utils.transforms import ResizeLongestSide


def preprocess(
    image: np.ndarray,
    mode: FastMode,
    pixel_mean: np.ndarray,
    pixel_std: np.ndarray,
) -> np.ndarray:
    """Resize, normalise and pad one frame for the encoder, as ``Sam.preprocess`` does.

    In exact mode the result equals ``Sam.preprocess`` of ``SamPredictor``'s resized image
    bit for bit (the same PIL resize, then one float32 subtraction and one division).

    Args:
        image: (H, W, 3) uint8 RGB frame.
        mode: the fast mode (input size and padding).
        pixel_mean: (3, 1, 1) float32 mean of RGB pixels in 0-255.
        pixel_std: (3, 1, 1) float32 standard deviation of RGB pixels in 0-255.

    Returns:
        (1, 3, H', W') float32 C-contiguous encoder input, H' and W' from
        ``mode.encoder_input_hw``; the padding is zero (the mean colour).

    Raises:
        ValueError: the image is not (H, W, 3) uint8.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"image: expected a (H, W, 3) uint8 numpy array, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image: expected dtype uint8 (0-255), got {image.dtype}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image: expected a non-empty image, got {tuple(image.shape)}")
    resized = ResizeLongestSide(mode.input_size).apply_image(np.ascontiguousarray(image))
    h, w = resized.shape[:2]
    out = np.zeros((1, 3, *mode.encoder_input_hw((image.shape[0], image.shape[1]))), np.float32)
    view = out[0, :, :h, :w]
    np.subtract(resized.transpose(2, 0, 1), pixel_mean, out=view, dtype=np.float32)
    np.divide(view, pixel_std, out=view)
    return out


def resample_to_grid(
    features: torch.Tensor,
    full_hw: tuple[int, int],
    target_hw: tuple[int, int],
    keep_hw: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Bring a reduced-size embedding onto SAM's trained grid (bilinear).

    The decoder was trained on a 64x64 grid at stride 16: fed a coarser grid directly, its
    attention sees tokens at the wrong spacing (mask IoU against exact mode fell to 0.45 on a
    512 input in our measurement), while the same features resampled to 64x64 kept 0.95.

    Args:
        features: (1, C, h, w) embedding, the top-left part of a ``full_hw`` grid that spans
            the padded square model frame.
        full_hw: (H, W) of that full grid (``input_size / 16`` on each side).
        target_hw: SAM's grid, (64, 64).
        keep_hw: cells of the target grid to keep (top-left); None: those the features cover,
            ceil(h * 64 / H) by ceil(w * 64 / W).

    Returns:
        (1, C, h', w') float32 on the target grid, cropped to ``keep_hw``.
    """
    h, w = features.shape[-2:]
    if (h, w) != tuple(full_hw):
        # Edge-replicate the missing bottom/right cells, so no padding value bleeds into the
        # last content row when interpolating; those cells are cropped again below.
        features = F.pad(features, (0, full_hw[1] - w, 0, full_hw[0] - h), mode="replicate")
    features = F.interpolate(features, target_hw, mode="bilinear", align_corners=False)
    if keep_hw is None:
        keep_hw = (-(-h * target_hw[0] // full_hw[0]), -(-w * target_hw[1] // full_hw[1]))
    keep_h, keep_w = min(target_hw[0], keep_hw[0]), min(target_hw[1], keep_hw[1])
    return features[..., :keep_h, :keep_w].contiguous()
