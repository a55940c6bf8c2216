"""RepViT-SAM with the segment-anything API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repvit_sam.build import build_repvit_sam, load_checkpoint, sam_model_registry
from repvit_sam.modeling.sam import Sam
from repvit_sam.predictor import ImageEmbedding, MaskPrediction, SamPredictor

if TYPE_CHECKING:
    from repvit_sam.automatic_mask_generator import SamAutomaticMaskGenerator

__all__ = [
    "ImageEmbedding",
    "MaskPrediction",
    "Sam",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "build_repvit_sam",
    "load_checkpoint",
    "sam_model_registry",
]


def __getattr__(name: str) -> Any:
    # The generator pulls in OpenCV and pycocotools helpers; import it only when asked for.
    if name == "SamAutomaticMaskGenerator":
        from repvit_sam.automatic_mask_generator import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator
    raise AttributeError(f"module 'repvit_sam' has no attribute {name!r}")
