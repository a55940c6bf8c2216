"""The batch's results: one record per manifest row, kept on disk as JSONL and CSV.

``batch_results.jsonl`` (and its CSV twin for spreadsheets) is rewritten atomically after
every video, so an interrupted batch always leaves a readable list of what finished; a re-run
reads it back and skips the rows it lists as complete.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vos.batch.manifest import VideoJob
from vos.config import RunConfig
from vos.io.atomic import write_text_atomic

RESULTS_JSONL = "batch_results.jsonl"
RESULTS_CSV = "batch_results.csv"
RESULT_FIELDS = ("row", "id", "video", "status", "frames", "frames_processed", "seconds",
                 "fps", "objects", "attempts", "worker", "error", "output")


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


def base_record(job: VideoJob, output_root: str | Path) -> dict[str, Any]:
    """A job's result record before it ran: ``failed`` with one attempt, nothing computed.

    Args:
        job: the manifest row.
        output_root: the batch output folder (the video's outputs go to ``<root>/<key>``).
    """
    return {"row": job.row, "id": job.key, "video": job.video, "status": "failed",
            "frames": 0, "frames_processed": 0, "seconds": 0.0, "fps": 0.0, "objects": 0,
            "attempts": 1, "worker": None, "error": None,
            "output": str(Path(output_root) / job.key)}


def crash_record(job: VideoJob, output_root: str | Path, attempts: int,
                 reason: str) -> dict[str, Any]:
    """The ``failed`` record of a video whose worker died on every one of its attempts."""
    return {**base_record(job, output_root), "attempts": attempts,
            "error": f"worker died {attempts} time(s) on this video ({reason})"}


class ResultBook:
    """The batch results, rewritten atomically (JSONL + CSV) after every video.

    On creation it settles the rows that need no worker: rows the manifest parser rejected
    (failed) and rows a previous run of the same job completed (skipped), then writes the
    files once, so even a batch with nothing left to do leaves a complete list.

    Args:
        output_dir: the batch output folder.
        jobs: every manifest row, in manifest order.
        cfg: the run configuration (part of each job's digest).
        overwrite: ignore the previous results instead of skipping what they list.
    """

    def __init__(self, output_dir: Path, jobs: list[VideoJob], cfg: RunConfig, *,
                 overwrite: bool) -> None:
        self.output_dir = output_dir
        self.jobs = jobs
        self.hashes = {job.row: job.digest(cfg) for job in jobs}
        previous = {} if overwrite else _read_previous(output_dir / RESULTS_JSONL)
        self._records: dict[int, dict[str, Any]] = {}
        for job in jobs:
            old = previous.get(job.key)
            if job.error is not None:
                self._records[job.row] = {**base_record(job, output_dir), "status": "failed",
                                          "error": job.error}
            elif old and old.get("status") in ("ok", "skipped") and (
                    old.get("job_hash") == self.hashes[job.row]) and _complete(output_dir / job.key):
                self._records[job.row] = {**old, "row": job.row, "status": "skipped",
                                          "attempts": 0, "error": None}
        self.flush()

    def pending(self, job: VideoJob) -> bool:
        """True when the job still has to run (no record yet)."""
        return job.row not in self._records

    def count(self, status: str) -> int:
        """Records with this status so far."""
        return sum(1 for r in self._records.values() if r["status"] == status)

    def add(self, record: dict[str, Any]) -> None:
        """Keep a worker's record (stamped with its job's digest) and rewrite the files."""
        record["job_hash"] = self.hashes[record["row"]]
        self._records[record["row"]] = record
        self.flush()

    def records(self) -> list[dict[str, Any]]:
        """The records so far, in manifest order."""
        return [self._records[job.row] for job in self.jobs if job.row in self._records]

    def flush(self) -> None:
        """Rewrite ``batch_results.jsonl`` and ``batch_results.csv`` atomically."""
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
    """The records of an earlier run, by output folder name (empty without one)."""
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
    # Imported on use: ``vos.cli`` imports this package to build its parser, and the
    # pipeline would bring the tracker and the video readers along.
    from vos.pipeline import SUMMARY

    try:
        summary = json.loads((video_dir / SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(summary.get("complete")) and summary.get("num_frames", 0) > 0
