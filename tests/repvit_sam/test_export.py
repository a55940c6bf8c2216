"""ONNX and Core ML export: the exported graphs must compute what torch computes.

The model carries the conformance fill (``conformance_fill.fill_value`` for every key of its
own state_dict): deterministic, distinct weights and non-trivial BatchNorm statistics, so BN
fusion is really exercised (a fresh model has all-zero branches, which also lets the exporter
de-duplicate them). No shared data or checkpoint is needed.

The torch side is the unfused model; the ONNX encoder is fused, so the encoder comparison
covers fusion and export together. Measured on CPU (onnxruntime 1.32, torch 2.13, one thread):

- encoder: max |diff| 3.6e-4, rel L2 6.2e-5 (embedding max |value| about 4). These random
  weights amplify float32 rounding through 54 blocks: on N(0, 1) input torch's own float32
  output is at rel L2 2e-4 from float64, ONNX Runtime's optimised graph at 1.2e-3 (3e-6 with
  a freshly initialised model);
- decoder, same embedding in both: low-res logits within 3e-6 (1.4e-6 of their largest
  magnitude), IoU within 6e-7, full-size logits within 4.2e-5 (3.4e-5 relative);
- OnnxSegmenter vs SamPredictor (each with its own encoder): masks agree on >= 99.998% of
  pixels.

The tolerances leave about 10x margin. About 80 s on 2 shared cores: the 1024x1024
encoder is exported once and run once per runtime; Core ML conversion takes about 20 s.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from repvit_sam import ImageEmbedding, Sam, SamPredictor, build_repvit_sam
from repvit_sam.export import __main__ as export_cli
from repvit_sam.export.onnx import (
    DECODER_INPUT_NAMES,
    DECODER_OUTPUT_NAMES,
    SamOnnxDecoder,
    export_decoder_onnx,
    export_onnx,
)
from repvit_sam.runtime import OnnxSegmenter
from repvit_sam.segmenter import SegmenterWrapper
from tests.repvit_sam.conformance_fill import fill_value

IMAGE_HW = (300, 420)  # non-square: exercises padding and the crop in the decoder graph
ENCODER_REL_L2_MAX = 1e-3
ENCODER_ATOL = 5e-3
# Of each output's largest magnitude. The full-size masks go through one more resize whose
# down-scaling coordinates ONNX Runtime computes slightly differently (the 1024 up-scaling
# stage alone matches torch to 3e-8), hence the looser bound.
DECODER_RTOL = {"masks": 5e-4, "iou_predictions": 1e-5, "low_res_masks": 3e-5}
MASK_AGREEMENT_MIN = 0.999


def _rel_diff(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max |actual - expected|, that divided by max(1, max |expected|))."""
    diff = float(np.abs(actual.astype(np.float64) - expected).max()) if expected.size else 0.0
    return diff, diff / max(1.0, float(np.abs(expected).max()) if expected.size else 1.0)


@pytest.fixture(scope="module")
def model() -> Sam:
    sam = build_repvit_sam()
    state = {
        key: torch.from_numpy(fill_value(key, tuple(value.shape)))
        for key, value in sam.state_dict().items()
    }
    sam.load_state_dict(state, strict=True)
    return sam.eval()


