"""The house rules of ARCHITECTURE.md, checked on the source: the import arrow and no cycles.

Imports are read with ``ast`` (nothing is imported); an import inside a function counts too,
one under ``if TYPE_CHECKING`` does not (it never runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("repvit_sam", "vos")
# The ``python -m`` doors into the command line: the only vos modules that import vos.cli.
CLI_DOORS = {"vos.run", "vos.bench.__main__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``path`` imports, with the parent packages Python runs first."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in tree.body
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            parts = name.split(".")
            for k in range(1, len(parts) + 1):
                if ".".join(parts[:k]) in modules:
                    found.add(".".join(parts[:k]))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    out = {}
    for name, path in modules.items():
        # A module's own parent packages are already running when it runs.
        parents = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        out[name] = _imports(path, modules) - {name} - parents
    return out


def test_the_model_package_never_imports_the_tracker(graph: dict[str, set[str]]) -> None:
    wrong = {m: sorted(d for d in deps if d.split(".")[0] == "vos")
             for m, deps in graph.items() if m.startswith("repvit_sam")}
    assert not {m: d for m, d in wrong.items() if d}


def test_the_library_never_imports_the_command_line(graph: dict[str, set[str]]) -> None:
    wrong = {m: sorted(d for d in deps if d == "vos.cli" or d.startswith("vos.cli."))
             for m, deps in graph.items()
             if not (m == "vos.cli" or m.startswith("vos.cli.")) and m not in CLI_DOORS}
    assert not {m: d for m, d in wrong.items() if d}


def test_modeling_imports_nothing_else_of_the_project(graph: dict[str, set[str]]) -> None:
    for module, deps in graph.items():
        if module.startswith("repvit_sam.modeling"):
            outside = {d for d in deps if not d.startswith("repvit_sam.modeling")}
            assert outside <= {"repvit_sam"}, (module, outside)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles
