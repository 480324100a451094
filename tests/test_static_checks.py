"""mypy --strict and ruff stay clean on the project's own code (STYLE.md, section 3).

mypy cannot follow setuptools' package-dir mapping through an editable install,
so the test lays out a ``meterpipe/`` tree of symlinks to the top-level folders
and checks that. ruff reads its rules (and the reason for every ignore) from
pyproject.toml and checks the whole tree, tests and benchmarks included.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "decoder", "reader", "publishers", "deploy", "simulator", "web")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed (pip install -e '.[test]')")
def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    tree = tmp_path / "meterpipe"
    tree.mkdir()
    for name in PACKAGES:
        (tree / name).symlink_to(ROOT / name)
    args = [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml")]
    args += ["--namespace-packages", "--explicit-package-bases", "--cache-dir", str(tmp_path / "cache")]
    for name in PACKAGES:
        args += ["-p", f"meterpipe.{name}"]
    result = subprocess.run(args, cwd=tmp_path, env={"MYPYPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff not installed (pip install -e '.[test]')")
def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
