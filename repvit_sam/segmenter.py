"""The segmenter contract: what a video tracker needs from a promptable image model.

A segmenter encodes a frame once and decodes the prompts of N objects against that embedding
in one batched call. ``SamPredictor`` is the reference segmenter; the graph runtimes
(``repvit_sam.runtime``) and every wrapper (ROI crops, encode-ahead, timing) speak the same
two methods, so they stack without the tracker knowing:

- ``encode(image) -> embedding`` for an (H, W, 3) uint8 RGB frame;
- ``decode(embedding, prompts) -> MaskPrediction`` with the prompts as one
  :class:`DecodePrompts` value.

Every segmenter may be called from several threads at once (a server's background encoder
and its request threads share one) and gives each call exactly the result of the same call
made alone. A segmenter or wrapper with mutable state (caches, a stream's ROI boxes, a
look-ahead queue) guards it with a lock held for the bookkeeping, not for inference, so
threads still overlap; what is built on first use (graphs, runners) is built once, under a
lock. A new segmenter keeps this promise (``tests/repvit_sam/test_threads.py``).

:class:`SegmenterBase` adds SAM-style keyword calls (``decode(emb, boxes_xyxy=...)``) on top,
in this one place; :class:`SegmenterWrapper` is the base of pass-through wrappers.

Example:
    >>> prompts = DecodePrompts.of(boxes_xyxy=np.array([[10, 20, 200, 220]]))
    >>> pred = segmenter.decode(segmenter.encode(rgb), prompts)
    >>> pred.masks.shape  # (1, 1, H, W) bool
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from repvit_sam.mask_upscale import CropMask

ArrayLike = np.ndarray | torch.Tensor

# SAM's low-res mask frame: the decoder's logits are (256, 256) for a 1024 model frame.
LOW_RES_HW = (256, 256)


@dataclass(frozen=True)
class ImageEmbedding:
    """One encoded image.

    Attributes:
        features: (1, 256, 64, 64) float32 image embedding on the model's device; an
            approximate fast mode (``repvit_sam.runtime.FastMode``) may give (1, 256, h, w),
            the top-left part of a ``full_grid_hw`` grid.
        orig_hw: (H, W) of the original image in pixels.
        input_hw: (h, w) of the image after ResizeLongestSide(1024), before padding. Always in
            the 1024 frame, whatever size the encoder actually saw.
        full_grid_hw: (H, W) of the embedding grid that spans the whole padded 1024 frame, when
            ``features`` covers only its top-left (h, w) part: (64, 64) for a frame encoded
            without its bottom/right padding (the ``nopad`` fast modes). None (exact mode):
            ``features`` is the whole grid. ``decode`` also accepts a coarser full grid, e.g.
            (32, 32) for a 512 input, but the decoder agrees far better with exact mode when
            such features are first resampled to 64x64
            (``repvit_sam.runtime.preprocess.resample_to_grid``).
    """

    features: torch.Tensor
    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    full_grid_hw: tuple[int, int] | None = None


class LazyMasks(Protocol):
    """How a prediction makes its full-size masks on demand (see :class:`MaskPrediction`)."""

    def full(self) -> torch.Tensor:
        """(N, C, H, W) bool masks of every candidate."""
        ...

    def crop(self, obj_idx: int, cand_idx: int) -> CropMask | None:
        """One candidate's mask over where it can be positive; None when it is empty."""
        ...


class MaskPrediction:
    """Masks for N prompt sets decoded against one image embedding.

    A segmenter either gives the masks at once or a :class:`LazyMasks` that computes them on
    demand: ``masks`` then upsamples every candidate on first access, while
    :meth:`candidate_masks` upsamples only the candidates asked for and only where they can
    be positive, which is what a tracker of many objects needs.

    Args:
        masks: (N, C, H, W) bool at the original image size (H, W) = ``orig_hw``; or None
            with ``lazy``.
        iou_scores: (N, C) float32 predicted IoU of each candidate.
        low_res_logits: (N, C, 256, 256) float32 logits in the padded 1024 frame at 1/4 scale.
        lazy: computes the masks when asked (instead of ``masks``).

    C is 3 with ``multimask_output=True`` and 1 otherwise.
    """

    def __init__(
        self,
        masks: torch.Tensor | None,
        iou_scores: torch.Tensor,
        low_res_logits: torch.Tensor,
        *,
        lazy: LazyMasks | None = None,
    ) -> None:
        if masks is None and lazy is None:
            raise ValueError("MaskPrediction needs masks or a lazy way to compute them")
        self._masks = masks
        self._lazy = lazy
        self.iou_scores = iou_scores
        self.low_res_logits = low_res_logits

    @property
    def masks(self) -> torch.Tensor:
        """(N, C, H, W) bool masks of every candidate (computed on first access if lazy)."""
        if self._masks is None:
            assert self._lazy is not None
            self._masks = self._lazy.full()
        return self._masks

    def candidate_masks(
        self, pairs: Sequence[tuple[int, int]]
    ) -> list[CropMask | None]:
        """Masks of chosen candidates as crops over where each can be positive.

        Args:
            pairs: (obj_idx, cand_idx) pairs.

        Returns:
            One :class:`~repvit_sam.mask_upscale.CropMask` per pair (None for an empty
            candidate); its crop may hold False margins, never a missing True pixel.
        """
        if self._masks is None and self._lazy is not None:
            return [self._lazy.crop(i, c) for i, c in pairs]
        masks = self.masks
        out: list[CropMask | None] = []
        for obj_idx, cand_idx in pairs:
            mask = masks[obj_idx, cand_idx].cpu().numpy()
            rows = np.flatnonzero(mask.any(axis=1))
            if rows.size == 0:
                out.append(None)
                continue
            cols = np.flatnonzero(mask.any(axis=0))
            y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            out.append(CropMask(int(x0), int(y0), mask[y0:y1, x0:x1]))
        return out

    def __repr__(self) -> str:
        n, c = tuple(self.iou_scores.shape)
        return f"MaskPrediction(objects={n}, candidates={c}, lazy={self._masks is None})"


