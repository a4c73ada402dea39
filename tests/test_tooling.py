"""Project tooling: the linter's configuration and CI step, the licence pyproject.toml promises."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_ruff_is_configured_installed_by_the_test_extra_and_run_by_ci_after_the_install():
    assert "line-length" in PYPROJECT["tool"]["ruff"] and PYPROJECT["tool"]["ruff"]["lint"]["select"]
    assert any(req.split(">")[0].split("=")[0].strip() == "ruff"
               for req in PYPROJECT["project"]["optional-dependencies"]["test"])
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if 'pip install -e ".[test]"' in line)
    lint = next(i for i, line in enumerate(lines) if line.strip().startswith(".venv/bin/ruff check"))
    assert lint > install


def test_ruff_check_passes():
    pytest.importorskip("ruff")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_licence_file_matches_pyproject():
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
