"""The conformance fill recipe (v1) of ../shared/conformance/README.md, as a reusable helper.

Builds the deterministic synthetic state_dict for every key of a ``keys.tsv`` manifest.
"""

from __future__ import annotations

import ast
import math
import zlib
from pathlib import Path

import numpy as np
import torch


def read_keys_tsv(keys_tsv: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, dtype) for every row of a keys.tsv manifest, in file order."""
    rows = []
    for line in Path(keys_tsv).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(ast.literal_eval(shape)), dtype))
    return rows


def fill_value(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The recipe's value for one entry (float32, or int64 for num_batches_tracked)."""
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    if key.endswith("running_var"):
        value = rng.uniform(0.5, 1.5, size=shape)
    elif key.endswith("running_mean"):
        value = 0.01 * rng.standard_normal(shape)
    elif len(shape) == 1 and key.endswith(".weight"):
        value = 0.8 + 0.1 * rng.standard_normal(shape)
    elif key.endswith(".bias"):
        value = 0.01 * rng.standard_normal(shape)
    else:
        fan_in = math.prod(shape[1:]) if len(shape) >= 2 else shape[0]
        value = rng.standard_normal(shape) / math.sqrt(fan_in)
    return np.asarray(value, dtype=np.float32)


def make_conformance_state_dict(keys_tsv: Path) -> dict[str, torch.Tensor]:
    """The full synthetic state_dict, keys in manifest order."""
    return {
        key: torch.from_numpy(fill_value(key, shape)) for key, shape, _ in read_keys_tsv(keys_tsv)
    }


def write_conformance_checkpoint(keys_tsv: Path, path: Path) -> Path:
    """``torch.save`` the synthetic state_dict to ``path`` (the official file format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(make_conformance_state_dict(keys_tsv), path)
    return path
