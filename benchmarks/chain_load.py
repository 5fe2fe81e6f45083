"""T1: leaf -> middle -> base chain, load + call + close repeated, relink vs ctypes.CDLL.

Run: ``python benchmarks/chain_load.py [--rounds 300] [--quick] [--json out.json]``.
Target (issue 8): relink <= 1.0x ctypes.CDLL + dlclose of the same files. Rows: relink
from the file, from bytes, and (for reference) dlopen of a fresh uniquely named copy per
round. Medians of per-round thread CPU time, sides alternating.
"""

from __future__ import annotations

import _common

from relink.bench import bench_chain_load


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=300)
    a = p.parse_args()
    results = bench_chain_load(30 if a.quick else a.rounds, _common.progress)
    _common.report("T1 chain load+close", results, a.json,
                   {"dlopen really unloaded the chain": results[0].extra["dlopen_unloaded"]})


if __name__ == "__main__":
    main()
