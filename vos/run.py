"""``python -m vos.run``: the command line of :mod:`vos.cli` (also the ``repvit-vos`` script)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: :func:`vos.cli.main`."""
    from vos.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        # Ctrl-C while Python is still importing torch and the models: no traceback.
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
