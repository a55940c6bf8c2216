"""The ``bf16`` fast mode (issue 21): its text form, native-bf16 detection and the float32
fallback, the bf16 encoders, and the bf16 decoder's agreement with exact mode on every golden
case of ``../shared/conformance`` (plain and fused).

About the bounds. They come from measurements of every golden case on two ISA paths of a
2-core Intel Xeon with AMX (see ``GOLDEN_*`` below): native bf16 (AMX tiles) and oneDNN capped
with ``ONEDNN_MAX_CPU_ISA=AVX2`` plus ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (bf16 emulated in
float32 arithmetic with bf16 rounding of inputs and outputs; forced on with
``REPVIT_SAM_NATIVE_BF16=1``). Each bound leaves about twice the worst measured deviation
from exact mode. The tests pin the decoder, on the exact float32 embedding: with the
conformance fill the encoder amplifies float32 rounding ~800-fold (test_conformance.py), so a
bf16 encoder's embedding is 1.1-1.3 relative L2 from float32's there, a figure that says
nothing about a trained model; its tests use a well-conditioned encoder instead.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from repvit_sam import Sam, SamPredictor, build_repvit_sam
from repvit_sam.modeling.batched_decoder import BatchedMaskDecoder
from repvit_sam.runtime import BackendSegmenter, FastMode, GraphCache, build_segmenter
from repvit_sam.runtime import precision as precision_module
from repvit_sam.runtime.precision import (
    NATIVE_BF16_ENV,
    ONEDNN_ISA_ENV,
    native_bf16,
    onednn_caps_bf16,
)
from repvit_sam.runtime.runners import TorchEncoder, backend_available
from tests.repvit_sam.test_backends import PatchEncoder
from tests.repvit_sam.test_conformance import (  # noqa: F401  (fixtures)
    CASES,
    conformance_checkpoint,
    golden,
    image,
    prompts,
    rel_l2,
    run_case,
    unpack_masks,
    variant_predictor,
)

# bf16 decoder against exact mode's float32 decoder, same embedding, every golden case (plain
# and fused), worst case measured on the native path (AMX) / oneDNN capped at
# AVX512_CORE_BF16 / capped at AVX2 (emulated): mask agreement 0.99617 / 0.99557 / 0.99528,
# logit relative L2 0.0171 / 0.0177 / 0.0177, IoU 0.0055 / 0.0060 / 0.0075 (the bf16 layout
# of issue 21's second round, mask prompts downscaled in float32; the first round's worst
# were 0.99403, 0.0259 and 0.0114). Each bound is about twice the worst deviation.
GOLDEN_MASK_AGREEMENT_MIN = 0.990
GOLDEN_LOGIT_REL_L2_MAX = 0.04
GOLDEN_IOU_ABS_MAX = 0.015
# A bf16 encoder (a 16x16 patch convolution, well conditioned) against its float32 run:
# bf16 rounds the inputs and weights to 8 significant bits (2^-9 relative each). Measured
# 2.95e-3 (torch, every variant) and 2.99e-3 (OpenVINO) on the native and AVX512_CORE_BF16
# paths, 2.95e-3 (torch) on the AVX2 path, where OpenVINO refuses bf16 and runs float32.
PATCH_ENCODER_REL_L2_MAX = 0.006
BF16_CHANGES_SOMETHING = 1e-4  # float32 kernels agree with each other to ~1e-7


@pytest.fixture(scope="module")
def patch_model() -> Sam:
    torch.manual_seed(0)
    base = build_repvit_sam().eval()
    return Sam(PatchEncoder(), base.prompt_encoder, base.mask_decoder).eval()


@pytest.fixture()
def force_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run bf16 whatever this CPU has (emulated where it lacks it: slow, same rounding)."""
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")


# --------------------------------------------------------------------------- the mode


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("bf16", "bf16"),
        ("bf16+nopad", "bf16+nopad"),
        ("nopad+BF16", "bf16+nopad"),
        ("bf16+roi+size512", "bf16+roi+size512"),
        ("size512+roi+bf16", "bf16+roi+size512"),
    ],
)
def test_bf16_mode_parses_and_combines(text: str, name: str) -> None:
    mode = FastMode.parse(text)
    assert mode.bf16 and mode.name == name and not mode.is_exact
    assert FastMode.parse(mode.name) == mode
    assert mode.without_roi().bf16
    assert not FastMode.parse(name.replace("bf16+", "").replace("bf16", "exact")).bf16


# --------------------------------------------------------------------------- detection