@pytest.fixture(scope="module")
def onnx_dir(model: Sam, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    out = tmp_path_factory.mktemp("onnx")
    written = export_onnx(model, out)
    assert set(written) == {"encoder", "decoder"}
    return out


@pytest.fixture(scope="module")
def segmenter(onnx_dir: Path) -> OnnxSegmenter:
    pytest.importorskip("onnxruntime")
    return OnnxSegmenter.from_dir(onnx_dir, intra_op_num_threads=1)


@pytest.fixture(scope="module")
def predictor(model: Sam) -> SamPredictor:
    return SamPredictor(model)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    h, w = IMAGE_HW
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], axis=-1)
    img[60:200, 80:220] = (220, 40, 40)
    img[150:280, 250:400] = (30, 200, 90)
    img = img + rng.integers(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def embeddings(
    predictor: SamPredictor, segmenter: OnnxSegmenter, image: np.ndarray
) -> tuple[ImageEmbedding, ImageEmbedding]:
    """(torch, onnx) embeddings of the same image."""
    return predictor.encode(image), segmenter.encode(image)


# ----------------------------------------------------------------------------- graph contract


def test_graph_signatures(onnx_dir: Path) -> None:
    onnx = pytest.importorskip("onnx")

    def dims(value_info: Any) -> list[int | str]:
        return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]

    encoder = onnx.load(str(onnx_dir / "encoder.onnx"), load_external_data=False)
    assert [(v.name, dims(v)) for v in encoder.graph.input] == [("image", [1, 3, 1024, 1024])]
    assert [(v.name, dims(v)) for v in encoder.graph.output] == [
        ("image_embeddings", [1, 256, 64, 64])
    ]
    meta = {p.key: p.value for p in encoder.metadata_props}
    assert meta["repvit_sam.img_size"] == "1024"
    assert [float(v) for v in meta["repvit_sam.pixel_std"].split(",")] == pytest.approx(
        [58.395, 57.12, 57.375]
    )

    decoder = onnx.load(str(onnx_dir / "decoder.onnx"))
    inputs = {v.name: dims(v) for v in decoder.graph.input}
    assert tuple(inputs) == DECODER_INPUT_NAMES
    assert inputs["image_embeddings"] == [1, 256, 64, 64]
    assert inputs["point_coords"] == ["num_objects", "num_points", 2]
    assert inputs["point_labels"] == ["num_objects", "num_points"]
    assert inputs["mask_input"] == ["num_objects", 1, 256, 256]
    assert inputs["orig_im_size"] == [2]
    outputs = {v.name: dims(v) for v in decoder.graph.output}
    assert tuple(outputs) == DECODER_OUTPUT_NAMES
    assert outputs["iou_predictions"] == ["num_objects", 4]
    assert outputs["low_res_masks"] == ["num_objects", 4, 256, 256]


def test_encoder_matches_torch(
    model: Sam, segmenter: OnnxSegmenter, image: np.ndarray, embeddings: Any
) -> None:
    torch_emb, onnx_emb = embeddings
    assert onnx_emb.orig_hw == torch_emb.orig_hw == IMAGE_HW
    assert onnx_emb.input_hw == torch_emb.input_hw == (731, 1024)
    # The numpy pre-processing equals Sam.preprocess exactly (same float32 operations).
    onnx_input, _ = segmenter.preprocess(image)
    resized = SamPredictor(model).transform.apply_image(image)
    expected = model.preprocess(torch.from_numpy(resized).permute(2, 0, 1)[None].float())
    np.testing.assert_array_equal(onnx_input, expected.numpy())

    actual, reference = onnx_emb.features.numpy(), torch_emb.features.numpy()
    assert actual.shape == reference.shape == (1, 256, 64, 64)
    max_abs = float(np.abs(actual - reference).max())
    rel_l2 = float(np.linalg.norm(actual - reference) / np.linalg.norm(reference))
    print(f"encoder: max|diff| {max_abs:.2e}, rel L2 {rel_l2:.2e}")
    assert max_abs < ENCODER_ATOL
    assert rel_l2 < ENCODER_REL_L2_MAX


# ----------------------------------------------------------------------------- decoder graph


