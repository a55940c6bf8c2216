"""What the annotator answers when a request cannot be served: one exception per HTTP status.

Every message is one sentence for the person at the page: it names what they did and what
is expected, never a server path or an internal parameter.
"""

from __future__ import annotations


class AnnotatorError(ValueError):
    """A user mistake (HTTP 400)."""


class ForbiddenError(PermissionError):
    """The session belongs to another browser (HTTP 403)."""


class NotFoundError(LookupError):
    """No such session (HTTP 404)."""


class BusyError(RuntimeError):
    """The session is tracking or exporting (HTTP 409)."""


class ReadOnlyError(RuntimeError):
    """The session could not be restored: it can be looked at, not changed (HTTP 423)."""


class FullError(RuntimeError):
    """The server holds as many sessions as it may (HTTP 507)."""


# The status each error is answered with (routes.py registers them in this order).
HTTP_STATUS: dict[type[Exception], int] = {
    AnnotatorError: 400,
    ForbiddenError: 403,
    NotFoundError: 404,
    BusyError: 409,
    ReadOnlyError: 423,
    FullError: 507,
}


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())