def _float_tensor(value: ArrayLike) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(dtype=torch.float32)
    return torch.as_tensor(np.asarray(value, dtype=np.float32))


@dataclass(frozen=True)
class DecodePrompts:
    """The prompts of N objects for one ``decode`` call, checked, in original-image pixels.

    Build it with :meth:`of`, which checks the shape contract; the tensors are on the
    device they were given on (numpy input becomes CPU tensors), and ``to`` moves them.

    Attributes:
        boxes_xyxy: (N, 4) float32 XYXY, or None.
        points_xy: (N, P, 2) float32 XY, or None.
        point_labels: (N, P) int64 (1 positive, 0 negative, -1 padding), or None; always
            given with ``points_xy``.
        mask_logits: (N, 1, h, w) float32 low-res logits (e.g. the previous frame's), or None.
        multimask_output: 3 candidates per object instead of 1.
    """

    boxes_xyxy: torch.Tensor | None = None
    points_xy: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None
    mask_logits: torch.Tensor | None = None
    multimask_output: bool = False

    @classmethod
    def of(
        cls,
        *,
        boxes_xyxy: ArrayLike | None = None,
        points_xy: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        mask_logits: ArrayLike | None = None,
        multimask_output: bool = False,
        mask_hw: tuple[int, int] = LOW_RES_HW,
    ) -> DecodePrompts:
        """Check and convert the prompts of N objects (arguments as the attributes).

        Args:
            mask_hw: the (h, w) that ``mask_logits`` must have (the model's low-res frame).

        Raises:
            ValueError: labels without points (or the reverse), a mis-shaped prompt, prompts
                that disagree on N, no prompt at all, or N = 0.
        """
        if point_labels is not None and points_xy is None:
            raise ValueError("point_labels given without points_xy")
        counts: dict[str, int] = {}
        coords = labels = boxes = masks_in = None
        if points_xy is not None:
            if point_labels is None:
                raise ValueError("point_labels must be supplied with points_xy")
            coords = _float_tensor(points_xy)
            labels = torch.as_tensor(
                point_labels if isinstance(point_labels, torch.Tensor) else np.asarray(point_labels)
            ).to(torch.int64)
            if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
                raise ValueError(
                    f"points_xy/point_labels: expected (N, P, 2) and (N, P), got "
                    f"{tuple(coords.shape)} and {tuple(labels.shape)}"
                )
            counts["points_xy"] = coords.shape[0]
        if boxes_xyxy is not None:
            boxes = _float_tensor(boxes_xyxy)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"boxes_xyxy: expected (N, 4), got {tuple(boxes.shape)}")
            counts["boxes_xyxy"] = boxes.shape[0]
        if mask_logits is not None:
            masks_in = _float_tensor(mask_logits)
            expected = (1, *mask_hw)
            if masks_in.ndim != 4 or tuple(masks_in.shape[1:]) != expected:
                raise ValueError(
                    f"mask_logits: expected (N, {', '.join(map(str, expected))}), "
                    f"got {tuple(masks_in.shape)}"
                )
            counts["mask_logits"] = masks_in.shape[0]
        if not counts:
            raise ValueError("decode needs at least one of boxes_xyxy, points_xy, mask_logits")
        if len(set(counts.values())) != 1:
            raise ValueError(f"prompts disagree on the number of objects N: {counts}")
        if next(iter(counts.values())) == 0:
            raise ValueError("decode: no objects (N = 0); skip the call when nothing is tracked")
        return cls(boxes, coords, labels, masks_in, bool(multimask_output))

    @property
    def num_objects(self) -> int:
        """N, the same for every prompt given."""
        for value in (self.boxes_xyxy, self.points_xy, self.mask_logits):
            if value is not None:
                return int(value.shape[0])
        return 0

    def to(self, device: torch.device | str) -> DecodePrompts:
        """The same prompts with every tensor on ``device``."""

        def move(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value.to(device)

        return DecodePrompts(
            move(self.boxes_xyxy),
            move(self.points_xy),
            move(self.point_labels),
            move(self.mask_logits),
            self.multimask_output,
        )

    def replace(self, **changes: Any) -> DecodePrompts:
        """A copy with some fields replaced (no re-check: callers keep N and shapes)."""
        return dataclasses.replace(self, **changes)


@runtime_checkable
class Segmenter(Protocol):
    """What the video tracker needs from a model (``SamPredictor`` and friends)."""

    def encode(self, image: np.ndarray) -> Any:
        """Encode an (H, W, 3) uint8 RGB frame."""
        ...

    def decode(self, embedding: Any, prompts: DecodePrompts) -> MaskPrediction:
        """Decode N objects' prompts against one embedding in one batched call."""
        ...


class SegmenterBase(abc.ABC):
    """Base class of the segmenters: ``decode`` by :class:`DecodePrompts` or by keywords.

    Subclasses implement ``encode`` and ``decode_prompts``; ``decode`` takes either a
    ``DecodePrompts`` (the tracker's form) or SAM-style keyword arguments.
    """

    mask_threshold: float = 0.0
    mask_input_hw: tuple[int, int] = LOW_RES_HW

    @abc.abstractmethod
    def encode(self, image: np.ndarray) -> Any:
        """Encode one (H, W, 3) uint8 RGB frame."""

    @abc.abstractmethod
    def decode_prompts(self, embedding: Any, prompts: DecodePrompts) -> MaskPrediction:
        """Decode checked prompts (see :meth:`decode`)."""

    def stream_state(self) -> dict[str, np.ndarray]:
        """What this segmenter carries from one frame of a stream to the next (arrays by name).

        Most segmenters carry nothing; a stateful one (``RoiSegmenter`` remembers where the
        objects were) returns it here so that a resumed run continues exactly.
        """
        return {}

    def load_stream_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from a :meth:`stream_state` taken earlier."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no stream state, got {sorted(state)}")

    def decode(
        self,
        embedding: Any,
        prompts: DecodePrompts | None = None,
        *,
        boxes_xyxy: ArrayLike | None = None,
        points_xy: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        mask_logits: ArrayLike | None = None,
        multimask_output: bool = False,
    ) -> MaskPrediction:
        """Decode N objects' prompts against one embedding in a single batched call.

        Args:
            embedding: from :meth:`encode`.
            prompts: all prompts as one value; or give them as the keywords below instead.
            boxes_xyxy: (N, 4) XYXY in original-image pixels.
            points_xy: (N, P, 2) XY in original-image pixels.
            point_labels: (N, P) 1 positive, 0 negative, -1 padding.
            mask_logits: (N, 1, 256, 256) low-res logits (e.g. the previous frame's).
            multimask_output: 3 candidates per object instead of 1.

        Returns:
            ``masks`` (N, C, H, W) bool at the original size, ``iou_scores`` (N, C) and
            ``low_res_logits`` (N, C, 256, 256) float32; C = 3 or 1.

        Raises:
            TypeError: both ``prompts`` and keywords are given.
            ValueError: no prompt, mis-shaped prompts, prompts with different N, or N = 0.
        """
        keywords = (boxes_xyxy, points_xy, point_labels, mask_logits)
        if prompts is None:
            prompts = DecodePrompts.of(
                boxes_xyxy=boxes_xyxy,
                points_xy=points_xy,
                point_labels=point_labels,
                mask_logits=mask_logits,
                multimask_output=multimask_output,
                mask_hw=self.mask_input_hw,
            )
        elif not isinstance(prompts, DecodePrompts):
            raise TypeError(f"prompts: expected DecodePrompts, got {type(prompts).__name__}")
        elif any(v is not None for v in keywords) or multimask_output:
            raise TypeError("decode: give a DecodePrompts or keyword prompts, not both")
        return self.decode_prompts(embedding, prompts)


