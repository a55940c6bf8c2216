"""Core ML export of RepViT-SAM's image encoder and prompt decoder (``coremltools``, lazy).

- ``encoder.mlpackage``: ``image`` (1, 3, S, S) float32, normalised and zero-padded exactly as
  for ``encoder.onnx``, to ``image_embeddings`` (1, 256, S/16, S/16). Unlike the official
  ``scripts/export_coreml_encoder.py``, the encoder is BN/RepVGG-fused first and the input and
  output are named.
- ``decoder.mlpackage``: the inputs of ``decoder.onnx`` without ``orig_im_size``
  (``image_embeddings``, ``point_coords``, ``point_labels``, ``mask_input``,
  ``has_mask_input``), with one object per call (N = 1) and P in 1..``max_points``, and
  outputs ``iou_predictions`` (1, 4) and ``low_res_masks`` (1, 4, 256, 256). N is fixed
  (loop over objects): with a flexible N, torch.export specialises N to a constant in the
  decoder, and coremltools 9.0's TorchScript frontend cannot convert the decoder's
  ``repeat_interleave`` of the embedding ("Cannot add const [None, 1, 1, 1]"). Up-scaling to the original
  size is left to the caller (``Sam.postprocess_masks`` semantics): its output shape depends
  on input values, which Core ML programs cannot express. The official Core ML decoder fixes
  that size to 1024x1024 instead.

Conversion works on Linux; running the models (``MLModel.predict``) needs macOS.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from repvit_sam.build import fused_copy
from repvit_sam.export.onnx import (
    DECODER_INPUT_NAMES,
    ENCODER_OUTPUT_NAMES,
    SamOnnxDecoder,
    decoder_dummy_inputs,
)
from repvit_sam.modeling.sam import Sam

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

ENCODER_FILENAME = "encoder.mlpackage"
DECODER_FILENAME = "decoder.mlpackage"
COREML_DECODER_INPUT_NAMES = DECODER_INPUT_NAMES[:5]
COREML_DECODER_OUTPUT_NAMES = ("iou_predictions", "low_res_masks")

_INSTALL_HINT = "pip install -e .[coreml]  (or: pip install coremltools)"


class CoreMLExportError(RuntimeError):
    """coremltools could not convert a graph; the message says which and why, in one line."""


def _import_coremltools() -> ModuleType:
    try:
        import coremltools
    except ImportError as exc:
        raise ImportError(
            f"Core ML export needs the 'coremltools' package: {_INSTALL_HINT}"
        ) from exc
    return coremltools


def _precision(ct: ModuleType, precision: str) -> Any:
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision: expected 'fp16' or 'fp32', got {precision!r}")
    return ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _convert(
    ct: ModuleType,
    what: str,
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic_shapes: dict[str, Any] | None,
    output_names: tuple[str, ...],
    precision: str,
) -> Any:
    # torch.export, not torch.jit.trace: with coremltools 9.0 and numpy 2.4 the TorchScript
    # frontend fails on the decoder even at N = 1 ("only 0-dimensional arrays can be converted
    # to Python scalars": an int() of a 1-element shape array), while the ExportedProgram
    # frontend converts both graphs. Input names are the forward() argument names.
    compute_precision = _precision(ct, precision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            with torch.no_grad():
                program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
            program = program.run_decompositions({})
            return ct.convert(
                program,
                convert_to="mlprogram",
                outputs=[ct.TensorType(name=name) for name in output_names],
                compute_precision=compute_precision,
                minimum_deployment_target=ct.target.iOS16,
            )
        except Exception as exc:  # torch.export and coremltools raise many unrelated types
            raise CoreMLExportError(
                f"coremltools {ct.__version__} could not convert the {what} exported with "
                f"torch {torch.__version__}: {_one_line(exc)}"
            ) from exc


class _CoreMLEncoder(nn.Module):
    """The image encoder with its input argument named ``image`` (``ENCODER_INPUT_NAMES``)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


