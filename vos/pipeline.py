"""The video pipeline behind ``python -m vos.run``: source -> tracker -> sinks, resumable.

Kept out of ``run.py`` so that the CLI stays a thin argument parser and the batch and
evaluation modes reuse exactly the same loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vos.config import RunConfig
from vos.io.davis_png import read_palette_png
from vos.io.sinks import ResultSink, completed_frames, load_index_mask, write_text_atomic
from vos.io.sources import FrameSource, SourceError, prefetch
from vos.tracker import VideoTracker
from vos.types import FrameResult, Prompt

logger = logging.getLogger(__name__)

RUN_RECORD = "run.json"
SUMMARY = "summary.json"


class PromptError(ValueError):
    """An initial prompt does not fit the video."""


class OutputConflictError(ValueError):
    """The output folder holds results of a different run."""


@dataclass
class StageTimer:
    """Wall time per pipeline stage, summed over frames (seconds)."""

    totals: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] = self.totals.get(stage, 0.0) + seconds

    def per_frame_ms(self, num_frames: int) -> dict[str, float]:
        """Mean milliseconds per frame of every stage."""
        return {k: 1000.0 * v / max(num_frames, 1) for k, v in self.totals.items()}


class TimedSegmenter:
    """Wraps a segmenter and accounts the time of ``encode`` and ``decode`` calls."""

    def __init__(self, inner: Any, timer: StageTimer) -> None:
        self.inner = inner
        self.timer = timer

    def encode(self, image: np.ndarray) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.encode(image)
        finally:
            self.timer.add("encode", time.perf_counter() - start)

    def decode(self, embedding: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.decode(embedding, **kwargs)
        finally:
            self.timer.add("decode masks", time.perf_counter() - start)


def parse_box(text: str) -> np.ndarray:
    """``"x0,y0,x1,y1"`` -> (4,) float32 box in frame pixels."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise PromptError(f"--init-box {text!r}: expected x0,y0,x1,y1 (four numbers)")
    return np.array(values, np.float32)


def parse_points(text: str) -> tuple[np.ndarray, np.ndarray]:
    """``"x,y[,label] x,y[,label] ..."`` -> (P, 2) points and (P,) labels (default 1)."""
    points, labels = [], []
    for token in text.replace(";", " ").split():
        parts = token.split(",")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3) or (len(numbers) == 3 and numbers[2] not in (0.0, 1.0)):
            raise PromptError(
                f"--init-points {text!r}: expected 'x,y[,label] ...' with label 0 or 1"
            )
        points.append(numbers[:2])
        labels.append(int(numbers[2]) if len(numbers) == 3 else 1)
    if not points:
        raise PromptError(f"--init-points {text!r}: no points given")
    return np.array(points, np.float32), np.array(labels, np.int64)


def masks_from_png(path: Path, image_hw: tuple[int, int]) -> list[Prompt]:
    """One mask prompt per object id of an index/palette PNG (or a binary mask: id 1)."""
    if not path.exists():
        raise PromptError(f"--init-mask {path}: no such file")
    try:
        index = read_palette_png(path)
    except ValueError:
        import cv2

        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise PromptError(f"--init-mask {path}: not a readable image") from None
        index = (gray > 127).astype(np.uint8)
    if index.shape != image_hw:
        raise PromptError(
            f"--init-mask {path}: size {index.shape[1]}x{index.shape[0]} differs from the "
            f"video's {image_hw[1]}x{image_hw[0]}"
        )
    values = {int(v) for v in np.unique(index)}
    if values == {0, 255} or values == {255}:
        # A plain black-and-white mask (0/255), not a DAVIS map whose 255 means "void".
        index = (index == 255).astype(np.uint8)
    ids = [int(i) for i in np.unique(index) if i not in (0, 255)]
    if not ids:
        raise PromptError(f"--init-mask {path}: the mask is empty (no object pixels)")
    return [Prompt(mask=index == i, obj_id=i) for i in ids]


