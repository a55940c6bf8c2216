"""``SamOnnxModel``: segment-anything's ONNX decoder wrapper, under its official import path.

``from repvit_sam.utils.onnx import SamOnnxModel`` is what the official
``scripts/export_onnx_model.py`` of segment-anything, MobileSAM and RepViT-SAM and SAM's ONNX
notebook import. It has their constructor, inputs, outputs and options
(``return_single_mask``, ``use_stability_score``, ``return_extra_metrics``) and exports to the
same graph contract. Our own exporter, :mod:`repvit_sam.export.onnx` (``SamOnnxDecoder``,
``export_onnx``), shares its prompt embedding and adds N objects per call and a fused encoder.

Example:
    >>> onnx_model = SamOnnxModel(sam, return_single_mask=True)
    >>> masks, scores, low_res_logits = onnx_model(
    ...     embedding, coords, labels, mask_input, has_mask_input, orig_im_size
    ... )
"""

from __future__ import annotations

import torch

from repvit_sam.export.onnx import SamOnnxDecoder
from repvit_sam.modeling.sam import Sam
from repvit_sam.utils.amg import calculate_stability_score

__all__ = ["SamOnnxModel"]


class SamOnnxModel(SamOnnxDecoder):
    """Prompt encoder + mask decoder + mask post-processing, traceable for ONNX export.

    Not meant to be called directly but exported (SAM's contract): one static graph for
    every prompt combination. Boxes arrive as label-2/3 corner points, a point with label -1
    pads a prompt without a box, and ``has_mask_input`` switches the mask prompt.

    Args:
        model: the SAM model; its prompt encoder and mask decoder are used (shared).
        return_single_mask: return one mask per prompt set, chosen as SAM does (the
            single-mask token when there are more than 2.5 prompt points, counting padding
            and box corners, else the best multimask token), instead of all four tokens.
        use_stability_score: report the stability score of the low-res logits (offset 1.0)
            instead of the predicted IoU.
        return_extra_metrics: also return the stability score and the area of the upscaled
            masks (five outputs instead of three).
    """

    def __init__(
        self,
        model: Sam,
        return_single_mask: bool,
        use_stability_score: bool = False,
        return_extra_metrics: bool = False,
    ) -> None:
        super().__init__(model, return_single_mask=return_single_mask)
        self.model = model
        self.use_stability_score = use_stability_score
        self.stability_score_offset = 1.0
        self.return_extra_metrics = return_extra_metrics

    @staticmethod
    def resize_longest_image_size(
        input_image_size: torch.Tensor, longest_side: int
    ) -> torch.Tensor:
        """(h, w) int64 of an (H, W) size scaled to long side ``longest_side``, in-graph.

        Computed in float32, as SAM's ONNX wrapper does. The predictor's
        ``ResizeLongestSide`` rounds in float64; the two agree on every image whose long side
        is at most 7100 pixels (checked exhaustively) and differ by one pixel on a few larger
        ones.
        """
        size = input_image_size.to(torch.float32)
        scale = longest_side / torch.max(size)
        return torch.floor(scale * size + 0.5).to(torch.int64)

    def _input_hw(self, orig_im_size: torch.Tensor) -> torch.Tensor:
        return self.resize_longest_image_size(orig_im_size, self.img_size)

    def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """(N, M, 256, 256) low-res logits -> (N, M, H, W) logits at ``orig_im_size`` (H, W),
        with the float32 size rounding of :meth:`resize_longest_image_size`."""
        return self._upscale(masks, orig_im_size)

    def select_masks(
        self, masks: torch.Tensor, iou_preds: torch.Tensor, num_points: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per prompt set from all four tokens, by SAM's rule (see the class)."""
        return self._select_single(masks, iou_preds, num_points)

    @torch.no_grad()
    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Decode N prompt sets against one image embedding.

        Args:
            image_embeddings: (1, 256, 64, 64) float32 image embedding.
            point_coords: (N, P, 2) float32 XY in the resized 1024 frame.
            point_labels: (N, P) float32: -1 padding, 0 negative, 1 positive, 2 box top-left,
                3 box bottom-right.
            mask_input: (N, 1, 256, 256) float32 low-res logits.
            has_mask_input: (1,) or (N,) float32, 1 to use ``mask_input``, 0 to ignore it.
            orig_im_size: (2,) float32 (H, W) of the original image.

        Returns:
            ``masks`` (N, M, H, W) float32 logits at the original size, ``scores`` (N, M)
            (predicted IoU or stability score) and ``low_res_masks`` (N, M, 256, 256); with
            ``return_extra_metrics``: masks, scores, ``stability_scores`` (N, M), ``areas``
            (N, M) int64 pixel counts of the masks, low_res_masks. M = 1 with
            ``return_single_mask``, else 4 (token 0 single-mask, 1-3 multimask).
        """
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_masks(mask_input, has_mask_input)
        masks, scores = self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        threshold = self.model.mask_threshold
        if self.use_stability_score:
            scores = calculate_stability_score(masks, threshold, self.stability_score_offset)
        if self.return_single_mask:
            masks, scores = self.select_masks(masks, scores, point_coords.shape[1])
        upscaled = self.mask_postprocessing(masks, orig_im_size)
        if self.return_extra_metrics:
            stability = calculate_stability_score(upscaled, threshold, self.stability_score_offset)
            areas = (upscaled > threshold).sum(-1).sum(-1)
            return upscaled, scores, stability, areas, masks
        return upscaled, scores, masks
