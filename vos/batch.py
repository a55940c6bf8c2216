"""Batch mode: many videos from a CSV/JSONL manifest, on local processes or a Ray cluster.

``python -m vos.run batch MANIFEST --output DIR`` runs :func:`vos.pipeline.run_video` once per
manifest row, so every video's folder ``DIR/<id>/`` holds exactly what the single-video mode
writes (``masks/``, ``json/``, ``overlay.mp4``, ``summary.json``). The batch itself is
resumable at two levels: ``DIR/batch_results.jsonl`` (and a CSV twin) is rewritten atomically
after every video, and a re-run skips the rows it lists as complete; a video interrupted
half-way is resumed frame by frame by ``run_video``.

One bad video (unreadable file, prompt outside the frame, ...) is recorded as ``failed`` with
a one-line reason and never stops the batch. Workers hold one model each and are reused
across videos: model construction (seconds for RepViT-SAM) is paid once per worker, not once
per video.

Manifest rows (paths are relative to the manifest's folder)::

    video,prompt
    clips/a.mp4,"10,10,40,40;50,8,90,30"      # boxes, one object each
    clips/b.mp4,points:20,30 25,35|60,10,1     # points, objects separated by '|'
    clips/c.mp4,mask:masks/c_first.png         # first-frame index/palette PNG
    clips/d.mp4,auto                           # automatic-mask-generator proposals

JSONL rows take the same keys; ``boxes`` may be a JSON list of [x0, y0, x1, y1], ``points``
a list (one per object) of [x, y] or [x, y, label], and ``auto`` true or a proposal count.
Optional columns/keys: ``id`` (output folder name, default: the video's stem), ``boxes``,
``points``, ``mask``, ``auto``, ``init_frame``, ``max_frames``.

Example:
    >>> summary = run_batch(Path("videos.csv"), Path("out"), load_config(), workers=2)
    >>> summary.counts
    {'ok': 9, 'failed': 1, 'skipped': 0}
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repvit_sam.utils.malloc import retain_freed_memory
from vos.config import RunConfig, dump_config
from vos.io.sinks import write_text_atomic
from vos.types import Prompt

logger = logging.getLogger(__name__)

RESULTS_JSONL = "batch_results.jsonl"
RESULTS_CSV = "batch_results.csv"
ENGINES = ("local", "ray")
RAY_HINT = "the ray engine needs Ray: pip install -e .[ray] (or pip install 'ray[default]')"
RESULT_FIELDS = ("row", "id", "video", "status", "frames", "frames_processed", "seconds",
                 "fps", "objects", "attempts", "worker", "error", "output")
_MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")

PredictorFactory = Callable[[RunConfig], Any]


class BatchError(ValueError):
    """The manifest or the batch options are unusable (one line, before any video runs)."""


class WorkerInitError(RuntimeError):
    """A worker could not build its model; every video would fail the same way."""


@dataclass(frozen=True)
class VideoJob:
    """One manifest row, parsed into picklable plain data.

    Attributes:
        row: 1-based manifest line (CSV: line number, header included), for messages.
        key: output folder name under the batch output folder.
        video: the video as written in the manifest.
        source: the video path resolved against the manifest's folder.
        boxes: one (x0, y0, x1, y1) per object, in frame pixels.
        points: one tuple of (x, y, label) per object, in frame pixels.
        mask: first-frame index/palette PNG (resolved), or None.
        auto: automatic-mask-generator proposals to keep on the init frame, or None.
        init_frame: frame index the prompts apply to.
        max_frames: process only the first N frames (None = all).
        error: why the row cannot run (the job is then recorded as failed without running).
    """

    row: int
    key: str
    video: str
    source: str
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    points: tuple[tuple[tuple[float, float, int], ...], ...] = ()
    mask: str | None = None
    auto: int | None = None
    init_frame: int = 0
    max_frames: int | None = None
    error: str | None = None

    def digest(self, cfg: RunConfig) -> str:
        """A hash of what determines this video's outputs (a changed row is not skipped)."""
        payload = {k: v for k, v in asdict(self).items() if k not in ("row", "error")}
        relevant = {"model": asdict(cfg.model), "prompt": asdict(cfg.prompt),
                    "tracker": asdict(cfg.tracker), "io": asdict(cfg.io), "seed": cfg.seed}
        text = json.dumps([payload, relevant], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class JobOptions:
    """Per-batch settings the workers need besides the job (picklable).

    Attributes:
        output_root: the batch output folder.
        overwrite: replace earlier results instead of resuming them.
        reader: video decoding backend ("auto", "decord" or "opencv").
        auto_points_per_side: point grid of the automatic mask generator.
        auto_max_masks: default proposal count of ``auto`` rows without one.
    """

    output_root: str
    overwrite: bool = False
    reader: str = "auto"
    auto_points_per_side: int = 32
    auto_max_masks: int = 20


@dataclass
class BatchSummary:
    """What a batch did.

    Attributes:
        records: one result record per manifest row, in manifest order (the JSONL rows).
        seconds: wall time of the batch, worker start-up included.
        startup_seconds: time until the first worker was ready (model built).
        engine: "local" or "ray".
        workers: worker processes/actors used.
    """

    records: list[dict[str, Any]]
    seconds: float
    startup_seconds: float
    engine: str
    workers: int

    @property
    def counts(self) -> dict[str, int]:
        """Videos per status: ok (computed now), failed, skipped (complete before)."""
        counts = {"ok": 0, "failed": 0, "skipped": 0}
        for record in self.records:
            counts[record["status"]] = counts.get(record["status"], 0) + 1
        return counts

    @property
    def frames_processed(self) -> int:
        """Frames computed in this batch (resumed and skipped frames excluded)."""
        return sum(int(r.get("frames_processed") or 0) for r in self.records if r["status"] == "ok")

    @property
    def frames_per_second(self) -> float:
        """Frames computed per wall-clock second of the whole batch."""
        return self.frames_processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def videos_per_minute(self) -> float:
        """Videos attempted (ok or failed) per wall-clock minute of the whole batch."""
        done = self.counts["ok"] + self.counts["failed"]
        return 60.0 * done / self.seconds if self.seconds > 0 else 0.0

    @property
    def overhead_per_video(self) -> float:
        """Seconds per attempted video not spent inside ``run_video``, with ideal packing.

        ``(wall * workers - sum of in-worker video seconds) / videos``: worker start-up,
        model construction, scheduling, pickling and idle workers at the tail all count.
        """
        attempted = [r for r in self.records if r["status"] in ("ok", "failed") and r.get("worker")]
        if not attempted:
            return 0.0
        busy = sum(float(r.get("seconds") or 0.0) for r in attempted)
        return max(0.0, self.seconds * self.workers - busy) / len(attempted)


# --------------------------------------------------------------------------- manifest


def read_manifest(path: Path, *, max_frames: int | None = None) -> list[VideoJob]:
    """Parse a CSV (header ``video,prompt,...``) or JSONL manifest into jobs.

    A row that cannot be understood becomes a job with ``error`` set (recorded as failed),
    so one typo does not stop the batch; only an unreadable manifest raises.

    Args:
        path: the manifest; ``.jsonl``/``.ndjson`` is JSON Lines, anything else CSV.
        max_frames: default frame limit of rows without a ``max_frames`` value.

    Returns:
        The jobs in manifest order.

    Raises:
        BatchError: missing or empty manifest, no ``video`` column, invalid JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise BatchError(f"{path}: no such manifest file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = list(_jsonl_rows(path, text))
    else:
        rows = list(_csv_rows(path, text))
    if not rows:
        raise BatchError(f"{path}: the manifest lists no videos")
    jobs = [_parse_row(row_no, row, path.parent, max_frames) for row_no, row in rows]
    seen: dict[str, int] = {}
    for i, job in enumerate(jobs):
        if job.error is None and job.key in seen:
            jobs[i] = dataclasses.replace(job, error=(
                f"row {job.row}: output folder {job.key!r} is already used by row "
                f"{seen[job.key]}; add an 'id' column to tell the videos apart"))
        seen.setdefault(job.key, job.row)
    return jobs


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "video" not in fields:
        raise BatchError(f"{path}: expected a CSV header with a 'video' column (video,prompt,...)")
    reader.fieldnames = fields
    for row in reader:
        values = {k: v.strip() for k, v in row.items() if k and isinstance(v, str) and v.strip()}
        if values:
            yield reader.line_num, values


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BatchError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise BatchError(f"{path}:{line_no}: expected a JSON object per line")
        yield line_no, {str(k).lower(): v for k, v in row.items() if v not in (None, "")}


def _parse_row(row_no: int, row: dict[str, Any], base: Path, max_frames: int | None) -> VideoJob:
    video = str(row.get("video", "")).strip()
    key = str(row.get("id") or Path(video).stem or Path(video).name).strip()
    job = VideoJob(row=row_no, key=key or f"row{row_no}", video=video,
                   source=str(_resolve(base, video)) if video else "")
    try:
        if not video:
            raise ValueError("no video given")
        if key in (".", "..") or any(sep in key for sep in ("/", "\\")) or not key:
            raise ValueError(f"id {key!r}: expected a plain folder name")
        boxes: list[tuple[float, float, float, float]] = []
        points: list[tuple[tuple[float, float, int], ...]] = []
        mask: str | None = None
        auto: int | None = None
        if "prompt" in row:
            kind, value = _split_prompt(row["prompt"])
            if kind in row:
                raise ValueError(f"both 'prompt' and '{kind}' given; use one of them")
            row = {**row, kind: value}
        if "boxes" in row:
            boxes = _parse_boxes(row["boxes"])
        if "points" in row:
            points = _parse_point_sets(row["points"])
        if "mask" in row:
            mask = str(_resolve(base, str(row["mask"])))
        if "auto" in row and row["auto"] not in (False, "false", "0", 0):
            auto = _parse_auto(row["auto"])
        if not (boxes or points or mask) and auto is None:
            raise ValueError("no prompt: give boxes, points, a first-frame mask or auto")
        if auto is not None and (boxes or points or mask):
            raise ValueError("auto proposals cannot be combined with other prompts")
        init_frame = _parse_int(row.get("init_frame", 0), "init_frame", minimum=0)
        limit = row.get("max_frames", max_frames)
        frames = None if limit is None else _parse_int(limit, "max_frames", minimum=1)
    except (ValueError, TypeError) as exc:
        return dataclasses.replace(job, error=f"row {row_no}: {_one_line(exc)}")
    return dataclasses.replace(job, boxes=tuple(boxes), points=tuple(points), mask=mask,
                               auto=auto, init_frame=init_frame, max_frames=frames)


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _split_prompt(value: Any) -> tuple[str, Any]:
    """The kind of a generic ``prompt`` cell: ``auto[:N]``, ``box:``, ``points:``, ``mask:``."""
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError(f"prompt {value!r}: expected one of boxes, points, mask, auto")
        ((kind, inner),) = value.items()
        return _canonical_kind(str(kind)), inner
    if isinstance(value, list):
        return "boxes", value
    text = str(value).strip()
    head, sep, rest = text.partition(":")
    if text.lower() == "auto" or (sep and head.strip().lower() == "auto"):
        return "auto", rest.strip() if sep else True
    if sep and head.strip().lower() in ("box", "boxes", "points", "point", "mask"):
        return _canonical_kind(head.strip()), rest.strip()
    if text.startswith("["):
        return "boxes", text
    if text.lower().endswith(_MASK_SUFFIXES):
        return "mask", text
    return "boxes", text


def _canonical_kind(kind: str) -> str:
    kinds = {"box": "boxes", "boxes": "boxes", "point": "points", "points": "points",
             "mask": "mask", "auto": "auto"}
    if kind.lower() not in kinds:
        raise ValueError(f"prompt kind {kind!r}: expected boxes, points, mask or auto")
    return kinds[kind.lower()]


def _parse_boxes(value: Any) -> list[tuple[float, float, float, float]]:
    """``"x0,y0,x1,y1;..."``, a JSON list of boxes, one box, or a list of those."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"boxes {text!r}: not a valid JSON list") from None
        else:
            value = [part.split(",") for part in text.split(";") if part.strip()]
    if isinstance(value, list) and _is_number_list(value):
        value = [value]
    boxes = []
    for box in value if isinstance(value, list) else [value]:
        try:
            numbers = [float(v) for v in box]
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) != 4 or not all(np.isfinite(numbers)):
            raise ValueError(f"boxes {value!r}: expected x0,y0,x1,y1 (four numbers) per box, "
                             "boxes separated by ';'")
        boxes.append((numbers[0], numbers[1], numbers[2], numbers[3]))
    if not boxes:
        raise ValueError("boxes: no box given")
    return boxes