def _prompts(
    kind: str, num_objects: int, rng: np.random.Generator
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(points (N, P, 2), labels (N, P), boxes (N, 4)) in the 1024 model frame."""
    points = labels = boxes = None
    if "points" in kind:
        num_points = 1 if num_objects == 1 else 3
        points = torch.from_numpy(rng.uniform(0, 700, (num_objects, num_points, 2))).float()
        labels = torch.from_numpy(rng.integers(0, 2, (num_objects, num_points))).float()
        labels[:, 0] = 1
        if num_points > 1:
            labels[0, -1] = -1  # a padded slot, as vos.prompts.pad_points produces
    if "box" in kind:
        xy0 = rng.uniform(0, 500, (num_objects, 2))
        boxes = torch.from_numpy(np.concatenate([xy0, xy0 + rng.uniform(50, 400, xy0.shape)], 1))
        boxes = boxes.float()
    return points, labels, boxes


def _sam_onnx_points(
    points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """SAM's ONNX convention: box corners get labels 2/3; point-only prompts get a pad point."""
    coords, tags = [], []
    if points is not None:
        coords.append(points)
        tags.append(labels)
    if boxes is not None:
        coords.append(boxes.reshape(-1, 2, 2))
        tags.append(torch.tensor([[2.0, 3.0]]).repeat(n, 1))
    elif points is not None:
        coords.append(torch.zeros(n, 1, 2))
        tags.append(-torch.ones(n, 1))
    if not coords:
        return np.zeros((n, 0, 2), np.float32), np.zeros((n, 0), np.float32)
    return torch.cat(coords, 1).numpy(), torch.cat(tags, 1).numpy()


# The ONNX wrapper embeds points and box corners in one (N, P + 2, 2) @ (2, 128) product,
# PromptEncoder in two: a matmul kernel may round a row differently with the other rows of
# its block, so the two agree to float32 rounding, not always bit for bit (measured on an
# AVX2 CPU: box+points logits 1.3e-6 apart, IoU 1.5e-7; the other kinds and AVX-512 bitwise).
# float32's epsilon (1.2e-7) times the decoder's gain on such a change (~10) is ~1e-6:
# bound 1e-5.
WRAPPER_RTOL = WRAPPER_ATOL = 1e-5


@pytest.mark.parametrize("kind", ["points", "box", "box+points", "mask"])
def test_onnx_wrapper_equals_prompt_encoder(model: Sam, kind: str) -> None:
    """SAM's ONNX prompt convention gives PromptEncoder's results (torch only)."""
    rng = np.random.default_rng(11)
    points, labels, boxes = _prompts(kind, 3, rng)
    mask_in = torch.from_numpy(rng.normal(0, 4, (3, 1, 256, 256))).float()
    with_mask = kind == "mask"
    embedding = torch.from_numpy(rng.normal(0, 1, (1, 256, 64, 64))).float()
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(
            points=None if points is None else (points, labels.long()),
            boxes=boxes,
            masks=mask_in if with_mask else None,
        )
        expected = model.mask_decoder.predict_masks(
            embedding, model.prompt_encoder.get_dense_pe(), sparse, dense
        )
        coords, tags = _sam_onnx_points(points, labels, boxes, 3)
        wrapper = SamOnnxDecoder(model)
        actual = wrapper.predict_low_res(
            embedding,
            torch.from_numpy(coords),
            torch.from_numpy(tags),
            mask_in,
            torch.tensor([float(with_mask)]),
        )
        # The dense (mask) path has the same structure on both sides: equal bit for bit.
        dense_onnx = wrapper._embed_masks(mask_in, torch.tensor([float(with_mask)]))
    assert torch.equal(dense_onnx, dense)
    torch.testing.assert_close(actual[0], expected[0], rtol=WRAPPER_RTOL, atol=WRAPPER_ATOL)
    torch.testing.assert_close(actual[1], expected[1], rtol=WRAPPER_RTOL, atol=WRAPPER_ATOL)


DECODER_CASES = [
    pytest.param("box", 1, False, id="N1-box"),
    pytest.param("box", 4, True, id="N4-box-mask"),
    pytest.param("points", 1, False, id="N1-P1-points"),
    pytest.param("points", 4, True, id="N4-P3-points-mask"),
    pytest.param("box+points", 4, False, id="N4-box+points"),
    pytest.param("mask", 2, True, id="N2-mask-only"),
]


@pytest.mark.parametrize(("kind", "num_objects", "with_mask"), DECODER_CASES)
def test_decoder_matches_torch(
    model: Sam,
    segmenter: OnnxSegmenter,
    embeddings: Any,
    kind: str,
    num_objects: int,
    with_mask: bool,
) -> None:
    torch_emb, _ = embeddings
    rng = np.random.default_rng(num_objects + 10 * len(kind))
    points, labels, boxes = _prompts(kind, num_objects, rng)
    mask_in = torch.from_numpy(rng.normal(0, 4, (num_objects, 1, 256, 256))).float()

    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(
            points=None if points is None else (points, labels.long()),
            boxes=boxes,
            masks=mask_in if with_mask else None,
        )
        low_res, iou = model.mask_decoder.predict_masks(
            torch_emb.features, model.prompt_encoder.get_dense_pe(), sparse, dense
        )
        masks = model.postprocess_masks(low_res, torch_emb.input_hw, torch_emb.orig_hw)

    coords, tags = _sam_onnx_points(points, labels, boxes, num_objects)
    feeds = {
        "image_embeddings": torch_emb.features.numpy(),
        "point_coords": coords,
        "point_labels": tags,
        "mask_input": mask_in.numpy(),
        "has_mask_input": np.full(num_objects if with_mask else 1, float(with_mask), np.float32),
        "orig_im_size": np.array(IMAGE_HW, np.float32),
    }
    outputs = segmenter.decoder.run(None, feeds)
    for name, actual, expected in zip(
        DECODER_OUTPUT_NAMES, outputs, (masks, iou, low_res), strict=True
    ):
        assert actual.shape == tuple(expected.shape), name
        abs_diff, rel_diff = _rel_diff(actual, expected.numpy())
        print(
            f"{kind} N={num_objects} mask={with_mask} {name}: max|diff| {abs_diff:.2e} rel {rel_diff:.2e}"
        )
        assert rel_diff < DECODER_RTOL[name], (name, abs_diff)


def test_single_mask_graph_follows_sam_rule(
    model: Sam, onnx_dir: Path, segmenter: OnnxSegmenter, embeddings: Any, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    path = export_decoder_onnx(model, tmp_path / "single.onnx", return_single_mask=True)
    single = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    torch_emb, _ = embeddings
    rng = np.random.default_rng(3)
    for num_points in (2, 4):  # 1 point + pad -> best multimask token; 4 -> token 0
        feeds = {
            "image_embeddings": torch_emb.features.numpy(),
            "point_coords": rng.uniform(0, 700, (3, num_points, 2)).astype(np.float32),
            "point_labels": np.ones((3, num_points), np.float32),
            "mask_input": np.zeros((3, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array(IMAGE_HW, np.float32),
        }
        feeds["point_labels"][:, -1] = -1
        _, iou_all, low_all = segmenter.decoder.run(None, feeds)
        masks_one, iou_one, low_one = single.run(None, feeds)
        if num_points >= 3:
            best = np.zeros(3, np.int64)
        else:
            best = 1 + iou_all[:, 1:].argmax(1)
        rows = np.arange(3)
        assert masks_one.shape == (3, 1, *IMAGE_HW)
        np.testing.assert_allclose(iou_one[:, 0], iou_all[rows, best], rtol=0, atol=1e-6)
        np.testing.assert_allclose(low_one[:, 0], low_all[rows, best], rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="return_single_mask"):
        OnnxSegmenter(onnx_dir / "encoder.onnx", path)


# ----------------------------------------------------------------------------- OnnxSegmenter


SEGMENTER_CASES = [
    pytest.param({"boxes": 1}, False, id="N1-box"),
    pytest.param({"boxes": 4, "mask": True}, False, id="N4-box-prev-logits"),
    pytest.param({"points": (4, 2)}, True, id="N4-P2-points-multimask"),
    pytest.param({"boxes": 4, "points": (4, 1)}, True, id="N4-box+points-multimask"),
    pytest.param({"mask": True, "n": 2}, False, id="N2-mask-only"),
]


@pytest.mark.parametrize(("prompt", "multimask"), SEGMENTER_CASES)
def test_segmenter_matches_predictor(
    predictor: SamPredictor,
    segmenter: OnnxSegmenter,
    embeddings: Any,
    prompt: dict[str, Any],
    multimask: bool,
) -> None:
    torch_emb, onnx_emb = embeddings
    rng = np.random.default_rng(7)
    h, w = IMAGE_HW
    kwargs: dict[str, Any] = {}
    n = prompt.get("n", prompt.get("boxes", 0) or prompt.get("points", (0,))[0])
    if "boxes" in prompt:
        xy0 = rng.uniform(0, [w * 0.6, h * 0.6], (n, 2))
        kwargs["boxes_xyxy"] = np.concatenate([xy0, xy0 + rng.uniform(20, 150, (n, 2))], 1)
    if "points" in prompt:
        num_points = prompt["points"][1]
        kwargs["points_xy"] = rng.uniform(0, [w, h], (n, num_points, 2))
        kwargs["point_labels"] = np.ones((n, num_points), np.int64)
    if prompt.get("mask"):
        # The previous frame's logits, as the tracker feeds them back.
        seed = predictor.decode(torch_emb, boxes_xyxy=np.tile([[40.0, 30.0, 250.0, 200.0]], (n, 1)))
        kwargs["mask_logits"] = seed.low_res_logits

    expected = predictor.decode(torch_emb, multimask_output=multimask, **kwargs)
    actual = segmenter.decode(onnx_emb, multimask_output=multimask, **kwargs)
    num_masks = 3 if multimask else 1
    assert actual.masks.dtype == torch.bool
    assert actual.masks.shape == expected.masks.shape == (n, num_masks, *IMAGE_HW)
    assert actual.iou_scores.shape == expected.iou_scores.shape == (n, num_masks)
    assert actual.low_res_logits.shape == expected.low_res_logits.shape
    agreement = float((actual.masks == expected.masks).float().mean())
    print(f"{prompt} multimask={multimask}: mask agreement {agreement:.6f}")
    assert agreement >= MASK_AGREEMENT_MIN
    _, iou_rel = _rel_diff(actual.iou_scores.numpy(), expected.iou_scores.numpy())
    _, logit_rel = _rel_diff(actual.low_res_logits.numpy(), expected.low_res_logits.numpy())
    assert iou_rel < 1e-3 and logit_rel < 1e-3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({}, ValueError, "at least one of", id="no-prompt"),
        pytest.param(
            {"boxes_xyxy": np.zeros((2, 4)), "mask_logits": np.zeros((3, 1, 256, 256))},
            ValueError,
            "disagree",
            id="n-mismatch",
        ),
        pytest.param({"boxes_xyxy": np.zeros((4,))}, ValueError, r"\(N, 4\)", id="box-shape"),
        pytest.param({"boxes_xyxy": np.zeros((0, 4))}, ValueError, "N = 0", id="no-objects"),
        pytest.param(
            {"point_labels": np.ones((1, 1))}, ValueError, "without points_xy", id="labels-only"
        ),
        pytest.param(
            {"mask_logits": np.zeros((1, 256, 256))}, ValueError, "mask_logits", id="mask-3d"
        ),
    ],
)
def test_segmenter_rejects_bad_prompts(
    segmenter: OnnxSegmenter,
    embeddings: Any,
    kwargs: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        segmenter.decode(embeddings[1], **kwargs)


class _EncodeOnce(SegmenterWrapper):
    """A segmenter whose encode() returns a precomputed embedding (saves 1024^2 encoder runs)."""

    def __init__(self, segmenter: Any, image: np.ndarray, embedding: ImageEmbedding) -> None:
        super().__init__(segmenter)
        self.image, self.embedding = image, embedding

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        assert np.array_equal(image, self.image)
        return self.embedding


def test_segmenter_runs_the_video_tracker(
    predictor: SamPredictor, segmenter: OnnxSegmenter, image: np.ndarray, embeddings: Any
) -> None:
    """VideoTracker only needs encode/decode: ONNX and torch runs give the same tracks.

    The tracker derives each frame's prompts from the previous masks, so a boundary pixel that
    flips on one frame moves the next prompt; per-object IoU is the robust comparison here.
    """
    from vos.tracker import VideoTracker
    from vos.types import Prompt

    frames = [image] * 2
    prompts = {
        0: [
            Prompt(box_xyxy=np.array([80.0, 60.0, 220.0, 200.0], np.float32), obj_id=3),
            Prompt(box_xyxy=np.array([250.0, 150.0, 400.0, 280.0], np.float32), obj_id=5),
        ]
    }
    runs = [
        list(VideoTracker(_EncodeOnce(seg, image, emb)).track(frames, prompts))
        for seg, emb in zip((predictor, segmenter), embeddings, strict=True)
    ]
    assert runs[1][0].obj_ids.tolist() == [3, 5]
    for expected, actual in zip(*runs, strict=True):
        assert actual.obj_ids.tolist() == expected.obj_ids.tolist()
        for got, want in zip(actual.masks, expected.masks, strict=True):
            union = np.logical_or(got, want).sum()
            iou = np.logical_and(got, want).sum() / union if union else 1.0
            assert iou >= 0.99


def test_missing_onnxruntime_says_how_to_install(
    onnx_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[export\]"):
        OnnxSegmenter.from_dir(onnx_dir)


# ----------------------------------------------------------------------------- command line


@pytest.mark.slow
def test_cli_exports_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "exported"
    argv = ["onnx", "--checkpoint", "none", "--out", str(out), "--decoder-only", "--opset", "16"]
    assert export_cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "decoder:" in printed and "encoder:" not in printed
    assert not (out / "encoder.onnx").exists()
    onnx = pytest.importorskip("onnx")
    opsets = {o.domain: o.version for o in onnx.load(str(out / "decoder.onnx")).opset_import}
    assert opsets[""] == 16
    session = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(DECODER_INPUT_NAMES)
    feeds = {
        "image_embeddings": np.zeros((1, 256, 64, 64), np.float32),
        "point_coords": np.full((1, 2, 2), 100.0, np.float32),
        "point_labels": np.array([[1.0, -1.0]], np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([100.0, 80.0], np.float32),
    }
    masks, iou, low_res = session.run(None, feeds)
    assert masks.shape == (1, 4, 100, 80) and iou.shape == (1, 4)
    assert low_res.shape == (1, 4, 256, 256)


def test_cli_reports_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["onnx", "--checkpoint", str(tmp_path / "absent.pt"), "--out", str(tmp_path)]
    assert export_cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "absent.pt" in err and "\n" not in err


# ----------------------------------------------------------------------------- Core ML


def _coreml_features(spec: Any, which: str) -> dict[str, list[int]]:
    features = spec.description.input if which == "input" else spec.description.output
    return {f.name: list(f.type.multiArrayType.shape) for f in features}


@pytest.mark.slow
def test_coreml_encoder_converts(model: Sam) -> None:
    pytest.importorskip("coremltools")
    from repvit_sam.export.coreml import convert_encoder_coreml

    # Conversion cost does not depend on the input size; a 256 input keeps tracing cheap.
    mlmodel = convert_encoder_coreml(model, resolution=256, precision="fp32")
    spec = mlmodel.get_spec()
    assert _coreml_features(spec, "input") == {"image": [1, 3, 256, 256]}
    assert _coreml_features(spec, "output") == {"image_embeddings": [1, 256, 16, 16]}
    if sys.platform != "darwin":
        pytest.skip("Core ML prediction needs macOS; conversion and spec checked")
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        expected = model.image_encoder(x).numpy()
    actual = mlmodel.predict({"image": x.numpy()})["image_embeddings"]
    assert np.abs(actual - expected).max() < 1e-2


@pytest.mark.slow
def test_coreml_decoder_converts(model: Sam) -> None:
    pytest.importorskip("coremltools")
    from repvit_sam.export.coreml import convert_decoder_coreml

    mlmodel = convert_decoder_coreml(model, max_points=8)
    spec = mlmodel.get_spec()
    inputs = _coreml_features(spec, "input")
    assert list(inputs) == list(DECODER_INPUT_NAMES[:5])
    assert inputs["image_embeddings"] == [1, 256, 64, 64]
    assert inputs["mask_input"] == [1, 1, 256, 256]
    ranges = {
        f.name: [(r.lowerBound, r.upperBound) for r in f.type.multiArrayType.shapeRange.sizeRanges]
        for f in spec.description.input
    }
    assert ranges["point_coords"] == [(1, 1), (1, 8), (2, 2)]
    assert _coreml_features(spec, "output") == {
        "iou_predictions": [1, 4],
        "low_res_masks": [1, 4, 256, 256],
    }
    if sys.platform != "darwin":
        pytest.skip("Core ML prediction needs macOS; conversion and spec checked")
