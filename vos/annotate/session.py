"""One video being annotated: its folder, its log, and (while open) its predictor.

A session is a folder ``<workdir>/sessions/<id>/``:

- ``meta.json``: the video (an upload inside the folder, or a ``--samples`` path), its size,
  the owner's hashed token;
- ``ops.jsonl``: every action, undo and tracked frame, in order (``oplog.py``);
- ``results/``: each frame's masks and statuses (``results.py``), what the page shows;
- ``entries/``, ``states/``, ``predictor.json``: the predictor's state (``predictor_state.py``);
- ``embeddings/``: every frame the model encoded, written at once (the session's store).

Nothing here steps through frames: prompts go to the predictor's SAM 2 calls
(``add_new_points_or_box``, ``add_new_mask``, ``clear_all_prompts_in_frame``,
``remove_object``), tracking iterates ``propagate_in_video`` (whose frame loop is
``VideoTracker.track``), and an undo puts back what the log says held before.

Opening a session reads its state from disk in well under a second; no frame is encoded or
decoded. If what is on disk does not add up, the session opens read-only and says why,
rather than accept edits on a partial state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vos.annotate import jobs
from vos.annotate.errors import AnnotatorError, BusyError, ReadOnlyError, one_line
from vos.annotate.inputs import box_of, clicks, ranges, whole_number
from vos.annotate.jobs import Job
from vos.annotate.limits import Limits
from vos.annotate.oplog import Book, Effect, OpLog
from vos.annotate.predictor_state import (
    Entry,
    RestoreError,
    apply_effects,
    forget_unprompted,
    frame_output,
    load_entry,
    persist_states,
    save_checkpoint,
    save_entry,
    stale_frames,
    status_letters,
    validity,
)
from vos.annotate.restore import restore
from vos.annotate.results import ResultStore
from vos.config import RunConfig
from vos.io.sinks import object_color
from vos.io.sources import open_source
from vos.types import MAX_POINTS, PromptError
from vos.video_predictor import FrameReader, VideoPredictor

logger = logging.getLogger(__name__)

BUSY = {"track": "tracking is running: cancel it or wait for it to finish",
        "export": "an export is running: wait for it to finish",
        "restore": "the session is being restored: try again in a moment"}
MAX_OBJ_ID = 255  # palette PNGs hold ids 1..255; ids are never reused
# The annotator never drops an object for being missed: it stays LOST, searched for on
# every frame, until the user removes it.
NEVER_DROPPED = 10**9


class Session:
    """One video being annotated.

    Args:
        folder: ``<workdir>/sessions/<id>``, holding ``meta.json``.
        meta: the contents of ``meta.json``.
        limits: the server's limits.
    """

    def __init__(self, folder: Path, meta: dict[str, Any], limits: Limits) -> None:
        self.folder = folder
        self.sid = folder.name
        self.meta = meta
        self.limits = limits
        self.num_frames = int(meta["num_frames"])
        self.width, self.height = int(meta["width"]), int(meta["height"])
        self.lock = threading.RLock()  # the predictor's state, the log, the results
        self.job: Job | None = None
        self.predictor: VideoPredictor | None = None
        self.state: Any = None
        self.log = OpLog(folder / "ops.jsonl")
        self.book = Book(limits.undo_depth)
        self.results = ResultStore(folder / "results", self.num_frames,
                                   (self.height, self.width))
        self.read_only: str | None = None  # why edits are refused (a failed restore)
        self.notice: str | None = None  # what the page should say once (an interrupted pass)
        self.export_version: int | None = None  # the results' version the zip shows
        self.requests_active = 0
        self._stale: tuple[list[list[int]], dict[str, list[list[int]]]] = ([], {})
        self.cursor = 0
        self.encoded: set[int] = set()
        self.last_used = time.monotonic()
        self.wake = threading.Event()
        self.closed = threading.Event()
        self._count_lock = threading.Lock()
        self._model: tuple[Any, RunConfig, str | None] | None = None
        self._frame_lock = threading.Lock()
        self._page_reader: FrameReader | None = None
        self._jpegs: OrderedDict[int, bytes] = OrderedDict()
        self._read_log()

    def _read_log(self) -> None:
        """The book and the lanes as the log on disk leaves them (no model involved)."""
        self.book = Book(self.limits.undo_depth)
        try:
            for op in self.log.read():
                self.book.apply(op)
        except (ValueError, KeyError, TypeError) as exc:
            self.read_only = f"its log is damaged ({one_line(exc)})"
        self.results.load(set(self.book.objects))

    # ------------------------------------------------------------------ files
    @property
    def video_path(self) -> Path:
        path = Path(self.meta["video"])
        return path if path.is_absolute() else self.folder / path

    def modified(self) -> float:
        """When the session last changed (its log, else its creation)."""
        for path in (self.log.path, self.folder / "meta.json"):
            try:
                return path.stat().st_mtime
            except OSError:
                continue
        return 0.0

    # ------------------------------------------------------------------ open / close / restore
    @property
    def is_open(self) -> bool:
        return self.predictor is not None

    def open(self, segmenter: Any, config: RunConfig, checkpoint_sha256: str | None) -> None:
        """Build this session's predictor and restore its state from disk."""
        limits = self.limits
        store = dataclasses.replace(
            config.store, cache_dir=str(self.folder / "embeddings"), memory_mb=limits.memory_mb,
            disk_mb=limits.disk_mb, state_memory_mb=limits.state_memory_mb,
            state_disk_mb=limits.state_disk_mb)
        tracker = dataclasses.replace(config.tracker, max_missed_frames=NEVER_DROPPED)
        predictor = VideoPredictor(segmenter, dataclasses.replace(config, store=store,
                                                                  tracker=tracker),
                                   checkpoint_sha256=checkpoint_sha256)
        predictor.store.cache.write_through = True
        self._sweep()
        state = predictor.init_state(self.video_path)
        persist_states(state, self.folder, limits.state_memory_mb, limits.state_disk_mb)
        with self.lock:
            self._model = (segmenter, config, checkpoint_sha256)
            self.predictor, self.state = predictor, state
            self.closed.clear()
            if self.read_only is None:
                try:
                    restore(self)
                except (RestoreError, ValueError, KeyError, TypeError, OSError) as exc:
                    logger.warning("session %s: opened read-only: %s", self.sid[:6], exc)
                    self.read_only = self.user_message(exc)
        if limits.background_encode:
            threading.Thread(target=jobs.encode_loop, args=(self,), daemon=True,
                             name=f"encode-{self.sid[:6]}").start()

    def _sweep(self) -> None:
        """Remove what a killed process left half-written: temp files of atomic writes (their
        names carry the writer's pid), an export's working folder and its partial zip."""
        mine = f".{os.getpid()}."
        for path in self.folder.rglob(".*.tmp"):
            if mine not in path.name:
                path.unlink(missing_ok=True)
        job = self.job
        if job is None or not job.running:
            shutil.rmtree(self.folder / "export", ignore_errors=True)
            (self.folder / "export.zip.partial").unlink(missing_ok=True)

    def close(self) -> None:
        """Release the predictor and its memory (the folder stays)."""
        self.closed.set()
        self.wake.set()
        with self.lock:
            if self.predictor is not None:
                self.predictor.close_state(self.state)
                self.predictor.store.close()
            self.predictor = self.state = None
        with self._frame_lock:
            if self._page_reader is not None:
                self._page_reader.close()
                self._page_reader = None
            self._jpegs.clear()

    def load_entry(self, version: str) -> Entry:
        return load_entry(self.folder, version, (self.height, self.width))

    def retry(self) -> None:
        """Open again from disk after a failed restore."""
        if self._model is None:
            raise AnnotatorError("this session is not open")
        model = self._model
        self.close()
        self.read_only = None
        self._read_log()
        self.open(*model)

    def apply(self, effects: list[Effect]) -> None:
        """Make one log line's effects happen on the predictor (restore and undo)."""
        assert self.predictor is not None
        apply_effects(self.predictor, self.state, effects, self.load_entry)

    # ------------------------------------------------------------------ shared with jobs
    def log_line(self, op: dict[str, Any]) -> list[Effect]:
        """Number a line, write it, and account for it in the book."""
        op["n"] = self.book.count
        self.log.append(op)
        return self.book.apply(op)

    def write_frame(self, frame_idx: int, obj_ids: list[Any], logits: Any) -> None:
        """Store one frame's masks and statuses (what the predictor returned for it)."""
        letters = status_letters(self.state, frame_idx, obj_ids, logits)
        self.results.write(frame_idx, [int(o) for o in obj_ids], logits, letters)

    def changed(self) -> None:
        """Something the page shows changed without a frame being written."""
        self.results.bump([])

    def stale_flags(self) -> dict[int, np.ndarray]:
        """obj_id -> (N,) bool: where its result predates the latest prompts
        (``stale_frames``)."""
        if self.state is None:
            return {}
        lanes = {k: v for k, v in self.results.lanes.copy().items() if k in self.book.objects}
        return stale_frames(self.state, lanes)

    def stale_list(self) -> list[int]:
        """The frames where any object's result is stale (for the export)."""
        union = np.zeros(self.num_frames, bool)
        for flags in self.stale_flags().values():
            union |= flags
        return np.flatnonzero(union).tolist()

    @staticmethod
    def user_message(exc: BaseException) -> str:
        """An exception as one sentence for the page (no server paths)."""
        text = one_line(exc)
        return text.replace(str(Path.home()), "~")

    # ------------------------------------------------------------------ edits
    def _check_idle(self) -> None:
        job = self.job
        if job is not None and job.running:
            raise BusyError(BUSY[job.kind])

    def _check_writable(self) -> None:
        if self.read_only is not None:
            raise ReadOnlyError(f"this session could not be restored ({self.read_only}); it is "
                                "read-only: press Retry, or export what it shows")
        self._check_idle()

    @contextlib.contextmanager
    def _editing(self, ops_needed: int = 1) -> Iterator[None]:
        """Hold the session for one edit. A user mistake leaves everything as it was; any
        other failure reloads the state from disk, so memory never drifts from the log."""
        self._check_writable()  # at once, rather than after waiting for a job's lock
        with self._count_lock:
            self.requests_active += 1
        try:
            with self.lock:
                self._check_writable()
                if self.book.count + ops_needed > self.limits.max_ops:
                    raise AnnotatorError(f"this session reached its limit of "
                                         f"{self.limits.max_ops} operations: export it and "
                                         "start a new session")
                try:
                    yield
                except (AnnotatorError, BusyError, ReadOnlyError):
                    raise
                except PromptError as exc:
                    raise AnnotatorError(self._prompt_message(exc)) from None
                except Exception as exc:
                    logger.exception("session %s: an edit failed; reloading from disk",
                                     self.sid[:6])
                    try:
                        self._reload()
                    except Exception as again:  # the disk itself fails: read-only, say why
                        logger.exception("session %s: reloading failed", self.sid[:6])
                        self.read_only = (f"it could not be reloaded after a failed change "
                                          f"({self.user_message(again)})")
                    raise AnnotatorError(f"the change could not be saved "
                                         f"({self.user_message(exc)}); the session was "
                                         "reloaded as it was saved") from None
                save_checkpoint(self.folder, self.state, self.book.count)
        finally:
            with self._count_lock:
                self.requests_active -= 1
            self.last_used = time.monotonic()
            self.wake.set()

    def _reload(self) -> None:
        if self._model is not None:
            model = self._model
            self.close()
            self._read_log()
            self.open(*model)

    @staticmethod
    def _prompt_message(exc: Exception) -> str:
        text = one_line(exc)
        if "positive" in text:
            return ("a 'remove area' click needs a mask to remove from: click on the object "
                    "with 'add area' first")
        return text

    def _check_frame(self, frame_idx: Any) -> int:
        frame_idx = whole_number(frame_idx, "frame")
        if not 0 <= frame_idx < self.num_frames:
            raise AnnotatorError(f"frame {frame_idx} is out of range: the video has "
                                 f"{self.num_frames} frames (0 to {self.num_frames - 1})")
        return frame_idx

    def _check_obj(self, obj_id: Any) -> int:
        obj_id = whole_number(obj_id, "object")
        if obj_id not in self.book.objects:
            raise AnnotatorError(f"object {obj_id} does not exist: add an object first")
        return obj_id

    def add_object(self, name: str | None = None) -> int:
        """A new object id (not yet on any frame)."""
        with self._editing():
            if len(self.book.objects) >= self.limits.max_objects:
                raise AnnotatorError(f"at most {self.limits.max_objects} objects per session")
            if self.book.next_obj_id > MAX_OBJ_ID:
                raise AnnotatorError(f"this session used all {MAX_OBJ_ID} object ids")
            obj_id = self.book.next_obj_id
            text = one_line(name or f"object {obj_id}")[:40] or f"object {obj_id}"
            self.log_line({"op": "object", "obj": obj_id, "name": text})
            self.changed()
            return obj_id

    def prompt(self, frame_idx: Any, obj_id: Any, points: Any, box: Any) -> None:
        """Clicks (added to the object's clicks on the frame) and/or a box (which replaces
        them); the frame's masks are decoded and written before this returns.

        Raises:
            AnnotatorError: a bad frame or object, clicks outside the frame, NaN, too many
                clicks, a degenerate box.
        """
        frame_idx, obj_id = self._check_frame(frame_idx), self._check_obj(obj_id)
        xy, labels = clicks(points, self.width, self.height)
        box_xyxy = box_of(box, self.width, self.height)
        if not xy and box_xyxy is None:
            raise AnnotatorError("empty prompt: click on the object or drag a box around it")
        with self._editing():
            held = self.book.current.get((frame_idx, obj_id))
            kept = 0 if box_xyxy is not None or held is None \
                else len(self.book.prompts[held].points)
            if kept + len(xy) > MAX_POINTS:
                raise AnnotatorError(f"at most {MAX_POINTS} clicks per object on a frame: "
                                     "undo or clear some first")
            assert self.predictor is not None
            valid = validity(self.state)
            out = self.predictor.add_new_points_or_box(
                self.state, frame_idx, obj_id, points=xy or None, labels=labels or None,
                clear_old_points=box_xyxy is not None, box=box_xyxy)
            op = {"op": "add", "frame": frame_idx, "obj": obj_id, "points": xy,
                  "labels": labels, "box": box_xyxy, "clear_old": box_xyxy is not None,
                  "valid": valid}
            save_entry(self.folder, str(self.book.count), self.state, frame_idx, obj_id)
            self.log_line(op)
            self.write_frame(*out)

    def clear(self, frame_idx: Any, obj_id: Any) -> None:
        """Remove the object's prompts on the frame."""
        frame_idx, obj_id = self._check_frame(frame_idx), self._check_obj(obj_id)
        with self._editing():
            if (frame_idx, obj_id) not in self.book.current:
                raise AnnotatorError("nothing to clear: the object has no prompt on this frame")
            assert self.predictor is not None
            valid = validity(self.state)
            self.predictor.clear_all_prompts_in_frame(self.state, frame_idx, obj_id,
                                                      need_output=False)
            forget_unprompted(self.state)
            self.log_line({"op": "clear", "frame": frame_idx, "obj": obj_id, "valid": valid})
            self.write_frame(frame_idx, *frame_output(self.predictor, self.state, frame_idx))

    def remove(self, obj_id: Any) -> str:
        """Remove the object from every frame (undo brings it back); returns its name."""
        obj_id = self._check_obj(obj_id)
        with self._editing():
            assert self.predictor is not None
            state = self.state
            tid = state.track_ids.get(obj_id)
            pos = state.obj_ids.index(obj_id) if obj_id in state.obj_ids else None
            name = self.book.name(obj_id)
            valid = validity(state)
            self.predictor.remove_object(state, obj_id, need_output=False)
            forget_unprompted(state)
            self.log_line({"op": "remove", "obj": obj_id, "tid": tid, "pos": pos,
                           "valid": valid})
            self.results.drop(obj_id)
            return name

    def rename(self, obj_id: Any, name: Any) -> None:
        """Give the object a name shown in the page."""
        obj_id = self._check_obj(obj_id)
        if not isinstance(name, str) or not name.strip():
            raise AnnotatorError("name: expected a non-empty text")
        with self._editing():
            self.log_line({"op": "rename", "obj": obj_id, "name": one_line(name)[:40]})
            self.changed()

    def undo(self) -> dict[str, Any]:
        """Take back the latest action not yet undone (any kind, any frame).

        Returns:
            ``{"undone": what, "frame": a frame it changed or None, "obj": its object}``.
        """
        with self._editing():
            target = self.book.next_undo_n()
            what = self.book.next_undo()
            # Where to look: the frame a click, box, mask or clear was on; an object that
            # comes back (or goes) is on every frame, so the page stays where it is.
            local = self.book.next_undo_kind() in ("add", "mask", "clear")
            if target is None:
                raise AnnotatorError("nothing to undo")
            effects = self.log_line({"op": "undo", "target": target})
            self.apply(effects)
            frames = sorted({e.frame for e in effects if e.kind == "entry"})
            assert self.predictor is not None
            for effect in effects:
                if effect.kind == "unremove":
                    self.results.reload_lane(effect.obj)
            for frame_idx in frames:
                self.write_frame(frame_idx, *frame_output(self.predictor, self.state,
                                                          frame_idx))
            for obj_id in [k for k in self.results.lanes if k not in self.book.objects]:
                self.results.drop(obj_id)
            self.changed()
            obj = next((e.obj for e in effects if e.obj >= 0), None)
            return {"undone": what, "frame": frames[0] if frames and local else None,
                    "obj": obj}

    def import_masks(self, masks: dict[int, np.ndarray], names: dict[int, str]) -> dict[str, Any]:
        """Give objects' masks on frames, as prompts to correct and track (one undoable
        action).

        Args:
            masks: frame_idx -> (H, W) uint8 index mask (0 background, 1..255 object ids of
                the file, mapped to new objects of this session).
            names: the file's object id -> name, where the file names them.

        Returns:
            ``{"imported": the new obj_ids, "frames": count}``.
        """
        ids = sorted({int(i) for m in masks.values() for i in np.unique(m) if i})
        if not ids:
            raise AnnotatorError("the masks hold no object (every pixel is background)")
        with self._editing(ops_needed=1):
            free = self.limits.max_objects - len(self.book.objects)
            if len(ids) > free or self.book.next_obj_id + len(ids) - 1 > MAX_OBJ_ID:
                raise AnnotatorError(f"the masks hold {len(ids)} objects; this session can "
                                     f"take {max(min(free, MAX_OBJ_ID - self.book.next_obj_id + 1), 0)} more")
            assert self.predictor is not None
            mapping = {i: self.book.next_obj_id + k for k, i in enumerate(ids)}
            objects = [[mapping[i], one_line(names.get(i) or f"object {mapping[i]}")[:40]]
                       for i in ids]
            entries: list[list[int]] = []
            n = self.book.count
            valid = validity(self.state)
            for frame_idx in sorted(masks):
                index = masks[frame_idx]
                for i in ids:
                    mask = index == i
                    if mask.any():
                        try:
                            self.predictor.add_new_mask(self.state, frame_idx, mapping[i], mask)
                        except PromptError as exc:  # after earlier masks went in: reload
                            raise RuntimeError(f"frame {frame_idx}: {exc}") from exc
                        save_entry(self.folder, f"{n}.{len(entries)}", self.state, frame_idx,
                                   mapping[i])
                        entries.append([frame_idx, mapping[i]])
            self.log_line({"op": "import", "objects": objects, "entries": entries,
                           "valid": valid})
            for frame_idx in sorted(masks):
                self.write_frame(frame_idx, *frame_output(self.predictor, self.state,
                                                          frame_idx))
            self.changed()
            return {"imported": [o for o, _ in objects], "frames": len(masks)}

    # ------------------------------------------------------------------ jobs
    def start_track(self, direction: Any, start: Any) -> Job:
        """Track on a background thread.

        Args:
            direction: "forward", "backward" or "both".
            start: a frame index, or None for the prompts (the earliest forward, the latest
                backward).
        """
        if direction not in ("forward", "backward", "both"):
            raise AnnotatorError("direction: expected forward, backward or both")
        if start is not None:
            start = self._check_frame(start)
        self._check_writable()
        with self.lock:
            self._check_writable()
            if not self.state.prompted:
                raise AnnotatorError("nothing to track: click on an object first")
            prompted = sorted(self.state.prompted)
            passes = []
            if direction in ("forward", "both"):
                s = prompted[0] if start is None else start
                passes.append((s, False, self.num_frames - s))
            if direction in ("backward", "both"):
                s = prompted[-1] if start is None else start
                if s > 0:
                    passes.append((s, True, s + 1))
            total = sum(n for _, _, n in passes)
            if self.book.count + total + 2 * len(passes) + 1 > self.limits.max_ops:
                raise AnnotatorError(f"this session reached its limit of "
                                     f"{self.limits.max_ops} operations: export it and start "
                                     "a new session")
            self.job = jobs.start(self, Job("track", total=total), jobs.run_track, passes)
            return self.job

    def cancel(self) -> Job:
        """Ask the running tracking to stop after the current frame (what is done stays)."""
        job = self.job
        if job is None or job.kind != "track" or not job.running:
            raise AnnotatorError("nothing to cancel: no tracking is running")
        job.cancel.set()
        return job

    def start_export(self) -> Job:
        """Write the zip on a background thread (a read-only session may export too)."""
        self._check_idle()
        with self.lock:
            self._check_idle()
            self.job = jobs.start(self, Job("export", total=self.num_frames), jobs.run_export)
            return self.job

    # ------------------------------------------------------------------ background encode
    def set_cursor(self, frame_idx: int) -> None:
        """The frame the user looks at: background encoding works outward from it."""
        self.cursor = min(max(int(frame_idx), 0), self.num_frames - 1)
        self.wake.set()

    def next_to_encode(self) -> int | None:
        # Frames the store can keep: beyond that, encoding would evict what is near the cursor.
        budget = int((self.limits.memory_mb + self.limits.disk_mb) / 4.1)
        for offset in range(min(self.num_frames, budget)):
            for t in (self.cursor + offset, self.cursor - offset - 1):
                if 0 <= t < self.num_frames and t not in self.encoded:
                    return t
        return None

    # ------------------------------------------------------------------ page data
    def summary(self) -> dict[str, Any]:
        """What the page needs to show the session."""
        objects = self.book.objects.copy()
        return {"id": self.sid, "name": self.meta["name"], "width": self.width,
                "height": self.height, "num_frames": self.num_frames, "fps": self.meta["fps"],
                "created": self.meta["created"], "read_only": self.read_only,
                "objects": [{"id": k, "name": v,
                             "color": "#{:02x}{:02x}{:02x}".format(*object_color(k))}
                            for k, v in sorted(objects.items())]}

    def frame_info(self, frame_idx: Any) -> dict[str, Any]:
        """The prompts and object statuses on one frame."""
        frame_idx = self._check_frame(frame_idx)
        prompts = [{"obj": obj, **p.to_json()} for obj, p in self.book.prompts_on(frame_idx)]
        lanes = self.results.lanes.copy()
        return {"frame": frame_idx, "version": int(self.results.frame_version[frame_idx]),
                "prompts": prompts,
                "status": {str(k): chr(lane[frame_idx]) for k, lane in lanes.items()
                           if k in self.book.objects}}

    def poll(self, since: int) -> dict[str, Any]:
        """Changes since the page's ``version``: job progress, changed frames and lanes."""
        job = self.job
        version = self.results.version
        data: dict[str, Any] = {
            "version": version, "job": job.to_json() if job else None,
            "encoded": len(self.encoded), "num_frames": self.num_frames,
            "read_only": self.read_only, "notice": self.notice,
            "undo": self.book.next_undo(),
            "export": None if self.export_version is None else {
                "url": f"/api/sessions/{self.sid}/export.zip",
                "stale": self.export_version != version}}
        if since != version:
            data["changed"] = np.flatnonzero(self.results.frame_version > since).tolist()[-200:]
            lanes = self.results.lanes.copy()
            objects = self.book.objects.copy()
            blank = "." * self.num_frames
            data["lanes"] = {str(k): lanes[k].decode() if k in lanes else blank
                             for k in sorted(objects)}
            data["objects"] = self.summary()["objects"]
            # Edits change the prompts the rule reads: wait for one briefly, never for a pass
            # (which holds the lock throughout and changes only what is read atomically).
            locked = not (job and job.running) and self.lock.acquire(timeout=0.05)
            try:
                flags = self.stale_flags()
                union = np.zeros(self.num_frames, bool)
                for per_object in flags.values():
                    union |= per_object
                self._stale = (ranges(union),
                               {str(k): ranges(v) for k, v in sorted(flags.items()) if v.any()})
            except RuntimeError:  # a table changed size under us: keep the last answer
                pass
            finally:
                if locked:
                    self.lock.release()
            data["stale"], data["stale_lanes"] = self._stale
        return data

    def overlay_png(self, frame_idx: int) -> bytes:
        return self.results.overlay_png(frame_idx, set(self.book.objects))

    def index_mask(self, frame_idx: int) -> np.ndarray | None:
        return self.results.index_mask(frame_idx, set(self.book.objects))

    def frame_jpeg(self, frame_idx: int) -> bytes:
        """The frame as a JPEG (its own reader: the predictor's is not shared)."""
        with self._frame_lock:
            cached = self._jpegs.get(frame_idx)
            if cached is not None:
                self._jpegs.move_to_end(frame_idx)
                return cached
            if self._page_reader is None:
                self._page_reader = FrameReader(open_source(self.video_path))
            frame = self._page_reader[frame_idx]
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            self._jpegs[frame_idx] = jpeg.tobytes()
            while len(self._jpegs) > 32:
                self._jpegs.popitem(last=False)
            return self._jpegs[frame_idx]