def _is_number_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _parse_point_sets(value: Any) -> list[tuple[tuple[float, float, int], ...]]:
    """Objects separated by ``|`` of ``x,y[,label]`` points, or a JSON list of point lists."""
    from vos.io.prompt_input import parse_points
    from vos.types import PromptError

    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"points {value!r}: not a valid JSON list") from None
    objects: list[tuple[tuple[float, float, int], ...]] = []
    if isinstance(value, str):
        for text in (t for t in value.split("|") if t.strip()):
            try:
                pts, labels = parse_points(text)
            except PromptError:
                raise ValueError(f"points {text!r}: expected 'x,y[,label] ...' with label 0 or "
                                 "1, objects separated by '|'") from None
            objects.append(tuple((float(x), float(y), int(lab))
                                 for (x, y), lab in zip(pts.tolist(), labels.tolist(), strict=True)))
    elif isinstance(value, list):
        if value and _is_number_list(value[0]):
            value = [value]  # one object's points
        for obj in value:
            if isinstance(obj, str):
                objects.extend(_parse_point_sets(obj))
                continue
            parsed = []
            for point in obj if isinstance(obj, list) else []:
                if not _is_number_list(point) or len(point) not in (2, 3) or (
                        len(point) == 3 and point[2] not in (0, 1)):
                    raise ValueError(f"points {obj!r}: expected [x, y] or [x, y, label 0/1] items")
                parsed.append((float(point[0]), float(point[1]),
                               int(point[2]) if len(point) == 3 else 1))
            if not parsed:
                raise ValueError(f"points {obj!r}: expected a list of [x, y(, label)] points")
            objects.append(tuple(parsed))
    else:
        raise ValueError(f"points {value!r}: expected text or a JSON list")
    if not objects:
        raise ValueError("points: no point given")
    return objects


