"""Prompts from CLI text and index PNGs, and the strict check of a run's initial prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vos.io.davis_png import write_palette_png
from vos.io.prompt_input import (
    check_prompts,
    masks_from_png,
    parse_box,
    parse_points,
    prompts_from_flags,
)
from vos.types import PromptError


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
