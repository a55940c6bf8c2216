"""A session's operation log (``ops.jsonl``) and what it adds up to (:class:`Book`).

The log is append-only, one JSON object per line, each with its sequence number ``n``:

- user actions, each undoable: ``object`` (a new object and its name), ``add`` (clicks and/or
  a box on a frame), ``mask`` (a mask given on a frame), ``clear`` (an object's prompts on a
  frame), ``remove`` (an object everywhere), ``rename``, ``import`` (masks on many frames);
- ``undo`` (takes back the latest action not yet undone);
- ``track`` (a pass starts), ``frame`` (one frame of it is written) and ``end`` (the pass
  finished or was cancelled; a ``track`` without its ``end`` was interrupted by a restart).

A prompt's decoded result is kept in ``entries/<version>.npz`` (``entries.py``); its version
is the ``n`` of the line that made it (``n.k`` for the k-th entry of an import). :class:`Book`
replays the lines without a model: the objects and their names, which entry holds on each
(frame, object), what each pending undo would put back, and what every line means for the
predictor (:class:`Effect`). Live requests and a restore after a restart go through the same
:meth:`Book.apply`, so they agree by construction.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Key = tuple[int, int]  # (frame_idx, obj_id)
ACTIONS = ("object", "add", "mask", "clear", "remove", "rename", "import")


@dataclass(frozen=True)
class Effect:
    """What one line asks of the predictor's state.

    ``kind``: ``entry`` (``version`` holds on (frame, obj); None: no prompt there),
    ``remove`` (the object goes), ``unremove`` (it comes back with its tracker id ``tid`` at
    position ``pos`` of the predictor's objects), ``valid`` (the kept states are valid as far
    as they were before the undone action: ``valid_end`` per direction, forward first).
    """

    kind: str
    obj: int = -1
    frame: int = -1
    version: str | None = None
    tid: int | None = None
    pos: int | None = None
    valid_end: tuple[int, int] | None = None


@dataclass(frozen=True)
class Prompts:
    """What the page shows of an object's prompts on a frame (video pixels)."""

    points: tuple[tuple[float, float, int], ...] = ()
    box: tuple[float, float, float, float] | None = None
    mask: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"points": [list(p) for p in self.points],
                "box": list(self.box) if self.box is not None else None, "mask": self.mask}


@dataclass
class _Undo:
    """How to take back the action of line ``n``."""

    n: int
    kind: str
    what: str
    entries: dict[Key, str | None] = field(default_factory=dict)  # key -> version before
    obj: int | None = None
    name: str | None = None  # the name before (rename), or of the removed object
    tid: int | None = None
    pos: int | None = None
    created: tuple[int, ...] = ()  # objects the action created
    # How far the kept states were valid before the action; they are again after its undo
    # when no pass ran in between (the undo puts back exactly what they were tracked with).
    valid_end: tuple[int, int] | None = None
    tracked_after: bool = False


