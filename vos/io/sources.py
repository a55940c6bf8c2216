"""Frame sources: video files (PyAV, decord or OpenCV), image folders and cameras.

Every source yields (H, W, 3) uint8 RGB frames and knows its size up front, so prompts can be
validated before a model is built. Problems with the input raise :class:`SourceError` with a
one-line message that names the input.

The default video reader is PyAV: it decodes with FFmpeg's own libraries and converts through
the same filters as the ``ffmpeg`` command (autorotation, then a bicubic ``scale`` to rgb24), so
its frames equal ``ffmpeg -i video -f rawvideo -pix_fmt rgb24 -`` in count and bytes (issue 23:
an mp4 cut with stream copy, rotation metadata, variable frame rate, 10-bit, grayscale, odd
sizes, MJPEG in AVI, VP9). Its frame count comes from a scan of the demuxed packets at open,
without decoding: packets an edit list hides are flagged discard and not counted, where the
stream header's frame count (what decord and OpenCV report) includes them.
"""

from __future__ import annotations

import contextlib
import logging
import math
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
        reader: what decodes the frames ("pyav", "decord", "opencv", "images", "camera";
            empty when not said), so a resumed run can refuse a different reader.
    """

    name: str
    image_hw: tuple[int, int]
    num_frames: int | None
    fps: float
    reader: str = ""


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


class PyAVVideoSource(FrameSource):
    """A video file read with PyAV: the frames ``ffmpeg`` itself decodes, byte for byte.

    At open, one pass over the demuxed packets (no decoding; a few ms for 50 frames) gives
    the real frame count and each frame's presentation timestamp. ``frames(start, stop)`` then
    seeks: to the keyframe at or before frame ``start``'s timestamp, decoding forward from
    there, so backward chunked reads (the video predictor's) cost a GOP, not the whole file.
    Where timestamps are missing or not unique, reads decode from the first frame instead.

    Args:
        path: the video file.
        av: the imported ``av`` module.
        threads: let FFmpeg decode on several threads (frame and slice threading).
    """

    def __init__(self, path: Path, av: Any, *, threads: bool = True) -> None:
        import av.filter  # the submodules the conversion graph uses (rebinds the same `av`)
        import av.sidedata.sidedata

        self._av = av
        self._displaymatrix = av.sidedata.sidedata.Type.DISPLAYMATRIX
        self._path = path
        self._threads = threads
        self._container: Any = None
        self._graph: Any = None
        self._graph_key: tuple[Any, ...] | None = None
        self._pts: list[int] | None = None
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    # An mp4 cut before its index (moov) opens with no streams at all.
                    raise SourceError(f"{path}: cannot decode the video (no video stream; "
                                      "the file may be truncated)")
                stream = container.streams.video[0]
                pts = [packet.pts for packet in container.demux(stream)
                       if packet.size and not packet.is_discard]
                rate = stream.average_rate or stream.guessed_rate
                fps = float(rate) if rate else 25.0
            first = next(self._decode(0), None)
        except SourceError:
            self.close()
            raise
        except Exception as exc:  # av.FFmpegError and its subclasses, OSError
            self.close()
            reason = getattr(exc, "strerror", None) or _first_line(exc)
            raise SourceError(f"{path}: cannot decode the video ({reason})") from None
        if not pts or first is None:
            self.close()
            raise SourceError(f"{path}: the video has zero frames")
        # Frames come out in presentation order, so frame i has the i-th smallest timestamp.
        self._pts = (
            sorted(pts) if None not in pts and len(set(pts)) == len(pts) else None)
        self.info = SourceInfo(str(path), (first.shape[0], first.shape[1]), len(pts),
                               fps if 0 < fps < 1000 else 25.0, reader="pyav")

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        total = self.info.num_frames or 0
        stop = total if stop is None else min(stop, total)
        if start >= stop:
            return
        decoded = self._decode(start)
        idx = start
        try:
            for frame in decoded:
                yield frame
                idx += 1
                if idx >= stop:
                    return
        except SourceError:
            raise
        except Exception as exc:  # av.FFmpegError: a damaged packet or a cut-off file
            raise SourceError(f"{self._path}: frame {idx} cannot be decoded "
                              f"({_first_line(exc)}); the file may be truncated") from None
        finally:
            decoded.close()
        # The packet scan counted more frames than the decoder gave: trust the decoded frames.
        logger.warning("%s: the decoder gave %d frames where the container lists %d; "
                       "using the decoded frames", self._path, idx, total)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._graph = None

    def _decode(self, start: int) -> Iterator[np.ndarray]:
        """Frames ``start``, ``start + 1``, ... to the end, converted as ffmpeg converts."""
        target = self._pts[start] if start > 0 and self._pts is not None else None
        if target is None:
            yield from self._decode_from_start(start)
            return
        container = self._open()
        stream = container.streams.video[0]
        container.seek(target, stream=stream, backward=True)
        for frame in container.decode(stream):
            if target is not None:
                if frame.pts is None or frame.pts > target:
                    # The demuxer's index put us past the frame: decode from the start.
                    logger.debug("%s: seek to frame %d overshot; decoding from the start",
                                 self._path, start)
                    yield from self._decode_from_start(start)
                    return
                if frame.pts < target:
                    continue
                target = None
            yield self._to_rgb(frame)

    def _decode_from_start(self, start: int) -> Iterator[np.ndarray]:
        if self._container is not None:
            self._container.close()
            self._container = None
        container = self._open()
        for idx, frame in enumerate(container.decode(container.streams.video[0])):
            if idx >= start:
                yield self._to_rgb(frame)

    def _open(self) -> Any:
        if self._container is None:
            self._container = self._av.open(str(self._path))
            if self._threads:
                self._container.streams.video[0].thread_type = "AUTO"
        return self._container

    def _to_rgb(self, frame: Any) -> np.ndarray:
        """(H, W, 3) uint8 RGB through ffmpeg's own filters: autorotation, bicubic scale."""
        matrix = frame.side_data.get(self._displaymatrix)
        matrix_words = tuple(np.frombuffer(bytes(matrix), np.int32)) if matrix is not None else ()
        key = (frame.width, frame.height, frame.format.name, matrix_words)
        if key != self._graph_key:
            self._graph = self._build_graph(frame, matrix_words)
            self._graph_key = key
        self._graph.push(frame)
        return np.ascontiguousarray(self._graph.pull().to_ndarray(format="rgb24"))

    def _build_graph(self, frame: Any, matrix: tuple[int, ...]) -> Any:
        graph = self._av.filter.Graph()
        stream = self._open().streams.video[0]
        last = graph.add_buffer(width=frame.width, height=frame.height,
                                format=frame.format.name, time_base=stream.time_base)
        for name, args in [*_autorotate_filters(matrix), ("scale", "flags=bicubic"),
                           ("format", "rgb24")]:
            node = graph.add(name, args)
            last.link_to(node)
            last = node
        last.link_to(graph.add("buffersink"))
        graph.configure()
        return graph


def _autorotate_filters(matrix: tuple[int, ...]) -> list[tuple[str, str]]:
    """The filters ``ffmpeg`` inserts for a display matrix (fftools' autorotate, FFmpeg 8).

    Args:
        matrix: the 9 int32 words of the frame's display matrix (16.16 fixed point, last
            column 2.30), or empty when the frame has none.
    """
    if not matrix:
        return []
    m = [float(v) / (1 << 16) for v in matrix]
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0.0 or scale1 == 0.0:
        return []
    # av_display_rotation_get() is counter-clockwise; get_rotation() negates and wraps it.
    theta = float(-round(-math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1.0:
        return [("transpose", "cclock_flip" if matrix[3] > 0 else "clock")]
    if abs(theta - 180) < 1.0:
        return ([("hflip", "")] if matrix[0] < 0 else []) + (
            [("vflip", "")] if matrix[4] < 0 else [])
    if abs(theta - 270) < 1.0:
        return [("transpose", "clock_flip" if matrix[3] < 0 else "cclock")]
    if abs(theta) > 1.0:
        return [("rotate", f"{theta:f}*PI/180")]
    return [("vflip", "")] if matrix[4] < 0 else []


def container_frame_count(path: Path) -> int | None:
    """The frames ``ffmpeg`` decodes from a video file, counted from its packets (PyAV).

    Packets an edit list hides (flagged discard) and empty packets are not counted, so the
    count holds where the stream header's frame count does not (stream-copy trims). None
    when PyAV is not installed or the file cannot be demuxed.
    """
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream)
                       if packet.size and not packet.is_discard)
    except Exception:  # av.FFmpegError: the caller's reader reports its own error
        return None


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
        real = container_frame_count(path)
        if real is not None and real != num_frames:
            # decord takes the stream header's count; after a stream-copy trim it pads the
            # frames an edit list hides with copies of the last one (issue 23).
            logger.warning("%s: decord lists %d frames where the file has %d; reading %d",
                           path, num_frames, real, min(real, num_frames))
            num_frames = min(real, num_frames)
        fps = float(self._reader.get_avg_fps() or 25.0)
        self.info = SourceInfo(str(path), (first.shape[0], first.shape[1]), num_frames, fps,
                               reader="decord")
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
        real = None if live else container_frame_count(Path(str(target)))
        if real is not None and real != count:
            # The header's count includes frames an edit list hides; OpenCV decodes only the
            # real ones (issue 23), so announce those.
            logger.info("%s: OpenCV lists %d frames where the file has %d", target, count, real)
            count = real
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        self.info = SourceInfo(
            str(target), (first.shape[0], first.shape[1]), count if count > 0 else None, fps,
            reader="camera" if live else "opencv",
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
        self.info = SourceInfo(str(folder), (first.shape[0], first.shape[1]), len(self._paths),
                               25.0, reader="images")

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


VIDEO_READERS = ("auto", "pyav", "decord", "opencv")


def probe_frame_size(path: str | Path) -> tuple[int, int] | None:
    """(H, W) of a video file's frames from its headers, decoding nothing (a server checks
    an upload's size before one 8K frame costs it 100 MB); None when they do not say.

    The stored size, before any rotation: its pixel count is the frames' either way.
    """
    try:
        import av
    except ImportError:
        av = None  # type: ignore[assignment]
    try:
        if av is not None:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    return None
                codec = container.streams.video[0].codec_context
                return (int(codec.height), int(codec.width)) if codec.width else None
        import cv2

        capture = cv2.VideoCapture(str(path))
        try:
            w = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            h = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        finally:
            capture.release()
        return (h, w) if w and h else None
    except Exception:  # av.FFmpegError, OSError: the real open says what is wrong
        return None


def open_source(source: str | Path, *, backend: str = "auto") -> FrameSource:
    """Open a video file, an image folder, or a camera (an integer index or a URL).

    Args:
        source: path to a video or folder, "0"/"1"/... for a camera, or an rtsp/http URL.
        backend: the video-file reader: "auto" (PyAV, then decord, then OpenCV, whichever is
            installed first), "pyav", "decord" or "opencv". Only PyAV's frames equal
            ffmpeg's on every kind of file tested (README, "Video readers").

    Raises:
        SourceError: missing path, unreadable or empty video, empty folder, a named reader
            that is not installed.
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
    if backend not in VIDEO_READERS:
        raise SourceError(f"reader: expected one of {', '.join(VIDEO_READERS)}, got {backend!r}")
    if backend in ("auto", "pyav"):
        try:
            import av
        except ImportError:
            if backend == "pyav":
                raise SourceError("PyAV is not installed; pip install av "
                                  "(or use --reader decord or --reader opencv)") from None
        else:
            return PyAVVideoSource(path, av)
    if backend in ("auto", "decord"):
        try:
            import decord
        except ImportError:
            if backend == "decord":
                raise SourceError(
                    "decord is not installed; pip install decord (or use --reader opencv)"
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
