"""``python -m vos.run video SOURCE --init-box ...``: segment objects through one video."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from vos.cli.common import (
    UsageError,
    add_common_arguments,
    add_output_arguments,
    check_init_frame,
    config_from,
    interrupted,
    print_table,
    with_output_flags,
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``video`` mode's sub-parser."""
    video = sub.add_parser("video", help="segment objects through a video file or frame folder")
    video.add_argument("source", help="video file (mp4/avi/mov/...) or a folder of frames")
    video.add_argument("--init-box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                       help="one object by its box on the init frame (repeat for more)")
    video.add_argument("--init-points", action="append", default=[], metavar="'X,Y[,L] ...'",
                       help="one object by points, label 1 (default) or 0 (repeat for more)")
    video.add_argument("--init-mask", help="palette/binary PNG: one object per id")
    video.add_argument("--init-frame", type=int, default=0, help="frame the prompts apply to")
    video.add_argument("--output", "-o", help="results folder (default: outputs/<video name>)")
    video.add_argument("--max-frames", type=int, help="process only the first N frames")
    video.add_argument("--overwrite", action="store_true",
                       help="replace earlier results instead of resuming them")
    add_output_arguments(video)
    add_common_arguments(video)
    return video


def run(args: argparse.Namespace) -> int:
    """Track the prompted objects through the video; print the end-of-run table."""
    from vos.io.lock import FolderLock
    from vos.io.prompt_input import check_prompts, prompts_from_flags
    from vos.io.sources import open_source
    from vos.models import build_segmenter, check_model_config
    from vos.pipeline import run_video

    cfg = with_output_flags(config_from(args), args)
    output = Path(args.output or cfg.io.output_dir or Path("outputs") / Path(args.source).stem)
    cfg = dataclasses.replace(cfg, io=dataclasses.replace(cfg.io, source=args.source,
                                                          output_dir=str(output)))
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames {args.max_frames}: expected >= 1")
    with open_source(args.source, backend=args.reader) as source:
        # Everything that can be checked is checked before the model loads (seconds).
        image_hw = source.info.image_hw
        prompts = check_prompts(
            prompts_from_flags(args.init_box, args.init_points, args.init_mask, image_hw),
            image_hw,
        )
        check_init_frame(args.init_frame, source.info.num_frames, args.max_frames)
        check_model_config(cfg.model)
        # One run per folder, refused at once; the pipeline keeps the same lock.
        with FolderLock(output):
            segmenter = build_segmenter(cfg.model)
            try:
                summary = run_video(source, segmenter, prompts, output, cfg,
                                    init_frame=args.init_frame, max_frames=args.max_frames,
                                    overwrite=args.overwrite, progress=not args.quiet)
            except KeyboardInterrupt:
                return interrupted(f"the frames written so far in {output} are complete; "
                                   "run the same command again to resume")
    rows = [("output", summary.output_dir),
            ("frames", f"{summary.frames_processed} processed, {summary.frames_resumed} resumed"),
            ("speed", f"{summary.fps:.2f} frames/s ({summary.seconds:.1f} s)"),
            ("model", getattr(segmenter, "name", "SamPredictor (PyTorch)"))]
    rows += [(f"  {stage}", f"{ms:.1f} ms/frame") for stage, ms in summary.stage_ms_per_frame.items()]
    rows += [(f"object {obj_id}", f"visible on {int(s['frames_visible'])} frames, "
              f"mean predicted IoU {s['mean_score']:.3f}") for obj_id, s in summary.objects.items()]
    print_table("done", rows)
    return 0
