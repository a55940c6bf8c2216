"""The inference runtimes, by name: one table, one class per runtime.

Each runtime turns the model (or its exported graph) into an *encoder runner*, a callable
``(1, 3, H, W) float32 numpy -> (1, 256, H/16, W/16) float32 CPU tensor``, computing in
float32 or, with ``precision="bf16"`` (the ``bf16`` fast mode), in bfloat16, and a graph
runtime also opens the exported *decoder graph* as a session with ONNX Runtime's
``run(output_names, feeds)`` interface (:class:`repvit_sam.runtime.graph_decoder.GraphDecoder`
drives it).

To add a runtime (TensorRT, Core ML on macOS, ...): write a class with the attributes and
methods of :class:`Runtime` here and add it to :data:`RUNTIMES` in the order of preference.
Nothing else changes: ``BackendSegmenter``, the CLI's ``model.backend`` and ``vos.bench`` all
read this table.

Every runner and session here may be called from several threads at once, and gives each
call exactly what a call alone would (issue 27: the annotator's background encoder and its
request threads share one segmenter). How depends on the runtime:

- PyTorch: a module in eval mode under inference mode keeps no state between calls; the one
  lazy cache (the ``jit`` variant's trace per input shape) is built under a lock.
- ONNX Runtime: ``InferenceSession.run`` is thread-safe by design ("Multiple threads can
  invoke the Run() method on the same inference session object", onnxruntime.ai/docs/
  reference/high-level-design.html); the sessions are shared as they are.
- OpenVINO: an ``InferRequest`` serves one inference at a time (a second one raises "Infer
  Request is busy"), so each compiled model lends its requests from an
  :class:`InferRequestPool`: one per concurrent call, made on demand and reused, so a
  single-threaded caller keeps one request and pays one uncontended lock per call.

A new runtime must keep this promise too (``tests/repvit_sam/test_threads.py``).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
import os
import platform
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from repvit_sam.build import fused_copy

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time only (one line per process)."""
    with _WARNED_LOCK:
        if message in _WARNED:
            return
        _WARNED.add(message)
    logger.warning(message)

TORCH_VARIANTS = ("plain", "fused", "channels_last", "jit")
PRECISIONS = ("f32", "bf16")


def check_precision(precision: str) -> None:
    """Raises ValueError for a precision other than ``PRECISIONS``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")


class Runtime(Protocol):
    """What a runtime provides (see the module docstring)."""

    name: str
    module: str  # the Python package that must be importable
    install_hint: str
    runs_graphs: bool  # True: encoder() takes an exported .onnx file; False: the nn.Module

    def encoder(self, source: Any, *, threads: int | None, cache_dir: Path | None,
                variant: str, precision: str = "f32") -> Any:
        """An encoder runner over ``source`` (a graph path or the image encoder module),
        computing in ``precision`` (``f32`` or ``bf16``) where the runtime can."""
        ...

    def decoder_session(self, path: Path, *, threads: int | None,
                        precision: str = "f32") -> Any:
        """A ``run(output_names, feeds)`` session over the decoder graph at ``path``."""
        ...


def require(module: str, hint: str = "") -> ModuleType:
    """``import module``, or an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"backend {module!r} is not installed: {hint}".rstrip(": ")) from exc


# --------------------------------------------------------------------------- PyTorch


