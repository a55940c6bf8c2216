"""Server submissions: the zip a benchmark's evaluation server takes, and its format check.

Two layouts (``VosPreset.submission``):

* ``annotations`` (YouTube-VOS 2018/2019 on CodaLab): ``Annotations/<video>/<frame>.png``,
  the ``Annotations`` folder zipped with its name (aot-benchmark's ``zip_folder`` of the
  results' ``Annotations`` folder). Frames: those meta.json lists for the video's objects
  (the union of their ``frames``, as Cutie's ``req_frames`` and aot-benchmark's
  ``YOUTUBEVOS_Test``), so a run on ``valid_all_frames`` still submits the sparse frames.
* ``sequences`` (DAVIS 2017 test-dev and MOSE on CodaLab): ``<video>/<frame>.png`` directly at
  the zip root, every frame; the DAVIS scoring program rejects a zip whose only entry is one
  folder and names each missing sequence.

Both servers read a PNG with PIL as an array of object ids: single channel (we write "P"
with the DAVIS/PASCAL-VOC palette of the annotations; "L" reads the same), the frame's width
and height, the frame's file stem, and only ids of the video's objects.

Example:
    >>> zip_path = write_submission(data, Path("out/ytvos"), names, Path("out/ytvos.zip"))
    >>> check_submission(zip_path, data, names)  # [] when the server would accept it
    []
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from vos.eval.datasets import DatasetError, VosDataset
from vos.eval.vos_driver import plan_sequence
from vos.io.atomic import atomic_open

__all__ = ["check_submission", "submission_entries", "write_submission"]


def _prefix(dataset: VosDataset) -> str:
    if dataset.preset.submission is None:
        raise DatasetError(f"{dataset.preset.name}: this benchmark has no server submission")
    return "Annotations/" if dataset.preset.submission == "annotations" else ""


def submission_entries(dataset: VosDataset, names: list[str]) -> dict[str, tuple[str, str]]:
    """Zip entry name -> (sequence, frame stem) of every PNG the server expects, in order."""
    prefix = _prefix(dataset)
    return {f"{prefix}{seq}/{stem}.png": (seq, stem)
            for seq in names for stem in dataset.required_stems(seq)}


def write_submission(dataset: VosDataset, results_dir: Path, names: list[str],
                     zip_path: Path) -> Path:
    """Zip the results the server expects, in its layout (atomically).

    Args:
        dataset: the dataset the results are for.
        results_dir: ``<seq>/<stem>.png`` palette results (every frame of the run).
        names: the sequences.
        zip_path: the zip to write.

    Raises:
        DatasetError: a result frame the server expects is missing.
    """
    entries = submission_entries(dataset, names)
    with atomic_open(zip_path, "wb") as handle, \
            zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry, (seq, stem) in entries.items():
            path = Path(results_dir) / seq / f"{stem}.png"
            if not path.is_file():
                raise DatasetError(f"{path}: missing result frame the server expects")
            archive.write(path, entry)
    return Path(zip_path)


def check_submission(zip_path: Path, dataset: VosDataset, names: list[str]) -> list[str]:
    """The problems the server's format check would find in a zip (empty: it passes).

    Checked: the layout (top folder, no stray entries), every expected frame present, each
    PNG single-channel with the frame's size, and its ids among the video's objects.
    """
    expected = submission_entries(dataset, names)
    with zipfile.ZipFile(zip_path) as archive:
        entries = [n for n in archive.namelist() if not n.endswith("/")]
        problems = [f"unexpected entry {n}" for n in entries if n not in expected]
        if dataset.preset.submission == "sequences":
            top = {n.split("/")[0] for n in entries if "/" in n}
            if len(names) > 1 and len(top) == 1:
                problems.append("one top folder: the sequence folders must be at the zip root")
        present = set(entries)
        problems += [f"missing {n}" for n in expected if n not in present]
        sizes: dict[str, tuple[int, int]] = {}
        ids: dict[str, set[int]] = {}
        for entry, (seq, _) in expected.items():
            if entry not in present:
                continue
            if seq not in sizes:
                with Image.open(dataset.frame_paths(seq)[0]) as frame:
                    sizes[seq] = frame.size
                ids[seq] = {p.obj_id or 0 for group in plan_sequence(dataset, seq).prompts.values()
                            for p in group} | {0}
            problems += _check_png(entry, archive.read(entry), sizes[seq], ids[seq])
    return problems


def _check_png(entry: str, data: bytes, size: tuple[int, int], allowed: set[int]) -> list[str]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode, got = image.mode, image.size
            labels = np.asarray(image) if mode in ("P", "L") else None
    except OSError as exc:
        return [f"{entry}: not a PNG ({exc})"]
    if labels is None:
        return [f"{entry}: mode {mode}, expected a single-channel (P or L) PNG"]
    if got != size:
        return [f"{entry}: {got[0]}x{got[1]}, expected the frame's {size[0]}x{size[1]}"]
    extra = set(np.unique(labels).tolist()) - allowed
    return [f"{entry}: ids {sorted(extra)} are not objects of the video"] if extra else []
