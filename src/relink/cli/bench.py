"""``relink bench``: the headline performance comparisons, run on this machine.

CLI layer over relink.bench (issue 8). Runs T1 (chain load + close), T2 (first load in
a fresh process), T3 (20,000 RELATIVE + 5,000 symbol relocations), T5 (symbol lookup)
and T7 (``import relink`` start-up) side by side with ctypes.CDLL / dlsym in the same
run, and prints the ratios next to the targets. A progress line is drawn on stderr while
it runs (one line per stage when stderr is not a terminal). The full suite, T1-T8, is in
``benchmarks/`` (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

__all__ = ["register"]

STAGES = ("T1", "T2", "T3", "T5", "T7")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench", help="compare load / lookup / start-up speed with ctypes.CDLL here",
        description="Run the headline comparisons against ctypes.CDLL (the system's "
                    "dlopen) and dlsym on this machine, in one run, and print the ratios "
                    "with the targets. Needs a C compiler (the test libraries are built "
                    "and cached). Figures are medians of thread CPU time; on a shared "
                    "machine compare the ratios, not the absolute times.")
    p.add_argument("--quick", action="store_true",
                   help="few rounds (a rough figure in a few seconds)")
    p.add_argument("--rounds", type=int, default=300,
                   help="load/close rounds for T1 (T3 uses a third; default 300)")
    p.add_argument("--only", metavar="IDS", default=",".join(STAGES),
                   help=f"comma-separated subset of {','.join(STAGES)} (T2 and T7 run "
                        "together)")
    p.add_argument("--json", action="store_true",
                   help="print the results as JSON instead of a table")
    p.set_defaults(func=run)


class _Progress:
    """One self-rewriting status line on a terminal, else a line per stage."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""
        self.t0 = time.monotonic()

    def __call__(self, label: str, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.t0
        if self.tty:
            width = 24
            fill = width * done // max(total, 1)
            sys.stderr.write(f"\r\x1b[K{label:<34} [{'#' * fill}{'.' * (width - fill)}] "
                             f"{done}/{total}  {elapsed:5.1f}s")
        elif label != self.last:
            sys.stderr.write(f"relink bench: {label} [{total}] ...\n")
        self.last = label
        sys.stderr.flush()

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _machine() -> dict[str, Any]:
    from relink.bench import machine_info

    return machine_info()


def run(args: argparse.Namespace) -> int:
    from relink import bench

    wanted = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    unknown = wanted - set(STAGES)
    if unknown:
        print(f"relink bench: unknown stage(s) {', '.join(sorted(unknown))}; choose from "
              f"{', '.join(STAGES)}", file=sys.stderr)
        return 2
    quick = args.quick
    rounds = min(args.rounds, 40) if quick else max(args.rounds, 1)
    progress = _Progress()
    results: list[bench.Result] = []
    try:
        if "T1" in wanted:
            results += bench.bench_chain_load(rounds, progress)
        if "T3" in wanted:
            results += bench.bench_big_library(10 if quick else max(rounds // 3, 20),
                                               progress)
        if "T5" in wanted:
            results += bench.bench_lookup(2000 if quick else 20000, progress)
        if wanted & {"T2", "T7"}:
            procs = bench.bench_processes(8 if quick else 40, progress)
            results += [r for r in procs if r.target_id in wanted]
    finally:
        progress.finish()
    if args.json:
        json.dump({"machine": _machine(), "quick": quick,
                   "results": [r.as_dict() for r in results]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    m = _machine()
    print(f"relink bench on {m['cpu'] or 'unknown CPU'} ({m['nproc']} CPUs), Linux "
          f"{m['kernel']}, Python {m['python']}, {m['libc']}"
          + ("  [--quick: rough figures]" if quick else ""))
    print(bench.format_table(results))
    met = [r for r in results if r.met is not None]
    print(f"\n{sum(bool(r.met) for r in met)}/{len(met)} targets met. Medians of CPU time; "
          "baseline measured in the same run. On a shared machine compare ratios, not "
          "absolute times.")
    return 0
