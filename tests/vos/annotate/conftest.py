"""Shared fixtures of the annotator's tests (``vos.annotate``)."""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def annotate() -> ModuleType:
    """``vos.annotate`` (skips without Flask, the ``demo`` extra)."""
    pytest.importorskip("flask")
    import vos.annotate

    return vos.annotate
