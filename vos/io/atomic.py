"""Atomic file writes: a temp file beside the destination, renamed over it when complete.

Every output of the project goes through here (PNGs, JSON, CSVs, configs, zips), so a reader
or an interrupted run never sees half a file: either the old content or the new one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class OutputWriteError(ValueError):
    """An output folder cannot be written (full disk, read-only, no permission, a file)."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it over ``path`` when the block ends cleanly.

    The temp name is unique per process and call (``.<name>.<pid>.<hex>.tmp``) and opened
    exclusively, with the usual umask permissions (``tempfile.mkstemp`` would force 0600).
    On any exception, Ctrl-C included, the temp file is removed and ``path`` is untouched.
    Missing parent folders are created.

    Args:
        path: the destination file.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        **kwargs: passed to ``open`` (``encoding``, ``newline``).

    Yields:
        The open temp file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, mode.replace("w", "x"), **kwargs) as handle:
            yield handle
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            # A failed write() names no file: name the one being written.
            raise OSError(exc.errno, exc.strerror, str(dest)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a UTF-8 text file atomically (``newline`` kept as given)."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
