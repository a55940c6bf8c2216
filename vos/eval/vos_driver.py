"""Semi-supervised VOS runs on any preset: prompts from the annotations, tracking, results.

Per sequence (:func:`plan_sequence`, :func:`track_sequence`): the objects enter the tracker
as the preset says (the first frame's objects, or each object on the frame of its first
non-empty mask, later masks never given), every frame is tracked and written in the
preset's layout (one palette PNG per frame, lower id wins where masks overlap; or one binary
PNG per object and frame, masks free to overlap), and a completion marker makes the sequence
a resume unit. :func:`track_sequences` runs the sequences here, one after the other, or on
the batch engines (a local process pool or Ray), one model per worker.

Example:
    >>> data = VosDataset(Path("MOSE/valid"), preset("mose"))
    >>> timings = track_sequences(data, data.sequences(), Path("out/mose"),
    ...                           make_tracker=lambda: VideoTracker(segmenter))
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vos.batch.engines import EngineRun, run_local, run_ray
from vos.batch.errors import describe
from vos.batch.results import base_record
from vos.batch.worker import PredictorFactory, VideoWorker
from vos.config import RunConfig
from vos.eval.datasets import DatasetError, VosDataset
from vos.eval.presets import VosPreset
from vos.io.atomic import write_text_atomic
from vos.io.davis_png import write_palette_png
from vos.io.sources import ImageFolderSource, prefetch
from vos.tracker import VideoTracker
from vos.types import FrameResult, Prompt

__all__ = [
    "COMPLETE_MARKER",
    "ParallelRun",
    "SequencePlan",
    "SequenceTiming",
    "SequenceWorker",
    "ground_truth_present",
    "plan_sequence",
    "track_sequence",
    "track_sequences",
    "tracker_for",
    "vos_sequences",
]

COMPLETE_MARKER = ".complete.json"


@dataclass
class SequenceTiming:
    """Per-sequence run time."""

    name: str
    frames: int
    seconds: float
    skipped: bool


@dataclass(frozen=True)
class SequencePlan:
    """What the tracker is given for one sequence.

    Attributes:
        name: the sequence.
        prompts: frame_idx -> the objects entering on that frame (mask prompts with obj_id).
        annotated: stems of the frames with an annotation.
        object_folders: per-object layouts: obj_id -> the object's folder name; empty for
            palette layouts, whose obj_ids are the palette values.
        num_frames: frames of the sequence.
        revisited: an annotation the scan read shows an object again after its entry.
    """

    name: str
    prompts: dict[int, list[Prompt]]
    annotated: tuple[str, ...]
    num_frames: int
    object_folders: dict[int, str] = field(default_factory=dict)
    revisited: bool = False

    @property
    def has_ground_truth(self) -> bool:
        """Annotations beyond the prompts exist (else only a server can score): a frame
        annotated where no object enters, or an object annotated again after its entry.
        YouTube-VOS valid annotates each object only on its first frame; its later
        annotation PNGs hold only the objects entering there."""
        return self.revisited or len(self.annotated) > len(self.prompts)


def vos_sequences(dataset: VosDataset, sequences: Sequence[str] | None = None) -> list[str]:
    """The sequences to run, each checked to have its frames folder (before any model loads)."""
    names = dataset.sequences(sequences)
    for name in names:
        dataset.check_sequence(name)
    return names


def plan_sequence(dataset: VosDataset, seq: str) -> SequencePlan:
    """Read a sequence's annotations into prompts, by the preset's ``objects_from`` rule.

    Raises:
        DatasetError: the first frame has no annotation (``first_frame``), a mask does not
            match the frame size, or no annotation holds an object.
    """
    stems = [p.stem for p in dataset.frame_paths(seq)]
    frame_of = {stem: idx for idx, stem in enumerate(stems)}
    annotated = tuple(s for s in dataset.annotation_stems(seq) if s in frame_of)
    folders = dict(enumerate(dataset.object_folders(seq), start=1)) \
        if dataset.preset.per_object else {}
    if dataset.preset.objects_from == "first_frame":
        if stems[0] not in annotated:
            raise DatasetError(f"{dataset.annotations_dir(seq) / stems[0]}.png: the first-frame "
                               "annotation is missing")
        candidates = annotated[:1]
    else:
        candidates = annotated
    # Objects meta.json lists: the scan can stop once each has been seen.
    expected = {int(k) for k in dataset.meta_objects(seq) if str(k).isdigit()}
    hw = ImageFolderSource(dataset.images_dir(seq)).info.image_hw
    prompts: dict[int, list[Prompt]] = {}
    entered: set[int] = set()
    revisited = False
    for stem in candidates:
        for obj_id, mask in sorted(dataset.read_objects(seq, stem).items()):
            if mask.shape != hw:
                raise DatasetError(f"{seq}/{stem}: annotation size {mask.shape} differs from "
                                   f"the frames' {hw}")
            if obj_id in entered:
                revisited = revisited or bool(mask.any())
            elif mask.any():
                entered.add(obj_id)
                prompts.setdefault(frame_of[stem], []).append(Prompt(mask=mask, obj_id=obj_id))
        if expected and expected <= entered:
            break
    if not prompts:
        where = "the first-frame annotation" if candidates == annotated[:1] else "any annotation"
        raise DatasetError(f"sequence {seq!r}: no object in {where}")
    return SequencePlan(seq, prompts, annotated, len(stems), folders, revisited)


def ground_truth_present(dataset: VosDataset, names: Sequence[str]) -> bool:
    """Whether the annotations can score these sequences: every sequence annotated beyond its
    prompts, and on every frame where the preset scores by the DAVIS rule."""
    for name in names:
        plan = plan_sequence(dataset, name)
        if not plan.has_ground_truth or (
                dataset.preset.scorer == "davis" and len(plan.annotated) < plan.num_frames):
            return False
    return True


def tracker_for(predictor: Any, cfg: RunConfig, preset: VosPreset) -> VideoTracker:
    """A fresh tracker for one sequence; per-object layouts keep overlapping masks (SA-V
    annotates a person and their hand as two objects)."""
    tracker_cfg = cfg.tracker
    if preset.per_object:
        tracker_cfg = dataclasses.replace(tracker_cfg, overlap="none")
    return VideoTracker(predictor, tracker_cfg, cfg.prompt, seed=cfg.seed)


def _write_frame(seq_dir: Path, stem: str, result: FrameResult, plan: SequencePlan) -> None:
    if not plan.object_folders:
        write_palette_png(seq_dir / f"{stem}.png", result.to_index_mask("lower_id_wins"))
        return
    shown = dict(zip(result.obj_ids.tolist(), result.masks, strict=True))
    empty = np.zeros(result.image_hw, bool)
    for obj_id, folder in plan.object_folders.items():
        write_palette_png(seq_dir / folder / f"{stem}.png", shown.get(obj_id, empty))


def track_sequence(
    dataset: VosDataset,
    plan: SequencePlan,
    output_dir: Path,
    tracker: VideoTracker,
    *,
    progress: bool = False,
) -> SequenceTiming:
    """Track one sequence from its plan and write every frame's results, then its marker.

    Args:
        dataset: the dataset (frames are read from it).
        plan: the sequence's prompts (:func:`plan_sequence`).
        output_dir: results root; ``<seq>/<stem>.png`` or ``<seq>/<obj>/<stem>.png``.
        tracker: a fresh tracker.
        progress: show a per-frame progress bar.
    """
    from tqdm import tqdm

    source = ImageFolderSource(dataset.images_dir(plan.name))
    seq_dir = output_dir / plan.name
    start = time.perf_counter()
    frames = tqdm(prefetch(source.frames()), total=source.info.num_frames, desc=plan.name,
                  unit="frame", leave=False, disable=not progress)
    for result in tracker.track(frames, plan.prompts):
        _write_frame(seq_dir, source.paths[result.frame_idx].stem, result, plan)
    seconds = time.perf_counter() - start
    frames_done = source.info.num_frames or 0
    write_text_atomic(seq_dir / COMPLETE_MARKER, json.dumps({"frames": frames_done,
                                                             "seconds": seconds}))
    return SequenceTiming(plan.name, frames_done, seconds, False)


def _finished(output_dir: Path, name: str) -> SequenceTiming | None:
    marker = output_dir / name / COMPLETE_MARKER
    if not marker.exists():
        return None
    record = json.loads(marker.read_text())
    return SequenceTiming(name, record["frames"], record["seconds"], True)


@dataclass(frozen=True)
class ParallelRun:
    """How to run sequences on the batch engines.

    Attributes:
        cfg: the run configuration the workers build their models from.
        factory: picklable top-level ``cfg -> segmenter``; None builds ``cfg.model``'s.
        workers: parallel models (None: the engine's default).
        engine: "local" (spawned processes) or "ray".
        ray_address: ``ray.init`` address; None starts a local Ray.
        retries: re-runs of a sequence whose worker died.
    """

    cfg: RunConfig
    factory: PredictorFactory | None = None
    workers: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    retries: int = 1


def track_sequences(
    dataset: VosDataset,
    names: Sequence[str],
    output_dir: Path,
    *,
    make_tracker: Callable[[], VideoTracker] | None = None,
    parallel: ParallelRun | None = None,
    progress: bool = True,
) -> list[SequenceTiming]:
    """Track every sequence not finished before, here or on the engines; resumable.

    Args:
        dataset: the dataset.
        names: the sequences, in order.
        output_dir: results root; a sequence with its completion marker is skipped.
        make_tracker: builds a fresh tracker per sequence (runs here, one at a time).
        parallel: run on the batch engines instead (``make_tracker`` is then unused).
        progress: show progress bars.

    Returns:
        One timing per sequence, in ``names`` order (``skipped`` for earlier runs).

    Raises:
        DatasetError: a sequence failed on a worker (the others are kept; rerun to resume).
    """
    from tqdm import tqdm

    todo = [name for name in names if _finished(output_dir, name) is None]
    if parallel is not None and todo:
        _track_on_engine(dataset, todo, output_dir, parallel, progress)
    elif todo:
        if make_tracker is None:
            raise ValueError("track_sequences: give make_tracker or parallel")
        for name in tqdm(todo, desc=dataset.preset.title, unit="seq", disable=not progress):
            track_sequence(dataset, plan_sequence(dataset, name), output_dir, make_tracker(),
                           progress=progress)
    timings = []
    for name in names:
        timing = _finished(output_dir, name)
        assert timing is not None, name
        timings.append(dataclasses.replace(timing, skipped=name not in todo))
    return timings


@dataclass(frozen=True)
class SequenceJob:
    """One sequence as an engine job (``row``, ``key`` and ``video`` name it in records)."""

    row: int
    key: str
    video: str


@dataclass(frozen=True)
class SequenceOptions:
    """What every worker needs besides the job: the dataset and the results root."""

    dataset: VosDataset
    output_root: str


class SequenceWorker:
    """An engine worker that tracks benchmark sequences with one model.

    Args:
        cfg: the run configuration.
        predictor_factory: top-level ``cfg -> segmenter``; None builds ``cfg.model``'s.
        num_threads: torch intra-op threads of this worker.
    """

    def __init__(self, cfg: RunConfig, predictor_factory: PredictorFactory | None = None,
                 num_threads: int | None = None) -> None:
        self.cfg = cfg
        # The batch worker owns model building, its errors and thread settings.
        self._models = VideoWorker(cfg, predictor_factory, num_threads)

    def ready(self) -> float:
        """Build the model now; returns the seconds it took."""
        return self._models.ready()

    def process(self, job: SequenceJob, options: SequenceOptions) -> dict[str, Any]:
        """Track one sequence; a bad sequence gives a ``failed`` record, never an exception.

        Raises:
            WorkerInitError: the model cannot be built.
        """
        record = base_record(job, options.output_root)  # type: ignore[arg-type]  # reads row/key/video
        record["worker"] = f"{os.uname().nodename}:{os.getpid()}"
        predictor = self._models.predictor  # outside the try: a model error stops the run
        data = options.dataset
        try:
            timing = track_sequence(data, plan_sequence(data, job.key), Path(options.output_root),
                                    tracker_for(predictor, self.cfg, data.preset))
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            record["error"] = describe(exc)
        else:
            record.update(status="ok", frames=timing.frames, frames_processed=timing.frames,
                          seconds=round(timing.seconds, 3))
        return record


def _track_on_engine(dataset: VosDataset, names: list[str], output_dir: Path,
                     spec: ParallelRun, progress: bool) -> None:
    from tqdm import tqdm

    jobs = [SequenceJob(row, name, name) for row, name in enumerate(names, start=1)]
    failed: list[str] = []
    bar = tqdm(total=len(jobs), desc=f"{dataset.preset.title} ({spec.engine})", unit="seq",
               disable=not progress)

    def on_result(record: dict[str, Any]) -> None:
        bar.update(1)
        if record["status"] != "ok":
            failed.append(f"{record['id']}: {record['error']}")

    run = EngineRun(jobs, SequenceOptions(dataset, str(output_dir)), spec.cfg,  # type: ignore[arg-type]
                    spec.factory, spec.workers, spec.retries, on_result, SequenceWorker)
    try:
        if spec.engine == "ray":
            run_ray(run, address=spec.ray_address)
        else:
            run_local(run)
    finally:
        bar.close()
    if failed:
        raise DatasetError(f"{len(failed)} sequence(s) failed (the others are kept; rerun to "
                           f"resume): {'; '.join(failed)}")