class Book:
    """The state a log adds up to, kept line by line (no model involved).

    Attributes:
        objects: obj_id -> name, of the live objects.
        next_obj_id: the next new object's id (ids are never reused).
        current: (frame, obj) -> the version of the entry that holds there.
        prompts: version -> what the page shows of it.
        count: lines applied.
    """

    def __init__(self, undo_depth: int = 200) -> None:
        self.objects: dict[int, str] = {}
        self.next_obj_id = 1
        self.current: dict[Key, str] = {}
        self.prompts: dict[str, Prompts] = {}
        self.count = 0
        self.undo_depth = undo_depth
        self._undo: list[_Undo] = []

    # ------------------------------------------------------------------ reading
    def name(self, obj_id: int) -> str:
        return self.objects.get(obj_id, f"object {obj_id}")

    def prompts_on(self, frame_idx: int) -> list[tuple[int, Prompts]]:
        """(obj_id, prompts) of every object prompted on a frame, by id."""
        return sorted((obj, self.prompts[v]) for (t, obj), v in self.current.items()
                      if t == frame_idx)

    def next_undo(self) -> str | None:
        """What ``undo`` would take back, in words (None: nothing)."""
        return self._undo[-1].what if self._undo else None

    def next_undo_n(self) -> int | None:
        return self._undo[-1].n if self._undo else None

    def next_undo_kind(self) -> str | None:
        """The kind of line (``add``, ``remove``...) the next undo takes back."""
        return self._undo[-1].kind if self._undo else None

    def kept_versions(self) -> set[str]:
        """Entry versions still needed: those in force and those an undo may bring back."""
        kept = set(self.current.values())
        for record in self._undo:
            kept |= {v for v in record.entries.values() if v is not None}
        return kept

    # ------------------------------------------------------------------ applying
    def apply(self, op: dict[str, Any]) -> list[Effect]:
        """Account for one line; returns what it asks of the predictor.

        Raises:
            ValueError: a line that does not fit the book (a damaged or foreign log).
        """
        kind = op["op"]
        n = int(op.get("n", self.count))
        effects: list[Effect] = []
        if kind == "object":
            obj = int(op["obj"])
            self.objects[obj] = str(op["name"])
            self.next_obj_id = max(self.next_obj_id, obj + 1)
            self._push(_Undo(n, kind, f"new object {op['name']}", obj=obj, created=(obj,)))
        elif kind in ("add", "mask"):
            key = (int(op["frame"]), int(op["obj"]))
            before = self.current.get(key)
            version = str(n)
            self.prompts[version] = self._added(op, self.prompts[before] if before else None)
            self.current[key] = version
            effects.append(Effect("entry", key[1], key[0], version))
            word = "mask" if kind == "mask" else ("box" if op.get("box") else "click")
            self._push(_Undo(n, kind, f"{word} on frame {key[0]} ({self.name(key[1])})",
                             entries={key: before}), op)
        elif kind == "clear":
            key = (int(op["frame"]), int(op["obj"]))
            before = self.current.pop(key, None)
            effects.append(Effect("entry", key[1], key[0], None))
            self._push(_Undo(n, kind, f"clearing frame {key[0]} ({self.name(key[1])})",
                             entries={key: before}), op)
        elif kind == "remove":
            obj = int(op["obj"])
            name = self.objects.pop(obj, None)
            held: dict[Key, str | None] = {k: v for k, v in self.current.items() if k[1] == obj}
            for key in held:
                del self.current[key]
            effects.append(Effect("remove", obj))
            self._push(_Undo(n, kind, f"removing {name or f'object {obj}'}", entries=held,
                             obj=obj, name=name, tid=op.get("tid"), pos=op.get("pos")), op)
        elif kind == "rename":
            obj = int(op["obj"])
            before = self.objects.get(obj)
            if obj in self.objects:
                self.objects[obj] = str(op["name"])
            self._push(_Undo(n, kind, f"renaming {before} to {op['name']}", obj=obj,
                             name=before))
        elif kind == "import":
            before_map: dict[Key, str | None] = {}
            created = []
            for obj, name in op.get("objects", []):
                if int(obj) not in self.objects:
                    created.append(int(obj))
                self.objects[int(obj)] = str(name)
                self.next_obj_id = max(self.next_obj_id, int(obj) + 1)
            for k, (frame, obj) in enumerate(op["entries"]):
                key = (int(frame), int(obj))
                before_map.setdefault(key, self.current.get(key))
                version = f"{n}.{k}"
                self.prompts[version] = Prompts(mask=True)
                self.current[key] = version
                effects.append(Effect("entry", key[1], key[0], version))
            frames = len({k[0] for k in before_map})
            self._push(_Undo(n, kind, f"importing masks on {frames} frame(s)",
                             entries=before_map, created=tuple(created)), op)
        elif kind == "undo":
            effects = self._take_back(int(op["target"]))
        elif kind == "track":
            for record in self._undo:
                record.tracked_after = True
        elif kind not in ("frame", "end"):
            raise ValueError(f"unknown log line {kind!r}")
        self.count += 1
        return effects

    @staticmethod
    def _added(op: dict[str, Any], old: Prompts | None) -> Prompts:
        """What the page shows after an ``add`` or ``mask`` line: clicks given without
        clearing join the frame's earlier clicks (as the predictor joins them)."""
        if op["op"] == "mask":
            return Prompts(mask=True)
        new = tuple((float(x), float(y), int(label)) for (x, y), label in
                    zip(op.get("points") or [], op.get("labels") or [], strict=True))
        box = tuple(float(v) for v in op["box"]) if op.get("box") is not None else None
        if op.get("clear_old", True) or old is None or old.mask:
            return Prompts(points=new, box=box)  # type: ignore[arg-type]
        return Prompts(points=old.points + new, box=box or old.box)  # type: ignore[arg-type]

    def _push(self, record: _Undo, op: dict[str, Any] | None = None) -> None:
        if op is not None and op.get("valid") is not None:
            record.valid_end = (int(op["valid"][0]), int(op["valid"][1]))
        self._undo.append(record)
        if len(self._undo) > self.undo_depth:
            del self._undo[0]

    def _take_back(self, target: int) -> list[Effect]:
        if not self._undo or self._undo[-1].n != target:
            raise ValueError(f"undo of line {target}: not the latest action")
        record = self._undo.pop()
        effects: list[Effect] = []
        if record.kind == "remove":
            assert record.obj is not None
            if record.name is not None:
                self.objects[record.obj] = record.name
            effects.append(Effect("unremove", record.obj, tid=record.tid, pos=record.pos))
        elif record.kind == "rename":
            assert record.obj is not None
            if record.name is not None and record.obj in self.objects:
                self.objects[record.obj] = record.name
        for key, version in record.entries.items():
            if version is None:
                self.current.pop(key, None)
            else:
                self.current[key] = version
            effects.append(Effect("entry", key[1], key[0], version))
        if record.valid_end is not None and not record.tracked_after:
            effects.append(Effect("valid", valid_end=record.valid_end))
        for obj in record.created:
            self.objects.pop(obj, None)
            if any(k[1] == obj for k in self.current):
                raise ValueError(f"undo of line {target}: object {obj} still has prompts")
        return effects


class OpLog:
    """The append-only file of a session's operations.

    A kill while a line is written leaves a torn last line: :meth:`read` skips it and the
    next :meth:`append` first cuts it off, so it never runs into the next line.

    Args:
        path: ``<session>/ops.jsonl``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.damaged = 0  # lines skipped by the last read (not counting a torn last line)
        self._checked_tail = False

    def read(self) -> list[dict[str, Any]]:
        """Every whole line, in order (damaged ones skipped and counted)."""
        if not self.path.is_file():
            return []
        ops: list[dict[str, Any]] = []
        self.damaged = 0
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop() if lines else b""  # text after the last newline: a torn write
        if torn.strip():
            logger.warning("%s: ignoring a torn last line (%d bytes)", self.path.parent.name[:6],
                           len(torn))
        for line in lines:
            try:
                op = json.loads(line)
                if not isinstance(op, dict) or "op" not in op:
                    raise ValueError
            except ValueError:
                self.damaged += 1
                continue
            ops.append(op)
        return ops

    def append(self, op: dict[str, Any]) -> None:
        """Write one line (one ``write`` call, flushed and synced)."""
        if not self._checked_tail:
            self._cut_torn_tail()
            self._checked_tail = True
        with self.path.open("ab") as handle:
            handle.write(json.dumps(op, separators=(",", ":")).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _cut_torn_tail(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(end)
