"""Tracker memory stays flat on a long stream (only the previous frame's state is kept)."""

from __future__ import annotations

import gc

import psutil
import pytest

from tests.vos.synthetic import FakeSegmenter, LoopingScene, SceneObject
from vos.tracker import VideoTracker
from vos.types import Prompt


def rss_growth_mb(num_frames: int) -> tuple[float, list[float]]:
    objects = [
        SceneObject(((0, 20, 30), (50, 100, 30), (100, 20, 30)), (16, 16)),
        SceneObject(((0, 100, 70), (50, 20, 70), (100, 100, 70)), (14, 18), "ellipse",
                    (40, 220, 40)),
        # Object 3 leaves the frame for a while every loop, so LOST/re-acquire paths run too.
        SceneObject(((0, 60, 50), (35, 145, 50), (45, 145, 50), (80, 60, 50), (100, 60, 50)),
                    (12, 12),
                    color=(60, 60, 230)),
    ]
    scene = LoopingScene(objects, period=100, image_hw=(96, 128))
    fake = FakeSegmenter(scene)
    tracker = VideoTracker(fake)
    process = psutil.Process()
    samples = []
    first_gt = scene.gt_at(0)
    prompts = {0: [Prompt(mask=first_gt[k]) for k in range(3)]}
    warmup = 300
    for result in tracker.track(scene.frames(num_frames), prompts):
        fake.encode_calls.clear()  # the fake's own call log must not count as growth
        fake.decode_batch_sizes.clear()
        if result.frame_idx >= warmup and result.frame_idx % 500 == 0:
            gc.collect()
            samples.append(process.memory_info().rss / 2**20)
    assert tracker.frame_idx == num_frames - 1
    assert set(tracker.tracks) == {1, 2, 3}, "all objects survive the loops"
    return samples[-1] - samples[0], samples


def test_rss_is_flat_over_a_long_stream() -> None:
    growth, samples = rss_growth_mb(1_500)
    assert growth < 8.0, samples


@pytest.mark.slow
def test_rss_is_flat_over_ten_thousand_frames() -> None:
    growth, samples = rss_growth_mb(10_000)
    assert growth < 8.0, samples
