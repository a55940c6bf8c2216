"""Command line: ``python -m vos.run [video|webcam|davis|uvo|batch] ...`` (also ``repvit-vos``).

Thin by design (STYLE 5.11): it parses arguments, builds the config, the model and the
source, and calls the library. User errors (bad paths, prompts, configs, checkpoints) print
one ``error: ...`` line and exit with status 2; Ctrl-C exits with 130 after flushing
everything written so far.

Examples:
    python -m vos.run video.mp4 --init-box 100,80,220,240 --checkpoint weights/repvit_sam.pt
    python -m vos.run davis --root DAVIS --output results/davis --checkpoint ...
    python -m vos.run davis --root DAVIS --eval-only results/osvos
    python -m vos.run uvo --root UVO/frames --annotations gt.json --output results/uvo ...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vos.config import ConfigError, RunConfig, dump_config, load_config

logger = logging.getLogger("vos.run")

SUBCOMMANDS = ("video", "webcam", "davis", "uvo", "batch")
CHECKPOINT_ENV = "REPVIT_SAM_CHECKPOINT"
NO_CHECKPOINT = (
    "no checkpoint given: download the official RepViT-SAM weights with "
    "`python -m repvit_sam.download --model repvit --dest weights` and pass "
    "--checkpoint weights/repvit_sam.pt (or set model.checkpoint, or "
    f"the {CHECKPOINT_ENV} environment variable)"
)


class UsageError(ValueError):
    """A command-line mistake worth one line, not a traceback."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file overriding the default config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. tracker.max_missed_frames=10")
    parser.add_argument("--checkpoint", help=f"model weights (default: ${CHECKPOINT_ENV})")
    parser.add_argument("--model-type", help="repvit (default), vit_t, vit_b, vit_l or vit_h")
    parser.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", "-v", action="store_true", help="log tracker events")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every mode."""
    parser = argparse.ArgumentParser(
        prog="python -m vos.run",
        description="Video object segmentation with RepViT-SAM. The mode defaults to 'video'.",
    )
    sub = parser.add_subparsers(dest="mode", metavar="MODE")

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
    video.add_argument("--no-png", action="store_true", help="skip the palette PNGs")
    video.add_argument("--no-json", action="store_true", help="skip the COCO-RLE JSON")
    video.add_argument("--no-video", action="store_true", help="skip the overlay mp4")
    video.add_argument("--reader", choices=("auto", "decord", "opencv"), default="auto",
                       help="video decoding backend")
    _common(video)

    webcam = sub.add_parser("webcam", help="live tracking from a camera, URL or file")
    _common(webcam)
    from vos import live

    live.add_arguments(webcam)

    davis = sub.add_parser("davis", help="DAVIS 2017 semi-supervised evaluation")
    davis.add_argument("--root", help="DAVIS root (JPEGImages/480p, Annotations/480p, ImageSets)")
    davis.add_argument("--split", default=None, help="ImageSets/2017 split (default: val)")
    davis.add_argument("--sequences", help="comma-separated subset of sequences")
    davis.add_argument("--output", "-o", help="results folder")
    davis.add_argument("--eval-only", metavar="RESULTS_DIR",
                       help="only score an existing results folder (any method's)")
    _common(davis)

    uvo = sub.add_parser("uvo", help="UVO / YouTube-VIS class-agnostic evaluation (AR100)")
    uvo.add_argument("--root", help="folder the annotation's file_names are relative to")
    uvo.add_argument("--annotations", help="UVO dense annotations (YouTube-VIS JSON)")
    uvo.add_argument("--output", "-o", help="results folder")
    uvo.add_argument("--eval-only", metavar="PRED_JSON", help="only score a results JSON")
    uvo.add_argument("--max-proposals", type=int, default=100,
                     help="frame-0 automatic-mask-generator proposals kept (default 100)")
    uvo.add_argument("--points-per-side", type=int, default=32,
                     help="automatic mask generator grid (default 32, as SAM)")
    _common(uvo)

    batch = sub.add_parser("batch", help="many videos from a CSV/JSONL manifest")
    _common(batch)
    from vos import batch as batch_mode

    batch_mode.add_arguments(batch)
    return parser


