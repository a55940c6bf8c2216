"""Network modules of RepViT-SAM (tensors in, tensors out)."""

from __future__ import annotations

from repvit_sam.modeling.common import LayerNorm2d, MLPBlock
from repvit_sam.modeling.mask_decoder import MaskDecoder
from repvit_sam.modeling.prompt_encoder import PromptEncoder
from repvit_sam.modeling.repvit import RepViT
from repvit_sam.modeling.sam import Sam
from repvit_sam.modeling.transformer import TwoWayTransformer

__all__ = [
    "LayerNorm2d",
    "MLPBlock",
    "MaskDecoder",
    "PromptEncoder",
    "RepViT",
    "Sam",
    "TwoWayTransformer",
]
