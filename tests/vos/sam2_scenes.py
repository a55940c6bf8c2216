"""Small synthetic videos on disk for the SAM 2 compatibility tests, in the layouts SAM 2
code reads (a frame folder, a DAVIS root, SAM 2's per-object PNG folders), and the fake
segmenter's predictor over them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tests.vos.synthetic import FakeSegmenter, Scene, SceneObject, render
from vos.config import load_config
from vos.io.davis_png import write_palette_png
from vos.video_predictor import VideoPredictor

NUM_FRAMES = 12
HW = (96, 128)


def crossing_scene(num_frames: int = NUM_FRAMES, second_appears: int = 5) -> Scene:
    """Two objects crossing the frame: a red square moving right, a green ellipse moving
    left. The ellipse counts as appearing on frame ``second_appears``: its ground truth (what
    the fake segmenter finds) is empty before."""
    objects = [SceneObject(((0, 20, 30), (11, 90, 40)), (16, 16), color=(230, 50, 50)),
               SceneObject(((0, 104, 64), (11, 50, 70)), (14, 20), "ellipse", (40, 220, 40))]
    scene = render(objects, num_frames, HW)
    scene.gt_masks[:second_appears, 1] = False
    return scene


def write_frames(scene: Scene, folder: Path, ext: str = "png", digits: int = 0) -> Path:
    """The scene's frames as ``<t>.<ext>`` (``<t:0{digits}d>``); JPEG at quality 100."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(scene.frames):
        params = [cv2.IMWRITE_JPEG_QUALITY, 100] if ext == "jpg" else []
        cv2.imwrite(str(folder / f"{t:0{digits}d}.{ext}"),
                    cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
    return folder


def index_mask(scene: Scene, t: int) -> np.ndarray:
    """(H, W) uint8 ids 1..K of frame t (the visible masks do not overlap)."""
    index = np.zeros(HW, np.uint8)
    for k in range(scene.gt_masks.shape[1]):
        index[scene.gt_masks[t, k]] = k + 1
    return index


def write_davis_root(scene: Scene, root: Path, seq: str = "crossing") -> Path:
    """A DAVIS-style root: ``JPEGImages/480p/<seq>/00000.jpg``, palette PNG annotations of
    every frame, SAM 2's per-object layout (``PerObject/<seq>/<obj:03d>/00000.png``, only on
    frames where the object is visible) and ``ImageSets/2017/val.txt``."""
    write_frames(scene, root / "JPEGImages" / "480p" / seq, "jpg", 5)
    for t in range(len(scene.frames)):
        ann = root / "Annotations" / "480p" / seq
        ann.mkdir(parents=True, exist_ok=True)
        write_palette_png(ann / f"{t:05d}.png", index_mask(scene, t))
        for k in range(scene.gt_masks.shape[1]):
            if scene.gt_masks[t, k].any():
                obj = root / "PerObject" / seq / f"{k + 1:03d}"
                obj.mkdir(parents=True, exist_ok=True)
                write_palette_png(obj / f"{t:05d}.png", scene.gt_masks[t, k].astype(np.uint8))
    lists = root / "ImageSets" / "2017"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "val.txt").write_text(f"{seq}\n")
    return root


def box_of(mask: np.ndarray) -> list[float]:
    """XYXY box (exclusive right/bottom) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def fake_predictor(scene: Scene, *overrides: str) -> tuple[VideoPredictor, FakeSegmenter]:
    """A predictor over the ground-truth-backed fake segmenter (``section.key=value``)."""
    fake = FakeSegmenter(scene)
    return VideoPredictor(fake, load_config(None, list(overrides))), fake


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
