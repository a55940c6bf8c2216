"""Frame sources: video files (decord, OpenCV fallback), image folders and cameras.

Every source yields (H, W, 3) uint8 RGB frames and knows its size up front, so prompts can be
validated before a model is built. Problems with the input raise :class:`SourceError` with a
one-line message that names the input.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class SourceError(ValueError):
    """A video, folder or camera cannot be read as expected."""


@dataclass(frozen=True)
class SourceInfo:
    """What is known about a source before reading it.

    Attributes:
        name: the path or camera id, for messages.
        image_hw: (H, W) of every frame.
        num_frames: frame count, or None for a live camera.
        fps: frames per second (25.0 when the container does not say).
    """

    name: str
    image_hw: tuple[int, int]
    num_frames: int | None
    fps: float


class FrameSource:
    """Base class: ``info`` plus ``frames(start, stop)`` yielding RGB frames."""

    info: SourceInfo

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield frames ``start`` .. ``stop - 1`` as (H, W, 3) uint8 RGB."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying reader."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DecordVideoSource(FrameSource):
    """A video file read with decord (fast seeking, exact frame count)."""

    def __init__(self, path: Path, decord: Any) -> None:
        try:
            with _quiet_stderr():
                self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
                num_frames = len(self._reader)
                first = self._reader[0].asnumpy() if num_frames else None
        except Exception as exc:  # decord raises its own DECORDError and RuntimeError
            raise SourceError(f"{path}: cannot decode the video ({_first_line(exc)})") from None
        if not num_frames or first is None:
            raise SourceError(f"{path}: the video has zero frames")
        fps = float(self._reader.get_avg_fps() or 25.0)
        self.info = SourceInfo(str(path), (first.shape[0], first.shape[1]), num_frames, fps)
        self._path = path

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        total = self.info.num_frames or 0
        stop = total if stop is None else min(stop, total)
        if start < stop:
            self._reader.seek_accurate(start)
        for idx in range(start, stop):
            try:
                frame = self._reader.next().asnumpy()
            except Exception as exc:
                raise SourceError(
                    f"{self._path}: frame {idx} cannot be decoded ({_first_line(exc)}); "
                    "the file may be truncated"
                ) from None
            yield np.ascontiguousarray(frame)


class OpenCVVideoSource(FrameSource):
    """A video file or a camera read with OpenCV (fallback when decord is unavailable)."""

    def __init__(self, target: str | int, *, live: bool = False) -> None:
        self._target = target
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            kind = "camera" if live else "video"
            raise SourceError(f"{target}: cannot open the {kind}")
        ok, first = self._cap.read()
        if not ok or first is None:
            raise SourceError(f"{target}: the video has zero readable frames")
        self._first: np.ndarray | None = first
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not live else 0
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        self.info = SourceInfo(
            str(target), (first.shape[0], first.shape[1]), count if count > 0 else None, fps
        )
        self._live = live

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        idx = 0
        if self._first is None:
            if self._live:
                raise SourceError(f"{self._target}: a camera can be read only once")
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        while stop is None or idx < stop:
            if self._first is not None:
                frame, self._first = self._first, None
            else:
                ok, frame = self._cap.read()
                if not ok or frame is None:
                    if self.info.num_frames is not None and idx < self.info.num_frames - 1:
                        logger.warning("%s: stopped at frame %d of %d", self._target, idx,
                                       self.info.num_frames)
                    return
            if idx >= start:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            idx += 1

    def close(self) -> None:
        self._cap.release()


def read_rgb(path: Path) -> np.ndarray:
    """One image file as (H, W, 3) uint8 RGB.

    Raises:
        SourceError: the file is missing or not a readable image.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the image ({exc.strerror or exc})") from None
    if Path(path).suffix.lower() in (".jpg", ".jpeg") and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        # A cut-off JPEG decodes with grey rows and only a warning: never use it as a frame.
        raise SourceError(f"{path}: truncated JPEG (no end-of-image marker); the file is "
                          "incomplete")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SourceError(f"{path}: cannot read the image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class ImageFolderSource(FrameSource):
    """A folder of images, read in name order (DAVIS ``JPEGImages/480p/<seq>`` layout).

    When every name is an integer (``0.jpg``, ``1.jpg``, ..., ``10.jpg``) they are taken in
    numeric order, as SAM 2 reads frame folders; zero-padded names sort the same either way.
    """

    def __init__(self, folder: Path) -> None:
        paths = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if paths and all(p.stem.isdigit() for p in paths):
            self._paths = sorted(paths, key=lambda p: (int(p.stem), p.name))
        else:
            self._paths = sorted(paths)
        if not self._paths:
            raise SourceError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        first = read_rgb(self._paths[0])
        self.info = SourceInfo(str(folder), (first.shape[0], first.shape[1]), len(self._paths), 25.0)

    @property
    def paths(self) -> list[Path]:
        """The image files, in frame order."""
        return list(self._paths)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        for path in self._paths[start:stop]:
            frame = read_rgb(path)
            if frame.shape[:2] != self.info.image_hw:
                raise SourceError(
                    f"{path}: size {frame.shape[1]}x{frame.shape[0]} differs from the first "
                    f"frame's {self.info.image_hw[1]}x{self.info.image_hw[0]}"
                )
            yield frame


def is_device_spec(spec: str) -> bool:
    """True for a camera index ("0") or a stream URL ("rtsp://..."), False for a path."""
    return spec.isdigit() or "://" in spec


def open_source(source: str | Path, *, backend: str = "auto") -> FrameSource:
    """Open a video file, an image folder, or a camera (an integer index or a URL).

    Args:
        source: path to a video or folder, "0"/"1"/... for a camera, or an rtsp/http URL.
        backend: "auto" (decord, then OpenCV), "decord" or "opencv" for video files.

    Raises:
        SourceError: missing path, unreadable or empty video, empty folder.
    """
    text = str(source)
    if is_device_spec(text):
        return OpenCVVideoSource(int(text) if text.isdigit() else text, live=True)
    path = Path(text)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir():
        return ImageFolderSource(path)
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty")
    if backend not in ("auto", "decord", "opencv"):
        raise SourceError(f"backend: expected auto, decord or opencv, got {backend!r}")
    if backend in ("auto", "decord"):
        try:
            import decord
        except ImportError:
            if backend == "decord":
                raise SourceError(
                    "decord is not installed; pip install decord (or use --set io... opencv)"
                ) from None
        else:
            return DecordVideoSource(path, decord)
    return OpenCVVideoSource(str(path))


def prefetch(frames: Iterator[np.ndarray], depth: int = 4) -> Iterator[np.ndarray]:
    """Decode ahead on a thread so that reading overlaps with the model.

    Errors raised by the producer are re-raised in the consumer at the same position.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        buffer.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as exc:
            buffer.put(exc)

    thread = threading.Thread(target=produce, name="frame-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the C++ libraries' own error prints (we raise a one-line error instead)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
