"""Helpers of the benchmark smoke tests: import a benchmarks/<name>.py script as a module.

The scripts live outside the package (benchmarks/ at the repo root) and import their
sibling ``_common``; they are loaded under unique module names so they cannot clash with
other test directories' modules.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def bench_script(name: str) -> ModuleType:
    """The module of benchmarks/<name>.py (loaded once)."""
    key = f"relink_benchmarks_{name}"
    if key in sys.modules:
        return sys.modules[key]
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(key, BENCH_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod
