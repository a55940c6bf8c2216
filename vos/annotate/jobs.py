"""A session's background work: tracking passes, exports, the model replay of an older
session's log, and encoding frames near the cursor while the user looks.

Each runs on its own thread and reports through a :class:`Job` the page polls. Tracking and
exports hold the session's lock from start to end (edits answer 409 meanwhile); the encoder
takes no session lock and pauses while a pass runs or a request is being served.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from vos.annotate.oplog import Book
from vos.annotate.predictor_state import forget_unprompted, save_checkpoint, save_entry
from vos.io.sinks import ResultSink
from vos.io.sources import open_source
from vos.pipeline import frame_names_for
from vos.video_predictor import FrameReader

if TYPE_CHECKING:
    from vos.annotate.session import Session

logger = logging.getLogger(__name__)

# A pass saves the predictor's facts this often, so a kill loses at most this much of the
# kept states' bookkeeping (the frames' results are on disk either way).
CHECKPOINT_FRAMES = 25
CHECKPOINT_SECONDS = 2.0


@dataclass
class Job:
    """A background task of a session (tracking, export or restore), polled by the page."""

    kind: str
    total: int
    done: int = 0
    frame: int | None = None
    state: str = "running"  # running | done | cancelled | error
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    result: dict[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def finish(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        self.finished = time.monotonic()

    def to_json(self) -> dict[str, Any]:
        """Progress, frames per second and the outcome."""
        end = self.finished if self.finished is not None else time.monotonic()
        seconds = max(end - self.started, 1e-9)
        return {"kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                "frame": self.frame, "error": self.error, "seconds": round(seconds, 3),
                "fps": round(self.done / seconds, 2) if self.done else 0.0,
                "result": self.result}


def start(session: Session, job: Job, target: Any, *args: Any) -> Job:
    """Run ``target(session, job, *args)`` on a daemon thread."""
    threading.Thread(target=target, args=(session, job, *args), daemon=True,
                     name=f"{job.kind}-{session.sid[:6]}").start()
    return job


# ---------------------------------------------------------------------- tracking
def run_pass(session: Session, start_frame: int, reverse: bool, max_frames: int | None,
             job: Job, *, live: bool = True) -> bool:
    """One pass through the predictor; each frame is written, then logged. Returns False
    when cancelled. Call with the session's lock held."""
    predictor, state = session.predictor, session.state
    assert predictor is not None
    if live:
        session.log_line({"op": "track", "start": start_frame, "reverse": reverse})
    frames = cast(Generator[tuple[int, list[Any], Any], None, None],
                  predictor.propagate_in_video(state, start_frame, max_frames, reverse))
    saved = time.monotonic()
    since = 0
    try:
        for frame_idx, obj_ids, logits in frames:
            session.write_frame(frame_idx, obj_ids, logits)
            session.encoded.add(frame_idx)
            if live:
                session.log_line({"op": "frame", "t": frame_idx})
                job.done += 1
                since += 1
                if since >= CHECKPOINT_FRAMES or time.monotonic() - saved > CHECKPOINT_SECONDS:
                    save_checkpoint(session.folder, state, session.book.count)
                    saved, since = time.monotonic(), 0
            job.frame = frame_idx
            if job.cancel.is_set():
                return False
    finally:
        frames.close()
    return True


def run_track(session: Session, job: Job, passes: list[tuple[int, bool, int]]) -> None:
    """The tracking job: the passes in order, then an ``end`` line and the saved facts."""
    outcome, error = "done", None
    try:
        with session.lock:
            try:
                for start_frame, reverse, _ in passes:
                    if not run_pass(session, start_frame, reverse, None, job):
                        outcome = "cancelled"
                        break
            finally:
                session.log_line({"op": "end", "state": outcome})
                save_checkpoint(session.folder, session.state, session.book.count)
                session.changed()
    except Exception as exc:
        logger.exception("session %s: tracking failed", session.sid[:6])
        outcome, error = "error", f"tracking failed: {session.user_message(exc)}"
    finally:
        session.notice = None
        job.finish(outcome, error)
        session.last_used = time.monotonic()


