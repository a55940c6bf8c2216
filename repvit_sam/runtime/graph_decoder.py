"""The prompt decoder as an exported graph: SAM's ONNX decoder contract over any session.

:class:`GraphDecoder` turns checked :class:`~repvit_sam.segmenter.DecodePrompts` into the
feeds of ``decoder.onnx`` (``repvit_sam.export.onnx``) and its outputs back into a
:class:`~repvit_sam.segmenter.MaskPrediction`. The session is anything with ONNX Runtime's
``run(output_names, feeds)``: an ``onnxruntime.InferenceSession``, or OpenVINO's compiled model
behind :class:`repvit_sam.runtime.runners.OpenVinoSession`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from repvit_sam.export.onnx import DECODER_OUTPUT_NAMES
from repvit_sam.segmenter import DecodePrompts, ImageEmbedding, MaskPrediction
from repvit_sam.utils.transforms import ResizeLongestSide


def _as_numpy(value: np.ndarray | torch.Tensor, dtype: type[np.generic]) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


class GraphDecoder:
    """Decode N objects' prompts with one call of an exported decoder graph.

    Results match ``SamPredictor.decode`` up to float rounding: coordinate transforms are the
    same code, and the graph embeds the same prompts (boxes as label-2/3 corners, a padding
    point when there is no box).

    Args:
        session: the decoder graph (``run(output_names, feeds)``), exported with all 4 mask
            tokens.
        img_size: the model frame's side (1024).
        mask_threshold: logit above which a pixel is foreground.
    """

    def __init__(self, session: Any, img_size: int, mask_threshold: float = 0.0) -> None:
        self.session = session
        self.img_size = img_size
        self.mask_threshold = mask_threshold
        self.transform = ResizeLongestSide(img_size)

    @property
    def mask_input_hw(self) -> tuple[int, int]:
        """(h, w) of the low-res logits the graph takes and gives (256, 256 for SAM)."""
        return self.img_size // 4, self.img_size // 4

    def _prompt_points(
        self, orig_hw: tuple[int, int], prompts: DecodePrompts
    ) -> tuple[np.ndarray, np.ndarray]:
        """Checked prompts as SAM's ONNX graph takes them: (N, P, 2) model-frame coords, (N, P)
        float labels, boxes as label-2/3 corners; (N, 0) arrays for mask-only prompts."""
        n = prompts.num_objects
        coord_parts: list[torch.Tensor] = []
        label_parts: list[torch.Tensor] = []
        if prompts.points_xy is not None and prompts.point_labels is not None:
            coord_parts.append(self.transform.apply_coords_torch(prompts.points_xy, orig_hw))
            label_parts.append(prompts.point_labels.float())
        if prompts.boxes_xyxy is not None:
            corners = self.transform.apply_boxes_torch(prompts.boxes_xyxy, orig_hw)
            coord_parts.append(corners.reshape(-1, 2, 2))
            label_parts.append(torch.tensor([[2.0, 3.0]]).expand(n, 2))
        elif coord_parts:
            # PromptEncoder pads point-only prompts with a "not a point" token; SAM's ONNX
            # graph leaves that to the caller.
            coord_parts.append(torch.zeros(n, 1, 2))
            label_parts.append(torch.full((n, 1), -1.0))
        if not coord_parts:
            # Mask-only prompts: no sparse tokens at all, as PromptEncoder gives for masks alone.
            return np.zeros((n, 0, 2), np.float32), np.zeros((n, 0), np.float32)
        coords = torch.cat(coord_parts, dim=1).numpy().astype(np.float32, copy=False)
        labels = torch.cat(label_parts, dim=1).numpy().astype(np.float32, copy=False)
        return coords, labels

    def __call__(self, embedding: ImageEmbedding, prompts: DecodePrompts) -> MaskPrediction:
        """Decode checked prompts against an embedding of SAM's full 64x64 grid.

        Args:
            embedding: an exact-mode embedding.
            prompts: point labels 1 positive, 0 negative, -1 padding (2 and 3 would act as
                box corners, as in SAM's ONNX graph; ``SamPredictor`` gives them no label term).

        Returns:
            ``masks`` (N, C, H, W) bool at the original size, ``iou_scores`` (N, C) and
            ``low_res_logits`` (N, C, 256, 256) float32, as CPU torch tensors; C = 3 or 1.

        Raises:
            TypeError: ``embedding`` is not an ``ImageEmbedding``.
        """
        if not isinstance(embedding, ImageEmbedding):
            raise TypeError(
                f"embedding: expected the ImageEmbedding returned by encode(), got "
                f"{type(embedding).__name__}"
            )
        prompts = prompts.to("cpu")
        coords, labels = self._prompt_points(embedding.orig_hw, prompts)
        # One flag for all N objects: the mask prompt is all or nothing, as in SamPredictor.
        has_mask = np.ones(1, np.float32)
        if prompts.mask_logits is None:
            mask_input = np.zeros((prompts.num_objects, 1, *self.mask_input_hw), np.float32)
            has_mask = np.zeros(1, np.float32)
        else:
            mask_input = prompts.mask_logits.numpy()
        feeds = {
            "image_embeddings": _as_numpy(embedding.features, np.float32),
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": np.ascontiguousarray(mask_input),
            "has_mask_input": has_mask,
            "orig_im_size": np.asarray(embedding.orig_hw, np.float32),
        }
        masks, iou, low_res = self.session.run(list(DECODER_OUTPUT_NAMES), feeds)
        chosen = slice(1, None) if prompts.multimask_output else slice(0, 1)
        return MaskPrediction(
            masks=torch.from_numpy(np.ascontiguousarray(masks[:, chosen] > self.mask_threshold)),
            iou_scores=torch.from_numpy(np.ascontiguousarray(iou[:, chosen])),
            low_res_logits=torch.from_numpy(np.ascontiguousarray(low_res[:, chosen])),
        )
