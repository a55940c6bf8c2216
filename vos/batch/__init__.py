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

The package, one job per module: ``manifest`` (rows -> :class:`VideoJob`), ``worker`` (one
model per process or actor), ``results`` (the result book and :class:`BatchSummary`),
``engines`` (the process pool and Ray), ``runner`` (:func:`run_batch`), ``errors``.

Example:
    >>> summary = run_batch(Path("videos.csv"), Path("out"), load_config(), workers=2)
    >>> summary.counts
    {'ok': 9, 'failed': 1, 'skipped': 0}
"""

from vos.batch.engines import ENGINES, RAY_HINT, import_ray
from vos.batch.errors import BatchError, WorkerInitError
from vos.batch.manifest import VideoJob, read_manifest
from vos.batch.results import RESULT_FIELDS, RESULTS_CSV, RESULTS_JSONL, BatchSummary
from vos.batch.runner import run_batch
from vos.batch.worker import JobOptions, PredictorFactory, VideoWorker, default_predictor_factory

__all__ = [
    "ENGINES",
    "RAY_HINT",
    "RESULTS_CSV",
    "RESULTS_JSONL",
    "RESULT_FIELDS",
    "BatchError",
    "BatchSummary",
    "JobOptions",
    "PredictorFactory",
    "VideoJob",
    "VideoWorker",
    "WorkerInitError",
    "default_predictor_factory",
    "import_ray",
    "read_manifest",
    "run_batch",
]
