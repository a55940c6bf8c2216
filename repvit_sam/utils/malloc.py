"""Keep large freed tensors' memory in the process instead of handing it back to the kernel.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every block above its
mmap threshold (128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and unmaps it on free, so
each new multi-megabyte activation is zero-filled by the kernel page by page on first touch.
An encoder or decoder call allocates hundreds of such blocks, and on this 2-core machine that
page-fault work is a quarter of the encoder's time: RepViT-SAM at 1024, fused + channels_last,
1.17 s with glibc's defaults and 0.95 s with the settings below; the batched prompt decoder for
8 objects 290 ms and 152 ms (``python -m vos.bench`` reports both).

:func:`retain_freed_memory` raises the mmap and trim thresholds with ``mallopt``, so large
blocks come from the heap and freed ones are reused; the resident size then stays at the
high-water mark of one frame's work instead of breathing with every call. It changes a
process-wide setting, so only entry points call it (``vos.run``, ``vos.bench``, the batch
workers), never an import. ``REPVIT_VOS_MALLOC=system`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

MALLOC_ENV = "REPVIT_VOS_MALLOC"

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

_applied = False


def retain_freed_memory(threshold_bytes: int = 1 << 30, top_pad_bytes: int = 64 << 20) -> bool:
    """Serve blocks below ``threshold_bytes`` from the heap and keep freed memory for reuse.

    Args:
        threshold_bytes: blocks smaller than this never get their own ``mmap``; freed heap
            memory is returned to the kernel only above this much at the top.
        top_pad_bytes: extra heap grown per ``sbrk`` (address space; untouched pages cost
            no memory).

    Returns:
        True when the settings are in force (now or from an earlier call); False on a C
        library without ``mallopt`` (macOS, Windows, musl) or when ``REPVIT_VOS_MALLOC`` is
        ``system``.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(MALLOC_ENV, "").strip().lower() == "system":
        return False
    if not sys.platform.startswith("linux"):
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    limit = min(int(threshold_bytes), 2**31 - 1)
    # Older glibc refuses an mmap threshold above 32 MiB (HEAP_MAX_SIZE / 2); take that then.
    threshold_set = mallopt(_M_MMAP_THRESHOLD, limit) == 1 or (
        mallopt(_M_MMAP_THRESHOLD, min(limit, 32 << 20)) == 1
    )
    trim_set = mallopt(_M_TRIM_THRESHOLD, limit) == 1
    pad_set = mallopt(_M_TOP_PAD, min(int(top_pad_bytes), 2**31 - 1)) == 1
    _applied = threshold_set and trim_set and pad_set
    return _applied


def release_freed_memory() -> bool:
    """Hand the heap's free memory back to the kernel now (glibc's ``malloc_trim(0)``).

    With :func:`retain_freed_memory` in force, memory freed by a finished job stays in the
    process for the next one. A server that has just dropped a large state (the annotator
    closing a session) calls this so its resident size falls back. Returns True when glibc
    released something; False elsewhere (nothing to call, or nothing freed).
    """
    if not sys.platform.startswith("linux"):
        return False
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim(0) == 1


def _libc_function(name: str) -> Any:
    """The C library's function ``name`` through ctypes, or None where there is none."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
