"""The annotator's hold on a ``VideoPredictor`` session: kept on disk, restored without a model.

This is the one annotator module that reads and writes the fields of
:class:`vos.video_predictor.InferenceState` directly; everything else goes through the
predictor's SAM 2 API. What it keeps, all inside the session folder:

- ``entries/<version>.npz``: one object's prompts on one frame and the result the predictor
  decoded from them (its prompted ``Track``), written before the log line that made it;
- ``states/``: the tracker's state after every tracked frame, per direction, written the
  moment the pass makes it (the predictor's state cache, made persistent);
- ``predictor.json``: the predictor's own facts (its objects and their tracker ids, how far
  each direction's kept states are valid, which frames have one) and ``tag``, the number of
  log lines they account for. Written atomically after every operation and every few
  tracked frames.

A restore reads these back (no frame is encoded or decoded) and applies the log lines after
``tag`` through :func:`apply_effects`, the same function an undo uses live.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from vos.annotate.oplog import Effect
from vos.embedding_store import SpillCache
from vos.io.atomic import atomic_open, write_text_atomic
from vos.io.resume_state import Snapshot, snapshot_bytes, snapshot_from_bytes
from vos.types import Track, TrackerState
from vos.video_predictor import (
    BACKWARD,
    FORWARD,
    InferenceState,
    ObjectPrompts,
    VideoPredictor,
)

logger = logging.getLogger(__name__)

CHECKPOINT = "predictor.json"
FORMAT = 1
Entry = tuple[ObjectPrompts, Track]
MiB = 1 << 20


class RestoreError(RuntimeError):
    """What is on disk does not add up to a session state (the message says what)."""


# ---------------------------------------------------------------------- entries
def entry_path(folder: Path, version: str) -> Path:
    return folder / "entries" / f"{version}.npz"


def save_entry(folder: Path, version: str, state: InferenceState, frame_idx: int,
               obj_id: int) -> None:
    """Write the prompts and prompted result of ``obj_id`` on ``frame_idx`` (atomically)."""
    prompts = state.prompts[frame_idx][obj_id]
    track = state.prompted[frame_idx][obj_id]
    tracker = TrackerState(frame_idx=frame_idx, tracks={track.obj_id: track},
                           image_hw=(state.video_height, state.video_width))
    arrays: dict[str, np.ndarray] = {
        "track": np.frombuffer(snapshot_bytes(Snapshot(tracker)), np.uint8)}
    if prompts.points_xy is not None:
        arrays["points_xy"] = np.asarray(prompts.points_xy, np.float32)
        arrays["point_labels"] = np.asarray(prompts.point_labels, np.int64)
    if prompts.box_xyxy is not None:
        arrays["box_xyxy"] = np.asarray(prompts.box_xyxy, np.float32)
    if prompts.mask is not None:
        arrays["mask"] = np.packbits(prompts.mask, axis=-1)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    path = entry_path(folder, version)
    path.parent.mkdir(exist_ok=True)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def load_entry(folder: Path, version: str, image_hw: tuple[int, int]) -> Entry:
    """Read what :func:`save_entry` wrote.

    Raises:
        RestoreError: a missing or unreadable file.
    """
    path = entry_path(folder, version)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        snapshot = snapshot_from_bytes(arrays["track"].tobytes(), f"entry {version}")
        (track,) = snapshot.tracker.tracks.values()
    except (OSError, KeyError, ValueError) as exc:
        raise RestoreError(f"the prompt result {version} is missing or damaged "
                           f"({type(exc).__name__})") from None
    mask = None
    if "mask" in arrays:
        mask = np.unpackbits(arrays["mask"], axis=-1, count=image_hw[1]).astype(bool)
    prompts = ObjectPrompts(points_xy=arrays.get("points_xy"),
                            point_labels=arrays.get("point_labels"),
                            box_xyxy=arrays.get("box_xyxy"), mask=mask)
    return prompts, track


def remove_entries_except(folder: Path, keep: set[str]) -> int:
    """Delete entry files no longer in force nor undoable; returns how many went."""
    gone = 0
    for path in (folder / "entries").glob("*.npz"):
        if path.stem not in keep:
            path.unlink(missing_ok=True)
            gone += 1
    return gone


# ---------------------------------------------------------------------- the predictor's state
def persist_states(state: InferenceState, folder: Path, memory_mb: float,
                   disk_mb: float) -> None:
    """Keep the session's per-frame tracker states in ``folder/states`` (written at once,
    adopted again after a restart) in place of the predictor's temporary cache."""
    state.states.close()
    cache: SpillCache[bytes] = SpillCache(
        bytes, bytes, len, memory_bytes=int(memory_mb * MiB), disk_bytes=int(disk_mb * MiB),
        folder=folder / "states", name="frame state")
    cache.write_through = True
    state.states = cache


