"""T3: a generated library, 20,000 RELATIVE + 5,000 symbol relocations, 2,000 exports.

Run: ``python benchmarks/big_library.py [--rounds 100] [--quick] [--json out.json]``.
Target: relink load + call + close <= 2x ctypes.CDLL + dlclose (a fresh SONAME copy per
round for dlopen). The library is compiled once with the system C compiler and cached
(relink.bench.build_many_relocs); its relocation counts are read back and printed.
"""

from __future__ import annotations

import _common

from relink.bench import bench_big_library


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=100)
    a = p.parse_args()
    results = bench_big_library(8 if a.quick else a.rounds, _common.progress)
    _common.report("T3 generated library", results, a.json,
                   {"relocations in the file": results[0].extra["relocations"]})


if __name__ == "__main__":
    main()
