"""The SAM wrapper: image encoder + prompt encoder + mask decoder, with pre/post-processing."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from repvit_sam.modeling.mask_decoder import MaskDecoder
from repvit_sam.modeling.prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """Segment Anything with a swappable image encoder.

    Args:
        image_encoder: maps (B, 3, S, S) normalised, padded images to (B, 256, S/16, S/16);
            must expose ``img_size`` (S).
        prompt_encoder: SAM's prompt encoder.
        mask_decoder: SAM's mask decoder.
        pixel_mean: per-channel mean of RGB pixels in 0-255.
        pixel_std: per-channel std of RGB pixels in 0-255.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Not in the official checkpoint: non-persistent, so strict loading still works.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return int(self.image_encoder.img_size)  # type: ignore[arg-type]

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise then zero-pad bottom/right to a square of ``img_size``.

        Args:
            x: (B, 3, h, w) float RGB in 0-255, long side already resized to ``img_size``.

        Returns:
            (B, 3, img_size, img_size); pad pixels equal the mean colour after normalising.
        """
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, ...],
        original_size: tuple[int, ...],
    ) -> torch.Tensor:
        """Low-res logits in the padded frame -> logits at the original image size.

        Args:
            masks: (B, C, 256, 256) low-res logits.
            input_size: (h, w) of the resized image before padding.
            original_size: (H, W) of the original image.

        Returns:
            (B, C, H, W) logits.
        """
        masks = F.interpolate(
            masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    def fuse(self) -> Sam:
        """Structural re-parameterisation of the image encoder, in place (eval mode)."""
        fuse_fn = getattr(self.image_encoder, "fuse", None)
        if callable(fuse_fn):
            fuse_fn()
        self.eval()
        return self

    @torch.no_grad()
    def forward(
        self, batched_input: list[dict[str, Any]], multimask_output: bool
    ) -> list[dict[str, torch.Tensor]]:
        """SAM's end-to-end batch call.

        Args:
            batched_input: one dict per image with ``image`` (3, h, w) float RGB 0-255 already
                resized to long side ``img_size``, ``original_size`` (H, W), and optionally
                ``point_coords`` (B, N, 2) and ``point_labels`` (B, N) in the resized frame,
                ``boxes`` (B, 4) XYXY in the resized frame, ``mask_inputs`` (B, 1, 256, 256).
            multimask_output: return 3 masks per prompt instead of 1.

        Returns:
            One dict per image: ``masks`` (B, C, H, W) bool, ``iou_predictions`` (B, C),
            ``low_res_logits`` (B, C, 256, 256).
        """
        images = torch.stack([self.preprocess(x["image"]) for x in batched_input], dim=0)
        embeddings = self.image_encoder(images)
        outputs = []
        for record, embedding in zip(batched_input, embeddings, strict=True):
            points = None
            if "point_coords" in record:
                points = (record["point_coords"], record["point_labels"])
            sparse, dense = self.prompt_encoder(
                points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
            )
            low_res, iou = self.mask_decoder(
                image_embeddings=embedding.unsqueeze(0),
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            masks = self.postprocess_masks(
                low_res, tuple(record["image"].shape[-2:]), tuple(record["original_size"])
            )
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou,
                    "low_res_logits": low_res,
                }
            )
        return outputs
