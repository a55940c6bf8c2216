"""Regenerate ``tests/golden/official_lvos_sav.json``: what the official LVOS and SA-V
evaluators, run as their authors run them, report on the samples of
:func:`tests.vos.vos_samples.build_official_sample`.

The official code is never copied into this repository: this script runs it from the
checkouts named by three environment variables.

* ``LVOS_EVAL_V2``: github.com/LingyiHongfd/lvos-evaluation at 25cb02d (its code is that of
  c05e889, "update code for v2", May 2024);
* ``LVOS_EVAL_V1``: the same repository at 457d397 (Nov 2022, the v1 rules);
* ``SAV_EVAL``: github.com/facebookresearch/sam2's ``sav_dataset`` folder (2b90b9f).

Both LVOS releases are run through ``evaluation_method.py --mp_nums 1`` (``runpy``, so the
full-precision values behind its 3-decimal CSVs are read back), each in its own process,
once from its checkout (its own ``unseen_videos.txt``: no sample video is unseen) and once
from a folder whose ``unseen_videos.txt`` names ``car-shadow`` and ``bmx-trees``. SA-V is
``utils/sav_benchmark.benchmark`` (what ``sav_evaluator.py`` calls) on the sample, and on an
"edge" copy where ``blackswan/001`` shows in the ground truth only on its first annotated
frame and ``car-shadow/000`` only on its last: the official code stops with an assertion
there, so it is also run on the edge copy without those two object folders.

Usage (a Python with the official code's dependencies: numpy 2.2 or older, since the v2 code
stores one-element arrays into array cells, which numpy 2.4 refuses; scipy, opencv-python,
scikit-image, tqdm, pandas, and progressbar2 for v1)::

    git clone https://github.com/LingyiHongfd/lvos-evaluation /tmp/ref/v2
    git clone https://github.com/LingyiHongfd/lvos-evaluation /tmp/ref/v1
    git -C /tmp/ref/v1 checkout 457d397
    git clone https://github.com/facebookresearch/sam2 /tmp/ref/sam2
    LVOS_EVAL_V2=/tmp/ref/v2 LVOS_EVAL_V1=/tmp/ref/v1 SAV_EVAL=/tmp/ref/sam2/sav_dataset \\
        python -m tests.vos.official_reference [--data ../shared/data] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vos.io.davis_png import read_palette_png, write_palette_png

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "official_lvos_sav.json"
CUSTOM_UNSEEN = ("car-shadow", "bmx-trees")
# SA-V objects made unscoreable in the edge copy: (video, object folder, keep the first
# annotated frame's mask (True) or the last one's).
SAV_EDGE = (("blackswan", "001", True), ("car-shadow", "000", False))


def strand_objects(gt_root: Path, objects: tuple[tuple[str, str, bool], ...]) -> None:
    """Empty each object's SA-V masks except on its first (or last) annotated frame."""
    for video, folder, keep_first in objects:
        pngs = sorted((gt_root / video / folder).glob("*.png"))
        kept = pngs[0] if keep_first else pngs[-1]
        for png in pngs:
            if png != kept:
                write_palette_png(png, np.zeros(read_palette_png(png).shape, bool))


def _git_head(path: Path) -> str:
    done = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() or "unknown"


def _lvos_child(code_dir: str, lvos_root: str, results: str) -> None:
    """In a fresh process whose working folder holds the unseen list: evaluation_method.py."""
    sys.path.insert(0, code_dir)
    sys.argv = ["evaluation_method.py", "--lvos_path", lvos_root, "--set", "valid",
                "--results_path", results, "--mp_nums", "1", "--task", "semi-supervised"]
    stdout = sys.stdout
    sys.stdout = sys.stderr  # the script prints its tables; keep stdout for the JSON
    try:
        env = runpy.run_path(str(Path(code_dir) / "evaluation_method.py"), run_name="__main__")
    finally:
        sys.stdout = stdout
    res = env["metrics_res"]
    keys = list(res["J"]["M_per_object"])
    per_object = {}
    for i, key in enumerate(keys):
        per_object[key] = {"J-Mean": res["J"]["M"][i], "J-Recall": res["J"]["R"][i],
                           "J-Decay": res["J"]["D"][i], "F-Mean": res["F"]["M"][i],
                           "F-Recall": res["F"]["R"][i], "F-Decay": res["F"]["D"][i],
                           "V": res["V"]["M_per_object"][key]}
    row = dict(zip(env["g_measures"], env["g_res"].reshape(-1).tolist(), strict=True))
    json.dump({"per_object": {k: {n: float(v) for n, v in d.items()}
                              for k, d in per_object.items()},
               "global": row}, sys.stdout)


