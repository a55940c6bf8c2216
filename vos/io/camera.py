"""Camera capture: the newest frame of a camera, a stream URL or a file played as a camera.

:class:`FrameGrabber` reads frames on its own thread and keeps only the newest one, so that
when the model is slower than the camera the stale frames are dropped and the latency stays
bounded by about one model period plus one frame period (a FIFO would grow without bound).
:class:`FileCamera` plays a video file (or frame folder) the same way, paced at the file's
own fps, which makes live runs reproducible without a camera.

Example:
    >>> with open_camera("0") as camera:                    # or FileCamera("clip.mp4")
    ...     captured = camera.read(timeout=1.0)             # CapturedFrame or None
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vos.io.sources import FrameSource, SourceInfo, is_device_spec, open_source

logger = logging.getLogger(__name__)

__all__ = ["CapturedFrame", "FileCamera", "FrameGrabber", "is_device_spec", "open_camera"]


@dataclass(frozen=True)
class CapturedFrame:
    """One camera frame as handed to the model.

    Attributes:
        index: 0-based capture index (frames dropped before this one leave gaps).
        image: (H, W, 3) uint8 RGB.
        timestamp: ``time.perf_counter()`` when the frame arrived from the camera.
    """

    index: int
    image: np.ndarray
    timestamp: float


class FrameGrabber:
    """Reads frames on a daemon thread and hands out only the newest one.

    Args:
        frames: (H, W, 3) uint8 RGB frames; iterated on the capture thread only.
        info: size and fps of the stream.
        pace_fps: release frames at this rate (a file played as a camera); None releases
            each frame as soon as the iterator yields it (a real camera paces itself).
        drop_stale: True keeps only the newest frame (live); False makes the capture wait
            until the previous frame was read, so every frame is processed (offline).
        on_close: called once by :meth:`close` after the thread stopped (release a reader).

    Counters: ``frames_captured`` = ``frames_read`` + ``frames_dropped`` once closed.

    Example:
        >>> with FrameGrabber(iter(frames), info=info, pace_fps=30).start() as grabber:
        ...     while (captured := grabber.read(timeout=1.0)) is not None or not grabber.finished:
        ...         ...
    """

    def __init__(
        self,
        frames: Iterable[np.ndarray],
        *,
        info: SourceInfo,
        pace_fps: float | None = None,
        drop_stale: bool = True,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if pace_fps is not None and pace_fps <= 0:
            raise ValueError(f"pace_fps: expected > 0, got {pace_fps}")
        self.info = info
        self.pace_fps = pace_fps
        self.drop_stale = drop_stale
        self._frames = frames
        self._on_close = on_close
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._slot: CapturedFrame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.frames_captured = 0
        self.frames_read = 0
        self.frames_dropped = 0

    def start(self) -> FrameGrabber:
        """Start the capture thread (idempotent); returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._capture, name="live-capture", daemon=True)
            self._thread.start()
        return self

    @property
    def finished(self) -> bool:
        """True once the stream ended (or failed) and its last frame was read."""
        with self._cond:
            return self._ended and self._slot is None

    def read(self, timeout: float | None = None) -> CapturedFrame | None:
        """The newest frame not read yet, waiting for one up to ``timeout`` seconds.

        Returns:
            The frame, or None on timeout or once :attr:`finished`.

        Raises:
            SourceError: (or any error) raised by the frame iterator on the capture thread.
        """
        deadline = None if timeout is None else time.perf_counter() + timeout
        with self._cond:
            while self._slot is None and not self._ended:
                remaining = None if deadline is None else deadline - time.perf_counter()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            captured, self._slot = self._slot, None
            if captured is not None:
                self.frames_read += 1
                self._cond.notify_all()
                return captured
            error, self._error = self._error, None
        if error is not None:
            raise error
        return None

    def close(self) -> None:
        """Stop the thread, count an unread frame as dropped, and release the reader."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                logger.warning("%s: the capture thread did not stop within 5 s", self.info.name)
        with self._cond:
            if self._slot is not None:
                self._slot = None
                self.frames_dropped += 1
            self._ended = True
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> FrameGrabber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _capture(self) -> None:
        start: float | None = None
        iterator: Iterator[np.ndarray] = iter(self._frames)
        try:
            for index, image in enumerate(iterator):
                if self._stop.is_set():
                    return
                if self.pace_fps is not None:
                    # Frame i is due i/fps after the first; a reader slower than that
                    # simply falls behind, as a camera's driver would.
                    now = time.perf_counter()
                    start = now if start is None else start
                    delay = start + index / self.pace_fps - now
                    if delay > 0 and self._stop.wait(delay):
                        return
                self._publish(CapturedFrame(index, image, time.perf_counter()))
        except BaseException as exc:  # handed to the reader, who raises it in its thread
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _publish(self, captured: CapturedFrame) -> None:
        with self._cond:
            if not self.drop_stale:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return
            if self._slot is not None:
                self.frames_dropped += 1
            self._slot = captured
            self.frames_captured += 1
            self._cond.notify_all()


class FileCamera(FrameGrabber):
    """A video file or frame folder played as a live camera.

    With ``realtime`` (default) frames are released at the file's fps and the ones that
    arrive while the model is busy are dropped, exactly as with a camera; without it every
    frame is processed, as fast as the model goes.

    Args:
        path: video file or folder of frames.
        realtime: pace at the file's fps and drop stale frames.
        fps: pace at this rate instead of the file's.
        backend: video decoding backend of :func:`~vos.io.sources.open_source`.

    Raises:
        SourceError: the file cannot be read.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        realtime: bool = True,
        fps: float | None = None,
        backend: str = "opencv",
    ) -> None:
        source = open_source(Path(path), backend=backend)
        super().__init__(
            source.frames(),
            info=source.info,
            pace_fps=(fps or source.info.fps) if realtime else None,
            drop_stale=realtime,
            on_close=source.close,
        )
        self.source: FrameSource = source


def open_camera(spec: str, *, realtime: bool = True) -> FrameGrabber:
    """A camera index, a stream URL, or a video file / frame folder played as a camera.

    Args:
        spec: "0", "1", ... for a local camera, an rtsp/http URL, or a path.
        realtime: for files, pace at the file's fps and drop stale frames; a device always
            runs in real time (it cannot wait for the model).

    Raises:
        SourceError: the camera or file cannot be opened or read.
    """
    if not is_device_spec(spec):
        return FileCamera(spec, realtime=realtime)
    source = open_source(spec)
    if not realtime:
        logger.warning("%s: a live camera cannot wait for the model; frames will be dropped",
                       spec)
    return FrameGrabber(source.frames(), info=source.info, drop_stale=True,
                        on_close=source.close)