class TorchEncoder:
    """The image encoder in PyTorch.

    Variants (all exact up to float rounding): ``plain`` runs the module as given; ``fused``
    folds BN and RepVGG branches; ``channels_last`` also keeps activations NHWC, which lets
    oneDNN use its blocked convolutions; ``jit`` freezes a traced fused graph, letting oneDNN
    fuse convolution, bias and activation (one trace per input shape).

    In ``bf16`` precision a CPU encoder runs on a bfloat16 copy of the weights (0.51 s at
    1024², against 0.53 s under autocast and 1.41 s in float32; 2 cores with AMX), a CUDA one
    under bf16 autocast, as SAM 2 does; the embedding comes back float32.

    Args:
        encoder: the model's image encoder.
        variant: one of ``TORCH_VARIANTS``.
        precision: ``f32`` or ``bf16``.
    """

    def __init__(
        self, encoder: nn.Module, variant: str = "channels_last", precision: str = "f32"
    ) -> None:
        if variant not in TORCH_VARIANTS:
            raise ValueError(f"variant: expected one of {TORCH_VARIANTS}, got {variant!r}")
        check_precision(precision)
        self.variant = variant
        self.precision = precision
        module = encoder.eval() if variant == "plain" else fused_copy(encoder)
        self.device = next(module.parameters()).device
        # bf16 weights on a CPU; CUDA keeps float32 weights under autocast.
        self._bf16_weights = precision == "bf16" and self.device.type == "cpu"
        self._autocast = precision == "bf16" and not self._bf16_weights
        if self._bf16_weights:
            # A copy: the plain variant's module is the model's own encoder.
            module = (copy.deepcopy(module) if variant == "plain" else module).to(torch.bfloat16)
        if variant == "channels_last":
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.module = module
        self._traced: dict[tuple[int, ...], Any] = {}
        self._trace_lock = threading.Lock()  # one trace per shape, however many threads ask

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """(1, 3, H, W) float32 pre-processed input -> (1, 256, H/16, W/16) float32 tensor."""
        tensor = torch.from_numpy(x).to(self.device)
        if self._bf16_weights:
            tensor = tensor.to(torch.bfloat16)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            if self.variant == "channels_last":
                tensor = tensor.contiguous(memory_format=torch.channels_last)
                out = self.module(tensor).contiguous()
            elif self.variant == "jit":
                out = self._jit(tensor)(tensor)
            else:
                out = self.module(tensor)
        return out.float()

    def _jit(self, tensor: torch.Tensor) -> Any:
        shape = tuple(tensor.shape)
        traced = self._traced.get(shape)
        if traced is not None:
            return traced
        with self._trace_lock:
            if shape not in self._traced:
                # warnings.catch_warnings swaps process-wide state: under the lock too.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    trace = torch.jit.trace(self.module, tensor, check_trace=False)
                    self._traced[shape] = torch.jit.freeze(trace.eval())
            return self._traced[shape]


class TorchRuntime:
    """PyTorch: runs the image encoder module itself (no exported graph)."""

    name = "torch"
    module = "torch"
    install_hint = ""
    runs_graphs = False

    def encoder(self, source: nn.Module, *, threads: int | None = None,
                cache_dir: Path | None = None, variant: str = "channels_last",
                precision: str = "f32") -> TorchEncoder:
        return TorchEncoder(source, variant, precision)

    def decoder_session(self, path: Path, *, threads: int | None = None,
                        precision: str = "f32") -> Any:
        raise ValueError("the torch runtime decodes with SamPredictor, not a decoder graph")


# --------------------------------------------------------------------------- ONNX Runtime


def _ort_session(path: PathLike, threads: int | None, precision: str = "f32") -> Any:
    """An ``InferenceSession`` on the CPU provider (``run`` is thread-safe: module docstring)."""
    check_precision(precision)
    ort = require("onnxruntime", ONNXRUNTIME.install_hint)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if precision == "bf16":
        if platform.machine().lower() in ("aarch64", "arm64"):
            options.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "1")
        else:
            _warn_once(f"onnxruntime has no bf16 kernels on {platform.machine()}: its graphs "
                       "run float32 (use openvino or torch for a bf16 encoder)")
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


class OrtEncoder:
    """An exported encoder graph on ONNX Runtime's CPU provider.

    Safe to call from several threads at once: ONNX Runtime documents ``run`` on one session
    as thread-safe (see the module docstring), each call with its own buffers.

    Args:
        path: the encoder .onnx file.
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
        precision: ``f32``, or ``bf16`` (Arm only; float32 elsewhere, logged once).
    """

    def __init__(self, path: PathLike, threads: int | None = None,
                 precision: str = "f32") -> None:
        self.session = _ort_session(path, threads, precision)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """(1, 3, H, W) float32 -> (1, 256, H/16, W/16) float32 CPU tensor."""
        (features,) = self.session.run(None, {self.input_name: x})
        return torch.from_numpy(features)


