"""Code quality gates run by the test command: ruff and mypy over the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    if shutil.which(name) is None:
        try:
            __import__(name)
        except ImportError:
            pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return [sys.executable, "-m", name]


def test_ruff_clean() -> None:
    proc = subprocess.run([*_tool("ruff"), "check", "src", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean() -> None:
    proc = subprocess.run([*_tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_import_is_cheap() -> None:
    code = ("import relink, sys; print(sorted(m for m in sys.modules "
            "if m.startswith(('numpy', 'ctypes', 'relink.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src")}).stdout
    assert "numpy" not in out and "ctypes" not in out, out
