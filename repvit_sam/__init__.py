"""RepViT-SAM with the segment-anything API.

Besides our own names, the package top has every name of segment-anything's, MobileSAM's and
the official RepViT-SAM's (``build_sam``, ``build_sam_vit_h/l/b/t``, ``sam_model_registry``,
``SamPredictor``, ``SamAutomaticMaskGenerator``), so their ``from ... import`` lines work with
only the package name changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repvit_sam.build import build_repvit_sam, load_checkpoint, sam_model_registry

# As in segment-anything, importing the names from the ``build_sam`` module makes the package
# attribute ``build_sam`` the function; ``from repvit_sam.build_sam import ...`` still works.
from repvit_sam.build_sam import (
    build_sam,
    build_sam_repvit,
    build_sam_vit_b,
    build_sam_vit_h,
    build_sam_vit_l,
    build_sam_vit_t,
)
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
    "build_sam",
    "build_sam_repvit",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "build_sam_vit_t",
    "load_checkpoint",
    "sam_model_registry",
]


def __getattr__(name: str) -> Any:
    # The generator pulls in OpenCV and pycocotools helpers; import it only when asked for.
    if name == "SamAutomaticMaskGenerator":
        from repvit_sam.automatic_mask_generator import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator
    raise AttributeError(f"module 'repvit_sam' has no attribute {name!r}")
