"""SamAutomaticMaskGenerator: SAM's "segment everything" over a grid of point prompts.

Same constructor, defaults, algorithm and output records as segment-anything's generator, so
code written for SAM works unchanged; ``max_num_masks`` is the one addition (SAM-PT keeps the
top 100 proposals on UVO). NMS is implemented in pure torch (``utils.amg.batched_nms``), so
torchvision is not needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from repvit_sam.modeling.sam import Sam
from repvit_sam.predictor import SamPredictor, as_rgb_uint8
from repvit_sam.utils.amg import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    batched_nms,
    box_area,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    coco_encode_rle,
    generate_crop_boxes,
    import_pycocotools_mask,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    remove_small_regions,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class SamAutomaticMaskGenerator:
    """Generate masks for a whole image by prompting SAM with a grid of single points.

    Per crop (only the full image when ``crop_n_layers == 0``): encode the crop, decode each
    grid point as one positive click with 3 candidates, drop candidates with a low predicted
    IoU or stability score, drop masks cut by a crop edge, and run box NMS scored by predicted
    IoU. Across several crops an extra NMS prefers masks from smaller crops. Optionally, small
    holes and islands are then cleaned up and NMS is run again.

    Args:
        model: the SAM model used for every prediction.
        points_per_side: grid points along each image side (n x n prompts); None when
            ``point_grids`` is given instead.
        points_per_batch: prompts decoded together; higher is faster but uses more memory.
        pred_iou_thresh: keep masks whose predicted IoU is above this; higher is stricter,
            0 disables the filter.
        stability_score_thresh: keep masks whose stability score is at least this; higher is
            stricter, 0 disables the filter.
        stability_score_offset: how far the logit threshold moves each way to compute the
            stability score.
        box_nms_thresh: IoU above which NMS drops the lower-scored mask within a crop; lower
            is stricter.
        crop_n_layers: extra layers of crops; layer i has 2**i crops per side.
        crop_nms_thresh: box IoU threshold for the NMS across crops; lower is stricter.
        crop_overlap_ratio: crop overlap as a fraction of the image short side at layer 1
            (scaled down for deeper layers).
        crop_n_points_downscale_factor: layer i samples ``points_per_side / factor**i``
            points per side.
        point_grids: explicit grids, one per layer: (n_i, 2) float XY in [0, 1] of the crop.
        min_mask_region_area: fill holes and remove islands smaller than this many pixels
            (needs OpenCV); 0 disables the clean-up.
        output_mode: "binary_mask" ((H, W) bool arrays), "uncompressed_rle" or "coco_rle"
            (needs pycocotools). RLE is much smaller for large images.
        max_num_masks: keep only this many masks, the highest predicted IoU first; None keeps
            all (in SAM's order).
        decoder: the predictor's decoder (keyword only): ``"batched"`` (default, faster) or
            ``"reference"`` (SAM's own, for records equal to segment-anything's bit for bit);
            see :class:`repvit_sam.SamPredictor`.

    Raises:
        ValueError: both or neither of ``points_per_side`` and ``point_grids``, a grid count
            that does not match ``crop_n_layers``, an unknown ``output_mode`` or ``decoder``,
            or a bad ``max_num_masks``.
        ImportError: ``output_mode="coco_rle"`` without pycocotools.

    Example:
        >>> generator = SamAutomaticMaskGenerator(sam_model_registry["repvit"](checkpoint=path))
        >>> records = generator.generate(rgb)  # rgb: (H, W, 3) uint8
        >>> best = max(records, key=lambda r: r["predicted_iou"])["segmentation"]
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        max_num_masks: int | None = None,
        *,
        decoder: str = "batched",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("exactly one of points_per_side or point_grids must be given")
        if points_per_side is not None:
            self.point_grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            assert point_grids is not None
            self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(self.point_grids) != crop_n_layers + 1:
                raise ValueError(
                    f"point_grids: expected crop_n_layers + 1 = {crop_n_layers + 1} grids, "
                    f"got {len(self.point_grids)}"
                )
            for grid in self.point_grids:
                if grid.ndim != 2 or grid.shape[1] != 2:
                    raise ValueError(f"point_grids: expected (N, 2) arrays, got {grid.shape}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode: expected one of {OUTPUT_MODES}, got {output_mode!r}")
        if max_num_masks is not None and max_num_masks < 1:
            raise ValueError(f"max_num_masks: expected None or >= 1, got {max_num_masks}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch: expected >= 1, got {points_per_batch}")
        if output_mode == "coco_rle":
            import_pycocotools_mask()  # fail now, not after minutes of inference

        self.predictor = SamPredictor(model, decoder=decoder)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.max_num_masks = max_num_masks

    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Generate masks for an image.

        Args:
            image: (H, W, 3) uint8 RGB image (or floating in [0, 1], as SAM accepts).

        Returns:
            One dict per mask with keys:

            - ``segmentation``: (H, W) bool array, or an uncompressed / COCO RLE dict,
              depending on ``output_mode``;
            - ``area`` (int): pixels in the mask;
            - ``bbox`` (list of 4): XYWH in image pixels (w = last column - first column);
            - ``predicted_iou`` (float): the model's quality estimate;
            - ``point_coords`` (list with one [x, y]): the prompt, in image pixels;
            - ``stability_score`` (float);
            - ``crop_box`` (list of 4): XYWH of the crop the mask came from.

            Without crops or small-region clean-up the order is descending predicted IoU (NMS
            order), as in SAM; the clean-up puts unchanged masks first, as SAM's does. With
            ``max_num_masks`` the order is always descending predicted IoU.

        Raises:
            ValueError: the image is not (H, W, 3) uint8 or floating in [0, 1].
        """
        image = as_rgb_uint8(image)
        mask_data = self._generate_masks(image)

        if self.min_mask_region_area > 0:
            mask_data = self.postprocess_small_regions(
                mask_data,
                self.min_mask_region_area,
                max(self.box_nms_thresh, self.crop_nms_thresh),
            )

        if len(mask_data) == 0:
            return []

        if self.max_num_masks is not None:
            # Stable sort: equal scores keep SAM's order.
            order = np.argsort(-np.asarray(mask_data["iou_preds"]), kind="stable")
            mask_data.filter(order[: self.max_num_masks])

        if self.output_mode == "coco_rle":
            segmentations: list[Any] = [coco_encode_rle(rle) for rle in mask_data["rles"]]
        elif self.output_mode == "binary_mask":
            segmentations = [rle_to_mask(rle) for rle in mask_data["rles"]]
        else:
            segmentations = list(mask_data["rles"])

        records = []
        for idx, segmentation in enumerate(segmentations):
            records.append(
                {
                    "segmentation": segmentation,
                    "area": area_from_rle(mask_data["rles"][idx]),
                    "bbox": box_xyxy_to_xywh(mask_data["boxes"][idx]).tolist(),
                    "predicted_iou": float(mask_data["iou_preds"][idx]),
                    "point_coords": [mask_data["points"][idx].tolist()],
                    "stability_score": float(mask_data["stability_score"][idx]),
                    "crop_box": box_xyxy_to_xywh(mask_data["crop_boxes"][idx]).tolist(),
                }
            )
        return records

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        orig_hw = (int(image.shape[0]), int(image.shape[1]))
        crop_boxes, layer_idxs = generate_crop_boxes(
            orig_hw, self.crop_n_layers, self.crop_overlap_ratio
        )
        data = MaskData()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs, strict=True):
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_hw))

        if len(crop_boxes) > 1 and len(data) > 0:
            # A mask found in several crops: keep the one from the smallest crop, which saw
            # the object at the highest resolution.
            scores = 1 / box_area(data["crop_boxes"]).float()
            keep = batched_nms(
                data["boxes"].float(),
                scores.to(data["boxes"].device),
                torch.zeros_like(data["boxes"][:, 0]),
                iou_threshold=self.crop_nms_thresh,
            )
            data.filter(keep)

        data.to_numpy()
        return data

    def _process_crop(
        self,
        image: np.ndarray,
        crop_box: list[int],
        crop_layer_idx: int,
        orig_hw: tuple[int, int],
    ) -> MaskData:
        x0, y0, x1, y1 = crop_box
        cropped = np.ascontiguousarray(image[y0:y1, x0:x1, :])
        cropped_hw = (int(cropped.shape[0]), int(cropped.shape[1]))
        self.predictor.set_image(cropped)

        # Grid in [0, 1] -> XY pixels of the crop.
        points_scale = np.array(cropped_hw, dtype=np.float64)[None, ::-1]
        points_for_crop = self.point_grids[crop_layer_idx] * points_scale

        data = MaskData()
        for (points,) in batch_iterator(self.points_per_batch, points_for_crop):
            data.cat(self._process_batch(points, cropped_hw, crop_box, orig_hw))
        self.predictor.reset_image()

        if len(data) == 0:
            return data
        keep = batched_nms(
            data["boxes"].float(),
            data["iou_preds"].float(),
            torch.zeros_like(data["boxes"][:, 0]),
            iou_threshold=self.box_nms_thresh,
        )
        data.filter(keep)

        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box] * len(data), dtype=torch.int64)
        return data

    def _process_batch(
        self,
        points: np.ndarray,
        cropped_hw: tuple[int, int],
        crop_box: list[int],
        orig_hw: tuple[int, int],
    ) -> MaskData:
        orig_h, orig_w = orig_hw
        device = self.predictor.device

        in_points = torch.as_tensor(
            self.predictor.transform.apply_coords(points, cropped_hw),
            dtype=torch.float32,
            device=device,
        )
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int64, device=device)
        mask_logits, iou_preds, _ = self.predictor.predict_torch(
            in_points[:, None, :],
            in_labels[:, None],
            multimask_output=True,
            return_logits=True,
        )
        n_candidates = mask_logits.shape[1]
        # (B, 3, H, W) -> (3B, H, W); np.repeat lines each point up with its 3 candidates.
        data = MaskData(
            masks=mask_logits.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1).float(),
            points=torch.as_tensor(points.repeat(n_candidates, axis=0), device=device),
        )
        del mask_logits

        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)

        data["stability_score"] = calculate_stability_score(
            data["masks"], self.predictor.model.mask_threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)

        data["masks"] = data["masks"] > self.predictor.model.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])

        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            data.filter(keep)

        data["rles"] = mask_to_rle_pytorch(uncrop_masks(data["masks"], crop_box, orig_h, orig_w))
        del data["masks"]
        return data

    @staticmethod
    def postprocess_small_regions(
        mask_data: MaskData, min_area: int, nms_thresh: float
    ) -> MaskData:
        """Fill small holes and remove small islands, then re-run NMS.

        Masks that the clean-up changed get score 0 and unchanged ones 1 in this NMS, so an
        untouched mask wins over an overlapping edited one. Changed masks get new RLEs and
        boxes.

        Args:
            mask_data: numpy fields "rles", "boxes" ((N, 4) int XYXY), "crop_boxes" etc.
            min_area: regions smaller than this many pixels are changed.
            nms_thresh: box IoU above which the lower-scored mask is dropped.

        Returns:
            The same container, edited and filtered in place.
        """
        if len(mask_data) == 0:
            return mask_data

        new_masks = []
        scores = []
        for rle in mask_data["rles"]:
            mask = rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(torch.as_tensor(mask)[None])
            scores.append(float(not (changed_holes or changed_islands)))

        masks = torch.cat(new_masks, dim=0)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(
            boxes.float(),
            torch.as_tensor(scores),
            torch.zeros_like(boxes[:, 0]),
            iou_threshold=nms_thresh,
        )

        # Only kept masks that changed need a new RLE and box.
        for i in keep.tolist():
            if scores[i] == 0.0:
                mask_data["rles"][i] = mask_to_rle_pytorch(masks[i][None])[0]
                mask_data["boxes"][i] = boxes[i].numpy()
        mask_data.filter(keep)
        return mask_data
