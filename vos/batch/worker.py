"""The worker side of a batch: one model per process (or Ray actor), reused for every video.

Model construction takes seconds for RepViT-SAM, so a worker builds it once and then runs
:func:`vos.pipeline.run_video` for each video it is given. A bad video becomes a ``failed``
record; only a model that cannot be built stops the batch (:class:`WorkerInitError`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repvit_sam.utils.malloc import retain_freed_memory
from vos.batch.errors import WorkerInitError, describe, one_line
from vos.batch.manifest import VideoJob
from vos.batch.results import base_record
from vos.config import RunConfig
from vos.io.prompt_input import check_prompts, masks_from_png
from vos.types import Prompt, PromptError

logger = logging.getLogger(__name__)

PredictorFactory = Callable[[RunConfig], Any]


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


def default_predictor_factory(cfg: RunConfig) -> Any:
    """The config's segmenter (``vos.models.build_segmenter``)."""
    from vos.models import build_segmenter

    return build_segmenter(cfg.model)


class VideoWorker:
    """One model, reused for every video a worker process (or Ray actor) is given.

    Args:
        cfg: the run configuration.
        predictor_factory: top-level callable ``cfg -> segmenter`` (``encode``/``decode``,
            and for ``auto`` rows either ``propose(frame, max_num_masks)`` or a ``model``
            attribute for :class:`repvit_sam.SamAutomaticMaskGenerator`); None builds
            the segmenter of ``cfg.model`` (:func:`default_predictor_factory`).
        num_threads: torch intra-op threads of this worker (None leaves torch's default).

    The model is built lazily on the first video, so a construction error is reported by
    :meth:`process` as :class:`WorkerInitError` rather than breaking the pool.

    Example:
        >>> (job, *_) = read_manifest(Path("videos.csv"))
        >>> worker = VideoWorker(load_config())
        >>> worker.process(job, JobOptions("out"))["status"]
        'ok'
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
        """The segmenter, built on first use.

        Raises:
            WorkerInitError: the factory failed (now or on an earlier call: the first
                error is remembered, not retried per video).
        """
        if self._init_error is not None:
            raise WorkerInitError(self._init_error)
        if self._predictor is None:
            start = time.perf_counter()
            try:
                self._predictor = self.factory(self.cfg)
            except Exception as exc:
                self._init_error = one_line(exc)
                raise WorkerInitError(self._init_error) from None
            self.init_seconds = time.perf_counter() - start
        return self._predictor

    def ready(self) -> float:
        """Build the model now; returns the seconds it took."""
        _ = self.predictor
        return self.init_seconds

    def propose(self, frame: np.ndarray, max_num_masks: int, points_per_side: int) -> list[np.ndarray]:
        """Frame-level object proposals for ``auto`` rows.

        Args:
            frame: (H, W, 3) uint8 RGB frame.
            max_num_masks: proposals to keep at most.
            points_per_side: point grid of the automatic mask generator (when the segmenter
                has no ``propose`` of its own).

        Returns:
            (H, W) bool masks in frame pixels, best first.
        """
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

        Returns:
            The video's result record (``vos.batch.results.RESULT_FIELDS`` and more).

        Raises:
            WorkerInitError: the model cannot be built (no video can succeed).
        """
        record = base_record(job, options.output_root)
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
            record.update(status="failed", error=describe(exc))
        else:
            record.update(status="ok", frames=summary.num_frames,
                          frames_processed=summary.frames_processed, fps=round(summary.fps, 3),
                          objects=len(summary.objects))
        record["seconds"] = round(time.perf_counter() - start, 3)
        return record

    def _run(self, job: VideoJob, options: JobOptions, predictor: Any) -> Any:
        from vos.io.sources import open_source
        from vos.pipeline import run_video

        output = Path(options.output_root) / job.key
        cfg = dataclasses.replace(
            self.cfg, io=dataclasses.replace(self.cfg.io, source=job.source, output_dir=str(output)))
        with open_source(job.source, backend=options.reader) as source:
            prompts = check_prompts(self._prompts(job, source, options), source.info.image_hw)
            return run_video(source, predictor, prompts, output, cfg, init_frame=job.init_frame,
                             max_frames=job.max_frames, overwrite=options.overwrite,
                             progress=False)

    def _prompts(self, job: VideoJob, source: Any, options: JobOptions) -> list[Prompt]:
        """The job's prompts on its init frame: boxes, points, mask PNG or proposals."""
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