def convert_encoder_coreml(
    model: Sam, *, resolution: int | None = None, precision: str = "fp16", fuse: bool = True
) -> Any:
    """Convert the (fused) image encoder to a Core ML ML program.

    Args:
        model: the source model (left unchanged).
        resolution: square input side S; ``model.img_size`` (1024) by default. The encoder is
            fully convolutional, so a smaller S gives a smaller-input model (for tests).
        precision: "fp16" or "fp32" compute precision.
        fuse: fold BN and RepVGG branches before export.

    Returns:
        The ``coremltools.models.MLModel``.

    Raises:
        ImportError: coremltools is missing.
        CoreMLExportError: the converter failed (one-line reason).
    """
    ct = _import_coremltools()
    size = int(resolution or model.img_size)
    source = fused_copy(model.image_encoder) if fuse else copy.deepcopy(model.image_encoder)
    encoder = _CoreMLEncoder(source.cpu()).eval()
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return _convert(ct, "image encoder", encoder, (example,), None, ENCODER_OUTPUT_NAMES, precision)


class _CoreMLDecoder(nn.Module):
    """``SamOnnxDecoder`` without the value-dependent up-scaling (five inputs, two outputs)."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.core = SamOnnxDecoder(model)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        low_res, iou = self.core.predict_low_res(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        return iou, low_res


def convert_decoder_coreml(model: Sam, *, max_points: int = 16, precision: str = "fp32") -> Any:
    """Convert the prompt decoder (one object, all 4 mask tokens, low-res) to an ML program.

    Args:
        model: the source model.
        max_points: upper bound of the flexible P axis (box corners and padding count).
        precision: "fp16" or "fp32" compute precision (fp32 by default: the decoder is small,
            and its logits are thresholded at 0).

    Returns:
        The ``coremltools.models.MLModel``.

    Raises:
        ImportError: coremltools is missing.
        CoreMLExportError: the converter failed (one-line reason).
    """
    ct = _import_coremltools()
    if model.device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    wrapper = _CoreMLDecoder(model).eval()
    example = tuple(t.cpu() for t in decoder_dummy_inputs(model, num_objects=1, num_points=3))
    num_points = torch.export.Dim("num_points", min=1, max=max_points)
    dynamic_shapes = {
        "image_embeddings": None,
        "point_coords": {1: num_points},
        "point_labels": {1: num_points},
        "mask_input": None,
        "has_mask_input": None,
    }
    return _convert(
        ct,
        "prompt decoder",
        wrapper,
        example[:5],
        dynamic_shapes,
        COREML_DECODER_OUTPUT_NAMES,
        precision,
    )


def export_coreml(
    model: Sam,
    out_dir: PathLike,
    *,
    resolution: int | None = None,
    encoder_precision: str = "fp16",
    decoder: bool = True,
    decoder_precision: str = "fp32",
) -> dict[str, Path]:
    """Write ``encoder.mlpackage`` (and ``decoder.mlpackage``) into ``out_dir``.

    Args:
        model: the source model (eval mode).
        out_dir: created if missing.
        resolution: encoder input side; ``model.img_size`` by default.
        encoder_precision: "fp16" (the official script's default) or "fp32".
        decoder: also convert the prompt decoder.
        decoder_precision: "fp16" or "fp32".

    Returns:
        {"encoder": path} plus {"decoder": path} when ``decoder``.

    Raises:
        ImportError: coremltools is missing.
        CoreMLExportError: a conversion failed (one-line reason).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    encoder = convert_encoder_coreml(model, resolution=resolution, precision=encoder_precision)
    written["encoder"] = out / ENCODER_FILENAME
    encoder.save(str(written["encoder"]))
    logger.info("wrote %s", written["encoder"])
    if decoder:
        mlmodel = convert_decoder_coreml(model, precision=decoder_precision)
        written["decoder"] = out / DECODER_FILENAME
        mlmodel.save(str(written["decoder"]))
        logger.info("wrote %s", written["decoder"])
    return written
