"""Result sinks: palette PNGs, per-frame COCO-RLE JSON and an overlay video.

Everything is written atomically (temp file + rename), and a frame's JSON is written after
its PNG, so the JSON doubles as the "frame complete" marker that resume relies on: an
interrupted run leaves only whole frames behind. Writing runs on a background thread behind
a bounded queue (Cutie's ResultSaver idea), so disk and video encoding overlap with the model.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import struct
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vos.io.atomic import write_text_atomic
from vos.io.davis_png import davis_palette, read_palette_png, write_palette_png
from vos.io.resume_state import Snapshot, prune_states, save_snapshot
from vos.types import FrameResult

logger = logging.getLogger(__name__)

MASKS_DIR = "masks"
JSON_DIR = "json"
OVERLAY_NAME = "overlay.mp4"

_PALETTE = np.array(davis_palette(), np.uint8).reshape(256, 3)
_PALETTE_LUT = _PALETTE.reshape(256, 1, 3)  # cv2.LUT table for 3-channel input


def object_color(obj_id: int) -> tuple[int, int, int]:
    """RGB colour of an object id: the DAVIS palette, so overlays match the PNGs."""
    return tuple(int(c) for c in _PALETTE[obj_id % 256])  # type: ignore[return-value]


def draw_overlay(
    frame: np.ndarray,
    index_mask: np.ndarray,
    *,
    alpha: float = 0.5,
    labels: dict[int, str] | None = None,
    banner: str | None = None,
) -> np.ndarray:
    """Blend object colours over a frame, outline each object and write its id.

    Args:
        frame: (H, W, 3) uint8 RGB.
        index_mask: (H, W) integer object ids, 0 = background.
        alpha: opacity of the colour fill.
        labels: text to draw per obj_id (default: the id).
        banner: optional text for the top-left corner (e.g. FPS).

    Returns:
        (H, W, 3) uint8 RGB overlay (a new array).
    """
    # Runs on the writer thread for every frame, beside the model on a small machine: a
    # histogram instead of np.unique and OpenCV's lookup and blend instead of numpy fancy
    # indexing cut it from 13.7 to ~2.5 ms CPU (854x480, one object).
    out = frame.copy()
    small = np.minimum(index_mask, 255).astype(np.uint8, copy=False)
    if index_mask.dtype == np.uint8 and index_mask.size:
        counts = cv2.calcHist([small], [0], None, [256], [0, 256]).ravel()
    else:
        counts = np.bincount(index_mask.ravel(), minlength=1)
    ids = [int(i) for i in np.flatnonzero(counts[1:]) + 1]
    if ids:
        colours = cv2.LUT(cv2.cvtColor(small, cv2.COLOR_GRAY2RGB), _PALETTE_LUT)
        blended = cv2.addWeighted(frame, 1 - alpha, colours, alpha, 0.0)
        cv2.copyTo(blended, (index_mask > 0).astype(np.uint8), out)
    scale = max(frame.shape[0] / 720.0, 0.4)
    boxes = id_boxes(index_mask, ids)
    for obj_id in ids:
        # Outline each object inside its own box: work in proportion to the object.
        x0, y0, x1, y1 = boxes[obj_id]
        mask = (index_mask[y0:y1, x0:x1] == obj_id).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x0, y0))
        colour = object_color(obj_id)
        cv2.drawContours(out, contours, -1, colour, max(1, round(2 * scale)))
        x0, y0, _, _ = cv2.boundingRect(np.concatenate(contours))
        text = (labels or {}).get(obj_id, str(obj_id))
        org = (int(x0), max(int(y0) - 4, 12))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255),
                    max(1, round(3 * scale)), cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, colour,
                    max(1, round(scale)), cv2.LINE_AA)
    if banner:
        cv2.putText(out, banner, (8, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale,
                    (255, 255, 255), max(1, round(2 * scale)), cv2.LINE_AA)
    return out


def id_boxes(index_mask: np.ndarray, ids: list[int]) -> dict[int, tuple[int, int, int, int]]:
    """Each id's box (x0, y0, x1, y1) in an id map, from one pass over its object pixels."""
    ys, xs = np.nonzero(index_mask)
    values = index_mask[ys, xs]
    order = np.argsort(values, kind="stable")
    values, ys, xs = values[order], ys[order], xs[order]
    starts = np.searchsorted(values, ids)
    stops = np.searchsorted(values, ids, side="right")
    return {
        obj_id: (int(xs[a:b].min()), int(ys[a:b].min()), int(xs[a:b].max()) + 1,
                 int(ys[a:b].max()) + 1)
        for obj_id, a, b in zip(ids, starts, stops, strict=True)
        if b > a
    }


