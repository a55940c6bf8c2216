"""``python -m vos.run vos --preset P --root ROOT ...``: semi-supervised VOS benchmarks.

One mode for every layout of :data:`vos.eval.presets.PRESETS` (DAVIS 2016/2017, YouTube-VOS,
MOSE, LVOS, SA-V, or ``generic`` folders): track every sequence from its annotations, write
the results in the benchmark's layout, score them with its official rules where the ground
truth is there, and zip them for the server where only a server scores. ``davis`` is this
mode with ``--preset davis2017``.

Examples:
    python -m vos.run vos --preset youtube-vos --root YouTube-VOS/2019/valid -o out/yt19 ...
    python -m vos.run vos --preset sa-v --root sav_val --workers 2 -o out/sav ...
    python -m vos.run vos --preset lvos --root LVOS/valid --eval-only out/lvos
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

from vos.cli.common import UsageError, add_common_arguments, config_from, interrupted, print_table
from vos.config import dump_config
from vos.eval.presets import PRESETS, VosPreset


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``vos`` mode's sub-parser."""
    table = "; ".join(f"{p.name}: {p.notes}" for p in PRESETS.values())
    vos = sub.add_parser("vos", help="semi-supervised VOS benchmarks (DAVIS 2016/2017, "
                                     "YouTube-VOS, MOSE, LVOS, SA-V, generic folders)",
                         description=f"Presets: {table}.")
    vos.add_argument("--preset", choices=list(PRESETS), default="generic",
                     help="dataset layout and rules (default: generic)")
    add_benchmark_arguments(vos)
    add_common_arguments(vos)
    return vos


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the benchmark modes (``vos`` and its ``davis`` alias)."""
    parser.add_argument("--root", help="dataset root (the split folder for YouTube-VOS, MOSE, "
                                       "LVOS; the folder with sav_val.txt for SA-V)")
    parser.add_argument("--split", default=None,
                        help="sequence list split (default: the preset's, val or valid)")
    parser.add_argument("--sequences", help="comma-separated subset of sequences")
    parser.add_argument("--frames", help="frames folder (default: the preset's, under --root)")
    parser.add_argument("--annotations", help="annotations folder (default: the preset's)")
    parser.add_argument("--list", help="sequence list: a .txt, or a meta.json (its videos)")
    parser.add_argument("--output", "-o", help="results folder")
    parser.add_argument("--eval-only", metavar="RESULTS_DIR",
                        help="only score an existing results folder (any method's)")
    parser.add_argument("--seen-categories", metavar="FILE",
                        help="YouTube-VOS: training meta.json (or a list of categories) for "
                             "the seen/unseen split of local scores")
    parser.add_argument("--unseen-videos", metavar="FILE",
                        help="LVOS: the unseen group's videos, one name per line (default: "
                             "the official validation list of the preset's release)")
    parser.add_argument("--zip", action="store_true",
                        help="write the server zip even when the ground truth scores locally")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel models over sequences (default 1: in this process)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local process pool or Ray actors for --workers")
    parser.add_argument("--ray-address", help="ray.init address (default: a local Ray)")
    parser.add_argument("--retries", type=int, default=1,
                        help="re-runs of a sequence whose worker died (default 1)")


def run(args: argparse.Namespace) -> int:
    """Track and score (or only score) the preset's dataset; print the results table."""
    return run_benchmark(args, PRESETS[args.preset])


def _optional_path(text: str | None) -> Path | None:
    return Path(text) if text else None


