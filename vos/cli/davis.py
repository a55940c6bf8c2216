"""``python -m vos.run davis --root DAVIS ...``: DAVIS 2017 semi-supervised evaluation.

The ``vos`` mode with ``--preset davis2017`` (:mod:`vos.cli.vos`), kept under its own name.
"""

from __future__ import annotations

import argparse
from typing import Any

from vos.cli.common import add_common_arguments
from vos.cli.vos import add_benchmark_arguments, run_benchmark
from vos.eval.presets import PRESETS


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``davis`` mode's sub-parser."""
    davis = sub.add_parser("davis", help="DAVIS 2017 semi-supervised evaluation "
                                         "(= vos --preset davis2017)")
    add_benchmark_arguments(davis)
    add_common_arguments(davis)
    return davis


def run(args: argparse.Namespace) -> int:
    """Track and score (or only score) the DAVIS split; print the metrics table."""
    return run_benchmark(args, PRESETS["davis2017"])
