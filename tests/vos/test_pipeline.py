"""The resumable video pipeline with a fake segmenter: interruption, resume, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.vos.synthetic import FakeSegmenter, SceneObject, render
from vos.config import RunConfig
from vos.io.davis_png import read_palette_png
from vos.io.sinks import decode_rle, probe_video_frames
from vos.io.sources import open_source
from vos.pipeline import run_video
from vos.types import Prompt


@pytest.fixture
def scene_folder(tmp_path: Path):
    objects = [SceneObject(((0, 20, 30), (11, 80, 40)), (16, 16), color=(230, 50, 50)),
               SceneObject(((0, 100, 60), (11, 60, 60)), (14, 20), "ellipse", (40, 220, 40))]
    scene = render(objects, 12, (96, 128))
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(scene.frames):
        cv2.imwrite(str(folder / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return scene, folder


class Interrupting(FakeSegmenter):
    """Raises KeyboardInterrupt (a Ctrl-C) when asked to encode frame ``stop_at``."""

    def __init__(self, *args, stop_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop_at = stop_at

    def encode(self, image):
        embedding = super().encode(image)
        if embedding.frame_idx == self.stop_at:
            raise KeyboardInterrupt
        return embedding


def prompts_for(scene) -> list[Prompt]:
    return [Prompt(mask=scene.gt_masks[0, k], obj_id=k + 1) for k in range(2)]


def test_outputs_match_the_tracker_results(scene_folder, tmp_path: Path) -> None:
    scene, folder = scene_folder
    out = tmp_path / "out"
    with open_source(folder) as source:
        summary = run_video(source, FakeSegmenter(scene), prompts_for(scene), out, RunConfig(),
                            progress=False)
    assert summary.complete and summary.frames_processed == 12
    for t in range(12):
        index = read_palette_png(out / "masks" / f"{t:05d}.png")
        for k in range(2):
            assert np.array_equal(index == k + 1, scene.gt_masks[t, k])
        record = json.loads((out / "json" / f"{t:05d}.json").read_text())
        assert [o["obj_id"] for o in record["objects"]] == [1, 2]
        assert np.array_equal(decode_rle(record["objects"][0]["segmentation"]),
                              scene.gt_masks[t, 0])
    assert probe_video_frames(out / "overlay.mp4") == 12
    assert set(summary.stage_ms_per_frame) >= {"decode video", "encode", "decode masks"}


def test_interrupted_run_leaves_valid_frames_and_resumes(scene_folder, tmp_path: Path) -> None:
    scene, folder = scene_folder
    out = tmp_path / "out"
    with open_source(folder) as source, pytest.raises(KeyboardInterrupt):
        run_video(source, Interrupting(scene, stop_at=7), prompts_for(scene), out, RunConfig(),
                  progress=False)
    written = sorted(p.stem for p in (out / "json").glob("*.json"))
    assert written == [f"{t:05d}" for t in range(7)]
    for name in written:  # every frame present is whole
        json.loads((out / "json" / f"{name}.json").read_text())
        read_palette_png(out / "masks" / f"{name}.png")
    assert probe_video_frames(out / "overlay.mp4") == 7, "the overlay is finalised on Ctrl-C"
    assert not list(out.rglob("*.tmp"))
    assert json.loads((out / "summary.json").read_text())["complete"] is False

    fake = FakeSegmenter(scene)
    with open_source(folder) as source:
        summary = run_video(source, fake, prompts_for(scene), out, RunConfig(), progress=False)
    assert summary.frames_resumed == 7 and summary.frames_processed == 5
    # The state after frame 6 was saved with it: no frame is encoded twice.
    assert fake.encode_calls == list(range(7, 12)), "continues after the last complete frame"
    for t in range(12):
        index = read_palette_png(out / "masks" / f"{t:05d}.png")
        assert np.array_equal(index == 1, scene.gt_masks[t, 0])
    assert probe_video_frames(out / "overlay.mp4") == 12


def test_overwrite_starts_over(scene_folder, tmp_path: Path) -> None:
    scene, folder = scene_folder
    out = tmp_path / "out"
    with open_source(folder) as source:
        run_video(source, FakeSegmenter(scene), prompts_for(scene), out, RunConfig(),
                  max_frames=4, progress=False)
    fake = FakeSegmenter(scene)
    with open_source(folder) as source:
        summary = run_video(source, fake, prompts_for(scene), out, RunConfig(), max_frames=4,
                            overwrite=True, progress=False)
    assert summary.frames_resumed == 0 and fake.encode_calls == [0, 1, 2, 3]
