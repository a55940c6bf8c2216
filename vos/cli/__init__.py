"""The command line: ``repvit-vos MODE ...`` (``python -m vos.run MODE ...``), one mode per job.

Thin by design (STYLE 5.11): each mode module parses its flags, builds the config, the
segmenter (``vos.models``) and the source, and calls the library. One module per mode, each
with ``add_parser(subparsers)`` and ``run(args) -> int``; :data:`MODES` lists them (adding a
mode: one module here and one line there). ``python -m vos.bench`` is :mod:`vos.cli.bench`.

User errors (bad paths, prompts, configs, checkpoints) print one ``error: ...`` line and exit
with status 2; Ctrl-C exits with 130 after flushing everything written so far.

The mode defaults to ``video``: a first word that is not a mode is the video's path. A bare
word that names no file or folder (``annotat``, a mode this install lacks) is refused with
the list of modes instead, so a mistyped mode never runs as a missing video.

Examples:
    python -m vos.run video.mp4 --init-box 100,80,220,240 --checkpoint weights/repvit_sam.pt
    python -m vos.run davis --root DAVIS --output results/davis --checkpoint ...
    python -m vos.run davis --root DAVIS --eval-only results/osvos
    python -m vos.run vos --preset youtube-vos --root YouTube-VOS/2019/valid -o out/yt ...
    python -m vos.run uvo --root UVO/frames --annotations gt.json --output results/uvo ...
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vos import __version__
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
SCRIPT = "repvit-vos"  # the console script of pyproject.toml's [project.scripts]

# A word a mode name could be: letters, digits, '-' and '_', no dot, no path separator.
_MODE_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class _ModeHelp:
    """The sub-parser factory handed to each mode's ``add_parser``.

    Gives every mode's ``--help`` a first paragraph that names the mode and says what it does
    (its one-line help, before any description of its own), so ``repvit-vos MODE --help``
    says which mode it documents even where the usage line wraps.
    """

    def __init__(self, sub: Any, prog: str) -> None:
        self._sub = sub
        self._prog = prog

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        summary = kwargs.get("help")
        if summary:
            own = kwargs.get("description")
            kwargs["description"] = f"{self._prog} {name}: {summary}." + (f" {own}" if own else "")
        return self._sub.add_parser(name, **kwargs)


def program_name() -> str:
    """``repvit-vos`` when run through the console script, else ``python -m vos.run``."""
    return SCRIPT if Path(sys.argv[0]).name == SCRIPT else "python -m vos.run"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argparse tree of every mode."""
    prog = prog or program_name()
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Video object segmentation with RepViT-SAM. The mode defaults to 'video': "
                    f"'{prog} clip.mp4 ...' is '{prog} video clip.mp4 ...'.",
    )
    parser.add_argument("--version", action="version", version=f"{SCRIPT} {__version__}")
    sub = parser.add_subparsers(dest="mode", metavar="MODE")
    modes = _ModeHelp(sub, prog)
    for module in MODES.values():
        mode = importlib.import_module(module)
        mode.add_parser(modes).set_defaults(handler=mode.run)
    return parser


def unknown_mode_error(word: str) -> str | None:
    """Why ``word``, the first argument, is neither a mode nor a video; ``None`` if it may be one.

    A video's path is anything that exists, or that has a dot or a path separator in it
    (``clip.mp4``, ``frames/``, ``./annotate``): the video mode then reports a missing file
    itself. A bare word that names nothing on disk is taken for a mistyped or missing mode.
    """
    if word in MODES or word.startswith("-") or not _MODE_LIKE.fullmatch(word):
        return None
    if Path(word).exists():
        return None
    close = difflib.get_close_matches(word, MODES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return (f"'{word}' is not a mode of this install ({', '.join(MODES)}); {hint}"
            f"a video or frame folder of that name: give its path, e.g. ./{word}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m vos.run`` and the ``repvit-vos`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in MODES and not argv[0].startswith("-"):
        problem = unknown_mode_error(argv[0])
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
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
