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

from repvit_sam.segmenter import DecodePrompts, MaskPrediction, SegmenterWrapper
from vos.config import RunConfig, config_to_dict
from vos.io.atomic import write_text_atomic
from vos.io.prompt_input import check_prompts
from vos.io.sinks import ResultSink, completed_frames, load_index_mask
from vos.io.sources import FrameSource, SourceError, prefetch
from vos.tracker import VideoTracker
from vos.types import FrameResult, Prompt, PromptError, TrackerState

logger = logging.getLogger(__name__)

RUN_RECORD = "run.json"
SUMMARY = "summary.json"


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


class TimedSegmenter(SegmenterWrapper):
    """Wraps a segmenter and accounts the time of ``encode`` and ``decode`` calls."""

    def __init__(self, inner: Any, timer: StageTimer) -> None:
        super().__init__(inner)
        self.timer = timer

    def encode(self, image: np.ndarray) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.encode(image)
        finally:
            self.timer.add("encode", time.perf_counter() - start)

    def decode_prompts(self, embedding: Any, prompts: DecodePrompts) -> MaskPrediction:
        start = time.perf_counter()
        try:
            return self.inner.decode(embedding, prompts)
        finally:
            self.timer.add("decode masks", time.perf_counter() - start)


def _fingerprint(source: str, prompts: Sequence[Prompt], config: RunConfig) -> str:
    """A hash of what determines a run's results (resume refuses a different run)."""
    digest = hashlib.sha256()
    digest.update(str(Path(source).resolve() if Path(source).exists() else source).encode())
    for prompt in prompts:
        for value in (prompt.mask, prompt.box_xyxy, prompt.points_xy, prompt.point_labels):
            digest.update(b"-" if value is None else np.ascontiguousarray(value).tobytes())
        digest.update(str(prompt.obj_id).encode())
    relevant = {key: config_to_dict(getattr(config, key)) for key in ("model", "prompt", "tracker")}
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
            for frame_idx, frame in zip(range(resume_from), frames, strict=False):
                sink.replay(names[frame_idx], frame)
                bar.update(1)
                if frame_idx == resume_from - 1:
                    _restore(tracker, frame, output_dir, names[frame_idx], frame_idx, config.seed)
            for result in tracker.track(frames, {init_frame: prompts}):
                write_start = time.perf_counter()
                sink.write(names[result.frame_idx], tracker.state.frame, result)
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
             frame_idx: int, seed: int) -> None:
    """Re-create the tracker's objects on a completed frame from its written masks."""
    index = load_index_mask(output_dir, name, (frame.shape[0], frame.shape[1]))
    tracker.restore(TrackerState(frame_idx=frame_idx - 1, rng=np.random.default_rng(seed)))
    tracker.step(frame, [Prompt(mask=index == obj_id, obj_id=obj_id)
                         for obj_id in (int(i) for i in np.unique(index) if i != 0)])


def accumulate_object_stats(stats: dict[int, dict[str, float]], result: FrameResult) -> None:
    """Add one frame's visible objects to per-object {"frames", "score"} sums."""
    for obj_id, score in zip(result.obj_ids.tolist(), result.scores.tolist(), strict=True):
        entry = stats.setdefault(obj_id, {"frames": 0, "score": 0.0})
        entry["frames"] += 1
        entry["score"] += score
