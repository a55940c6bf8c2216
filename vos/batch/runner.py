"""``run_batch``: a manifest in, every row run through ``run_video`` on an engine, resumably."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vos.batch.engines import ENGINES, EngineRun, run_local, run_ray
from vos.batch.errors import BatchError
from vos.batch.manifest import read_manifest
from vos.batch.results import BatchSummary, ResultBook
from vos.batch.worker import JobOptions, PredictorFactory
from vos.config import RunConfig, dump_config
from vos.io.lock import FolderLock


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
        manifest_path: CSV or JSONL manifest (see :mod:`vos.batch`).
        output_dir: batch folder: ``<id>/`` per video and ``batch_results.jsonl``/``.csv``.
        cfg: the run configuration (model, tracker, prompt and io parts are used).
        engine: "local" (a spawn process pool) or "ray" (actors on a Ray cluster).
        workers: parallel models; default 1 (ray: one per cluster GPU, else 1).
        predictor_factory: picklable top-level ``cfg -> segmenter`` (see
            :class:`~vos.batch.worker.VideoWorker`); None builds the RepViT-SAM segmenter
            of ``cfg.model``.
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

    Example:
        >>> summary = run_batch(Path("videos.csv"), Path("out"), load_config(), workers=2)
        >>> summary.counts
        {'ok': 9, 'failed': 1, 'skipped': 0}
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
    # One batch per folder (each video's folder is locked again by its own run).
    with FolderLock(output_dir):
        from vos.models import checkpoint_digest

        dump_config(cfg, output_dir / "resolved_config.yaml",
                    checkpoint_sha256=checkpoint_digest(cfg.model))
        options = JobOptions(str(output_dir), overwrite=overwrite, reader=reader,
                             auto_points_per_side=auto_points_per_side, auto_max_masks=auto_max_masks)
        book = ResultBook(output_dir, jobs, cfg, overwrite=overwrite)
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
                run = EngineRun(todo, options, cfg, predictor_factory, workers, retries, on_result)
                if engine == "local":
                    used_workers, startup = run_local(run)
                else:
                    used_workers, startup = run_ray(run, address=ray_address)
        finally:
            bar.close()
            book.flush()
        return BatchSummary(records=book.records(), seconds=time.perf_counter() - start,
                            startup_seconds=startup, engine=engine, workers=used_workers)
