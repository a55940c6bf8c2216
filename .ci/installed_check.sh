#!/usr/bin/env bash
# The package as a user gets it: a wheel built from this checkout, installed with its [demo]
# extra into a fresh virtual environment, run from a folder outside the checkout.
#
# Fails on a source file or package-data file the wheel lacks, a module that imports only
# from the source tree, a mode whose --help does not name it, a version other than
# pyproject.toml's, a short video job (generated frames, synthetic weights) that fails, or an
# annotator that cannot serve its page.
# Takes about three minutes, most of it pip.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/repvit-vos-installed.XXXXXX")"
server=""
trap '[ -z "$server" ] || kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
unset PYTHONPATH

step() { printf '\n== installed package: %s\n' "$*"; }

step "build the wheel"
python3 -m pip wheel -q --no-deps -w "$work/dist" "$repo"
wheel="$(ls "$work"/dist/repvit_vos-*.whl)"
echo "$(basename "$wheel")"

step "every tracked file of repvit_sam/ and vos/ is in the wheel"
git -C "$repo" ls-files repvit_sam vos > "$work/tracked.txt"
python3 - "$wheel" "$work/tracked.txt" <<'EOF'
import sys
import zipfile

wheel, tracked = sys.argv[1], sys.argv[2]
in_wheel = set(zipfile.ZipFile(wheel).namelist())
missing = [p for p in open(tracked).read().split() if p not in in_wheel]
if missing:
    sys.exit(f"the wheel lacks {len(missing)} tracked file(s): {', '.join(missing[:20])}")
print(f"{len(in_wheel)} files in the wheel, none of the tracked ones missing")
EOF

step "a fresh virtual environment: the CPU torch first, then the wheel with [demo]"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
# torch first: the CPU build on local disk then satisfies the wheel's torch requirement, so
# pip never pulls a CUDA build.
"$py" -m pip install -q torch==2.13.0
"$py" -m pip install -q "${wheel}[demo]"

mkdir "$work/user"
cd "$work/user"   # outside the checkout: nothing resolves from the source tree
export PATH="$work/venv/bin:$PATH"

step "the package imports from the venv, every module of it"
"$py" - "$repo" <<'EOF'
import importlib
import pkgutil
import sys
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
count = 0
for name in ("repvit_sam", "vos"):
    package = importlib.import_module(name)
    where = Path(package.__file__).resolve()
    if repo in where.parents:
        sys.exit(f"{name} imported from the checkout ({where}), not from the venv")
    for module in pkgutil.walk_packages(package.__path__, f"{name}."):
        importlib.import_module(module.name)
        count += 1
print(f"{count} modules import from {Path(package.__file__).resolve().parents[1]}")
EOF

step "repvit-vos --version is pyproject.toml's version"
expected="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n 1)"
got="$(repvit-vos --version)"
echo "$got"
[ "$got" = "repvit-vos $expected" ] || { echo "expected 'repvit-vos $expected'" >&2; exit 1; }
[ "$("$py" -m vos.run --version)" = "repvit-vos $expected" ]

step "each mode's --help names the mode"
# annotate: the web annotator served from the package (issue 27); its templates are package
# data, so its --help and import run here from the wheel.
modes="video webcam davis vos uvo batch annotate"
for mode in $modes; do
    repvit-vos "$mode" --help > "help-$mode.txt"
    head -n 1 "help-$mode.txt"
    grep -q "^usage: repvit-vos $mode " "help-$mode.txt"
    grep -q "^repvit-vos $mode: " "help-$mode.txt"
done
# Every mode of the installed CLI is one of those checked above.
"$py" -c 'import sys; from vos.cli import MODES; extra = set(MODES) - set(sys.argv[1].split()); sys.exit(f"modes not checked by .ci/installed_check.sh: {sorted(extra)}" if extra else 0)' "$modes"

step "a short video job on generated frames with synthetic weights"
"$py" - <<'EOF'
from pathlib import Path

import cv2
import numpy as np
import torch

from repvit_sam import build_repvit_sam
from vos.bench.inputs import fill_fan_in_weights

# Eight 160x120 frames: a bright square moving right over a textured background.
frames = Path("frames")
frames.mkdir()
yy, xx = np.mgrid[0:120, 0:160]
background = np.stack([(xx * 3) % 256, (yy * 5) % 256, (xx + yy) % 256], -1).astype(np.uint8) // 3
for t in range(8):
    frame = background.copy()
    frame[30:80, 20 + 6 * t : 70 + 6 * t] = (230, 200, 40)
    cv2.imwrite(str(frames / f"{t:05d}.jpg"), frame)
# The official checkpoint format with synthetic weights that see the image (tests/conftest.py).
model = build_repvit_sam()
fill_fan_in_weights(model, 0)
torch.save(model.state_dict(), "synthetic_repvit_sam.pt")
EOF
repvit-vos frames --init-box 20,30,70,80 --checkpoint synthetic_repvit_sam.pt --output out --quiet
ls -R out | head -n 40
"$py" - <<'EOF'
import json
from pathlib import Path

out = Path("out")
names = [f"{t:05d}" for t in range(8)]
assert sorted(p.stem for p in (out / "masks").glob("*.png")) == names, "masks"
assert sorted(p.stem for p in (out / "json").glob("*.json")) == names, "json"
for name in ("overlay.mp4", "summary.json", "resolved_config.yaml"):
    assert (out / name).is_file(), name
assert json.loads((out / "summary.json").read_text())["complete"] is True
print("video job: 8 frames written, summary complete")
EOF
step "repvit-vos annotate serves its page (the templates are package data)"
port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
repvit-vos annotate --checkpoint synthetic_repvit_sam.pt --port "$port" --workdir sessions \
    > annotate.log 2>&1 &
server=$!
"$py" - "$port" "$server" <<'EOF' || { cat annotate.log >&2; exit 1; }
import os
import sys
import time
import urllib.error
import urllib.request

url, pid = f"http://127.0.0.1:{sys.argv[1]}/", int(sys.argv[2])
deadline = time.monotonic() + 300
while True:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            page = response.read().decode()
        break
    except urllib.error.HTTPError as exc:
        sys.exit(f"{url}: HTTP {exc.code}")
    except OSError:
        os.kill(pid, 0)  # the server is still starting, not dead
        if time.monotonic() > deadline:
            sys.exit(f"{url}: no answer in 300 s")
        time.sleep(1)
assert "<html" in page.lower(), page[:200]
print(f"{url}: the annotator's page, {len(page)} characters")
EOF
kill "$server"
wait "$server" || true
server=""

echo "installed package: OK"
