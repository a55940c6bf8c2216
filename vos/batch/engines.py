"""The batch engines: a local spawn process pool, or Ray actors; both survive dying workers.

Both keep one worker (one model) per process or actor, feed it a job at a time, and hand
every record to ``on_result`` as it arrives. The worker is a
:class:`~vos.batch.worker.VideoWorker` for batch mode; any class with the same three calls
(``Worker(cfg, factory, num_threads)``, ``ready()``, ``process(job, options) -> record``) runs
other jobs, e.g. the benchmark sequences of ``vos.eval.vos_driver``; a job needs ``row``,
``key`` and ``video`` for the crash records. A worker that
dies (crash, OOM kill) costs the videos it held one attempt each; a video that has used up
its retries is recorded as failed and the batch goes on, so one poisonous video cannot stall
it. A model that cannot be built raises :class:`WorkerInitError`: every video would fail.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from vos.batch.errors import BatchError, WorkerInitError, describe, one_line
from vos.batch.manifest import VideoJob
from vos.batch.results import base_record, crash_record
from vos.batch.worker import JobOptions, PredictorFactory, VideoWorker
from vos.config import RunConfig

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
RAY_HINT = "the ray engine needs Ray: pip install -e .[ray] (or pip install 'ray[default]')"


@dataclass(frozen=True)
class EngineRun:
    """What an engine is asked to run; the same for both engines.

    Attributes:
        jobs: the videos still to run, in manifest order.
        options: the per-batch settings every worker gets with a job.
        cfg: the run configuration the workers build their models from.
        factory: picklable top-level ``cfg -> segmenter``; None for the default.
        workers: parallel models asked for; None for the engine's default.
        retries: re-runs of a video whose worker died before it is recorded as failed.
        on_result: called in the driver with each video's record as soon as it arrives.
        worker_cls: the worker class (module docstring); its jobs and options are any
            picklable objects it understands.
    """

    jobs: list[VideoJob]
    options: JobOptions
    cfg: RunConfig
    factory: PredictorFactory | None
    workers: int | None
    retries: int
    on_result: Callable[[dict[str, Any]], None]
    worker_cls: type = VideoWorker


def import_ray() -> Any:
    """``import ray`` with the install hint as a one-line :class:`BatchError`."""
    try:
        import ray
    except ImportError:
        raise BatchError(RAY_HINT) from None
    return ray


# --------------------------------------------------------------------------- local pool


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


def run_local(run: EngineRun) -> tuple[int, float]:
    """Run the jobs on a spawn process pool, one model per process; a crashed pool is rebuilt.

    The pool spawns its processes, so a script reaching this needs the usual
    ``if __name__ == "__main__":`` guard.

    Returns:
        (worker processes used, seconds until the first result).

    Raises:
        WorkerInitError: the model cannot be built.
    """
    workers = min(run.workers or 1, len(run.jobs))
    # Each worker gets an equal share of the cores: N processes x all-cores torch threads
    # thrash (measured 2x slower with 2 workers x 2 threads on 2 cores).
    threads = max(1, _cpu_count() // workers)
    context = multiprocessing.get_context("spawn")
    attempts = _Attempts(run.retries)
    queue = list(run.jobs)
    startup = 0.0
    start = time.perf_counter()
    while queue:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                   initializer=_init_pool_worker,
                                   initargs=(run.worker_cls, run.cfg, run.factory, threads))
        in_flight: dict[Future, VideoJob] = {}
        broken = False
        try:
            while queue or in_flight:
                # Keep at most one queued video per worker, so a crash re-queues few videos
                # and an interrupt leaves little submitted work behind.
                while queue and len(in_flight) < 2 * workers and not broken:
                    job = queue.pop(0)
                    attempts.next(job)
                    in_flight[pool.submit(_process_in_pool, job, run.options)] = job
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    job = in_flight.pop(future)
                    try:
                        record = future.result()
                    except BrokenProcessPool as exc:
                        broken = True
                        _requeue_or_fail(run, job, attempts, queue,
                                         one_line(exc) or "process pool broken")
                        continue
                    if not startup:
                        startup = time.perf_counter() - start
                    record["attempts"] = attempts.counts[job.row]
                    run.on_result(record)
                if broken:
                    # Every other in-flight future fails too; which video killed the worker is
                    # unknown, so each of them is charged one attempt.
                    for job in list(in_flight.values()):
                        _requeue_or_fail(run, job, attempts, queue, "process pool broken")
                    in_flight.clear()
                    break
        except BaseException:
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True, cancel_futures=True)
    return workers, startup


# A pool process keeps its worker here: one per process, built by the pool initializer. The
# two functions are top-level so that spawned processes can unpickle them by name.
_POOL_WORKER: Any = None


def _init_pool_worker(worker_cls: type, cfg: RunConfig, factory: PredictorFactory | None,
                      threads: int) -> None:
    """Pool initializer: this process's worker and its model.

    A model error is not raised here (it would break the whole pool with an opaque
    message); the worker remembers it and its first ``process`` call reports it.
    """
    global _POOL_WORKER
    _POOL_WORKER = worker_cls(cfg, factory, threads)
    try:
        _POOL_WORKER.ready()
    except WorkerInitError:
        pass


def _process_in_pool(job: Any, options: Any) -> dict[str, Any]:
    """Pool task: run one job on this process's worker."""
    assert _POOL_WORKER is not None, "worker not initialised"
    return _POOL_WORKER.process(job, options)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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


