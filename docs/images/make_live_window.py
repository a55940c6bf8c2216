"""Retake ``docs/images/live-window.png``, the live window: ``python -m docs.images.make_live_window``.

The window is the real one (``vos.live.LiveWindow``, OpenCV's HighGUI) on a virtual X display,
driven by ``vos.live.LiveApp`` exactly as ``repvit-vos webcam`` drives it: DAVIS blackswan,
resized to 640x480 and played back and forth as a 30 frames/s camera, the model on its own
thread, the masks of the frames in between carried by optical flow. No trained checkpoint is
at hand where the picture is made, so the DAVIS ground truth stands in for the model's
answers, at a model's pace (``--model-seconds`` a frame): the picture shows the window, its
HUD and carried masks, not a model's accuracy.

Needs Xvfb, xwd and ImageMagick (Debian: ``apt-get install xvfb x11-apps imagemagick``) and
``../shared/data`` beside the checkout. Run from the repository root.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from repvit_sam.segmenter import DecodePrompts, MaskPrediction, SegmenterBase
from vos.bench.inputs import load_frames
from vos.bench.live import ping_pong
from vos.io.camera import FrameGrabber
from vos.io.davis_png import read_palette_png
from vos.io.sources import SourceInfo
from vos.live import LiveApp, LiveSession, LiveWindow, MaskCarrier, PromptDrawer
from vos.types import Prompt

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OUT = Path(__file__).with_name("live-window.png")
W, H = 640, 480


class GroundTruth(SegmenterBase):
    """Answers every prompt with the frame's DAVIS mask, ``seconds`` after each encode."""

    def __init__(self, frames: list[np.ndarray], masks: list[np.ndarray], seconds: float) -> None:
        self.index = {hashlib.sha1(f.tobytes()).hexdigest(): i for i, f in enumerate(frames)}
        self.masks, self.seconds = masks, seconds

    def encode(self, image: np.ndarray) -> int:
        time.sleep(self.seconds)
        return self.index[hashlib.sha1(image.tobytes()).hexdigest()]

    def decode_prompts(self, embedding: int, prompts: DecodePrompts) -> MaskPrediction:
        rows = next(len(x) for x in (prompts.boxes_xyxy, prompts.points_xy, prompts.mask_logits)
                    if x is not None)
        c = 3 if prompts.multimask_output else 1
        mask = torch.from_numpy(self.masks[embedding])[None, None].repeat(rows, c, 1, 1)
        return MaskPrediction(mask, torch.full((rows, c), 0.93), torch.zeros(rows, c, 256, 256))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="camera time before the shot")
    parser.add_argument("--model-seconds", type=float, default=0.25)
    parser.add_argument("--display", default=":77")
    args = parser.parse_args()
    clip, _ = load_frames(str(DATA / "videos" / "blackswan.mp4"), 50)
    clip = [cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA) for f in clip]
    annotations = sorted((DATA / "davis-mini" / "Annotations" / "480p" / "blackswan").glob("*.png"))
    masks = [cv2.resize((read_palette_png(p) > 0).astype(np.uint8), (W, H),
                        interpolation=cv2.INTER_NEAREST) > 0 for p in annotations]
    xvfb = subprocess.Popen(["Xvfb", args.display, "-screen", "0", "800x600x24"])
    os.environ["DISPLAY"] = args.display
    try:
        time.sleep(1.0)
        frames = ping_pong(clip, round(30 * (args.seconds + 2)))
        camera = FrameGrabber(frames, info=SourceInfo("blackswan", (H, W), len(frames), 30.0),
                              pace_fps=30.0)
        ys, xs = np.nonzero(masks[0])
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        drawer = PromptDrawer((H, W))
        window = LiveWindow(on_mouse=drawer.on_mouse)
        # The shot is taken from outside while the window runs (the window toolbar included).
        subprocess.Popen(["bash", "-c", f"sleep {args.seconds}; xwd -root -display {args.display}"
                          f" | convert xwd:- -crop {W}x{H + 40}+0+0 -colors 160 PNG8:{OUT}"])
        app = LiveApp(camera, LiveSession(GroundTruth(clip, masks, args.model_seconds)),
                      window=window, carrier=MaskCarrier(), drawer=drawer,
                      init_prompts=[Prompt(box_xyxy=box)],
                      max_frames=round(30 * (args.seconds + 1)))
        with camera:
            stats = app.run()
        window.close()
        print(stats.as_dict())
    finally:
        xvfb.terminate()


if __name__ == "__main__":
    main()
