"""The frames of a session: read lazily, and shown to SAM 2 code as its normalised images.

- :class:`FrameReader` gives random access to a source's RGB frames, one decode per frame for
  sequential reads in either direction.
- :class:`FrameImages` is ``inference_state["images"]``: frame ``t`` as SAM 2's
  ``init_state`` prepares it (squashed to 1024x1024, scaled to [0, 1], normalised with the
  ImageNet mean and std), made when it is read. SAM 2 loads every frame this way up front
  (~12.6 MB a frame); here nothing is kept.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
import torch
from PIL import Image

from vos.io.sources import FrameSource, SourceError

__all__ = ["FrameImages", "FrameReader"]

# SAM 2's input normalisation (sam2.utils.misc.load_video_frames defaults).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class FrameReader:
    """Random access to a source's frames, read lazily (never all at once).

    Sequential reads, forward or backward, cost one decode per frame: forward reads continue
    the source's iterator; backward reads fill a small cache with the chunk of frames before.

    Args:
        source: an opened frame source with a known frame count.
        cache_frames: decoded frames kept (also the backward chunk size).
    """

    def __init__(self, source: FrameSource, cache_frames: int = 8) -> None:
        if source.info.num_frames is None:
            raise SourceError(f"{source.info.name}: a live source has no frames to revisit")
        self.source = source
        self.num_frames = int(source.info.num_frames)
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._cache_frames = max(2, cache_frames)
        self._iter: Iterator[np.ndarray] | None = None
        self._next = -1
        self.decoded = 0  # frames decoded so far (reads served from the cache not counted)

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, frame_idx: int) -> np.ndarray:
        frame = self._cache.get(frame_idx)
        if frame is not None:
            self._cache.move_to_end(frame_idx)
            return frame
        if frame_idx + 1 < self.num_frames and (frame_idx + 1) in self._cache:
            # Reading backward: decode the chunk that ends here in one sequential read.
            start = max(0, frame_idx - self._cache_frames + 2)
            for idx in range(start, frame_idx + 1):
                self._read(idx)
            return self._cache[frame_idx]
        return self._read(frame_idx)

    def _read(self, frame_idx: int) -> np.ndarray:
        if frame_idx in self._cache:
            return self._cache[frame_idx]
        if self._iter is None or self._next != frame_idx:
            self._iter = self.source.frames(frame_idx, self.num_frames)
        try:
            frame = next(self._iter)
        except StopIteration:
            raise SourceError(f"{self.source.info.name}: frame {frame_idx} cannot be read "
                              f"(the video has {self.num_frames} frames)") from None
        self.decoded += 1
        self._next = frame_idx + 1
        self._cache[frame_idx] = frame
        while len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)
        return frame

    def close(self) -> None:
        self._cache.clear()
        self._iter = None
        self.source.close()


class FrameImages(Sequence[torch.Tensor]):
    """``inference_state["images"]``: SAM 2's model inputs, one frame at a time.

    ``images[t]`` is frame ``t`` resized to ``image_size`` x ``image_size`` (PIL's default
    bicubic filter, ignoring the aspect ratio, as SAM 2's loader does), scaled to [0, 1] and
    normalised with the ImageNet mean and std: a (3, image_size, image_size) float32 tensor
    on ``device``. It is made from the frame when read and not kept. A slice gives the
    stacked (N, 3, S, S) tensor of its frames.

    The tracker's own model input is different (SAM's resize of the longest side to 1024 and
    zero padding); this view exists for code that draws or inspects SAM 2's inputs.

    Args:
        frames: the session's frames.
        device: where the tensors are placed (the CPU with ``offload_video_to_cpu``).
        image_size: the square input size (1024).
    """

    def __init__(self, frames: FrameReader, device: torch.device, image_size: int) -> None:
        self._frames = frames
        self.device = device
        self.image_size = image_size
        self._mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32).reshape(3, 1, 1)
        self._std = torch.tensor(IMAGE_STD, dtype=torch.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def shape(self) -> torch.Size:
        """(num_frames, 3, image_size, image_size), as SAM 2's images tensor."""
        return torch.Size((len(self), 3, self.image_size, self.image_size))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    # A slice gives a tensor, as slicing SAM 2's images tensor does (not a Sequence).
    @overload  # type: ignore[override]
    def __getitem__(self, index: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> torch.Tensor: ...

    def __getitem__(self, index: int | slice) -> torch.Tensor:
        if isinstance(index, slice):
            picked = range(len(self))[index]
            if not picked:
                return torch.empty((0, 3, self.image_size, self.image_size),
                                   dtype=torch.float32, device=self.device)
            return torch.stack([self._image(t) for t in picked])
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"images[{index!r}]: expected a frame index (int) or a slice")
        t = int(index) + len(self) if index < 0 else int(index)
        if not 0 <= t < len(self):
            raise IndexError(f"images[{index}]: the video has {len(self)} frames")
        return self._image(t)

    def _image(self, frame_idx: int) -> torch.Tensor:
        frame = self._frames[frame_idx]
        size = (self.image_size, self.image_size)
        squashed = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC))
        # / 255.0 in float64 first, then float32: SAM 2's loader rounds the same way.
        image = torch.from_numpy(squashed / 255.0).permute(2, 0, 1).float()
        return ((image - self._mean) / self._std).to(self.device)

    def __repr__(self) -> str:
        return (f"FrameImages({len(self)} frames of (3, {self.image_size}, {self.image_size}) "
                f"float32, read lazily, on {self.device})")
