"""T2 and T7: a fresh process -- first chain load, and ``import relink`` start-up.

Run: ``python benchmarks/first_load.py [--runs 60] [--quick] [--json out.json]``.
T2 target: ``python -c "import relink; load, call"`` minus ``python -c pass`` <= 3x the
ctypes equivalent. T7 target: ``import relink`` adds <= 30 ms. Child processes run
interleaved (rotating order), timed by their CPU time (rusage), each figure the median
of per-round differences against ``python -c pass``. Then ``-X importtime`` lists the
modules that cost most in the first load.
"""

from __future__ import annotations

import _common

from relink.bench import bench_processes, import_profile
from relink.demo import build_chain


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=60)
    a = p.parse_args()
    results = bench_processes(6 if a.quick else a.runs, _common.progress)
    leaf = build_chain() / "libleaf.so"
    code = f"import relink; relink.load({str(leaf)!r}).close()"
    rows = import_profile(2 if a.quick else 7, 12, code)
    prof = {f"{mod}": f"self {s / 1000:.1f} ms, cumulative {c / 1000:.1f} ms"
            for mod, s, c in rows}
    _common.report("T2/T7 fresh process", results, a.json,
                   {"wall-clock deltas (us)": results[0].extra["wall_delta_us"],
                    "-X importtime, first load, top modules by self time (median)": "",
                    **prof})


if __name__ == "__main__":
    main()
