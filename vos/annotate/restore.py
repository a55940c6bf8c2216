"""Opening a session from disk: the predictor's saved facts, the entries they hold, then the
log lines after them, applied as an undo applies them (no frame is encoded or decoded).

An older session, whose folder has no saved facts, is replayed through the model once in the
background (``jobs.run_model_replay``); a session whose files do not add up raises
:class:`~vos.annotate.predictor_state.RestoreError` and opens read-only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vos.annotate import jobs
from vos.annotate.jobs import Job
from vos.annotate.oplog import Book
from vos.annotate.predictor_state import (
    RestoreError,
    frame_output,
    load_checkpoint,
    read_checkpoint,
    remove_entries_except,
    save_checkpoint,
)

if TYPE_CHECKING:
    from vos.annotate.session import Session


def restore(session: Session) -> None:
    """The predictor's state from disk: the saved facts, the entries they hold, then the
    log lines after them (no model). An older session without saved facts is replayed
    through the model once, as a background job."""
    ops = session.log.read()
    facts = read_checkpoint(session.folder)
    if facts is None and any(op["op"] in ("add", "mask", "clear", "import", "track")
                             for op in ops):
        session.job = jobs.start(session, Job("restore", total=len(ops)), jobs.run_model_replay,
                              ops)
        return
    tag = int(facts["tag"]) if facts else 0
    if tag > len(ops):
        raise RestoreError("the saved model state is ahead of the session's log")
    book = Book(session.limits.undo_depth)
    for op in ops[:tag]:
        book.apply(op)
    if facts is not None:
        load_checkpoint(session.state, facts, sorted(book.current.items()), session.load_entry)
    touched: set[int] = set()
    for op in ops[tag:]:
        effects = book.apply(op)
        session.apply(effects)
        touched |= {effect.frame for effect in effects}
    prompted = {(t, o) for t, objs in session.state.prompted.items() for o in objs}
    if prompted != set(book.current):
        raise RestoreError("the saved prompts and the session's log disagree")
    session.book = book
    # Frames a line after the saved facts changed may not have been written yet.
    assert session.predictor is not None
    for frame_idx in sorted(touched - {-1}):
        session.write_frame(frame_idx, *frame_output(session.predictor, session.state, frame_idx))
    save_checkpoint(session.folder, session.state, book.count)
    session.notice = interrupted(ops)
    if session.log.damaged:
        session.notice = f"{session.notice or ''} {session.log.damaged} damaged line(s) of this " \
                      "session's log were skipped.".strip()
    remove_entries_except(session.folder, book.kept_versions())

def interrupted(ops: list[dict[str, Any]]) -> str | None:
    """What the page says of a pass that a restart cut short, or None."""
    open_pass: dict[str, Any] | None = None
    frames = 0
    for op in ops:
        if op["op"] == "track" and "n" in op:  # older logs mark no pass ends
            open_pass, frames = op, 0
        elif op["op"] == "frame":
            frames += 1
        elif op["op"] == "end":
            open_pass = None
    if open_pass is None:
        return None
    direction = "backward" if open_pass["reverse"] else "forward"
    return (f"Tracking {direction} from frame {open_pass['start']} was interrupted by a "
            f"server restart after {frames} frame(s); they are kept. Track again to "
            "finish.")
