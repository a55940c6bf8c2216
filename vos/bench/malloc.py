"""The allocator comparison: the torch rows again under glibc's default ``malloc`` settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from repvit_sam.utils.malloc import MALLOC_ENV
from vos.bench.report import Report


def compare_malloc(report: Report, bench_args: Sequence[str]) -> None:
    """Rerun the torch encoder and decoder rows in a child with ``REPVIT_VOS_MALLOC=system``.

    ``mallopt`` settings cannot be undone inside a process, so the comparison runs
    ``python -m vos.bench *bench_args`` in a fresh interpreter right after this one's rows and
    appends its repvit encoder rows and torch decoder rows (their ``malloc`` column says
    ``system``); a failed child becomes a note.

    Args:
        report: this run's report (its ``gemm_gflops`` must be measured).
        bench_args: the child's flags, without ``--output`` (a temporary folder).
    """
    command = [sys.executable, "-m", "vos.bench", *bench_args]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, MALLOC_ENV: "system"}
        done = subprocess.run([*command, "--output", tmp], env=env, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            report.notes.append(f"--compare-malloc: child run failed ({done.stderr.strip()[-200:]})")
            return
        child = json.loads((Path(tmp) / "bench.json").read_text())
    for row in child["encoder"]:
        if row["model"] == "repvit":
            # Against this run's GEMM bound, like every other row of the report.
            row["gemm_fraction"] = round(row["gflop_per_s"] / report.gemm_gflops, 3)
            report.encoder.append(row)
    report.decoder += [r for r in child["decoder"] if r["backend"].startswith("torch")]
