"""Export RepViT-SAM to ONNX and Core ML (the runtime that runs the graphs: ``repvit_sam.runtime``).

``onnx``/``onnxruntime`` (``pip install -e .[export]``) and ``coremltools``
(``pip install -e .[coreml]``) are imported only when a function needs them, so importing this
package costs nothing extra.

Example:
    >>> from repvit_sam import build_repvit_sam
    >>> from repvit_sam.export import export_onnx
    >>> from repvit_sam.runtime import OnnxSegmenter
    >>> export_onnx(build_repvit_sam("weights/repvit_sam.pt", fuse=True), "exported/")
    >>> segmenter = OnnxSegmenter.from_dir("exported/")  # a drop-in for VideoTracker

Command line: ``python -m repvit_sam.export onnx --checkpoint PATH --out DIR``.
"""

from __future__ import annotations

from repvit_sam.export.coreml import (
    CoreMLExportError,
    convert_decoder_coreml,
    convert_encoder_coreml,
    export_coreml,
)
from repvit_sam.export.onnx import (
    SamOnnxDecoder,
    export_decoder_onnx,
    export_encoder_onnx,
    export_onnx,
)

__all__ = [
    "CoreMLExportError",
    "OnnxSegmenter",
    "SamOnnxDecoder",
    "convert_decoder_coreml",
    "convert_encoder_coreml",
    "export_coreml",
    "export_decoder_onnx",
    "export_encoder_onnx",
    "export_onnx",
]