def _requeue_or_fail(run: EngineRun, job: VideoJob, attempts: _Attempts, queue: list[VideoJob],
                     reason: str) -> None:
    """After a worker died holding ``job``: retry it first, or record it as failed."""
    if attempts.exhausted(job):
        run.on_result(crash_record(job, run.options.output_root, attempts.counts[job.row], reason))
    else:
        logger.warning("%s: worker died (%s); retrying", job.video, reason)
        queue.insert(0, job)


# --------------------------------------------------------------------------- Ray


def run_ray(run: EngineRun, *, address: str | None = None) -> tuple[int, float]:
    """Run the jobs on Ray actors, one model each, fed one video at a time.

    Ray itself restarts a crashed actor (``max_restarts``) and re-sends its running video
    (``max_task_retries``); when those are used up the video fails and a fresh actor takes
    the slot, so one poisonous video cannot stall the batch.

    Args:
        run: the jobs and settings; ``workers=None`` means one actor per cluster GPU when
            the model runs on CUDA, else one.
        address: ``ray.init`` address ("auto", "HOST:PORT"); None starts a local Ray unless
            one is already initialised (a Ray started here is shut down at the end).

    Returns:
        (actors used, seconds until the first result).

    Raises:
        BatchError: Ray is not installed, or the cluster cannot be joined.
        WorkerInitError: the model (or the factory's module) cannot be loaded on the actors.
    """
    ray = import_ray()
    import torch

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=logger.isEnabledFor(logging.INFO))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BatchError(f"ray.init(address={address!r}): {one_line(exc)}") from None
    try:
        cfg = run.cfg
        resources = ray.cluster_resources()
        cluster_gpus = int(resources.get("GPU", 0))
        use_gpu = cfg.model.device.startswith("cuda") and (
            cluster_gpus > 0 or torch.cuda.is_available())
        workers = run.workers
        if workers is None:
            workers = max(1, cluster_gpus) if use_gpu else 1
        workers = min(workers, len(run.jobs))
        # An equal share of the cluster's CPUs, but never more than one node has: an actor
        # asking for more would wait forever to be scheduled.
        node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")),
                        default=1)
        cpus = max(1, min(int(resources.get("CPU", 1)) // workers, int(node_cpus)))
        if use_gpu:
            # Ray maps the actor's GPU to CUDA_VISIBLE_DEVICES, so inside it is always cuda:0.
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, device="cuda"))
        actor_cls = ray.remote(run.worker_cls).options(
            num_cpus=cpus, num_gpus=1 if use_gpu else 0, max_restarts=run.retries,
            max_task_retries=run.retries)
        actors = [actor_cls.remote(cfg, run.factory, cpus) for _ in range(workers)]
        try:
            startup = _ray_loop(ray, actors, lambda: actor_cls.remote(cfg, run.factory, cpus), run)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)
        return workers, startup
    finally:
        if started_here:
            ray.shutdown()


def _ray_loop(ray: Any, actors: list[Any], new_actor: Callable[[], Any], run: EngineRun) -> float:
    """Feed each actor one video at a time; returns the seconds until the first result."""
    start = time.perf_counter()
    startup = 0.0
    queue = list(run.jobs)
    in_flight: dict[Any, tuple[int, VideoJob]] = {}
    while queue or in_flight:
        busy = {slot for slot, _ in in_flight.values()}
        for slot, actor in enumerate(actors):
            if queue and slot not in busy:
                job = queue.pop(0)
                in_flight[actor.process.remote(job, run.options)] = (slot, job)
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
                record = crash_record(job, run.options.output_root, run.retries + 1,
                                      _ray_reason(exc))
                ray.kill(actors[slot], no_restart=True)
                actors[slot] = new_actor()
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None) or exc
                if isinstance(cause, WorkerInitError):
                    raise WorkerInitError(str(cause)) from None
                record = {**base_record(job, run.options.output_root), "error": describe(cause)}
            if not startup:
                startup = time.perf_counter() - start
            run.on_result(record)
    return startup


def _ray_reason(exc: BaseException) -> str:
    """The line that matters in a Ray error (its last ``SomeError: ...`` line), uncoloured."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    errors = re.findall(r"^\s*(\w+(?:Error|Exception): .*)$", text, flags=re.MULTILINE)
    line = errors[-1] if errors else text.strip().split("\n")[0]
    return one_line(line)[:300] or type(exc).__name__
