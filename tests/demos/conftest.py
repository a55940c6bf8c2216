"""Shared fixtures of the web annotator's tests (``demos/app.py``, ``demos/annotator.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_PATH = REPO_ROOT / "demos" / "app.py"


@pytest.fixture(scope="session")
def demo_app() -> ModuleType:
    """``demos/app.py`` imported as a module (``demos`` is not a package)."""
    spec = importlib.util.spec_from_file_location("repvit_demo_app", APP_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def annotator(demo_app: ModuleType) -> ModuleType:
    """``demos/annotator.py`` (importable once ``app.py`` put ``demos/`` on the path)."""
    return sys.modules["annotator"]