# ---------------------------------------------------------------------- export
def run_export(session: Session, job: Job) -> None:
    """Write the zip (``ResultSink``'s layout, as ``vos.run`` writes) and say which frames
    are stale."""
    out = session.folder / "export"
    try:
        with session.lock:
            shutil.rmtree(out, ignore_errors=True)
            live = sorted(session.book.objects)
            stale = session.stale_list()
            version = session.results.version
            with open_source(session.video_path) as source:
                names = frame_names_for(source, session.num_frames)
                with ResultSink(out, (session.height, session.width), source.info.fps) as sink:
                    for frame_idx, frame in enumerate(source.frames(0, session.num_frames)):
                        sink.write(names[frame_idx], frame,
                                   session.results.frame_result(frame_idx, live))
                        job.done = frame_idx + 1
            names_of = {str(k): session.book.objects[k] for k in live}
            about = {"video": session.meta["name"], "objects": names_of,
                     "frames": session.num_frames, "stale_frames": stale,
                     "exported": time.strftime("%Y-%m-%d %H:%M:%S")}
            zip_path = session.folder / "export.zip"
            partial = zip_path.with_name("export.zip.partial")
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
                for sub in ("masks", "json"):
                    for path in sorted((out / sub).glob("*")):
                        archive.write(path, f"{sub}/{path.name}")
                archive.write(out / "overlay.mp4", "overlay.mp4")
                archive.writestr("objects.json", json.dumps(names_of, indent=1))
                archive.writestr("export.json", json.dumps(about, indent=1))
            os.replace(partial, zip_path)
            shutil.rmtree(out, ignore_errors=True)
            session.export_version = version
        job.result = {"url": f"/api/sessions/{session.sid}/export.zip",
                      "name": f"{Path(session.meta['name']).stem}_masks.zip",
                      "stale_frames": stale}
        job.finish("done")
    except Exception as exc:
        logger.exception("session %s: export failed", session.sid[:6])
        job.finish("error", f"export failed: {session.user_message(exc)}")


# ---------------------------------------------------------------------- legacy restore
def run_model_replay(session: Session, job: Job, ops: list[dict[str, Any]]) -> None:
    """Replay a log written before sessions kept their model state (no ``predictor.json``)
    through the model, once: the entries and the facts are saved as it goes, so the next
    opening reads them from disk."""
    try:
        with session.lock:
            book = Book(session.limits.undo_depth)
            index = 0
            while index < len(ops):
                op = {**ops[index], "n": ops[index].get("n", book.count)}
                if op["op"] == "track":
                    count = 0
                    while index + 1 + count < len(ops) and ops[index + 1 + count]["op"] == "frame":
                        count += 1
                    if count:
                        run_pass(session, op["start"], op["reverse"], count - 1, job, live=False)
                    for _ in range(count + 1):
                        book.apply(ops[index])
                        index += 1
                    job.done = index
                    continue
                _replay_call(session, op, book)
                index += 1
                job.done = index
            session.book = book
            save_checkpoint(session.folder, session.state, book.count)
            session.changed()
        job.finish("done")
    except Exception as exc:
        logger.exception("session %s: restore failed", session.sid[:6])
        reason = session.user_message(exc)
        session.read_only = reason
        job.finish("error", f"restore failed: {reason}")


def _replay_call(session: Session, op: dict[str, Any], book: Any) -> None:
    """One action of an older log, made through the predictor as it was made live."""
    predictor, state = session.predictor, session.state
    assert predictor is not None
    kind = op["op"]
    out = None
    if kind == "add":
        points = op.get("points") or None
        out = predictor.add_new_points_or_box(
            state, op["frame"], op["obj"], points=points,
            labels=op.get("labels") if points else None, clear_old_points=op["clear_old"],
            box=op.get("box"))
    elif kind == "clear" and op["obj"] in state.track_ids:
        out = predictor.clear_all_prompts_in_frame(state, op["frame"], op["obj"])
    elif kind == "remove":
        predictor.remove_object(state, op["obj"], need_output=False)
    forget_unprompted(state)
    if kind == "add":
        save_entry(session.folder, str(op["n"]), session.state, int(op["frame"]), int(op["obj"]))
    book.apply(op)
    if out is not None:
        session.write_frame(*out)


# ---------------------------------------------------------------------- background encoding
def encode_loop(session: Session) -> None:
    """Encode frames nearest the cursor first; pause while a pass runs or a request is
    served (a click must not wait behind a frame it does not need)."""
    reader: FrameReader | None = None
    try:
        while not session.closed.is_set():
            job = session.job
            busy = (job is not None and job.running and job.kind != "export") \
                or session.requests_active > 0
            t = None if busy else session.next_to_encode()
            if t is None:
                session.wake.wait(0.2 if busy else 0.5)
                session.wake.clear()
                continue
            predictor = session.predictor
            if predictor is None or session.closed.is_set():
                break
            if reader is None:
                reader = FrameReader(open_source(session.video_path))
            predictor.segmenter.encode(reader[t])
            session.encoded.add(t)
    except Exception:  # a closed store or source: the session is going away
        logger.debug("session %s: background encoding stopped", session.sid[:6], exc_info=True)
    finally:
        if reader is not None:
            reader.close()
