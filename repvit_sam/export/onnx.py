"""ONNX export of RepViT-SAM (encoder and prompt decoder) and an ONNX Runtime segmenter.

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
box is given; :class:`OnnxSegmenter` does this and mirrors ``SamPredictor.encode``/``decode``
so the video tracker can run on ONNX Runtime.

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
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from repvit_sam.modeling.sam import Sam
from repvit_sam.predictor import (
    DecodePrompts,
    ImageEmbedding,
    MaskPrediction,
    check_decode_prompts,
)
from repvit_sam.utils.transforms import ResizeLongestSide

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
_META_IMG_SIZE = "repvit_sam.img_size"
_META_PIXEL_MEAN = "repvit_sam.pixel_mean"
_META_PIXEL_STD = "repvit_sam.pixel_std"
_META_MASK_OUTPUTS = "repvit_sam.mask_outputs"


def _import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the 'onnx' package: {_INSTALL_HINT}") from exc
    return onnx


def _import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(
            f"running ONNX graphs needs the 'onnxruntime' package: {_INSTALL_HINT}"
        ) from exc
    return onnxruntime


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

    def _upscale(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(
            masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        # ResizeLongestSide.get_preprocess_shape in float64, so sizes round exactly as there.
        orig = orig_im_size.to(torch.float64)
        input_hw = torch.floor(orig * (self.img_size / orig.max()) + 0.5).to(torch.int64)
        masks = masks[..., : input_hw[0], : input_hw[1]]
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


def _fused_encoder(model: Sam, fuse: bool) -> nn.Module:
    encoder = copy.deepcopy(model.image_encoder).eval()
    fuse_fn = getattr(encoder, "fuse", None)
    if fuse and callable(fuse_fn):
        fuse_fn()
    return encoder


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
    model: Sam, path: PathLike, *, opset: int = DEFAULT_OPSET, fuse: bool = True
) -> Path:
    """Write the image encoder as ONNX with a fixed (1, 3, S, S) input, S = ``model.img_size``.

    Args:
        model: the source model (left unchanged; a fused copy of the encoder is exported).
        path: the .onnx file to write.
        opset: ONNX opset version.
        fuse: fold BN and RepVGG branches first (exact in eval mode, a smaller faster graph).

    Returns:
        ``path`` as a Path. The graph maps ``image`` (1, 3, S, S) float32, normalised with the
        model's pixel mean and std and zero-padded bottom/right, to ``image_embeddings``
        (1, 256, S/16, S/16). The mean, std and S are stored in the model's metadata.
    """
    _import_onnx()
    path = Path(path)
    encoder = _fused_encoder(model, fuse)
    size = model.img_size
    dummy = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
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
            _META_IMG_SIZE: str(size),
            _META_PIXEL_MEAN: ",".join(f"{v:.9g}" for v in mean),
            _META_PIXEL_STD: ",".join(f"{v:.9g}" for v in std),
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
        {_META_MASK_OUTPUTS: "single" if return_single_mask else "all"},
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


def _floats(text: str | None, default: tuple[float, ...]) -> np.ndarray:
    values = default if not text else tuple(float(v) for v in text.split(","))
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def _as_numpy(value: np.ndarray | torch.Tensor, dtype: type[np.generic]) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


class OnnxSegmenter:
    """``SamPredictor.encode``/``decode`` on ONNX Runtime, for the video tracker.

    Results match the torch predictor up to float rounding: pre-processing (PIL resize,
    normalisation, padding) and coordinate transforms are the same code, and the decoder graph
    embeds the same prompts (boxes as label-2/3 corners, a padding point when there is no box).

    Args:
        encoder_path: ``encoder.onnx`` from :func:`export_encoder_onnx`.
        decoder_path: ``decoder.onnx`` from :func:`export_decoder_onnx` (all 4 mask tokens).
        providers: ONNX Runtime execution providers; CPU only by default.
        intra_op_num_threads: threads per ONNX Runtime operator; 0 lets it decide.

    Raises:
        ImportError: onnxruntime is not installed.
        ValueError: the decoder was exported with ``return_single_mask``.

    Example:
        >>> seg = OnnxSegmenter.from_dir("exported/")
        >>> emb = seg.encode(rgb)
        >>> pred = seg.decode(emb, boxes_xyxy=np.array([[10, 20, 200, 220]]))
        >>> pred.masks.shape  # (1, 1, H, W) bool
    """

    mask_threshold: float = Sam.mask_threshold

    def __init__(
        self,
        encoder_path: PathLike,
        decoder_path: PathLike,
        *,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int = 0,
    ) -> None:
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_num_threads
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(
            str(encoder_path), sess_options=options, providers=providers
        )
        self.decoder = ort.InferenceSession(
            str(decoder_path), sess_options=options, providers=providers
        )
        enc_meta = self.encoder.get_modelmeta().custom_metadata_map
        dec_meta = self.decoder.get_modelmeta().custom_metadata_map
        if dec_meta.get(_META_MASK_OUTPUTS, "all") != "all":
            raise ValueError(
                f"{decoder_path}: exported with return_single_mask; OnnxSegmenter needs all "
                "4 mask tokens (re-export without --return-single-mask)"
            )
        input_shape = self.encoder.get_inputs()[0].shape
        self.img_size = int(enc_meta.get(_META_IMG_SIZE, input_shape[-1]))
        # SAM's ImageNet statistics in 0-255 when the metadata is absent (foreign exports).
        self.pixel_mean = _floats(enc_meta.get(_META_PIXEL_MEAN), (123.675, 116.28, 103.53))
        self.pixel_std = _floats(enc_meta.get(_META_PIXEL_STD), (58.395, 57.12, 57.375))
        self.transform = ResizeLongestSide(self.img_size)

    @classmethod
    def from_dir(cls, directory: PathLike, **kwargs: Any) -> OnnxSegmenter:
        """Open ``encoder.onnx`` and ``decoder.onnx`` from one export directory.

        Args:
            directory: the ``--out`` directory of ``python -m repvit_sam.export onnx``.
            **kwargs: passed to the constructor.
        """
        directory = Path(directory)
        return cls(directory / ENCODER_FILENAME, directory / DECODER_FILENAME, **kwargs)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Resize, normalise and pad one frame as ``SamPredictor`` does.

        Args:
            image: (H, W, 3) uint8 RGB.

        Returns:
            (1, 3, S, S) float32 encoder input and the resized (h, w) before padding.
        """
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"image: expected a (H, W, 3) uint8 numpy array, got {shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"image: expected dtype uint8 (0-255), got {image.dtype}")
        resized = self.transform.apply_image(np.ascontiguousarray(image))
        h, w = resized.shape[:2]
        chw = resized.transpose(2, 0, 1).astype(np.float32)
        padded = np.zeros((1, 3, self.img_size, self.img_size), dtype=np.float32)
        padded[0, :, :h, :w] = (chw - self.pixel_mean) / self.pixel_std
        return padded, (h, w)

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Encode one RGB frame.

        Args:
            image: (H, W, 3) uint8 RGB frame.

        Returns:
            The embedding ((1, 256, 64, 64) float32 CPU tensor) with original and resized sizes.
        """
        model_input, input_hw = self.preprocess(image)
        (features,) = self.encoder.run(None, {ENCODER_INPUT_NAMES[0]: model_input})
        return ImageEmbedding(
            features=torch.from_numpy(features),
            orig_hw=(int(image.shape[0]), int(image.shape[1])),
            input_hw=input_hw,
        )

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

    def decode(
        self,
        embedding: ImageEmbedding,
        *,
        boxes_xyxy: np.ndarray | torch.Tensor | None = None,
        points_xy: np.ndarray | torch.Tensor | None = None,
        point_labels: np.ndarray | torch.Tensor | None = None,
        mask_logits: np.ndarray | torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> MaskPrediction:
        """Decode N objects' prompts against one embedding in a single graph call.

        Args:
            embedding: from :meth:`encode` (or ``SamPredictor.encode``).
            boxes_xyxy: (N, 4) XYXY in original-image pixels.
            points_xy: (N, P, 2) XY in original-image pixels.
            point_labels: (N, P) 1 positive, 0 negative, -1 padding (2 and 3 would act as box
                corners, as in SAM's ONNX graph; ``SamPredictor`` gives them no label term).
            mask_logits: (N, 1, 256, 256) low-res logits (e.g. the previous frame's).
            multimask_output: 3 candidates per object instead of 1.

        Returns:
            ``masks`` (N, C, H, W) bool at the original size, ``iou_scores`` (N, C) and
            ``low_res_logits`` (N, C, 256, 256) float32, as CPU torch tensors; C = 3 or 1.

        Raises:
            TypeError: ``embedding`` is not an ``ImageEmbedding``.
            ValueError: no prompt, mis-shaped prompts, prompts with different N, or N = 0.
        """
        if not isinstance(embedding, ImageEmbedding):
            raise TypeError(
                f"embedding: expected the ImageEmbedding returned by encode(), got "
                f"{type(embedding).__name__}"
            )
        low_res_hw = (self.img_size // 4, self.img_size // 4)
        prompts = check_decode_prompts(
            boxes_xyxy, points_xy, point_labels, mask_logits, mask_hw=low_res_hw
        )
        coords, labels = self._prompt_points(embedding.orig_hw, prompts)
        # One flag for all N objects: the mask prompt is all or nothing, as in SamPredictor.
        has_mask = np.ones(1, np.float32)
        if prompts.mask_logits is None:
            mask_input = np.zeros((prompts.num_objects, 1, *low_res_hw), np.float32)
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
        masks, iou, low_res = self.decoder.run(list(DECODER_OUTPUT_NAMES), feeds)
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return MaskPrediction(
            masks=torch.from_numpy(np.ascontiguousarray(masks[:, chosen] > self.mask_threshold)),
            iou_scores=torch.from_numpy(np.ascontiguousarray(iou[:, chosen])),
            low_res_logits=torch.from_numpy(np.ascontiguousarray(low_res[:, chosen])),
        )
