"""The command line: ``python -m vos.run [video|webcam|davis|vos|uvo|batch] ...`` (``repvit-vos``).

Thin by design (STYLE 5.11): each mode module parses its flags, builds the config, the
segmenter (``vos.models``) and the source, and calls the library. One module per mode, each
with ``add_parser(subparsers)`` and ``run(args) -> int``; :data:`MODES` lists them (adding a
mode: one module here and one line there). ``python -m vos.bench`` is :mod:`vos.cli.bench`.

User errors (bad paths, prompts, configs, checkpoints) print one ``error: ...`` line and exit
with status 2; Ctrl-C exits with 130 after flushing everything written so far.

Examples:
    python -m vos.run video.mp4 --init-box 100,80,220,240 --checkpoint weights/repvit_sam.pt
    python -m vos.run davis --root DAVIS --output results/davis --checkpoint ...
    python -m vos.run davis --root DAVIS --eval-only results/osvos
    python -m vos.run vos --preset youtube-vos --root YouTube-VOS/2019/valid -o out/yt ...
    python -m vos.run uvo --root UVO/frames --annotations gt.json --output results/uvo ...
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from vos.cli.common import one_line

# Mode name -> module of vos.cli (imported when the parser is built).
MODES = {
    "video": "vos.cli.video",
    "webcam": "vos.cli.webcam",
    "davis": "vos.cli.davis",
    "vos": "vos.cli.vos",
    "uvo": "vos.cli.uvo",
    "batch": "vos.cli.batch",
    "annotate": "vos.cli.annotate",
}
DEFAULT_MODE = "video"


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every mode."""
    parser = argparse.ArgumentParser(
        prog="python -m vos.run",
        description="Video object segmentation with RepViT-SAM. The mode defaults to 'video'.",
    )
    sub = parser.add_subparsers(dest="mode", metavar="MODE")
    for module in MODES.values():
        mode = importlib.import_module(module)
        mode.add_parser(sub).set_defaults(handler=mode.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m vos.run`` and the ``repvit-vos`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in MODES and not argv[0].startswith("-"):
        argv.insert(0, DEFAULT_MODE)  # `python -m vos.run video.mp4 ...` is the default mode
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from repvit_sam.build import CheckpointError
    from repvit_sam.utils.malloc import retain_freed_memory

    retain_freed_memory()  # large tensors off glibc's mmap path: 20% of the encoder on CPU
    try:
        return int(args.handler(args))
    except (ValueError, CheckpointError) as exc:
        # Every user error of the library is a ValueError (configs, prompts, sources,
        # datasets, output folders, models) or a CheckpointError: one line, status 2.
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The machine's side: a full disk, a read-only folder, a missing permission.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{one_line(exc.strerror or exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C before a mode's own handler (loading the model, exporting a graph).
        print("interrupted", file=sys.stderr)
        return 130
