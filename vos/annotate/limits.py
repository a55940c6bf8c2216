"""What one session, one owner and the whole server may hold.

Memory is bounded by ``max_open`` sessions at a time, each holding at most ``memory_mb`` of
embeddings and ``state_memory_mb`` of tracker states (a closed session gives its memory back:
``Session.close`` returns the freed heap to the system). Disk is bounded per session by
``disk_mb`` + ``state_disk_mb`` plus its video, results and log, and per server by
``max_sessions``.
"""

from __future__ import annotations

from dataclasses import dataclass

FULL_HD_PIXELS = 1920 * 1080


@dataclass(frozen=True)
class Limits:
    """The annotator's limits (the CLI's ``--max-*`` flags set them).

    Attributes:
        max_frames: frames of a video at most (longer videos are refused at upload).
        max_pixels: pixels per frame at most (width x height; larger videos are refused at
            upload with one line that says how to downscale them).
        max_objects: live objects per session at most.
        max_ops: logged operations per session at most (clicks, clears, tracked frames...).
        max_sessions: sessions on the server at most; an upload beyond is refused.
        max_sessions_per_owner: sessions of one browser at most; beyond, that browser's own
            least recently changed idle session is deleted (and the page says which). Other
            browsers' sessions are never touched.
        max_open: sessions holding a model state at once (the least recently used idle one
            is closed; it reopens from disk in about a second).
        ttl_hours: sessions unchanged for longer are deleted.
        memory_mb: frame embeddings kept in memory per open session (4 MiB a frame).
        disk_mb: frame embeddings kept on disk per session (every encoded frame is written
            at once, so a restart re-encodes nothing within this budget).
        state_memory_mb: tracker states kept in memory per open session.
        state_disk_mb: tracker states kept on disk per session.
        background_encode: encode frames near the cursor while the user is idle.
        undo_depth: actions that can be undone, most recent first.
    """

    max_frames: int = 2000
    max_pixels: int = FULL_HD_PIXELS
    max_objects: int = 50
    max_ops: int = 50_000
    max_sessions: int = 200
    max_sessions_per_owner: int = 20
    max_open: int = 3
    ttl_hours: float = 72.0
    memory_mb: float = 256.0
    disk_mb: float = 2048.0
    state_memory_mb: float = 64.0
    state_disk_mb: float = 1024.0
    background_encode: bool = True
    undo_depth: int = 200

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_pixels", "max_objects", "max_ops", "max_sessions",
                     "max_sessions_per_owner", "max_open", "undo_depth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name.replace('_', '-')} {getattr(self, name)}: expected >= 1")
        for name in ("ttl_hours", "memory_mb", "disk_mb", "state_memory_mb", "state_disk_mb"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name.replace('_', '-')} {getattr(self, name)}: expected >= 0")


def parse_pixels(text: str) -> int:
    """``"1920x1080"`` or ``"2073600"`` -> pixels per frame.

    Raises:
        ValueError: anything else (the message names the flag).
    """
    value = text.strip().lower()
    try:
        if "x" in value:
            width, height = (int(part) for part in value.split("x", 1))
            pixels = width * height
        else:
            pixels = int(value)
    except ValueError:
        raise ValueError(f"--max-pixels {text!r}: expected WIDTHxHEIGHT (e.g. 1920x1080) or a "
                         "number of pixels") from None
    if pixels < 1:
        raise ValueError(f"--max-pixels {text!r}: expected a positive size")
    return pixels
