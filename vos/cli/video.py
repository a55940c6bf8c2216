"""``python -m vos.run video SOURCE --init-box ...``: segment objects through one video.

Prompts come from ``--init-box/--init-points/--init-mask`` (on ``--init-frame``) and from a
``--prompts`` JSON file (several objects on several frames, see
``vos.io.prompt_input.prompts_from_file``). ``--direction`` picks the passes: frames before an
object's first prompt come from a backward pass (``both``, the default), or stay empty
(``forward``).
"""

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

# Which passes a run makes (``vos.pipeline.PassPlan``); the pipeline is imported only to run.
DIRECTIONS = ("both", "forward", "backward")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``video`` mode's sub-parser."""
    video = sub.add_parser("video", help="segment objects through a video file or frame folder")
    video.add_argument("source", help="video file (mp4/avi/mov/...) or a folder of frames")
    video.add_argument("--init-box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                       help="one object by its box on the init frame (repeat for more)")
    video.add_argument("--init-points", action="append", default=[], metavar="'X,Y[,L] ...'",
                       help="one object by points, label 1 (default) or 0 (repeat for more)")
    video.add_argument("--init-mask", help="palette/binary PNG: one object per id")
    video.add_argument("--init-frame", type=int, default=0,
                       help="frame the --init-* prompts apply to")
    video.add_argument("--prompts", metavar="FILE.json",
                       help="prompts of several objects on several frames: a JSON list of "
                            '{"frame": K, "obj_id": N, "box": [x0,y0,x1,y1]} / "points": '
                            '[[x,y],...] with "labels": [1,0,...] / "mask": "file.png" entries')
    video.add_argument("--direction", choices=DIRECTIONS, default="both",
                       help="both (default): frames before an object's first prompt come from "
                            "a backward pass; forward: they stay empty; backward: only the "
                            "backward pass, from the latest prompted frame down to frame 0")
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
    from vos.io.prompt_input import (
        check_prompts,
        prompt_plan,
        prompts_from_file,
        prompts_from_flags,
    )
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
        prompts = prompts_from_flags(args.init_box, args.init_points, args.init_mask, image_hw)
        if not prompts and not args.prompts:
            raise UsageError("no initial prompt: give --init-box, --init-points, --init-mask "
                             "or --prompts")
        prompts = check_prompts(prompts, image_hw) if prompts else []
        check_init_frame(args.init_frame, source.info.num_frames, args.max_frames)
        file_prompts = None
        if args.prompts:
            known = [n for n in (source.info.num_frames, args.max_frames) if n is not None]
            if not known:
                raise UsageError(f"{args.source}: the frame count is unknown; --prompts needs "
                                 "it (give --max-frames)")
            file_prompts = prompts_from_file(args.prompts, image_hw, min(known))
            prompt_plan(prompts, args.init_frame, file_prompts)  # no object prompted twice
        check_model_config(cfg.model)
        # One run per folder, refused at once; the pipeline keeps the same lock.
        with FolderLock(output):
            segmenter = build_segmenter(cfg.model)
            try:
                summary = run_video(source, segmenter, prompts, output, cfg,
                                    init_frame=args.init_frame, max_frames=args.max_frames,
                                    overwrite=args.overwrite, progress=not args.quiet,
                                    frame_prompts=file_prompts, direction=args.direction)
            except KeyboardInterrupt:
                return interrupted(f"the frames written so far in {output} are complete; "
                                   "run the same command again to resume")
    rows = [("output", summary.output_dir),
            ("frames", f"{summary.frames_processed} processed, {summary.frames_resumed} resumed"
             + (f", {summary.frames_backward} tracked backward" if summary.frames_backward
                else "")),
            ("speed", f"{summary.fps:.2f} frames/s ({summary.seconds:.1f} s)"),
            ("model", getattr(segmenter, "name", "SamPredictor (PyTorch)"))]
    rows += [(f"  {stage}", f"{ms:.1f} ms/frame") for stage, ms in summary.stage_ms_per_frame.items()]
    rows += [(f"object {obj_id}", f"visible on {int(s['frames_visible'])} frames, "
              f"mean predicted IoU {s['mean_score']:.3f}") for obj_id, s in summary.objects.items()]
    print_table("done", rows)
    return 0