def _config_from(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.set)
    if args.checkpoint:
        overrides.append(f"model.checkpoint={args.checkpoint}")
    elif os.environ.get(CHECKPOINT_ENV):
        overrides.append(f"model.checkpoint={os.environ[CHECKPOINT_ENV]}")
    if args.model_type:
        overrides.append(f"model.model_type={args.model_type}")
    if args.device:
        overrides.append(f"model.device={args.device}")
    return load_config(args.config, overrides)


def build_model(cfg: RunConfig) -> Any:
    """The Sam model of the config (strict checkpoint load, optional fusion)."""
    from repvit_sam import sam_model_registry

    model_cfg = cfg.model
    if not model_cfg.checkpoint:
        raise UsageError(NO_CHECKPOINT)
    if not Path(model_cfg.checkpoint).is_file():
        raise UsageError(f"--checkpoint {model_cfg.checkpoint}: no such file. " + NO_CHECKPOINT)
    if model_cfg.model_type not in sam_model_registry:
        raise UsageError(
            f"model.model_type {model_cfg.model_type!r}: expected one of "
            f"{', '.join(sorted(sam_model_registry))}"
        )
    if model_cfg.dtype != "float32":
        raise UsageError(f"model.dtype={model_cfg.dtype}: only float32 is supported so far")
    kwargs: dict[str, Any] = {"checkpoint": model_cfg.checkpoint, "device": model_cfg.device}
    if model_cfg.model_type in ("repvit", "default"):
        kwargs["fuse"] = model_cfg.fuse
        kwargs["checkpoint_sha256"] = model_cfg.checkpoint_sha256
    return sam_model_registry[model_cfg.model_type](**kwargs)


def resolve_backend(backend: str, device: str) -> str:
    """``model.backend`` as run on ``device``: ``auto`` means the reference predictor off-CPU.

    The graph backends (OpenVINO, ONNX Runtime) and the channels-last encoder serve CPUs; on a
    GPU the PyTorch predictor is the fast path.
    """
    if backend == "auto" and device.split(":")[0] != "cpu":
        return "predictor"
    return backend


def build_predictor(cfg: RunConfig) -> Any:
    """The segmenter of the config: a SamPredictor, or a faster backend (model.backend)."""
    from repvit_sam import SamPredictor
    from vos.roi import RoiSegmenter, split_roi_mode

    model = build_model(cfg)
    backend = resolve_backend(cfg.model.backend, cfg.model.device)
    roi, mode = split_roi_mode(cfg.model.fast_mode)
    if backend == "predictor" and mode == "exact":
        return SamPredictor(model)
    from repvit_sam.backends import FastMode, build_segmenter

    try:
        FastMode.parse(mode)
    except ValueError as exc:
        raise UsageError(f"model.fast_mode={cfg.model.fast_mode}: {_one_line(exc)}") from None

    try:
        segmenter = build_segmenter(model, "torch" if backend == "predictor" else backend,
                                    mode=mode, checkpoint=cfg.model.checkpoint)
    except ImportError as exc:
        raise UsageError(f"model.backend={backend}: {_one_line(exc)}") from None
    return RoiSegmenter(segmenter) if roi else segmenter


def _video_prompts(args: argparse.Namespace, image_hw: tuple[int, int]) -> list:
    from vos.pipeline import masks_from_png, parse_box, parse_points
    from vos.types import Prompt

    prompts = [Prompt(box_xyxy=parse_box(text)) for text in args.init_box]
    for text in args.init_points:
        points, labels = parse_points(text)
        prompts.append(Prompt(points_xy=points, point_labels=labels))
    if args.init_mask:
        prompts.extend(masks_from_png(Path(args.init_mask), image_hw))
    return prompts


def _print_table(rows: list[tuple[str, str]], title: str) -> None:
    width = max(len(k) for k, _ in rows)
    print(title)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


