"""T5: symbol lookup -- Module.symbol hit / miss vs dlsym through ctypes, and a second
``Module.function(...)`` for the same name vs a cached ``CDLL`` attribute.

Run: ``python benchmarks/lookup.py [--n 20000] [--quick] [--json out.json]``.
Targets: hit <= 0.2x, miss <= 0.1x, second function <= 1.2x. Per operation, timeit
(statement inlined, no lambda), median of 7 repeats of thread CPU time; the bare loop
overhead is reported too (it is included on both sides).
"""

from __future__ import annotations

import _common

from relink.bench import bench_lookup


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    a = p.parse_args()
    results = bench_lookup(1000 if a.quick else a.n, _common.progress)
    _common.report("T5 symbol lookup", results, a.json,
                   {"loop overhead per operation (us)": results[0].extra["loop_overhead_us"],
                    "floor: a Python method doing one dict get, symbol(name) (us)":
                        results[0].extra["floor_symbol_us"],
                    "floor: the same, function(name, restype) (us)":
                        results[0].extra["floor_function_us"]})


if __name__ == "__main__":
    main()