def forget_unprompted(state: InferenceState) -> None:
    """Drop objects that hold no prompt on any frame from the predictor's objects.

    The predictor keeps an object whose last prompt was cleared; it shows nothing and enters
    no pass. Dropping it after every change, live and in a restore alike, keeps the two
    states equal whatever order clears and undos came in.
    """
    prompted = {obj for objs in state.prompted.values() for obj in objs}
    for obj_id in [o for o in state.obj_ids if o not in prompted]:
        state.drop_object(obj_id)


def set_entry(state: InferenceState, frame_idx: int, obj_id: int, entry: Entry | None) -> None:
    """Put ``entry`` (prompts, prompted result) on (frame, object), or take it away.

    Kept states from ``frame_idx`` on (each direction in its own time) stop being valid,
    as after any prompt change.
    """
    had = obj_id in state.prompted.get(frame_idx, {})
    if entry is None:
        for table in (state.prompts, state.prompted):
            table.get(frame_idx, {}).pop(obj_id, None)
            if frame_idx in table and not table[frame_idx]:
                del table[frame_idx]
    else:
        prompts, track = entry
        if obj_id not in state.track_ids:
            _register(state, obj_id, track.obj_id, len(state.obj_ids))
        if track.obj_id != state.track_ids[obj_id]:
            raise RestoreError(f"object {obj_id}: its result on frame {frame_idx} belongs to "
                               "another tracker id")
        state.prompts.setdefault(frame_idx, {})[obj_id] = prompts
        state.prompted.setdefault(frame_idx, {})[obj_id] = track
    if had or entry is not None:
        VideoPredictor._invalidate(state, frame_idx)


def _register(state: InferenceState, obj_id: int, track_id: int, pos: int) -> None:
    """Make ``obj_id`` an object of the predictor again, with its own tracker id."""
    state.obj_ids.insert(pos, obj_id)
    state.track_ids[obj_id] = track_id
    state.next_track_id = max(state.next_track_id, track_id + 1)
    state.sync()


def apply_effects(predictor: VideoPredictor, state: InferenceState,
                  effects: Iterable[Effect], load: Callable[[str], Entry]) -> None:
    """Make one log line's effects (:class:`~vos.annotate.oplog.Effect`) happen on the
    predictor's state, then drop the objects left without a prompt."""
    for effect in effects:
        _apply_effect(predictor, state, effect, load)
    forget_unprompted(state)


def _apply_effect(predictor: VideoPredictor, state: InferenceState, effect: Effect,
                  load: Callable[[str], Entry]) -> None:
    if effect.kind == "entry":
        set_entry(state, effect.frame, effect.obj,
                  None if effect.version is None else load(effect.version))
    elif effect.kind == "remove":
        predictor.remove_object(state, effect.obj, need_output=False)
    elif effect.kind == "unremove":
        if effect.tid is not None and effect.obj not in state.track_ids:
            if effect.tid in state.track_ids.values():
                raise RestoreError(f"object {effect.obj} cannot come back: its tracker id "
                                   "is taken")
            pos = min(effect.pos if effect.pos is not None else len(state.obj_ids),
                      len(state.obj_ids))
            _register(state, effect.obj, effect.tid, pos)
        # The kept states were tracked without it: none of them holds any more.
        for record in state.passes.values():
            record.valid_end = 0
    elif effect.kind == "valid":
        assert effect.valid_end is not None
        state.passes[FORWARD].valid_end, state.passes[BACKWARD].valid_end = effect.valid_end
    else:
        raise RestoreError(f"unknown effect {effect.kind!r}")


def validity(state: InferenceState) -> list[int]:
    """How far each direction's kept states are valid, forward first (for an undo)."""
    return [state.passes[FORWARD].valid_end, state.passes[BACKWARD].valid_end]


def save_checkpoint(folder: Path, state: InferenceState, tag: int) -> None:
    """Write ``predictor.json`` (atomically): the predictor's facts after ``tag`` log lines."""
    facts = {
        "format": FORMAT, "tag": tag, "obj_ids": list(state.obj_ids),
        "track_ids": [[o, t] for o, t in state.track_ids.items()],
        "next_track_id": state.next_track_id,
        "passes": {d: {"valid_end": r.valid_end, "frames": sorted(r.frames),
                       "tracks_at": [[t, sorted(ids)] for t, ids in sorted(r.tracks_at.items())]}
                   for d, r in state.passes.items()},
    }
    write_text_atomic(folder / CHECKPOINT, json.dumps(facts, separators=(",", ":")))


