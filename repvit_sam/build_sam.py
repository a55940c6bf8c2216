"""``repvit_sam.build_sam``: the module path of the official packages' builders.

segment-anything, MobileSAM and the official RepViT-SAM define their builders and
``sam_model_registry`` in ``<package>/build_sam.py``; code that imports them from there runs
unchanged. Everything lives in :mod:`repvit_sam.build`, which this module re-exports, together
with the modeling classes the official module has in its namespace.

Example:
    >>> from repvit_sam.build_sam import sam_model_registry
    >>> sam = sam_model_registry["vit_t"](checkpoint="weights/mobile_sam.pt")
"""

from __future__ import annotations

from repvit_sam.build import (
    build_repvit_sam,
    build_sam,
    build_sam_repvit,
    build_sam_vit_b,
    build_sam_vit_h,
    build_sam_vit_l,
    build_sam_vit_t,
    sam_model_registry,
)
from repvit_sam.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    RepViT,
    Sam,
    TinyViT,
    TwoWayTransformer,
)

__all__ = [
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "RepViT",
    "Sam",
    "TinyViT",
    "TwoWayTransformer",
    "build_repvit_sam",
    "build_sam",
    "build_sam_repvit",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "build_sam_vit_t",
    "sam_model_registry",
]