def _parse_auto(value: Any) -> int | None:
    if value is True or (isinstance(value, str) and value.strip().lower() in ("", "true", "auto")):
        return 0  # 0 = the batch default (--auto-max-masks)
    return _parse_int(value, "auto", minimum=1)


def _parse_int(value: Any, name: str, *, minimum: int) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"{name} {value!r}: expected an integer") from None
    if isinstance(number, bool) or number < minimum:
        raise ValueError(f"{name} {value!r}: expected an integer >= {minimum}")
    return number


# --------------------------------------------------------------------------- worker side


class VideoWorker:
    """One model, reused for every video a worker process (or Ray actor) is given.

    Args:
        cfg: the run configuration.
        predictor_factory: top-level callable ``cfg -> segmenter`` (``encode``/``decode``,
            and for ``auto`` rows either ``propose(frame, max_num_masks)`` or a ``model``
            attribute for :class:`repvit_sam.SamAutomaticMaskGenerator`); None builds
            ``SamPredictor`` from the config's checkpoint.
        num_threads: torch intra-op threads of this worker (None leaves torch's default).

    The model is built lazily on the first video, so a construction error is reported by
    :meth:`process` as :class:`WorkerInitError` rather than breaking the pool.
    """

    def __init__(self, cfg: RunConfig, predictor_factory: PredictorFactory | None = None,
                 num_threads: int | None = None) -> None:
        self.cfg = cfg
        self.factory = predictor_factory or default_predictor_factory
        retain_freed_memory()  # each worker process is an entry point of its own
        if num_threads is not None:
            import torch

            torch.set_num_threads(max(1, num_threads))
        self._predictor: Any = None
        self._init_error: str | None = None
        self._generators: dict[tuple[int, int], Any] = {}
        self.init_seconds = 0.0

    @property
    def predictor(self) -> Any:
        """The segmenter, built on first use."""
        if self._init_error is not None:
            raise WorkerInitError(self._init_error)
        if self._predictor is None:
            start = time.perf_counter()
            try:
                self._predictor = self.factory(self.cfg)
            except Exception as exc:
                self._init_error = _one_line(exc)
                raise WorkerInitError(self._init_error) from None
            self.init_seconds = time.perf_counter() - start
        return self._predictor

    def ready(self) -> float:
        """Build the model now; returns the seconds it took."""
        _ = self.predictor
        return self.init_seconds

    def propose(self, frame: np.ndarray, max_num_masks: int, points_per_side: int) -> list[np.ndarray]:
        """Frame-level proposals: (H, W) bool masks, best first."""
        predictor = self.predictor
        if hasattr(predictor, "propose"):
            return list(predictor.propose(frame, max_num_masks))
        model = getattr(predictor, "model", None)
        if model is None:
            raise ValueError("auto prompts need a SamPredictor (its model runs the mask generator)")
        key = (max_num_masks, points_per_side)
        if key not in self._generators:
            from repvit_sam import SamAutomaticMaskGenerator

            self._generators[key] = SamAutomaticMaskGenerator(
                model, points_per_side=points_per_side, max_num_masks=max_num_masks)
        return [record["segmentation"] for record in self._generators[key].generate(frame)]

    def process(self, job: VideoJob, options: JobOptions) -> dict[str, Any]:
        """Run one video; never raises for a bad video (returns a ``failed`` record).

        Raises:
            WorkerInitError: the model cannot be built (no video can succeed).
        """
        record = _base_record(job, options)
        record["worker"] = f"{os.uname().nodename}:{os.getpid()}"
        predictor = self.predictor  # outside the try: a model error stops the batch
        start = time.perf_counter()
        try:
            summary = self._run(job, options, predictor)
        except KeyboardInterrupt:
            raise
        except WorkerInitError:
            raise
        except Exception as exc:
            logger.debug("%s failed", job.video, exc_info=True)
            record.update(status="failed", error=_describe(exc))
        else:
            record.update(status="ok", frames=summary.num_frames,
                          frames_processed=summary.frames_processed, fps=round(summary.fps, 3),
                          objects=len(summary.objects))
        record["seconds"] = round(time.perf_counter() - start, 3)
        return record

    def _run(self, job: VideoJob, options: JobOptions, predictor: Any) -> Any:
        from vos.io.prompt_input import check_prompts
        from vos.io.sources import open_source
        from vos.models import checkpoint_digest
        from vos.pipeline import run_video

        output = Path(options.output_root) / job.key
        cfg = dataclasses.replace(
            self.cfg, io=dataclasses.replace(self.cfg.io, source=job.source, output_dir=str(output)))
        with open_source(job.source, backend=options.reader) as source:
            prompts = self._prompts(job, source, options)
            prompts = check_prompts(prompts, source.info.image_hw)
            output.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, output / "resolved_config.yaml",
                        checkpoint_sha256=checkpoint_digest(cfg.model))
            return run_video(source, predictor, prompts, output, cfg, init_frame=job.init_frame,
                             max_frames=job.max_frames, overwrite=options.overwrite,
                             progress=False)

    def _prompts(self, job: VideoJob, source: Any, options: JobOptions) -> list[Prompt]:
        from vos.io.prompt_input import masks_from_png
        from vos.types import PromptError

        prompts = [Prompt(box_xyxy=np.array(box, np.float32)) for box in job.boxes]
        for obj in job.points:
            prompts.append(Prompt(points_xy=np.array([p[:2] for p in obj], np.float32),
                                  point_labels=np.array([p[2] for p in obj], np.int64)))
        if job.mask:
            prompts.extend(masks_from_png(Path(job.mask), source.info.image_hw))
        if job.auto is not None:
            frame = next(iter(source.frames(job.init_frame, job.init_frame + 1)), None)
            if frame is None:
                raise PromptError(f"init_frame {job.init_frame}: the video is shorter")
            masks = self.propose(frame, job.auto or options.auto_max_masks,
                                 options.auto_points_per_side)
            prompts.extend(Prompt(mask=np.asarray(m, bool), obj_id=i)
                           for i, m in enumerate(masks, 1) if np.asarray(m).any())
            if not prompts:
                raise PromptError(f"auto: no proposal on frame {job.init_frame}")
        return prompts


