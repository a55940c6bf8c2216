"""The resume file: everything the next frame depends on, saved with each complete frame.

After frame k is written, ``.resume/<k>.npz`` holds the tracker's state (every track's
status, mask, box, motion, remembered size, low-res logits, scores and counters; the next id;
the jitter generator's state), the segmenter's stream state (e.g. the ROI crop memory) and the
run's summary accumulators. A run interrupted anywhere, then started again, restores the
state of its last complete frame and writes exactly the bytes an uninterrupted run would.

Only the newest file is kept (the older one is removed once the next frame is complete), so
disk use is flat on long videos: per object a packed mask, its (1, 256, 256) float32 logits
and a few numbers.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vos.io.atomic import atomic_open
from vos.types import Track, TrackerState, TrackStatus

STATE_DIR = ".resume"
FORMAT_VERSION = 1


@dataclass
class Snapshot:
    """A run's state after one frame.

    Attributes:
        tracker: the tracker state (its ``frame`` and ``embedding`` are not kept: the next
            frame brings its own).
        segmenter: the segmenter's stream state (name -> array), e.g. ``RoiSegmenter``'s.
        summary: JSON-ready accumulators of the run's summary (object statistics, totals).
    """

    tracker: TrackerState
    segmenter: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def frame_idx(self) -> int:
        return self.tracker.frame_idx


def take_snapshot(
    state: TrackerState, segmenter: dict[str, np.ndarray], summary: dict[str, Any]
) -> Snapshot:
    """A copy of the state that later frames cannot change (taken on the tracker's thread).

    Masks and logits are copied too: they are small next to a frame, and the writer thread
    serialises them while the tracker already works on the next frame.
    """
    tracks = {obj_id: t.copy(logits_device="cpu") for obj_id, t in state.tracks.items()}
    rng = np.random.default_rng()
    rng.bit_generator.state = state.rng.bit_generator.state
    copy = TrackerState(frame_idx=state.frame_idx, tracks=tracks, next_obj_id=state.next_obj_id,
                        image_hw=state.image_hw, rng=rng)
    return Snapshot(copy, {k: np.array(v) for k, v in segmenter.items()},
                    json.loads(json.dumps(summary)))


def state_path(output_dir: Path, frame_idx: int) -> Path:
    """Where the state after ``frame_idx`` lives."""
    return Path(output_dir) / STATE_DIR / f"{frame_idx:06d}.npz"


def save_snapshot(output_dir: Path, snapshot: Snapshot) -> Path:
    """Write a snapshot atomically; returns its path."""
    path = state_path(output_dir, snapshot.tracker.frame_idx)
    data = snapshot_bytes(snapshot)
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return path


def snapshot_bytes(snapshot: Snapshot) -> bytes:
    """A snapshot as the bytes of an ``.npz`` file (:func:`snapshot_from_bytes` reads it)."""
    state = snapshot.tracker
    tracks = [state.tracks[k] for k in sorted(state.tracks)]
    h, w = state.image_hw or (0, 0)
    meta = {
        "version": FORMAT_VERSION,
        "frame_idx": state.frame_idx,
        "next_obj_id": state.next_obj_id,
        "image_hw": [h, w],
        "rng": state.rng.bit_generator.state,
        "tracks": [{"obj_id": t.obj_id, "status": t.status.value, "score": t.score,
                    "last_seen_frame": t.last_seen_frame, "missed_frames": t.missed_frames,
                    "has_logits": t.low_res_logits is not None} for t in tracks],
        "segmenter": sorted(snapshot.segmenter),
        "summary": snapshot.summary,
    }
    logits = [t.low_res_logits.numpy() for t in tracks if t.low_res_logits is not None]
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
        "masks": np.stack([np.packbits(t.mask, axis=-1) for t in tracks])
        if tracks else np.zeros((0, h, (w + 7) // 8), np.uint8),
        "boxes": np.stack([t.box_xyxy for t in tracks]) if tracks else np.zeros((0, 4), np.float32),
        "velocity": np.stack([t.velocity_xy for t in tracks]) if tracks else np.zeros((0, 2), np.float32),
        "anchor": np.stack([t.anchor_xy for t in tracks]) if tracks else np.zeros((0, 2), np.int64),
        "size": np.stack([t.size_wh for t in tracks]) if tracks else np.zeros((0, 2), np.float32),
        "logits": np.stack(logits) if logits else np.zeros((0, 1, 256, 256), np.float32),
    }
    arrays.update({f"seg.{k}": v for k, v in snapshot.segmenter.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def load_snapshot(path: Path) -> Snapshot:
    """Read a snapshot written by :func:`save_snapshot`.

    Raises:
        ValueError: the file is unreadable or of another format version.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: not a readable resume state ({exc})") from None
    return snapshot_from_bytes(data, str(path))


def snapshot_from_bytes(data: bytes, name: str = "snapshot") -> Snapshot:
    """Read the bytes of :func:`snapshot_bytes`; ``name`` names them in errors.

    Raises:
        ValueError: unreadable bytes or another format version.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ValueError(f"{name}: not a readable resume state ({exc})") from None
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{name}: resume state version {meta.get('version')}, expected "
                         f"{FORMAT_VERSION}")
    h, w = meta["image_hw"]
    logits = iter(torch.from_numpy(a) for a in arrays["logits"])
    tracks = {}
    for i, t in enumerate(meta["tracks"]):
        tracks[t["obj_id"]] = Track(
            obj_id=t["obj_id"],
            mask=np.unpackbits(arrays["masks"][i], axis=-1, count=w).astype(bool),
            box_xyxy=arrays["boxes"][i].copy(),
            low_res_logits=next(logits) if t["has_logits"] else None,
            score=t["score"],
            last_seen_frame=t["last_seen_frame"],
            missed_frames=t["missed_frames"],
            status=TrackStatus(t["status"]),
            velocity_xy=arrays["velocity"][i].copy(),
            anchor_xy=arrays["anchor"][i].copy(),
            size_wh=arrays["size"][i].copy(),
        )
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    state = TrackerState(frame_idx=meta["frame_idx"], tracks=tracks,
                         next_obj_id=meta["next_obj_id"], image_hw=(h, w) if h else None, rng=rng)
    segmenter = {k: arrays[f"seg.{k}"] for k in meta["segmenter"]}
    return Snapshot(state, segmenter, meta["summary"])


def estimated_state_bytes(state: TrackerState) -> int:
    """About how many bytes :func:`save_snapshot` writes for this state."""
    h, w = state.image_hw or (0, 0)
    per_track = h * ((w + 7) // 8) + 256 * 256 * 4 + 64
    return 4096 + len(state.tracks) * per_track


def latest_state(output_dir: Path, before: int) -> Path | None:
    """The newest state file of a frame before ``before``, or None."""
    folder = Path(output_dir) / STATE_DIR
    frames = sorted(int(p.stem) for p in folder.glob("*.npz") if p.stem.isdigit()) \
        if folder.is_dir() else []
    frames = [f for f in frames if f < before]
    return state_path(output_dir, frames[-1]) if frames else None


def prune_states(output_dir: Path, keep_from: int) -> None:
    """Remove the state files of frames before ``keep_from`` (their frames are complete)."""
    folder = Path(output_dir) / STATE_DIR
    if not folder.is_dir():
        return
    for path in folder.glob("*.npz"):
        if path.stem.isdigit() and int(path.stem) < keep_from:
            path.unlink(missing_ok=True)
