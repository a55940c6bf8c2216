"""Encode-ahead: the image encoder of frame t+1 runs while frame t is decoded and written.

The tracker needs frame t's masks before it can prompt frame t+1, but the encoder does not:
a frame's embedding depends on the frame alone. :class:`EncodeAhead` wraps a segmenter and a
frame stream so that every frame read from the stream starts encoding on a worker thread;
when the tracker later asks for that frame's embedding it gets the (usually finished) result.
The decoder, the tracker's bookkeeping and the sinks of frame t then overlap the encoder of
frame t+1 instead of adding to it.

Nothing in the tracker changes: it still calls ``encode(frame)`` and ``decode(...)``.

The look-ahead serves one stream read in order. ``encode`` and ``decode`` may still be called
from other threads (the wrapped segmenter runs on the worker and on a caller at once anyway,
when a frame is asked for before its encode started): the queue and the counters change only
under a lock, and a frame that another caller's reading dropped is simply encoded on demand.

Example:
    >>> with EncodeAhead(segmenter) as ahead:
    ...     tracker = VideoTracker(ahead, TrackerConfig())
    ...     for frame in ahead.frames(source.frames()):
    ...         result = tracker.step(frame)

    or, through the CLI's loop: ``run_video(ahead.source(source), ahead, ...)``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from repvit_sam.segmenter import SegmenterWrapper
from vos.io.sources import FrameSource


class EncodeAhead(SegmenterWrapper):
    """A segmenter whose ``encode`` results are computed ahead, on one worker thread.

    Frames are encoded in the order they are read. An embedding is handed out once; frames
    read but never asked for (no objects were tracked on them) are dropped when a later frame
    is asked for, and at most ``max_pending`` frames are held, oldest dropped first.

    Args:
        segmenter: the segmenter whose ``encode`` runs ahead (``decode`` passes through).
        max_pending: frames encoded (or queued) ahead of the consumer at most. Keep it above
            the read-ahead of any prefetching in between (``vos.io.sources.prefetch`` reads 4
            ahead), or needed frames are dropped and encoded again on demand.
    """

    def __init__(self, segmenter: Any, max_pending: int = 8) -> None:
        if max_pending < 2:
            raise ValueError(f"max_pending: expected >= 2, got {max_pending}")
        super().__init__(segmenter)
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode-ahead")
        # id(frame) -> (frame, future), in reading order. The frame itself is kept so that
        # its id cannot be reused by another array while the entry exists.
        self._pending: OrderedDict[int, tuple[np.ndarray, Future]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def submit(self, frame: np.ndarray) -> None:
        """Start encoding ``frame`` on the worker (no-op if it is already pending)."""
        with self._lock:
            if id(frame) in self._pending:
                return
            self._pending[id(frame)] = (frame, self._executor.submit(self.inner.encode, frame))
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)[1][1].cancel()

    def frames(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Yield ``frames`` unchanged, reading one ahead so frame t+1 encodes during frame t."""
        iterator = iter(frames)
        upcoming = next(iterator, None)
        if upcoming is not None:
            self.submit(upcoming)
        while upcoming is not None:
            current, upcoming = upcoming, next(iterator, None)
            if upcoming is not None:
                self.submit(upcoming)
            yield current

    def source(self, source: FrameSource) -> FrameSource:
        """A view of a frame source whose frames are encoded ahead (for ``run_video``)."""
        return _AheadSource(source, self)

    def encode(self, image: np.ndarray) -> Any:
        """The embedding of ``image``: from its encode-ahead when started, else computed now."""
        entry = None
        with self._lock:
            if id(image) in self._pending:
                while entry is None:
                    key, value = self._pending.popitem(last=False)
                    if key == id(image):
                        entry = value
                    else:
                        value[1].cancel()  # read before this frame and never asked for
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
        if entry is None:
            return self.inner.encode(image)
        return entry[1].result()

    def close(self) -> None:
        """Cancel pending encodes and stop the worker thread."""
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for _, future in pending:
            future.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> EncodeAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _AheadSource(FrameSource):
    """A frame source whose ``frames`` go through :meth:`EncodeAhead.frames`."""

    def __init__(self, inner: FrameSource, ahead: EncodeAhead) -> None:
        self.inner = inner
        self.ahead = ahead
        self.info = inner.info

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        return self.ahead.frames(self.inner.frames(start, stop))

    def close(self) -> None:
        self.inner.close()
