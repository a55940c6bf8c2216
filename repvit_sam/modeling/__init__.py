"""Network modules of RepViT-SAM (tensors in, tensors out).

The names of segment-anything's, MobileSAM's and the official RepViT-SAM's ``modeling``
package are all here (``ImageEncoderViT`` and ``TinyViT`` included), so their imports work.
"""

from __future__ import annotations

from repvit_sam.modeling.common import LayerNorm2d, MLPBlock
from repvit_sam.modeling.image_encoder import ImageEncoderViT
from repvit_sam.modeling.mask_decoder import MaskDecoder
from repvit_sam.modeling.prompt_encoder import PromptEncoder
from repvit_sam.modeling.repvit import RepViT
from repvit_sam.modeling.sam import Sam
from repvit_sam.modeling.tiny_vit_sam import TinyViT
from repvit_sam.modeling.transformer import TwoWayTransformer

__all__ = [
    "ImageEncoderViT",
    "LayerNorm2d",
    "MLPBlock",
    "MaskDecoder",
    "PromptEncoder",
    "RepViT",
    "Sam",
    "TinyViT",
    "TwoWayTransformer",
]
