"""SAM-compatible predictor plus a stateless, batched encode/decode pair for video.

``encode``/``decode`` follow the segmenter contract of :mod:`repvit_sam.segmenter` (whose
``ImageEmbedding``, ``MaskPrediction`` and ``DecodePrompts`` are re-exported here): the
tracker in ``vos/`` only ever calls those two and reads these fields.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import cast

import numpy as np
import torch
from torch.nn import functional as F

from repvit_sam.mask_upscale import CropMask, MaskUpscaler
from repvit_sam.modeling.batched_decoder import BatchedMaskDecoder
from repvit_sam.modeling.sam import Sam
from repvit_sam.segmenter import DecodePrompts, ImageEmbedding, MaskPrediction, SegmenterBase
from repvit_sam.utils.transforms import ResizeLongestSide, as_uint8_image

__all__ = ["DecodePrompts", "ImageEmbedding", "MaskPrediction", "SamPredictor"]

DECODERS = ("batched", "reference")
_PE_CACHE_SIZE = 8


def _as_float_tensor(value: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(value, dtype=np.float32), device=device)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"image: expected a numpy array (H, W, 3) uint8, got {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected shape (H, W, 3), got {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise ValueError(f"image: expected dtype uint8 (0-255), got {image.dtype}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image: expected a non-empty image, got {tuple(image.shape)}")


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """The (H, W, 3) uint8 image ``set_image`` encodes; a float image in [0, 1] is scaled.

    segment-anything accepts a floating image in [0, 1] (torchvision scales it by 255 and
    truncates): so do ``set_image`` and the automatic mask generator, value for value.

    Raises:
        ValueError: not an (H, W, 3) array, a dtype other than uint8 or floating, or a
            floating image outside [0, 1].
    """
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3:
        image = as_uint8_image(image)
    _check_image(image)
    return image


def _mask_input_on_grid(
    masks_in: torch.Tensor,
    grid_hw: tuple[int, int],
    full_mask_hw: tuple[int, int],
    canonical_hw: tuple[int, ...],
) -> torch.Tensor:
    """(N, 1, 256, 256) logits resampled to a fast mode's full grid x4, cropped to (4h, 4w)."""
    if full_mask_hw != canonical_hw:
        masks_in = F.interpolate(masks_in, full_mask_hw, mode="bilinear", align_corners=False)
    return masks_in[..., : 4 * grid_hw[0], : 4 * grid_hw[1]]


def _to_full_grid(
    low_res: torch.Tensor, full_mask_hw: tuple[int, int], canonical_hw: tuple[int, ...]
) -> torch.Tensor:
    """Decoder logits on a cropped/coarser grid, edge-padded and resampled to (256, 256)."""
    pad_h = full_mask_hw[0] - low_res.shape[-2]
    pad_w = full_mask_hw[1] - low_res.shape[-1]
    if pad_h or pad_w:
        low_res = F.pad(low_res, (0, pad_w, 0, pad_h), mode="replicate")
    if full_mask_hw != canonical_hw:
        low_res = F.interpolate(low_res, canonical_hw, mode="bilinear", align_corners=False)
    return low_res


class _UpscaledMasks:
    """The masks of a ``decode``: all at once as SAM computes them, or one candidate's crop."""

    def __init__(self, predictor: SamPredictor, low_res: torch.Tensor,
                 embedding: ImageEmbedding) -> None:
        self.predictor = predictor
        self.low_res = low_res
        self.embedding = embedding
        self.upscaler = MaskUpscaler(embedding.input_hw, embedding.orig_hw,
                                     predictor.model.img_size, predictor.model.mask_threshold)
        self._crops = self.upscaler.candidate_crops(low_res)

    def full(self) -> torch.Tensor:
        logits = self.predictor._postprocess_masks(self.low_res, self.embedding.input_hw,
                                                   self.embedding.orig_hw)
        return logits > self.predictor.model.mask_threshold

    def crop(self, obj_idx: int, cand_idx: int) -> CropMask | None:
        return self._crops(obj_idx, cand_idx)