def default_predictor_factory(cfg: RunConfig) -> Any:
    """The config's segmenter (``vos.models.build_segmenter``)."""
    from vos.models import build_segmenter

    return build_segmenter(cfg.model)


# Process-pool workers keep their model here (one per process, built by the initializer).
_WORKER: VideoWorker | None = None


def _init_local_worker(cfg: RunConfig, factory: PredictorFactory | None, threads: int) -> None:
    global _WORKER
    _WORKER = VideoWorker(cfg, factory, threads)
    try:
        _WORKER.ready()
    except WorkerInitError:
        pass  # reported by the first process() call as a one-line error


def _process_local(job: VideoJob, options: JobOptions) -> dict[str, Any]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.process(job, options)


# --------------------------------------------------------------------------- driver side


def run_batch(
    manifest_path: Path,
    output_dir: Path,
    cfg: RunConfig,
    *,
    engine: str = "local",
    workers: int | None = None,
    predictor_factory: PredictorFactory | None = None,
    max_frames: int | None = None,
    overwrite: bool = False,
    reader: str = "auto",
    retries: int = 2,
    ray_address: str | None = None,
    auto_points_per_side: int = 32,
    auto_max_masks: int = 20,
    progress: bool = True,
) -> BatchSummary:
    """Run every manifest row through :func:`vos.pipeline.run_video`, resumably.

    The local engine spawns its workers, so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard.

    Args:
        manifest_path: CSV or JSONL manifest (see the module docstring).
        output_dir: batch folder: ``<id>/`` per video and ``batch_results.jsonl``/``.csv``.
        cfg: the run configuration (model, tracker, prompt and io parts are used).
        engine: "local" (a spawn process pool) or "ray" (actors on a Ray cluster).
        workers: parallel models; default 1 (ray: one per cluster GPU, else 1).
        predictor_factory: picklable top-level ``cfg -> segmenter`` (see :class:`VideoWorker`);
            None builds the RepViT-SAM predictor from ``cfg.model``.
        max_frames: frame limit of rows without their own ``max_frames``.
        overwrite: recompute every video, ignoring earlier results.
        reader: video decoding backend ("auto", "decord", "opencv").
        retries: re-runs of a video whose worker died (crash, OOM kill) before it fails.
        ray_address: ``ray.init`` address ("auto", "HOST:PORT"); None starts a local Ray
            unless one is already initialised.
        auto_points_per_side: automatic mask generator grid for ``auto`` rows.
        auto_max_masks: proposals kept for ``auto`` rows that give no count.
        progress: show a progress bar over videos.

    Returns:
        The batch summary; the same records are in ``output_dir/batch_results.jsonl``.

    Raises:
        BatchError: unusable manifest or options.
        WorkerInitError: the model cannot be built.
    """
    if engine not in ENGINES:
        raise BatchError(f"--engine {engine!r}: expected local or ray")
    if workers is not None and workers < 1:
        raise BatchError(f"--workers {workers}: expected >= 1")
    if retries < 0:
        raise BatchError(f"--retries {retries}: expected >= 0")
    if max_frames is not None and max_frames < 1:
        raise BatchError(f"--max-frames {max_frames}: expected >= 1")
    if auto_max_masks < 1 or auto_points_per_side < 1:
        raise BatchError("--auto-max-masks and --auto-points-per-side: expected >= 1")
    output_dir = Path(output_dir)
    jobs = read_manifest(Path(manifest_path), max_frames=max_frames)
    output_dir.mkdir(parents=True, exist_ok=True)
    from vos.models import checkpoint_digest

    dump_config(cfg, output_dir / "resolved_config.yaml",
                checkpoint_sha256=checkpoint_digest(cfg.model))
    options = JobOptions(str(output_dir), overwrite=overwrite, reader=reader,
                         auto_points_per_side=auto_points_per_side, auto_max_masks=auto_max_masks)
    book = _ResultBook(output_dir, jobs, cfg, overwrite=overwrite)
    todo = [job for job in jobs if book.pending(job)]
    start = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="video", desc="batch",
               disable=not progress, dynamic_ncols=True)

    def on_result(record: dict[str, Any]) -> None:
        book.add(record)
        bar.update(1)
        bar.set_postfix(ok=book.count("ok"), failed=book.count("failed"))

    startup = 0.0
    used_workers = 0
    try:
        if todo:
            run_engine = _run_local if engine == "local" else _run_ray
            used_workers, startup = run_engine(
                todo, options, cfg, predictor_factory, workers, retries, on_result,
                ray_address=ray_address)
    finally:
        bar.close()
        book.flush()
    return BatchSummary(records=book.records(), seconds=time.perf_counter() - start,
                        startup_seconds=startup, engine=engine, workers=used_workers)


