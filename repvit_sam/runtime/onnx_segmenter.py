"""A segmenter over the two exported graphs alone, on ONNX Runtime (no PyTorch model needed).

Example:
    >>> seg = OnnxSegmenter.from_dir("exported/")   # python -m repvit_sam.export onnx --out ...
    >>> emb = seg.encode(rgb)
    >>> pred = seg.decode(emb, boxes_xyxy=np.array([[10, 20, 200, 220]]))
    >>> pred.masks.shape  # (1, 1, H, W) bool
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repvit_sam.export.onnx import (
    DECODER_FILENAME,
    ENCODER_FILENAME,
    ENCODER_INPUT_NAMES,
    META_IMG_SIZE,
    META_MASK_OUTPUTS,
    META_PIXEL_MEAN,
    META_PIXEL_STD,
)
from repvit_sam.modeling.sam import Sam
from repvit_sam.runtime.fast_mode import FastMode
from repvit_sam.runtime.graph_decoder import GraphDecoder
from repvit_sam.runtime.preprocess import preprocess
from repvit_sam.runtime.runners import ONNXRUNTIME, require
from repvit_sam.segmenter import DecodePrompts, ImageEmbedding, MaskPrediction, SegmenterBase
from repvit_sam.utils.transforms import ResizeLongestSide

PathLike = str | os.PathLike[str]


def _floats(text: str | None, default: tuple[float, ...]) -> np.ndarray:
    values = default if not text else tuple(float(v) for v in text.split(","))
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


class OnnxSegmenter(SegmenterBase):
    """``SamPredictor.encode``/``decode`` on ONNX Runtime, for the video tracker.

    Results match the torch predictor up to float rounding: pre-processing (PIL resize,
    normalisation, padding) and coordinate transforms are the same code, and the decoder graph
    embeds the same prompts (boxes as label-2/3 corners, a padding point when there is no box).

    Args:
        encoder_path: ``encoder.onnx`` from ``repvit_sam.export.export_encoder_onnx``.
        decoder_path: ``decoder.onnx`` from ``repvit_sam.export.export_decoder_onnx`` (all 4
            mask tokens).
        providers: ONNX Runtime execution providers; CPU only by default.
        intra_op_num_threads: threads per ONNX Runtime operator; 0 lets it decide.

    Raises:
        ImportError: onnxruntime is not installed.
        ValueError: the decoder was exported with ``return_single_mask``.
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
        ort = require(ONNXRUNTIME.module, ONNXRUNTIME.install_hint)
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
        if dec_meta.get(META_MASK_OUTPUTS, "all") != "all":
            raise ValueError(
                f"{decoder_path}: exported with return_single_mask; OnnxSegmenter needs all "
                "4 mask tokens (re-export without --return-single-mask)"
            )
        input_shape = self.encoder.get_inputs()[0].shape
        self.img_size = int(enc_meta.get(META_IMG_SIZE, input_shape[-1]))
        # SAM's ImageNet statistics in 0-255 when the metadata is absent (foreign exports).
        self.pixel_mean = _floats(enc_meta.get(META_PIXEL_MEAN), (123.675, 116.28, 103.53))
        self.pixel_std = _floats(enc_meta.get(META_PIXEL_STD), (58.395, 57.12, 57.375))
        self.mode = FastMode(input_size=self.img_size)
        self.graph_decoder = GraphDecoder(self.decoder, self.img_size, self.mask_threshold)
        self.mask_input_hw = self.graph_decoder.mask_input_hw

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
        model_input = preprocess(image, self.mode, self.pixel_mean, self.pixel_std)
        input_hw = ResizeLongestSide.get_preprocess_shape(image.shape[0], image.shape[1],
                                                          self.img_size)
        return model_input, input_hw

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

    def decode_prompts(self, embedding: ImageEmbedding, prompts: DecodePrompts) -> MaskPrediction:
        """Decode N objects' prompts in one graph call (see :class:`GraphDecoder`)."""
        return self.graph_decoder(embedding, prompts)