class OnnxRuntimeRuntime:
    """ONNX Runtime's CPU provider over the exported graphs."""

    name = "onnxruntime"
    module = "onnxruntime"
    install_hint = "pip install -e .[export]"
    runs_graphs = True

    # ONNX Runtime's CPU provider has bf16 GEMMs only on Arm (its "fastmath" option); on x86
    # a bf16 mode keeps its graphs in float32 and says so once.
    def encoder(self, source: PathLike, *, threads: int | None = None,
                cache_dir: Path | None = None, variant: str = "",
                precision: str = "f32") -> OrtEncoder:
        return OrtEncoder(source, threads, precision)

    def decoder_session(self, path: Path, *, threads: int | None = None,
                        precision: str = "f32") -> Any:
        return _ort_session(path, threads, precision)


# --------------------------------------------------------------------------- OpenVINO


def _openvino_compile(
    path: PathLike, threads: int | None, cache_dir: Path | None, precision: str = "f32"
) -> Any:
    check_precision(precision)
    ov = require("openvino", OPENVINO.install_hint)
    core = ov.Core()
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(cache_dir)})
    # f32 explicitly unless the bf16 fast mode asks: on CPUs with native bf16 OpenVINO would
    # otherwise infer in bf16, far outside the conformance tolerances. int8 graphs keep their
    # quantised layers regardless.
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                              "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if precision == "bf16":
        try:
            return core.compile_model(str(path), "CPU", config)
        except RuntimeError as exc:
            # OpenVINO refuses bf16 when its oneDNN is capped below bf16 (measured with
            # ONEDNN_MAX_CPU_ISA=AVX2 on an AMX CPU): float32, said once.
            reason = [line for line in str(exc).splitlines() if line.strip()][-1:] or ["?"]
            _warn_once(f"openvino cannot compile in bf16 here ({reason[0].strip()}): "
                       "its graphs run float32")
            config["INFERENCE_PRECISION_HINT"] = "f32"
    return core.compile_model(str(path), "CPU", config)


class InferRequestPool:
    """The infer requests of one OpenVINO compiled model, lent one per concurrent call.

    An ``InferRequest`` holds its input and output buffers and runs one inference at a time;
    calling it from a second thread meanwhile raises "Infer Request is busy" (issue 27). The
    pool lends an idle request, or makes one when every request is out, so it holds as many
    requests as calls ever ran at once: one for a single-threaded caller, and each request's
    buffers are paid for only where threads really overlap (unlike one request per thread,
    which a web server's thread pool would multiply). A request made earlier is never
    dropped while its compiled model lives.

    Measured (OpenVINO 2026.4, fan-in RepViT-SAM, 2 shared cores, medians of interleaved
    runs): lending and returning a request takes 3.5 us; a sequential loop ran as fast as
    with the one bare request before (encoder at 1024x1024 6.63 against 6.46 s, decoder graph
    248 against 255 ms, both within the machine's noise of +-15%); a second request added no
    measurable resident memory. Results are those of one request bit for bit: every request
    of a compiled model runs its compiled kernels. ``infer`` releases the GIL, so a request
    thread's decode runs beside the background encode; two threads encoding 4 frames each
    took as long as with one request behind a lock (49.5 against 50.7 s: two cores are the
    limit), but the pool also serves more cores and streams with no change.

    Args:
        compiled: the ``openvino.CompiledModel``.
    """

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self._lock = threading.Lock()
        self._idle: list[Any] = [compiled.create_infer_request()]
        self.size = 1  # requests made so far

    @contextmanager
    def request(self) -> Iterator[Any]:
        """An infer request that no other thread uses until the ``with`` block ends."""
        with self._lock:
            if self._idle:
                request = self._idle.pop()
            else:
                request = self.compiled.create_infer_request()
                self.size += 1
        try:
            yield request
        finally:
            with self._lock:
                self._idle.append(request)


