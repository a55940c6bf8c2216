"""The batch's two stop-the-batch errors, and how any error becomes one line of a record."""

from __future__ import annotations


class BatchError(ValueError):
    """The manifest or the batch options are unusable (one line, before any video runs)."""


class WorkerInitError(RuntimeError):
    """A worker could not build its model; every video would fail the same way."""


def one_line(exc: BaseException | str) -> str:
    """The text of an error with its line breaks and runs of spaces collapsed."""
    return " ".join(str(exc).split())


def describe(exc: BaseException) -> str:
    """One line for a failed video; unexpected exception types keep their name.

    ``ValueError`` and ``OSError`` are the expected ones (bad prompt, unreadable file), whose
    messages already say what is wrong; anything else is more likely a bug, so its type is
    kept for the report.
    """
    text = one_line(exc)
    if isinstance(exc, (ValueError, OSError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
