"""``relink demo``: compile a tiny leaf -> middle -> base chain, load it with relink, call it.

CLI layer. Shows the main job end to end on a fresh machine (needs only a C compiler):
what relink loaded and from where, the call's result, and the load time next to
``ctypes.CDLL`` (the system's dlopen) measured in the same run.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="build a small library chain, load it with relink, call "
                       "it, and compare the load time with ctypes.CDLL",
                       description="Compile libleaf.so -> libmiddle.so -> libbase.so with the "
                                   "system C compiler, load it with relink (from a path and "
                                   "from bytes), call leaf_value(), and time the load next "
                                   "to ctypes.CDLL.")
    p.add_argument("--rounds", type=int, default=200,
                   help="load/close rounds for the timing (default 200)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import relink
    from relink.demo import build_chain

    w = sys.stdout.write
    w("relink demo: building libleaf.so -> libmiddle.so -> libbase.so with the C compiler\n")
    chain = build_chain()
    leaf = chain / "libleaf.so"
    w(f"  built in {chain}\n\n")

    t0 = time.perf_counter()
    m = relink.load(leaf)
    t1 = time.perf_counter()
    value = m.function("leaf_value", ctypes.c_int)()
    w(f"relink.load({leaf.name}) took {(t1 - t0) * 1e6:.0f} us (first load, cold caches)\n")
    _tree(m, w)
    w(f"\n  leaf_value() = {value}   (expected 3: leaf + middle + base, through the PLT,\n"
      "                   a function-pointer table and a constructor-set flag)\n")
    m.close()

    data = leaf.read_bytes()
    resolver = relink.SearchPathResolver(fixed_dirs=(str(chain),))
    mb = relink.load(data, name="libleaf.so", resolver=resolver)
    w(f"  from bytes: leaf_value() = {mb.function('leaf_value', ctypes.c_int)()}   (nothing "
      "written to disk; bytes have no $ORIGIN,\n               so the dependencies were "
      "found through a fixed search directory)\n")
    mb.close()

    rounds = max(args.rounds, 5)
    w(f"\nTiming {rounds} rounds of load + call + close, alternating with ctypes.CDLL "
      "(medians of thread CPU time):\n")
    from relink.bench import bench_chain_load

    for r in bench_chain_load(rounds):
        w(f"  {r.name:<32} relink {r.relink_us:7.0f} us   {r.baseline} "
          f"{r.baseline_us:6.0f} us   ratio {r.ratio:.2f}x\n")
    w("  (\"new SONAMEs\": the dlopen side loads fresh renamed copies, since glibc "
      "reuses a loaded object whose SONAME matches)\n")
    return 0


def _tree(m: Any, w: Any, depth: int = 0, seen: set[int] | None = None) -> None:
    seen = seen if seen is not None else set()
    where = "host (dlopen)" if m.is_host else (m.path or "<memory>")
    base = f" at {m.base:#x}" if m.base else ""
    w(f"  {'    ' * depth}{m.name}{base}  [{where}]\n")
    if id(m) in seen:
        return
    seen.add(id(m))
    for dep in m.dependencies:
        _tree(dep, w, depth + 1, seen)
