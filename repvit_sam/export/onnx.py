"""ONNX export of RepViT-SAM: the image encoder and the prompt decoder as two graphs.

Two graphs, as in segment-anything's ``scripts/export_onnx_model.py``:

- ``encoder.onnx``: (1, 3, 1024, 1024) float32 ``image``, already normalised and zero-padded
  (``Sam.preprocess``), to (1, 256, 64, 64) ``image_embeddings``. The encoder's BN and RepVGG
  branches are fused before export (the official scripts export unfused graphs).
- ``decoder.onnx``: SAM's ONNX decoder contract, widened to N objects per call. Inputs
  ``image_embeddings`` (1, 256, 64, 64), ``point_coords`` (N, P, 2) XY in the 1024 model
  frame, ``point_labels`` (N, P) float (-1 padding, 0 negative, 1 positive, 2 box top-left,
  3 box bottom-right), ``mask_input`` (N, 1, 256, 256), ``has_mask_input`` (N,) or (1,),
  ``orig_im_size`` (2,) float (H, W). Outputs ``masks`` (N, M, H, W) logits at the original
  size, ``iou_predictions`` (N, M) and ``low_res_masks`` (N, M, 256, 256). N and P are
  dynamic. By default M = 4: token 0 is the single-mask output and tokens 1-3 the multimask
  outputs, so one graph serves both ``multimask_output`` settings. With
  ``return_single_mask=True`` M = 1 and the token is chosen with SAM's ONNX rule (the
  single-mask token when there are at least 3 prompt points counting padding and box corners,
  else the multimask token with the best predicted IoU).

As in SAM's ONNX convention, the caller appends the (0, 0) padding point with label -1 when no
box is given; the runtime that runs these graphs for the video tracker
(:class:`repvit_sam.runtime.OnnxSegmenter`, re-exported here) does this.

``onnx`` and ``onnxruntime`` are optional (``pip install -e .[export]``) and imported lazily.
Export uses torch's TorchScript-based exporter (``dynamo=False``): the torch.export-based one
needs ``onnxscript``, which the ``export`` extra does not pull in.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from repvit_sam.build import fused_copy
from repvit_sam.modeling.sam import Sam

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

DEFAULT_OPSET = 17
ENCODER_FILENAME = "encoder.onnx"
DECODER_FILENAME = "decoder.onnx"

ENCODER_INPUT_NAMES = ("image",)
ENCODER_OUTPUT_NAMES = ("image_embeddings",)
DECODER_INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
DECODER_OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")

_INSTALL_HINT = "pip install -e .[export]  (or: pip install onnx onnxruntime)"

# Pre-processing facts written into encoder.onnx's metadata, so a runtime needs no torch model.
META_IMG_SIZE = "repvit_sam.img_size"
META_PIXEL_MEAN = "repvit_sam.pixel_mean"
META_PIXEL_STD = "repvit_sam.pixel_std"
META_MASK_OUTPUTS = "repvit_sam.mask_outputs"


def _import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the 'onnx' package: {_INSTALL_HINT}") from exc
    return onnx


class SamOnnxDecoder(nn.Module):
    """Prompt encoder + mask decoder + mask post-processing with SAM's ONNX signature.

    Differs from ``PromptEncoder`` in the ways SAM's ONNX wrapper does, so that one static
    graph covers every prompt combination: boxes arrive as label-2/3 corner points, the caller
    appends the padding point, and the mask prompt is switched by ``has_mask_input`` rather
    than by its presence. For the same prompts the embeddings equal ``PromptEncoder``'s
    bit for bit (the extra terms add exact zeros).

    Args:
        model: the source model; its prompt encoder and mask decoder are shared, not copied.
        return_single_mask: emit one mask per object chosen by SAM's ONNX rule instead of all
            four mask tokens.
    """

    def __init__(self, model: Sam, *, return_single_mask: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.img_size = model.img_size
        self.return_single_mask = return_single_mask

    def _embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        # +0.5 moves to pixel centres, as PromptEncoder does for points and box corners alike.
        embedding = pe.pe_layer.forward_with_coords(point_coords + 0.5, pe.input_image_size)
        labels = point_labels.unsqueeze(-1)
        embedding = torch.where(labels == -1, pe.not_a_point_embed.weight, embedding)
        for label, label_embed in enumerate(pe.point_embeddings):
            weight = cast(nn.Embedding, label_embed).weight
            embedding = embedding + (labels == label) * weight
        return embedding

    def _embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        has_mask = has_mask_input.reshape(-1, 1, 1, 1)
        mask_embedding = has_mask * pe.mask_downscaling(mask_input)
        return mask_embedding + (1 - has_mask) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)

    def _select_single(
        self, masks: torch.Tensor, iou: torch.Tensor, num_points: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # SAM's rule: a 1000-per-point bonus on token 0 past 2.5 points, so >= 3 prompt points
        # (padding and box corners included) pick the single-mask token, fewer pick the best
        # multimask token.
        bonus = torch.zeros_like(iou[:1])
        bonus[:, 0] = 1000.0
        best = torch.argmax(iou + (num_points - 2.5) * bonus, dim=1, keepdim=True)
        iou = torch.gather(iou, 1, best)
        index = best[:, :, None, None].expand(-1, -1, masks.shape[2], masks.shape[3])
        return torch.gather(masks, 1, index), iou

    def _input_hw(self, orig_im_size: torch.Tensor) -> torch.Tensor:
        """(h, w) int64 of the image inside the padded model frame, in-graph."""
        # ResizeLongestSide.get_preprocess_shape in float64, so sizes round exactly as there.
        orig = orig_im_size.to(torch.float64)
        return torch.floor(orig * (self.img_size / orig.max()) + 0.5).to(torch.int64)

    def _upscale(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(
            masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        input_hw = self._input_hw(orig_im_size)
        # Tensor bounds, not ints: the crop stays an input of the traced graph.
        masks = masks[..., : input_hw[0], : input_hw[1]]  # type: ignore[misc]
        orig_hw = orig_im_size.to(torch.int64)
        # Tensor sizes (not ints) keep the output size an input of the traced graph.
        size = (orig_hw[0], orig_hw[1])
        return F.interpolate(masks, size=size, mode="bilinear", align_corners=False)  # type: ignore[arg-type]

    def predict_low_res(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (N, M, 256, 256) and predicted IoU (N, M); arguments as in forward."""
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_masks(mask_input, has_mask_input)
        low_res, iou = self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        if self.return_single_mask:
            low_res, iou = self._select_single(low_res, iou, point_coords.shape[1])
        return low_res, iou

    @torch.no_grad()
    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode N prompt sets against one image embedding.

        Args:
            image_embeddings: (1, 256, 64, 64) float32 image embedding.
            point_coords: (N, P, 2) float32 XY in the padded 1024 model frame.
            point_labels: (N, P) float32: -1 padding, 0 negative, 1 positive, 2 box top-left,
                3 box bottom-right.
            mask_input: (N, 1, 256, 256) float32 low-res logits (ignored where the flag is 0).
            has_mask_input: (N,) or (1,) float32, 1 to use ``mask_input``, 0 to ignore it.
            orig_im_size: (2,) float32 (H, W) of the original image in pixels.

        Returns:
            ``masks`` (N, M, H, W) float32 logits at the original size, ``iou_predictions``
            (N, M), ``low_res_masks`` (N, M, 256, 256) logits in the padded frame; M = 4
            (token 0 single-mask, tokens 1-3 multimask) or 1 with ``return_single_mask``.
        """
        low_res, iou = self.predict_low_res(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        return self._upscale(low_res, orig_im_size), iou, low_res


def _torch_onnx_export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None,
    opset: int,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one (which needs
        # onnxscript); its tracer warnings about shape-dependent Python values are expected
        # here: every such value is recomputed in-graph (see SamOnnxDecoder).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )


def _finalize(
    path: Path,
    props: dict[str, str],
    output_dims: dict[str, Sequence[int | str]] | None = None,
) -> None:
    """Store metadata, pin output shapes the tracer left symbolic, and check the model."""
    onnx = _import_onnx()
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    pinned = output_dims or {}
    for output in proto.graph.output:
        if output.name not in pinned:
            continue
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(dims, pinned[output.name], strict=True):
            if isinstance(size, int):
                dim.dim_value = size
            else:
                dim.dim_param = size
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def export_encoder_onnx(
    model: Sam,
    path: PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    fuse: bool = True,
    input_hw: tuple[int, int] | None = None,
) -> Path:
    """Write the image encoder as ONNX with a fixed (1, 3, H, W) input.

    Args:
        model: the source model (left unchanged; a fused copy of the encoder is exported).
        path: the .onnx file to write.
        opset: ONNX opset version.
        fuse: fold BN and RepVGG branches first (exact in eval mode, a smaller faster graph).
        input_hw: (H, W), multiples of 16; default SAM's square (S, S), S = ``model.img_size``.
            Other sizes serve the fast modes (``repvit_sam.runtime.FastMode``).

    Returns:
        ``path`` as a Path. The graph maps ``image`` (1, 3, H, W) float32, normalised with the
        model's pixel mean and std and zero-padded bottom/right, to ``image_embeddings``
        (1, 256, H/16, W/16). The mean, std and S are stored in the model's metadata.
    """
    _import_onnx()
    path = Path(path)
    encoder = fused_copy(model.image_encoder) if fuse else copy.deepcopy(model.image_encoder).eval()
    size = model.img_size
    h, w = input_hw if input_hw is not None else (size, size)
    dummy = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _torch_onnx_export(
            encoder,
            (dummy.to(model.device),),
            path,
            input_names=ENCODER_INPUT_NAMES,
            output_names=ENCODER_OUTPUT_NAMES,
            dynamic_axes=None,
            opset=opset,
        )
    mean = cast(torch.Tensor, model.pixel_mean).flatten().tolist()
    std = cast(torch.Tensor, model.pixel_std).flatten().tolist()
    # 9 significant digits round-trip float32 exactly, so runtimes normalise bit for bit.
    _finalize(
        path,
        {
            META_IMG_SIZE: str(size),
            META_PIXEL_MEAN: ",".join(f"{v:.9g}" for v in mean),
            META_PIXEL_STD: ",".join(f"{v:.9g}" for v in std),
        },
    )
    logger.info("wrote %s", path)
    return path


def decoder_dummy_inputs(
    model: Sam, num_objects: int = 2, num_points: int = 3
) -> tuple[torch.Tensor, ...]:
    """Example decoder inputs in ``DECODER_INPUT_NAMES`` order, on the model's device.

    Args:
        model: supplies the device and geometry.
        num_objects: N.
        num_points: P.

    Returns:
        (image_embeddings (1, 256, 64, 64), point_coords (N, P, 2), point_labels (N, P),
        mask_input (N, 1, 256, 256), has_mask_input (N,), orig_im_size (2,)), float32.
    """
    gen = torch.Generator().manual_seed(0)
    pe = model.prompt_encoder
    emb_h, emb_w = pe.image_embedding_size
    mask_h, mask_w = pe.mask_input_size
    tensors = (
        torch.randn(1, pe.embed_dim, emb_h, emb_w, generator=gen),
        torch.rand(num_objects, num_points, 2, generator=gen) * model.img_size,
        torch.randint(-1, 4, (num_objects, num_points), generator=gen).float(),
        torch.randn(num_objects, 1, mask_h, mask_w, generator=gen),
        torch.ones(num_objects),
        torch.tensor([480.0, 640.0]),
    )
    return tuple(t.to(model.device) for t in tensors)


def export_decoder_onnx(
    model: Sam,
    path: PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    return_single_mask: bool = False,
) -> Path:
    """Write the prompt encoder + mask decoder as ONNX with SAM's ONNX decoder signature.

    Args:
        model: the source model.
        path: the .onnx file to write.
        opset: ONNX opset version.
        return_single_mask: one mask per object by SAM's rule (M = 1) instead of all 4 tokens.

    Returns:
        ``path`` as a Path; inputs and outputs are described in :class:`SamOnnxDecoder`, with
        dynamic ``num_objects`` (N) and ``num_points`` (P) axes.
    """
    _import_onnx()
    path = Path(path)
    wrapper = SamOnnxDecoder(model, return_single_mask=return_single_mask).eval()
    # N=2, P=3 so that no size-1 axis gets specialised into a broadcast by the tracer.
    dummy = decoder_dummy_inputs(model, num_objects=2, num_points=3)
    dynamic_axes = {
        "point_coords": {0: "num_objects", 1: "num_points"},
        "point_labels": {0: "num_objects", 1: "num_points"},
        "mask_input": {0: "num_objects"},
        "has_mask_input": {0: "num_mask_flags"},
        "masks": {0: "num_objects", 2: "height", 3: "width"},
        "iou_predictions": {0: "num_objects"},
        "low_res_masks": {0: "num_objects"},
    }
    _torch_onnx_export(
        wrapper,
        dummy,
        path,
        input_names=DECODER_INPUT_NAMES,
        output_names=DECODER_OUTPUT_NAMES,
        dynamic_axes=dynamic_axes,
        opset=opset,
    )
    num_masks = 1 if return_single_mask else model.mask_decoder.num_mask_tokens
    low_res_hw = model.prompt_encoder.mask_input_size
    _finalize(
        path,
        {META_MASK_OUTPUTS: "single" if return_single_mask else "all"},
        {
            "masks": ("num_objects", num_masks, "height", "width"),
            "iou_predictions": ("num_objects", num_masks),
            "low_res_masks": ("num_objects", num_masks, *low_res_hw),
        },
    )
    logger.info("wrote %s", path)
    return path


def export_onnx(
    model: Sam,
    out_dir: PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    fuse: bool = True,
    return_single_mask: bool = False,
) -> dict[str, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` into ``out_dir``.

    Args:
        model: the source model (eval mode).
        out_dir: created if missing.
        opset: ONNX opset version of both graphs.
        fuse: fuse the encoder before export.
        return_single_mask: see :func:`export_decoder_onnx`.

    Returns:
        {"encoder": path, "decoder": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "encoder": export_encoder_onnx(model, out / ENCODER_FILENAME, opset=opset, fuse=fuse),
        "decoder": export_decoder_onnx(
            model, out / DECODER_FILENAME, opset=opset, return_single_mask=return_single_mask
        ),
    }
