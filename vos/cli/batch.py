"""``python -m vos.run batch MANIFEST --output DIR``: many videos, locally or on Ray."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vos.cli.common import (
    UsageError,
    add_common_arguments,
    add_output_arguments,
    config_from,
    interrupted,
    print_table,
    with_output_flags,
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``batch`` mode's sub-parser."""
    from vos.batch import ENGINES

    parser = sub.add_parser("batch", help="many videos from a CSV/JSONL manifest")
    add_common_arguments(parser)
    parser.add_argument("manifest", help="CSV (header video,prompt,...) or JSONL manifest")
    parser.add_argument("--output", "-o", help="batch results folder (default: outputs/batch)")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local process pool (default) or a Ray cluster")
    parser.add_argument("--workers", type=int,
                        help="parallel models (default 1; ray: one per GPU of the cluster)")
    parser.add_argument("--ray-address", metavar="auto|HOST:PORT",
                        help="Ray cluster to join (default: start a local Ray)")
    parser.add_argument("--max-frames", type=int, help="process only the first N frames")
    parser.add_argument("--retries", type=int, default=2,
                        help="re-runs of a video whose worker died (default 2)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute every video instead of skipping/resuming")
    parser.add_argument("--auto-max-masks", type=int, default=20,
                        help="proposals kept for 'auto' rows without a count (default 20)")
    parser.add_argument("--auto-points-per-side", type=int, default=32,
                        help="automatic mask generator grid for 'auto' rows (default 32)")
    add_output_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the manifest, then print the summary table.

    Returns:
        0 when every video is ok or skipped, 1 when some failed, 130 on Ctrl-C.

    Raises:
        BatchError, ModelError, UsageError: one-line user errors (printed by ``vos.cli.main``).
    """
    from vos.batch import RESULTS_JSONL, WorkerInitError, import_ray, run_batch
    from vos.models import check_model_config

    cfg = config_from(args)
    # Before starting any worker; Ray workers may have GPUs this driver lacks.
    check_model_config(cfg.model, device=args.engine != "ray")
    if args.engine == "ray":
        import_ray()
    cfg = with_output_flags(cfg, args)
    output = Path(args.output or cfg.io.output_dir or "outputs/batch")
    try:
        summary = run_batch(
            Path(args.manifest), output, cfg, engine=args.engine, workers=args.workers,
            max_frames=args.max_frames, overwrite=args.overwrite, reader=args.reader,
            retries=args.retries, ray_address=args.ray_address,
            auto_points_per_side=args.auto_points_per_side, auto_max_masks=args.auto_max_masks,
            progress=not args.quiet)
    except WorkerInitError as exc:
        raise UsageError(f"the model cannot be built: {exc}") from None
    except KeyboardInterrupt:
        return interrupted(f"finished videos are listed in {output / RESULTS_JSONL}; "
                           "run the same command again to resume")
    failed = [r for r in summary.records if r["status"] == "failed"]
    if failed:
        print_table("failed videos", [(str(r["id"]), str(r["error"])) for r in failed])
    counts = summary.counts
    print_table("batch done", [
        ("videos", f"{counts['ok']} ok, {counts['failed']} failed, "
                   f"{counts['skipped']} skipped (done before)"),
        ("frames", f"{summary.frames_processed} processed"),
        ("engine", f"{summary.engine}, {summary.workers} worker(s), "
                   f"first result after {summary.startup_seconds:.1f} s"),
        ("time", f"{summary.seconds:.1f} s"),
        ("speed", f"{summary.frames_per_second:.2f} frames/s, "
                  f"{summary.videos_per_minute:.1f} videos/min"),
        ("overhead", f"{summary.overhead_per_video:.2f} s/video outside run_video"),
        ("results", str(output / RESULTS_JSONL)),
    ])
    return 1 if summary.counts["failed"] else 0
