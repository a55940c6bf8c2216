"""Per-frame results of a run's backward pass, kept on disk until the forward pass merges them.

A two-direction run (``vos.run video --direction both``) tracks backward first and writes each
frame's result to ``<output>/.backward/<frame_idx>.npz`` (atomically; the file is the frame's
completion marker), then tracks forward and merges, frame by frame, the backward results of
the objects not yet prompted there. The folder is removed once the run is complete.

A file holds the frame's visible objects as a :class:`~vos.types.FrameResult` does: ids,
bit-packed masks, scores, boxes and the ids of LOST objects, compressed (a mask is mostly
zeros), so that it reads back bit for bit.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from vos.io.atomic import atomic_open
from vos.types import FrameResult

BACKWARD_DIR = ".backward"
FORMAT_VERSION = 1


def result_path(folder: Path, frame_idx: int) -> Path:
    """Where the result of ``frame_idx`` lives in ``folder``."""
    return Path(folder) / f"{frame_idx:06d}.npz"


def save_result(folder: Path, result: FrameResult) -> Path:
    """Write one frame's result atomically; returns its path."""
    h, w = result.image_hw
    meta = {"version": FORMAT_VERSION, "frame_idx": result.frame_idx, "image_hw": [h, w]}
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
        obj_ids=result.obj_ids.astype(np.int64),
        masks=np.packbits(result.masks, axis=-1),
        scores=result.scores.astype(np.float32),
        boxes=result.boxes_xyxy.astype(np.float32),
        lost=result.lost_obj_ids.astype(np.int64),
    )
    path = result_path(folder, result.frame_idx)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def load_result(folder: Path, frame_idx: int) -> FrameResult:
    """Read the result :func:`save_result` wrote for ``frame_idx``.

    Raises:
        ValueError: a missing or unreadable file, or one of another format version or frame.
    """
    path = result_path(folder, frame_idx)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable backward result ({exc})") from None
    if meta.get("version") != FORMAT_VERSION or meta.get("frame_idx") != frame_idx:
        raise ValueError(f"{path}: a backward result of version {meta.get('version')} for frame "
                         f"{meta.get('frame_idx')}, expected version {FORMAT_VERSION}, frame "
                         f"{frame_idx}")
    h, w = meta["image_hw"]
    masks = np.unpackbits(arrays["masks"], axis=-1, count=w).astype(bool)
    return FrameResult(frame_idx=frame_idx, obj_ids=arrays["obj_ids"],
                       masks=masks.reshape(len(arrays["obj_ids"]), h, w),
                       scores=arrays["scores"], boxes_xyxy=arrays["boxes"],
                       lost_obj_ids=arrays["lost"])


def completed_results(folder: Path, frame_order: list[int]) -> int:
    """How many leading frames of ``frame_order`` have a result in ``folder`` (up to a gap)."""
    done = 0
    for frame_idx in frame_order:
        if not result_path(folder, frame_idx).exists():
            break
        done += 1
    return done
