"""ResizeLongestSide: SAM's resize of images, points and boxes to a long side of 1024."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F


def as_uint8_image(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) image as uint8 0-255, taking a floating image in [0, 1] as SAM does.

    segment-anything resizes through torchvision's ``to_pil_image``, which turns a floating
    image into uint8 as ``(image * 255).astype(np.uint8)`` (truncating), so a float image in
    [0, 1] works there. We convert it the same way, value for value; a floating image with
    values outside [0, 1] (a 0-255 float image, NaN) raises instead of wrapping around.
    Other dtypes are returned unchanged for the caller to validate.

    Args:
        image: (H, W, C) uint8 in 0-255, or floating in [0, 1].

    Returns:
        The uint8 image (the input itself when it is not floating).

    Raises:
        ValueError: a floating image with values outside [0, 1].
    """
    if not np.issubdtype(image.dtype, np.floating):
        return image
    if image.size:
        low, high = float(image.min()), float(image.max())
        if not (low >= 0.0 and high <= 1.0):  # NaN fails both comparisons
            raise ValueError(
                f"image: a floating ({image.dtype}) image must hold values in [0, 1] (it is "
                f"scaled by 255, as in segment-anything), got values in [{low:g}, {high:g}]; "
                "pass uint8 0-255 pixels instead"
            )
    return (image * 255).astype(np.uint8)


class ResizeLongestSide:
    """Resize so the longest side equals ``target_length``, and map coordinates accordingly.

    ``apply_image`` resizes with PIL's bilinear filter (antialiased on downscaling), which is
    what the official code does through torchvision on a PIL image; the torch variants use
    ``F.interpolate`` and may differ slightly. ``apply_image_torch`` reads (H, W) from the
    last two axes of its (B, 3, H, W) input; segment-anything 1.0 reads them from the first
    two (B, 3), so its output size is wrong there and ours differs from it on purpose.

    Args:
        target_length: the long side after resizing (1024 for SAM).
    """

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """(h, w) after scaling (oldh, oldw) so the long side is ``long_side_length``."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        newh, neww = oldh * scale, oldw * scale
        return int(newh + 0.5), int(neww + 0.5)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 (or float in [0, 1], see :func:`as_uint8_image`) -> (h, w, 3) uint8
        resized with PIL bilinear."""
        image = as_uint8_image(np.asarray(image))
        h, w = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(..., 2) XY in original pixels -> XY in the resized frame (float64 copy)."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[..., 0] *= new_w / old_w
        coords[..., 1] *= new_h / old_h
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(B, 4) XYXY in original pixels -> (B, 4) XYXY in the resized frame."""
        boxes = np.asarray(boxes)
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float -> (B, 3, h, w) resized with antialiased bilinear interpolation."""
        h, w = self.get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, (h, w), mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(
        self, coords: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """(..., 2) XY tensor in original pixels -> float tensor in the resized frame."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = coords.detach().clone().to(torch.float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(
        self, boxes: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """(B, 4) XYXY tensor in original pixels -> (B, 4) in the resized frame."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
