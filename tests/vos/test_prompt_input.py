"""Prompts from CLI text and index PNGs, and the strict check of a run's initial prompts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vos.io.davis_png import write_palette_png
from vos.io.prompt_input import (
    check_prompts,
    masks_from_png,
    parse_box,
    parse_points,
    prompt_plan,
    prompts_from_file,
    prompts_from_flags,
    tracker_numbering,
)
from vos.types import Prompt, PromptError


def test_parse_box_and_points() -> None:
    assert parse_box(" 1, 2,3 ,4").tolist() == [1, 2, 3, 4]
    points, labels = parse_points("5,6 7,8,0;9,10,1")
    assert points.tolist() == [[5, 6], [7, 8], [9, 10]] and labels.tolist() == [1, 0, 1]
    for bad in ("1,2,3", "a,b,c,d", ""):
        with pytest.raises(PromptError, match="four numbers"):
            parse_box(bad)
    for bad, message in (("5,6,2", "label 0 or 1"), ("5", "label 0 or 1"), ("  ", "no points")):
        with pytest.raises(PromptError, match=message):
            parse_points(bad)


def test_index_png_gives_one_prompt_per_id(tmp_path: Path) -> None:
    index = np.zeros((8, 10), np.uint8)
    index[1:3, 1:3] = 4
    index[5:7, 5:9] = 9
    index[0, 9] = 255  # DAVIS void: not an object
    write_palette_png(tmp_path / "ids.png", index)
    prompts = prompts_from_flags(["0,0,4,4"], ["6,6"], str(tmp_path / "ids.png"), (8, 10))
    assert [p.obj_id for p in prompts] == [None, None, 4, 9]
    assert prompts[3].mask.sum() == 8
    with pytest.raises(PromptError, match="differs from the video"):
        masks_from_png(tmp_path / "ids.png", (8, 11))
    with pytest.raises(PromptError, match="no such file"):
        masks_from_png(tmp_path / "missing.png", (8, 10))


def test_initial_prompts_are_checked_strictly() -> None:
    with pytest.raises(PromptError, match="no initial prompt"):
        check_prompts([], (8, 10))
    # The library would clip this box; a run's initial prompt typed by hand is refused.
    with pytest.raises(PromptError, match="outside the 10x8 frame"):
        check_prompts(prompts_from_flags(["0,0,12,4"], [], None, (8, 10)), (8, 10))


# ---------------------------------------------------------------------- --prompts FILE.json
HW = (8, 10)


def write_prompts(tmp_path: Path, entries: object, name: str = "prompts.json") -> Path:
    path = tmp_path / name
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return path


def test_prompts_file_gives_prompts_by_frame(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    index = np.zeros(HW, np.uint8)
    index[1:3, 1:3] = 4
    index[5:7, 5:9] = 9
    write_palette_png(tmp_path / "masks" / "ids.png", index)
    binary = np.zeros(HW, np.uint8)
    binary[2:4, 2:6] = 255
    write_palette_png(tmp_path / "masks" / "bw.png", binary)
    path = write_prompts(tmp_path, [
        {"frame": 7, "obj_id": 1, "points": [[2, 3], [5.5, 6]], "labels": [1, 0]},
        {"frame": 0, "obj_id": 1, "box": [0, 0, 4.5, 4]},
        {"frame": 7, "obj_id": 9, "mask": "masks/ids.png"},
        {"frame": 3, "obj_id": 2, "mask": "masks/bw.png"},
        {"frame": 7, "obj_id": 3, "box": [0, 0, 10, 8], "points": [[1, 1]], "labels": [0]},
    ])
    prompts = prompts_from_file(path, HW, num_frames=8)
    assert list(prompts) == [0, 3, 7]
    assert [p.obj_id for p in prompts[7]] == [1, 9, 3]
    assert prompts[0][0].box_xyxy.tolist() == [0, 0, 4.5, 4]
    assert prompts[7][0].points_xy.tolist() == [[2, 3], [5.5, 6]]
    assert prompts[7][0].point_labels.tolist() == [1, 0]
    np.testing.assert_array_equal(prompts[7][1].mask, index == 9)  # the entry's id of many
    np.testing.assert_array_equal(prompts[3][0].mask, binary > 0)  # any id of a binary mask
    assert prompts[7][2].box_xyxy is not None and prompts[7][2].point_labels.tolist() == [0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{\"frame\": 0,", "not valid JSON (Expecting"),
        ("{}", "expected a non-empty JSON list"),
        ("[]", "expected a non-empty JSON list"),
        ([3], "entry 0: expected an object like"),
        ([{"frame": 0, "obj_id": 1, "box": [0, 0, 4, 4], "colour": 1}], "entry 0: unknown key 'colour'"),
        ([{"obj_id": 1, "box": [0, 0, 4, 4]}], "entry 0: 'frame' expected an integer, got nothing"),
        ([{"frame": 1.0, "obj_id": 1, "box": [0, 0, 4, 4]}], "'frame' expected an integer, got 1.0"),
        ([{"frame": 8, "obj_id": 1, "box": [0, 0, 4, 4]}], "entry 0: frame 8 out of range; the video has 8 frames (0..7)"),
        ([{"frame": -1, "obj_id": 1, "box": [0, 0, 4, 4]}], "frame -1 out of range"),
        ([{"frame": 0, "obj_id": 0, "box": [0, 0, 4, 4]}], "obj_id 0 out of range; expected an int in 1..254"),
        ([{"frame": 0, "obj_id": 255, "box": [0, 0, 4, 4]}], "obj_id 255 out of range"),
        ([{"frame": 0, "obj_id": "1", "box": [0, 0, 4, 4]}], "'obj_id' expected an integer, got \"1\""),
        ([{"frame": 0, "obj_id": True, "box": [0, 0, 4, 4]}], "'obj_id' expected an integer"),
        ([{"frame": 0, "obj_id": 1}], "entry 0: no prompt; expected"),
        ([{"frame": 0, "obj_id": 1, "points": [[1, 1]]}], "entry 0: points without labels"),
        ([{"frame": 0, "obj_id": 1, "box": [0, 0, 4, 4], "labels": [1]}], "labels without points"),
        ([{"frame": 0, "obj_id": 1, "points": [[1, 1]], "labels": [1, 0]}], "expected one label per point (1)"),
        ([{"frame": 0, "obj_id": 1, "points": [[1, 1]], "labels": [2]}], "each 1 (positive) or 0 (negative), got labels [2]"),
        ([{"frame": 0, "obj_id": 1, "points": [[1, 1]], "labels": [0]}], "at least one positive point"),
        ([{"frame": 0, "obj_id": 1, "points": [1, 1], "labels": [1]}], "points expected [[x, y], ...]"),
        ([{"frame": 0, "obj_id": 1, "points": [[1, 20]], "labels": [1]}], "a point lies outside the 10x8 frame"),
        ('[{"frame": 0, "obj_id": 1, "points": [[NaN, 1]], "labels": [1]}]', "points expected finite numbers"),
        ('[{"frame": 0, "obj_id": 1, "box": [0, 0, Infinity, 4]}]', "box expected finite numbers"),
        ([{"frame": 0, "obj_id": 1, "box": [0, 0, 4]}], "box expected [x0, y0, x1, y1] (numbers)"),
        ([{"frame": 0, "obj_id": 1, "box": [0, 0, "4", 4]}], "box expected [x0, y0, x1, y1]"),
        ([{"frame": 0, "obj_id": 1, "box": [4, 0, 2, 4]}], "expected x0 < x1"),
        ([{"frame": 0, "obj_id": 1, "box": [0, 0, 12, 4]}], "outside the 10x8 frame"),
        ([{"frame": 0, "obj_id": 1, "mask": "m.png", "box": [0, 0, 4, 4]}], "either \"mask\" or"),
        ([{"frame": 0, "obj_id": 1, "mask": "missing.png"}], "mask missing.png: no such file"),
        ([{"frame": 0, "obj_id": 1, "mask": 3}], "mask expected a PNG path"),
        ([{"frame": 0, "obj_id": 1, "mask": "small.png"}], "mask small.png: size 4x3 differs from the video's 10x8"),
        ([{"frame": 0, "obj_id": 1, "mask": "two.png"}], "an index mask without id 1 (it holds ids 2, 3)"),
        ([{"frame": 0, "obj_id": 1, "mask": "empty.png"}], "the mask is empty"),
        ([{"frame": 0, "obj_id": 1, "mask": "prompts.json"}], "not a readable image"),
        ([{"frame": 2, "obj_id": 1, "box": [0, 0, 4, 4]}, {"frame": 2, "obj_id": 1, "box": [0, 0, 5, 5]}],
         "entry 1: object 1 already has a prompt on frame 2 (entry 0)"),
    ],
)
def test_bad_prompts_file_gives_one_line_naming_the_entry(tmp_path: Path, content: object,
                                                          message: str) -> None:
    write_palette_png(tmp_path / "small.png", np.ones((3, 4), np.uint8))
    two = np.zeros(HW, np.uint8)
    two[0, 0], two[1, 1] = 2, 3
    write_palette_png(tmp_path / "two.png", two)
    write_palette_png(tmp_path / "empty.png", np.zeros(HW, np.uint8))
    path = write_prompts(tmp_path, content)
    with pytest.raises(PromptError) as info:
        prompts_from_file(path, HW, num_frames=8)
    text = str(info.value)
    assert text.startswith(f"--prompts {path}: ") and "\n" not in text, text
    assert message in text, text


def test_prompts_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="no such file"):
        prompts_from_file(tmp_path / "none.json", HW, 8)
    with pytest.raises(PromptError, match="a folder, expected a JSON file"):
        prompts_from_file(tmp_path, HW, 8)
    (tmp_path / "latin1.json").write_bytes(b"[\xe9]")
    with pytest.raises(PromptError, match="not UTF-8"):
        prompts_from_file(tmp_path / "latin1.json", HW, 8)


def test_prompt_plan_numbers_objects_without_ids() -> None:
    box = np.array([0, 0, 4, 4], np.float32)
    mask = np.zeros(HW, bool)
    mask[1, 1] = True
    # As the tracker numbers them: 1, 2, ... in order.
    plan = prompt_plan([Prompt(box_xyxy=box), Prompt(box_xyxy=box)], 3)
    assert {t: [p.obj_id for p in ps] for t, ps in plan.items()} == {3: [1, 2]}
    assert tracker_numbering([Prompt(box_xyxy=box), Prompt(mask=mask, obj_id=1)]) == [1, 1]
    # Beside given ids (a mask's, a file's), skipping them: nothing is replaced.
    plan = prompt_plan([Prompt(box_xyxy=box), Prompt(box_xyxy=box), Prompt(mask=mask, obj_id=1)],
                       5, {2: [Prompt(box_xyxy=box, obj_id=9)], 5: [Prompt(box_xyxy=box, obj_id=3)]})
    assert {t: [p.obj_id for p in ps] for t, ps in plan.items()} == {2: [9], 5: [10, 11, 1, 3]}
    plan = prompt_plan([Prompt(box_xyxy=box), Prompt(box_xyxy=box), Prompt(mask=mask, obj_id=1)],
                       0, {4: [Prompt(box_xyxy=box, obj_id=3)]})
    assert {t: [p.obj_id for p in ps] for t, ps in plan.items()} == {0: [2, 4, 1], 4: [3]}

    with pytest.raises(PromptError, match="object 1: prompted on frame 0 by --init-mask and by"):
        prompt_plan([Prompt(mask=mask, obj_id=1)], 0, {0: [Prompt(box_xyxy=box, obj_id=1)]})
    assert list(prompt_plan([Prompt(mask=mask, obj_id=1)], 0,
                            {2: [Prompt(box_xyxy=box, obj_id=1)]})) == [0, 2]  # a correction
