"""Synthetic videos with known masks, and a fake segmenter backed by those masks.

The fake implements the two calls the tracker uses (``encode``/``decode``) the way SAM
behaves on clean data: a box or a positive point on an object returns that object's visible
mask, a prompt on empty background returns an empty mask with a low predicted IoU. Noise
knobs make it imperfect in controlled ways: boundary noise (random dilation/erosion) and
"distractor" answers (the mask of a different object), which is what makes identity
keeping necessary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from repvit_sam.segmenter import DecodePrompts, MaskPrediction, SegmenterBase


@dataclass(frozen=True)
class SceneObject:
    """A shape moving through piecewise-linear waypoints.

    Attributes:
        waypoints: [(frame_idx, x_center, y_center), ...], frame_idx ascending; the object is
            held at the first/last waypoint outside their range.
        size_wh: (w, h) of the shape in pixels.
        shape: "rect" or "ellipse".
        color: RGB.
        depth: larger is nearer; nearer objects hide farther ones.
    """

    waypoints: tuple[tuple[int, float, float], ...]
    size_wh: tuple[int, int]
    shape: str = "rect"
    color: tuple[int, int, int] = (220, 40, 40)
    depth: int = 0

    def center(self, t: int) -> tuple[float, float]:
        frames = [w[0] for w in self.waypoints]
        xs = [w[1] for w in self.waypoints]
        ys = [w[2] for w in self.waypoints]
        return float(np.interp(t, frames, xs)), float(np.interp(t, frames, ys))


@dataclass
class Scene:
    """Rendered frames and per-object visible masks.

    Attributes:
        frames: list of (H, W, 3) uint8 RGB.
        gt_masks: (T, K, H, W) bool visible mask of each object (after occlusion).
        occluder_ids: object indices that are occluders (not to be tracked).
    """

    frames: list[np.ndarray]
    gt_masks: np.ndarray
    occluder_ids: list[int] = field(default_factory=list)


def _background(image_hw: tuple[int, int]) -> np.ndarray:
    h, w = image_hw
    yy, xx = np.mgrid[0:h, 0:w]
    return (40 + 20 * np.sin(xx / 7.0) + 20 * np.cos(yy / 5.0)).astype(np.uint8)


def render_frame(
    objects: list[SceneObject], t: int, image_hw: tuple[int, int], background: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One frame and its (K, H, W) visible masks; objects drawn farthest first."""
    h, w = image_hw
    yy, xx = np.mgrid[0:h, 0:w]
    order = sorted(range(len(objects)), key=lambda k: objects[k].depth)
    frame = np.repeat(background[..., None], 3, axis=2).copy()
    full = np.zeros((len(objects), h, w), bool)
    for k, obj in enumerate(objects):
        cx, cy = obj.center(t)
        bw, bh = obj.size_wh
        if obj.shape == "rect":
            full[k] = (np.abs(xx + 0.5 - cx) <= bw / 2) & (np.abs(yy + 0.5 - cy) <= bh / 2)
        else:
            full[k] = ((xx + 0.5 - cx) / (bw / 2)) ** 2 + ((yy + 0.5 - cy) / (bh / 2)) ** 2 <= 1
    visible = np.zeros_like(full)
    covered = np.zeros((h, w), bool)
    for k in reversed(order):  # nearest first
        visible[k] = full[k] & ~covered
        covered |= full[k]
    for k in order:
        frame[full[k]] = objects[k].color
    # A frame counter in the first 16 pixels (red channel, one bit each) makes every frame
    # unique and lets the fake segmenter know which frame it was given.
    frame[0, :16, 0] = ((t >> np.arange(16)) & 1) * 255
    return frame, visible


def frame_counter(image: np.ndarray) -> int:
    """The frame index written by :func:`render_frame` (mod 2**16)."""
    bits = (image[0, :16, 0] > 127).astype(np.int64)
    return int((bits << np.arange(16)).sum())


def render(objects: list[SceneObject], num_frames: int, image_hw: tuple[int, int]) -> Scene:
    """Draw every frame of a short scene up front."""
    background = _background(image_hw)
    frames, gts = [], []
    for t in range(num_frames):
        frame, visible = render_frame(objects, t, image_hw, background)
        frames.append(frame)
        gts.append(visible)
    return Scene(frames=frames, gt_masks=np.stack(gts))


class LoopingScene:
    """An endless scene rendered on demand (bounded memory), looping every ``period`` frames.

    Args:
        objects: waypoints within [0, period).
        period: frames per loop.
        image_hw: (H, W).
    """

    def __init__(self, objects: list[SceneObject], period: int, image_hw: tuple[int, int]) -> None:
        self.objects, self.period, self.image_hw = objects, period, image_hw
        self._background = _background(image_hw)

    def frames(self, num_frames: int):
        """Yield ``num_frames`` frames lazily."""
        for t in range(num_frames):
            yield render_frame(self.objects, t % self.period, self.image_hw, self._background)[0]

    def gt_at(self, t: int) -> np.ndarray:
        return render_frame(self.objects, t % self.period, self.image_hw, self._background)[1]