def run_video_mode(args: argparse.Namespace) -> int:
    import dataclasses

    from vos.io.sources import open_source
    from vos.pipeline import check_prompts, run_video

    cfg = _config_from(args)
    io_cfg = dataclasses.replace(
        cfg.io,
        source=args.source,
        save_png=cfg.io.save_png and not args.no_png,
        save_json=cfg.io.save_json and not args.no_json,
        save_video=cfg.io.save_video and not args.no_video,
    )
    output = Path(args.output or cfg.io.output_dir or Path("outputs") / Path(args.source).stem)
    cfg = dataclasses.replace(cfg, io=dataclasses.replace(io_cfg, output_dir=str(output)))
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames {args.max_frames}: expected >= 1")
    with open_source(args.source, backend=args.reader) as source:
        prompts = _video_prompts(args, source.info.image_hw)
        check_prompts(prompts, source.info.image_hw)  # fail fast, before loading the model
        predictor = build_predictor(cfg)
        output.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, output / "resolved_config.yaml", checkpoint_sha256=cfg.model.checkpoint_sha256)
        try:
            summary = run_video(source, predictor, prompts, output, cfg,
                                init_frame=args.init_frame, max_frames=args.max_frames,
                                overwrite=args.overwrite, progress=not args.quiet)
        except KeyboardInterrupt:
            print(f"interrupted: the frames written so far in {output} are complete; "
                  "run the same command again to resume", file=sys.stderr)
            return 130
    rows = [("output", summary.output_dir),
            ("frames", f"{summary.frames_processed} processed, {summary.frames_resumed} resumed"),
            ("speed", f"{summary.fps:.2f} frames/s ({summary.seconds:.1f} s)"),
            ("model", getattr(predictor, "name", "SamPredictor (PyTorch)"))]
    rows += [(f"  {stage}", f"{ms:.1f} ms/frame") for stage, ms in summary.stage_ms_per_frame.items()]
    rows += [(f"object {obj_id}", f"visible on {int(s['frames_visible'])} frames, "
              f"mean predicted IoU {s['mean_score']:.3f}") for obj_id, s in summary.objects.items()]
    _print_table(rows, "done")
    return 0


def _make_tracker_factory(cfg: RunConfig, predictor: Any) -> Any:
    from vos.tracker import VideoTracker

    return lambda: VideoTracker(predictor, cfg.tracker, cfg.prompt, seed=cfg.seed)


def run_davis_mode(args: argparse.Namespace) -> int:
    import dataclasses

    from vos.eval.davis import evaluate_results, plot_per_object, write_official_csvs
    from vos.eval.drivers import davis_sequences, run_davis

    cfg = _config_from(args)
    root_text = args.root or cfg.eval.root
    if not root_text:
        raise UsageError("davis: --root DAVIS_ROOT is required")
    root = Path(root_text)
    split = args.split or cfg.eval.split
    sequences = [s for s in (args.sequences or "").split(",") if s] or None
    if args.eval_only:
        results = Path(args.eval_only)
        if not results.is_dir():
            raise UsageError(f"--eval-only {results}: no such folder")
        names = davis_sequences(root, split, sequences)
        scores = evaluate_results(root, results, split, names)
        write_official_csvs(scores, results)
        plot_per_object(scores, results / "per_object_jf.png")
        timings: list = []
        output = results
    else:
        output = Path(args.output or cfg.io.output_dir or "outputs/davis")
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, dataset="davis",
                                                                root=str(root), split=split))
        davis_sequences(root, split, sequences)  # layout errors before the model loads
        predictor = build_predictor(cfg)
        output.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, output / "resolved_config.yaml", checkpoint_sha256=cfg.model.checkpoint_sha256)
        try:
            scores, timings = run_davis(root, output, _make_tracker_factory(cfg, predictor),
                                        split=split, sequences=sequences, progress=not args.quiet)
        except KeyboardInterrupt:
            print(f"interrupted: finished sequences in {output} are kept; rerun to resume",
                  file=sys.stderr)
            return 130
    rows = [(k, f"{v:.4f}") for k, v in scores.global_metrics.items()]
    rows += [(f"{t.name}", f"{t.frames} frames, {t.seconds:.1f} s"
              + (" (already done)" if t.skipped else "")) for t in timings]
    rows.append(("written", f"{output}/global_results.csv, per-sequence_results.csv, "
                            "scores.json, per_object_jf.png"))
    _print_table(rows, "DAVIS 2017 semi-supervised")
    return 0


