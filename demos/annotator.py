"""The web annotator's sessions: one video each, driven through ``vos.video_predictor``.

A session is a folder ``<workdir>/sessions/<id>/`` and, while it is open, a
:class:`~vos.video_predictor.VideoPredictor` with its inference state. Nothing here steps
through frames: prompts go to ``add_new_points_or_box`` / ``clear_all_prompts_in_frame`` /
``remove_object``, tracking iterates ``propagate_in_video`` (whose frame loop is
``VideoTracker.track``), and this module only writes what they return.

What the folder holds, and why it survives a kill:

- ``meta.json``: the video (an upload inside the folder, or a ``--samples`` path), its size,
  the owner's hashed token.
- ``ops.jsonl``: an append-only log of every call made on the predictor (add a prompt, clear,
  remove, one line per tracked frame after a ``track`` line) and of object names. It is the
  session: after a restart the log is replayed through a fresh predictor. Replay is exact
  because the embeddings live in the session's own store folder (``embeddings/``, keyed by
  model and frame content), so the model is never run on a frame again, and the tracker is
  deterministic given its inputs.
- ``results/<t>.png`` (palette index mask) and ``results/<t>.json`` (each object's status on
  the frame: prompted, tracked or lost), written before the frame's log line, so the page
  shows every completed frame at once, before (and while) the log is replayed.

Bounds, per session: embeddings ``memory_mb`` in memory and ``disk_mb`` on disk (LRU), the
tracker's per-frame states ``state_memory_mb`` / ``state_disk_mb``, one upload of at most the
server's upload cap, ``max_frames`` frames, ``max_objects`` objects, ``MAX_POINTS`` clicks per
object and frame, ``max_ops`` logged operations. At most ``max_open`` sessions hold a predictor
at once (the least recently used idle one is closed; it reopens by replay). Cleanup rule:
when the server starts and whenever a session is created, sessions unchanged for
``ttl_hours`` are deleted, then the least recently changed idle ones beyond ``max_sessions``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from vos.config import RunConfig
from vos.io.atomic import write_text_atomic
from vos.io.davis_png import read_palette_png, write_palette_png
from vos.io.sinks import ResultSink, object_color
from vos.io.sources import IMAGE_SUFFIXES, SourceError, open_source
from vos.pipeline import frame_names_for
from vos.types import MAX_POINTS, FrameResult
from vos.video_predictor import BACKWARD, FORWARD, FrameReader, VideoPredictor

logger = logging.getLogger("demos.annotator")

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22,64}")
# Status letters of the timeline lanes (one per frame and object).
PROMPTED, TRACKED, LOST, NONE = "P", "T", "L", "."
MAX_OBJ_ID = 255  # palette PNGs hold ids 1..255; ids are never reused


class AnnotatorError(ValueError):
    """A user mistake, answered with one line (HTTP 400)."""


class BusyError(RuntimeError):
    """The session is tracking, exporting or restoring (HTTP 409)."""


class ForbiddenError(PermissionError):
    """The session belongs to another browser (HTTP 403)."""


class NotFoundError(LookupError):
    """No such session (HTTP 404)."""


@dataclass(frozen=True)
class Limits:
    """What one session may hold (see the module docstring for the cleanup rule).

    Attributes:
        max_frames: frames of a video at most (longer videos are refused).
        max_objects: objects at most, over the session's life (ids are never reused).
        max_ops: logged operations at most (clicks, clears, tracked frames...).
        max_sessions: sessions kept on disk; beyond, the least recently changed idle ones go.
        max_open: sessions holding a predictor at once.
        ttl_hours: sessions unchanged for longer are deleted.
        memory_mb: embeddings kept in memory per session (4 MiB a frame).
        disk_mb: embeddings kept in the session's folder.
        state_memory_mb: tracker states kept in memory per session.
        state_disk_mb: tracker states kept on disk per session.
        background_encode: encode frames near the cursor while the user is idle.
    """

    max_frames: int = 2000
    max_objects: int = 50
    max_ops: int = 50_000
    max_sessions: int = 20
    max_open: int = 3
    ttl_hours: float = 72.0
    memory_mb: float = 256.0
    disk_mb: float = 2048.0
    state_memory_mb: float = 64.0
    state_disk_mb: float = 1024.0
    background_encode: bool = True


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

    def to_json(self) -> dict[str, Any]:
        """Progress, frames per second and the outcome."""
        end = self.finished if self.finished is not None else time.monotonic()
        seconds = max(end - self.started, 1e-9)
        return {"kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                "frame": self.frame, "error": self.error, "seconds": round(seconds, 3),
                "fps": round(self.done / seconds, 2) if self.done else 0.0,
                "result": self.result}


def _finite_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnnotatorError(f"{what}: expected a number, got {value!r}"[:200])
    number = float(value)
    if not np.isfinite(number):
        raise AnnotatorError(f"{what}: expected a finite number (got NaN or infinity)")
    return number


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnnotatorError(f"{what}: expected an integer, got {value!r}"[:200])
    return value


def save_frames(files: Sequence[tuple[str, Callable[[Path], Any]]], folder: Path,
                max_frames: int) -> Path:
    """Write an uploaded frame folder's images to ``folder/frames`` (other files skipped).

    Args:
        files: (the browser's file name, ``save(path)``) per file.
        folder: the session's folder.
        max_frames: images accepted at most.

    Returns:
        The frame folder.

    Raises:
        AnnotatorError: no images, too many, or two with one name.
    """
    frames = folder / "frames"
    frames.mkdir()
    names: set[str] = set()
    for filename, save in files:
        # Only the base name, and only ordinary characters: never a path of the user's.
        name = Path(filename.replace("\\", "/")).name
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES or name.startswith("."):
            continue
        if not re.fullmatch(r"[\w.+-]{1,128}", name):
            raise AnnotatorError(f"frame file name {name[:60]!r}: use letters, digits, '.', "
                                 "'_', '-' or '+'")
        if name in names:
            raise AnnotatorError(f"two frames named {name}")
        names.add(name)
        if len(names) > max_frames:
            raise AnnotatorError(f"the folder has more than {max_frames} frames; this server "
                                 f"takes at most {max_frames}")
        save(frames / name)
    if not names:
        raise AnnotatorError("the folder has no image files (expected one of "
                             f"{', '.join(IMAGE_SUFFIXES)})")
    return frames


def owner_hash(token: str) -> str:
    """What a session keeps of its owner's cookie (the cookie itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Session:
    """One video being annotated: its folder, log, results and (when open) predictor.

    Args:
        folder: ``<workdir>/sessions/<id>``, holding ``meta.json``.
        meta: the contents of ``meta.json``.
        limits: the server's per-session limits.
    """

    def __init__(self, folder: Path, meta: dict[str, Any], limits: Limits) -> None:
        self.folder = folder
        self.sid = folder.name
        self.meta = meta
        self.limits = limits
        self.num_frames = int(meta["num_frames"])
        self.width, self.height = int(meta["width"]), int(meta["height"])
        self.lock = threading.RLock()  # the predictor's state, the log, the results
        self.encode_lock = threading.Lock()  # background encoding versus a pass
        self.job: Job | None = None
        self.predictor: VideoPredictor | None = None
        self.state: Any = None
        self.objects: dict[int, str] = {}
        self.next_obj_id = 1
        # (frame_idx, obj_id) -> {"points": [[x, y, label], ...], "box": [x0, y0, x1, y1]}
        self.prompts: dict[tuple[int, int], dict[str, Any]] = {}
        self.lanes: dict[int, bytearray] = {}
        self.version = 0
        self.frame_version = np.zeros(self.num_frames, np.int64)
        self.num_ops = 0
        self.cursor = 0
        self.encoded: set[int] = set()
        self.last_used = time.monotonic()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._frame_lock = threading.Lock()
        self._page_reader: FrameReader | None = None
        self._jpegs: OrderedDict[int, bytes] = OrderedDict()
        self._read_log_state()
        self._read_results()

    # ------------------------------------------------------------------ files
    @property
    def video_path(self) -> Path:
        path = Path(self.meta["video"])
        return path if path.is_absolute() else self.folder / path

    @property
    def log_path(self) -> Path:
        return self.folder / "ops.jsonl"

    @property
    def results_dir(self) -> Path:
        return self.folder / "results"

    def modified(self) -> float:
        """When the session last changed (its log, else its creation)."""
        for path in (self.log_path, self.folder / "meta.json"):
            try:
                return path.stat().st_mtime
            except OSError:
                continue
        return 0.0

    def read_ops(self) -> list[dict[str, Any]]:
        """The log's operations (a torn last line, from a kill mid-write, is skipped)."""
        if not self.log_path.is_file():
            return []
        ops = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("session %s: skipping a damaged log line", self.sid[:6])
        return ops

    def _append(self, op: dict[str, Any]) -> None:
        # One write of one line in append mode: a kill leaves whole lines (or a torn last
        # one, which read_ops skips).
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(op, separators=(",", ":")) + "\n")
        self.num_ops += 1

    def _read_log_state(self) -> None:
        """Objects and prompts as the log leaves them (before any replay through a model)."""
        for op in self.read_ops():
            self._book(op)
            self.num_ops += 1

    def _read_results(self) -> None:
        for path in self.results_dir.glob("*.json"):
            try:
                t = int(path.stem)
                status = json.loads(path.read_text())["status"]
            except (ValueError, KeyError, OSError):
                continue
            if 0 <= t < self.num_frames:
                for key, letter in status.items():
                    if int(key) in self.objects:
                        self._lane(int(key))[t] = ord(letter)

    def _lane(self, obj_id: int) -> bytearray:
        lane = self.lanes.get(obj_id)
        if lane is None:
            lane = self.lanes[obj_id] = bytearray(NONE.encode() * self.num_frames)
        return lane

    # ------------------------------------------------------------------ bookkeeping
    def _book(self, op: dict[str, Any]) -> None:
        """Objects and prompts after ``op`` (shared by live calls, replay and loading)."""
        kind = op["op"]
        if kind == "object":
            self.objects[op["obj"]] = op["name"]
            self.next_obj_id = max(self.next_obj_id, op["obj"] + 1)
        elif kind == "add":
            key = (op["frame"], op["obj"])
            old = self.prompts.get(key) if not op["clear_old"] else None
            points: list[list[float]] = list(old["points"]) if old else []
            points += [[x, y, label] for (x, y), label in
                       zip(op.get("points") or [], op.get("labels") or [], strict=True)]
            box = op["box"] if op.get("box") is not None else (old["box"] if old else None)
            self.prompts[key] = {"points": points, "box": box}
        elif kind == "clear":
            self.prompts.pop((op["frame"], op["obj"]), None)
        elif kind == "remove":
            self.objects.pop(op["obj"], None)
            self.lanes.pop(op["obj"], None)
            for key in [k for k in self.prompts if k[1] == op["obj"]]:
                del self.prompts[key]
        elif kind == "rename":
            if op["obj"] in self.objects:
                self.objects[op["obj"]] = op["name"]

    # ------------------------------------------------------------------ predictor
    @property
    def is_open(self) -> bool:
        return self.predictor is not None

    def open(self, segmenter: Any, config: RunConfig, checkpoint_sha256: str | None) -> None:
        """Build this session's predictor and start replaying its log (a restore job)."""
        store = dataclasses.replace(
            config.store, cache_dir=str(self.folder / "embeddings"),
            memory_mb=self.limits.memory_mb, disk_mb=self.limits.disk_mb,
            state_memory_mb=self.limits.state_memory_mb,
            state_disk_mb=self.limits.state_disk_mb)
        predictor = VideoPredictor(segmenter, dataclasses.replace(config, store=store),
                                   checkpoint_sha256=checkpoint_sha256)
        state = predictor.init_state(self.video_path)
        ops = self.read_ops()
        with self.lock:
            self.predictor, self.state = predictor, state
            self._closed.clear()
            if ops:
                self.job = Job("restore", total=len(ops))
                threading.Thread(target=self._replay, args=(ops, self.job), daemon=True,
                                 name=f"restore-{self.sid[:6]}").start()
        if self.limits.background_encode:
            threading.Thread(target=self._encode_loop, daemon=True,
                             name=f"encode-{self.sid[:6]}").start()

    def close(self) -> None:
        """Release the predictor (the folder stays; opening again replays the log)."""
        self._closed.set()
        self._wake.set()
        with self.lock:
            if self.predictor is not None:
                self.predictor.close_state(self.state)
                self.predictor.store.close()
            self.predictor = self.state = None
        with self._frame_lock:
            if self._page_reader is not None:
                self._page_reader.close()
                self._page_reader = None

    def _replay(self, ops: list[dict[str, Any]], job: Job) -> None:
        """Run the log through the fresh predictor (holding the lock: requests wait)."""
        try:
            with self.lock, self.encode_lock:
                # The objects (and the lanes the page shows) already are the log's final
                # ones; the prompts are rebuilt call by call, as clicks add up.
                self.prompts.clear()
                index = 0
                while index < len(ops):
                    op = ops[index]
                    if op["op"] == "track":
                        count = 0
                        while index + 1 + count < len(ops) and ops[index + 1 + count]["op"] == "frame":
                            count += 1
                        if count:
                            self._run_track(op["start"], op["reverse"], count - 1, job)
                        index += 1 + count
                        job.done = index
                        continue
                    if op["op"] != "frame":
                        self._apply(op)
                    index += 1
                    job.done = index
            job.state = "done"
        except Exception as exc:  # shown in the page; the traceback goes to the log
            logger.exception("session %s: restore failed", self.sid[:6])
            job.state, job.error = "error", " ".join(f"restore failed: {exc}".split())
        finally:
            job.finished = time.monotonic()

    def _apply(self, op: dict[str, Any]) -> None:
        """Make one logged call on the predictor and write the frame it returns."""
        predictor, state = self.predictor, self.state
        assert predictor is not None
        kind = op["op"]
        out = None
        if kind == "add":
            points = op.get("points") or None
            out = predictor.add_new_points_or_box(
                state, op["frame"], op["obj"], points=points,
                labels=op.get("labels") if points else None, clear_old_points=op["clear_old"],
                box=op.get("box"))
        elif kind == "clear":
            if op["obj"] in state.obj_ids:
                out = predictor.clear_all_prompts_in_frame(state, op["frame"], op["obj"])
        elif kind == "remove":
            predictor.remove_object(state, op["obj"], need_output=False)
        self._book(op)
        if out is not None:
            self._write_frame(*out)

    def _run_track(self, start: int, reverse: bool, max_frames: int | None,
                   job: Job) -> bool:
        """One pass; returns False when cancelled. Each frame is written, then logged."""
        assert self.predictor is not None
        live = job.kind != "restore"
        if live:
            self._append({"op": "track", "start": start, "reverse": reverse})
        frames = cast(Generator[tuple[int, list[Any], Any], None, None],
                      self.predictor.propagate_in_video(self.state, start, max_frames, reverse))
        try:
            for frame_idx, obj_ids, logits in frames:
                self._write_frame(frame_idx, obj_ids, logits)
                self.encoded.add(frame_idx)
                if live:
                    self._append({"op": "frame", "t": frame_idx})
                    job.done += 1
                job.frame = frame_idx
                if job.cancel.is_set():
                    return False
        finally:
            frames.close()
        return True

    # ------------------------------------------------------------------ results
    def _write_frame(self, frame_idx: int, obj_ids: list[Any], logits: Any) -> None:
        """Store one frame's masks (palette PNG) and statuses (JSON); update the lanes."""
        masks = (logits[:, 0] > 0).cpu().numpy()
        index = np.zeros((self.height, self.width), np.uint8)
        status: dict[str, str] = {}
        scores: dict[str, float] = {}
        state = self.state
        prompted = state.prompted.get(frame_idx, {})
        # Lower ids win overlapping pixels, as vos.run's PNGs do.
        for row in sorted(range(len(obj_ids)), key=lambda i: -obj_ids[i]):
            obj_id, mask = int(obj_ids[row]), masks[row]
            if mask.any():
                index[mask] = obj_id
                probs = 1.0 / (1.0 + np.exp(-logits[row, 0].cpu().numpy()[mask]))
                scores[str(obj_id)] = round(float(probs.mean()), 4)
            letter = self._status(obj_id, frame_idx, bool(mask.any()), obj_id in prompted)
            status[str(obj_id)] = letter
        write_palette_png(self.results_dir / f"{frame_idx}.png", index)
        write_text_atomic(self.results_dir / f"{frame_idx}.json",
                          json.dumps({"status": status, "score": scores}))
        for obj_id in self.lanes:
            self.lanes[obj_id][frame_idx] = ord(NONE)
        for key, letter in status.items():
            self._lane(int(key))[frame_idx] = ord(letter)
        self.version += 1
        self.frame_version[frame_idx] = self.version

    def _status(self, obj_id: int, frame_idx: int, visible: bool, prompted: bool) -> str:
        if prompted:
            return PROMPTED
        if visible:
            return TRACKED
        first = self.state.first_prompt(obj_id)
        if first is None:
            return NONE
        directions = (FORWARD, BACKWARD) if frame_idx >= first else (BACKWARD,)
        passed = any(frame_idx in self.state.passes[d].frames for d in directions)
        return LOST if passed else NONE

    def index_mask(self, frame_idx: int) -> np.ndarray | None:
        """(H, W) uint8 ids of the live objects on a frame, or None before any result."""
        path = self.results_dir / f"{frame_idx}.png"
        if not path.is_file():
            return None
        index = read_palette_png(path)
        stale = [i for i in np.unique(index) if i and int(i) not in self.objects]
        if stale:
            index = np.where(np.isin(index, stale), 0, index)
        return index.astype(np.uint8)

    def overlay_png(self, frame_idx: int) -> bytes:
        """The frame's masks as an RGBA PNG (transparent background) for the page."""
        index = self.index_mask(frame_idx)
        rgba = np.zeros((self.height, self.width, 4), np.uint8)
        if index is not None:
            for obj_id in np.unique(index):
                if obj_id:
                    r, g, b = object_color(int(obj_id))
                    rgba[index == obj_id] = (b, g, r, 150)  # cv2 writes BGRA
        ok, png = cv2.imencode(".png", rgba)
        assert ok
        return png.tobytes()

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
            while len(self._jpegs) > 64:
                self._jpegs.popitem(last=False)
            return self._jpegs[frame_idx]

    # ------------------------------------------------------------------ requests
    def _check_idle(self) -> None:
        job = self.job
        if job is not None and job.running:
            what = {"track": "tracking is running: cancel it or wait for it to finish",
                    "export": "an export is running: wait for it to finish",
                    "restore": "the session is being restored: try again in a moment"}
            raise BusyError(what[job.kind])

    def _check_frame(self, frame_idx: Any) -> int:
        frame_idx = _int(frame_idx, "frame")
        if not 0 <= frame_idx < self.num_frames:
            raise AnnotatorError(f"frame {frame_idx}: out of range; the video has "
                                 f"{self.num_frames} frames (0..{self.num_frames - 1})")
        return frame_idx

    def _check_obj(self, obj_id: Any) -> int:
        obj_id = _int(obj_id, "object")
        if obj_id not in self.objects:
            raise AnnotatorError(f"object {obj_id}: no such object; add one first")
        return obj_id

    def _check_ops(self) -> None:
        if self.num_ops >= self.limits.max_ops:
            raise AnnotatorError(f"this session reached its limit of {self.limits.max_ops} "
                                 "operations: export it and start a new session")

    def _run(self, op: dict[str, Any]) -> None:
        """Apply ``op`` live and log it (only once it succeeded)."""
        self._check_idle()  # at once, rather than after waiting for the job's lock
        with self.lock:
            self._check_idle()
            self._check_ops()
            try:
                self._apply(op)
            except (ValueError, RuntimeError) as exc:
                raise AnnotatorError(" ".join(str(exc).split())) from None
            self._append(op)
        self.last_used = time.monotonic()

    def add_object(self, name: str | None = None) -> int:
        """A new object id (not yet on any frame)."""
        self._check_idle()
        with self.lock:
            self._check_idle()
            self._check_ops()
            if len(self.objects) >= self.limits.max_objects:
                raise AnnotatorError(f"at most {self.limits.max_objects} objects per session")
            if self.next_obj_id > MAX_OBJ_ID:
                raise AnnotatorError(f"this session used all {MAX_OBJ_ID} object ids")
            obj_id = self.next_obj_id
            text = " ".join(str(name or f"object {obj_id}").split())[:40] or f"object {obj_id}"
            op = {"op": "object", "obj": obj_id, "name": text}
            self._book(op)
            self._append(op)
            return obj_id

    def prompt(self, frame_idx: Any, obj_id: Any, points: Any, box: Any) -> None:
        """Clicks (added to the object's clicks on the frame) and/or a box (which replaces
        them); the frame's masks are decoded and written before this returns.

        Raises:
            AnnotatorError: a bad frame or object, clicks outside the frame, NaN, too many
                clicks, a degenerate box.
        """
        frame_idx, obj_id = self._check_frame(frame_idx), self._check_obj(obj_id)
        xy, labels = [], []
        if points is not None and not isinstance(points, list):
            raise AnnotatorError("points: expected a list of [x, y, label]")
        if points is not None and len(points) > MAX_POINTS:  # before looking at each one
            raise AnnotatorError(f"at most {MAX_POINTS} clicks per object on a frame: undo "
                                 "or clear some first")
        for point in points or []:
            if not isinstance(point, list) or len(point) != 3:
                raise AnnotatorError("points: expected a list of [x, y, label]")
            x = _finite_number(point[0], "click x")
            y = _finite_number(point[1], "click y")
            label = _int(point[2], "click label")
            if label not in (0, 1):
                raise AnnotatorError("click label: 1 adds to the object, 0 removes")
            if not (0 <= x <= self.width and 0 <= y <= self.height):
                raise AnnotatorError(f"click ({x:g}, {y:g}) lies outside the "
                                     f"{self.width}x{self.height} frame")
            xy.append([x, y])
            labels.append(label)
        box_xyxy = None
        if box is not None:
            if not isinstance(box, list) or len(box) != 4:
                raise AnnotatorError("box: expected [x0, y0, x1, y1]")
            x0, y0, x1, y1 = (_finite_number(v, "box") for v in box)
            x0, x1 = sorted((min(max(x0, 0.0), self.width), min(max(x1, 0.0), self.width)))
            y0, y1 = sorted((min(max(y0, 0.0), self.height), min(max(y1, 0.0), self.height)))
            if x1 - x0 < 1 or y1 - y0 < 1:
                raise AnnotatorError("empty box: drag a box with a visible width and height")
            box_xyxy = [x0, y0, x1, y1]
        if not xy and box_xyxy is None:
            raise AnnotatorError("empty prompt: click on the object or drag a box around it")
        old = self.prompts.get((frame_idx, obj_id))
        kept = 0 if box_xyxy is not None or old is None else len(old["points"])
        if kept + len(xy) > MAX_POINTS:
            raise AnnotatorError(f"at most {MAX_POINTS} clicks per object on a frame: undo "
                                 "or clear some first")
        self._run({"op": "add", "frame": frame_idx, "obj": obj_id, "points": xy,
                   "labels": labels, "box": box_xyxy, "clear_old": box_xyxy is not None})

    def undo(self, frame_idx: Any, obj_id: Any) -> None:
        """Take back the object's last click (else its box) on the frame.

        The remaining prompts are decoded together, from the object's tracked mask when it
        has one: two logged calls, clear then add, so replay does the same.
        """
        frame_idx, obj_id = self._check_frame(frame_idx), self._check_obj(obj_id)
        self._check_idle()
        with self.lock:
            self._check_idle()
            entry = self.prompts.get((frame_idx, obj_id))
            if entry is None:
                raise AnnotatorError("nothing to undo: the object has no prompt on this frame")
            points, box = list(entry["points"]), entry["box"]
            if points:
                points.pop()
            else:
                box = None
            self._run({"op": "clear", "frame": frame_idx, "obj": obj_id})
            if points or box is not None:
                try:
                    self._run(self._add_op(frame_idx, obj_id, points, box))
                except AnnotatorError as exc:
                    # E.g. only "remove" clicks left on a frame where the object is lost:
                    # put every prompt back rather than lose them.
                    self._run(self._add_op(frame_idx, obj_id, entry["points"], entry["box"]))
                    raise AnnotatorError(f"cannot undo that click: {exc}") from None

    @staticmethod
    def _add_op(frame_idx: int, obj_id: int, points: list[list[float]],
                box: list[float] | None) -> dict[str, Any]:
        return {"op": "add", "frame": frame_idx, "obj": obj_id,
                "points": [p[:2] for p in points], "labels": [int(p[2]) for p in points],
                "box": box, "clear_old": True}

    def clear(self, frame_idx: Any, obj_id: Any) -> None:
        """Remove the object's prompts on the frame."""
        frame_idx, obj_id = self._check_frame(frame_idx), self._check_obj(obj_id)
        self._run({"op": "clear", "frame": frame_idx, "obj": obj_id})

    def remove(self, obj_id: Any) -> None:
        """Remove the object from every frame."""
        self._run({"op": "remove", "obj": self._check_obj(obj_id)})
        self.version += 1

    def rename(self, obj_id: Any, name: Any) -> None:
        """Give the object a name shown in the page."""
        obj_id = self._check_obj(obj_id)
        if not isinstance(name, str) or not name.strip():
            raise AnnotatorError("name: expected a non-empty text")
        self._run({"op": "rename", "obj": obj_id, "name": " ".join(name.split())[:40]})
        self.version += 1

    def start_track(self, direction: Any, start: Any) -> Job:
        """Track on a background thread.

        Args:
            direction: "forward", "backward" or "both".
            start: a frame index, or None for the prompts (the earliest forward, the latest
                backward).

        Raises:
            BusyError: the session is already tracking, exporting or restoring.
            AnnotatorError: no prompts yet, a bad direction or start frame.
        """
        if direction not in ("forward", "backward", "both"):
            raise AnnotatorError("direction: expected forward, backward or both")
        if start is not None:
            start = self._check_frame(start)
        self._check_idle()
        with self.lock:
            self._check_idle()
            if not self.state.prompted:
                raise AnnotatorError("nothing to track: click on an object first")
            remaining = self.limits.max_ops - self.num_ops
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
            if total + 2 > remaining:
                raise AnnotatorError(f"this session reached its limit of "
                                     f"{self.limits.max_ops} operations: export it and start "
                                     "a new session")
            job = self.job = Job("track", total=total)
            threading.Thread(target=self._track, args=(job, passes), daemon=True,
                             name=f"track-{self.sid[:6]}").start()
            return job

    def _track(self, job: Job, passes: list[tuple[int, bool, int]]) -> None:
        try:
            with self.lock, self.encode_lock:
                for start, reverse, _ in passes:
                    if not self._run_track(start, reverse, None, job):
                        job.state = "cancelled"
                        break
            if job.state == "running":
                job.state = "done"
        except Exception as exc:
            logger.exception("session %s: tracking failed", self.sid[:6])
            job.state, job.error = "error", " ".join(f"tracking failed: {exc}".split())
        finally:
            job.finished = time.monotonic()
            self.last_used = time.monotonic()

    def cancel(self) -> Job:
        """Ask the running tracking to stop after the current frame (what is done stays).

        Raises:
            AnnotatorError: nothing is tracking.
        """
        job = self.job
        if job is None or job.kind != "track" or not job.running:
            raise AnnotatorError("nothing to cancel: no tracking is running")
        job.cancel.set()
        return job

    def start_export(self, name: str) -> Job:
        """Write the DAVIS-layout zip on a background thread (through ``ResultSink``).

        Raises:
            BusyError: the session is tracking, exporting or restoring.
        """
        self._check_idle()
        with self.lock:
            self._check_idle()
            job = self.job = Job("export", total=self.num_frames)
            threading.Thread(target=self._export, args=(job, name), daemon=True,
                             name=f"export-{self.sid[:6]}").start()
            return job

    def _export(self, job: Job, name: str) -> None:
        out = self.folder / "export"
        try:
            with self.lock:
                shutil.rmtree(out, ignore_errors=True)
                live = sorted(self.objects)
                with open_source(self.video_path) as source:
                    names = frame_names_for(source, self.num_frames)
                    fps = source.info.fps
                    with ResultSink(out, (self.height, self.width), fps) as sink:
                        for frame_idx, frame in enumerate(source.frames(0, self.num_frames)):
                            sink.write(names[frame_idx], frame, self._frame_result(frame_idx, live))
                            job.done = frame_idx + 1
                zip_path = self.folder / "export.zip"
                partial = zip_path.with_name("export.zip.partial")
                with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
                    for sub in ("masks", "json"):
                        for path in sorted((out / sub).glob("*")):
                            archive.write(path, f"{sub}/{path.name}")
                    archive.write(out / "overlay.mp4", "overlay.mp4")
                    archive.writestr("objects.json", json.dumps(
                        {str(k): self.objects[k] for k in live}, indent=1))
                os.replace(partial, zip_path)
                shutil.rmtree(out, ignore_errors=True)
            job.result = {"url": f"/api/sessions/{self.sid}/export.zip",
                          "name": f"{Path(name).stem}_masks.zip"}
            job.state = "done"
        except Exception as exc:
            logger.exception("session %s: export failed", self.sid[:6])
            job.state, job.error = "error", " ".join(f"export failed: {exc}".split())
        finally:
            job.finished = time.monotonic()

    def _frame_result(self, frame_idx: int, live: list[int]) -> FrameResult:
        index = self.index_mask(frame_idx)
        if index is None:
            return FrameResult.empty(frame_idx, (self.height, self.width))
        scores = {}
        lost = []
        path = self.results_dir / f"{frame_idx}.json"
        if path.is_file():
            record = json.loads(path.read_text())
            scores = record.get("score", {})
            lost = [int(k) for k, v in record["status"].items() if v == LOST and int(k) in live]
        ids = [i for i in live if (index == i).any()]
        masks = np.stack([index == i for i in ids]) if ids else np.zeros((0, *index.shape), bool)
        boxes = []
        for mask in masks:
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return FrameResult(frame_idx=frame_idx, obj_ids=np.array(ids, np.int64), masks=masks,
                           scores=np.array([scores.get(str(i), 1.0) for i in ids], np.float32),
                           boxes_xyxy=np.array(boxes, np.float32).reshape(-1, 4),
                           lost_obj_ids=np.array(lost, np.int64))

    # ------------------------------------------------------------------ background encode
    def set_cursor(self, frame_idx: int) -> None:
        """The frame the user looks at: background encoding works outward from it."""
        self.cursor = min(max(int(frame_idx), 0), self.num_frames - 1)
        self._wake.set()

    def _next_to_encode(self) -> int | None:
        # Frames the store can keep: beyond that, encoding would evict what is near the cursor.
        budget = int((self.limits.memory_mb + self.limits.disk_mb) / 4.1)
        for offset in range(min(self.num_frames, budget)):
            for t in (self.cursor + offset, self.cursor - offset - 1):
                if 0 <= t < self.num_frames and t not in self.encoded:
                    return t
        return None

    def _encode_loop(self) -> None:
        """Encode frames nearest the cursor first, paused while a pass runs."""
        reader: FrameReader | None = None
        try:
            while not self._closed.is_set():
                job = self.job
                t = self._next_to_encode()
                if t is None or (job is not None and job.running and job.kind != "export"):
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                with self.encode_lock:
                    predictor = self.predictor
                    if predictor is None or self._closed.is_set():
                        break
                    if reader is None:
                        reader = FrameReader(open_source(self.video_path))
                    predictor.segmenter.encode(reader[t])
                    self.encoded.add(t)
        except Exception:  # a closed store or source: the session is going away
            logger.debug("session %s: background encoding stopped", self.sid[:6], exc_info=True)
        finally:
            if reader is not None:
                reader.close()

    # ------------------------------------------------------------------ page data
    def summary(self) -> dict[str, Any]:
        """What the page needs to show the session."""
        return {"id": self.sid, "name": self.meta["name"], "width": self.width,
                "height": self.height, "num_frames": self.num_frames, "fps": self.meta["fps"],
                "created": self.meta["created"],
                "objects": [{"id": k, "name": v, "color": "#{:02x}{:02x}{:02x}".format(*object_color(k))}
                            for k, v in sorted(self.objects.copy().items())]}

    def frame_info(self, frame_idx: Any) -> dict[str, Any]:
        """The prompts and object statuses on one frame."""
        frame_idx = self._check_frame(frame_idx)
        prompts = [{"obj": obj, "points": e["points"], "box": e["box"]}
                   for (t, obj), e in sorted(self.prompts.copy().items()) if t == frame_idx]
        return {"frame": frame_idx, "version": int(self.frame_version[frame_idx]),
                "prompts": prompts,
                "status": {str(k): chr(lane[frame_idx]) for k, lane in self.lanes.copy().items()
                           if k in self.objects}}

    def poll(self, since: int) -> dict[str, Any]:
        """Changes since the page's ``version``: job progress, changed frames and lanes."""
        job = self.job
        data: dict[str, Any] = {"version": self.version, "job": job.to_json() if job else None,
                                "encoded": len(self.encoded), "num_frames": self.num_frames}
        if since != self.version:
            data["changed"] = np.flatnonzero(self.frame_version > since).tolist()[-200:]
            # Copies: the request threads read while a job writes (dicts change size).
            lanes = self.lanes.copy()
            data["lanes"] = {str(k): lanes[k].decode() if k in lanes else NONE * self.num_frames
                             for k in sorted(self.objects.copy())}
            data["objects"] = self.summary()["objects"]
        return data


