"""The web annotator, started from a script: the same as ``repvit-vos annotate``.

The annotator lives in the package (``vos.annotate``; its page is package data), so an
installed wheel serves it without this folder. This file shows the one call it takes::

    python demos/app.py --checkpoint weights/repvit_sam.pt --workdir annotations
"""

from __future__ import annotations

import sys

from vos.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["annotate", *sys.argv[1:]]))
