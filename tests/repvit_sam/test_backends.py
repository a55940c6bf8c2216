"""Encoder/decoder backends and fast modes (``repvit_sam.runtime``).

Two halves. The first needs nothing but torch: fast-mode geometry, exact pre-processing, and
the generalised decoder path (which must reproduce SAM's own path on SAM's grid). The second
replays the ``box_single`` golden case and the image embedding of ``../shared/conformance``
through every installed backend, with the README's tolerances for a fused encoder; it skips
when ``../shared`` or a backend is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from repvit_sam import ImageEmbedding, Sam, SamPredictor, build_repvit_sam, sam_model_registry
from repvit_sam.runtime import EXACT, BackendSegmenter, FastMode, GraphCache, backend_available
from repvit_sam.runtime.graphs import cpu_has_vnni
from repvit_sam.runtime.preprocess import preprocess
from tests.repvit_sam.conformance_fill import write_conformance_checkpoint

EMBED_TOL_FUSED = 1e-3  # README: a fused encoder's embedding, relative L2
LOGIT_TOL = 1e-3
MASK_AGREEMENT_MIN = 0.999


def rel_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.fixture(scope="module")
def random_model() -> Sam:
    torch.manual_seed(0)
    return build_repvit_sam().eval()


# --------------------------------------------------------------------------- fast modes


@pytest.mark.parametrize(
    ("text", "name", "size", "pad", "int8"),
    [
        ("exact", "exact", 1024, True, False),
        ("nopad", "nopad", 1024, False, False),
        ("size512+nopad", "size512+nopad", 512, False, False),
        ("NOPAD+size768", "size768+nopad", 768, False, False),
        ("int8", "int8", 1024, True, True),
    ],
)
def test_fast_mode_parse(text: str, name: str, size: int, pad: bool, int8: bool) -> None:
    mode = FastMode.parse(text)
    assert (mode.name, mode.input_size, mode.pad_square, mode.int8) == (name, size, pad, int8)
    assert mode.is_exact == (name == "exact")
    assert FastMode.parse(mode.name) == mode


@pytest.mark.parametrize("text", ["size500", "fast", "size"])
def test_fast_mode_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        FastMode.parse(text)


def test_encoder_input_geometry() -> None:
    # 854x480 (DAVIS) resizes to 1024x576 (575.5 rounds up), already a multiple of 16.
    assert EXACT.encoder_input_hw((480, 854)) == (1024, 1024)
    assert FastMode.parse("nopad").encoder_input_hw((480, 854)) == (576, 1024)
    # 300x420 -> 731x1024 at 1024, padded to 736; 366x512 at 512, padded to 368.
    assert FastMode.parse("nopad").encoder_input_hw((300, 420)) == (736, 1024)
    assert FastMode.parse("size512+nopad").encoder_input_hw((300, 420)) == (368, 512)
    assert FastMode.parse("size512").full_grid_hw() == (32, 32)


def test_preprocess_matches_sam_preprocess_bitwise(random_model: Sam) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    predictor = SamPredictor(random_model)
    resized = predictor.transform.apply_image(image)
    expected = random_model.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float())
    mean = random_model.pixel_mean.numpy()
    std = random_model.pixel_std.numpy()
    actual = preprocess(image, EXACT, mean, std)
    assert actual.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(actual, expected.numpy())
    cropped = preprocess(image, FastMode.parse("nopad"), mean, std)
    assert cropped.shape == (1, 3, 736, 1024)
    np.testing.assert_array_equal(cropped, expected.numpy()[..., :736, :])


def test_generalised_decoder_reproduces_sam_path_on_sam_grid(random_model: Sam) -> None:
    """The fast-mode decoder path, given SAM's own 64x64 grid, is SAM's decoder."""
    predictor = SamPredictor(random_model, decoder="reference")
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(1, 256, 64, 64, generator=gen)
    boxes = torch.tensor([[100.0, 120.0, 500.0, 640.0], [10.0, 20.0, 300.0, 200.0]])
    masks_in = torch.randn(2, 1, 256, 256, generator=gen)
    with torch.inference_mode():
        exact = predictor._decode(features, None, None, boxes, masks_in, True)
        general = predictor._decode_on_grid(
            features, None, boxes, masks_in, True, (64, 64), (64, 64)
        )
    for a, b in zip(exact, general, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resample_to_grid_keeps_geometry() -> None:
    from repvit_sam.runtime.preprocess import resample_to_grid

    # A 32x32 full grid (512 input) whose top 18 rows hold content -> 36 rows of SAM's grid.
    ramp = torch.arange(32.0).reshape(1, 1, 32, 1).expand(1, 2, 32, 32)
    out = resample_to_grid(ramp[..., :18, :].contiguous(), (32, 32), (64, 64))
    assert out.shape == (1, 2, 36, 64) and out.is_contiguous()
    full = resample_to_grid(ramp.contiguous(), (32, 32), (64, 64))
    assert full.shape == (1, 2, 64, 64)
    # Away from the crop edge, cropped and full inputs resample identically.
    torch.testing.assert_close(out[..., :35, :], full[..., :35, :])
    # 16x16 (256 input) with 4 content rows -> 16 rows; identity on SAM's own grid.
    assert resample_to_grid(torch.zeros(1, 3, 4, 16), (16, 16), (64, 64)).shape == (1, 3, 16, 64)
    same = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(resample_to_grid(same, (64, 64), (64, 64)), same)


def test_cropped_grid_sees_the_full_grids_positional_encoding(random_model: Sam) -> None:
    pe = random_model.prompt_encoder
    full = pe.get_dense_pe()
    torch.testing.assert_close(pe.get_dense_pe((36, 64)), full[..., :36, :], rtol=0, atol=0)
    assert pe.get_dense_pe(full_grid_hw=(32, 32)).shape == (1, 256, 32, 32)


@pytest.mark.parametrize("mode", ["nopad", "size256", "size256+nopad"])
def test_fast_mode_keeps_the_decode_contract(random_model: Sam, mode: str) -> None:
    """Fast modes return SAM-frame logits, so the tracker's mask prompt round-trips."""
    seg = BackendSegmenter(random_model, backend="torch", mode=mode, torch_variant="fused")
    # A wide frame keeps the 1024-wide nopad input small (208 rows). The embedding lands on
    # SAM's grid: 13 rows of 16 pixels cover the 205 content rows at 1024, at any input size.
    image = np.random.default_rng(0).integers(0, 256, (40, 200, 3), dtype=np.uint8)
    embedding = seg.encode(image)
    cropped = "nopad" in mode
    assert embedding.features.shape == ((1, 256, 13, 64) if cropped else (1, 256, 64, 64))
    assert embedding.full_grid_hw == ((64, 64) if cropped else None)
    assert embedding.input_hw == (205, 1024)
    first = seg.decode(embedding, boxes_xyxy=np.array([[20, 5, 120, 35]]))
    again = seg.decode(
        embedding,
        boxes_xyxy=np.array([[20, 5, 120, 35]]),
        mask_logits=first.low_res_logits,
        multimask_output=True,
    )
    assert first.low_res_logits.shape == (1, 1, 256, 256)
    assert again.masks.shape == (1, 3, 40, 200) and again.masks.dtype == torch.bool
    assert again.iou_scores.shape == (1, 3)