def encode_rle_crop(crop: np.ndarray, x0: int, y0: int, image_hw: tuple[int, int]) -> dict[str, Any]:
    """COCO RLE of a mask that is False outside a crop, without the whole image.

    Equal to :func:`encode_rle` of the full mask: COCO runs go down each column; the columns
    left of the crop, and the rows above and below it, are runs of zeros added as numbers.

    Args:
        crop: (h, w) bool, the image's pixels [y0, y0 + h) x [x0, x0 + w).
        x0: left column of the crop.
        y0: top row of the crop.
        image_hw: (H, W) of the image.
    """
    from pycocotools import mask as mask_utils

    h_img, w_img = image_hw
    h, w = crop.shape
    # The crop's columns at full height, column after column (COCO's Fortran order).
    columns = np.zeros((w, h_img), bool)
    columns[:, y0 : y0 + h] = crop.T
    flat = columns.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat[0]:
        runs.insert(0, 0)  # COCO counts start with a run of zeros
    runs[0] += x0 * h_img
    trailing = (w_img - x0 - w) * h_img
    if len(runs) % 2:  # the last run is zeros: extend it
        runs[-1] += trailing
    elif trailing:
        runs.append(trailing)
    rle = mask_utils.frPyObjects({"counts": runs, "size": [h_img, w_img]}, h_img, w_img)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a (H, W) bool mask, JSON-ready (``counts`` as str)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """(H, W) bool mask from a COCO RLE dict as written by :func:`encode_rle`."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(
        bool
    )


def frame_record(result: FrameResult, frame_name: str) -> dict[str, Any]:
    """The per-frame JSON document: every visible object with its COCO RLE."""
    return {
        "frame_idx": result.frame_idx,
        "frame_name": frame_name,
        "image_hw": list(result.image_hw),
        "objects": [
            {
                "obj_id": int(obj_id),
                "score": round(float(score), 6),
                "box_xyxy": [round(float(v), 2) for v in box],
                "area": int(np.count_nonzero(mask)),
                "segmentation": _rle_of(mask),
            }
            for obj_id, mask, score, box in zip(
                result.obj_ids, result.masks, result.scores, result.boxes_xyxy, strict=True
            )
        ],
        "lost_obj_ids": [int(i) for i in result.lost_obj_ids],
    }


def _rle_of(mask: np.ndarray) -> dict[str, Any]:
    """:func:`encode_rle`, through the mask's crop (a small object on a big frame is cheap)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return encode_rle(mask)
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return encode_rle_crop(mask[y0:y1, x0:x1], int(x0), int(y0), mask.shape)


def load_index_mask(output_dir: Path, frame_name: str, image_hw: tuple[int, int]) -> np.ndarray:
    """A written frame's id map, from its PNG or, for runs without PNGs, its JSON."""
    png = output_dir / MASKS_DIR / f"{frame_name}.png"
    if png.exists():
        return read_palette_png(png)
    record = json.loads((output_dir / JSON_DIR / f"{frame_name}.json").read_text())
    index = np.zeros(image_hw, np.uint16)
    for obj in sorted(record["objects"], key=lambda o: -o["obj_id"]):
        index[decode_rle(obj["segmentation"])] = obj["obj_id"]
    return index


def completed_frames(output_dir: Path, frame_names: list[str]) -> int:
    """How many leading frames of ``frame_names`` are completely written in ``output_dir``.

    A frame is complete when its JSON exists (written last) or, for runs without JSON, its
    PNG; counting stops at the first gap so a resumed run continues from there.
    """
    done = 0
    for name in frame_names:
        if (output_dir / JSON_DIR / f"{name}.json").exists() or (
            not (output_dir / JSON_DIR).exists() and (output_dir / MASKS_DIR / f"{name}.png").exists()
        ):
            done += 1
        else:
            break
    return done