class SessionStore:
    """Every session of the server (on disk, and the few open ones in memory).

    Args:
        root: ``<workdir>/sessions``.
        segmenter: the model shared by every session's predictor.
        config: tracker, prompt and store settings.
        checkpoint_sha256: the checkpoint's hash (part of the embeddings' keys).
        limits: per-session limits.
    """

    def __init__(self, root: Path, segmenter: Any, config: RunConfig,
                 checkpoint_sha256: str | None, limits: Limits) -> None:
        self.root = root
        self.segmenter = segmenter
        self.config = config
        self.checkpoint_sha256 = checkpoint_sha256
        self.limits = limits
        self._lock = threading.Lock()
        self.sessions: dict[str, Session] = {}
        root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and SESSION_ID.fullmatch(folder.name):
                try:
                    meta = json.loads((folder / "meta.json").read_text())
                    self.sessions[folder.name] = Session(folder, meta, limits)
                except (OSError, ValueError, KeyError):
                    logger.warning("skipping a damaged session folder %s", folder.name[:6])
        self.cleanup()

    def create(self, owner: str, name: str, video: Path | None,
               save: Callable[[Path], Path] | None = None) -> Session:
        """A new session on an upload or a sample video.

        Args:
            owner: the browser's token.
            name: what the page calls the video.
            video: a sample's video file or frame folder (None for an upload).
            save: for an upload, ``save(session_folder)`` writes it inside the session's
                folder and returns the video file or frame folder it wrote.

        Raises:
            AnnotatorError: not a readable video, too many frames.
        """
        sid = secrets.token_urlsafe(24)
        folder = self.root / sid
        folder.mkdir(parents=True)
        try:
            if save is not None:
                video = save(folder)
            assert video is not None
            try:
                with open_source(video) as source:
                    info = source.info
                    first = next(iter(source.frames(0, 1)), None)
            except SourceError:
                raise AnnotatorError(f"{name} could not be decoded as a video") from None
            if first is None or not info.num_frames:
                raise AnnotatorError(f"{name} has no readable frames")
            if info.num_frames > self.limits.max_frames:
                raise AnnotatorError(f"{name} has {info.num_frames} frames; this server takes "
                                     f"at most {self.limits.max_frames}")
            height, width = info.image_hw
            meta = {"name": name, "video": str(video.relative_to(folder)) if save else str(video),
                    "num_frames": int(info.num_frames), "width": width, "height": height,
                    "fps": float(info.fps), "owner": owner_hash(owner),
                    "created": time.strftime("%Y-%m-%d %H:%M:%S")}
            write_text_atomic(folder / "meta.json", json.dumps(meta, indent=1))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        session = Session(folder, meta, self.limits)
        with self._lock:
            self.sessions[sid] = session
        self.cleanup(keep=sid)
        return session

    def get(self, sid: str, owner: str | None) -> Session:
        """The session ``sid`` of this owner, opened (and replaying) if it was not.

        Raises:
            NotFoundError: no such session.
            ForbiddenError: another browser's session.
        """
        session = self.sessions.get(sid) if SESSION_ID.fullmatch(sid or "") else None
        if session is None:
            raise NotFoundError("no such session: it may have been cleaned up; open the "
                                "video again")
        if owner is None or not secrets.compare_digest(session.meta["owner"], owner_hash(owner)):
            raise ForbiddenError("this session belongs to another browser")
        session.last_used = time.monotonic()
        if not session.is_open:
            with self._lock:
                if not session.is_open:
                    self._make_room()
                    try:
                        session.open(self.segmenter, self.config, self.checkpoint_sha256)
                    except SourceError as exc:
                        raise AnnotatorError(f"the session's video can no longer be read "
                                             f"({' '.join(str(exc).split())})") from None
        return session

    def owned(self, owner: str | None) -> list[Session]:
        """The sessions of one browser, most recently changed first."""
        if owner is None:
            return []
        digest = owner_hash(owner)
        mine = [s for s in list(self.sessions.values()) if s.meta["owner"] == digest]
        return sorted(mine, key=lambda s: -s.modified())

    def _make_room(self) -> None:
        open_ = [s for s in self.sessions.values() if s.is_open]
        idle = sorted((s for s in open_ if not (s.job and s.job.running)),
                      key=lambda s: s.last_used)
        while len(open_) >= self.limits.max_open and idle:
            victim = idle.pop(0)
            victim.close()
            open_.remove(victim)
            logger.info("closed idle session %s (reopens by replay)", victim.sid[:6])

    def cleanup(self, keep: str | None = None) -> list[str]:
        """Delete sessions by the documented rule; returns the deleted ids."""
        now = time.time()
        with self._lock:
            idle = [s for s in self.sessions.values()
                    if s.sid != keep and not (s.job and s.job.running)]
            doomed = {s.sid for s in idle if now - s.modified() > self.limits.ttl_hours * 3600}
            rest = sorted((s for s in idle if s.sid not in doomed), key=lambda s: s.modified())
            excess = len(self.sessions) - len(doomed) - self.limits.max_sessions
            doomed |= {s.sid for s in rest[:max(excess, 0)]}
            for sid in doomed:
                session = self.sessions.pop(sid)
                session.close()
                shutil.rmtree(session.folder, ignore_errors=True)
                logger.info("deleted session %s (cleanup rule)", sid[:6])
        return sorted(doomed)

    def close(self) -> None:
        """Close every open session (their folders stay)."""
        for session in list(self.sessions.values()):
            job = session.job
            if job is not None and job.running:
                job.cancel.set()
            session.close()

