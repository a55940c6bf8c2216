"""Inference backends for SAM's image encoder, and opt-in approximate fast modes.

:class:`BackendSegmenter` offers ``SamPredictor.encode``/``decode`` (the video tracker's
segmenter contract) with the image encoder run by PyTorch, ONNX Runtime or OpenVINO, and the
prompt decoder by PyTorch or one of the graph runtimes. In its default, exact mode every backend
computes the same function as ``SamPredictor`` up to float rounding, within the conformance
tolerances of ``../shared/conformance`` (``tests/repvit_sam/test_backends.py``).

The graph runtimes run ONNX graphs exported once per model and kept in a cache folder, by
default ``~/.cache/repvit-vos/<checkpoint sha256[:16]>/`` (``REPVIT_VOS_CACHE`` moves the root);
see :class:`GraphCache`.

Fast modes (:class:`FastMode`) trade exactness for speed and are never on by default:

- ``sizeS``: resize the frame's long side to S (e.g. 512) instead of 1024. The encoder costs
  (S/1024)² as much; its (S/16)² embedding is resampled to SAM's 64x64 grid for the decoder.
- ``nopad``: skip the bottom/right padding of a non-square frame (only up to 15 pixels are
  padded, to a multiple of the encoder's stride). A 16:9 frame costs 56% of a square one. The
  encoder's squeeze-excite pooling and border convolutions then see no padding, so features
  change slightly everywhere.
- ``int8``: a statically quantised encoder (ONNX Runtime's QDQ quantisation, calibrated on a
  few frames of the user's video), run by ONNX Runtime or OpenVINO. ONNX Runtime runs it
  faster (0.36 s against 0.63 s for OpenVINO on a 576x1024 input, 2 cores; its float32
  graph takes 0.48 s there, so int8 gains about 25%).

Modes combine with ``+`` (``size512+nopad``). ``python -m vos.bench --agreement`` measures each
mode's mask IoU against exact mode on the user's own checkpoint and video.

``onnx``/``onnxruntime`` (extra ``export``) and ``openvino`` (extra ``openvino``) are imported
only when a backend needs them.

Example:
    >>> sam = build_repvit_sam("weights/repvit_sam.pt")
    >>> seg = BackendSegmenter(sam, backend="openvino", checkpoint="weights/repvit_sam.pt")
    >>> emb = seg.encode(rgb)
    >>> pred = seg.decode(emb, boxes_xyxy=np.array([[10, 20, 200, 220]]))
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from repvit_sam.build import sha256_of
from repvit_sam.modeling.repvit import RepViT
from repvit_sam.modeling.sam import Sam
from repvit_sam.predictor import ImageEmbedding, MaskPrediction, SamPredictor
from repvit_sam.utils.transforms import ResizeLongestSide

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

BACKENDS = ("torch", "onnxruntime", "openvino")
# Fastest first, measured on a 2-core AVX-512 CPU at 1024² (issue #7): OpenVINO 1.42 s,
# ONNX Runtime 1.57 s, PyTorch 2.3 s (fused, channels_last).
_PREFERENCE = ("openvino", "onnxruntime", "torch")
_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}
_EXTRAS = {"onnxruntime": "pip install -e .[export]", "openvino": "pip install -e .[openvino]"}
TORCH_VARIANTS = ("plain", "fused", "channels_last", "jit")

# The encoders' total stride: inputs are padded to a multiple of it, so every embedding cell
# covers a whole 16x16 patch of the model frame.
ENCODER_STRIDE = 16
CACHE_ENV = "REPVIT_VOS_CACHE"
_OPSET = 17


def backend_available(name: str) -> bool:
    """Whether the Python package behind backend ``name`` is installed."""
    if name not in _MODULES:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    if name == "onnxruntime" and importlib.util.find_spec("onnx") is None:
        return False  # the graphs are exported with onnx
    return importlib.util.find_spec(_MODULES[name]) is not None


def available_backends() -> list[str]:
    """Installed backends, fastest first."""
    found = [name for name in _PREFERENCE if backend_available(name)]
    if "openvino" in found and importlib.util.find_spec("onnx") is None:
        found.remove("openvino")  # OpenVINO reads the exported ONNX graphs
    return found


def default_backend() -> str:
    """The fastest installed backend (OpenVINO, then ONNX Runtime, then PyTorch)."""
    return available_backends()[0]


def default_decoder_backend() -> str:
    """The fastest prompt-decoder backend: PyTorch, with ``SamPredictor``'s batched decoder.

    Measured side by side in one ``vos.bench`` run on 2 cores (854x480 frame, box + point +
    previous logits, 3 candidates; 1 / 8 objects): PyTorch ``BatchedMaskDecoder`` 28 / 154 ms,
    ONNX Runtime 36 / 325 ms, OpenVINO 52 / 445 ms, PyTorch reference path 57 / 370 ms. The
    graph decoders run SAM's per-object graph and stay selectable for comparison.
    """
    return "torch"


def _require(name: str) -> ModuleType:
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:
        raise ImportError(f"backend {name!r} is not installed: {_EXTRAS.get(name, '')}") from exc


@dataclass(frozen=True)
class FastMode:
    """How a frame is encoded. The default is exact (SAM's own pre-processing).

    Attributes:
        input_size: long side the frame is resized to (1024 exact; smaller is faster and
            coarser). A multiple of 16.
        pad_square: pad bottom/right to an ``input_size`` square as SAM does (exact); False
            pads only to a multiple of 16 (approximate, faster on non-square frames).
        int8: run a statically quantised encoder (approximate; graph backends only).
    """

    input_size: int = 1024
    pad_square: bool = True
    int8: bool = False

    def __post_init__(self) -> None:
        if self.input_size < ENCODER_STRIDE or self.input_size % ENCODER_STRIDE:
            raise ValueError(
                f"input_size: expected a positive multiple of {ENCODER_STRIDE}, "
                f"got {self.input_size}"
            )

    @property
    def is_exact(self) -> bool:
        """True for SAM's exact pre-processing and a float32 encoder."""
        return self.input_size == 1024 and self.pad_square and not self.int8

    @property
    def name(self) -> str:
        """Canonical text form, e.g. ``exact``, ``nopad``, ``size512+nopad+int8``."""
        parts = []
        if self.input_size != 1024:
            parts.append(f"size{self.input_size}")
        if not self.pad_square:
            parts.append("nopad")
        if self.int8:
            parts.append("int8")
        return "+".join(parts) or "exact"

    @classmethod
    def parse(cls, text: str | FastMode) -> FastMode:
        """``exact``, or ``+``-joined ``sizeS``, ``nopad``, ``int8`` (e.g. ``size512+nopad``).

        Raises:
            ValueError: on an unknown part.
        """
        if isinstance(text, FastMode):
            return text
        size, pad, int8 = 1024, True, False
        for part in text.strip().lower().split("+"):
            if part == "exact":
                continue
            if part == "nopad":
                pad = False
            elif part == "int8":
                int8 = True
            elif part.startswith("size") and part[4:].isdigit():
                size = int(part[4:])
            else:
                raise ValueError(
                    f"fast mode {text!r}: expected 'exact' or '+'-joined parts sizeS, nopad, int8"
                )
        return cls(input_size=size, pad_square=pad, int8=int8)

    def encoder_input_hw(self, orig_hw: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the padded encoder input for a frame of ``orig_hw`` pixels."""
        if self.pad_square:
            return self.input_size, self.input_size
        h, w = ResizeLongestSide.get_preprocess_shape(orig_hw[0], orig_hw[1], self.input_size)
        return _round_up(h, ENCODER_STRIDE), _round_up(w, ENCODER_STRIDE)

    @staticmethod
    def sam_grid_cells(input_hw: tuple[int, int]) -> tuple[int, int]:
        """Cells of SAM's 16-pixel grid that an (h, w) image at 1024 touches."""
        return _round_up(input_hw[0], ENCODER_STRIDE) // ENCODER_STRIDE, _round_up(
            input_hw[1], ENCODER_STRIDE
        ) // ENCODER_STRIDE

    def full_grid_hw(self) -> tuple[int, int]:
        """(H, W) of the embedding grid that spans the whole padded square model frame."""
        side = self.input_size // ENCODER_STRIDE
        return side, side


EXACT = FastMode()


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def preprocess(
    image: np.ndarray,
    mode: FastMode,
    pixel_mean: np.ndarray,
    pixel_std: np.ndarray,
) -> np.ndarray:
    """Resize, normalise and pad one frame for the encoder, as ``Sam.preprocess`` does.

    In exact mode the result equals ``Sam.preprocess`` of ``SamPredictor``'s resized image
    bit for bit (the same PIL resize, then one float32 subtraction and one division).

    Args:
        image: (H, W, 3) uint8 RGB frame.
        mode: the fast mode (input size and padding).
        pixel_mean: (3, 1, 1) float32 mean of RGB pixels in 0-255.
        pixel_std: (3, 1, 1) float32 standard deviation of RGB pixels in 0-255.

    Returns:
        (1, 3, H', W') float32 C-contiguous encoder input, H' and W' from
        ``mode.encoder_input_hw``; the padding is zero (the mean colour).

    Raises:
        ValueError: the image is not (H, W, 3) uint8.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"image: expected a (H, W, 3) uint8 numpy array, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image: expected dtype uint8 (0-255), got {image.dtype}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image: expected a non-empty image, got {tuple(image.shape)}")
    resized = ResizeLongestSide(mode.input_size).apply_image(np.ascontiguousarray(image))
    h, w = resized.shape[:2]
    out = np.zeros((1, 3, *mode.encoder_input_hw((image.shape[0], image.shape[1]))), np.float32)
    view = out[0, :, :h, :w]
    np.subtract(resized.transpose(2, 0, 1), pixel_mean, out=view, dtype=np.float32)
    np.divide(view, pixel_std, out=view)
    return out


def resample_to_grid(
    features: torch.Tensor,
    full_hw: tuple[int, int],
    target_hw: tuple[int, int],
    keep_hw: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Bring a reduced-size embedding onto SAM's trained grid (bilinear).

    The decoder was trained on a 64x64 grid at stride 16: fed a coarser grid directly, its
    attention sees tokens at the wrong spacing (mask IoU against exact mode fell to 0.45 on a
    512 input in our measurement), while the same features resampled to 64x64 kept 0.95.

    Args:
        features: (1, C, h, w) embedding, the top-left part of a ``full_hw`` grid that spans
            the padded square model frame.
        full_hw: (H, W) of that full grid (``input_size / 16`` on each side).
        target_hw: SAM's grid, (64, 64).
        keep_hw: cells of the target grid to keep (top-left); None: those the features cover,
            ceil(h * 64 / H) by ceil(w * 64 / W).

    Returns:
        (1, C, h', w') float32 on the target grid, cropped to ``keep_hw``.
    """
    h, w = features.shape[-2:]
    if (h, w) != tuple(full_hw):
        # Edge-replicate the missing bottom/right cells, so no padding value bleeds into the
        # last content row when interpolating; those cells are cropped again below.
        features = F.pad(features, (0, full_hw[1] - w, 0, full_hw[0] - h), mode="replicate")
    features = F.interpolate(features, target_hw, mode="bilinear", align_corners=False)
    if keep_hw is None:
        keep_hw = (-(-h * target_hw[0] // full_hw[0]), -(-w * target_hw[1] // full_hw[1]))
    keep_h, keep_w = min(target_hw[0], keep_hw[0]), min(target_hw[1], keep_hw[1])
    return features[..., :keep_h, :keep_w].contiguous()


# --------------------------------------------------------------------------- graph cache


def cache_root() -> Path:
    """``$REPVIT_VOS_CACHE``, else ``~/.cache/repvit-vos``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "repvit-vos"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of a model's state_dict, for models not loaded from a checkpoint file."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _file_sha256(path: PathLike) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime): several backends share a key."""
    stat = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(path)


class GraphCache:
    """Exported encoder and decoder graphs of one model, written once and reused.

    The folder is ``<root>/<key>/`` with key the first 16 hex digits of the checkpoint file's
    SHA-256 (or of the state_dict's, for a model built without a checkpoint). Graphs are
    written to a temporary name and renamed, so concurrent runs never read half a file.

    Args:
        model: the source model (eval mode; left unchanged).
        checkpoint: the file the model was loaded from, hashed for the key.
        root: cache root; default :func:`cache_root`.
        key: an explicit key instead of a hash.
    """

    def __init__(
        self,
        model: Sam,
        *,
        checkpoint: PathLike | None = None,
        root: PathLike | None = None,
        key: str | None = None,
    ) -> None:
        self.model = model
        if key is None:
            full = _file_sha256(checkpoint) if checkpoint is not None else model_fingerprint(model)
            key = full[:16]
        self.key = key
        self.dir = Path(root) if root is not None else cache_root()
        self.dir = self.dir / key
        self._lock = threading.Lock()

    def _build(self, path: Path, write: Callable[[Path], object]) -> Path:
        with self._lock:
            if path.is_file():
                return path
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
            logger.warning("exporting %s (first use of this model and frame size; cached)", path)
            try:
                write(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            return path

    def encoder(self, input_hw: tuple[int, int]) -> Path:
        """The fused float32 encoder graph for a fixed (1, 3, H, W) input."""
        h, w = input_hw
        path = self.dir / f"encoder_fp32_{h}x{w}_op{_OPSET}.onnx"
        return self._build(path, lambda tmp: export_encoder_graph(self.model, tmp, input_hw))

    def decoder(self) -> Path:
        """The prompt decoder graph (SAM's ONNX signature, all 4 mask tokens, dynamic N)."""
        from repvit_sam.export.onnx import export_decoder_onnx

        path = self.dir / f"decoder_op{_OPSET}.onnx"
        return self._build(path, lambda tmp: export_decoder_onnx(self.model, tmp, opset=_OPSET))

    def encoder_int8(
        self, input_hw: tuple[int, int], calibration: Iterable[np.ndarray] | None
    ) -> Path:
        """The statically quantised encoder for a fixed input, calibrated on first use.

        The calibration is part of the cached graph: it is reused for every later video of
        this input size. Delete the file to calibrate again on other footage.

        Args:
            input_hw: (H, W) of the encoder input.
            calibration: (1, 3, H, W) float32 pre-processed frames (a few of the user's video);
                only needed when the graph is not cached yet.

        Raises:
            ValueError: the graph is not cached and no calibration frames are given.
        """
        h, w = input_hw
        path = self.dir / f"encoder_int8_{h}x{w}_op{_OPSET}.onnx"
        if path.is_file():
            return path
        if calibration is None:
            raise ValueError(
                f"{path} is not cached yet: the int8 encoder needs calibration frames "
                "(pass calibration_frames, e.g. a few frames of the video)"
            )
        fp32 = self.encoder(input_hw)
        samples = list(calibration)
        return self._build(path, lambda tmp: quantize_encoder(fp32, tmp, samples))

    @property
    def openvino_dir(self) -> Path:
        """Where OpenVINO keeps its compiled-model blobs."""
        return self.dir / "openvino"


def export_encoder_graph(model: Sam, path: PathLike, input_hw: tuple[int, int]) -> Path:
    """Write the fused image encoder as ONNX for a fixed (1, 3, H, W) input.

    The square model size goes through ``export_encoder_onnx`` (with its pre-processing
    metadata); other sizes (fast modes) use the same exporter settings.

    Args:
        model: the source model (left unchanged).
        path: the .onnx file to write.
        input_hw: (H, W), multiples of 16.

    Returns:
        ``path`` as a Path.
    """
    from repvit_sam.export.onnx import export_encoder_onnx

    path = Path(path)
    if tuple(input_hw) == (model.img_size, model.img_size):
        return export_encoder_onnx(model, path, opset=_OPSET, fuse=True)
    encoder = fused_copy(model.image_encoder)
    dummy = torch.zeros(1, 3, *input_hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                encoder,
                (dummy,),
                str(path),
                dynamo=False,
                input_names=["image"],
                output_names=["image_embeddings"],
                opset_version=_OPSET,
                do_constant_folding=True,
            )
    return path


def quantize_encoder(
    fp32_path: PathLike, out_path: PathLike, samples: Sequence[np.ndarray]
) -> Path:
    """Statically quantise an encoder graph to int8 (QDQ format, per-channel weights).

    Activations are uint8 with min/max calibration on ``samples``, weights int8 per output
    channel: the u8s8 combination that x86 VNNI kernels (ONNX Runtime and OpenVINO) run
    fastest. This is an approximation: check it with ``vos.bench --agreement``.

    Args:
        fp32_path: the float32 encoder graph.
        out_path: where to write the quantised graph.
        samples: (1, 3, H, W) float32 pre-processed frames, 4-16 are enough.

    Returns:
        ``out_path`` as a Path.
    """
    _require("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            sample = next(self._it, None)
            return None if sample is None else {"image": sample}

    out_path = Path(out_path)
    quantize_static(
        str(fp32_path),
        str(out_path),
        _Frames(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return out_path


# --------------------------------------------------------------------------- encoders


def fused_copy(encoder: nn.Module) -> nn.Module:
    """A BN/branch-fused eval copy of an image encoder (the original is left as it is)."""
    encoder = copy.deepcopy(encoder).eval()
    fuse_fn = getattr(encoder, "fuse", None)
    if callable(fuse_fn):
        fuse_fn()
    return encoder


class TorchEncoder:
    """The image encoder in PyTorch.

    Variants (all exact up to float rounding): ``plain`` runs the module as given; ``fused``
    folds BN and RepVGG branches; ``channels_last`` also keeps activations NHWC, which lets
    oneDNN use its blocked convolutions; ``jit`` freezes a traced fused graph, letting oneDNN
    fuse convolution, bias and activation (one trace per input shape).

    Args:
        encoder: the model's image encoder.
        variant: one of ``TORCH_VARIANTS``.
    """

    def __init__(self, encoder: nn.Module, variant: str = "channels_last") -> None:
        if variant not in TORCH_VARIANTS:
            raise ValueError(f"variant: expected one of {TORCH_VARIANTS}, got {variant!r}")
        self.variant = variant
        module = encoder.eval() if variant == "plain" else fused_copy(encoder)
        if variant == "channels_last":
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.module = module
        self._traced: dict[tuple[int, ...], Any] = {}
        self.device = next(module.parameters()).device

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """(1, 3, H, W) float32 pre-processed input -> (1, 256, H/16, W/16) float32 tensor."""
        tensor = torch.from_numpy(x).to(self.device)
        if self.variant == "channels_last":
            tensor = tensor.contiguous(memory_format=torch.channels_last)
            return self.module(tensor).contiguous()
        if self.variant == "jit":
            return self._jit(tensor)(tensor)
        return self.module(tensor)

    def _jit(self, tensor: torch.Tensor) -> Any:
        shape = tuple(tensor.shape)
        if shape not in self._traced:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(self.module, tensor, check_trace=False)
                self._traced[shape] = torch.jit.freeze(traced.eval())
        return self._traced[shape]


def _ort_options(ort: ModuleType, threads: int | None) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OrtEncoder:
    """An exported encoder graph on ONNX Runtime's CPU provider.

    Args:
        path: the encoder .onnx file.
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
    """

    def __init__(self, path: PathLike, threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        self.session = ort.InferenceSession(
            str(path), sess_options=_ort_options(ort, threads), providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """(1, 3, H, W) float32 -> (1, 256, H/16, W/16) float32 CPU tensor."""
        (features,) = self.session.run(None, {self.input_name: x})
        return torch.from_numpy(features)


def _openvino_core(cache_dir: Path | None) -> Any:
    ov = _require("openvino")
    core = ov.Core()
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(cache_dir)})
    return core


def _openvino_config(threads: int | None) -> dict[str, Any]:
    # f32 explicitly: on CPUs with native bf16 OpenVINO would otherwise infer in bf16, far
    # outside the conformance tolerances. int8 graphs keep their quantised layers regardless.
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoEncoder:
    """An exported encoder graph compiled by OpenVINO for the CPU.

    Args:
        path: the encoder .onnx file (OpenVINO reads ONNX directly).
        threads: inference threads (None: OpenVINO's default).
        cache_dir: where OpenVINO keeps compiled blobs (faster start on the next run).
    """

    def __init__(
        self, path: PathLike, threads: int | None = None, cache_dir: Path | None = None
    ) -> None:
        core = _openvino_core(cache_dir)
        self.compiled = core.compile_model(str(path), "CPU", _openvino_config(threads))
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """(1, 3, H, W) float32 -> (1, 256, H/16, W/16) float32 CPU tensor."""
        self.request.infer({0: x})
        # The request's output buffer is reused by the next call: copy it out.
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


class _OpenVinoSession:
    """An OpenVINO compiled model behind ONNX Runtime's ``run(output_names, feeds)``."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list:
        results = self.request.infer(feeds)
        outputs = self.compiled.outputs
        names = list(output_names) if output_names else [o.get_any_name() for o in outputs]
        by_name = {o.get_any_name(): np.array(results[o]) for o in outputs}
        return [by_name[name] for name in names]


def _graph_decoder(session: Any, img_size: int) -> Any:
    """``OnnxSegmenter.decode`` over any session with ``run(names, feeds)``."""
    from repvit_sam.export.onnx import OnnxSegmenter

    class _GraphDecoder(OnnxSegmenter):
        # Only the decode half of OnnxSegmenter is used, so no encoder session is opened.
        def __init__(self) -> None:
            self.encoder = None
            self.decoder = session
            self.img_size = img_size
            self.transform = ResizeLongestSide(img_size)

    return _GraphDecoder()


# --------------------------------------------------------------------------- segmenter


class BackendSegmenter:
    """``SamPredictor``'s ``encode``/``decode`` on a chosen backend, optionally approximate.

    Args:
        model: the model (eval mode). Its prompt encoder and mask decoder serve the torch
            decoder; its image encoder is fused (a copy) or exported as the backend needs.
        backend: image-encoder backend, one of ``BACKENDS``; None: :func:`default_backend`.
        decoder_backend: prompt-decoder backend; None: :func:`default_decoder_backend`
            (PyTorch's batched decoder, whatever the encoder runs on). Embeddings that cover only part of
            SAM's 64x64 grid (``nopad`` on a non-square frame) always decode in torch: the
            decoder graph has a fixed grid.
        mode: the fast mode (default exact), or its text form (``FastMode.parse``).
        threads: threads for the backend (None: its default, one per core). For torch this
            sets ``torch.set_num_threads``, which is process-wide.
        torch_variant: how the torch encoder runs (``TorchEncoder``).
        checkpoint: the checkpoint file the model came from (names the graph cache).
        cache: an explicit graph cache (overrides ``checkpoint``).
        calibration_frames: (H, W, 3) uint8 RGB frames to calibrate the int8 encoder with, when
            it is not cached yet.

    Raises:
        ImportError: the backend is not installed.
        ValueError: an int8 mode on the torch backend, or an unknown backend.

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
        if decoder_backend is None:
            decoder_backend = default_decoder_backend()
        self.decoder_backend = decoder_backend
        for name in {self.backend, self.decoder_backend}:
            if name not in BACKENDS:
                raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
            _require(name)
        self.mode = FastMode.parse(mode)
        if self.mode.int8 and self.backend == "torch":
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
        self.pixel_mean = model.pixel_mean.detach().cpu().numpy().astype(np.float32)
        self.pixel_std = model.pixel_std.detach().cpu().numpy().astype(np.float32)
        self._cache = cache
        self._checkpoint = checkpoint
        self._calibration = calibration_frames
        self._encoders: dict[tuple[int, int], Callable[[np.ndarray], torch.Tensor]] = {}
        self._torch_encoder: TorchEncoder | None = None
        self._graph_decoder: Any = None

    @property
    def name(self) -> str:
        """Short description, e.g. ``openvino`` or ``torch[channels_last] size512+nopad``."""
        enc = f"torch[{self.torch_variant}]" if self.backend == "torch" else self.backend
        dec = "" if self.decoder_backend == self.backend else f" dec={self.decoder_backend}"
        mode = "" if self.mode.is_exact else f" {self.mode.name}"
        return f"{enc}{dec}{mode}"

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def cache(self) -> GraphCache:
        """The graph cache (created on first use; hashing a checkpoint takes a moment)."""
        if self._cache is None:
            self._cache = GraphCache(self.model, checkpoint=self._checkpoint)
        return self._cache

    def encoder_for(self, input_hw: tuple[int, int]) -> Callable[[np.ndarray], torch.Tensor]:
        """The encoder runner for a (1, 3, H, W) input; graphs are exported on first use."""
        if input_hw in self._encoders:
            return self._encoders[input_hw]
        runner: Callable[[np.ndarray], torch.Tensor]
        if self.backend == "torch":
            if self._torch_encoder is None:
                self._torch_encoder = TorchEncoder(self.model.image_encoder, self.torch_variant)
            runner = self._torch_encoder
        else:
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
            if self.backend == "onnxruntime":
                runner = OrtEncoder(path, self.threads)
            else:
                runner = OpenVinoEncoder(path, self.threads, self.cache.openvino_dir)
        self._encoders[input_hw] = runner
        return runner

    def prepare(self, image_hw: tuple[int, int]) -> None:
        """Export, load and compile everything a frame of ``image_hw`` needs (warm start)."""
        self.encoder_for(self.mode.encoder_input_hw(image_hw))
        if self.decoder_backend != "torch" and self._exact_grid(image_hw):
            self._decoder()

    def _exact_grid(self, image_hw: tuple[int, int]) -> bool:
        """Whether this frame size's embeddings cover SAM's whole grid (graph decoders)."""
        if self.mode.pad_square:
            return True
        input_hw = ResizeLongestSide.get_preprocess_shape(*image_hw, self.model.img_size)
        grid = self.mode.sam_grid_cells(input_hw)
        return grid == tuple(self.model.prompt_encoder.image_embedding_size)

    def _decoder(self) -> Any:
        if self._graph_decoder is None:
            path = self.cache.decoder()
            if self.decoder_backend == "onnxruntime":
                ort = _require("onnxruntime")
                session = ort.InferenceSession(
                    str(path),
                    sess_options=_ort_options(ort, self.threads),
                    providers=["CPUExecutionProvider"],
                )
            else:
                core = _openvino_core(None)
                compiled = core.compile_model(str(path), "CPU", _openvino_config(self.threads))
                session = _OpenVinoSession(compiled)
            self._graph_decoder = _graph_decoder(session, self.model.img_size)
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
        """Decode N objects' prompts against one embedding in a single batched call.

        Arguments and result as ``SamPredictor.decode``: boxes (N, 4) XYXY and points
        (N, P, 2) XY in original-image pixels, labels (N, P), mask logits (N, 1, 256, 256).
        """
        use_torch = self.decoder_backend == "torch" or embedding.full_grid_hw is not None
        decoder = self.predictor if use_torch else self._decoder()
        return decoder.decode(
            embedding,
            boxes_xyxy=boxes_xyxy,
            points_xy=points_xy,
            point_labels=point_labels,
            mask_logits=mask_logits,
            multimask_output=multimask_output,
        )


def build_segmenter(
    model: Sam,
    backend: str = "auto",
    **kwargs: Any,
) -> BackendSegmenter | SamPredictor:
    """A segmenter for the video tracker: ``SamPredictor`` or a :class:`BackendSegmenter`.

    Args:
        model: the model.
        backend: ``auto`` (the fastest installed), ``predictor`` (plain ``SamPredictor``), or
            one of ``BACKENDS``.
        **kwargs: passed to :class:`BackendSegmenter`.
    """
    if backend == "predictor":
        return SamPredictor(model)
    return BackendSegmenter(model, backend=None if backend == "auto" else backend, **kwargs)
