"""The segmenter contract: DecodePrompts checks, and decode by value or by SAM keywords."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repvit_sam.segmenter import DecodePrompts, MaskPrediction, SegmenterBase, SegmenterWrapper


class Recording(SegmenterBase):
    """Remembers the prompts it decodes and answers with empty masks."""

    def __init__(self) -> None:
        self.seen: list[DecodePrompts] = []

    def encode(self, image: np.ndarray) -> tuple[int, int]:
        return image.shape[:2]

    def decode_prompts(self, embedding, prompts: DecodePrompts) -> MaskPrediction:
        self.seen.append(prompts)
        n, c = prompts.num_objects, 3 if prompts.multimask_output else 1
        return MaskPrediction(torch.zeros(n, c, *embedding, dtype=torch.bool), torch.zeros(n, c),
                              torch.zeros(n, c, 256, 256))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one of"),
        ({"boxes_xyxy": np.zeros((2, 3))}, r"boxes_xyxy: expected \(N, 4\)"),
        ({"points_xy": np.zeros((1, 2, 2))}, "point_labels must be supplied"),
        ({"point_labels": np.ones((1, 2))}, "without points_xy"),
        ({"points_xy": np.zeros((1, 2, 2)), "point_labels": np.ones((1, 3))}, r"\(N, P\)"),
        ({"mask_logits": np.zeros((1, 1, 64, 64))}, r"mask_logits: expected \(N, 1, 256, 256\)"),
        ({"boxes_xyxy": np.zeros((2, 4)), "mask_logits": np.zeros((1, 1, 256, 256))}, "disagree"),
        ({"boxes_xyxy": np.zeros((0, 4))}, "N = 0"),
    ],
)
def test_decode_prompts_checks_the_shape_contract(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DecodePrompts.of(**kwargs)


def test_keywords_and_a_prompts_value_decode_the_same() -> None:
    segmenter = Recording()
    emb = segmenter.encode(np.zeros((6, 8, 3), np.uint8))
    boxes = np.array([[1, 1, 4, 5]], np.float64)
    points, labels = np.array([[[2, 2], [0, 0]]]), np.array([[1, -1]])
    by_keywords = segmenter.decode(emb, boxes_xyxy=boxes, points_xy=points, point_labels=labels,
                                   multimask_output=True)
    value = DecodePrompts.of(boxes_xyxy=boxes, points_xy=points, point_labels=labels,
                             multimask_output=True)
    by_value = segmenter.decode(emb, value)
    first, second = segmenter.seen
    assert first.boxes_xyxy.dtype == torch.float32 and first.point_labels.dtype == torch.int64
    for name in ("boxes_xyxy", "points_xy", "point_labels"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    assert first.multimask_output and second is value
    assert by_keywords.masks.shape == by_value.masks.shape == (1, 3, 6, 8)
    with pytest.raises(TypeError, match="not both"):
        segmenter.decode(emb, value, boxes_xyxy=boxes)
    with pytest.raises(TypeError, match="DecodePrompts"):
        segmenter.decode(emb, {"boxes_xyxy": boxes})  # type: ignore[arg-type]


def test_wrappers_pass_through_and_expose_the_inner_attributes() -> None:
    inner = Recording()
    inner.name = "recording"  # type: ignore[attr-defined]
    wrapper = SegmenterWrapper(inner)
    emb = wrapper.encode(np.zeros((3, 4, 3), np.uint8))
    wrapper.decode(emb, boxes_xyxy=np.zeros((2, 4)))
    assert emb == (3, 4) and inner.seen[0].num_objects == 2
    assert wrapper.name == "recording"
    moved = inner.seen[0].to("cpu")
    assert moved.num_objects == 2 and moved.boxes_xyxy.device.type == "cpu"
