"""Benchmark: hot-code packing before/after on a library with scattered hot functions.

Run: ``python benchmarks/hotpack.py [--functions 2048] [--hot 256] [--iters 2000]``.

The library (benchmarks/hotpack_lib.py) has one function per 4 KiB page; its driver
calls `hot` of them in a shuffled order. Compared, in one process, median of several
runs, time per call:

- ``dlopen``: ctypes.CDLL of the file (the system loader's layout);
- ``relink``: ``relink.load`` (same layout as the file);
- ``relink+hotpack``: ``relink.scan`` + `hot_pack` of the hot functions and the driver
  into one 2 MiB huge-page-backed arena + ``Plan.load()``.

It also reports what the kernel granted for the hot arena (AnonHugePages) and, when
``perf stat`` works here, iTLB misses of a child process running each variant.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hotpack_lib import build  # noqa: E402

import relink  # noqa: E402
from relink.plan import hot_pack  # noqa: E402


def _time(run: Any, iters: int, calls: int, repeat: int) -> float:
    run(1)  # warm up (page faults, caches)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(iters)
        samples.append((time.perf_counter() - t0) / (iters * calls))
    return statistics.median(samples) * 1e9


def _variant(kind: str, lib: Path, names: list[str]) -> tuple[Any, Any, dict[str, Any]]:
    info: dict[str, Any] = {}
    if kind == "dlopen":
        handle = ctypes.CDLL(str(lib))
        fn = handle.run
        fn.restype, fn.argtypes = ctypes.c_long, [ctypes.c_long]
        return fn, handle, info
    if kind == "relink":
        mod = relink.load(lib)
        return mod.function("run", ctypes.c_long, ctypes.c_long), mod, info
    plan = relink.scan(lib)
    packer = hot_pack(["run", *names])
    plan.run(packer)
    mod = plan.load()
    hot = next(a for a in plan.arenas if a.name == "code.hot")
    info = {"hot_arena_bytes": hot.size, "hot_arena_address": hex(hot.address or 0),
            "huge": hot.huge}
    return mod.function("run", ctypes.c_long, ctypes.c_long), mod, info


def _perf(kind: str, args: argparse.Namespace) -> str:
    cmd = ["perf", "stat", "-x,", "-e", "iTLB-load-misses,instructions", sys.executable,
           __file__, "--child", kind, "--functions", str(args.functions), "--hot",
           str(args.hot), "--iters", str(args.iters)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"perf unavailable: {exc}"
    lines = [ln for ln in res.stderr.splitlines() if "iTLB" in ln or "instructions" in ln]
    if not lines or any("not supported" in ln for ln in lines):
        return "perf: hardware counters not supported here"
    return "; ".join(",".join(ln.split(",")[:3]) for ln in lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--functions", type=int, default=2048)
    ap.add_argument("--hot", type=int, default=256)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    lib, names = build(args.functions, args.hot)
    if args.child:
        fn, _keep, _ = _variant(args.child, lib, names)
        fn(args.iters)
        return 0
    results: dict[str, Any] = {"functions": args.functions, "hot": args.hot,
                               "iters": args.iters, "variants": {}}
    expected = None
    for kind in ("dlopen", "relink", "relink+hotpack"):
        fn, keep, info = _variant(kind, lib, names)
        value = fn(3)
        expected = value if expected is None else expected
        if value != expected:
            raise SystemExit(f"{kind}: run(3) = {value}, expected {expected}")
        ns = _time(fn, args.iters, args.hot, args.repeat)
        results["variants"][kind] = {"ns_per_call": round(ns, 2), **info,
                                     "perf": _perf(kind, args)}
        if hasattr(keep, "close"):
            keep.close()
    base = results["variants"]["relink"]["ns_per_call"]
    packed = results["variants"]["relink+hotpack"]["ns_per_call"]
    results["speedup_vs_relink"] = round(base / packed, 3) if packed else None
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{args.functions} functions (one per page), {args.hot} hot, "
              f"{args.iters} iterations; pid {os.getpid()}")
        for kind, r in results["variants"].items():
            print(f"  {kind:<16} {r['ns_per_call']:8.2f} ns/call   {r['perf']}")
            if "huge" in r:
                print(f"  {'':<16} hot arena {r['hot_arena_bytes']} bytes at "
                      f"{r['hot_arena_address']}: {r['huge']}")
        print(f"  speed-up of hot packing over relink.load: {results['speedup_vs_relink']}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