class OpenVinoEncoder:
    """An exported encoder graph compiled by OpenVINO for the CPU.

    Safe to call from several threads at once: each call borrows its own infer request
    from an :class:`InferRequestPool`.

    Args:
        path: the encoder .onnx file (OpenVINO reads ONNX directly).
        threads: inference threads (None: OpenVINO's default).
        cache_dir: where OpenVINO keeps compiled blobs (faster start on the next run).
        precision: OpenVINO's ``INFERENCE_PRECISION_HINT``, ``f32`` or ``bf16`` (1024²:
            0.20 s against 0.85 s in f32; 2 cores with AMX).
    """

    def __init__(
        self, path: PathLike, threads: int | None = None, cache_dir: Path | None = None,
        precision: str = "f32",
    ) -> None:
        self.compiled = _openvino_compile(path, threads, cache_dir, precision)
        self.requests = InferRequestPool(self.compiled)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """(1, 3, H, W) float32 -> (1, 256, H/16, W/16) float32 CPU tensor."""
        with self.requests.request() as request:
            request.infer({0: x})
            # The request's output buffer is reused by its next call: copy it out before
            # the request goes back to the pool.
            return torch.from_numpy(request.get_output_tensor(0).data.copy())


class OpenVinoSession:
    """An OpenVINO compiled model behind ONNX Runtime's ``run(output_names, feeds)``.

    Safe to call from several threads at once, as ONNX Runtime's sessions are: each call
    borrows its own infer request from an :class:`InferRequestPool`.
    """

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.requests = InferRequestPool(compiled)

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list:
        outputs = self.compiled.outputs
        names = list(output_names) if output_names else [o.get_any_name() for o in outputs]
        with self.requests.request() as request:
            results = request.infer(feeds)
            # np.array copies: the request's buffers are the next borrower's.
            by_name = {o.get_any_name(): np.array(results[o]) for o in outputs}
        return [by_name[name] for name in names]


class OpenVinoRuntime:
    """OpenVINO's CPU plugin over the exported ONNX graphs."""

    name = "openvino"
    module = "openvino"
    install_hint = "pip install -e .[openvino]"
    runs_graphs = True

    def encoder(self, source: PathLike, *, threads: int | None = None,
                cache_dir: Path | None = None, variant: str = "",
                precision: str = "f32") -> OpenVinoEncoder:
        return OpenVinoEncoder(source, threads, cache_dir, precision)

    def decoder_session(self, path: Path, *, threads: int | None = None,
                        precision: str = "f32") -> Any:
        return OpenVinoSession(_openvino_compile(path, threads, None, precision))


# --------------------------------------------------------------------------- the table

TORCH = TorchRuntime()
ONNXRUNTIME = OnnxRuntimeRuntime()
OPENVINO = OpenVinoRuntime()

# Fastest first, measured on a 2-core AVX-512 CPU at 1024² (issue #7): OpenVINO 0.77 s,
# ONNX Runtime 0.88 s, PyTorch 0.98 s (fused, channels_last).
RUNTIMES: dict[str, Runtime] = {rt.name: rt for rt in (OPENVINO, ONNXRUNTIME, TORCH)}
BACKENDS = tuple(reversed(RUNTIMES))  # ("torch", "onnxruntime", "openvino")


def runtime(name: str) -> Runtime:
    """The runtime called ``name``; imports its package (ImportError with the install hint).

    Raises:
        ValueError: an unknown name.
        ImportError: the runtime's package is not installed.
    """
    if name not in RUNTIMES:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {name!r}")
    found = RUNTIMES[name]
    require(found.module, found.install_hint)
    return found


def backend_available(name: str) -> bool:
    """Whether the Python packages behind backend ``name`` are installed.

    Graph runtimes also need ``onnx``: the graphs are exported with it.
    """
    if name not in RUNTIMES:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {name!r}")
    found = RUNTIMES[name]
    if found.runs_graphs and importlib.util.find_spec("onnx") is None:
        return False
    return importlib.util.find_spec(found.module) is not None


def available_backends() -> list[str]:
    """Installed backends, fastest first."""
    return [name for name in RUNTIMES if backend_available(name)]


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
