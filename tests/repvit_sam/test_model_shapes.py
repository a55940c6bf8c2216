"""Shapes through a random-init model: encoder, predictor on non-square images, batched decode.

The RepViT encoder costs about 3 s per 1024x1024 image on one free CPU core (far more on a busy
machine), so it runs for real only once per module (one 480x854 image through the predictor). The other image sizes only exercise the
resize, pad and postprocess geometry, which does not depend on the encoder; those use a cheap
stand-in encoder that checks its input is the padded 1024x1024 batch.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from repvit_sam import ImageEmbedding, MaskPrediction, Sam, SamPredictor, build_repvit_sam


class _StubEncoder(nn.Module):
    """A cheap input-dependent encoder: 16x16 average pool, then a fixed random 1x1 conv."""

    img_size = 1024

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.proj = nn.Conv2d(3, 256, 1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(256, 3, 1, 1, generator=generator))
            self.proj.bias.copy_(torch.randn(256, generator=generator))
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        assert tuple(x.shape[1:]) == (3, self.img_size, self.img_size)
        return self.proj(nn.functional.avg_pool2d(x, 16))


@pytest.fixture(scope="module")
def model() -> Sam:
    torch.manual_seed(0)
    return build_repvit_sam()


@pytest.fixture(scope="module")
def stub_model(model: Sam) -> Sam:
    stub = copy.deepcopy(model)
    stub.image_encoder = _StubEncoder()
    return stub.eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _box_for(h: int, w: int) -> np.ndarray:
    return np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h])


@pytest.fixture(scope="module")
def real_predictor(model: Sam) -> SamPredictor:
    """The one real 1024x1024 encoder pass of this module, on a 480x854 image."""
    seen: list[tuple[int, ...]] = []
    hook = model.image_encoder.register_forward_hook(
        lambda _module, args, _out: seen.append(tuple(args[0].shape))
    )
    try:
        predictor = SamPredictor(model)
        predictor.set_image(_image(480, 854))
    finally:
        hook.remove()
    assert seen == [(1, 3, 1024, 1024)]
    return predictor


def test_encoder_embedding_shape_at_1024(model: Sam, real_predictor: SamPredictor) -> None:
    assert not model.training
    features = real_predictor.get_image_embedding()
    assert tuple(features.shape) == (1, 256, 64, 64)
    assert features.dtype == torch.float32
    assert torch.isfinite(features).all()


def test_predictor_real_encoder_non_square(real_predictor: SamPredictor) -> None:
    predictor = real_predictor
    assert predictor.original_size == (480, 854)
    assert predictor.input_size == (576, 1024)

    masks, iou, low_res = predictor.predict(box=_box_for(480, 854), multimask_output=True)
    assert masks.shape == (3, 480, 854) and masks.dtype == np.bool_
    assert iou.shape == (3,)
    assert low_res.shape == (3, 256, 256)
    assert np.isfinite(low_res).all() and np.isfinite(iou).all()

    masks, iou, low_res = predictor.predict(
        point_coords=np.array([[427.0, 240.0]]), point_labels=np.array([1]), multimask_output=False
    )
    assert masks.shape == (1, 480, 854)
    assert iou.shape == (1,)
    assert low_res.shape == (1, 256, 256)


@pytest.mark.parametrize(
    ("hw", "input_hw"),
    [
        ((480, 854), (576, 1024)),
        ((1080, 1920), (576, 1024)),
        ((854, 480), (1024, 576)),  # portrait
        ((37, 61), (621, 1024)),  # upscaled, odd sizes
    ],
)
def test_predictor_geometry(
    stub_model: Sam, hw: tuple[int, int], input_hw: tuple[int, int]
) -> None:
    h, w = hw
    predictor = SamPredictor(stub_model)
    image = _image(h, w)
    predictor.set_image(image)
    assert predictor.input_size == input_hw
    assert stub_model.image_encoder.seen[-1] == (1, 3, 1024, 1024)

    masks, iou, low_res = predictor.predict(
        point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1])
    )
    assert masks.shape == (3, h, w)
    assert iou.shape == (3,)
    assert low_res.shape == (3, 256, 256)

    logits, _, _ = predictor.predict(box=_box_for(h, w), multimask_output=False, return_logits=True)
    assert logits.shape == (1, h, w)
    assert logits.dtype == np.float32

    embedding = predictor.encode(image)
    assert isinstance(embedding, ImageEmbedding)
    assert embedding.orig_hw == (h, w)
    assert embedding.input_hw == input_hw
    assert tuple(embedding.features.shape) == (1, 256, 64, 64)
    torch.testing.assert_close(embedding.features, predictor.get_image_embedding())


@pytest.mark.parametrize("multimask", [False, True])
def test_decode_shapes(stub_model: Sam, multimask: bool) -> None:
    h, w = 300, 500
    predictor = SamPredictor(stub_model)
    embedding = predictor.encode(_image(h, w))
    boxes = np.array([[10, 20, 200, 220], [100, 50, 480, 290], [0, 0, 499, 299]], np.float32)
    points = np.array([[[50, 60], [150, 100]], [[300, 200], [0, 0]], [[10, 10], [20, 20]]])
    labels = np.array([[1, 0], [1, -1], [1, 1]])
    prediction = predictor.decode(
        embedding,
        boxes_xyxy=boxes,
        points_xy=points,
        point_labels=labels,
        mask_logits=torch.zeros(3, 1, 256, 256),
        multimask_output=multimask,
    )
    c = 3 if multimask else 1
    assert isinstance(prediction, MaskPrediction)
    assert tuple(prediction.masks.shape) == (3, c, h, w)
    assert prediction.masks.dtype == torch.bool
    assert tuple(prediction.iou_scores.shape) == (3, c)
    assert tuple(prediction.low_res_logits.shape) == (3, c, 256, 256)
    assert prediction.iou_scores.dtype == prediction.low_res_logits.dtype == torch.float32


def test_decode_single_object_and_points_only(stub_model: Sam) -> None:
    predictor = SamPredictor(stub_model)
    embedding = predictor.encode(_image(64, 128))
    prediction = predictor.decode(
        embedding, points_xy=torch.tensor([[[30.0, 40.0]]]), point_labels=torch.tensor([[1]])
    )
    assert tuple(prediction.masks.shape) == (1, 1, 64, 128)
    assert tuple(prediction.low_res_logits.shape) == (1, 1, 256, 256)


@pytest.mark.parametrize("multimask", [False, True])
def test_decode_batch_equals_separate_predicts(stub_model: Sam, multimask: bool) -> None:
    h, w = 480, 854
    image = _image(h, w, seed=3)
    boxes = np.array([[40, 30, 400, 300], [500, 100, 850, 470], [200, 200, 260, 240]], np.float32)

    predictor = SamPredictor(stub_model)
    batched = predictor.decode(
        predictor.encode(image), boxes_xyxy=boxes, multimask_output=multimask
    )

    predictor.set_image(image)
    for i, box in enumerate(boxes):
        masks, iou, low_res = predictor.predict(box=box, multimask_output=multimask)
        np.testing.assert_allclose(batched.low_res_logits[i].numpy(), low_res, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(batched.iou_scores[i].numpy(), iou, rtol=1e-4, atol=1e-5)
        # Upsampled masks may flip only where a logit sits on the threshold.
        agreement = (batched.masks[i].numpy() == masks).mean()
        assert agreement > 0.9999, f"object {i}: masks agree on only {agreement:.6f}"


def test_predict_torch_batch_shapes(stub_model: Sam) -> None:
    h, w = 200, 100
    predictor = SamPredictor(stub_model)
    predictor.set_image(_image(h, w))
    boxes = predictor.transform.apply_boxes_torch(
        torch.tensor([[10.0, 10.0, 90.0, 150.0], [0.0, 0.0, 50.0, 50.0]]), (h, w)
    )
    masks, iou, low_res = predictor.predict_torch(None, None, boxes=boxes, multimask_output=True)
    assert tuple(masks.shape) == (2, 3, h, w)
    assert tuple(iou.shape) == (2, 3)
    assert tuple(low_res.shape) == (2, 3, 256, 256)
