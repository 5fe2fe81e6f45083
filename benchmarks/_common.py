"""Shared plumbing for the benchmark scripts in benchmarks/ (not a benchmark itself).

Every script is runnable as ``python benchmarks/<name>.py`` from a checkout: this module
puts ``src/`` on sys.path, parses the common options (``--quick``, ``--json PATH``),
draws progress on stderr, prints the machine line and the table, and writes JSON.
The measurements themselves live in relink.bench (shared with ``relink bench``) or in
the script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from relink import bench  # noqa: E402
from relink.bench import Result, format_table  # noqa: E402

__all__ = ["ROOT", "machine", "parser", "progress", "report"]


class _Parser(argparse.ArgumentParser):
    def parse_args(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        ns = super().parse_args(*args, **kwargs)
        if getattr(ns, "wall", False):
            bench.clock = time.perf_counter  # read by relink.bench at every round
        return ns


def parser(description: str) -> argparse.ArgumentParser:
    p = _Parser(description=description)
    p.add_argument("--quick", action="store_true", help="few rounds (smoke run)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--wall", action="store_true",
                   help="time in-process rounds by wall clock instead of thread CPU time "
                        "(a cross-check; noisier on a shared machine)")
    return p


def progress(label: str, done: int, total: int) -> None:
    """Progress on stderr: a self-rewriting line on a terminal, nothing otherwise."""
    if sys.stderr.isatty():
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r\x1b[K{label}: {done}/{total}{end}")
        sys.stderr.flush()


def machine() -> dict[str, Any]:
    """nproc, CPU model, kernel, Python, libc, load average: the context of a figure."""
    from relink.bench import machine_info

    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return {**machine_info(), "commit": rev or "unknown", "loadavg": os.getloadavg(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def report(title: str, results: Sequence[Result], json_path: str | None,
           extra: dict[str, Any] | None = None) -> None:
    """Print the table (and `extra` facts) and write JSON if asked."""
    m = machine()
    if bench.clock is not time.thread_time:
        m["clock"] = "wall (perf_counter)"
        title += " [wall clock]"
    print(f"{title} -- {m['cpu']} ({m['nproc']} CPUs), Linux {m['kernel']}, "
          f"Python {m['python']}, {m['libc']}, load average {m['loadavg'][0]:.2f}, "
          f"relink {m['commit']}")
    if results:
        print(format_table(results))
    for k, v in (extra or {}).items():
        print(f"{k}: {v}")
    if json_path:
        doc = {"title": title, "machine": m, "results": [r.as_dict() for r in results],
               "extra": extra or {}}
        Path(json_path).write_text(json.dumps(doc, indent=2, default=str) + "\n")
