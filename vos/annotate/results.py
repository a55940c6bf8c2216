"""Each frame's masks and statuses on disk (``results/``), and the timeline lanes they make.

``results/<t>.png`` is a palette PNG of object ids (lower ids win overlapping pixels, as in
``vos.run``'s PNGs) and ``results/<t>.json`` each object's status letter and mean mask
probability. Both are written atomically before the frame's log line, so after a kill the
page shows every frame that was finished, at once.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vos.io.atomic import write_text_atomic
from vos.io.davis_png import read_palette_png, write_palette_png
from vos.io.sinks import object_color
from vos.types import FrameResult

# Status letters of the timeline lanes (one per frame and object).
PROMPTED, TRACKED, LOST, NONE = "P", "T", "L", "."


class ResultStore:
    """The ``results/`` folder of one session and its lanes.

    Args:
        folder: ``<session>/results``.
        num_frames: the video's frames.
        image_hw: (H, W) of the video.
    """

    def __init__(self, folder: Path, num_frames: int, image_hw: tuple[int, int]) -> None:
        self.folder = folder
        self.num_frames = num_frames
        self.image_hw = image_hw
        self.lanes: dict[int, bytearray] = {}
        self.version = 0  # bumped by every change the page must fetch again
        self.frame_version = np.zeros(num_frames, np.int64)
        self._lock = threading.Lock()

    def load(self, live: set[int]) -> None:
        """Read every frame's statuses into the lanes of the ``live`` objects."""
        self.lanes.clear()
        for path in self.folder.glob("*.json"):
            status = self._status_file(path)
            if status is None:
                continue
            t = int(path.stem)
            for key, letter in status.items():
                if int(key) in live:
                    self._lane(int(key))[t] = ord(letter)
        self.bump(range(self.num_frames))

    def reload_lane(self, obj_id: int) -> None:
        """The lane of an object that came back (an undone removal), from the files."""
        self.lanes.pop(obj_id, None)
        for path in self.folder.glob("*.json"):
            status = self._status_file(path)
            if status is not None and str(obj_id) in status:
                self._lane(obj_id)[int(path.stem)] = ord(status[str(obj_id)])

    def _status_file(self, path: Path) -> dict[str, str] | None:
        try:
            t = int(path.stem)
            status = json.loads(path.read_text())["status"]
        except (ValueError, KeyError, OSError, TypeError):
            return None
        return status if 0 <= t < self.num_frames and isinstance(status, dict) else None

    def _lane(self, obj_id: int) -> bytearray:
        lane = self.lanes.get(obj_id)
        if lane is None:
            lane = self.lanes[obj_id] = bytearray(NONE.encode() * self.num_frames)
        return lane

    def drop(self, obj_id: int) -> None:
        """Forget an object's lane (its pixels stay in the files, hidden)."""
        self.lanes.pop(obj_id, None)
        self.bump(range(self.num_frames))

    def bump(self, frames: Any) -> None:
        """Mark frames as changed (the page fetches them again)."""
        with self._lock:
            self.version += 1
            self.frame_version[list(frames)] = self.version

    def write(self, frame_idx: int, obj_ids: list[int], logits: Any,
              letters: dict[int, str]) -> None:
        """Store one frame's masks and statuses and update the lanes.

        Args:
            obj_ids: the predictor's objects, one per row of ``logits``.
            logits: (N, 1, H, W) float32 torch tensor, the predictor's output.
            letters: obj_id -> status letter on this frame.
        """
        masks = (logits[:, 0] > 0).cpu().numpy()
        index = np.zeros(self.image_hw, np.uint8)
        scores: dict[str, float] = {}
        for row in sorted(range(len(obj_ids)), key=lambda i: -obj_ids[i]):
            obj_id, mask = int(obj_ids[row]), masks[row]
            if mask.any():
                index[mask] = obj_id
                probs = 1.0 / (1.0 + np.exp(-logits[row, 0].cpu().numpy()[mask]))
                scores[str(obj_id)] = round(float(probs.mean()), 4)
        status = {str(k): v for k, v in letters.items()}
        write_palette_png(self.folder / f"{frame_idx}.png", index)
        write_text_atomic(self.folder / f"{frame_idx}.json",
                          json.dumps({"status": status, "score": scores}))
        for lane in self.lanes.values():
            lane[frame_idx] = ord(NONE)
        for obj_id, letter in letters.items():
            self._lane(obj_id)[frame_idx] = ord(letter)
        self.bump([frame_idx])

    def index_mask(self, frame_idx: int, live: set[int]) -> np.ndarray | None:
        """(H, W) uint8 ids of the ``live`` objects on a frame, or None before any result."""
        path = self.folder / f"{frame_idx}.png"
        if not path.is_file():
            return None
        index = read_palette_png(path)
        hidden = [i for i in np.unique(index) if i and int(i) not in live]
        if hidden:
            index = np.where(np.isin(index, hidden), 0, index)
        return index.astype(np.uint8)

    def overlay_png(self, frame_idx: int, live: set[int]) -> bytes:
        """The frame's masks as an RGBA PNG (transparent background) for the page."""
        index = self.index_mask(frame_idx, live)
        rgba = np.zeros((*self.image_hw, 4), np.uint8)
        if index is not None:
            for obj_id in np.unique(index):
                if obj_id:
                    r, g, b = object_color(int(obj_id))
                    rgba[index == obj_id] = (b, g, r, 150)  # cv2 writes BGRA
        ok, png = cv2.imencode(".png", rgba)
        assert ok
        return png.tobytes()

    def frame_result(self, frame_idx: int, live: list[int]) -> FrameResult:
        """One frame's stored result as a :class:`FrameResult` (for ``ResultSink``)."""
        index = self.index_mask(frame_idx, set(live))
        if index is None:
            return FrameResult.empty(frame_idx, self.image_hw)
        scores: dict[str, float] = {}
        lost: list[int] = []
        path = self.folder / f"{frame_idx}.json"
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
