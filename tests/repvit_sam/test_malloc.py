"""retain_freed_memory: large freed blocks stay in the process (Linux/glibc only).

Each case runs in a fresh interpreter: mallopt settings cannot be undone in the test process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

_PROBE = """
import psutil, torch
from repvit_sam.utils.malloc import retain_freed_memory
applied = retain_freed_memory()
again = retain_freed_memory()
proc = psutil.Process()
before = proc.memory_info().rss
block = torch.ones(64 << 18)  # 64 MiB, touched
del block
after = proc.memory_info().rss
print(applied, again, (after - before) >> 20)
"""


def _probe(env_value: str | None) -> tuple[bool, bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "REPVIT_VOS_MALLOC"}
    if env_value is not None:
        env["REPVIT_VOS_MALLOC"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", out[1] == "True", int(out[2])


def test_freed_block_is_kept_for_reuse() -> None:
    applied, again, kept_mib = _probe(None)
    assert applied and again
    assert kept_mib >= 60  # the 64 MiB block came from the heap and stayed there


def test_system_setting_leaves_glibc_defaults() -> None:
    applied, again, kept_mib = _probe("system")
    assert not applied and not again
    assert kept_mib < 16  # glibc mmapped the block and gave it back on free
