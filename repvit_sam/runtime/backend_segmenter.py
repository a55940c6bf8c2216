"""``SamPredictor``'s encode/decode with the image encoder on a chosen runtime, exact or fast.

In its default, exact mode every backend computes the same function as ``SamPredictor`` up
to float rounding, within the conformance tolerances of ``../shared/conformance``
(``tests/repvit_sam/test_backends.py``).

The ``bf16`` fast mode runs the encoder in bfloat16 on its backend (OpenVINO's inference
precision, bf16 weights in PyTorch, autocast on CUDA; ONNX Runtime has no bf16 kernels on x86
and stays float32) and the batched mask decoder in bf16 with float32 logits and IoU head
(:class:`~repvit_sam.modeling.batched_decoder.BatchedMaskDecoder`); on hardware without native
bf16 the segmenter runs float32 and logs one line (:mod:`repvit_sam.runtime.precision`).

A ``BackendSegmenter`` may be shared by threads (the annotator's background encoder and its
request threads): the runners are thread-safe (:mod:`repvit_sam.runtime.runners`), the
torch decoder keeps no state, and what is built on first use (graph cache, encoder runners,
decoder graph) is built once, under a lock, while calls that find it built never wait.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from repvit_sam.modeling.batched_decoder import BatchedMaskDecoder
from repvit_sam.modeling.repvit import RepViT
from repvit_sam.modeling.sam import Sam
from repvit_sam.predictor import SamPredictor
from repvit_sam.runtime.fast_mode import EXACT, FastMode
from repvit_sam.runtime.graph_decoder import GraphDecoder
from repvit_sam.runtime.graphs import GraphCache
from repvit_sam.runtime.precision import effective_mode
from repvit_sam.runtime.preprocess import preprocess, resample_to_grid
from repvit_sam.runtime.runners import default_backend, default_decoder_backend, runtime
from repvit_sam.segmenter import DecodePrompts, ImageEmbedding, MaskPrediction, SegmenterBase
from repvit_sam.utils.transforms import ResizeLongestSide

PathLike = str | os.PathLike[str]


class BackendSegmenter(SegmenterBase):
    """``SamPredictor``'s ``encode``/``decode`` on a chosen backend, optionally approximate.

    Args:
        model: the model (eval mode). Its prompt encoder and mask decoder serve the torch
            decoder; its image encoder is fused (a copy) or exported as the backend needs.
        backend: image-encoder backend, a name of ``repvit_sam.runtime.runners.RUNTIMES``;
            None: :func:`~repvit_sam.runtime.runners.default_backend`.
        decoder_backend: prompt-decoder backend; None: the default (PyTorch's batched decoder,
            whatever the encoder runs on). Embeddings that cover only part of SAM's 64x64 grid
            (``nopad`` on a non-square frame) always decode in torch: the decoder graph has a
            fixed grid. Decoder graphs run float32 in every mode, ``bf16`` included.
        mode: the fast mode (default exact), or its text form (``FastMode.parse``); not
            ``roi``, which :class:`repvit_sam.runtime.roi.RoiSegmenter` adds around this.
            ``bf16`` is dropped (one log line) where the device lacks native bf16:
            ``self.mode`` is the mode that runs.
        threads: threads for the backend (None: its default, one per core). For torch this
            sets ``torch.set_num_threads``, which is process-wide.
        torch_variant: how the torch encoder runs (``repvit_sam.runtime.runners.TorchEncoder``).
        checkpoint: the checkpoint file the model came from (names the graph cache).
        cache: an explicit graph cache (overrides ``checkpoint``).
        calibration_frames: (H, W, 3) uint8 RGB frames to calibrate the int8 encoder with, when
            it is not cached yet.

    Raises:
        ImportError: the backend is not installed.
        ValueError: an int8 mode on the torch backend, a ``roi`` mode, or an unknown backend.

    Example:
        >>> seg = BackendSegmenter(sam, backend="onnxruntime", mode="size512+nopad")
        >>> tracker = VideoTracker(seg, TrackerConfig())
    """

    mask_threshold: float = Sam.mask_threshold

    def __init__(
        self,
        model: Sam,
        *,
        backend: str | None = None,
        decoder_backend: str | None = None,
        mode: FastMode | str = EXACT,
        threads: int | None = None,
        torch_variant: str = "channels_last",
        checkpoint: PathLike | None = None,
        cache: GraphCache | None = None,
        calibration_frames: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.backend = backend or default_backend()
        self.decoder_backend = decoder_backend or default_decoder_backend()
        self.runtime = runtime(self.backend)
        self.decoder_runtime = runtime(self.decoder_backend)
        self.mode = effective_mode(FastMode.parse(mode), model.device)
        if self.mode.roi:
            raise ValueError("fast mode roi: wrap the segmenter in RoiSegmenter (build_segmenter)")
        if self.mode.int8 and not self.runtime.runs_graphs:
            raise ValueError("int8 fast mode needs a graph backend (onnxruntime or openvino)")
        if not (self.mode.input_size == model.img_size and self.mode.pad_square) and not (
            isinstance(model.image_encoder, RepViT)
        ):
            raise ValueError(
                f"fast mode {self.mode.name!r} changes the encoder's input size, which only the "
                f"convolutional RepViT encoder accepts (got {type(model.image_encoder).__name__})"
            )
        self.model = model.eval()
        self.threads = threads
        self.torch_variant = torch_variant
        if threads and "torch" in (self.backend, self.decoder_backend):
            torch.set_num_threads(int(threads))
        self.predictor = SamPredictor(model)
        if self.mode.bf16:
            self.predictor.batched_decoder = BatchedMaskDecoder(
                model.prompt_encoder, model.mask_decoder, bf16=True
            )
        self.pixel_mean = model.pixel_mean.detach().cpu().numpy().astype(np.float32)
        self.pixel_std = model.pixel_std.detach().cpu().numpy().astype(np.float32)
        self._cache = cache
        self._checkpoint = checkpoint
        self._calibration = calibration_frames
        self._encoders: dict[tuple[int, int], Callable[[np.ndarray], torch.Tensor]] = {}
        self._torch_encoder: Any = None
        self._graph_decoder: GraphDecoder | None = None
        # Guards the lazily built parts above. Re-entrant: encoder_for asks for the cache.
        # A call that finds its part built reads it without the lock (one dict or attribute
        # read), so an export of another frame size never stalls a running session.
        self._build_lock = threading.RLock()

    @property
    def name(self) -> str:
        """Short description, e.g. ``openvino`` or ``torch[channels_last] size512+nopad``."""
        enc = f"torch[{self.torch_variant}]" if self.backend == "torch" else self.backend
        dec = "" if self.decoder_backend == self.backend else f" dec={self.decoder_backend}"
        mode = "" if self.mode.is_exact else f" {self.mode.name}"
        return f"{enc}{dec}{mode}"

    @property
    def precision(self) -> str:
        """``bf16`` in the bf16 fast mode (where the hardware has it), else ``f32``."""
        return "bf16" if self.mode.bf16 else "f32"

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def cache(self) -> GraphCache:
        """The graph cache (created on first use; hashing a checkpoint takes a moment)."""
        if self._cache is None:
            with self._build_lock:
                if self._cache is None:
                    self._cache = GraphCache(self.model, checkpoint=self._checkpoint)
        return self._cache

    def encoder_for(self, input_hw: tuple[int, int]) -> Callable[[np.ndarray], torch.Tensor]:
        """The encoder runner for a (1, 3, H, W) input; graphs are exported on first use."""
        runner = self._encoders.get(input_hw)
        if runner is not None:
            return runner
        with self._build_lock:
            runner = self._encoders.get(input_hw)
            if runner is None:
                runner = self._build_encoder(input_hw)
                self._encoders[input_hw] = runner
            return runner

    def _build_encoder(self, input_hw: tuple[int, int]) -> Callable[[np.ndarray], torch.Tensor]:
        if not self.runtime.runs_graphs:
            # One module serves every input size.
            if self._torch_encoder is None:
                self._torch_encoder = self.runtime.encoder(
                    self.model.image_encoder, threads=self.threads, cache_dir=None,
                    variant=self.torch_variant, precision=self.precision)
            return self._torch_encoder
        if self.mode.int8:
            frames = None
            if self._calibration is not None:
                frames = [
                    preprocess(f, self.mode, self.pixel_mean, self.pixel_std)
                    for f in self._calibration
                ]
            path = self.cache.encoder_int8(input_hw, frames)
        else:
            path = self.cache.encoder(input_hw)
        return self.runtime.encoder(path, threads=self.threads,
                                    cache_dir=self.cache.openvino_dir, variant="",
                                    precision=self.precision)

    def prepare(self, image_hw: tuple[int, int]) -> None:
        """Export, load and compile everything a frame of ``image_hw`` needs (warm start)."""
        self.encoder_for(self.mode.encoder_input_hw(image_hw))
        if self.decoder_runtime.runs_graphs and self._exact_grid(image_hw):
            self._decoder()

    def _exact_grid(self, image_hw: tuple[int, int]) -> bool:
        """Whether this frame size's embeddings cover SAM's whole grid (graph decoders)."""
        if self.mode.pad_square:
            return True
        input_hw = ResizeLongestSide.get_preprocess_shape(*image_hw, self.model.img_size)
        grid = self.mode.sam_grid_cells(input_hw)
        return grid == tuple(self.model.prompt_encoder.image_embedding_size)

    def _decoder(self) -> GraphDecoder:
        decoder = self._graph_decoder
        if decoder is not None:
            return decoder
        with self._build_lock:
            if self._graph_decoder is None:
                # float32 in every mode: the graph takes the frame size as a float input and
                # resizes its logits to it, and OpenVINO in bf16 rounded that to 8 significant
                # bits (an 854-wide frame got 856-wide masks) along with the logits and IoU
                # that bf16 mode keeps float32. bf16's decoder is the torch batched decoder.
                session = self.decoder_runtime.decoder_session(
                    self.cache.decoder(), threads=self.threads, precision="f32")
                self._graph_decoder = GraphDecoder(session, self.model.img_size,
                                                   self.mask_threshold)
            return self._graph_decoder

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Encode one RGB frame.

        Args:
            image: (H, W, 3) uint8 RGB frame.

        Returns:
            The embedding on SAM's grid: (1, 256, 64, 64) float32, or with ``nopad`` its
            top-left (1, 256, h, w) part and ``full_grid_hw`` = (64, 64); ``input_hw`` is
            always in the 1024 frame.
        """
        model_input = preprocess(image, self.mode, self.pixel_mean, self.pixel_std)
        features = self.encoder_for((model_input.shape[2], model_input.shape[3]))(model_input)
        grid_h, grid_w = self.model.prompt_encoder.image_embedding_size
        sam_grid = (int(grid_h), int(grid_w))
        orig_hw = (int(image.shape[0]), int(image.shape[1]))
        input_hw = ResizeLongestSide.get_preprocess_shape(*orig_hw, self.model.img_size)
        if self.mode.full_grid_hw() != sam_grid:
            # Without padding keep the cells that hold image content, as nopad at 1024 does.
            keep = None if self.mode.pad_square else self.mode.sam_grid_cells(input_hw)
            features = resample_to_grid(features, self.mode.full_grid_hw(), sam_grid, keep)
        grid = (int(features.shape[-2]), int(features.shape[-1]))
        return ImageEmbedding(
            features=features,
            orig_hw=orig_hw,
            input_hw=input_hw,
            full_grid_hw=None if grid == sam_grid else sam_grid,
        )

    def decode_prompts(self, embedding: ImageEmbedding, prompts: DecodePrompts) -> MaskPrediction:
        """Decode N objects' prompts against one embedding in a single batched call.

        Prompts as ``SamPredictor.decode``: boxes (N, 4) XYXY and points (N, P, 2) XY in
        original-image pixels, labels (N, P), mask logits (N, 1, 256, 256).
        """
        use_torch = not self.decoder_runtime.runs_graphs or embedding.full_grid_hw is not None
        if use_torch:
            return self.predictor.decode(embedding, prompts)
        return self._decoder()(embedding, prompts)
