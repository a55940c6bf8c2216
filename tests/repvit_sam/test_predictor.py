"""SamPredictor misuse: calls out of order raise RuntimeError, bad shapes raise ValueError.

STYLE 5.5: misuse says what to call first; shape contracts name the expected and actual shape.
The encoder is replaced by a cheap stand-in: none of this depends on its weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from repvit_sam import ImageEmbedding, Sam, SamPredictor, build_repvit_sam

BOX = np.array([4.0, 6.0, 30.0, 25.0])


class _ZeroEncoder(nn.Module):
    img_size = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert tuple(x.shape[1:]) == (3, 1024, 1024)
        return torch.zeros(x.shape[0], 256, 64, 64)


@pytest.fixture(scope="module")
def sam() -> Sam:
    torch.manual_seed(0)
    model = build_repvit_sam()
    model.image_encoder = _ZeroEncoder()
    return model.eval()


@pytest.fixture
def predictor(sam: Sam) -> SamPredictor:
    return SamPredictor(sam)


@pytest.fixture
def ready(predictor: SamPredictor) -> SamPredictor:
    predictor.set_image(_image())
    return predictor


@pytest.fixture
def embedding(predictor: SamPredictor) -> ImageEmbedding:
    return predictor.encode(_image())


def _image(h: int = 40, w: int = 60) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def _re_tuple(shape: tuple[int, ...]) -> str:
    return r"\(" + ", ".join(str(v) for v in shape) + r"\)"


# ---------------------------------------------------------------------------- call order


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda p: p.predict(box=BOX), id="predict"),
        pytest.param(lambda p: p.predict_torch(None, None, boxes=torch.zeros(1, 4)), id="torch"),
        pytest.param(lambda p: p.get_image_embedding(), id="get_image_embedding"),
    ],
)
def test_before_set_image_raises(predictor: SamPredictor, call) -> None:
    with pytest.raises(RuntimeError, match=r"set_image"):
        call(predictor)


def test_reset_image_then_predict_raises(ready: SamPredictor) -> None:
    ready.predict(box=BOX)  # works while the image is set
    ready.reset_image()
    assert not ready.is_image_set
    with pytest.raises(RuntimeError, match=r"set_image"):
        ready.predict(box=BOX)
    with pytest.raises(RuntimeError, match=r"set_image"):
        ready.get_image_embedding()


def test_encode_does_not_set_image(predictor: SamPredictor) -> None:
    predictor.encode(_image())
    with pytest.raises(RuntimeError, match=r"set_image"):
        predictor.predict(box=BOX)


# ---------------------------------------------------------------------------- images


BAD_IMAGES = [
    pytest.param(np.zeros((40, 60), np.uint8), r"\(H, W, 3\).*\(40, 60\)", id="gray-2d"),
    pytest.param(np.zeros((40, 60, 4), np.uint8), r"\(H, W, 3\).*\(40, 60, 4\)", id="rgba"),
    pytest.param(np.zeros((3, 40, 60), np.uint8), r"\(H, W, 3\).*\(3, 40, 60\)", id="chw"),
    # set_image takes a float image in [0, 1] as SAM does (test_compat_api), not 0-255;
    # encode() takes uint8 only.
    pytest.param(
        np.full((40, 60, 3), 255.0, np.float32), r"uint8.*float32|float32.*\[0, 1\]", id="float32"
    ),
    pytest.param(np.zeros((40, 60, 3), np.uint16), r"uint8.*uint16", id="uint16"),
    pytest.param(np.zeros((0, 60, 3), np.uint8), r"non-empty", id="empty"),
    pytest.param(torch.zeros(40, 60, 3, dtype=torch.uint8), r"numpy", id="torch-tensor"),
]


@pytest.mark.parametrize(("image", "message"), BAD_IMAGES)
def test_set_image_rejects_bad_image(predictor: SamPredictor, image, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        predictor.set_image(image)
    assert not predictor.is_image_set


@pytest.mark.parametrize(("image", "message"), BAD_IMAGES)
def test_encode_rejects_bad_image(predictor: SamPredictor, image, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        predictor.encode(image)


def test_set_image_rejects_unknown_format(predictor: SamPredictor) -> None:
    with pytest.raises(ValueError, match=r"image_format.*'RGBA'"):
        predictor.set_image(_image(), image_format="RGBA")


# ---------------------------------------------------------------------------- predict prompts


def test_point_coords_without_labels(ready: SamPredictor) -> None:
    with pytest.raises(ValueError, match=r"point_labels"):
        ready.predict(point_coords=np.array([[10.0, 10.0]]))


def test_point_labels_count_mismatch(ready: SamPredictor) -> None:
    with pytest.raises(ValueError, match=r"expected 1 labels, got 2"):
        ready.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1, 0]))


def test_point_labels_without_coords(ready: SamPredictor) -> None:
    with pytest.raises(ValueError, match=r"point_coords"):
        ready.predict(point_labels=np.array([1]), box=BOX)


@pytest.mark.parametrize(
    "coords",
    [
        pytest.param(np.zeros((2, 3)), id="2x3"),
        pytest.param(np.zeros((3, 3)), id="3x3"),
    ],
)
def test_point_coords_wrong_shape(ready: SamPredictor, coords: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"point_coords.*\(N, 2\)"):
        ready.predict(point_coords=coords, point_labels=np.ones(3))


def test_box_wrong_shape(ready: SamPredictor) -> None:
    with pytest.raises(ValueError, match=r"box: expected 4 values.*\(2, 4\)"):
        ready.predict(box=np.zeros((2, 4)))


@pytest.mark.parametrize("shape", [(256, 256), (3, 256, 256), (1, 1, 256, 256), (1, 64, 64)])
def test_mask_input_wrong_shape(ready: SamPredictor, shape: tuple[int, ...]) -> None:
    expected = r"expected shape \(1, 256, 256\), got " + _re_tuple(shape)
    with pytest.raises(ValueError, match=r"mask_input: " + expected):
        ready.predict(box=BOX, mask_input=np.zeros(shape, np.float32))


def test_mask_input_round_trip_is_accepted(ready: SamPredictor) -> None:
    _, scores, logits = ready.predict(box=BOX, multimask_output=True)
    masks, _, _ = ready.predict(box=BOX, mask_input=logits[np.argmax(scores)][None])
    assert masks.shape == (3, 40, 60)


# ---------------------------------------------------------------------------- decode


@pytest.mark.parametrize(
    ("kwargs", "seen"),
    [
        pytest.param(
            {"boxes_xyxy": np.zeros((2, 4)), "mask_logits": np.zeros((3, 1, 256, 256))},
            ("'boxes_xyxy': 2", "'mask_logits': 3"),
            id="boxes-vs-masks",
        ),
        pytest.param(
            {
                "boxes_xyxy": np.zeros((2, 4)),
                "points_xy": np.zeros((3, 1, 2)),
                "point_labels": np.ones((3, 1)),
            },
            ("'boxes_xyxy': 2", "'points_xy': 3"),
            id="boxes-vs-points",
        ),
    ],
)
def test_decode_mismatched_n(
    predictor: SamPredictor, embedding: ImageEmbedding, kwargs: dict, seen: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError, match=r"number of objects N") as info:
        predictor.decode(embedding, **kwargs)
    assert all(part in str(info.value) for part in seen), str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({}, r"at least one of", id="no-prompts"),
        pytest.param({"boxes_xyxy": np.zeros(4)}, r"\(N, 4\), got \(4,\)", id="box-1d"),
        pytest.param(
            {"points_xy": np.zeros((2, 2)), "point_labels": np.ones(2)},
            r"\(N, P, 2\).*got \(2, 2\)",
            id="points-2d",
        ),
        pytest.param({"points_xy": np.zeros((2, 1, 2))}, r"point_labels", id="points-no-labels"),
        pytest.param(
            {"points_xy": np.zeros((2, 1, 2)), "point_labels": np.ones((2, 2))},
            r"\(N, P\).*got \(2, 1, 2\) and \(2, 2\)",
            id="labels-shape",
        ),
        pytest.param(
            {"mask_logits": np.zeros((2, 256, 256))},
            r"\(N, 1, 256, 256\), got \(2, 256, 256\)",
            id="mask-3d",
        ),
    ],
)
def test_decode_bad_prompts(
    predictor: SamPredictor, embedding: ImageEmbedding, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        predictor.decode(embedding, **kwargs)


def test_decode_labels_without_points(predictor: SamPredictor, embedding: ImageEmbedding) -> None:
    with pytest.raises(ValueError, match=r"points_xy"):
        predictor.decode(embedding, boxes_xyxy=np.zeros((1, 4)), point_labels=np.ones((1, 1)))


def test_decode_needs_image_embedding(ready: SamPredictor) -> None:
    with pytest.raises((TypeError, ValueError), match=r"ImageEmbedding|encode"):
        ready.decode(ready.get_image_embedding(), boxes_xyxy=np.zeros((1, 4)))


def test_decode_zero_objects(predictor: SamPredictor, embedding: ImageEmbedding) -> None:
    try:
        prediction = predictor.decode(embedding, boxes_xyxy=np.zeros((0, 4)))
    except ValueError:
        return
    assert tuple(prediction.masks.shape) == (0, 1, 40, 60)
    assert tuple(prediction.low_res_logits.shape) == (0, 1, 256, 256)
