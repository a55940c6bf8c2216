"""One run per output folder: an exclusive OS lock that the kernel drops when the process dies.

The lock is ``fcntl.flock`` on ``<folder>/.lock`` (``msvcrt.locking`` on Windows): no stale
lock survives a crash or a SIGKILL, so a resumed run never has to clean anything up. The file
holds the owner's pid, for the message a second run prints.

Example:
    >>> with FolderLock(Path("outputs/clip")):
    ...     run_the_video()
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import IO

from vos.io.atomic import OutputWriteError

LOCK_NAME = ".lock"

# Folders this process holds, with their nesting depth: a lock is re-entrant within one
# process (the CLI takes it before loading the model, the pipeline again when it runs), while
# flock itself would make a second open file of the same process wait for the first.
_HELD: dict[Path, int] = {}
_HELD_GUARD = threading.Lock()


class OutputBusyError(ValueError):
    """Another process is writing to the output folder."""


def _try_lock(handle: IO[str]) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class FolderLock:
    """An exclusive lock on an output folder, held from ``__enter__`` to ``__exit__``.

    Args:
        folder: the output folder (created if missing: the lock file lives in it).

    Raises:
        OutputBusyError: on ``__enter__``, when another process holds the lock.
        OutputWriteError: on ``__enter__``, when the folder cannot be created or written.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._handle: IO[str] | None = None

    def __enter__(self) -> FolderLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputWriteError(f"{self.folder}: is a file, expected an output folder")
        key = self.folder.resolve()
        with _HELD_GUARD:
            if key in _HELD:
                _HELD[key] += 1
                return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+", encoding="utf-8")  # held open until __exit__
        except OSError as exc:
            raise OutputWriteError(
                f"{self.folder}: cannot write there ({exc.strerror or exc})") from None
        if not _try_lock(handle):
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise OutputBusyError(
                f"{self.folder}: another run (pid {owner}) is writing there; wait for it to "
                "finish or choose another --output"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        with _HELD_GUARD:
            _HELD[key] = 1
        return self

    def __exit__(self, *exc: object) -> None:
        key = self.folder.resolve()
        with _HELD_GUARD:
            _HELD[key] -= 1
            if _HELD[key]:
                return
            del _HELD[key]
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None