def ffmpeg_executable() -> str:
    """ffmpeg on PATH, else the binary that the imageio-ffmpeg wheel ships."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RuntimeError(
            "no ffmpeg found: install it or `pip install imageio-ffmpeg`"
        ) from None
    return str(imageio_ffmpeg.get_ffmpeg_exe())


class VideoWriter:
    """H.264 mp4 writer fed with RGB frames through an ffmpeg pipe (ffmpeg-python).

    Frames go to ``<path>.partial``; ``close()`` finalises the file and renames it, so a
    reader never sees a half-written ``overlay.mp4``. The mp4 is fragmented, one fragment per
    frame: when the disk fills up (or ffmpeg dies) the fragments already on disk still play,
    so ``close`` keeps them, cut after the last whole fragment, instead of losing the video.
    """

    def __init__(self, path: Path, image_hw: tuple[int, int], fps: float) -> None:
        import ffmpeg

        self.path = path
        self._partial = path.with_name(path.name + ".partial")
        h, w = image_hw
        stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}",
                              framerate=fps)
        # yuv420p needs even sizes; pad by one pixel where needed.
        stream = stream.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
        # Every frame leaves the encoder at once (zerolatency: no lookahead, no B-frames) as
        # its own fragment, flushed to the file, so what is on disk always plays.
        stream = ffmpeg.output(stream, str(self._partial), format="mp4", vcodec="libx264",
                               pix_fmt="yuv420p", crf=20, preset="veryfast", tune="zerolatency",
                               movflags="+frag_keyframe+empty_moov+default_base_moof",
                               frag_duration=max(1, int(1e6 / max(fps, 1e-3))),
                               flush_packets=1,
                               # One x264 thread: the overlay must not take cores from the model.
                               threads=1)
        command = ffmpeg.compile(
            stream.overwrite_output().global_args("-loglevel", "error"), cmd=ffmpeg_executable()
        )
        # Own session: a Ctrl-C in the terminal must reach only us, so that we can flush the
        # frames written so far and let ffmpeg finish a valid file.
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=background_priority,  # runs in the child, before ffmpeg starts
        )
        self._shape = (h, w, 3)
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        if frame.shape != self._shape:
            raise ValueError(f"overlay frame: expected {self._shape}, got {frame.shape}")
        assert self._process.stdin is not None
        self._process.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and rename it into place.

        Raises:
            OSError: ffmpeg failed (a full disk, a vanished folder); the whole fragments it
                wrote are kept as ``overlay.mp4`` all the same.
        """
        assert self._process.stdin is not None
        try:
            self._process.stdin.close()
        except BrokenPipeError:
            pass
        err = self._process.stderr.read() if self._process.stderr is not None else b""
        self._process.wait()
        if self._process.returncode == 0 and self.frames_written:
            os.replace(self._partial, self.path)
            return
        if self._process.returncode == 0 or not self._partial.exists():
            self._partial.unlink(missing_ok=True)
            return
        if keep_whole_fragments(self._partial):
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)
        lines = err.decode(errors="replace").strip().splitlines()
        raise OSError(f"{self.path}: ffmpeg failed ({lines[-1] if lines else 'no message'})")


def keep_whole_fragments(path: Path) -> bool:
    """Cut a fragmented mp4 after its last complete fragment; False when none is complete.

    The file is a chain of boxes (32-bit big-endian size, 4-byte type): ``ftyp``, an empty
    ``moov``, then one ``moof`` + ``mdat`` pair per fragment. A writer that died mid-box leaves
    a box whose size runs past the end of the file.
    """
    size = path.stat().st_size
    offset = whole = 0
    fragments = 0
    with open(path, "r+b") as handle:
        while offset + 8 <= size:
            handle.seek(offset)
            box_size, kind = struct.unpack(">I4s", handle.read(8))
            if box_size == 1:  # 64-bit size follows the type
                box_size = struct.unpack(">Q", handle.read(8))[0]
            if box_size < 8 or offset + box_size > size:
                break
            offset += box_size
            if kind == b"mdat":
                whole, fragments = offset, fragments + 1
        if fragments:
            handle.truncate(whole)
    return fragments > 0


# Niceness of the result writer thread and the ffmpeg encoder: on a small machine they share
# the cores with the model, and at normal priority they slow the encoder down while they run.
BACKGROUND_NICENESS = 10


def background_priority() -> None:
    """Lower the calling thread's CPU priority by ``BACKGROUND_NICENESS`` (Linux; else no-op).

    On Linux a thread id is a valid ``PRIO_PROCESS`` target and affects that thread alone.
    """
    if not BACKGROUND_NICENESS or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + BACKGROUND_NICENESS))
    except OSError:
        pass  # not permitted here: stay at normal priority


