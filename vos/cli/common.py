"""What every CLI mode shares: common flags, the config they resolve to, one-line errors.

User errors (bad paths, prompts, configs, checkpoints) print one ``error: ...`` line and exit
with status 2; :func:`vos.cli.main` catches them, so a mode just raises.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Sequence

from vos.config import RunConfig, load_config
from vos.models import CHECKPOINT_ENV


class UsageError(ValueError):
    """A command-line mistake worth one line, not a traceback."""


def one_line(exc: BaseException | str) -> str:
    """An exception's message folded onto one line."""
    return " ".join(str(exc).split())


# argparse reads a value that starts with '-' as an option unless it is one plain number, so
# `--init-box -5,2,300,300` (a box reaching past the left edge) stopped with a usage text.
# A '-' followed by a digit (or '.' and a digit) is a value in every mode: no option of ours
# looks like that.
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every mode takes: config, overrides, model, device, verbosity."""
    parser._negative_number_matcher = _NEGATIVE_VALUE  # see _NEGATIVE_VALUE
    parser.add_argument("--config", help="YAML file overriding the default config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. tracker.max_missed_frames=10")
    parser.add_argument("--checkpoint", help=f"model weights (default: ${CHECKPOINT_ENV})")
    parser.add_argument("--model-type", help="repvit (default), vit_t, vit_b, vit_l or vit_h")
    parser.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", "-v", action="store_true", help="log tracker events")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the modes that write per-video outputs and read video files."""
    parser.add_argument("--no-png", action="store_true", help="skip the palette PNGs")
    parser.add_argument("--no-json", action="store_true", help="skip the COCO-RLE JSON")
    parser.add_argument("--no-video", action="store_true", help="skip the overlay mp4")
    parser.add_argument("--reader", choices=("auto", "pyav", "decord", "opencv"), default="auto",
                        help="video decoding backend (auto: PyAV, then decord, then OpenCV)")


def with_output_flags(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    """``cfg`` with the ``--no-png/--no-json/--no-video`` flags applied to ``io``."""
    return dataclasses.replace(cfg, io=dataclasses.replace(
        cfg.io,
        save_png=cfg.io.save_png and not args.no_png,
        save_json=cfg.io.save_json and not args.no_json,
        save_video=cfg.io.save_video and not args.no_video,
    ))


def config_from(args: argparse.Namespace) -> RunConfig:
    """The run config of the common flags: defaults < ``--config`` < ``--set`` < flags."""
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


def check_init_frame(init_frame: int, num_frames: int | None, max_frames: int | None) -> None:
    """``--init-frame`` against the video's length (when known), before the model loads."""
    if init_frame < 0:
        raise UsageError(f"--init-frame {init_frame}: expected >= 0")
    limit = min(n for n in (num_frames, max_frames) if n is not None) if (
        num_frames is not None or max_frames is not None) else None
    if limit is not None and init_frame >= limit:
        raise UsageError(f"--init-frame {init_frame}: the video has {limit} frames"
                         + (" (--max-frames)" if limit == max_frames else ""))


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """The end-of-run table: a title line, then aligned ``key  value`` rows."""
    print(title)
    if not rows:
        return
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


def interrupted(message: str) -> int:
    """Report a Ctrl-C on stderr (what was kept, how to resume); the exit status 130."""
    print(f"interrupted: {message}", file=sys.stderr)
    return 130
