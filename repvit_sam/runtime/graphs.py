"""Exported encoder and decoder graphs, written once per model and input size and reused.

The graph runtimes (ONNX Runtime, OpenVINO) run ONNX graphs kept in a cache folder, by default
``~/.cache/repvit-vos/<checkpoint sha256[:16]>/`` (``REPVIT_VOS_CACHE`` moves the root).

Threads and processes may ask for the same graph at once: exports run one at a time in a
process (``torch.onnx.export`` keeps global state), each into a temporary file of its own that
is renamed into place when complete, so a reader finds the whole graph or none.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from repvit_sam.build import file_sha256
from repvit_sam.modeling.sam import Sam
from repvit_sam.runtime.runners import require

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

CACHE_ENV = "REPVIT_VOS_CACHE"
OPSET = 17
# One export at a time in this process, whatever GraphCache asks: torch.onnx.export keeps
# global state (opset, export mode), and two caches over one folder must not both write a graph.
_EXPORT_LOCK = threading.Lock()


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


class GraphCache:
    """Exported encoder and decoder graphs of one model, written once and reused.

    The folder is ``<root>/<key>/`` with key the first 16 hex digits of the checkpoint file's
    SHA-256 (or of the state_dict's, for a model built without a checkpoint). Graphs are
    written to a temporary name unique to the writer and renamed, so concurrent threads and
    runs never read half a file, and a thread that asks while another exports the same graph
    waits for it instead of exporting it again.

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
            full = file_sha256(checkpoint) if checkpoint is not None else model_fingerprint(model)
            key = full[:16]
        self.key = key
        self.dir = Path(root) if root is not None else cache_root()
        self.dir = self.dir / key

    def _build(self, path: Path, write: Callable[[Path], object]) -> Path:
        if path.is_file():
            return path
        with _EXPORT_LOCK:
            if path.is_file():  # exported by another thread while this one waited
                return path
            path.parent.mkdir(parents=True, exist_ok=True)
            # Unique per writer (as vos.io.atomic names its temp files): another process
            # exporting the same graph into a shared cache writes its own file.
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp.onnx")
            logger.warning("exporting %s (first use of this model and frame size; cached)", path)
            try:
                write(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            return path

    def encoder(self, input_hw: tuple[int, int]) -> Path:
        """The fused float32 encoder graph for a fixed (1, 3, H, W) input."""
        from repvit_sam.export.onnx import export_encoder_onnx

        h, w = input_hw
        path = self.dir / f"encoder_fp32_{h}x{w}_op{OPSET}.onnx"
        return self._build(
            path,
            lambda tmp: export_encoder_onnx(self.model, tmp, opset=OPSET, input_hw=input_hw),
        )

    def decoder(self) -> Path:
        """The prompt decoder graph (SAM's ONNX signature, all 4 mask tokens, dynamic N)."""
        from repvit_sam.export.onnx import export_decoder_onnx

        path = self.dir / f"decoder_op{OPSET}.onnx"
        return self._build(path, lambda tmp: export_decoder_onnx(self.model, tmp, opset=OPSET))

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
        scheme = int8_scheme()
        path = self.dir / f"encoder_int8_{h}x{w}_op{OPSET}_{scheme}.onnx"
        if path.is_file():
            return path
        if calibration is None:
            raise ValueError(
                f"{path} is not cached yet: the int8 encoder needs calibration frames "
                "(pass calibration_frames, e.g. a few frames of the video)"
            )
        fp32 = self.encoder(input_hw)
        samples = list(calibration)
        return self._build(path, lambda tmp: quantize_encoder(
            fp32, tmp, samples, reduce_range=scheme == INT8_REDUCED))

    @property
    def openvino_dir(self) -> Path:
        """Where OpenVINO keeps its compiled-model blobs."""
        return self.dir / "openvino"


# The int8 schemes: u8s8 where the CPU has VNNI; u8s8 with 7-bit weights elsewhere.
INT8_FULL = "u8s8"
INT8_REDUCED = "u8s8r7"


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has VNNI dot products (AVX512_VNNI or AVX_VNNI); False if unknown."""
    try:
        flags = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni"))


def int8_scheme() -> str:
    """The int8 quantisation that is accurate on this CPU.

    Without VNNI, x86 runs u8 x s8 products with VPMADDUBSW, whose 16-bit intermediate sums
    saturate with full 8-bit weights (ONNX Runtime's quantisation notes): measured on an AVX2
    CPU, the test encoder's int8 embedding was 0.13 rel L2 from float32 with 8-bit weights and
    0.021 with 7-bit ones (``reduce_range``). VNNI accumulates in 32 bits and keeps full range.
    """
    return INT8_FULL if cpu_has_vnni() else INT8_REDUCED


def quantize_encoder(
    fp32_path: PathLike,
    out_path: PathLike,
    samples: Sequence[np.ndarray],
    *,
    reduce_range: bool = False,
) -> Path:
    """Statically quantise an encoder graph to int8 (QDQ format, per-channel weights).

    Activations are uint8 with min/max calibration on ``samples``, weights int8 per output
    channel: the u8s8 combination that x86 kernels (ONNX Runtime and OpenVINO) run fastest.
    This is an approximation: check it with ``vos.bench --agreement``.

    Args:
        fp32_path: the float32 encoder graph.
        out_path: where to write the quantised graph.
        samples: (1, 3, H, W) float32 pre-processed frames, 4-16 are enough.
        reduce_range: 7-bit weights, for CPUs without VNNI (see :func:`int8_scheme`).

    Returns:
        ``out_path`` as a Path.
    """
    require("onnxruntime")
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
        reduce_range=reduce_range,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return out_path