class SamPredictor(SegmenterBase):
    """SAM's predictor API over any ``Sam`` model, plus a stateless batched pair for video.

    The SAM-compatible half (``set_image`` then ``predict``) keeps one image's embedding; the
    video half (``encode`` and ``decode``) keeps nothing, so callers hold embeddings
    explicitly and can cache or skip them.

    Threads: ``encode`` and ``decode`` may be called from several threads at once, and
    alongside ``set_image``/``predict``, with the results of calls made one by one; they
    share no state with the current image (only a cache of positional encodings, behind a
    lock). ``set_image`` then ``predict`` is one user's conversation, as in SAM: threads
    that share a predictor's current image must take turns themselves.

    Args:
        sam_model: the model; its device is used for every computation.
        decoder: how ``predict``, ``predict_torch`` and ``decode`` run the prompt decoder:
            ``"batched"`` (default) shares the image-side work of all prompt sets
            (``BatchedMaskDecoder``: the same outputs to float32 rounding, within 1.2e-5 of
            segment-anything's low-res logits and masks at most 5 pixels apart in
            tests/repvit_sam/test_compat_official.py; 27 against 56 ms for one object, 158
            against 379 ms for eight, 2 cores); ``"reference"`` runs ``Sam.mask_decoder`` as
            segment-anything's predictor does, for outputs equal to its own bit for bit.

    Attributes:
        features: (1, 256, 64, 64) embedding of the current image, or None. As in SAM,
            ``set_image`` and ``predict_torch`` compute under ``torch.no_grad`` (not inference
            mode), so this embedding and their outputs are ordinary tensors: they can be
            edited in place or fed to a decoder that is being trained.
        original_size, input_size: (H, W) of the current image before and after resizing.
        orig_h, orig_w, input_h, input_w: the same sizes one by one (MobileSAM's names; None
            without an image).

    Example:
        >>> predictor = SamPredictor(sam_model_registry["repvit"](checkpoint=path))
        >>> predictor.set_image(rgb)
        >>> masks, scores, logits = predictor.predict(box=np.array([10, 20, 200, 220]))
        >>> emb = predictor.encode(rgb)
        >>> pred = predictor.decode(emb, boxes_xyxy=np.array([[10, 20, 200, 220]]))
    """

    features: torch.Tensor | None
    original_size: tuple[int, ...] | None
    input_size: tuple[int, ...] | None
    orig_h: int | None
    orig_w: int | None
    input_h: int | None
    input_w: int | None

    def __init__(self, sam_model: Sam, *, decoder: str = "batched") -> None:
        if decoder not in DECODERS:
            raise ValueError(f"decoder: expected one of {DECODERS}, got {decoder!r}")
        self.model = sam_model
        self.mask_threshold = sam_model.mask_threshold
        self.transform = ResizeLongestSide(sam_model.img_size)
        self.decoder = decoder
        self.batched_decoder = BatchedMaskDecoder(sam_model.prompt_encoder, sam_model.mask_decoder)
        self._dense_pe: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._dense_pe_lock = threading.Lock()
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ SAM-compatible API

    # The SAM-compatible methods run under no_grad rather than inference mode: SAM returns
    # ordinary tensors, which user code edits in place or trains a decoder from; inference
    # tensors refuse both. No cost measured: predict(box) 145 against 159 ms, predict_torch
    # of 16 points 2.8 s either way (RepViT-SAM, medians of 4 interleaved runs, 2 busy cores).
    @torch.no_grad()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an image and keep its embedding for ``predict`` calls.

        Args:
            image: (H, W, 3) uint8 image in 0-255, or floating in [0, 1] (scaled by 255 and
                truncated, as segment-anything does).
            image_format: "RGB" or "BGR".

        Raises:
            ValueError: an unknown format, or an image that is not (H, W, 3) uint8 or float
                in [0, 1].
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format: expected 'RGB' or 'BGR', got {image_format!r}")
        image = as_rgb_uint8(image)
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        resized = self.transform.apply_image(np.ascontiguousarray(image))
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        self.set_torch_image(tensor, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """Encode an image already resized to long side 1024.

        Args:
            transformed_image: (1, 3, h, w) tensor, RGB 0-255, max(h, w) == 1024.
            original_image_size: (H, W) before resizing.
        """
        if (
            transformed_image.ndim != 4
            or transformed_image.shape[1] != 3
            or max(transformed_image.shape[2:]) != self.model.img_size
        ):
            raise ValueError(
                f"transformed_image: expected (1, 3, h, w) with long side {self.model.img_size}, "
                f"got {tuple(transformed_image.shape)}"
            )
        self.reset_image()
        self._set_sizes(original_image_size, transformed_image.shape[-2:])
        model_input = self.model.preprocess(transformed_image.to(torch.float32))
        self.features = self.model.image_encoder(model_input)
        self.is_image_set = True

    def _set_sizes(self, original_size: tuple[int, ...], input_size: tuple[int, ...]) -> None:
        self.orig_h, self.orig_w = (int(v) for v in original_size)
        self.input_h, self.input_w = (int(v) for v in input_size)
        self.original_size = (self.orig_h, self.orig_w)
        self.input_size = (self.input_h, self.input_w)

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one prompt set on the current image.

        Args:
            point_coords: (N, 2) XY in original-image pixels.
            point_labels: (N,) 1 foreground, 0 background.
            box: (4,) XYXY in original-image pixels.
            mask_input: (1, 256, 256) low-res logits from an earlier call.
            multimask_output: return 3 candidates (good for a single ambiguous point).
            return_logits: return float logits instead of boolean masks.

        Returns:
            masks (C, H, W) bool (or float logits), iou_predictions (C,),
            low_res_logits (C, 256, 256), as numpy arrays.
        """
        _, original_size, _ = self._current_image()
        coords_torch = labels_torch = box_torch = mask_torch = None
        if point_labels is not None and point_coords is None:
            raise ValueError("point_labels given without point_coords")
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be supplied with point_coords")
            coords = np.asarray(point_coords, dtype=np.float64)
            if coords.ndim == 1 and coords.shape == (2,):
                coords = coords[None]
            if coords.ndim != 2 or coords.shape[1] != 2:
                raise ValueError(f"point_coords: expected (N, 2), got {coords.shape}")
            labels = np.asarray(point_labels).reshape(-1)
            if len(labels) != len(coords):
                raise ValueError(f"point_labels: expected {len(coords)} labels, got {len(labels)}")
            coords = self.transform.apply_coords(coords, original_size)
            coords_torch = _as_float_tensor(coords, self.device)[None]
            labels_torch = torch.as_tensor(labels, dtype=torch.int64, device=self.device)[None]
        if box is not None:
            box_arr = np.asarray(box, dtype=np.float64).reshape(-1)
            if box_arr.shape != (4,):
                raise ValueError(f"box: expected 4 values XYXY, got shape {np.shape(box)}")
            box_torch = _as_float_tensor(
                self.transform.apply_boxes(box_arr, original_size), self.device
            )
        if mask_input is not None:
            mask_arr = np.asarray(mask_input, dtype=np.float32)
            if mask_arr.shape != (1, 256, 256):
                raise ValueError(f"mask_input: expected shape (1, 256, 256), got {mask_arr.shape}")
            mask_torch = torch.as_tensor(mask_arr, device=self.device)[None]
        masks, iou, low_res = self.predict_torch(
            coords_torch,
            labels_torch,
            box_torch,
            mask_torch,
            multimask_output=multimask_output,
            return_logits=return_logits,
        )
        return (
            masks[0].detach().cpu().numpy(),
            iou[0].detach().float().cpu().numpy(),
            low_res[0].detach().float().cpu().numpy(),
        )

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict masks for B prompt sets on the current image, in the model's input frame.

        Args:
            point_coords: (B, N, 2) XY already transformed to the resized (1024) frame.
            point_labels: (B, N) 1 foreground, 0 background, -1 padding.
            boxes: (B, 4) XYXY in the resized frame.
            mask_input: (B, 1, 256, 256) low-res logits.
            multimask_output: 3 candidates per prompt set instead of 1.
            return_logits: float logits instead of boolean masks.

        Returns:
            masks (B, C, H, W), iou_predictions (B, C), low_res_logits (B, C, 256, 256).
        """
        features, original_size, input_size = self._current_image()
        low_res, iou = self._decode(
            features, point_coords, point_labels, boxes, mask_input, multimask_output
        )
        masks = self.model.postprocess_masks(low_res, input_size, original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def _current_image(self) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
        """(features, original_size, input_size) of the current image."""
        if (
            not self.is_image_set
            or self.features is None
            or self.original_size is None
            or self.input_size is None
        ):
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        return self.features, self.original_size, self.input_size

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's (1, 256, 64, 64) float32 embedding (an ordinary tensor)."""
        if not self.is_image_set or self.features is None:
            raise RuntimeError(
                "An image must be set with .set_image(...) to generate an embedding."
            )
        return self.features

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None
        self.orig_h = self.orig_w = self.input_h = self.input_w = None

    def export_fields(self) -> dict[str, torch.Tensor | int | None]:
        """The current image's state as a dict (MobileSAM's API), for :meth:`import_fields`.

        Returns:
            ``features`` (1, 256, 64, 64) and the sizes ``orig_h``, ``orig_w``, ``input_h``,
            ``input_w``.
        """
        return {
            "features": self.features,
            "orig_h": self.orig_h,
            "orig_w": self.orig_w,
            "input_h": self.input_h,
            "input_w": self.input_w,
        }

    def import_fields(self, fields: dict) -> None:
        """Make an image current from :meth:`export_fields`'s dict, without encoding it.

        Unlike MobileSAM's, this also restores ``original_size`` and ``input_size``, so
        ``predict`` works right after it.

        Args:
            fields: ``features`` (1, 256, 64, 64) and ``orig_h``, ``orig_w``, ``input_h``,
                ``input_w``.
        """
        self._set_sizes(
            (fields["orig_h"], fields["orig_w"]), (fields["input_h"], fields["input_w"])
        )
        self.features = fields["features"]
        self.is_image_set = True

    # ------------------------------------------------------------------ stateless video API

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Encode one RGB frame without touching the predictor's state.

        Args:
            image: (H, W, 3) uint8 RGB frame.

        Returns:
            The frame's embedding with its original and resized sizes.
        """
        _check_image(image)
        resized = self.transform.apply_image(np.ascontiguousarray(image))
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        features = self.model.image_encoder(self.model.preprocess(tensor))
        return ImageEmbedding(
            features=features,
            orig_hw=(int(image.shape[0]), int(image.shape[1])),
            input_hw=(int(resized.shape[0]), int(resized.shape[1])),
        )

    @torch.inference_mode()
    def decode_prompts(self, embedding: ImageEmbedding, prompts: DecodePrompts) -> MaskPrediction:
        """Decode N objects' prompts against one embedding in a single batched call.

        Called by ``decode`` (``decode(embedding, prompts)`` or SAM-style keywords, see
        :meth:`repvit_sam.segmenter.SegmenterBase.decode`).

        Args:
            embedding: from :meth:`encode`.
            prompts: boxes (N, 4) and points (N, P, 2) in original-image pixels, labels
                (N, P), mask logits (N, 1, 256, 256), multimask flag.

        Returns:
            Masks at the original size, predicted IoU and low-res logits for the N objects.
        """
        if not isinstance(embedding, ImageEmbedding):
            raise TypeError(
                f"embedding: expected the ImageEmbedding returned by encode(), got "
                f"{type(embedding).__name__}"
            )
        prompts = prompts.to(self.device)
        coords, labels, boxes = prompts.points_xy, prompts.point_labels, prompts.boxes_xyxy
        if coords is not None:
            coords = self.transform.apply_coords_torch(coords, embedding.orig_hw)
        if boxes is not None:
            boxes = self.transform.apply_boxes_torch(boxes, embedding.orig_hw)
        low_res, iou = self._decode(
            embedding.features,
            coords,
            labels,
            boxes,
            prompts.mask_logits,
            prompts.multimask_output,
            full_grid_hw=embedding.full_grid_hw,
        )
        low_res = low_res.float()
        return MaskPrediction(
            None, iou.float(), low_res, lazy=_UpscaledMasks(self, low_res, embedding)
        )

    def _postprocess_masks(
        self, low_res: torch.Tensor, input_hw: tuple[int, int], orig_hw: tuple[int, int]
    ) -> torch.Tensor:
        """``Sam.postprocess_masks``, bit for bit, without upsampling the padding.

        SAM upsamples the whole (256, 256) logits to (1024, 1024) and then crops the resized
        image's (h, w). A 4x bilinear upsample (align_corners=False) reads output row i from
        input rows floor((i + 0.5) / 4 - 0.5) and the next one, so rows below h need input rows
        up to ceil(h / 4) only: upsampling that part with the same scale factor gives identical
        values (the kernel's scale is 1/4 either way) and skips 44% of the work on a 16:9 frame.
        """
        size = self.model.img_size
        low_h, low_w = low_res.shape[-2:]
        if size % low_h or size % low_w or size // low_h != size // low_w:
            return self.model.postprocess_masks(low_res, input_hw, orig_hw)
        scale = size // low_h
        keep_h = min(low_h, -(-input_hw[0] // scale) + 1)
        keep_w = min(low_w, -(-input_hw[1] // scale) + 1)
        masks = F.interpolate(
            low_res[..., :keep_h, :keep_w],
            scale_factor=float(scale),
            mode="bilinear",
            align_corners=False,
        )
        masks = masks[..., : input_hw[0], : input_hw[1]]
        return F.interpolate(masks, tuple(orig_hw), mode="bilinear", align_corners=False)

    def _decode(
        self,
        features: torch.Tensor,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks_in: torch.Tensor | None,
        multimask_output: bool,
        full_grid_hw: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, 256, 256) low-res logits and (N, C) IoU; prompts in the 1024 frame."""
        points = cast(
            "tuple[torch.Tensor, torch.Tensor] | None",
            (coords, labels) if coords is not None else None,
        )
        prompt_encoder = self.model.prompt_encoder
        grid_hw = (int(features.shape[-2]), int(features.shape[-1]))
        full_hw = tuple(full_grid_hw) if full_grid_hw is not None else grid_hw
        if self.decoder == "reference" and grid_hw == full_hw == tuple(
            prompt_encoder.image_embedding_size
        ):
            # Exact mode: SAM's own path, untouched (the conformance vectors pin it).
            sparse, dense = prompt_encoder(points=points, boxes=boxes, masks=masks_in)
            return self.model.mask_decoder(
                image_embeddings=features,
                image_pe=prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
        return self._decode_on_grid(
            features, points, boxes, masks_in, multimask_output, grid_hw, full_hw
        )

    def _decode_on_grid(
        self,
        features: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks_in: torch.Tensor | None,
        multimask_output: bool,
        grid_hw: tuple[int, int],
        full_hw: tuple[int, ...],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder on a fast mode's grid, with inputs and outputs in SAM's 256 frame.

        The full grid spans the padded 1024 frame at a coarser or equal stride; the embedding
        is its top-left (h, w) part. Point and box coordinates stay in the 1024 frame (the
        prompt encoder normalises them by it), the dense positional encoding is the full grid's
        cropped to (h, w), and mask logits are resampled from 256 to the full grid's 4x and
        cropped. The output logits are edge-padded back to the full grid, so no padding value
        bleeds into the image when they are resampled to 256. Only the crop is a small
        approximation (mask IoU 0.98 against the uncropped grid on the same features); a
        coarser full grid is a large one, which ``BackendSegmenter`` avoids by resampling.

        The batched decoder (default) serves SAM's own grid here too: on it every step above
        is the identity.
        """
        prompt_encoder = self.model.prompt_encoder
        full_mask_hw = (4 * full_hw[0], 4 * full_hw[1])
        canonical_hw = tuple(prompt_encoder.mask_input_size)
        if masks_in is not None:
            masks_in = _mask_input_on_grid(masks_in, grid_hw, full_mask_hw, canonical_hw)
        image_pe = self._image_pe(grid_hw, full_hw)
        if self.decoder == "batched":
            sparse, _ = prompt_encoder(points=points, boxes=boxes, masks=None, embedding_hw=grid_hw)
            if masks_in is not None and sparse.shape[0] != masks_in.shape[0]:
                sparse = sparse.expand(masks_in.shape[0], -1, -1)  # mask-only prompts: no tokens
            low_res, iou = self.batched_decoder(
                features, image_pe, sparse, masks_in, multimask_output
            )
        else:
            sparse, dense = prompt_encoder(
                points=points, boxes=boxes, masks=masks_in, embedding_hw=grid_hw
            )
            low_res, iou = self.model.mask_decoder(
                image_embeddings=features,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
        return _to_full_grid(low_res, full_mask_hw, canonical_hw), iou

    def _image_pe(self, grid_hw: tuple[int, int], full_hw: tuple[int, ...]) -> torch.Tensor:
        """The prompt encoder's dense positional encoding, computed once per grid."""
        key = (grid_hw, tuple(full_hw), self.device)
        # Under a lock: decode runs in several threads (the annotator's), and an OrderedDict
        # reordered by one while another evicts raises or loses entries. Computing an
        # encoding takes a few ms, the lock nothing measurable.
        with self._dense_pe_lock:
            if key in self._dense_pe:
                self._dense_pe.move_to_end(key)
                return self._dense_pe[key]
            pe = self.model.prompt_encoder
            canonical = tuple(pe.image_embedding_size)
            encoding = (
                pe.get_dense_pe()
                if grid_hw == tuple(full_hw) == canonical
                else pe.get_dense_pe(grid_hw, (full_hw[0], full_hw[1]))
            )
            self._dense_pe[key] = encoding
            if len(self._dense_pe) > _PE_CACHE_SIZE:  # a few grids per video; bound the rest
                self._dense_pe.popitem(last=False)
            return encoding
