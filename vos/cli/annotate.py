"""``repvit-vos annotate``: the web annotator (``vos.annotate``) on this machine's port 7860.

Example:
    repvit-vos annotate --checkpoint weights/repvit_sam.pt --workdir annotations
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from vos.cli.common import UsageError, add_common_arguments, config_from


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``annotate`` mode's sub-parser."""
    from vos.annotate.server import add_arguments

    parser = sub.add_parser(
        "annotate", help="serve the web annotator: click objects, track, correct, export",
        description="Open the printed address in a browser. Sessions are saved as you go; "
                    "name a --workdir to keep them across restarts.")
    add_common_arguments(parser)
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Load the model and serve until Ctrl-C."""
    from vos.annotate.server import check_web_packages, limits_from, serve
    from vos.models import NO_CHECKPOINT, build_segmenter, checkpoint_digest

    try:
        check_web_packages()
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    logging.getLogger().setLevel(logging.INFO)  # the server's own lines: sessions, cleanups
    config = config_from(args)
    if not config.model.checkpoint:
        raise UsageError(NO_CHECKPOINT)
    limits_from(args)  # flag mistakes before the model loads
    segmenter = build_segmenter(config.model)
    return serve(args, segmenter, config, checkpoint_digest(config.model))
