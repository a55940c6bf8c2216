"""What the benchmark feeds the model: weights without a checkpoint, frames, boxes, prompts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vos.io.sources import FrameSource, SourceInfo
from vos.types import Prompt


def fill_synthetic_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Give a model deterministic, dense weights in place (for runs without a checkpoint).

    A freshly built model is not a fair timing subject for graph runtimes: RepViT initialises
    every channel mixer's last BatchNorm to zero, so after fusion half the convolutions have
    all-zero weights, and ONNX Runtime and OpenVINO fold them and the branches feeding them
    away. This fill follows the shape of the conformance recipe instead: unit-variance weights
    scaled by fan-in, BN weights near 0.8, variances in [0.5, 1.5], small biases and means.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                fresh = 0.5 + torch.rand(value.shape, generator=gen)
            elif key.endswith("running_mean") or key.endswith(".bias"):
                fresh = 0.01 * torch.randn(value.shape, generator=gen)
            elif value.ndim == 1 and key.endswith(".weight"):
                fresh = 0.8 + 0.1 * torch.randn(value.shape, generator=gen)
            else:
                fan_in = int(np.prod(value.shape[1:])) if value.ndim >= 2 else value.shape[0]
                fresh = torch.randn(value.shape, generator=gen) / max(fan_in, 1) ** 0.5
            value.copy_(fresh.to(value.dtype))


def fill_fan_in_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Give an unfused model synthetic weights whose embedding depends on the image (in place).

    The recipe of issue 19: weights of two or more dimensions are N(0, 1) * 0.75 / sqrt(fan_in),
    norm scales 1 + N(0, 0.02), biases and BatchNorm means N(0, 0.02), BatchNorm variances 1.
    Two DAVIS frames' embeddings then differ by a relative ~0.66 (default init: 2.6e-5), so a
    store that handed back the wrong frame's embedding would change the masks. The prompt
    encoder's Gaussian positional matrix is drawn N(0, 1) as its own init does, but from the
    seeded generator, so the weights (and the graph cache's key) are the same in every process.
    Fill before ``fuse()``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            noise = torch.randn(value.shape, generator=gen)
            leaf = key.rsplit(".", 1)[-1]
            if leaf == "running_var":
                fresh = torch.ones(value.shape)
            elif leaf in ("bias", "running_mean"):
                fresh = 0.02 * noise
            elif leaf == "positional_encoding_gaussian_matrix":
                fresh = noise
            elif value.ndim >= 2:
                fresh = noise * 0.75 / int(np.prod(value.shape[1:])) ** 0.5
            elif value.ndim == 1 and leaf == "weight":
                fresh = 1.0 + 0.02 * noise
            else:
                continue
            value.copy_(fresh.to(value.dtype))


def synthetic_frames(num_frames: int, image_hw: tuple[int, int] = (120, 160)) -> list[np.ndarray]:
    """Textured frames with a bright square moving right (for runs without a video).

    Returns:
        ``num_frames`` (H, W, 3) uint8 RGB frames.
    """
    rng = np.random.default_rng(0)
    h, w = image_hw
    background = rng.integers(40, 90, (h, w, 3), dtype=np.uint8)
    side = max(8, min(h, w) // 3)
    frames = []
    for i in range(num_frames):
        frame = background.copy()
        x0 = min(w - side, w // 6 + 3 * i)
        y0 = (h - side) // 2
        frame[y0 : y0 + side, x0 : x0 + side] = (220, 200, 60)
        frames.append(frame)
    return frames


def load_frames(video: str | None, num_frames: int) -> tuple[list[np.ndarray], str]:
    """The first ``num_frames`` RGB frames of ``video`` (or synthetic ones) and their name."""
    if video is None:
        return synthetic_frames(num_frames), "synthetic 160x120"
    from vos.io.sources import open_source

    with open_source(video) as source:
        frames = list(source.frames(0, num_frames))
    return frames, Path(video).name


class FrameListSource(FrameSource):
    """Frames already in memory as a :class:`~vos.io.sources.FrameSource` (25 fps).

    Args:
        frames: (H, W, 3) uint8 RGB frames, all of one size.
    """

    def __init__(self, frames: Sequence[np.ndarray]) -> None:
        self._frames = frames
        self.info = SourceInfo("bench", frames[0].shape[:2], len(frames), 25.0)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        yield from self._frames[start:stop]


def default_boxes(image_hw: tuple[int, int], count: int) -> np.ndarray:
    """``count`` boxes (N, 4) float32 XYXY in frame pixels, tiled over the central area."""
    h, w = image_hw
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    boxes = []
    for i in range(count):
        r, c = divmod(i, cols)
        cell_w, cell_h = 0.6 * w / cols, 0.6 * h / rows
        x0, y0 = 0.2 * w + c * cell_w, 0.2 * h + r * cell_h
        boxes.append([x0 + 0.1 * cell_w, y0 + 0.1 * cell_h, x0 + 0.9 * cell_w, y0 + 0.9 * cell_h])
    return np.asarray(boxes, np.float32)


def box_prompts(boxes_xyxy: np.ndarray) -> list[Prompt]:
    """One prompt per box, obj_ids 1..N in order.

    Args:
        boxes_xyxy: (N, 4) float32 XYXY in frame pixels.
    """
    return [Prompt(box_xyxy=box, obj_id=i + 1) for i, box in enumerate(boxes_xyxy)]


def tracker_prompts(
    image_hw: tuple[int, int], count: int, mask_logits: torch.Tensor
) -> dict[str, Any]:
    """What the tracker sends per frame for ``count`` objects: box, one point, last logits.

    Args:
        image_hw: (H, W) of the frame.
        count: number of objects N.
        mask_logits: (1+, 1, 256, 256) float32 low-res logits; the first is repeated N times.

    Returns:
        ``decode`` keyword arguments: (N, 4) boxes, (N, 1, 2) centre points and labels, (N, 1,
        256, 256) logits, three candidates each.
    """
    boxes = default_boxes(image_hw, count)
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None, :]
    return {
        "boxes_xyxy": boxes,
        "points_xy": centres.astype(np.float32),
        "point_labels": np.ones((count, 1), np.int64),
        "mask_logits": mask_logits[:1].expand(count, -1, -1, -1).contiguous(),
        "multimask_output": True,
    }
