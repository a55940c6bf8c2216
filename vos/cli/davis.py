"""``python -m vos.run davis --root DAVIS ...``: DAVIS 2017 semi-supervised evaluation."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from vos.cli.common import UsageError, add_common_arguments, config_from, interrupted, print_table
from vos.config import dump_config


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``davis`` mode's sub-parser."""
    davis = sub.add_parser("davis", help="DAVIS 2017 semi-supervised evaluation")
    davis.add_argument("--root", help="DAVIS root (JPEGImages/480p, Annotations/480p, ImageSets)")
    davis.add_argument("--split", default=None, help="ImageSets/2017 split (default: val)")
    davis.add_argument("--sequences", help="comma-separated subset of sequences")
    davis.add_argument("--output", "-o", help="results folder")
    davis.add_argument("--eval-only", metavar="RESULTS_DIR",
                       help="only score an existing results folder (any method's)")
    add_common_arguments(davis)
    return davis


def run(args: argparse.Namespace) -> int:
    """Track and score (or only score) the DAVIS split; print the metrics table."""
    from vos.eval.datasets import DavisLayout
    from vos.eval.davis import evaluate_results
    from vos.eval.davis_report import write_report
    from vos.eval.drivers import davis_sequences, run_davis
    from vos.models import build_segmenter, checkpoint_digest
    from vos.tracker import VideoTracker

    cfg = config_from(args)
    root_text = args.root or cfg.eval.root
    if not root_text:
        raise UsageError("davis: --root DAVIS_ROOT is required")
    layout = DavisLayout(Path(root_text), args.split or cfg.eval.split)
    sequences = [s for s in (args.sequences or "").split(",") if s] or None
    timings: list = []
    if args.eval_only:
        output = Path(args.eval_only)
        if not output.is_dir():
            raise UsageError(f"--eval-only {output}: no such folder")
        names = davis_sequences(layout, sequences)
        scores = evaluate_results(layout.root, output, layout.split, names)
        write_report(scores, output)
    else:
        output = Path(args.output or cfg.io.output_dir or "outputs/davis")
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(
            cfg.eval, root=str(layout.root), split=layout.split))
        davis_sequences(layout, sequences)  # layout errors before the model loads
        segmenter = build_segmenter(cfg.model)
        output.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, output / "resolved_config.yaml",
                    checkpoint_sha256=checkpoint_digest(cfg.model))
        try:
            scores, timings = run_davis(
                layout, output,
                lambda: VideoTracker(segmenter, cfg.tracker, cfg.prompt, seed=cfg.seed),
                sequences=sequences, progress=not args.quiet)
        except KeyboardInterrupt:
            return interrupted(f"finished sequences in {output} are kept; rerun to resume")
    rows = [(k, f"{v:.4f}") for k, v in scores.global_metrics.items()]
    rows += [(f"{t.name}", f"{t.frames} frames, {t.seconds:.1f} s"
              + (" (already done)" if t.skipped else "")) for t in timings]
    rows.append(("written", f"{output}/global_results.csv, per-sequence_results.csv, "
                            "scores.json, per_object_jf.png"))
    print_table("DAVIS 2017 semi-supervised", rows)
    return 0