def check_prompts(prompts: Sequence[Prompt], image_hw: tuple[int, int]) -> None:
    """Reject prompts that cannot apply to a frame of this size (before loading a model)."""
    h, w = image_hw
    if not prompts:
        raise PromptError("no initial prompt: give --init-box, --init-points or --init-mask")
    for prompt in prompts:
        if prompt.box_xyxy is not None:
            x0, y0, x1, y1 = (float(v) for v in prompt.box_xyxy)
            if not (x0 < x1 and y0 < y1):
                raise PromptError(
                    f"--init-box {x0:g},{y0:g},{x1:g},{y1:g}: expected x0 < x1 and y0 < y1"
                )
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                raise PromptError(
                    f"--init-box {x0:g},{y0:g},{x1:g},{y1:g}: outside the {w}x{h} frame"
                )
        if prompt.points_xy is not None:
            pts = prompt.points_xy
            if (pts < 0).any() or (pts[:, 0] >= w).any() or (pts[:, 1] >= h).any():
                raise PromptError(f"--init-points: a point lies outside the {w}x{h} frame")
            if (
                prompt.box_xyxy is None
                and prompt.point_labels is not None
                and not (prompt.point_labels == 1).any()
            ):
                raise PromptError("--init-points: each object needs at least one positive point")


def _fingerprint(source: str, prompts: Sequence[Prompt], config: RunConfig) -> str:
    """A hash of what determines a run's results (resume refuses a different run)."""
    digest = hashlib.sha256()
    digest.update(str(Path(source).resolve() if Path(source).exists() else source).encode())
    for prompt in prompts:
        for value in (prompt.mask, prompt.box_xyxy, prompt.points_xy, prompt.point_labels):
            digest.update(b"-" if value is None else np.ascontiguousarray(value).tobytes())
        digest.update(str(prompt.obj_id).encode())
    relevant = {"model": asdict(config.model), "prompt": asdict(config.prompt),
                "tracker": asdict(config.tracker)}
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    return digest.hexdigest()[:16]


@dataclass
class VideoRunSummary:
    """What a video run did, for the CLI's table and ``summary.json``."""

    output_dir: str
    num_frames: int
    frames_processed: int
    frames_resumed: int
    seconds: float
    fps: float
    stage_ms_per_frame: dict[str, float]
    objects: dict[int, dict[str, float]]
    complete: bool


def frame_names_for(source: FrameSource, num_frames: int) -> list[str]:
    """DAVIS-style names: the image stems for a folder, else zero-padded indices."""
    paths = getattr(source, "paths", None)
    if paths is not None:
        return [p.stem for p in paths[:num_frames]]
    return [f"{i:05d}" for i in range(num_frames)]


def _timed(frames: Iterator[np.ndarray], timer: StageTimer) -> Iterator[np.ndarray]:
    while True:
        start = time.perf_counter()
        try:
            frame = next(frames)
        except StopIteration:
            return
        timer.add("decode video", time.perf_counter() - start)
        yield frame


