"""Tracker memory stays flat on a long stream (only the previous frame's state is kept).

Each measurement runs in a fresh interpreter: the test process's own heap (models built and
freed by earlier tests, and the allocator setting some of them switch on) would otherwise
decide the resident size more than the tracker does.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.vos.synthetic import FakeSegmenter, LoopingScene, SceneObject
from vos.tracker import VideoTracker
from vos.types import Prompt


def rss_growth_mb(num_frames: int, warmup: int = 300) -> tuple[float, list[float]]:
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
    for result in tracker.track(scene.frames(num_frames), prompts):
        fake.encode_calls.clear()  # the fake's own call log must not count as growth
        fake.decode_batch_sizes.clear()
        if result.frame_idx >= warmup and result.frame_idx % 500 == 0:
            gc.collect()
            samples.append(process.memory_info().rss / 2**20)
    assert tracker.frame_idx == num_frames - 1
    assert set(tracker.tracks) == {1, 2, 3}, "all objects survive the loops"
    return samples[-1] - samples[0], samples


def _growth_in_fresh_process(num_frames: int, warmup: int, retain: bool) -> tuple[float, list]:
    code = (
        "import json, sys\n"
        "from repvit_sam.utils.malloc import retain_freed_memory\n"
        f"if {retain}: assert retain_freed_memory()\n"
        "from tests.vos.test_memory import rss_growth_mb\n"
        f"print(json.dumps(rss_growth_mb({num_frames}, {warmup})))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         check=True, timeout=1200)
    growth, samples = json.loads(out.stdout.strip().splitlines()[-1])
    return growth, samples


def test_rss_is_flat_over_a_long_stream() -> None:
    growth, samples = _growth_in_fresh_process(1_500, 300, retain=False)
    assert growth < 8.0, samples


@pytest.mark.slow
def test_rss_is_flat_over_ten_thousand_frames_with_the_cli_allocator() -> None:
    """The CLI keeps freed memory (repvit_sam.utils.malloc): RSS rises to the high-water mark
    of every code path once (LOST, re-acquisition, ...) and must stay there."""
    growth, samples = _growth_in_fresh_process(10_000, 2_000, retain=True)
    assert growth < 8.0, samples
