"""Redraw ``docs/images/tracking.png``, the front page's picture: ``python -m docs.images.make_front_picture``.

What it shows is made by the project: ``vos.VideoTracker`` tracks objects through a generated
scene and ``vos.io.sinks.draw_overlay`` (the overlay of ``overlay.mp4``) draws four of its
frames. The segmenter is the tests' stand-in (``tests/vos/synthetic.py``), which answers each
prompt from the scene's known masks: the picture shows the tracker keeping identities
(two objects crossing, one hidden behind a pillar, LOST, and found again with its id), not a model's masks.
Run from the repository root.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tests.vos.synthetic import FakeSegmenter, SceneObject, render
from vos.io.sinks import draw_overlay
from vos.tracker import VideoTracker
from vos.types import Prompt

HW = (180, 300)
SHOWN = (0, 21, 40)
OUT = Path(__file__).with_name("tracking.png")


def title(text: str, width: int) -> np.ndarray:
    """A white band with ``text``: the panel's caption, above the overlay frame."""
    band = np.full((26, width, 3), 255, np.uint8)
    cv2.putText(band, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (40, 40, 40), 1, cv2.LINE_AA)
    return band


def main() -> None:
    # Plain grey shapes, so that the overlay's colours (the DAVIS palette of the PNGs) show.
    objects = [
        SceneObject(((0, 40, 60), (44, 250, 75)), (34, 34), color=(200, 200, 200), depth=2),
        SceneObject(((0, 250, 80), (44, 50, 62)), (30, 42), "ellipse", (150, 150, 150), depth=1),
        SceneObject(((0, 50, 140), (44, 200, 140)), (28, 28), color=(230, 230, 230)),
        SceneObject(((0, 124, 140),), (40, 80), color=(90, 90, 110), depth=5),  # a pillar
    ]
    scene = render(objects, 45, HW)
    tracked = [0, 1, 2]
    tracker = VideoTracker(FakeSegmenter(scene, trackable=tracked))
    prompts = {0: [Prompt(mask=scene.gt_masks[0, k], obj_id=k + 1) for k in tracked]}
    panels = []
    for result in tracker.track(scene.frames, prompts):
        if result.frame_idx not in SHOWN:
            continue
        lost = sorted(int(i) for i in result.lost_obj_ids)
        caption = f"frame {result.frame_idx}" + "".join(f", id {i} LOST" for i in lost)
        overlay = draw_overlay(scene.frames[result.frame_idx], result.to_index_mask())
        panel = np.concatenate([title(caption, HW[1]), overlay])
        panels.append(np.pad(panel, ((0, 0), (0, 8), (0, 0)), constant_values=255))
    strip = np.concatenate(panels, axis=1)[:, :-8]
    cv2.imwrite(str(OUT), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{OUT}: {strip.shape[1]}x{strip.shape[0]}, {OUT.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
