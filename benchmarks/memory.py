"""T8: memory -- mappings and RSS per loaded small library vs dlopen, and whether many
load/close cycles leave mappings, file descriptors and RSS flat.

Run: ``python benchmarks/memory.py [--libraries 200] [--cycles 10000] [--quick]
[--json out.json]``. Targets: per library, relink's /proc/self/maps entries and RSS no
more than dlopen's; after 10,000 relink load/call/close cycles of the chain, the same
number of mappings and fds as after the warm-up (a tenth of the run, reported apart) and
RSS growth within 1 MiB (Python's allocator keeps some arenas; a leak of one mapping or a
few hundred bytes per cycle would show as 10,000 mappings / several MiB).

Per library: `--libraries` copies of libbase.so are loaded and kept (200: with fewer,
the Python allocator's arena granularity moves the figure by a KiB either way), then the
growth of /proc/self/maps entries and RSS (from /proc/self/statm, so relink's Python objects count
too) is divided by the count. relink loads the same file each time (every plain
``relink.load`` is an independent copy); dlopen loads uniquely named copies. Each side
runs in fresh child processes of its own (three each, alternating; medians).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

import relink
from relink.bench import Progress, Result, soname_copy
from relink.demo import build_chain
from relink.runtime.libc import dlclose

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
RSS_SLACK_KIB = 1024


def maps_count() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def _snapshot() -> tuple[int, int, int]:
    gc.collect()
    return maps_count(), rss_kib(), fd_count()


def _grow(side: str, n: int, tmp: Path) -> tuple[float, float, float]:
    """(mappings, RSS KiB, fds) added per library by `n` loads of `side` in this process.

    Both sides prepare alike (relink imported and warmed, one dlopen + dlclose done), so
    the only difference between two children is the loads measured."""
    base = build_chain() / "libbase.so"
    data = base.read_bytes()
    relink.load(base).close()  # warm: imports, parse cache, host symbol caches
    copies = [soname_copy(data, "libbase.so", f"{i:04d}", tmp / f"{i}.so")
              for i in range(n + 1)]
    dlclose(ctypes.CDLL(str(copies[n]))._handle)
    m0, r0, f0 = _snapshot()
    kept: list[object] = []
    for i in range(n):
        kept.append(relink.load(base) if side == "relink" else
                    ctypes.CDLL(str(copies[i]))._handle)
    m1, r1, f1 = _snapshot()
    return (m1 - m0) / n, (r1 - r0) / n, (f1 - f0) / n


def per_library(n: int = 50, progress: Progress = _common.progress,
                rounds: int = 3) -> list[Result]:
    """Mappings, RSS (KiB) and open fds per loaded copy of libbase.so, relink vs dlopen.

    Each side is measured in a fresh child process of its own (`rounds` per side,
    alternating; medians): in one process the second side's allocations land in what
    the first side freed, and the figure then depends on which side ran first (and even
    on how the interpreter's modules were loaded), not only on the libraries."""
    runs: dict[str, list[tuple[float, float, float]]] = {"relink": [], "dlopen": []}
    done = 0
    for _ in range(rounds):
        for side in ("relink", "dlopen"):
            out = subprocess.run([sys.executable, __file__, "--side", side,
                                  "--libraries", str(n)], capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"T8 {side} child failed:\n{out.stderr[-2000:]}")
            runs[side].append(tuple(json.loads(out.stdout.strip().splitlines()[-1])))
            done += 1
            progress("T8 per library (child processes)", done, 2 * rounds)
    med = {side: [statistics.median(v[k] for v in vals) for k in range(3)]
           for side, vals in runs.items()}
    extra = {"libraries": n, "file": str(build_chain() / "libbase.so"),
             "child processes per side": rounds,
             "runs (maps, rss_kib, fds per library)": runs}
    rel, dl = med["relink"], med["dlopen"]
    return [
        # A library has a whole number of mappings: one more or fewer over the batch is
        # the allocators (glibc malloc / pymalloc arenas coming and going), not a library.
        Result("mappings per small library", round(rel[0], 2), round(dl[0], 2),
               "dlopen copies", 1.0, "T8", extra=extra, unit="maps"),
        Result("RSS per small library", round(rel[1], 2), round(dl[1], 2), "dlopen copies",
               1.0, "T8", extra=extra, unit="KiB"),
        # Not a T8 target (dlopen holds none, so the ratio is undefined): shown as facts.
        Result("open fds per small library", rel[2], dl[2], "dlopen copies",
               None, "T8", extra=extra, unit="fds"),
    ]


def cycles(n: int = 10000, every: int = 500, progress: Progress = _common.progress
           ) -> tuple[list[Result], list[tuple[int, int, int, int]]]:
    """`n` relink load/call/close cycles of the chain; growth results and the samples
    (cycle, mappings, fds, RSS KiB)."""
    leaf = build_chain() / "libleaf.so"

    def cycle() -> None:
        m = relink.load(leaf)
        if m.function("leaf_value", ctypes.c_int)() != 3:
            raise RuntimeError("leaf_value() != 3")
        m.close()

    # Warm-up (a tenth of the run, at least 200 cycles): relink's caches and Python's
    # allocator reach their steady size; that one-time step is reported separately.
    gc.collect()
    start = (maps_count(), fd_count(), rss_kib())
    warm = max(200, n // 10)
    for _ in range(warm):
        cycle()
    gc.collect()
    samples = [(0, maps_count(), fd_count(), rss_kib())]
    for i in range(1, n + 1):
        cycle()
        if i % every == 0 or i == n:
            gc.collect()
            samples.append((i, maps_count(), fd_count(), rss_kib()))
            progress("T8 load/close cycles", i, n)
    # The end point is the median of the last five samples: a single one can catch an
    # allocator arena moving (one mapping fewer, RSS up, then back) -- a leak is in every
    # later sample.
    first = samples[0]
    tail = samples[-5:]
    last = tuple(sorted(s[k] for s in tail)[len(tail) // 2] for k in range(4))
    extra = {"cycles": n, "warm-up cycles": warm,
             "warm-up growth (maps, fds, rss_kib)": tuple(
                 b - a for a, b in zip(start, samples[0][1:])),
             "samples (cycle, maps, fds, rss_kib)": samples}
    return [
        Result(f"{n} cycles: mappings growth", last[1] - first[1], first[1],
               "mappings after warm-up", 0, "T8", absolute=True, extra=extra, unit="maps"),
        Result(f"{n} cycles: fds growth", last[2] - first[2], first[2],
               "fds after warm-up", 0, "T8", absolute=True, extra=extra, unit="fds"),
        Result(f"{n} cycles: RSS growth", last[3] - first[3], first[3],
               "RSS after warm-up", RSS_SLACK_KIB, "T8", absolute=True, extra=extra,
               unit="KiB"),
    ], samples


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--libraries", type=int, default=200)
    p.add_argument("--cycles", type=int, default=10000)
    p.add_argument("--side", choices=("relink", "dlopen"),
                   help="internal: measure one side in this process, print JSON")
    a = p.parse_args()
    if a.side:
        with tempfile.TemporaryDirectory(prefix="relink-mem-") as tmp:
            print(json.dumps(_grow(a.side, a.libraries, Path(tmp))))
        return
    results = per_library(5 if a.quick else a.libraries)
    grow, samples = cycles(100 if a.quick else a.cycles, 20 if a.quick else 500)
    results += grow
    peak = max(s[3] for s in samples)
    _common.report("T8 memory", results, a.json,
                   {"warm-up growth before the first sample (maps, fds, RSS KiB)":
                        grow[0].extra["warm-up growth (maps, fds, rss_kib)"],
                    "RSS KiB: after warm-up / peak / end": f"{samples[0][3]} / {peak} / "
                                                           f"{samples[-1][3]}",
                    "mappings min/max over the run": f"{min(s[1] for s in samples)} / "
                                                     f"{max(s[1] for s in samples)}"})


if __name__ == "__main__":
    main()
