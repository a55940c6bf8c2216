"""The installed package's front door: one version, every mode's help, mistyped modes, and
package data that a wheel carries (``.ci/installed_check.sh`` checks the real wheel)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import vos
from vos.cli import MODES, build_parser, main, unknown_mode_error

REPO = Path(__file__).resolve().parents[1]
PYPROJECT_TEXT = (REPO / "pyproject.toml").read_text()


def pyproject_version() -> str:
    """``[project] version`` of pyproject.toml (no tomllib: Python 3.10 is supported)."""
    found = re.search(r'^version = "([^"]+)"', PYPROJECT_TEXT, flags=re.M)
    assert found is not None
    return found.group(1)


def package_data() -> dict[str, list[str]]:
    """``[tool.setuptools.package-data]``: package -> glob patterns."""
    section = PYPROJECT_TEXT.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    return {name: re.findall(r'"([^"]+)"', patterns)
            for name, patterns in re.findall(r"^(\w+) = \[(.*)\]", section, flags=re.M)}


def test_one_version_everywhere(capsys: pytest.CaptureFixture) -> None:
    """pyproject.toml's version, read through the installed metadata, is what --version says."""
    expected = pyproject_version()
    assert version("repvit-vos") == expected, "reinstall: pip install -e '.[dev]'"
    assert vos.__version__ == expected
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"repvit-vos {expected}"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_help_names_the_mode(mode: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([mode, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m vos.run {mode} "), out[:200]
    assert f"\npython -m vos.run {mode}: " in out, "the description names the mode"


def test_help_under_the_console_script_says_repvit_vos(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        build_parser("repvit-vos").parse_args(["video", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: repvit-vos video ") and "\nrepvit-vos video: " in out


@pytest.mark.parametrize(("word", "hint"), [("vidoe", "did you mean 'video'"),
                                            ("batc", "did you mean 'batch'"),
                                            ("serve", "")])
def test_a_word_that_is_no_mode_is_refused_in_one_line(
        word: str, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([word, "--help"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: '{word}' is not a mode")
    assert all(mode in err for mode in MODES) and hint in err
    assert f"./{word}" in err, "says how to name a video of that name"


@pytest.mark.parametrize("word", ["clip.mp4", "frames/", "./annotate", "../x", "/no/such"])
def test_a_path_goes_to_the_video_mode(word: str) -> None:
    assert unknown_mode_error(word) is None


def test_an_existing_folder_named_like_a_word_is_a_video(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "frames").mkdir()
    assert unknown_mode_error("frames") is None
    assert main(["frames", "--init-box", "1,1,9,9", "--checkpoint", "none.pt"]) == 2
    assert "no images" in capsys.readouterr().err, "the video mode read the folder"


def test_python_m_vos_run_version_in_a_fresh_interpreter() -> None:
    result = subprocess.run([sys.executable, "-m", "vos.run", "--version"], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0 and result.stdout.strip().startswith("repvit-vos ")


def test_console_script_is_the_cli() -> None:
    assert re.search(r'^\[project\.scripts\]\nrepvit-vos = "vos\.run:main"$', PYPROJECT_TEXT,
                     flags=re.M)


def test_every_data_file_of_the_packages_is_package_data() -> None:
    """A non-Python file tracked under repvit_sam/ or vos/ matches a package-data glob, so
    the wheel carries it (the CI's wheel check finds any that slip through)."""
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "repvit_sam", "vos"],
                             capture_output=True, text=True, check=False).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    globs = package_data()
    assert set(globs) == {"repvit_sam", "vos"}
    missing = []
    for path in tracked:
        if path.endswith(".py"):
            continue
        package, _, inside = path.partition("/")
        if not any(fnmatch.fnmatch(inside, pattern) for pattern in globs.get(package, [])):
            missing.append(path)
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