def test_native_bf16_reads_cpu_flags_and_isa_caps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(NATIVE_BF16_ENV, raising=False)
    monkeypatch.delenv(ONEDNN_ISA_ENV, raising=False)
    info = tmp_path / "cpuinfo"
    probes: list[float] = []

    def probe(gain: float):  # a stand-in GEMM probe that records being asked
        def measure() -> float:
            probes.append(gain)
            return gain
        return measure

    # AMX tiles: native, no probe.
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    assert native_bf16("cpu", info, probe(0.5))[0] and not probes
    # bf16 dot products without AMX (Zen 4, Cooper Lake; Arm): the probe decides.
    for text in ("flags\t\t: fpu avx2 avx512f avx512_bf16\n", "Features\t: fp asimd bf16 i8mm\n"):
        info.write_text("processor\t: 0\n" + text)
        assert native_bf16("cpu", info, probe(4.9))[0]
        native, reason = native_bf16("cpu", info, probe(0.67))
        assert not native and "0.67x" in reason
    assert probes == [4.9, 0.67, 4.9, 0.67]
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")  # AVX2 only
    native, reason = native_bf16("cpu", info)
    assert not native and "AMX" in reason
    assert not native_bf16("cpu", tmp_path / "absent")[0]
    info.write_text("processor\t: 0\nflags\t\t: avx512f avx512_bf16 amx_bf16\n")
    # (cap, native with a slow probe, native with a fast one): caps below bf16 emulate it,
    # a cap between bf16 and AMX leaves dot products only (the probe decides), AMX caps keep
    # the tiles.
    for isa, slow, fast in [("AVX2", False, False), ("avx512_core", False, False),
                            ("AVX512_CORE_BF16", False, True), ("AVX512_CORE_AMX", True, True),
                            ("AVX10_1_512_AMX", True, True)]:
        monkeypatch.setenv(ONEDNN_ISA_ENV, isa)
        assert native_bf16("cpu", info, probe(0.67))[0] is slow, isa
        assert native_bf16("cpu", info, probe(4.9))[0] is fast, isa
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")
    assert native_bf16("cpu", tmp_path / "absent")[0]
    monkeypatch.setenv(NATIVE_BF16_ENV, "0")
    assert not native_bf16("cpu", info)[0]


