"""``python -m vos.run webcam --camera 0 ...``: live tracking from a camera, URL or file."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from vos.cli.common import UsageError, add_common_arguments, config_from, print_table
from vos.io.lock import FolderLock
from vos.models import SegmenterFactory, build_segmenter, checkpoint_digest


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``webcam`` mode's sub-parser."""
    parser = sub.add_parser("webcam", help="live tracking from a camera, URL or file")
    add_common_arguments(parser)
    parser.add_argument("--camera", default="0",
                        help="camera index (default 0), stream URL, or a video file / frame "
                             "folder played as a live camera")
    parser.add_argument("--no-window", action="store_true",
                        help="headless: no window; write the outputs and print a summary")
    parser.add_argument("--output", "-o",
                        help="results folder (default: outputs/webcam/<date-time>)")
    parser.add_argument("--record", action="store_true",
                        help="write every shown frame's masks and the overlay mp4 "
                             "(implied by --no-window, which follows io.save_*)")
    parser.add_argument("--max-frames", type=int, help="stop after N shown frames")
    parser.add_argument("--init-box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                        help="an object on the first frame, by its box (repeat for more)")
    parser.add_argument("--init-points", action="append", default=[], metavar="'X,Y[,L] ...'",
                        help="an object on the first frame, by points (repeat for more)")
    parser.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                        help="for a video file: play at its fps as a camera would (default), "
                             "or run the model on every frame")
    parser.add_argument("--carry", action=argparse.BooleanOptionalAction, default=None,
                        help="show every camera frame, with masks carried by optical flow "
                             "between model results (default: live.carry, true); "
                             "--no-carry shows only the frames the model ran on")
    return parser


def _check_output(output: Path) -> None:
    from vos.live import LiveError

    for sub in ("masks", "json"):
        folder = output / sub
        if folder.is_dir() and any(folder.iterdir()):
            raise LiveError(f"--output {output}: holds results of an earlier run ({sub}/ is not "
                             "empty); choose another folder")


def run(args: argparse.Namespace, segmenter_factory: SegmenterFactory = build_segmenter) -> int:
    """Track live until the camera ends, ``--max-frames`` or ``q``; print the summary.

    Args:
        args: the parsed flags.
        segmenter_factory: builds the segmenter of the model config (default: the model
            factory; tests pass a fake).

    Raises:
        UsageError, SourceError, PromptError: user errors, printed as one line by the CLI.
    """
    from vos.live import check_display

    cfg = config_from(args)
    if args.carry is not None:
        cfg = replace(cfg, live=replace(cfg.live, carry=args.carry))
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames {args.max_frames}: expected >= 1")
    if not args.no_window:
        check_display()  # before the model loads: minutes on a slow machine
    record = args.record or args.no_window
    output_text = args.output or cfg.io.output_dir
    output = Path(output_text) if output_text else (
        Path("outputs") / "webcam" / time.strftime("%Y%m%d-%H%M%S"))
    folder_lock = FolderLock(output) if record else contextlib.nullcontext()
    with folder_lock:  # one recording per folder; refused before the camera and model open
        if record:
            _check_output(output)
        return _run_live(args, cfg, output, record, segmenter_factory)


def _run_live(args: argparse.Namespace, cfg: Any, output: Path, record: bool,
              segmenter_factory: SegmenterFactory) -> int:
    from vos.config import dump_config
    from vos.io.atomic import write_text_atomic
    from vos.io.camera import open_camera
    from vos.io.prompt_input import check_prompts, prompts_from_flags
    from vos.io.sinks import ResultSink
    from vos.live import (
        SNAPSHOT_DIR,
        SUMMARY_NAME,
        LiveApp,
        LiveSession,
        LiveWindow,
        MaskCarrier,
        PromptDrawer,
    )

    camera = open_camera(args.camera, realtime=args.realtime)
    window: LiveWindow | None = None
    recorder: ResultSink | None = None
    app: LiveApp | None = None
    interrupted = False
    try:
        image_hw = camera.info.image_hw
        prompts = prompts_from_flags(args.init_box, args.init_points, None, image_hw)
        if prompts:
            prompts = check_prompts(prompts, image_hw)
        elif args.no_window:
            print("note: no --init-box/--init-points: nothing will be tracked", file=sys.stderr)
        segmenter = segmenter_factory(cfg.model)
        if record:
            cfg = replace(cfg, io=replace(cfg.io, source=args.camera, output_dir=str(output),
                                          save_video=cfg.io.save_video or args.record))
            output.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, output / "resolved_config.yaml",
                        checkpoint_sha256=checkpoint_digest(cfg.model))
            recorder = ResultSink(output, image_hw, camera.info.fps,
                                  save_png=cfg.io.save_png, save_json=cfg.io.save_json,
                                  save_video=cfg.io.save_video)
        session = LiveSession(segmenter, cfg.tracker, cfg.prompt, seed=cfg.seed)
        drawer = PromptDrawer(image_hw)
        carrier = (MaskCarrier(preset=cfg.live.flow_preset, flow_size=cfg.live.flow_size)
                   if cfg.live.carry else None)
        if not args.no_window:
            window = LiveWindow(on_mouse=drawer.on_mouse)
            print("mouse: drag a box to add an object; click an object to correct it "
                  "(ctrl+click: remove that region), click elsewhere to add one; "
                  "shift+click / right-click collect +/- points, Enter adds them\n"
                  "keys: r reset, d/x remove last, p pause, s save masks, q/Esc quit",
                  file=sys.stderr)
        app = LiveApp(camera, session, window=window, recorder=recorder,
                      snapshot_dir=output / SNAPSHOT_DIR, max_frames=args.max_frames,
                      init_prompts=prompts, drawer=drawer, carrier=carrier)
        app.run()
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C: close everything below, keep what was written
    finally:
        if window is not None:
            window.close()
        camera.close()
        if recorder is not None:
            recorder.close()
    if app is None:
        print("interrupted before the first frame", file=sys.stderr)
        return 130
    stats = app.stats
    rows = [("camera", f"{camera.info.name} ({camera.info.image_hw[1]}x{camera.info.image_hw[0]}, "
                       f"{camera.info.fps:g} fps{', real time' if camera.drop_stale else ''})"),
            ("frames", f"{stats.frames_captured} captured, {stats.frames_shown} shown "
                       f"({stats.frames_carried} with carried masks), {stats.frames_processed} "
                       f"processed by the model, {stats.frames_dropped} dropped"),
            ("speed", f"display {stats.display_fps:.2f} frames/s, model {stats.fps:.2f} "
                      f"frames/s over {stats.active_seconds:.1f} s"),
            ("latency", f"median {stats.latency_ms(50):.0f} ms, p95 {stats.latency_ms(95):.0f} ms"
                        f" (capture -> shown); model median {stats.model_latency_ms(50):.0f} ms")]
    if recorder is not None or app.snapshots_saved:
        rows.append(("output", str(output)))
    if recorder is not None:
        write_text_atomic(output / SUMMARY_NAME, json.dumps(stats.as_dict(), indent=2))
    print_table("interrupted" if interrupted else "done", rows)
    return 130 if interrupted else 0