@dataclass(frozen=True)
class FakeEmbedding:
    """What the fake segmenters' ``encode`` gives in place of an ``ImageEmbedding``.

    Attributes:
        image: (H, W, 3) uint8 RGB, the encoded frame itself (the fakes decode from pixels).
        frame_idx: the frame's index as :func:`frame_counter` reads it, or -1 where unknown.
    """

    image: np.ndarray
    frame_idx: int = -1

    @property
    def orig_hw(self) -> tuple[int, int]:
        """(H, W) of the encoded frame."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))


class FakeSegmenter(SegmenterBase):
    """Answers prompts with ground-truth masks, optionally corrupted.

    Args:
        scene: the rendered scene; frames are recognised by content.
        trackable: indices of the objects a prompt may hit (occluders are excluded).
        boundary_noise: max pixels of random dilation/erosion of a returned mask (0 = exact).
        distractor_rate: probability that a hit returns a different object's mask instead.
        seed: random seed of the noise.
    """

    def __init__(
        self,
        scene: Scene | LoopingScene,
        trackable: list[int] | None = None,
        *,
        boundary_noise: int = 0,
        distractor_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.scene = scene
        num_objects = len(scene.objects) if isinstance(scene, LoopingScene) else scene.gt_masks.shape[1]
        self.trackable = list(range(num_objects)) if trackable is None else list(trackable)
        self.boundary_noise = boundary_noise
        self.distractor_rate = distractor_rate
        self.rng = np.random.default_rng(seed)
        self.encode_calls: list[int] = []
        self.decode_batch_sizes: list[int] = []

    def encode(self, image: np.ndarray) -> FakeEmbedding:
        frame_idx = frame_counter(image)
        self.encode_calls.append(frame_idx)
        return FakeEmbedding(image, frame_idx)

    def _pick(self, gt: np.ndarray, box, points, labels) -> int | None:
        best, best_score = None, 0.0
        for k in self.trackable:
            mask = gt[k]
            if not mask.any():
                continue
            score = 0.0
            if box is not None:
                # Like SAM: the object the box best frames, i.e. overlapping it and mostly
                # inside it (a half-hidden object inside the box beats a big neighbour).
                mask_pixels = int(mask.sum())
                x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
                x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
                inside = float(mask[y0:y1, x0:x1].sum())
                box_area = max((box[2] - box[0]) * (box[3] - box[1]), 1.0)
                union = box_area + mask_pixels - inside
                score += 0.5 * inside / union + 0.5 * inside / mask_pixels
            if points is not None:
                for (x, y), lab in zip(points, labels, strict=True):
                    if lab < 0:
                        continue
                    inside = bool(mask[min(int(y), mask.shape[0] - 1), min(int(x), mask.shape[1] - 1)])
                    score += (0.5 if inside else 0.0) if lab == 1 else (-0.5 if inside else 0.0)
            if score > best_score:
                best, best_score = k, score
        return best if best_score > 0.1 else None

    def _corrupt(self, mask: np.ndarray) -> np.ndarray:
        if self.boundary_noise <= 0:
            return mask
        r = int(self.rng.integers(-self.boundary_noise, self.boundary_noise + 1))
        if r == 0:
            return mask
        kernel = np.ones((2 * abs(r) + 1, 2 * abs(r) + 1), np.uint8)
        op = cv2.dilate if r > 0 else cv2.erode
        return op(mask.astype(np.uint8), kernel).astype(bool)

    def decode_prompts(self, embedding: FakeEmbedding, prompts: DecodePrompts) -> MaskPrediction:
        boxes_xyxy, points_xy, point_labels = prompts.boxes_xyxy, prompts.points_xy, prompts.point_labels
        mask_logits, multimask_output = prompts.mask_logits, prompts.multimask_output
        if isinstance(self.scene, LoopingScene):
            gt = self.scene.gt_at(embedding.frame_idx)
        else:
            gt = self.scene.gt_masks[embedding.frame_idx]
        n = next(len(x) for x in (boxes_xyxy, points_xy, mask_logits) if x is not None)
        self.decode_batch_sizes.append(n)
        c = 3 if multimask_output else 1
        h, w = embedding.orig_hw
        masks = np.zeros((n, c, h, w), bool)
        ious = np.full((n, c), 0.05, np.float32)
        for i in range(n):
            box = None if boxes_xyxy is None else np.asarray(boxes_xyxy[i], float)
            pts = None if points_xy is None else np.asarray(points_xy[i], float)
            labs = None if point_labels is None else np.asarray(point_labels[i])
            k = self._pick(gt, box, pts, labs)
            if k is None:
                continue
            if self.distractor_rate > 0 and self.rng.random() < self.distractor_rate:
                others = [o for o in self.trackable if o != k and gt[o].any()]
                if others:
                    k = int(self.rng.choice(others))
            mask = self._corrupt(gt[k])
            masks[i, 0], ious[i, 0] = mask, 0.95
            if c == 3:
                # A "part" candidate (top half) and a "whole plus surroundings" candidate, with
                # lower predicted IoU, as SAM's ambiguity outputs.
                ys = np.nonzero(mask.any(1))[0]
                part = mask.copy()
                if len(ys):
                    part[(ys[0] + ys[-1]) // 2 :] = False
                grown = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
                masks[i, 1], ious[i, 1] = part, 0.80
                masks[i, 2], ious[i, 2] = grown, 0.75
        return MaskPrediction(
            masks=torch.from_numpy(masks),
            iou_scores=torch.from_numpy(ious),
            low_res_logits=torch.zeros((n, c, 256, 256)),
        )
