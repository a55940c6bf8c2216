"""``python -m vos.bench``: the command line of the CPU speed benchmark (:mod:`vos.bench`).

One step per function: :func:`plan_run` checks the flags, :func:`load_models` builds the
models, the ``run_*`` steps fill the report section by section, and :func:`main` writes and
prints it. User errors (a backend not installed, an unknown model or fast mode, a bad
checkpoint) print one ``vos.bench: ...`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repvit_sam import Sam, sam_model_registry
from repvit_sam.build import CheckpointError
from repvit_sam.runtime import BACKENDS, EXACT, FastMode, available_backends
from repvit_sam.runtime.runners import TORCH_VARIANTS
from repvit_sam.utils.malloc import MALLOC_ENV, retain_freed_memory
from vos.bench.agreement import bench_agreement
from vos.bench.annotator import bench_annotator
from vos.bench.decoders import bench_decoders
from vos.bench.encoders import bench_encoders, encoder_configs, encoder_shapes
from vos.bench.inputs import default_boxes, fill_synthetic_weights, load_frames
from vos.bench.live import DEFAULT_KS, bench_live, default_modes, parse_size
from vos.bench.loop import bench_loop
from vos.bench.malloc import compare_malloc
from vos.bench.objects import bench_objects, bench_uvo
from vos.bench.predictor import bench_predictor
from vos.bench.report import Report, check_targets, render_markdown, write_report
from vos.bench.segmenters import SegmenterRecipe
from vos.bench.timing import machine_info, measure_gemm_gflops
from vos.cli.common import UsageError
from vos.config import IOConfig
from vos.io.prompt_input import parse_box
from vos.types import PromptError

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
DEFAULT_VIDEO = DEFAULT_DATA / "videos" / "blackswan.mp4"
SEED_MODELS = ("repvit", "vit_t", "vit_b")

Models = dict[str, tuple[Sam, str | None]]  # name -> (model, checkpoint or None)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _box(text: str) -> np.ndarray:
    """``--box x0,y0,x1,y1`` -> (4,) float32, through the library's parser."""
    try:
        return parse_box(text)
    except PromptError:
        raise argparse.ArgumentTypeError(f"--box {text!r}: expected x0,y0,x1,y1") from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m vos.bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m vos.bench", description="Time the encoder, decoder and video loop."
    )
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="checkpoint of the first model, or MODEL=PATH (repeatable)")
    parser.add_argument("--models", default="repvit",
                        help=f"comma-separated seed models to compare ({','.join(SEED_MODELS)})")
    parser.add_argument("--backend", default="all",
                        help=f"'all' installed, or comma-separated of {','.join(BACKENDS)}")
    parser.add_argument("--torch-variants", default=",".join(TORCH_VARIANTS),
                        help=f"torch encoder variants to time ({','.join(TORCH_VARIANTS)})")
    parser.add_argument("--precisions", default="f32",
                        help="encoder and decoder precisions to time side by side: f32, bf16 "
                             "(bf16 where the CPU has it natively; e.g. f32,bf16)")
    parser.add_argument("--sizes", default="1024,768,512",
                        help="square encoder input sizes to time (1024 is exact)")
    parser.add_argument("--objects", default="1,4,8,16",
                        help="object counts of the decoder section (and of the object-scaling "
                             "section, --only objects), e.g. 1,8,32,100,254")
    parser.add_argument("--only", default="",
                        help="run only these sections: encoder, decoder, loop, objects, uvo, amg, "
                             "predictor, live, annotator (comma-separated; default: encoder, "
                             "decoder and loop)")
    parser.add_argument("--amg-points", type=int, default=32,
                        help="points per side of the --only amg comparison (default 32: SAM's)")
    parser.add_argument("--objects-frames", type=int, default=4,
                        help="frames per object-scaling run (frame 0 adds the objects)")
    parser.add_argument("--objects-mode", default="exact",
                        help="fast mode(s) of the object-scaling runs, comma-separated "
                             "(default exact; e.g. exact,bf16 side by side)")
    parser.add_argument("--annotator-clicks", type=int, default=9,
                        help="--only annotator: timed clicks on a stored frame")
    parser.add_argument("--annotator-restore-frames", default="50,2000",
                        help="--only annotator: frame counts of the restored sessions "
                             "(2 objects, 4 passes each; empty skips them)")
    parser.add_argument("--annotator-distinct", type=int, default=50,
                        help="--only annotator: distinct frames the restored sessions loop over "
                             "(each encoded once)")
    parser.add_argument("--annotator-memory-frames", type=int, default=4,
                        help="--only annotator: frames of each session of the 1/3/20-session "
                             "memory run (0 skips it)")
    parser.add_argument("--predictor-frames", type=int, default=16,
                        help="--only predictor: frames of the first pass (the correction goes "
                             "on the middle one; 0 skips the speed rows)")
    parser.add_argument("--predictor-clicks", type=int, default=7,
                        help="--only predictor: timed clicks on stored frames")
    parser.add_argument("--predictor-long-frames", type=int, default=2000,
                        help="--only predictor: frames of the memory run (0 skips it)")
    parser.add_argument("--predictor-long-distinct", type=int, default=50,
                        help="--only predictor: distinct frames the memory run loops over")
    parser.add_argument("--predictor-long-mode", default="exact",
                        help="--only predictor: fast mode of the memory run (default exact)")
    parser.add_argument("--predictor-long-memory-mb", type=float, default=64.0,
                        help="--only predictor: store.memory_mb of the memory run (small, so "
                             "embeddings spill to disk and come back)")
    parser.add_argument("--sam2-frames", default="100,200,400",
                        help="--only predictor: frame counts of SAM 2's init_state runs "
                             "('' skips them)")
    parser.add_argument("--live-sizes", default="640x480,1280x720",
                        help="--only live: camera sizes WIDTHxHEIGHT the video is played at")
    parser.add_argument("--live-modes", default=default_modes(),
                        help="--only live: fast modes of the live runs, side by side "
                             "(default: exact and the fast mode of configs/webcam.yaml, "
                             f"{default_modes()})")
    parser.add_argument("--live-seconds", type=float, default=20.0,
                        help="--only live: seconds of camera per run (the video is played "
                             "back and forth to that length)")
    parser.add_argument("--live-fps", type=float, default=30.0,
                        help="--only live: the camera's frame rate")
    parser.add_argument("--live-ks", default=",".join(str(k) for k in DEFAULT_KS),
                        help="--only live: distances from the keyframe of the carried-vs-held "
                             "J rows (DAVIS frames with ground truth, ../shared/data/davis-mini)")
    parser.add_argument("--video", default=None,
                        help="video or frame folder (default: ../shared/data/videos/blackswan.mp4"
                             " when present, else synthetic frames)")
    parser.add_argument("--frames", type=int, default=30,
                        help="frames of the loop runs (start-up and the final flush count too)")
    parser.add_argument("--box", action="append", type=_box, default=[],
                        help="x0,y0,x1,y1 object box on frame 0 (repeatable; default: central)")
    parser.add_argument("--modes",
                        default="nopad,size768+nopad,size512+nopad,size384+nopad,roi+size512,int8",
                        help="fast modes for the loop and --agreement ('' for none)")
    parser.add_argument("--agreement", action="store_true",
                        help="measure each fast mode's mask IoU against exact mode")
    parser.add_argument("--agreement-frames", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--output", default="bench-results", help="folder for bench.md/json")
    parser.add_argument("--no-loop", action="store_true", help="skip the per-frame loop")
    parser.add_argument("--sinks", default="png,json,video",
                        help="outputs the loop writes (the CLI writes all three by default)")
    parser.add_argument("--encode-ahead", action="store_true",
                        help="also time the loops with vos.encode_ahead.EncodeAhead")
    parser.add_argument("--compare-malloc", action="store_true",
                        help="also time the torch encoder and decoder with glibc's default "
                             f"allocator settings ({MALLOC_ENV}=system, in a child process)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny smoke run: 256² encoder, torch fused, 1-2 objects, "
                             "3 synthetic frames, fast modes size256+nopad and roi+size256")
    return parser


def apply_quick(args: argparse.Namespace) -> None:
    """``--quick``: shrink every section to a smoke run (in place)."""
    if not args.quick:
        return
    args.sizes, args.objects, args.frames, args.repeats = "256", "1,2", 3, 2
    args.torch_variants, args.modes = "fused", "size256+nopad,roi+size256"
    args.agreement_frames = min(args.agreement_frames, 2)
    if args.backend == "all":
        args.backend = "torch"


@dataclass(frozen=True)
class BenchPlan:
    """The checked flags of one run.

    Attributes:
        backends: the backends to time, in ``BACKENDS`` order.
        default_backend: the fastest of them installed (what ``model.backend=auto`` picks).
        models: seed model names, in the order given.
        checkpoints: model name -> checkpoint file, or None (synthetic weights).
        modes: the fast modes of the loop and agreement sections, parsed once.
        video: the video or frame folder, or None for synthetic frames.
        num_frames: frames to read (the loop's, or the agreement's when more).
        io: the sinks the loop writes.
    """

    backends: list[str]
    default_backend: str
    models: list[str]
    checkpoints: dict[str, str | None]
    modes: list[FastMode]
    video: str | None
    num_frames: int
    io: IOConfig


def _checkpoints(entries: Sequence[str], models: Sequence[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = dict.fromkeys(models)
    for entry in entries:
        name, sep, path = entry.partition("=")
        if sep and name in found:
            found[name] = path
        else:
            found[models[0]] = entry
    return found


def plan_run(args: argparse.Namespace) -> BenchPlan:
    """Check the flags before anything is timed.

    Raises:
        UsageError: a backend that is not installed, an unknown model or a bad fast mode.
    """
    installed = available_backends()
    wanted = installed if args.backend == "all" else _csv(args.backend)
    missing = [b for b in wanted if b not in installed]
    if missing:
        raise UsageError(f"backend(s) not installed: {', '.join(missing)}")
    backends = [b for b in BACKENDS if b in wanted]
    models = _csv(args.models)
    unknown = [m for m in models if m not in SEED_MODELS]
    if unknown:
        raise UsageError(f"unknown model(s) {unknown}; expected some of {SEED_MODELS}")
    try:
        modes = [FastMode.parse(text) for text in _csv(args.modes)]
        for text in _csv(args.objects_mode):
            FastMode.parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _check_live_flags(args)
    unknown_precisions = set(_csv(args.precisions)) - {"f32", "bf16"}
    if unknown_precisions:
        raise UsageError(f"--precisions: expected f32 and/or bf16, got {sorted(unknown_precisions)}")
    video = args.video
    if video is None and not args.quick and DEFAULT_VIDEO.exists():
        video = str(DEFAULT_VIDEO)
    sinks = set(_csv(args.sinks))
    return BenchPlan(
        backends=backends,
        default_backend=next(b for b in installed if b in backends),
        models=models,
        checkpoints=_checkpoints(args.checkpoint, models),
        modes=modes,
        video=video,
        num_frames=max(args.frames, args.agreement_frames if args.agreement else 0),
        io=IOConfig(save_png="png" in sinks, save_json="json" in sinks,
                    save_video="video" in sinks),
    )


def _check_live_flags(args: argparse.Namespace) -> None:
    """The ``--live-*`` flags, checked before anything runs.

    Raises:
        UsageError: a bad size, fast mode, distance, length or rate.
    """
    try:
        for text in _csv(args.live_sizes):
            parse_size(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        for text in _csv(args.live_modes):
            FastMode.parse(text)
    except ValueError as exc:
        raise UsageError(f"--live-modes: {exc}") from None
    ks = _csv(args.live_ks)
    if not ks or not all(k.isdigit() and int(k) >= 1 for k in ks):
        raise UsageError(f"--live-ks {args.live_ks!r}: expected distances >= 1, e.g. 1,2,3,5")
    if not args.live_seconds > 0 or not args.live_fps > 0:
        raise UsageError(f"--live-seconds {args.live_seconds:g} / --live-fps {args.live_fps:g}:"
                         " expected both > 0")


def start_report(
    args: argparse.Namespace, plan: BenchPlan, video_name: str, image_hw: tuple[int, int]
) -> Report:
    """A report with the machine, the settings and this run's GEMM bound."""
    malloc = "retained" if retain_freed_memory() else "system"
    report = Report(machine=machine_info(args.threads, malloc))
    report.settings = {
        "models": plan.models, "checkpoints": plan.checkpoints, "backends": plan.backends,
        "default_backend": plan.default_backend, "video": video_name,
        "frame_hw": list(image_hw), "warmup": args.warmup, "repeats": args.repeats,
        "quick": args.quick,
    }
    report.gemm_gflops = round(measure_gemm_gflops((512,) if args.quick else (2048, 4096)), 1)
    return report


def load_models(report: Report, plan: BenchPlan) -> Models:
    """Every seed model, from its checkpoint or with synthetic weights (noted in the report).

    Raises:
        CheckpointError: an unreadable or mismatched checkpoint.
    """
    models: Models = {}
    for name in plan.models:
        checkpoint = plan.checkpoints[name]
        model = sam_model_registry[name](checkpoint).eval()
        if checkpoint is None:
            fill_synthetic_weights(model)
        models[name] = (model, checkpoint)
    if not all(plan.checkpoints.values()):
        report.notes.append("models without --checkpoint carry synthetic weights "
                            "(fill_synthetic_weights): timings hold, agreement figures do not "
                            "describe a trained model")
    return models


def malloc_child_args(args: argparse.Namespace, plan: BenchPlan) -> list[str]:
    """The flags of the ``--compare-malloc`` child: this run's torch encoder and decoder."""
    child = [
        "--backend", "torch", "--no-loop", "--modes", "", "--models", "repvit",
        "--torch-variants", ",".join(_csv(args.torch_variants)), "--sizes", _csv(args.sizes)[0],
        "--objects", args.objects, "--threads", str(args.threads), "--warmup", str(args.warmup),
        "--repeats", str(args.repeats),
    ]
    if plan.checkpoints.get("repvit"):
        child += ["--checkpoint", str(plan.checkpoints["repvit"])]
    if args.video:
        child += ["--video", args.video]
    if args.quick:
        child.append("--quick")
    return child


def run_model_sections(
    report: Report, args: argparse.Namespace, plan: BenchPlan, models: Models,
    frame: np.ndarray,
) -> None:
    """The encoder and decoder sections, and their ``--compare-malloc`` rerun."""
    timing = {"threads": args.threads, "warmup": args.warmup, "repeats": args.repeats}
    torch_variants = _csv(args.torch_variants)
    shapes = encoder_shapes([int(s) for s in _csv(args.sizes)], (frame.shape[0], frame.shape[1]))
    precisions = _csv(args.precisions)
    bench_encoders(report, models, encoder_configs(plan.backends, torch_variants, precisions),
                   shapes, frame, **timing)
    model, checkpoint = models.get("repvit") or next(iter(models.values()))
    bench_decoders(report, model, checkpoint, plan.backends, frame,
                   [int(n) for n in _csv(args.objects)], precisions=precisions, **timing)
    if args.compare_malloc and report.malloc == "retained" and "torch" in plan.backends:
        compare_malloc(report, malloc_child_args(args, plan))


def run_loops(
    report: Report, args: argparse.Namespace, plan: BenchPlan, models: Models,
    recipe: SegmenterRecipe, frames: Sequence[np.ndarray], boxes: np.ndarray,
) -> None:
    """The loop section: exact mode per model, then each fast mode on repvit."""
    loop_frames = frames[: args.frames]
    # --quick skips the exact loop: three 1024² encodes would dominate a smoke run.
    for name, (model, checkpoint) in ({} if args.quick else models).items():
        exact = recipe.build(model, checkpoint, EXACT)
        for ahead in (False, True) if args.encode_ahead else (False,):
            bench_loop(report, exact, loop_frames, boxes, model_name=name, encode_ahead=ahead,
                       io=plan.io)
    if "repvit" not in models:
        return
    model, checkpoint = models["repvit"]
    for mode in plan.modes:
        if not recipe.can_run(mode):
            report.notes.append(f"{mode.name}: needs onnxruntime or openvino, skipped")
            continue
        bench_loop(report, recipe.build(model, checkpoint, mode), loop_frames, boxes,
                   model_name="repvit", io=plan.io)


def run_agreement(
    report: Report, args: argparse.Namespace, plan: BenchPlan, models: Models,
    recipe: SegmenterRecipe, frames: Sequence[np.ndarray], boxes: np.ndarray,
) -> None:
    """The agreement section: repvit's fast modes against its exact mode."""
    model, checkpoint = models["repvit"]
    exact = recipe.build(model, checkpoint, EXACT)
    fast = [recipe.build(model, checkpoint, mode) for mode in plan.modes if recipe.can_run(mode)]
    bench_agreement(report, exact, fast, frames[: args.agreement_frames], boxes,
                    weights_are_real=plan.checkpoints["repvit"] is not None,
                    noise_frames=1 if args.quick else 3)


def run_uvo_section(report: Report, model: Any) -> None:
    """The UVO mode's seconds per video on ``../shared/data/uvo-mini`` (skipped without it)."""
    sample = DEFAULT_DATA / "uvo-mini" / "gt.json"
    frames_root = DEFAULT_DATA / "davis-mini-2obj" / "JPEGImages" / "480p"
    if not sample.is_file() or not frames_root.is_dir():
        report.notes.append(f"uvo: no sample at {sample}, skipped")
        return
    bench_uvo(report, model, frames_root, sample)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    apply_quick(args)
    torch.set_num_threads(args.threads)
    try:
        plan = plan_run(args)
        frames, video_name = load_frames(plan.video, plan.num_frames)
        image_hw = (frames[0].shape[0], frames[0].shape[1])
        report = start_report(args, plan, video_name, image_hw)
        models = load_models(report, plan)
    except (UsageError, CheckpointError) as exc:
        print(f"vos.bench: {exc}")
        return 2
    boxes = np.stack(args.box) if args.box else default_boxes(image_hw, 1)
    only = set(_csv(args.only))
    if not only or only & {"encoder", "decoder"}:
        run_model_sections(report, args, plan, models, frames[0])
    recipe = SegmenterRecipe.from_report(report, plan.backends, plan.default_backend,
                                         threads=args.threads, frames=frames)
    if (not only and not args.no_loop) or "loop" in only:
        run_loops(report, args, plan, models, recipe, frames, boxes)
    if args.agreement and "repvit" in models:
        run_agreement(report, args, plan, models, recipe, frames, boxes)
    if "objects" in only:
        for objects_mode in _csv(args.objects_mode):
            bench_objects(report, [int(n) for n in _csv(args.objects)], video=plan.video,
                          frames=args.objects_frames, checkpoint=plan.checkpoints.get("repvit"),
                          backend="auto" if args.backend == "all" else plan.default_backend,
                          fast_mode=objects_mode, threads=args.threads)
    if "uvo" in only and "repvit" in models:
        run_uvo_section(report, models["repvit"][0])
    if "amg" in only:
        from vos.bench.official_sam import bench_amg

        bench_amg(report, frames[0], points_per_side=args.amg_points, repeats=args.repeats)
    if "annotator" in only:
        bench_annotator(report, video=plan.video, checkpoint=plan.checkpoints.get("repvit"),
                        box_xyxy=args.box[0] if args.box else None,
                        clicks=args.annotator_clicks,
                        restore_frames=[int(v) for v in _csv(args.annotator_restore_frames)],
                        distinct=args.annotator_distinct,
                        memory_frames=args.annotator_memory_frames, threads=args.threads)
    if "predictor" in only:
        bench_predictor(report, video=plan.video, checkpoint=plan.checkpoints.get("repvit"),
                        box_xyxy=args.box[0] if args.box else None,
                        frames=args.predictor_frames, clicks=args.predictor_clicks,
                        long_frames=args.predictor_long_frames,
                        long_distinct=args.predictor_long_distinct,
                        long_mode=args.predictor_long_mode,
                        long_memory_mb=args.predictor_long_memory_mb,
                        sam2_frames=[int(n) for n in _csv(args.sam2_frames)],
                        backend="auto" if args.backend == "all" else plan.default_backend,
                        threads=args.threads)
    if "live" in only:
        bench_live(report, video=plan.video, checkpoint=plan.checkpoints.get("repvit"),
                   box_xyxy=args.box[0] if args.box else None,
                   sizes=[parse_size(t) for t in _csv(args.live_sizes)],
                   modes=_csv(args.live_modes), seconds=args.live_seconds, fps=args.live_fps,
                   backend="auto" if args.backend == "all" else plan.default_backend,
                   threads=args.threads, davis_root=DEFAULT_DATA / "davis-mini",
                   ks=[int(k) for k in _csv(args.live_ks)])
    check_targets(report, plan.default_backend)
    md_path, json_path = write_report(report, Path(args.output))
    print(render_markdown(report))
    print(f"wrote {md_path} and {json_path}")
    return 0
