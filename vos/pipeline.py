"""The video pipeline behind ``python -m vos.run``: source -> tracker -> sinks, resumable.

Kept out of ``run.py`` so that the CLI stays a thin argument parser and the batch and
evaluation modes reuse exactly the same loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repvit_sam.segmenter import DecodePrompts, MaskPrediction, SegmenterWrapper
from vos.config import RunConfig, config_to_dict, dump_config
from vos.io.atomic import OutputWriteError, write_text_atomic
from vos.io.lock import FolderLock
from vos.io.pass_results import BACKWARD_DIR, completed_results, load_result, save_result
from vos.io.prompt_input import check_prompts, prompt_plan, tracker_numbering
from vos.io.resume_state import (
    STATE_DIR,
    Snapshot,
    estimated_state_bytes,
    latest_state,
    load_snapshot,
    prune_states,
    save_snapshot,
    take_snapshot,
)
from vos.io.sinks import ResultSink, completed_frames
from vos.io.sources import VIDEO_READERS, FrameSource, SourceError, SourceInfo, prefetch
from vos.models import checkpoint_digest
from vos.passes import DIRECTIONS, PassPlan, merged, selected
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
    """Wraps a segmenter and accounts the time of ``encode`` and ``decode`` calls.

    Thread-safe like every segmenter: the timer's sums are updated under a lock (a read,
    add and write that two threads interleave would lose one of the two times).
    """

    def __init__(self, inner: Any, timer: StageTimer) -> None:
        super().__init__(inner)
        self.timer = timer
        self._timer_lock = threading.Lock()

    def _add(self, stage: str, start: float) -> None:
        elapsed = time.perf_counter() - start
        with self._timer_lock:
            self.timer.add(stage, elapsed)

    def encode(self, image: np.ndarray) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.encode(image)
        finally:
            self._add("encode", start)

    def decode_prompts(self, embedding: Any, prompts: DecodePrompts) -> MaskPrediction:
        start = time.perf_counter()
        try:
            return self.inner.decode(embedding, prompts)
        finally:
            self._add("decode masks", start)


def _fingerprint(
    source: str,
    prompts: Sequence[Prompt],
    config: RunConfig,
    plan: PassPlan | None = None,
    file_prompts: Mapping[int, Sequence[Prompt]] | None = None,
) -> str:
    """A hash of what determines a run's results (resume refuses a different run).

    A forward run of ``--init-*`` prompts alone hashes as earlier versions did, so their
    interrupted runs still resume; the prompts of a ``--prompts`` file, the direction and
    ids numbered otherwise than earlier versions did are hashed beside.
    """
    digest = hashlib.sha256()
    digest.update(str(Path(source).resolve() if Path(source).exists() else source).encode())
    for prompt in prompts:
        _hash_prompt(digest, prompt)
    relevant = {key: config_to_dict(getattr(config, key)) for key in ("model", "prompt", "tracker")}
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    for frame_idx, frame_prompts in sorted((file_prompts or {}).items()):
        digest.update(f"file prompts on frame {frame_idx}".encode())
        for prompt in frame_prompts:
            _hash_prompt(digest, prompt)
    if plan is not None:
        if plan.direction != "forward":
            digest.update(f"direction={plan.direction}".encode())
        ids = [p.obj_id for ps in plan.prompts.values() for p in ps]
        if not file_prompts and ids != tracker_numbering(prompts):
            # Numbered around a given id that earlier versions let one object replace.
            digest.update(f"obj_ids={ids}".encode())
    return digest.hexdigest()[:16]


def _hash_prompt(digest: Any, prompt: Prompt) -> None:
    for value in (prompt.mask, prompt.box_xyxy, prompt.points_xy, prompt.point_labels):
        digest.update(b"-" if value is None else np.ascontiguousarray(value).tobytes())
    digest.update(str(prompt.obj_id).encode())


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
    frames_tracked_all_runs: int = 0
    seconds_all_runs: float = 0.0
    frames_backward: int = 0
    frames_read: int = 0


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
    frame_prompts: Mapping[int, Sequence[Prompt]] | None = None,
    direction: str = "forward",
) -> VideoRunSummary:
    """Track the prompted objects through a video and write every output, resumably.

    The output folder is locked for the whole run (a second run there is refused at once).
    With every complete frame the run's state is saved (``vos.io.resume_state``), so a run
    interrupted anywhere (Ctrl-C, SIGKILL, a full disk) and started again continues from its
    last complete frame and writes exactly the masks and JSON an uninterrupted run writes.

    With ``direction`` ``backward`` or ``both`` (see :class:`PassPlan`) the backward pass runs
    first and keeps each frame's result in ``<output_dir>/.backward/`` (resumable too, with
    its own state); the forward pass then writes every frame in order, its own objects merged
    with the backward results of that frame. The folder is removed when the run completes.

    Args:
        source: an opened frame source (its ``info`` gives size, count and fps).
        predictor: the segmenter (``encode``/``decode``), e.g. ``vos.models.build_segmenter``'s.
        prompts: the objects to track, applied on ``init_frame`` (ids may be None: they are
            numbered 1, 2, ..., above any id given elsewhere).
        output_dir: results folder; an earlier interrupted run of the same command there is
            resumed from its last complete frame.
        config: the run configuration (model, tracker, prompt and io parts are used; it is
            recorded as ``resolved_config.yaml`` with the checkpoint's hash).
        init_frame: frame index at which ``prompts`` apply.
        max_frames: stop after this many frames (None = whole video).
        overwrite: ignore and replace earlier results in ``output_dir``.
        progress: show a tqdm progress bar.
        frame_prompts: more prompts, by frame_idx, each with its obj_id (e.g. those of
            ``vos.io.prompt_input.prompts_from_file``).
        direction: ``forward`` (frames before an object's first prompt stay empty),
            ``backward`` or ``both``.

    Returns:
        The run summary (also written to ``summary.json``); its object statistics cover every
        frame of the video, those of earlier interrupted runs included.

    Raises:
        SourceError, PromptError: bad inputs (before anything is written).
        OutputBusyError: another run writes to ``output_dir``.
        OutputConflictError: ``output_dir`` holds another run's results (nothing is written).
        OutputWriteError: the folder cannot be written (full disk, read-only, permissions);
            every frame written before stays whole and a later run resumes after them.
    """
    info = source.info
    num_frames = info.num_frames
    if num_frames is None:
        raise SourceError(f"{info.name}: a live source cannot be processed as a video file")
    if max_frames is not None:
        num_frames = min(num_frames, max_frames)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
    if not 0 <= init_frame < num_frames:
        raise PromptError(f"--init-frame {init_frame}: the video has {num_frames} frames")
    prompts = check_prompts(prompts, info.image_hw) if prompts or not frame_prompts else []
    file_prompts = _checked_frame_prompts(frame_prompts or {}, info.image_hw, num_frames)
    plan = PassPlan.of(prompt_plan(prompts, init_frame, file_prompts), direction)
    fingerprint = _fingerprint(info.name, prompts, config, plan, file_prompts)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputWriteError(f"--output {output_dir}: is a file, expected a folder")
    try:
        with FolderLock(output_dir):
            return _run_locked(source, predictor, plan, fingerprint, output_dir, config,
                               num_frames, overwrite, progress)
    except OSError as exc:
        raise OutputWriteError(_write_failure(exc, output_dir)) from None


def _checked_frame_prompts(
    frame_prompts: Mapping[int, Sequence[Prompt]], image_hw: tuple[int, int], num_frames: int
) -> dict[int, list[Prompt]]:
    """``frame_prompts`` checked strictly against the video (frames, ids, sizes)."""
    checked: dict[int, list[Prompt]] = {}
    for frame_idx, prompts in sorted(frame_prompts.items()):
        if not 0 <= frame_idx < num_frames:
            raise PromptError(f"prompts on frame {frame_idx}: out of range; the video has "
                              f"{num_frames} frames (0..{num_frames - 1})")
        if any(p.obj_id is None for p in prompts):
            raise PromptError(f"prompts on frame {frame_idx}: expected an obj_id in each")
        checked[frame_idx] = [p.checked(image_hw, clip=False) for p in prompts]
    return checked


def _run_locked(
    source: FrameSource,
    predictor: Any,
    plan: PassPlan,
    fingerprint: str,
    output_dir: Path,
    config: RunConfig,
    num_frames: int,
    overwrite: bool,
    progress: bool,
) -> VideoRunSummary:
    from tqdm import tqdm

    info = source.info
    names = frame_names_for(source, num_frames)
    done, snapshot = _earlier_progress(output_dir, fingerprint, names, overwrite, source=info)
    # Only now, with the folder locked and known to be ours, is anything written.
    write_text_atomic(
        output_dir / RUN_RECORD,
        json.dumps({"fingerprint": fingerprint, "source": info.name, "num_frames": num_frames,
                    "reader": info.reader, "source_frames": info.num_frames}, indent=2),
    )
    dump_config(config, output_dir / "resolved_config.yaml",
                checkpoint_sha256=checkpoint_digest(config.model))

    timer = StageTimer()
    segmenter = TimedSegmenter(predictor, timer)
    totals = RunTotals.from_json(snapshot.summary if snapshot is not None else {})
    io = config.io
    start_time = time.perf_counter()
    run = _RunProgress(start_time, done)
    backward_dir = output_dir / BACKWARD_DIR
    try:
        if done < plan.backward_end:
            # Frames from ``done`` on still need backward results: make the missing ones.
            run.backward = _track_backward(source, segmenter, config, plan, backward_dir,
                                           stop_frame=done, timer=timer, progress=progress)
    except KeyboardInterrupt:
        run.interrupted = True
    except OSError:
        _write_summary(output_dir, num_frames, run, timer, totals, complete=False, quiet=True)
        raise
    if run.interrupted:
        _write_summary(output_dir, num_frames, run, timer, totals, complete=False)
        raise KeyboardInterrupt

    tracker = VideoTracker(segmenter, config.tracker, config.prompt, seed=config.seed)
    frames = _timed(prefetch(source.frames(0, num_frames)), timer)
    snapshots = _SnapshotPolicy(STATE_BYTES_PER_FRAME)
    try:
        with ResultSink(output_dir, info.image_hw, info.fps, save_png=io.save_png,
                        save_json=io.save_json, save_video=io.save_video) as sink:
            bar = tqdm(total=num_frames, initial=0, unit="frame", disable=not progress,
                       desc=Path(info.name).name, dynamic_ncols=True)
            try:
                # Frames complete before: only their overlay is drawn again (from the masks).
                for frame_idx, frame in zip(range(done), frames, strict=False):
                    sink.replay(names[frame_idx], frame)
                    run.read += 1
                    bar.update(1)
                if snapshot is not None:
                    tracker.restore(snapshot.tracker)
                    segmenter.load_stream_state(snapshot.segmenter)
                for own in tracker.track(frames, plan.forward_prompts):
                    write_start = time.perf_counter()
                    result = own
                    if own.frame_idx < plan.backward_end:
                        result = merged(own, load_result(backward_dir, own.frame_idx))
                    totals.add(result, run.elapsed_since_last())
                    state = None
                    if sink.resumable and snapshots.due(own.frame_idx, tracker.state):
                        state = take_snapshot(tracker.state, segmenter.stream_state(),
                                              totals.to_json())
                    sink.write(names[own.frame_idx], tracker.state.frame, result, state)
                    timer.add("write (queue)", time.perf_counter() - write_start)
                    run.processed += 1
                    run.read += 1
                    bar.update(1)
                    bar.set_postfix(fps=f"{run.fps():.2f}", objects=len(result))
            except KeyboardInterrupt:
                run.interrupted = True
            finally:
                bar.close()
    except OSError:
        _write_summary(output_dir, num_frames, run, timer, totals, complete=False, quiet=True)
        raise
    complete = not run.interrupted and run.read >= num_frames
    if not run.interrupted and not complete:
        # The source ended early (a reader that decodes fewer frames than it announced).
        logger.warning("%s: the source gave %d of its %d frames; the run is incomplete",
                       info.name, run.read, num_frames)
    if complete:
        # Every frame is written: the backward results served their purpose.
        shutil.rmtree(backward_dir, ignore_errors=True)
    summary = _write_summary(output_dir, num_frames, run, timer, totals, complete=complete)
    if run.interrupted:
        raise KeyboardInterrupt
    return summary


def _track_backward(
    source: FrameSource,
    segmenter: TimedSegmenter,
    config: RunConfig,
    plan: PassPlan,
    folder: Path,
    *,
    stop_frame: int,
    timer: StageTimer,
    progress: bool,
) -> int:
    """Run the backward pass from ``plan.latest`` down to ``stop_frame``, resumably.

    Each frame's result (the objects :meth:`PassPlan.backward_ids` takes from it) goes to
    ``folder`` as it completes, after the tracker's state when one is due (as the forward
    pass does, states of big runs every few frames), so an interrupted pass continues from
    its newest state and writes the same bytes again.

    Returns:
        The frames tracked by this call.
    """
    from tqdm import tqdm

    order = list(range(plan.latest, stop_frame - 1, -1))  # the pass's frame i is order[i]
    done = completed_results(folder, order)
    if done == len(order):
        return 0
    start, saved = 0, latest_state(folder, before=done)
    snapshot = None
    if saved is not None:
        try:
            snapshot = load_snapshot(saved)
            start = snapshot.frame_idx + 1
        except ValueError as exc:
            logger.warning("%s; the backward pass starts over", exc)
    tracker = VideoTracker(segmenter, config.tracker, config.prompt, seed=config.seed)
    fresh = segmenter.stream_state()
    if snapshot is not None:
        tracker.restore(snapshot.tracker)
        segmenter.load_stream_state(snapshot.segmenter)
    frames = _timed(prefetch(frames_backward(source, stop_frame, order[start])), timer)
    snapshots = _SnapshotPolicy(STATE_BYTES_PER_FRAME)
    bar = tqdm(total=len(order), initial=start, unit="frame", disable=not progress,
               desc=f"{Path(source.info.name).name} (backward)", dynamic_ncols=True)
    tracked = 0
    try:
        for result in tracker.track(frames, plan.backward_prompts):
            frame_idx = order[result.frame_idx]
            state = None
            if snapshots.due(result.frame_idx, tracker.state):
                state = take_snapshot(tracker.state, segmenter.stream_state(), {})
                save_snapshot(folder, state)
            keep = plan.backward_ids(frame_idx)
            save_result(folder, selected(dataclasses.replace(result, frame_idx=frame_idx), keep))
            if state is not None:
                prune_states(folder, keep_from=result.frame_idx)
            tracked += 1
            bar.update(1)
    finally:
        bar.close()
        # The forward pass starts with the segmenter as it was (an ROI crop memory is per
        # pass), or continues from its own saved state.
        segmenter.load_stream_state(fresh)
    return tracked


def frames_backward(source: FrameSource, first: int, last: int,
                    chunk_bytes: int = 256 << 20) -> Iterator[np.ndarray]:
    """Frames ``last``, ``last - 1``, ..., ``first`` of a source, read in forward chunks.

    A chunk holds up to ``chunk_bytes`` of frames (at least 8), so a video is decoded about
    once whatever its length (a seek per chunk) and memory stays bounded.

    Raises:
        SourceError: a frame in the range cannot be read.
    """
    h, w = source.info.image_hw
    chunk = max(8, chunk_bytes // max(1, h * w * 3))
    end = last + 1
    while end > first:
        begin = max(first, end - chunk)
        block = list(source.frames(begin, end))
        if len(block) != end - begin:
            raise SourceError(f"{source.info.name}: frames {begin}..{end - 1} cannot be read "
                              f"(got {len(block)} of {end - begin})")
        while block:
            yield block.pop()
        end = begin


# Resume-state bytes written per frame at most, on average: a state holds every object's
# mask and (1, 256, 256) float32 logits (~0.3 MB each), so beyond ~25 objects it is written
# every few frames (a resumed run then tracks those few frames again, to the same bytes).
STATE_BYTES_PER_FRAME = 8 << 20


@dataclass
class _SnapshotPolicy:
    """When to save the resume state: every frame while it is small, else every k frames."""

    bytes_per_frame: int
    last: int = -(1 << 30)

    def due(self, frame_idx: int, state: TrackerState) -> bool:
        every = max(1, -(-estimated_state_bytes(state) // self.bytes_per_frame))
        if frame_idx - self.last < every:
            return False
        self.last = frame_idx
        return True


@dataclass
class _RunProgress:
    """This run's counters (the summary's "this run" half)."""

    start_time: float
    resumed: int
    processed: int = 0
    read: int = 0  # frames the source gave this run (redrawn and tracked)
    backward: int = 0
    interrupted: bool = False
    _last: float = 0.0

    def elapsed_since_last(self) -> float:
        """Seconds since the previous call (or the start)."""
        now = time.perf_counter() - self.start_time
        delta, self._last = now - self._last, now
        return delta

    def fps(self) -> float:
        elapsed = time.perf_counter() - self.start_time
        return self.processed / elapsed if elapsed > 0 else 0.0


@dataclass
class RunTotals:
    """The summary's accumulators over every run of one output folder (saved for resume).

    Attributes:
        objects: per obj_id, frames visible and the sum of their predicted IoU.
        frames: frames tracked, over all runs.
        seconds: tracking seconds, over all runs.
    """

    objects: dict[int, dict[str, float]] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0

    def add(self, result: FrameResult, seconds: float) -> None:
        """Count one frame's visible objects and the time it took."""
        accumulate_object_stats(self.objects, result)
        self.frames += 1
        self.seconds += seconds

    def to_json(self) -> dict[str, Any]:
        return {"objects": {str(k): v for k, v in self.objects.items()}, "frames": self.frames,
                "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunTotals:
        objects = {int(k): dict(v) for k, v in data.get("objects", {}).items()}
        return cls(objects, int(data.get("frames", 0)), float(data.get("seconds", 0.0)))


def _earlier_progress(
    output_dir: Path, fingerprint: str, names: list[str], overwrite: bool,
    source: SourceInfo | None = None,
) -> tuple[int, Snapshot | None]:
    """(frames already complete, the state after the last of them) of an earlier run here.

    Raises:
        OutputConflictError: the folder holds another run's results, or an unreadable record.
    """
    record_path = output_dir / RUN_RECORD
    # Temp files of a killed run (atomic writes that never reached their rename): with the
    # folder locked, no live writer owns them.
    backward = output_dir / BACKWARD_DIR
    for folder in (output_dir, output_dir / "masks", output_dir / "json", output_dir / STATE_DIR,
                   backward, backward / STATE_DIR):
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    if overwrite:
        for sub in ("masks", "json", STATE_DIR):
            for old in (output_dir / sub).glob("*"):
                old.unlink()
        shutil.rmtree(backward, ignore_errors=True)
        return 0, None
    if not record_path.exists():
        return 0, None
    try:
        previous = json.loads(record_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        previous = None
    if not isinstance(previous, dict):
        raise OutputConflictError(
            f"{record_path}: unreadable (not the JSON record of a run); pass --overwrite or "
            "choose another --output"
        )
    if previous.get("fingerprint") != fingerprint:
        raise OutputConflictError(
            f"{output_dir}: holds results of a different run (source, prompts or config "
            "differ); pass --overwrite or choose another --output"
        )
    if source is not None:
        _check_same_frames(output_dir, previous, source)
    done = completed_frames(output_dir, names)
    saved = latest_state(output_dir, before=done)
    if saved is None:
        if done:
            # Frames without a state (an older version wrote them): recompute them all, which
            # writes the same bytes again.
            logger.warning("%s: no resume state; starting over", output_dir)
        return 0, None
    try:
        snapshot = load_snapshot(saved)
    except ValueError as exc:
        logger.warning("%s; starting over", exc)
        return 0, None
    # Frames after the newest state (states of big runs are saved every few frames) are
    # tracked again from it, and written again with the same bytes.
    return snapshot.frame_idx + 1, snapshot


def _check_same_frames(output_dir: Path, previous: dict[str, Any], source: SourceInfo) -> None:
    """Refuse to resume where the frames would be read otherwise (issue 23).

    Another reader, or another frame count from the same file, can give other frames (decord
    padded a stream-copy trim with copies of its last frame), so masks would pair with the
    wrong frames. Records of earlier versions, without these keys, are not checked.
    """
    then_reader, then_frames = previous.get("reader") or "", previous.get("source_frames")
    same_reader = not then_reader or not source.reader or then_reader == source.reader
    if same_reader and (then_frames is None or then_frames == source.num_frames):
        return
    hint = f"pass --reader {then_reader}, " if then_reader in VIDEO_READERS else "pass "
    raise OutputConflictError(
        f"{output_dir}: holds results of {then_frames} frames read with {then_reader or '?'}; "
        f"this run reads {source.num_frames} with {source.reader or '?'} (the frames may "
        f"differ); {hint}--overwrite or choose another --output"
    )


def _write_summary(
    output_dir: Path,
    num_frames: int,
    run: _RunProgress,
    timer: StageTimer,
    totals: RunTotals,
    *,
    complete: bool,
    quiet: bool = False,
) -> VideoRunSummary:
    seconds = time.perf_counter() - run.start_time
    summary = VideoRunSummary(
        output_dir=str(output_dir),
        num_frames=num_frames,
        frames_processed=run.processed,
        frames_resumed=run.resumed,
        seconds=seconds,
        fps=run.processed / seconds if seconds > 0 else 0.0,
        stage_ms_per_frame=timer.per_frame_ms(run.processed + run.backward),
        objects={
            obj_id: {"frames_visible": s["frames"], "mean_score": s["score"] / max(s["frames"], 1)}
            for obj_id, s in sorted(totals.objects.items())
        },
        complete=complete,
        frames_tracked_all_runs=totals.frames,
        seconds_all_runs=totals.seconds,
        frames_backward=run.backward,
        frames_read=run.read,
    )
    try:
        write_text_atomic(output_dir / SUMMARY, json.dumps(asdict(summary), indent=2))
    except OSError:
        if not quiet:
            raise
    return summary


def _write_failure(exc: OSError, output_dir: Path) -> str:
    """One line for a file-system failure: what, where, and that the run can resume."""
    where = exc.filename or output_dir
    reason = exc.strerror or str(exc)
    return (f"cannot write {where}: {reason}; the frames written before are whole, and the "
            "same command resumes after them once the folder can be written again")


def accumulate_object_stats(stats: dict[int, dict[str, float]], result: FrameResult) -> None:
    """Add one frame's visible objects to per-object {"frames", "score"} sums."""
    for obj_id, score in zip(result.obj_ids.tolist(), result.scores.tolist(), strict=True):
        entry = stats.setdefault(obj_id, {"frames": 0, "score": 0.0})
        entry["frames"] += 1
        entry["score"] += score