class SegmenterWrapper(SegmenterBase):
    """A segmenter around another one; by default every call passes straight through.

    Attributes the wrapper does not define (``name``, ``mode``, ``prepare``, ...) are read
    from the wrapped segmenter.

    Args:
        inner: the wrapped segmenter.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.mask_threshold = getattr(inner, "mask_threshold", 0.0)
        self.mask_input_hw = getattr(inner, "mask_input_hw", LOW_RES_HW)

    def __getattr__(self, item: str) -> Any:
        if item == "inner":  # not set yet (unpickling): no recursion
            raise AttributeError(item)
        return getattr(self.inner, item)

    def encode(self, image: np.ndarray) -> Any:
        return self.inner.encode(image)

    def decode_prompts(self, embedding: Any, prompts: DecodePrompts) -> MaskPrediction:
        return self.inner.decode(embedding, prompts)

    def stream_state(self) -> dict[str, np.ndarray]:
        inner = getattr(self.inner, "stream_state", None)
        return inner() if inner is not None else {}

    def load_stream_state(self, state: dict[str, np.ndarray]) -> None:
        inner = getattr(self.inner, "load_stream_state", None)
        if inner is not None:
            inner(state)
        elif state:
            raise ValueError(f"{type(self.inner).__name__} keeps no stream state")
