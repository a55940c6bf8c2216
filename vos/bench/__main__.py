"""``python -m vos.bench``: the benchmark's command line (:mod:`vos.cli.bench`)."""

from vos.cli.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