class _ResultBook:
    """The batch results, rewritten atomically (JSONL + CSV) after every video."""

    def __init__(self, output_dir: Path, jobs: list[VideoJob], cfg: RunConfig, *,
                 overwrite: bool) -> None:
        self.output_dir = output_dir
        self.jobs = jobs
        self.hashes = {job.row: job.digest(cfg) for job in jobs}
        previous = {} if overwrite else _read_previous(output_dir / RESULTS_JSONL)
        self._records: dict[int, dict[str, Any]] = {}
        options = JobOptions(str(output_dir))
        for job in jobs:
            old = previous.get(job.key)
            if job.error is not None:
                self._records[job.row] = {**_base_record(job, options), "status": "failed",
                                          "error": job.error}
            elif old and old.get("status") in ("ok", "skipped") and (
                    old.get("job_hash") == self.hashes[job.row]) and _complete(output_dir / job.key):
                self._records[job.row] = {**old, "row": job.row, "status": "skipped",
                                          "attempts": 0, "error": None}
        self.flush()

    def pending(self, job: VideoJob) -> bool:
        return job.row not in self._records

    def count(self, status: str) -> int:
        return sum(1 for r in self._records.values() if r["status"] == status)

    def add(self, record: dict[str, Any]) -> None:
        record["job_hash"] = self.hashes[record["row"]]
        self._records[record["row"]] = record
        self.flush()

    def records(self) -> list[dict[str, Any]]:
        return [self._records[job.row] for job in self.jobs if job.row in self._records]

    def flush(self) -> None:
        records = self.records()
        write_text_atomic(self.output_dir / RESULTS_JSONL,
                          "".join(json.dumps(r, sort_keys=False) + "\n" for r in records))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RESULT_FIELDS, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in RESULT_FIELDS}
                         for r in records)
        write_text_atomic(self.output_dir / RESULTS_CSV, buffer.getvalue())