def run_video(
    source: FrameSource,
    predictor: Any,
    prompts: Sequence[Prompt],
    output_dir: Path,
    config: RunConfig,
    *,
    init_frame: int = 0,
    max_frames: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> VideoRunSummary:
    """Track the prompted objects through a video and write every output, resumably.

    Args:
        source: an opened frame source (its ``info`` gives size, count and fps).
        predictor: a segmenter with ``encode``/``decode`` (``SamPredictor``).
        prompts: the objects to track, applied on ``init_frame``.
        output_dir: results folder; an earlier interrupted run of the same command there is
            resumed from its last complete frame.
        config: the run configuration (tracker, prompt and io parts are used).
        init_frame: frame index at which the prompts apply.
        max_frames: stop after this many frames (None = whole video).
        overwrite: ignore and replace earlier results in ``output_dir``.
        progress: show a tqdm progress bar.

    Returns:
        The run summary (also written to ``summary.json``).

    Raises:
        SourceError, PromptError, OutputConflictError: on bad inputs.
    """
    from tqdm import tqdm

    info = source.info
    num_frames = info.num_frames
    if num_frames is None:
        raise SourceError(f"{info.name}: a live source cannot be processed as a video file")
    if max_frames is not None:
        num_frames = min(num_frames, max_frames)
    if not 0 <= init_frame < num_frames:
        raise PromptError(f"--init-frame {init_frame}: the video has {num_frames} frames")
    check_prompts(prompts, info.image_hw)
    output_dir = Path(output_dir)
    names = frame_names_for(source, num_frames)
    fingerprint = _fingerprint(info.name, prompts, config)
    record_path = output_dir / RUN_RECORD
    done = 0
    if record_path.exists() and not overwrite:
        previous = json.loads(record_path.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise OutputConflictError(
                f"{output_dir}: holds results of a different run (source, prompts or config "
                "differ); pass --overwrite or choose another --output"
            )
        done = completed_frames(output_dir, names)
    elif overwrite:
        for sub in ("masks", "json"):
            for old in (output_dir / sub).glob("*"):
                old.unlink()
    write_text_atomic(
        record_path,
        json.dumps({"fingerprint": fingerprint, "source": info.name, "num_frames": num_frames},
                   indent=2),
    )

    timer = StageTimer()
    tracker = VideoTracker(TimedSegmenter(predictor, timer), config.tracker, config.prompt,
                           seed=config.seed)
    io = config.io
    start_time = time.perf_counter()
    # Resuming: the tracker restarts from the last complete frame's masks (its logits are
    # re-derived), and the overlay video is re-rendered from the PNGs already written.
    resume_from = done if done > init_frame else 0
    frames = _timed(prefetch(source.frames(0, num_frames)), timer)
    processed = 0
    interrupted = False
    object_stats: dict[int, dict[str, float]] = {}
    with ResultSink(output_dir, info.image_hw, info.fps, save_png=io.save_png,
                    save_json=io.save_json, save_video=io.save_video) as sink:
        bar = tqdm(total=num_frames, initial=0, unit="frame", disable=not progress,
                   desc=Path(info.name).name, dynamic_ncols=True)
        try:
            for frame_idx, frame in enumerate(frames):
                if frame_idx < resume_from - 1:
                    sink.replay(names[frame_idx], frame)
                    bar.update(1)
                    continue
                if frame_idx == resume_from - 1:
                    sink.replay(names[frame_idx], frame)
                    _restore(tracker, frame, output_dir, names[frame_idx], frame_idx)
                    bar.update(1)
                    continue
                result = tracker.step(frame)
                if frame_idx == init_frame:
                    for prompt in prompts:
                        tracker.add_object(mask=prompt.mask, box_xyxy=prompt.box_xyxy,
                                           points_xy=prompt.points_xy,
                                           point_labels=prompt.point_labels, obj_id=prompt.obj_id)
                    result = tracker.result()
                write_start = time.perf_counter()
                sink.write(names[frame_idx], frame, result)
                timer.add("write (queue)", time.perf_counter() - write_start)
                accumulate_object_stats(object_stats, result)
                processed += 1
                bar.update(1)
                elapsed = time.perf_counter() - start_time
                bar.set_postfix(fps=f"{processed / elapsed:.2f}", objects=len(result))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
    seconds = time.perf_counter() - start_time
    stats = {
        obj_id: {"frames_visible": s["frames"], "mean_score": s["score"] / max(s["frames"], 1)}
        for obj_id, s in sorted(object_stats.items())
    }
    summary = VideoRunSummary(
        output_dir=str(output_dir),
        num_frames=num_frames,
        frames_processed=processed,
        frames_resumed=max(resume_from, 0),
        seconds=seconds,
        fps=processed / seconds if seconds > 0 else 0.0,
        stage_ms_per_frame=timer.per_frame_ms(processed),
        objects=stats,
        complete=not interrupted,
    )
    write_text_atomic(output_dir / SUMMARY, json.dumps(asdict(summary), indent=2))
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _restore(tracker: VideoTracker, frame: np.ndarray, output_dir: Path, name: str,
             frame_idx: int) -> None:
    """Re-create the tracker's objects from a completed frame's PNG."""
    index = load_index_mask(output_dir, name, (frame.shape[0], frame.shape[1]))
    tracker.state.frame_idx = frame_idx - 1
    tracker.step(frame)
    for obj_id in (int(i) for i in np.unique(index) if i != 0):
        tracker.add_object(mask=index == obj_id, obj_id=obj_id)


def accumulate_object_stats(stats: dict[int, dict[str, float]], result: FrameResult) -> None:
    """Add one frame's visible objects to per-object {"frames", "score"} sums."""
    for obj_id, score in zip(result.obj_ids.tolist(), result.scores.tolist(), strict=True):
        entry = stats.setdefault(obj_id, {"frames": 0, "score": 0.0})
        entry["frames"] += 1
        entry["score"] += score