def read_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The facts of ``predictor.json``, or None when there is none (an older session).

    Raises:
        RestoreError: a file that cannot be read.
    """
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        facts = json.loads(path.read_text())
        if facts.get("format") != FORMAT:
            raise ValueError(f"format {facts.get('format')}")
        int(facts["tag"])
        return facts
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RestoreError(f"the saved model state is damaged ({exc})") from None


def load_checkpoint(state: InferenceState, facts: dict[str, Any],
                    entries: Iterable[tuple[tuple[int, int], str]],
                    load: Callable[[str], Entry]) -> None:
    """Put the facts of :func:`read_checkpoint` and the entries in force at its ``tag`` into a
    fresh state (whose states cache is already the session's, :func:`persist_states`)."""
    try:
        state.track_ids.clear()
        state.track_ids.update({o: int(t) for o, t in facts["track_ids"]})
        state.next_track_id = int(facts["next_track_id"])
        state.obj_ids[:] = list(facts["obj_ids"])
        state.sync()
        for direction in (FORWARD, BACKWARD):
            record, saved = state.passes[direction], facts["passes"][direction]
            record.valid_end = int(saved["valid_end"])
            record.frames = {int(t) for t in saved["frames"]}
            record.tracks_at = {int(t): frozenset(int(i) for i in ids)
                                for t, ids in saved["tracks_at"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise RestoreError(f"the saved model state is damaged ({exc})") from None
    for (frame_idx, obj_id), version in entries:
        if obj_id not in state.track_ids:
            raise RestoreError(f"object {obj_id} has a prompt on frame {frame_idx} but is not "
                               "in the saved model state")
        prompts, track = load(version)
        state.prompts.setdefault(frame_idx, {})[obj_id] = prompts
        state.prompted.setdefault(frame_idx, {})[obj_id] = track


# ---------------------------------------------------------------------- staleness
def stale_frames(state: InferenceState, lanes: dict[int, bytearray]) -> dict[int, np.ndarray]:
    """obj_id -> (N,) bool: the frames where that object's shown result predates the latest
    prompts.

    An object's result on a frame it was not prompted on comes from the forward pass at or
    after its first prompted frame and from the backward pass before it; that result is
    stale when the pass's kept state there is no longer valid (a prompt changed on the way,
    or a pass stopped before it). An object that holds no prompt any more is stale wherever
    it still shows.
    """
    n = state.num_frames
    t = np.arange(n)
    fwd_end = state.passes[FORWARD].valid_end
    bwd_end = state.passes[BACKWARD].valid_end
    stale = {}
    for obj_id, lane in lanes.items():
        shown = np.frombuffer(bytes(lane), np.uint8)
        tracked = (shown == ord("T")) | (shown == ord("L"))
        first = state.first_prompt(obj_id) if obj_id in state.track_ids else None
        if first is None:
            stale[obj_id] = tracked
            continue
        invalid = np.where(t >= first, t >= fwd_end, (n - 1 - t) >= bwd_end)
        stale[obj_id] = tracked & invalid
    return stale


# ---------------------------------------------------------------------- outputs
def frame_output(predictor: VideoPredictor, state: InferenceState,
                 frame_idx: int) -> tuple[list[Any], Any]:
    """(obj_ids, (N, 1, H, W) float32 logits) of every object on one frame, as the
    predictor's calls return them (after an undo, which makes no predictor call)."""
    return list(state.obj_ids), predictor._frame_logits(state, frame_idx)


def status_letters(state: InferenceState, frame_idx: int, obj_ids: list[Any],
                   logits: Any) -> dict[int, str]:
    """obj_id -> its timeline letter on a frame: ``P`` prompted there, ``T`` tracked (a
    mask), ``L`` LOST (a pass went through the frame and found no mask), ``.`` not tracked."""
    prompted = state.prompted.get(frame_idx, {})
    visible = (logits[:, 0] > 0).flatten(1).any(dim=1).tolist()
    letters = {}
    for obj_id, shown in zip(obj_ids, visible, strict=True):
        if obj_id in prompted:
            letters[int(obj_id)] = "P"
        elif shown:
            letters[int(obj_id)] = "T"
        else:
            first = state.first_prompt(obj_id)
            directions = (FORWARD, BACKWARD) if first is not None and frame_idx >= first \
                else (BACKWARD,)
            passed = first is not None and any(frame_idx in state.passes[d].frames
                                               for d in directions)
            letters[int(obj_id)] = "L" if passed else "."
    return letters
