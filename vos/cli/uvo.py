"""``python -m vos.run uvo --root FRAMES --annotations GT.json ...``: UVO (AR100) evaluation."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from vos.cli.common import UsageError, add_common_arguments, config_from, interrupted, print_table
from vos.config import dump_config


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``uvo`` mode's sub-parser."""
    uvo = sub.add_parser("uvo", help="UVO / YouTube-VIS class-agnostic evaluation (AR100)")
    uvo.add_argument("--root", help="folder the annotation's file_names are relative to")
    uvo.add_argument("--annotations", help="UVO dense annotations (YouTube-VIS JSON)")
    uvo.add_argument("--output", "-o", help="results folder")
    uvo.add_argument("--eval-only", metavar="PRED_JSON", help="only score a results JSON")
    uvo.add_argument("--max-proposals", type=int, default=100,
                     help="frame-0 automatic-mask-generator proposals kept (default 100)")
    uvo.add_argument("--points-per-side", type=int, default=32,
                     help="automatic mask generator grid (default 32, as SAM)")
    add_common_arguments(uvo)
    return uvo


def _read_json(path: Path, flag: str) -> Any:
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{flag} {path}: not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Track frame-0 proposals through every video (or only score); print the metrics."""
    from vos.eval.drivers import UVO_STATS, run_uvo
    from vos.eval.uvo import evaluate_uvo
    from vos.io.atomic import write_text_atomic
    from vos.io.lock import FolderLock

    cfg = config_from(args)
    if not args.annotations:
        raise UsageError("uvo: --annotations GT_JSON is required")
    gt = _read_json(Path(args.annotations), "--annotations")
    timings: list = []
    if args.eval_only:
        pred_path = Path(args.eval_only)
        # Scored before the folder is locked: a malformed file is refused with nothing written.
        metrics = evaluate_uvo(gt, _read_json(pred_path, "--eval-only"))
        output = pred_path.parent
    else:
        from repvit_sam import SamAutomaticMaskGenerator
        from vos.models import build_segmenter, load_model

        if not args.root:
            raise UsageError("uvo: --root FRAMES_ROOT is required (file_names are relative to it)")
        if args.max_proposals < 1:
            raise UsageError(f"--max-proposals {args.max_proposals}: expected >= 1")
        output = Path(args.output or cfg.io.output_dir or "outputs/uvo")
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, root=str(args.root)))
        loaded = load_model(cfg.model)
        segmenter = build_segmenter(cfg.model, loaded)
        generator = SamAutomaticMaskGenerator(loaded.model, points_per_side=args.points_per_side,
                                              max_num_masks=args.max_proposals)

        def propose(frame: Any) -> list:
            return [record["segmentation"] for record in generator.generate(frame)]

        def track() -> tuple[list, list]:
            dump_config(cfg, output / "resolved_config.yaml",
                        checkpoint_sha256=loaded.checkpoint_sha256)
            return run_uvo(gt, Path(args.root), output, segmenter, propose, cfg.tracker,
                           cfg.prompt, progress=not args.quiet)

    with FolderLock(output):
        if not args.eval_only:
            try:
                pred, timings = track()
            except KeyboardInterrupt:
                return interrupted(f"finished videos in {output}/videos are kept; rerun to "
                                   "resume")
            metrics = evaluate_uvo(gt, pred)
        write_text_atomic(output / "metrics.json", json.dumps(metrics, indent=2))
    rows = [(k, f"{metrics[k]:.4f}") for k in UVO_STATS if k in metrics]
    rows += [(f"video {t.name}", f"{t.frames} frames, {t.seconds:.1f} s"
              + (" (already done)" if t.skipped else "")) for t in timings]
    print_table("UVO (class-agnostic, YouTube-VIS AP/AR)", rows)
    return 0
