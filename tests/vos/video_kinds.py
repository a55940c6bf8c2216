"""Small videos of the kinds that separate readers, made at test time with imageio-ffmpeg.

Each kind is a few frames at a small size, encoded from a synthetic moving pattern (no data
folder needed), so the whole set is made in about a second. :func:`ffmpeg_decode` is the
reference every reader is compared with: ffmpeg's own decode of the file to RGB, with its
default autorotation and without frame duplication or dropping (``-fps_mode passthrough``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

SIZE_WH = (96, 64)
NUM_FRAMES = 12
FPS = 10


def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def has_encoder(name: str) -> bool:
    """True when the bundled ffmpeg has the encoder ``name`` (libvpx-vp9, libx265, ...)."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True,
                         text=True, check=True).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())


def pattern_frames(num_frames: int = NUM_FRAMES, size_wh: tuple[int, int] = SIZE_WH
                   ) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB: a smooth gradient with a bright square moving to the right.

    Every frame differs from its neighbours, so a reader that repeats or skips a frame is
    caught by content, not only by count.
    """
    w, h = size_wh
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = (xx * 255 // max(1, w - 1)).astype(np.uint8)
        frames[t, ..., 1] = (yy * 255 // max(1, h - 1)).astype(np.uint8)
        frames[t, ..., 2] = (t * 200 // max(1, num_frames - 1) + 20) % 256
        x0 = 4 + t * max(1, (w - 20) // max(1, num_frames))
        frames[t, 8:24, x0:x0 + 16] = (250, 250, 30)
    return frames


def _encode(frames: np.ndarray, out: Path, args: list[str], *, fps: float = FPS,
            pre: list[str] | None = None) -> Path:
    _, h, w, _ = frames.shape
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *(pre or []),
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
           *args, str(out)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    return out


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True)


def make_kind(kind: str, folder: Path) -> Path:
    """Write one video of ``kind`` (see :data:`KINDS`) into ``folder``; returns its path."""
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "18"]
    frames = pattern_frames()
    if kind == "plain":
        return _encode(frames, folder / "plain.mp4", [*x264, "-pix_fmt", "yuv420p"])
    if kind == "trimmed":
        # A stream-copy cut in the middle of a GOP: the mp4 keeps the frames back to the
        # keyframe and an edit list that hides them (what phone editors and quick trims write).
        src = _encode(pattern_frames(20), folder / "trim_src.mp4",
                      ["-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "250",
                       "-pix_fmt", "yuv420p"])
        out = folder / "trimmed.mp4"
        _ffmpeg("-ss", "0.75", "-i", str(src), "-c", "copy", str(out))
        return out
    if kind == "rotated":
        src = _encode(frames, folder / "rot_src.mp4", [*x264, "-pix_fmt", "yuv420p"])
        out = folder / "rotated.mp4"
        _ffmpeg("-display_rotation", "90", "-i", str(src), "-c", "copy", str(out))
        return out
    if kind == "vfr":
        # Frames 0-3 at 10 fps, then 25 fps, then one long gap: timestamps with no common rate.
        return _encode(frames, folder / "vfr.mp4",
                       ["-vf", "setpts='if(lt(N,4),N*0.1,if(lt(N,9),0.4+(N-4)*0.04,N*0.12))/TB'",
                        "-fps_mode", "vfr", *x264, "-pix_fmt", "yuv420p"])
    if kind == "10bit":
        return _encode(frames, folder / "10bit.mp4", [*x264, "-pix_fmt", "yuv420p10le"])
    if kind == "gray":
        return _encode(frames, folder / "gray.mp4", [*x264, "-pix_fmt", "gray"])
    if kind == "odd_size":
        return _encode(pattern_frames(size_wh=(95, 63)), folder / "odd_size.mp4",
                       [*x264, "-pix_fmt", "yuv444p"])
    if kind == "one_frame":
        return _encode(frames[:1], folder / "one_frame.mp4", [*x264, "-pix_fmt", "yuv420p"])
    if kind == "audio":
        return _encode(frames, folder / "audio.mp4",
                       [*x264, "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
                        "-map", "1:v", "-map", "0:a"],
                       pre=["-f", "lavfi", "-i", "sine=frequency=440:duration=2"])
    if kind == "mjpeg_avi":
        return _encode(frames, folder / "mjpeg.avi",
                       ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"])
    if kind == "vp9":
        return _encode(frames, folder / "vp9.webm",
                       ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                        "-crf", "20", "-b:v", "0", "-pix_fmt", "yuv420p"])
    raise ValueError(f"kind: unknown video kind {kind!r}")


KINDS = ("plain", "trimmed", "rotated", "vfr", "10bit", "gray", "odd_size", "one_frame",
         "audio", "mjpeg_avi", "vp9")


def ffmpeg_decode(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB: every frame ffmpeg decodes from ``path``, autorotated."""
    probe = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-fps_mode",
         "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True)
    w, h = _output_size(probe.stderr.decode(errors="replace"))
    return np.frombuffer(probe.stdout, np.uint8).reshape(-1, h, w, 3)


def _output_size(log: str) -> tuple[int, int]:
    # The "Output #0" block's "Stream #0:0: Video: rawvideo (...), rgb24(...), WxH" line.
    out = log[log.index("Output #0"):]
    for line in out.splitlines():
        if "Video:" in line:
            for token in line.replace(",", " ").split():
                left, _, right = token.partition("x")
                if left.isdigit() and right.isdigit():
                    return int(left), int(right)
    raise ValueError(f"no output size in ffmpeg's log:\n{out[:400]}")