def run_benchmark(args: argparse.Namespace, preset: VosPreset) -> int:
    """The ``vos`` mode on ``preset`` (also the ``davis`` mode's body)."""
    from vos.eval.benchmarks import lvos_unseen_videos, seen_categories
    from vos.eval.datasets import VosDataset
    from vos.eval.vos_driver import ground_truth_present, vos_sequences
    from vos.io.lock import FolderLock

    cfg = config_from(args)
    root_text = args.root or cfg.eval.root
    if not root_text:
        raise UsageError(f"{args.mode}: --root ROOT is required")
    if args.workers < 1 or args.retries < 0:
        raise UsageError("--workers: expected >= 1; --retries: expected >= 0")
    # The config's split counts where it differs from its default; else the preset's own
    # ("valid" for LVOS, whose meta file is <split>_meta.json).
    default_split = next(f.default for f in dataclasses.fields(type(cfg.eval))
                         if f.name == "split")
    split = args.split or (cfg.eval.split if cfg.eval.split != default_split else None)
    dataset = VosDataset(Path(root_text), preset, split,
                         _optional_path(args.frames), _optional_path(args.annotations),
                         _optional_path(args.list))
    seen = seen_categories(Path(args.seen_categories)) if args.seen_categories else None
    unseen = None
    if args.unseen_videos:
        if preset.meta != "lvos":
            raise UsageError(f"--unseen-videos: only the LVOS presets have an unseen group, "
                             f"not {preset.name}")
        unseen = lvos_unseen_videos(Path(args.unseen_videos))
    names = vos_sequences(dataset, [s for s in (args.sequences or "").split(",") if s] or None)
    if args.eval_only:
        output = Path(args.eval_only)
        if not output.is_dir():
            raise UsageError(f"--eval-only {output}: no such folder")
        if not ground_truth_present(dataset, names):
            raise UsageError(f"--eval-only: {dataset.annotations_root} holds only the prompts; "
                             "only the benchmark's server scores this split")
    else:
        output = Path(args.output or cfg.io.output_dir or f"outputs/{preset.name}")
    # A tracking run holds its output folder's lock from the first write to the report.
    with contextlib.nullcontext() if args.eval_only else FolderLock(output):
        return _track_and_score(args, cfg, preset, dataset, names, (seen, unseen),
                                output)


def _track_and_score(args: argparse.Namespace, cfg: Any, preset: VosPreset, dataset: Any,
                     names: list[str], groups: tuple[Any, Any], output: Path) -> int:
    """Track (unless ``--eval-only``), score and report into ``output``; ``groups`` are the
    YouTube-VOS seen categories and the LVOS unseen videos (None: not given)."""
    from vos.eval.benchmarks import score_dataset
    from vos.eval.davis_report import write_report
    from vos.eval.vos_driver import ground_truth_present

    timings: list = []
    if args.eval_only:
        scored = True
    else:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(
            cfg.eval, root=str(dataset.root), split=str(dataset.split)))
        try:
            timings = _track(args, cfg, dataset, names, output)
        except KeyboardInterrupt:
            return interrupted(f"finished sequences in {output} are kept; rerun to resume")
        scored = ground_truth_present(dataset, names)
    rows: list[tuple[str, str]] = []
    if scored:
        scores = score_dataset(dataset, output, names, seen=groups[0], unseen=groups[1])
        write_report(scores, output)
        rows += [(k, f"{v:.4f}") for k, v in scores.global_metrics.items()]
        written = "global_results.csv, per-sequence_results.csv, scores.json, per_object_jf.png"
    else:
        rows.append(("scores", "none here: the annotations hold only the prompts"))
        written = "results"
    if preset.submission and not args.eval_only and (args.zip or not scored):
        written += ", " + _submit(dataset, output, names)
    rows += [(t.name, f"{t.frames} frames, {t.seconds:.1f} s"
              + (" (already done)" if t.skipped else "")) for t in timings]
    if timings:
        rows.append(("seconds/sequence", f"{sum(t.seconds for t in timings) / len(timings):.2f}"))
    rows.append(("written", f"{output}/ {written}"))
    print_table(f"{preset.title} semi-supervised ({preset.name}, {len(names)} sequences)", rows)
    return 0


def _track(args: argparse.Namespace, cfg: Any, dataset: Any, names: list[str],
           output: Path) -> list:
    from vos.eval.vos_driver import ParallelRun, track_sequences, tracker_for
    from vos.models import build_segmenter, checkpoint_digest

    output.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, output / "resolved_config.yaml",
                checkpoint_sha256=checkpoint_digest(cfg.model))
    if args.workers > 1 or args.engine == "ray":
        spec = ParallelRun(cfg, None, args.workers, args.engine, args.ray_address, args.retries)
        return track_sequences(dataset, names, output, parallel=spec, progress=not args.quiet)
    segmenter = build_segmenter(cfg.model)
    return track_sequences(dataset, names, output, progress=not args.quiet,
                           make_tracker=lambda: tracker_for(segmenter, cfg, dataset.preset))


def _submit(dataset: Any, output: Path, names: list[str]) -> str:
    """Write the server zip and hold it to the server's format check."""
    from vos.eval.submission import check_submission, write_submission

    zip_path = write_submission(dataset, output, names,
                                output / f"{dataset.preset.name}_submission.zip")
    problems = check_submission(zip_path, dataset, names)
    if problems:
        raise ValueError(f"{zip_path}: the server's format check would fail: {problems[0]} "
                         f"({len(problems)} problem(s))")
    return f"{zip_path.name} (format check passed)"