class PatchEncoder(torch.nn.Module):
    """A cheap stand-in image encoder with SAM's geometry: 16x16 patches to 256 channels."""

    img_size = 1024

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 256, kernel_size=16, stride=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def test_exact_torch_backend_equals_predictor(random_model: Sam) -> None:
    torch.manual_seed(0)
    model = Sam(PatchEncoder(), random_model.prompt_encoder, random_model.mask_decoder).eval()
    image = np.random.default_rng(2).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    expected = SamPredictor(model).encode(image)
    seg = BackendSegmenter(model, backend="torch", torch_variant="plain")
    actual = seg.encode(image)
    assert actual.full_grid_hw is None
    assert (actual.orig_hw, actual.input_hw) == (expected.orig_hw, expected.input_hw)
    torch.testing.assert_close(actual.features, expected.features, rtol=0, atol=0)


def test_torch_variants_agree(random_model: Sam) -> None:
    torch.manual_seed(0)
    model = Sam(PatchEncoder(), random_model.prompt_encoder, random_model.mask_decoder).eval()
    image = np.random.default_rng(4).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    outputs = {
        variant: BackendSegmenter(model, backend="torch", torch_variant=variant).encode(image)
        for variant in ("plain", "fused", "channels_last", "jit")
    }
    reference = outputs.pop("plain").features
    for variant, embedding in outputs.items():
        assert embedding.features.is_contiguous(), variant
        torch.testing.assert_close(embedding.features, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_encoder_is_calibrated_cached_and_close(
    random_model: Sam, tmp_path: Path, backend: str
) -> None:
    if not (backend_available("onnxruntime") and backend_available(backend)):
        pytest.skip(f"{backend} (and onnxruntime's quantiser) not installed")
    torch.manual_seed(0)
    model = Sam(PatchEncoder(), random_model.prompt_encoder, random_model.mask_decoder).eval()
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(3)]
    cache = GraphCache(model, root=tmp_path)
    seg = BackendSegmenter(
        model, backend=backend, mode="int8", cache=cache, calibration_frames=frames, threads=1
    )
    quantised = seg.encode(frames[0]).features
    # The graph names the quantisation scheme: 7-bit weights on CPUs without VNNI.
    scheme = "u8s8" if cpu_has_vnni() else "u8s8r7"
    assert sorted(p.name for p in cache.dir.glob("encoder_int8_*.onnx")) == [
        f"encoder_int8_1024x1024_op17_{scheme}.onnx"
    ]
    exact = SamPredictor(model).encode(frames[0]).features
    assert rel_l2(quantised.numpy(), exact.numpy()) < 0.05
    # Cached: a new segmenter needs no calibration frames.
    again = BackendSegmenter(model, backend=backend, mode="int8", cache=cache, threads=1)
    torch.testing.assert_close(again.encode(frames[0]).features, quantised)
    with pytest.raises(ValueError, match="calibration"):
        BackendSegmenter(
            model, backend=backend, mode="int8", cache=GraphCache(model, root=tmp_path / "new")
        ).encode(frames[0])


