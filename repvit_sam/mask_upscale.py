"""Low-res decoder logits to masks at the image's size, for a crop only.

SAM turns its (256, 256) logits into a mask in two bilinear steps (``Sam.postprocess_masks``):
x4 to the padded 1024 frame, cropped to the resized image (h, w), then to the original
(H, W). Both steps are local: an output pixel reads a 2x2 neighbourhood of the step before.
So the pixels inside a box need only the logits around that box, and an object costs in
proportion to its size instead of the frame's: the video tracker upsamples only the candidates
it looks at, only where they can be positive.

:class:`MaskUpscaler` reproduces the full computation on a crop: step 1 runs
``F.interpolate`` on the needed low-res cells plus a one-cell margin (the x4 weights of a cell
do not depend on where the crop starts, so the result is the full result's, bit for bit);
step 2 gathers the four neighbours with PyTorch's source-index rule (``scale * (dst + 0.5) -
0.5``, clamped at 0, float32) and blends them in its order, which matches the full
computation to float rounding (tests: every pixel equal on the conformance cases).

A pixel can only be positive if one of the low-res cells it reads is, which bounds where a
candidate can be positive (:meth:`MaskUpscaler.extent`) before anything is upsampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

LOW_RES_SCALE = 4  # the decoder's logits are at 1/4 of the padded model frame


@dataclass(frozen=True)
class CropMask:
    """A boolean mask stored as its crop: the image is False outside it.

    Attributes:
        x0: left column of the crop in image pixels.
        y0: top row of the crop in image pixels.
        crop: (h, w) bool, image pixels [y0, y0 + h) x [x0, x0 + w).
    """

    x0: int
    y0: int
    crop: np.ndarray

    @property
    def box_xyxy(self) -> tuple[int, int, int, int]:
        """The crop's extent (x0, y0, x1, y1), exclusive right/bottom."""
        h, w = self.crop.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h

    def full(self, image_hw: tuple[int, int]) -> np.ndarray:
        """The (H, W) bool mask of the whole image."""
        out = np.zeros(image_hw, bool)
        x0, y0, x1, y1 = self.box_xyxy
        out[y0:y1, x0:x1] = self.crop
        return out