def test_the_gemm_probe_measures_this_cpu_once() -> None:
    precision_module.bf16_gemm_gain.cache_clear()
    gain = precision_module.bf16_gemm_gain()
    # A ratio of two timings of the same product: positive and finite on any CPU (emulated
    # bf16 gives ~0.01, AMX ~7 here), and measured once per process.
    assert 0.0 < gain < 1000.0
    assert precision_module.bf16_gemm_gain() == gain
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return
    # With oneDNN capped at AVX2 every x86 CPU emulates bf16: the probe must see it slower.
    code = ("from repvit_sam.runtime.precision import bf16_gemm_gain as g, PROBE_MIN_GAIN as m; "
            "print(g() < m)")
    env = {**os.environ, ONEDNN_ISA_ENV: "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "True"


def test_without_native_bf16_the_mode_runs_float32_and_says_so_once(
    patch_model: Sam, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(NATIVE_BF16_ENV, "0")
    frame = np.random.default_rng(1).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger=precision_module.__name__):
        seg = build_segmenter(patch_model, "torch", mode="bf16", torch_variant="plain")
    lines = [r.getMessage() for r in caplog.records if r.name == precision_module.__name__]
    assert len(lines) == 1 and "no native bf16" in lines[0] and "as exact" in lines[0]
    assert isinstance(seg, BackendSegmenter)
    assert seg.mode.is_exact and seg.precision == "f32"
    assert not seg.predictor.batched_decoder.bf16
    # The float32 fallback is the mode without bf16, bit for bit.
    plain = BackendSegmenter(patch_model, backend="torch", torch_variant="plain")
    box = np.array([[20, 10, 120, 80]])
    ours, theirs = seg.encode(frame), plain.encode(frame)
    torch.testing.assert_close(ours.features, theirs.features, rtol=0, atol=0)
    torch.testing.assert_close(seg.decode(ours, boxes_xyxy=box).low_res_logits,
                               plain.decode(theirs, boxes_xyxy=box).low_res_logits,
                               rtol=0, atol=0)
    # The reference predictor serves a bf16 request that fell back to exact; a combined mode
    # keeps its other parts.
    assert isinstance(build_segmenter(patch_model, "predictor", mode="bf16"), SamPredictor)
    assert precision_module.effective_mode(FastMode.parse("bf16+roi+size512")).name == (
        "roi+size512")


# --------------------------------------------------------------------------- encoders


def test_torch_bf16_encoder_rounds_like_bf16(patch_model: Sam, force_bf16: None) -> None:
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 96)).astype(np.float32)
    exact = TorchEncoder(patch_model.image_encoder, "plain")(x)
    for variant in ("plain", "channels_last", "jit"):
        out = TorchEncoder(patch_model.image_encoder, variant, precision="bf16")(x)
        assert out.dtype == torch.float32 and out.shape == exact.shape, variant
        error = rel_l2(out.numpy(), exact.numpy())
        assert BF16_CHANGES_SOMETHING < error < PATCH_ENCODER_REL_L2_MAX, (variant, error)
    # The plain variant converts a copy: the model keeps its float32 weights.
    assert patch_model.image_encoder.proj.weight.dtype == torch.float32


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_graph_bf16_encoder(
    patch_model: Sam, tmp_path: Path, backend: str, force_bf16: None
) -> None:
    if not backend_available(backend):
        pytest.skip(f"{backend} is not installed")
    frame = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    cache = GraphCache(patch_model, root=tmp_path)
    exact = BackendSegmenter(patch_model, backend=backend, cache=cache, threads=1)
    bf16 = BackendSegmenter(patch_model, backend=backend, cache=cache, threads=1, mode="bf16")
    assert bf16.precision == "bf16" and bf16.predictor.batched_decoder.bf16
    error = rel_l2(bf16.encode(frame).features.numpy(), exact.encode(frame).features.numpy())
    # float32 graphs where the runtime has no bf16 here (the decoder still runs bf16):
    # ONNX Runtime on x86; OpenVINO with its oneDNN capped below bf16 (emulated path).
    float32_graphs = (
        backend == "onnxruntime" and platform.machine().lower() not in ("aarch64", "arm64")
    ) or (backend == "openvino" and onednn_caps_bf16())
    if float32_graphs:
        assert error == 0.0
    else:
        assert BF16_CHANGES_SOMETHING < error < PATCH_ENCODER_REL_L2_MAX


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_graph_decoders_stay_float32_in_bf16_mode(
    patch_model: Sam, tmp_path: Path, backend: str, force_bf16: None
) -> None:
    # The decoder graph takes the frame size as a float input: in bf16, 854 would round to
    # 856 (8 significant bits) and the masks would come back two pixels too wide.
    if not backend_available(backend):
        pytest.skip(f"{backend} is not installed")
    frame = np.random.default_rng(4).integers(0, 256, (480, 854, 3), dtype=np.uint8)
    cache = GraphCache(patch_model, root=tmp_path)
    exact = BackendSegmenter(patch_model, backend="torch", decoder_backend=backend,
                             cache=cache, threads=1)
    bf16 = BackendSegmenter(patch_model, backend="torch", decoder_backend=backend,
                            cache=cache, threads=1, mode="bf16")
    embedding = exact.encode(frame)
    boxes = np.array([[100, 80, 500, 400], [600, 50, 850, 470]], np.float32)
    ours = bf16.decode(embedding, boxes_xyxy=boxes, multimask_output=True)
    theirs = exact.decode(embedding, boxes_xyxy=boxes, multimask_output=True)
    assert ours.masks.shape == theirs.masks.shape == (2, 3, 480, 854)
    # Same float32 graph, same embedding: the same answer.
    np.testing.assert_array_equal(ours.low_res_logits.numpy(), theirs.low_res_logits.numpy())
    np.testing.assert_array_equal(ours.masks, theirs.masks)


# --------------------------------------------------------------------------- golden cases


@pytest.mark.parametrize("case", CASES)
def test_bf16_decoder_agrees_with_exact_on_every_golden_case(
    variant_predictor: tuple[str, SamPredictor],  # noqa: F811
    prompts: dict,  # noqa: F811
    golden: dict,  # noqa: F811
    image: np.ndarray,  # noqa: F811
    case: str,
) -> None:
    _, predictor = variant_predictor
    exact = run_case(predictor, prompts, golden, case)
    model = predictor.model
    original = predictor.batched_decoder
    predictor.batched_decoder = BatchedMaskDecoder(
        model.prompt_encoder, model.mask_decoder, bf16=True
    )
    try:
        ours = run_case(predictor, prompts, golden, case)
    finally:
        predictor.batched_decoder = original
    assert ours["low_res"].dtype == ours["iou"].dtype == np.float32
    logit_error = rel_l2(ours["low_res"], exact["low_res"])
    assert BF16_CHANGES_SOMETHING < logit_error < GOLDEN_LOGIT_REL_L2_MAX, case
    assert np.abs(ours["iou"] - exact["iou"]).max() < GOLDEN_IOU_ABS_MAX, case
    assert (ours["masks"] == exact["masks"]).mean() >= GOLDEN_MASK_AGREEMENT_MIN, case
    expected = unpack_masks(golden[f"img0/{case}/masks_packed"], image.shape[1])
    assert (ours["masks"] == expected).mean() >= GOLDEN_MASK_AGREEMENT_MIN, case