def _read_previous(path: Path) -> dict[str, dict[str, Any]]:
    previous: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return previous
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a foreign or damaged line only costs a recomputation
        if not isinstance(record, dict) or "id" not in record:
            continue
        # A failed duplicate row may share the id of a completed one: the completed one wins.
        key = str(record["id"])
        if previous.get(key, {}).get("status") not in ("ok", "skipped"):
            previous[key] = record
    return previous


def _complete(video_dir: Path) -> bool:
    """True when ``run_video`` finished this folder (its summary says complete)."""
    from vos.pipeline import SUMMARY

    try:
        summary = json.loads((video_dir / SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(summary.get("complete")) and summary.get("num_frames", 0) > 0


def _base_record(job: VideoJob, options: JobOptions) -> dict[str, Any]:
    return {"row": job.row, "id": job.key, "video": job.video, "status": "failed",
            "frames": 0, "frames_processed": 0, "seconds": 0.0, "fps": 0.0, "objects": 0,
            "attempts": 1, "worker": None, "error": None,
            "output": str(Path(options.output_root) / job.key)}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass
class _Attempts:
    """Crash bookkeeping of one engine run: attempts per job row."""

    retries: int
    counts: dict[int, int] = field(default_factory=dict)

    def next(self, job: VideoJob) -> int:
        self.counts[job.row] = self.counts.get(job.row, 0) + 1
        return self.counts[job.row]

    def exhausted(self, job: VideoJob) -> bool:
        return self.counts.get(job.row, 0) > self.retries


def _crash_record(job: VideoJob, options: JobOptions, attempts: int, reason: str) -> dict[str, Any]:
    return {**_base_record(job, options), "attempts": attempts,
            "error": f"worker died {attempts} time(s) on this video ({reason})"}


def _run_local(
    jobs: list[VideoJob],
    options: JobOptions,
    cfg: RunConfig,
    factory: PredictorFactory | None,
    workers: int | None,
    retries: int,
    on_result: Callable[[dict[str, Any]], None],
    *,
    ray_address: str | None = None,
) -> tuple[int, float]:
    """A spawn process pool, one model per process; a crashed pool is rebuilt."""
    del ray_address
    workers = min(workers or 1, len(jobs))
    # Each worker gets an equal share of the cores: N processes x all-cores torch threads
    # thrash (measured 2x slower with 2 workers x 2 threads on 2 cores).
    threads = max(1, _cpu_count() // workers)
    context = multiprocessing.get_context("spawn")
    attempts = _Attempts(retries)
    queue = list(jobs)
    startup = 0.0
    start = time.perf_counter()
    while queue:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                   initializer=_init_local_worker,
                                   initargs=(cfg, factory, threads))
        in_flight: dict[Future, VideoJob] = {}
        broken = False
        try:
            while queue or in_flight:
                # Keep at most one queued video per worker, so a crash re-queues few videos
                # and an interrupt leaves little submitted work behind.
                while queue and len(in_flight) < 2 * workers and not broken:
                    job = queue.pop(0)
                    attempts.next(job)
                    in_flight[pool.submit(_process_local, job, options)] = job
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    job = in_flight.pop(future)
                    try:
                        record = future.result()
                    except BrokenProcessPool as exc:
                        broken = True
                        _requeue_or_fail(job, attempts, queue, options, on_result,
                                         _one_line(exc) or "process pool broken")
                        continue
                    if not startup:
                        startup = time.perf_counter() - start
                    record["attempts"] = attempts.counts[job.row]
                    on_result(record)
                if broken:
                    # Every other in-flight future fails too; which video killed the worker is
                    # unknown, so each of them is charged one attempt.
                    for job in list(in_flight.values()):
                        _requeue_or_fail(job, attempts, queue, options, on_result,
                                         "process pool broken")
                    in_flight.clear()
                    break
        except BaseException:
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True, cancel_futures=True)
    return workers, startup


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel queued videos and end the workers now (Ctrl-C, or an error in the driver).

    ``shutdown`` alone would let every running video finish first, minutes for a long
    video; killing is safe because ``run_video`` resumes from the last complete frame.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API < 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()


def _requeue_or_fail(job: VideoJob, attempts: _Attempts, queue: list[VideoJob],
                     options: JobOptions, on_result: Callable[[dict[str, Any]], None],
                     reason: str) -> None:
    if attempts.exhausted(job):
        on_result(_crash_record(job, options, attempts.counts[job.row], reason))
    else:
        logger.warning("%s: worker died (%s); retrying", job.video, reason)
        queue.insert(0, job)


def import_ray() -> Any:
    """``import ray`` with the install hint as a one-line :class:`BatchError`."""
    try:
        import ray
    except ImportError:
        raise BatchError(RAY_HINT) from None
    return ray


def _run_ray(
    jobs: list[VideoJob],
    options: JobOptions,
    cfg: RunConfig,
    factory: PredictorFactory | None,
    workers: int | None,
    retries: int,
    on_result: Callable[[dict[str, Any]], None],
    *,
    ray_address: str | None = None,
) -> tuple[int, float]:
    """Ray actors, one model each, fed one video at a time; dead actors are replaced.

    Ray itself restarts a crashed actor (``max_restarts``) and re-sends its running video
    (``max_task_retries``); when those are used up the video fails and a fresh actor takes
    the slot, so one poisonous video cannot stall the batch.
    """
    ray = import_ray()
    import torch

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=ray_address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=logger.isEnabledFor(logging.INFO))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BatchError(f"ray.init(address={ray_address!r}): {_one_line(exc)}") from None
    try:
        resources = ray.cluster_resources()
        cluster_gpus = int(resources.get("GPU", 0))
        use_gpu = cfg.model.device.startswith("cuda") and (
            cluster_gpus > 0 or torch.cuda.is_available())
        if workers is None:
            workers = max(1, cluster_gpus) if use_gpu else 1
        workers = min(workers, len(jobs))
        # An equal share of the cluster's CPUs, but never more than one node has: an actor
        # asking for more would wait forever to be scheduled.
        node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")),
                        default=1)
        cpus = max(1, min(int(resources.get("CPU", 1)) // workers, int(node_cpus)))
        if use_gpu:
            # Ray maps the actor's GPU to CUDA_VISIBLE_DEVICES, so inside it is always cuda:0.
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, device="cuda"))
        actor_cls = ray.remote(VideoWorker).options(
            num_cpus=cpus, num_gpus=1 if use_gpu else 0, max_restarts=retries,
            max_task_retries=retries)
        actors = [actor_cls.remote(cfg, factory, cpus) for _ in range(workers)]
        try:
            startup = _ray_loop(ray, actors, lambda: actor_cls.remote(cfg, factory, cpus), jobs,
                                options, retries, on_result)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)
        return workers, startup
    finally:
        if started_here:
            ray.shutdown()


