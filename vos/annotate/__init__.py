"""The web annotator: click objects on any frame, track both ways, correct, export.

Rooms, one job each:

- ``session.py``: one video being annotated (its edits, undo, restore from disk);
- ``oplog.py``: the append-only log of a session and what it adds up to (``Book``);
- ``predictor_state.py``: the predictor's state kept on disk and read back without a model;
- ``results.py``: each frame's masks and statuses, the timeline lanes;
- ``jobs.py``: background work (tracking, export, the encoder near the cursor);
- ``store.py``: every session of the server, its owners and quotas;
- ``transfer.py``: session bundles and mask imports;
- ``routes.py``: the HTTP API and the page (``templates/index.html``);
- ``server.py``: the flags and waitress (``repvit-vos annotate``).

Flask and waitress are imported only when the app is built or served (the ``demo`` extra).

Example:
    >>> from vos.annotate import Limits, SessionStore, create_app
    >>> store = SessionStore(Path("work/sessions"), segmenter, config, None, Limits())
    >>> app = create_app(store)  # a WSGI app; repvit-vos annotate serves it with waitress
"""

from __future__ import annotations

from vos.annotate.errors import (
    AnnotatorError,
    BusyError,
    ForbiddenError,
    FullError,
    NotFoundError,
    ReadOnlyError,
)
from vos.annotate.limits import Limits
from vos.annotate.routes import OWNER_COOKIE, Sample, create_app, find_samples
from vos.annotate.session import Session
from vos.annotate.store import SessionStore, owner_hash, save_frames

__all__ = [
    "OWNER_COOKIE",
    "AnnotatorError",
    "BusyError",
    "ForbiddenError",
    "FullError",
    "Limits",
    "NotFoundError",
    "ReadOnlyError",
    "Sample",
    "Session",
    "SessionStore",
    "create_app",
    "find_samples",
    "owner_hash",
    "save_frames",
]