def run_uvo_mode(args: argparse.Namespace) -> int:
    import dataclasses

    from vos.eval.drivers import UVO_STATS, run_uvo
    from vos.eval.uvo import evaluate_uvo
    from vos.io.sinks import write_text_atomic

    cfg = _config_from(args)
    if not args.annotations:
        raise UsageError("uvo: --annotations GT_JSON is required")
    gt_path = Path(args.annotations)
    if not gt_path.is_file():
        raise UsageError(f"--annotations {gt_path}: no such file")
    try:
        gt = json.loads(gt_path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"--annotations {gt_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if args.eval_only:
        pred_path = Path(args.eval_only)
        if not pred_path.is_file():
            raise UsageError(f"--eval-only {pred_path}: no such file")
        try:
            pred = json.loads(pred_path.read_text())
        except json.JSONDecodeError as exc:
            raise UsageError(f"--eval-only {pred_path}: not valid JSON ({exc.msg})") from None
        output = pred_path.parent
        timings: list = []
    else:
        if not args.root:
            raise UsageError("uvo: --root FRAMES_ROOT is required (file_names are relative to it)")
        if args.max_proposals < 1:
            raise UsageError(f"--max-proposals {args.max_proposals}: expected >= 1")
        output = Path(args.output or cfg.io.output_dir or "outputs/uvo")
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, dataset="uvo",
                                                                root=str(args.root)))
        from repvit_sam import SamAutomaticMaskGenerator, SamPredictor

        model = build_model(cfg)
        predictor = SamPredictor(model)
        generator = SamAutomaticMaskGenerator(model, points_per_side=args.points_per_side,
                                              max_num_masks=args.max_proposals)

        def propose(frame: Any) -> list:
            return [record["segmentation"] for record in generator.generate(frame)]

        output.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, output / "resolved_config.yaml", checkpoint_sha256=cfg.model.checkpoint_sha256)
        try:
            pred, timings = run_uvo(gt, Path(args.root), output, predictor, propose, cfg.tracker,
                                    cfg.prompt, progress=not args.quiet)
        except KeyboardInterrupt:
            print(f"interrupted: finished videos in {output}/videos are kept; rerun to resume",
                  file=sys.stderr)
            return 130
    metrics = evaluate_uvo(gt, pred)
    write_text_atomic(output / "metrics.json", json.dumps(metrics, indent=2))
    rows = [(k, f"{metrics[k]:.4f}") for k in UVO_STATS if k in metrics]
    rows += [(f"video {t.name}", f"{t.frames} frames, {t.seconds:.1f} s"
              + (" (already done)" if t.skipped else "")) for t in timings]
    _print_table(rows, "UVO (class-agnostic, YouTube-VIS AP/AR)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m vos.run`` and the ``repvit-vos`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "video")  # `python -m vos.run video.mp4 ...` is the default mode
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from repvit_sam.build import CheckpointError
    from repvit_sam.utils.malloc import retain_freed_memory
    from vos.eval.drivers import DatasetError
    from vos.io.sources import SourceError
    from vos.pipeline import OutputConflictError, PromptError

    handlers = {"video": run_video_mode, "davis": run_davis_mode, "uvo": run_uvo_mode}
    retain_freed_memory()  # large tensors off glibc's mmap path: 20% of the encoder on CPU
    try:
        if args.mode == "webcam":
            from vos import live

            return live.run(args, _config_from(args), build_predictor)
        if args.mode == "batch":
            from vos import batch as batch_mode

            return batch_mode.run(args, _config_from(args))
        return handlers[args.mode](args)
    except (UsageError, ConfigError, SourceError, PromptError, DatasetError, OutputConflictError,
            CheckpointError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        # Validation errors of the library (bad masks, sizes, JSON) are user errors too.
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    raise SystemExit(main())
