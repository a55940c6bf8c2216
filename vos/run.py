"""``python -m vos.run``: the command line of :mod:`vos.cli` (also the ``repvit-vos`` script)."""

from __future__ import annotations

from vos.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