def _sav_child(code_dir: str, gt_root: str, results: str) -> None:
    sys.path.insert(0, code_dir)
    from utils.sav_benchmark import benchmark  # the official module, from SAV_EVAL

    stdout = sys.stdout
    sys.stdout = sys.stderr  # it prints where it saves its CSV
    try:
        jf, j, f, objects = benchmark([gt_root], [results], True, 1, verbose=False)
    except AssertionError as exc:
        # The pool re-raises the worker's error; its text (the cause) names the function.
        where = next((name for name in ("consolidate", "get_gt_and_pred", "conclude")
                      if name in str(exc.__cause__)), "?")
        json.dump({"error": f"AssertionError in {where}"}, stdout)
        return
    finally:
        sys.stdout = stdout
    per_object = {f"{video}_{obj}": {"J": float(iou[obj]), "F": float(boundary[obj])}
                  for video, (iou, boundary) in objects[0].items() for obj in iou}
    json.dump({"per_object": per_object,
               "global": {"J&F": float(jf[0]), "J": float(j[0]), "F": float(f[0])}}, sys.stdout)


def _run_child(kind: str, cwd: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "tests.vos.official_reference", "--child",
                           kind, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {args}: exit {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def generate(data_dir: Path, work: Path) -> dict[str, Any]:
    """Build the samples under ``work``, run every official evaluator, return the record."""
    from tests.vos.vos_samples import CORRUPTIONS, build_official_sample, write_corrupted

    v2, v1 = Path(os.environ["LVOS_EVAL_V2"]), Path(os.environ["LVOS_EVAL_V1"])
    sav = Path(os.environ["SAV_EVAL"])
    record: dict[str, Any] = {
        "about": "official evaluators' numbers on tests/vos/vos_samples.build_official_sample; "
                 "regenerate with python -m tests.vos.official_reference",
        "code": {"lvos-evaluation v2": _git_head(v2), "lvos-evaluation v1": _git_head(v1),
                 "sam2 sav_dataset": _git_head(sav)},
        "custom_unseen": list(CUSTOM_UNSEEN), "sav_edge": [list(e) for e in SAV_EDGE],
        "lvos": {}, "lvos-v1": {}, "sa-v": {}, "sa-v-edge": {}, "sa-v-edge-removed": {},
    }
    lvos_root = build_official_sample(data_dir, work / "lvos", "lvos")
    sav_root = build_official_sample(data_dir, work / "sav", "sa-v")
    edge_gt = work / "sav_edge_gt"
    shutil.copytree(sav_root / "Annotations_6fps", edge_gt)
    strand_objects(edge_gt, SAV_EDGE)
    removed_gt = work / "sav_edge_removed_gt"
    shutil.copytree(edge_gt, removed_gt)
    for video, folder, _ in SAV_EDGE:
        shutil.rmtree(removed_gt / video / folder)
    for release, code in (("lvos", v2), ("lvos-v1", v1)):
        custom = work / f"unseen_{release}"
        custom.mkdir()
        (custom / "unseen_videos.txt").write_text("\n".join(CUSTOM_UNSEEN) + "\n")
        if (code / "unsupervised_videos.txt").exists():  # v2 opens it too
            shutil.copy(code / "unsupervised_videos.txt", custom)
        for recipe in CORRUPTIONS:
            runs = {}
            for variant, cwd in (("official_list", code), ("custom_list", custom)):
                results = write_corrupted(lvos_root, work / f"{release}_{variant}_{recipe}",
                                          "lvos", recipe)
                runs[variant] = _run_child("lvos", cwd, str(code), str(lvos_root), str(results))
            record[release][recipe] = runs
    for recipe in CORRUPTIONS:
        results = write_corrupted(sav_root, work / f"sav_{recipe}", "sa-v", recipe)
        for key, gt in (("sa-v", sav_root / "Annotations_6fps"), ("sa-v-edge", edge_gt),
                        ("sa-v-edge-removed", removed_gt)):
            record[key][recipe] = _run_child("sav", work, str(sav), str(gt), str(results))
    return record


def main(argv: list[str] | None = None) -> int:
    """Write the reference JSON (or, with ``--child``, run one official evaluation)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                        help="shared/data (davis-mini, davis-mini-2obj)")
    parser.add_argument("--out", default=str(GOLDEN), help="the JSON to write")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "CODE", "GT", "RESULTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, code, gt, results = args.child
        (_lvos_child if kind == "lvos" else _sav_child)(code, gt, results)
        return 0
    for name in ("LVOS_EVAL_V2", "LVOS_EVAL_V1", "SAV_EVAL"):
        if not os.environ.get(name):
            parser.error(f"{name}: set it to the official checkout (see the module docstring)")
    with tempfile.TemporaryDirectory(prefix="official_ref_") as tmp:
        record = generate(Path(args.data), Path(tmp))
    Path(args.out).write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
