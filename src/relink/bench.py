"""Side-by-side measurements against ctypes.CDLL (the system's dlopen), in one run.

Used by ``relink bench`` and the scripts in ``benchmarks/``. Every comparison runs both
sides in the same process, alternating rounds, and reports medians and their ratio.
The dlopen side loads fresh copies with unique SONAMEs: glibc silently reuses a loaded
object whose SONAME matches, which would time a refcount bump instead of a load.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Result", "bench_chain_load", "bench_lookup", "run_all"]

Progress = Callable[[str, int, int], None]

# CPU time of this thread (user + system, so the loaders' system calls count): on a
# shared machine it is far steadier than wall time, and both sides pay the same way.
clock = time.thread_time


@dataclass
class Result:
    """One comparison: medians in microseconds and relink / baseline."""

    name: str
    relink_us: float
    baseline_us: float
    baseline: str
    target: float | None = None

    @property
    def ratio(self) -> float:
        return self.relink_us / self.baseline_us if self.baseline_us else float("inf")

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "relink_us": round(self.relink_us, 3),
                "baseline_us": round(self.baseline_us, 3), "baseline": self.baseline,
                "ratio": round(self.ratio, 3), "target": self.target}


def _noop(label: str, done: int, total: int) -> None:
    return None


def bench_chain_load(rounds: int = 300, progress: Progress = _noop) -> list[Result]:
    """leaf -> middle -> base: load + call + close, relink vs ctypes.CDLL + dlclose.

    Rounds alternate between the sides; medians of per-round thread CPU time.
    """
    import relink
    from relink.demo import build_chain, uniquify
    from relink.runtime.libc import dlclose

    chain = build_chain()
    leaf = chain / "libleaf.so"
    data = leaf.read_bytes()
    resolver = relink.SearchPathResolver(fixed_dirs=(str(chain),))
    base = build_chain(suffix="_0000")
    rel_file: list[float] = []
    rel_mem: list[float] = []
    cdll: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        copies = [uniquify(base, Path(tmp) / str(i), f"{i:04d}") for i in range(rounds)]
        relink.load(leaf).close()  # warm imports and caches on both sides
        lib = ctypes.CDLL(str(copies[0]))
        dlclose(lib._handle)
        gc.disable()
        try:
            for i in range(1, rounds):
                t0 = clock()
                m = relink.load(leaf)
                m.function("leaf_value", ctypes.c_int)()
                m.close()
                t1 = clock()
                m = relink.load(data, name="libleaf.so", resolver=resolver)
                m.function("leaf_value", ctypes.c_int)()
                m.close()
                t2 = clock()
                lib = ctypes.CDLL(str(copies[i]))
                lib.leaf_value()
                dlclose(lib._handle)
                t3 = clock()
                rel_file.append(t1 - t0)
                rel_mem.append(t2 - t1)
                cdll.append(t3 - t2)
                if i % 20 == 0:
                    progress("chain load", i, rounds)
        finally:
            gc.enable()
    c = statistics.median(cdll) * 1e6
    return [
        Result("chain load+call+close (file)", statistics.median(rel_file) * 1e6, c,
               "ctypes.CDLL + dlclose", 2.5),
        Result("chain load+call+close (bytes)", statistics.median(rel_mem) * 1e6, c,
               "ctypes.CDLL + dlclose", 2.5),
    ]


def bench_lookup(n: int = 20000, progress: Progress = _noop) -> list[Result]:
    """Symbol lookup hit / miss: Module.symbol vs dlsym through ctypes; cached function."""
    import relink
    from relink.demo import build_chain
    from relink.runtime.libc import dlsym

    chain = build_chain()
    m = relink.load(chain / "libleaf.so")
    lib = ctypes.CDLL(str(chain / "libleaf.so"))
    handle = lib._handle

    def timed(fn: Callable[[], object]) -> float:
        best = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(n // 10):
                fn(); fn(); fn(); fn(); fn(); fn(); fn(); fn(); fn(); fn()  # noqa: E702
            best.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(best)

    sym = m.symbol
    rel_hit = timed(lambda: sym("leaf_value"))
    progress("lookup", 1, 6)
    rel_miss = timed(lambda: sym("no_such_symbol"))
    progress("lookup", 2, 6)
    dl_hit = timed(lambda: dlsym(handle, b"leaf_value"))
    progress("lookup", 3, 6)
    dl_miss = timed(lambda: dlsym(handle, b"no_such_symbol"))
    progress("lookup", 4, 6)
    fn = m.function
    fn("leaf_value", ctypes.c_int)
    rel_fn = timed(lambda: fn("leaf_value", ctypes.c_int))
    lib.leaf_value  # noqa: B018 - cache the attribute
    cd_attr = timed(lambda: lib.leaf_value)
    progress("lookup", 6, 6)
    m.close()
    return [
        Result("symbol lookup hit", rel_hit, dl_hit, "dlsym via ctypes", 0.3),
        Result("symbol lookup miss", rel_miss, dl_miss, "dlsym via ctypes", 0.1),
        Result("second Module.function()", rel_fn, cd_attr, "cached CDLL attribute", 1.2),
    ]


def run_all(rounds: int = 300, progress: Progress = _noop) -> list[Result]:
    """The headline comparisons."""
    return bench_chain_load(rounds, progress) + bench_lookup(progress=progress)


def format_table(results: list[Result]) -> str:
    lines = [f"{'benchmark':<34} {'relink':>11} {'baseline':>11} {'ratio':>7} {'target':>7}"
             "  baseline is"]
    for r in results:
        target = f"<={r.target:g}x" if r.target else ""
        ok = "" if r.target is None else ("  ok" if r.ratio <= r.target else "  MISSED")
        lines.append(f"{r.name:<34} {r.relink_us:>9.2f}us {r.baseline_us:>9.2f}us "
                     f"{r.ratio:>6.2f}x {target:>7}  {r.baseline}{ok}")
    return "\n".join(lines)