def test_fast_modes_need_a_convolutional_encoder() -> None:
    vit_t = sam_model_registry["vit_t"]()
    with pytest.raises(ValueError, match="RepViT"):
        BackendSegmenter(vit_t, backend="torch", mode="size512")
    with pytest.raises(ValueError, match="graph backend"):
        BackendSegmenter(build_repvit_sam(), backend="torch", mode="int8")


def test_graph_cache_exports_once(random_model: Sam, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"not really a checkpoint, only hashed")
    cache = GraphCache(random_model, checkpoint=checkpoint, root=tmp_path / "cache")
    assert cache.dir == tmp_path / "cache" / cache.key and len(cache.key) == 16
    path = cache.decoder()
    stamp = path.stat().st_mtime_ns
    assert GraphCache(random_model, checkpoint=checkpoint, root=tmp_path / "cache").decoder() == path
    assert path.stat().st_mtime_ns == stamp
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- conformance


@pytest.fixture(scope="module")
def conformance_model(
    conformance_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Sam, Path]:
    path = tmp_path_factory.mktemp("backends") / "repvit_sam_conformance.pt"
    write_conformance_checkpoint(conformance_dir / "keys.tsv", path)
    return sam_model_registry["repvit"](checkpoint=path), path


@pytest.fixture(scope="module")
def graph_cache(
    conformance_model: tuple[Sam, Path], tmp_path_factory: pytest.TempPathFactory
) -> GraphCache:
    model, checkpoint = conformance_model
    return GraphCache(model, checkpoint=checkpoint, root=tmp_path_factory.mktemp("graphs"))


# The torch variants other than the default are checked against it on a small model
# (test_torch_variants_agree); each would cost another 1024² encode here.
BACKEND_CASES = [
    ("torch", "channels_last"),
    ("onnxruntime", "fused"),
    ("openvino", "fused"),
]


@pytest.mark.parametrize(("backend", "variant"), BACKEND_CASES)
def test_backend_meets_conformance(
    backend: str,
    variant: str,
    conformance_model: tuple[Sam, Path],
    graph_cache: GraphCache,
    conformance_dir: Path,
) -> None:
    if not backend_available(backend):
        pytest.skip(f"{backend} is not installed")
    model, _ = conformance_model
    image = cv2.cvtColor(cv2.imread(str(conformance_dir / "picture1.jpg")), cv2.COLOR_BGR2RGB)
    spec = json.loads((conformance_dir / "prompts.json").read_text())["img0/box_single"]
    with np.load(conformance_dir / "golden.npz") as data:
        golden = {k: data[k] for k in data.files if k.startswith("img0/box_single/")}
        golden["embedding"] = data["img0/image_embedding"]
    seg = BackendSegmenter(
        model, backend=backend, torch_variant=variant, cache=graph_cache, threads=1
    )
    embedding = seg.encode(image)
    assert isinstance(embedding, ImageEmbedding)
    assert rel_l2(embedding.features.numpy(), golden["embedding"]) < EMBED_TOL_FUSED
    pred = seg.decode(embedding, boxes_xyxy=np.array([spec["box"]]), multimask_output=False)
    low_res = pred.low_res_logits[0].numpy()
    assert rel_l2(low_res, golden["img0/box_single/low_res_logits"]) < LOGIT_TOL
    iou = pred.iou_scores[0].numpy()
    assert rel_l2(iou, golden["img0/box_single/iou_predictions"]) < LOGIT_TOL
    packed = golden["img0/box_single/masks_packed"]
    expected = np.unpackbits(packed, axis=-1)[..., : image.shape[1]].astype(bool)
    assert (pred.masks[0].numpy() == expected).mean() >= MASK_AGREEMENT_MIN


@pytest.mark.parametrize(
    ("input_hw", "orig_hw"),
    [((576, 1024), (480, 854)), ((731, 1024), (300, 420)), ((1024, 577), (1000, 563)),
     ((1024, 1024), (500, 500)), ((1, 1024), (1, 1000))],
)
def test_decode_postprocess_is_sams_bit_for_bit(
    random_model: Sam, input_hw: tuple[int, int], orig_hw: tuple[int, int]
) -> None:
    """decode() upsamples only the unpadded part of the logits, with identical results."""
    low_res = 10 * torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    expected = random_model.postprocess_masks(low_res, input_hw, orig_hw)
    actual = SamPredictor(random_model)._postprocess_masks(low_res, input_hw, orig_hw)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_vnni_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert cpu_has_vnni(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")  # AMD EPYC, Zen 2
    assert not cpu_has_vnni(info)
    assert not cpu_has_vnni(tmp_path / "absent")  # unknown: the safe 7-bit scheme
