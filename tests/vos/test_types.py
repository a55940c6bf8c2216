"""FrameResult validation and the explicit overlap rules of to_index_mask."""

from __future__ import annotations

import numpy as np
import pytest

from vos.types import FrameResult, Prompt, PromptError


def two_overlapping(scores: list[float]) -> FrameResult:
    masks = np.zeros((2, 3, 4), bool)
    masks[0, :, :3] = True  # id 4
    masks[1, :, 1:] = True  # id 2; columns 1-2 are claimed by both
    return FrameResult(
        frame_idx=0,
        obj_ids=np.array([4, 2]),
        masks=masks,
        scores=np.array(scores, np.float32),
        boxes_xyxy=np.zeros((2, 4), np.float32),
    )


@pytest.mark.parametrize(
    ("rule", "scores", "shared"),
    [
        ("lower_id_wins", [0.9, 0.1], 2),
        ("higher_id_wins", [0.1, 0.9], 4),
        ("higher_score_wins", [0.9, 0.1], 4),
        ("higher_score_wins", [0.1, 0.9], 2),
        ("higher_score_wins", [0.5, 0.5], 2),  # tie: lower id
    ],
)
def test_overlap_rules(rule: str, scores: list[float], shared: int) -> None:
    index = two_overlapping(scores).to_index_mask(rule)  # type: ignore[arg-type]
    assert index.dtype == np.uint8
    assert (index[:, 0] == 4).all()
    assert (index[:, 3] == 2).all()
    assert (index[:, 1:3] == shared).all()


def test_unknown_overlap_rule() -> None:
    with pytest.raises(ValueError, match="overlap"):
        two_overlapping([0.5, 0.5]).to_index_mask("random")  # type: ignore[arg-type]


def test_validation_rejects_inconsistent_arrays() -> None:
    ok = dict(
        frame_idx=0,
        obj_ids=np.array([1]),
        masks=np.zeros((1, 2, 2), bool),
        scores=np.zeros(1, np.float32),
        boxes_xyxy=np.zeros((1, 4), np.float32),
    )
    FrameResult(**ok)
    for key, bad, message in [
        ("masks", np.zeros((2, 2, 2), bool), "masks"),
        ("masks", np.zeros((1, 2, 2), np.uint8), "bool"),
        ("scores", np.zeros(3), "scores"),
        ("boxes_xyxy", np.zeros((1, 5)), "boxes_xyxy"),
    ]:
        with pytest.raises(ValueError, match=message):
            FrameResult(**{**ok, key: bad})
    with pytest.raises(ValueError, match="unique"):
        FrameResult(**{**ok, "obj_ids": np.array([1, 1]), "masks": np.zeros((2, 2, 2), bool),
                       "scores": np.zeros(2), "boxes_xyxy": np.zeros((2, 4))})


def test_large_ids_use_uint16_and_empty_result() -> None:
    result = FrameResult(
        frame_idx=3,
        obj_ids=np.array([300]),
        masks=np.ones((1, 2, 2), bool),
        scores=np.ones(1, np.float32),
        boxes_xyxy=np.zeros((1, 4), np.float32),
    )
    assert result.to_index_mask().dtype == np.uint16
    assert (result.to_index_mask() == 300).all()
    empty = FrameResult.empty(5, (3, 4))
    assert len(empty) == 0 and empty.image_hw == (3, 4)
    assert (empty.to_index_mask() == 0).all()


# ----------------------------------------------------------------------------- Prompt


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a mask, a box or points"),
        ({"mask": np.zeros((4, 4), bool)}, "empty"),
        ({"mask": np.ones((4, 4), bool), "box_xyxy": [0, 0, 2, 2]}, "not both"),
        ({"box_xyxy": [0, 0, 2]}, "4 finite numbers"),
        ({"box_xyxy": [0, 0, np.nan, 2]}, "4 finite numbers"),
        ({"box_xyxy": [3, 0, 2, 2]}, "x0 < x1"),
        ({"points_xy": [[np.nan, np.nan]]}, "finite"),
        ({"points_xy": [[1, 1]] * 65}, "at most 64"),
        ({"points_xy": [[1, 1]], "point_labels": [2]}, "one label per point .1., each 1 .positive. or 0"),
        ({"points_xy": [[1, 1]], "point_labels": [0]}, "positive"),
        ({"box_xyxy": [0, 0, 2, 2], "point_labels": [1]}, "point labels were given without points"),
        ({"box_xyxy": [0, 0, 2, 2], "obj_id": 0}, "obj_id"),
        ({"box_xyxy": [0, 0, 2, 2], "obj_id": True}, "obj_id"),
    ],
)
def test_prompt_rejects_malformed_values(kwargs: dict, message: str) -> None:
    with pytest.raises(PromptError, match=message) as info:
        Prompt(**kwargs)
    assert "\n" not in str(info.value)


def test_prompt_normalises_types() -> None:
    prompt = Prompt(box_xyxy=[1, 2, 3, 4], points_xy=[[2, 3]], obj_id=np.int64(7))
    assert prompt.box_xyxy.dtype == np.float32 and prompt.box_xyxy.shape == (4,)
    assert prompt.points_xy.dtype == np.float32 and prompt.points_xy.shape == (1, 2)
    assert prompt.point_labels.tolist() == [1] and prompt.point_labels.dtype == np.int64
    assert type(prompt.obj_id) is int and prompt.obj_id == 7
    # Negative points alone are fine next to a box.
    Prompt(box_xyxy=[1, 2, 3, 4], points_xy=[[2, 3]], point_labels=[0])


def test_prompt_checked_against_the_frame() -> None:
    hw = (10, 20)
    partly_out = Prompt(box_xyxy=[-5, 2, 25, 8])
    assert partly_out.checked(hw).box_xyxy.tolist() == [0, 2, 20, 8]  # clipped (library)
    with pytest.raises(PromptError, match="outside the 20x10 frame"):
        partly_out.checked(hw, clip=False)  # refused (CLI)
    with pytest.raises(PromptError, match="outside"):
        Prompt(box_xyxy=[30, 2, 40, 8]).checked(hw)
    with pytest.raises(PromptError, match="outside"):
        Prompt(points_xy=[[20, 5]]).checked(hw)
    with pytest.raises(PromptError, match="expected shape"):
        Prompt(mask=np.ones((5, 5), bool)).checked(hw)
    inside = Prompt(box_xyxy=[1, 2, 3, 4])
    assert inside.checked(hw, clip=False) is inside