def _ray_loop(ray: Any, actors: list[Any], new_actor: Callable[[], Any], jobs: list[VideoJob],
              options: JobOptions, retries: int,
              on_result: Callable[[dict[str, Any]], None]) -> float:
    """Feed each actor one video at a time; returns the seconds until the first result."""
    start = time.perf_counter()
    startup = 0.0
    queue = list(jobs)
    in_flight: dict[Any, tuple[int, VideoJob]] = {}
    while queue or in_flight:
        busy = {slot for slot, _ in in_flight.values()}
        for slot, actor in enumerate(actors):
            if queue and slot not in busy:
                job = queue.pop(0)
                in_flight[actor.process.remote(job, options)] = (slot, job)
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            slot, job = in_flight.pop(ref)
            try:
                record = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                if getattr(exc, "actor_init_failed", False):
                    # The class or the factory cannot even be loaded there (e.g. the factory's
                    # module is not importable on the workers): every video would fail.
                    raise WorkerInitError(_ray_reason(exc)) from None
                record = _crash_record(job, options, retries + 1, _ray_reason(exc))
                ray.kill(actors[slot], no_restart=True)
                actors[slot] = new_actor()
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None) or exc
                if isinstance(cause, WorkerInitError):
                    raise WorkerInitError(str(cause)) from None
                record = {**_base_record(job, options), "error": _describe(cause)}
            if not startup:
                startup = time.perf_counter() - start
            on_result(record)
    return startup


def _ray_reason(exc: BaseException) -> str:
    """The line that matters in a Ray error (its last ``SomeError: ...`` line), uncoloured."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    errors = re.findall(r"^\s*(\w+(?:Error|Exception): .*)$", text, flags=re.MULTILINE)
    line = errors[-1] if errors else text.strip().split("\n")[0]
    return _one_line(line)[:300] or type(exc).__name__


def _describe(exc: BaseException) -> str:
    """One line for a failed video; unexpected exception types keep their name."""
    text = _one_line(exc)
    if isinstance(exc, (ValueError, OSError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())