class AsyncWriter:
    """Runs write jobs on one background thread behind a bounded queue.

    Args:
        max_pending: jobs that may wait; ``submit`` blocks when the queue is full, which
            bounds memory when the disk is slower than the model.
    """

    def __init__(self, max_pending: int = 8) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="result-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        background_priority()
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as exc:
                    self._error = exc

    def submit(self, job: Callable[[], None]) -> None:
        """Queue a job; re-raises the first error of an earlier job."""
        self._raise_pending()
        self._queue.put(job)

    def close(self) -> None:
        """Finish every queued job, then stop; re-raises the first job error."""
        self._queue.put(None)
        self._thread.join()
        self._raise_pending()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class ResultSink:
    """Writes a run's results under ``output_dir`` (a context manager, like sv.VideoSink).

    Layout: ``masks/<frame>.png`` (DAVIS palette PNGs, ids = obj_ids), ``json/<frame>.json``
    (COCO RLE per object), ``overlay.mp4``.

    Args:
        output_dir: results folder (created).
        image_hw: (H, W) of the frames.
        fps: frame rate of the overlay video.
        save_png / save_json / save_video: which outputs to write.
        overlap: rule for pixels claimed by two objects in the PNG (see FrameResult).
    """

    def __init__(
        self,
        output_dir: Path,
        image_hw: tuple[int, int],
        fps: float,
        *,
        save_png: bool = True,
        save_json: bool = True,
        save_video: bool = True,
        overlap: str = "lower_id_wins",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.image_hw = image_hw
        self.save_png, self.save_json = save_png, save_json
        self.overlap = overlap
        self._writer = AsyncWriter()
        self._video = VideoWriter(self.output_dir / OVERLAY_NAME, image_hw, fps) if save_video else None
        self._last_overlay: np.ndarray | None = None  # touched on the writer thread only
        self.frames_written = 0

    @property
    def resumable(self) -> bool:
        """Whether frames get a completion marker (a JSON or a PNG) that resume can count."""
        return self.save_png or self.save_json

    def write(
        self,
        frame_name: str,
        frame: np.ndarray,
        result: FrameResult,
        snapshot: Snapshot | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue the outputs of one frame (returns before they hit the disk).

        Args:
            frame_name: file stem of the frame's outputs.
            frame: (H, W, 3) uint8 RGB, for the overlay.
            result: the frame's objects.
            snapshot: the run's state after this frame (the resume file), written before the
                frame's completion marker so that a complete frame always has its state.
            extra: more top-level fields of the frame's JSON (live mode: where its masks
                came from).
        """
        index = result.to_index_mask(self.overlap)  # type: ignore[arg-type]
        if index.dtype != np.uint8 and self.save_png:
            raise ValueError(f"frame {frame_name}: obj_id above 255 cannot go in a palette PNG")
        record = frame_record(result, frame_name) if self.save_json else None
        if record is not None and extra:
            record.update(extra)
        self._writer.submit(lambda: self._write_files(frame_name, frame, index, record, snapshot))

    def repeat_overlay(self, count: int) -> None:
        """Show the last written frame's overlay for ``count`` more frame periods.

        A live recording fills the capture time of the frames it dropped with it, so the
        overlay plays at the pace the frames were captured (issue 23).
        """
        if self._video is None or count <= 0:
            return
        video = self._video

        def repeat() -> None:
            if self._last_overlay is not None:
                for _ in range(count):
                    video.write(self._last_overlay)

        self._writer.submit(repeat)

    def replay(self, frame_name: str, frame: np.ndarray) -> None:
        """Re-render the overlay of a frame completed by an earlier (interrupted) run."""
        if self._video is None:
            return
        index = load_index_mask(self.output_dir, frame_name, self.image_hw)
        video = self._video
        self._writer.submit(lambda: video.write(draw_overlay(frame, index)))

    def _write_files(
        self,
        frame_name: str,
        frame: np.ndarray,
        index: np.ndarray,
        record: dict | None,
        snapshot: Snapshot | None,
    ) -> None:
        # Order matters for resume: the JSON (else the PNG) marks the frame complete, so the
        # state file goes first and the previous one is removed only after the marker; the
        # overlay follows, so that it holds exactly the complete frames.
        if snapshot is not None:
            save_snapshot(self.output_dir, snapshot)
        if self.save_png:
            write_palette_png(self.output_dir / MASKS_DIR / f"{frame_name}.png", index)
        if record is not None:
            write_text_atomic(self.output_dir / JSON_DIR / f"{frame_name}.json", json.dumps(record))
        if snapshot is not None:
            prune_states(self.output_dir, keep_from=snapshot.frame_idx)
        if self._video is not None:
            self._last_overlay = draw_overlay(frame, index)
            self._video.write(self._last_overlay)
        self.frames_written += 1

    def close(self) -> None:
        """Flush every queued frame and finalise the overlay video.

        Raises:
            OSError: the first write failure (a full disk, say); the overlay is finalised
                up to its last whole frame all the same.
        """
        first: BaseException | None = None
        try:
            self._writer.close()
        except BaseException as exc:
            first = exc
        if self._video is not None:
            try:
                self._video.close()
            except OSError as exc:
                first = first or exc
        if first is not None:
            raise first

    def __enter__(self) -> ResultSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.close()
        except OSError:
            if exc_type is None:
                raise
            # Already failing (the first write error, or Ctrl-C): that one is reported; the
            # close still finalised what it could.
            logger.debug("closing the sink after an error failed too", exc_info=True)


def probe_video_frames(path: Path) -> int:
    """Frame count of a video file by decoding it with ffmpeg (used by tests and resume)."""
    out = subprocess.run(
        [ffmpeg_executable(), "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise ValueError(f"{path}: not a readable video ({out.stderr.strip()[:200]})")
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count