class MaskUpscaler:
    """Masks of an image's decoder logits, anywhere in the image, without the whole image.

    Args:
        input_hw: (h, w) of the image after ResizeLongestSide, in the padded model frame.
        orig_hw: (H, W) of the original image.
        img_size: side of the padded model frame (1024).
        threshold: logit above which a pixel is in the mask.
    """

    def __init__(
        self,
        input_hw: tuple[int, int],
        orig_hw: tuple[int, int],
        img_size: int = 1024,
        threshold: float = 0.0,
    ) -> None:
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.orig_hw = (int(orig_hw[0]), int(orig_hw[1]))
        self.img_size = img_size
        self.threshold = threshold
        # PyTorch's scale of a size-given resize: input / output, as a float32 division.
        self._scale = (
            np.float32(self.input_hw[0]) / np.float32(self.orig_hw[0]),
            np.float32(self.input_hw[1]) / np.float32(self.orig_hw[1]),
        )

    def full(self, low_res: torch.Tensor) -> torch.Tensor:
        """(K, 256, 256) logits -> (K, H, W) bool masks of the whole image."""
        h, w = self.orig_hw
        return torch.stack([self._masks(x[None], (0, 0, w, h))[0] for x in low_res]) if len(
            low_res) else torch.zeros((0, h, w), dtype=torch.bool)

    def extent(self, low_res: torch.Tensor) -> tuple[int, int, int, int] | None:
        """Where one candidate can be positive: (x0, y0, x1, y1) image pixels, or None.

        Args:
            low_res: (256, 256) logits of one candidate.
        """
        return self.extents(low_res[None])[0]

    def extents(self, low_res: torch.Tensor) -> list[tuple[int, int, int, int] | None]:
        """:meth:`extent` of K candidates, (K, 256, 256) logits, in one pass over all of them.

        One thresholding and two reductions for the whole batch instead of five small tensor
        operations per candidate (at 100 objects x 3 candidates those cost ~1 ms per object).
        """
        positive = low_res > self.threshold
        rows_any = positive.any(dim=-1).cpu().numpy()
        cols_any = positive.any(dim=-2).cpu().numpy()
        out: list[tuple[int, int, int, int] | None] = []
        for row_flags, col_flags in zip(rows_any, cols_any, strict=True):
            rows = np.flatnonzero(row_flags)
            if rows.size == 0:
                out.append(None)
                continue
            cols = np.flatnonzero(col_flags)
            x0, x1 = self._span(int(cols[0]), int(cols[-1]), axis=1)
            y0, y1 = self._span(int(rows[0]), int(rows[-1]), axis=0)
            out.append((x0, y0, x1, y1))
        return out

    def crop_mask(
        self, low_res: torch.Tensor, box: tuple[int, int, int, int] | None
    ) -> CropMask | None:
        """One candidate's mask over its extent ``box`` (from :meth:`extents`), or None."""
        return None if box is None else CropMask(box[0], box[1], self.crop(low_res, box))

    def candidate_crops(self, low_res: torch.Tensor) -> CandidateCrops:
        """Lazy crops of (N, C, 256, 256) candidates' logits (see :class:`CandidateCrops`)."""
        return CandidateCrops(self, low_res)

    def _span(self, first: int, last: int, axis: int) -> tuple[int, int]:
        """Image pixels whose value can read low-res cells first..last (one-cell margin)."""
        scale = float(self._scale[axis])
        size = self.orig_hw[axis]
        # Step-1 pixels reading cells first-1 .. last+1; then the step-2 pixels reading them.
        lo = LOW_RES_SCALE * (first - 1)
        hi = LOW_RES_SCALE * (last + 2)
        start = int(np.floor((lo - 1 + 0.5) / scale - 0.5)) - 1
        stop = int(np.ceil((hi + 0.5) / scale + 0.5)) + 1
        return max(0, start), min(size, stop)

    def crop(self, low_res: torch.Tensor, box_xyxy: tuple[int, int, int, int]) -> np.ndarray:
        """One candidate's mask inside a box: (y1 - y0, x1 - x0) bool.

        Args:
            low_res: (256, 256) logits.
            box_xyxy: integer (x0, y0, x1, y1) in image pixels, inside the image.
        """
        return self._masks(low_res[None], box_xyxy)[0].numpy()

    def _masks(self, low_res: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """(K, 256, 256) logits -> (K, y1 - y0, x1 - x0) bool for one box."""
        x0, y0, x1, y1 = (int(v) for v in box)
        rows, row_w = self._taps(y0, y1, axis=0)
        cols, col_w = self._taps(x0, x1, axis=1)
        # Step 1 on the low-res cells the taps read, plus one cell on each side: step-1 pixel
        # Y reads cells floor((Y + 0.5) / 4 - 0.5) and the next, and the interpolation
        # clamps only the crop's outer two rows, which no tap reads (unless at the frame's
        # own edge, where the full computation clamps the same way).
        lr0 = max(0, int(rows.min()) // LOW_RES_SCALE - 1)
        lr1 = min(low_res.shape[-2], int(rows.max()) // LOW_RES_SCALE + 2)
        lc0 = max(0, int(cols.min()) // LOW_RES_SCALE - 1)
        lc1 = min(low_res.shape[-1], int(cols.max()) // LOW_RES_SCALE + 2)
        stage1 = F.interpolate(low_res[:, None, lr0:lr1, lc0:lc1].float(),
                               scale_factor=float(LOW_RES_SCALE), mode="bilinear",
                               align_corners=False)[:, 0]
        r = torch.from_numpy(rows - LOW_RES_SCALE * lr0)
        c = torch.from_numpy(cols - LOW_RES_SCALE * lc0)
        wy = torch.from_numpy(row_w)
        wx = torch.from_numpy(col_w)
        top = stage1[:, r[:, 0]]  # (K, out_h, W1)
        bottom = stage1[:, r[:, 1]]
        top = top[:, :, c[:, 0]] * wx[:, 0] + top[:, :, c[:, 1]] * wx[:, 1]
        bottom = bottom[:, :, c[:, 0]] * wx[:, 0] + bottom[:, :, c[:, 1]] * wx[:, 1]
        logits = top * wy[:, 0, None] + bottom * wy[:, 1, None]
        return logits > self.threshold

    def _taps(self, start: int, stop: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Step-1 indices (n, 2) and weights (n, 2) of output pixels start..stop-1 on an axis.

        PyTorch's bilinear rule (align_corners=False, output size given): source
        ``max(scale * (dst + 0.5) - 0.5, 0)`` in float32, neighbours floor and floor + 1
        (the last index repeats at the edge), weights ``1 - lambda`` and ``lambda``.
        """
        scale = self._scale[axis]
        in_size = self.input_hw[axis]
        dst = np.arange(start, stop, dtype=np.float32)
        src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
        low = src.astype(np.int64)
        lam = (src - low.astype(np.float32)).astype(np.float32)
        high = np.where(low < in_size - 1, low + 1, low)
        weights = np.stack([np.float32(1) - lam, lam], axis=1).astype(np.float32)
        return np.stack([low, high], axis=1), weights


class CandidateCrops:
    """Masks of N objects' C candidates, each cropped to where it can be positive, on demand.

    The first request finds every candidate's extent in one pass (:meth:`MaskUpscaler.extents`);
    each candidate is then upsampled once, when first asked for.

    Args:
        upscaler: the image's upscaler.
        low_res: (N, C, 256, 256) logits.
    """

    def __init__(self, upscaler: MaskUpscaler, low_res: torch.Tensor) -> None:
        self.upscaler = upscaler
        self.low_res = low_res
        self._extents: list[tuple[int, int, int, int] | None] | None = None
        self._crops: dict[tuple[int, int], CropMask | None] = {}

    def __call__(self, obj_idx: int, cand_idx: int) -> CropMask | None:
        """Candidate ``cand_idx`` of object ``obj_idx``, or None where it is empty."""
        key = (obj_idx, cand_idx)
        if key not in self._crops:
            if self._extents is None:
                self._extents = self.upscaler.extents(self.low_res.flatten(0, 1))
            box = self._extents[obj_idx * self.low_res.shape[1] + cand_idx]
            self._crops[key] = self.upscaler.crop_mask(self.low_res[obj_idx, cand_idx].cpu(), box)
        return self._crops[key]
