"""Resume is reader-safe and summaries tell the truth about frames read (issue 23, point 2)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.vos.synthetic import FakeSegmenter, SceneObject, render
from vos.config import RunConfig
from vos.io.sources import FrameSource, open_source
from vos.pipeline import OutputConflictError, run_video
from vos.types import Prompt

NUM_FRAMES = 8


class Announced(FrameSource):
    """A frame folder that says what a video reader would: its name, a count, a short read.

    Args:
        inner: the folder source giving the frames.
        reader: the reader name to announce.
        num_frames: the frame count to announce (the folder's by default).
        gives: how many frames ``frames`` yields at most (all by default).
    """

    def __init__(self, inner: FrameSource, reader: str, num_frames: int | None = None,
                 gives: int | None = None) -> None:
        self.inner = inner
        self.gives = gives
        self.info = dataclasses.replace(inner.info, reader=reader,
                                        num_frames=num_frames or inner.info.num_frames)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        end = stop if self.gives is None else min(stop or self.gives, self.gives)
        yield from self.inner.frames(start, end)


@pytest.fixture
def scene_folder(tmp_path: Path):
    objects = [SceneObject(((0, 20, 30), (NUM_FRAMES - 1, 60, 40)), (16, 16),
                           color=(230, 50, 50))]
    scene = render(objects, NUM_FRAMES, (64, 96))
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(scene.frames):
        cv2.imwrite(str(folder / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return scene, folder


def _run(scene, source: FrameSource, out: Path):
    prompts = [Prompt(mask=scene.gt_masks[0, 0], obj_id=1)]
    return run_video(source, FakeSegmenter(scene), prompts, out,
                     dataclasses.replace(RunConfig(), io=dataclasses.replace(
                         RunConfig().io, save_video=False)), progress=False)


def test_a_source_that_ends_early_is_not_complete(scene_folder, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    scene, folder = scene_folder
    out = tmp_path / "out"
    with open_source(folder) as inner, caplog.at_level(logging.WARNING, logger="vos.pipeline"):
        summary = _run(scene, Announced(inner, "opencv", gives=5), out)
    assert (summary.num_frames, summary.frames_read, summary.frames_processed) == (8, 5, 5)
    assert summary.complete is False
    written = json.loads((out / "summary.json").read_text())
    assert written["complete"] is False and written["frames_read"] == 5
    assert any("gave 5 of its 8 frames" in r.getMessage() for r in caplog.records)


def test_a_full_read_is_complete(scene_folder, tmp_path: Path) -> None:
    scene, folder = scene_folder
    with open_source(folder) as source:
        summary = _run(scene, source, tmp_path / "out")
    assert summary.complete and summary.frames_read == summary.num_frames == NUM_FRAMES
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (record["reader"], record["source_frames"]) == ("images", NUM_FRAMES)


@pytest.mark.parametrize(("reader", "num_frames", "match"), [
    ("pyav", None, r"8 frames read with opencv; this run reads 8 with pyav .*--reader opencv"),
    ("opencv", 12, r"8 frames read with opencv; this run reads 12 with opencv"),
])
def test_resume_refuses_frames_read_otherwise(scene_folder, tmp_path: Path, reader: str,
                                              num_frames: int | None, match: str) -> None:
    """The issue's case: an OpenCV run, then a rerun with another reader in the same folder."""
    scene, folder = scene_folder
    out = tmp_path / "out"
    with open_source(folder) as inner:
        _run(scene, Announced(inner, "opencv", gives=5), out)
    masks_before = sorted(p.name for p in (out / "masks").iterdir())
    with open_source(folder) as inner, pytest.raises(OutputConflictError, match=match) as info:
        _run(scene, Announced(inner, reader, num_frames=num_frames), out)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in (out / "masks").iterdir()) == masks_before


def test_resume_with_the_same_reader_finishes_the_run(scene_folder, tmp_path: Path) -> None:
    scene, folder = scene_folder
    out = tmp_path / "out"
    with open_source(folder) as inner:
        _run(scene, Announced(inner, "pyav", gives=5), out)
    with open_source(folder) as inner:
        summary = _run(scene, Announced(inner, "pyav"), out)
    assert summary.complete and summary.frames_read == NUM_FRAMES
