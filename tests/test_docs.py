"""The README and the docs site stay true where a test can tell: cheap checks, plus the
newcomer's path of ``docs/index.md`` run as written (slow)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vos.cli import MODES

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 250

# Pages other issues own; they may be rewritten, but the README and the nav link them.
JOB_PAGES = {
    "segment a video": "docs/cli.md",
    "SAM 2 code": "docs/sam2-video-predictor.md",
    "SAM code": "docs/sam-compatibility.md",
    "the annotator": "docs/annotator.md",
    "live webcam": "docs/live.md",
    "a benchmark": "docs/evaluation.md",
}


def fenced_blocks(text: str, language: str | None = None) -> list[str]:
    """The bodies of the ```-fenced blocks of ``text`` (of one language, if given)."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)
    return [body for lang, body in blocks if language is None or lang == language]


def commands(block: str) -> list[str]:
    """The command lines of a shell block, comments and continuation lines joined."""
    joined = block.replace("\\\n", " ")
    lines = [line.split("  #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def relative_links(text: str) -> list[str]:
    """Targets of the Markdown links and images of ``text`` that point into the repository."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # code is not links
    prose = re.sub(r"`[^`]*`", "", prose)
    targets = re.findall(r"\]\(([^)\s]+)\)", prose)
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def nav_pages() -> list[str]:
    """Every page in mkdocs.yml's nav, as a path under docs/."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            pages.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(config["nav"])
    return pages


def normalise(command: str) -> str:
    """A pip or pytest command as CI spells it and as the README does, made comparable."""
    command = re.sub(r"^python3? -m pip ", "pip ", command)
    command = re.sub(r"^python3 ", "python ", command)
    return " ".join(word for word in shlex.split(command) if word != "-q")


def test_readme_is_a_front_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text())
    assert len(images) == 1, "one picture"
    assert (REPO / images[0]).stat().st_size < 200_000, "a small picture"


def test_readme_install_and_test_commands_are_what_ci_runs() -> None:
    install_block = next(b for b in fenced_blocks(README.read_text(), "bash") if "pytest" in b)
    readme = [normalise(part) for line in commands(install_block) for part in line.split(" && ")]
    ci = {normalise(line.strip()) for line in (REPO / ".ci/run").read_text().splitlines()
          if re.match(r"\s*python3? -m (pip|pytest) ", line)}
    assert readme == ['pip install torch==2.13.0', 'pip install -e .[dev]',
                      'python -m pytest -m not weights and not cuda'], readme
    missing = [command for command in readme if command not in ci]
    assert not missing, f"README commands that .ci/run does not run: {missing}"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_has_a_readme_example(mode: str) -> None:
    code = "\n".join(fenced_blocks(README.read_text(), "bash"))
    assert re.search(rf"^(repvit-vos|python -m vos\.run) {mode} ", code, flags=re.M), (
        f"README.md has no example of the '{mode}' mode")


def test_readme_links_resolve_and_docs_pages_are_in_the_site() -> None:
    links = relative_links(README.read_text())
    nav = set(nav_pages())
    for link in links:
        path = link.split("#")[0]
        assert (REPO / path).exists(), f"README.md links {link}, which does not exist"
        if path.startswith("docs/") and path.endswith(".md"):
            assert path.removeprefix("docs/") in nav, f"{path} is not in mkdocs.yml's nav"
    for job, page in JOB_PAGES.items():
        assert page in links, f"the README's example for {job} does not link {page}"


def test_every_docs_page_is_in_the_nav_and_every_nav_page_exists() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    left_out = {line.strip().lstrip("/") for line in config.get("not_in_nav", "").splitlines()}
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")} - left_out
    nav = set(nav_pages())
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - pages == set(), "nav entries without a page"


def test_docs_site_is_built_strictly_in_ci_and_its_tools_are_in_an_extra() -> None:
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines()
          if not line.lstrip().startswith("#")]
    assert any("mkdocs build --strict" in line for line in ci)
    assert any(line.strip() == "bash .ci/installed_check.sh" for line in ci)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^docs = \[.*"mkdocs-material', pyproject, flags=re.M)
    assert re.search(r'^dev = \[.*"mkdocs-material', pyproject, flags=re.M)


def test_changelog_starts_with_this_version() -> None:
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(),
                        flags=re.M).group(1)
    first = re.search(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(), flags=re.M)
    assert first is not None and first.group(1) == version


def test_no_table_says_more_about_sharing_than_other_jobs_loading_the_machine() -> None:
    """Measurement conditions stay about the machine ("other jobs loaded the machine")."""
    text = "\n".join(p.read_text() for p in [README, *DOCS.rglob("*.md")])
    for phrase in ("agents", "shared with", "shared machine", "shared cores"):
        assert phrase not in text.lower(), phrase


# --- the newcomer's path -------------------------------------------------------------------

NEWCOMER_HEADING = "## Your first result"


def newcomer_block() -> tuple[list[str], list[str]]:
    """The commands of docs/index.md's first-result block and the listing it promises."""
    text = (DOCS / "index.md").read_text()
    section = text[text.index(NEWCOMER_HEADING):]
    block = fenced_blocks(section, "bash")[0]
    listing = fenced_blocks(section, "text")[0].split()
    return commands(block), listing


def write_clip(path: Path) -> None:
    """Eight 160x120 frames of a square moving right: the object inside 20,30,70,80 at first."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    yy, xx = np.mgrid[0:120, 0:160]
    background = (np.stack([xx * 3 % 256, yy * 5 % 256, (xx + yy) % 256], -1) // 3).astype(np.uint8)
    for t in range(8):
        frame = background.copy()
        frame[30:80, 20 + 3 * t : 70 + 3 * t] = (40, 200, 230)
        writer.write(frame)
    writer.release()


def test_newcomer_block_is_the_readme_install_and_download() -> None:
    lines, listing = newcomer_block()
    assert lines[0] == 'pip install torch==2.13.0 && pip install ".[demo]"'
    assert lines[1] == "python -m repvit_sam.download --model repvit --dest weights/"
    assert lines[2] == "export REPVIT_SAM_CHECKPOINT=weights/repvit_sam.pt"
    assert lines[1] in README.read_text() and lines[2] in README.read_text()
    assert listing, "the block's output is shown"


@pytest.mark.slow
def test_newcomers_path_runs_as_written(tmp_path: Path, random_checkpoint: Path) -> None:
    """docs/index.md's commands in a fresh folder: the package installed here stands in for
    the install line, a synthetic checkpoint for the download; the rest runs as written and
    lists what the page says it lists."""
    lines, listing = newcomer_block()
    (tmp_path / "weights").mkdir()
    os.link(random_checkpoint, tmp_path / "weights" / "repvit_sam.pt")
    write_clip(tmp_path / "clip.mp4")
    assert lines[-1] == "ls out"
    script = "set -e\n" + "\n".join([*lines[2:-1], "echo '--- listing ---'", lines[-1]]) + "\n"
    env = {k: v for k, v in os.environ.items() if k != "REPVIT_SAM_CHECKPOINT"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["REPVIT_VOS_CACHE"] = str(tmp_path / "cache")  # graph exports stay in the test's folder
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    shown = result.stdout.split("--- listing ---", 1)[1].split()
    assert shown == listing, result.stdout
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert masks == [f"{t:05d}.png" for t in range(8)]
