"""Multi-threaded load/close stress (issue 9 §4), shared by the test suite (small counts)
and scripts/fuzz_stress.py (the full counts).

`run_stress` starts N threads that each repeat: load a library (one of several distinct
files, or one file every thread shares), call into it — write a thread-specific value to
a TLS variable and read it back, bump a shared counter — and close it. Mode ``"shared"``
loads everything into one `LinkContext`; ``"separate"`` gives each thread its own.
`tls_barrier` has every thread hold the same library open at once, write its own TLS
value, wait for all, and read it back: values must stay per thread, and in one context
all threads must see the same module (one mapping), in separate contexts one each.
"""

from __future__ import annotations

import ctypes
import faulthandler
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import relink

__all__ = ["StressResult", "run_stress", "tls_barrier"]


@dataclass
class StressResult:
    ops: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    deadlocked: bool = False


def _call(mod: relink.Module, value: int) -> str | None:
    put = mod.function("tls_put", None, ctypes.c_long)
    take = mod.function("tls_take", ctypes.c_long)
    put(value)
    mod.function("bump", ctypes.c_long)()
    got = take()
    return None if got == value else f"TLS value {got} != {value} in {mod.name}"


def run_stress(libs: Sequence[Path], shared: Path, *, threads: int = 8, ops: int = 10_000,
               mode: str = "shared", seed: int = 0, timeout: float = 600.0) -> StressResult:
    """Run `ops` load/call/close operations spread over `threads` threads."""
    result = StressResult()
    # "plain": every operation a `relink.load(path)` of its own (a fresh context each,
    # the shared default linker: repeated roots replay their load templates).
    contexts = [relink.LinkContext(f"stress-{mode}-{i}") for i in range(threads)] \
        if mode in ("separate", "plain") else [relink.LinkContext(f"stress-{mode}")] * threads
    per = -(-ops // threads)
    lock = threading.Lock()
    start = threading.Barrier(threads)
    pool = list(libs) + [shared] * len(libs)  # half the loads hit the shared file

    def worker(tid: int) -> None:
        rng = random.Random(seed * 100 + tid)
        ctx = contexts[tid]
        start.wait()
        done = 0
        try:
            for i in range(per):
                path = rng.choice(pool)
                mod = relink.load(str(path)) if mode == "plain" else ctx.load(path)
                try:
                    problem = _call(mod, tid * 1_000_000 + i)
                finally:
                    mod.close()
                if problem:
                    with lock:
                        result.errors.append(f"thread {tid}: {problem}")
                done += 1
        except BaseException as exc:  # noqa: BLE001 - every failure is reported
            with lock:
                result.errors.append(f"thread {tid}: {type(exc).__name__}: {exc}")
        finally:
            with lock:
                result.ops += done

    ts = [threading.Thread(target=worker, args=(t,), name=f"stress-{t}", daemon=True)
          for t in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    deadline = t0 + timeout
    for t in ts:
        t.join(max(deadline - time.monotonic(), 0.1))
    result.seconds = time.monotonic() - t0
    if any(t.is_alive() for t in ts):
        result.deadlocked = True
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    for ctx in set(map(id, contexts)):
        c = next(x for x in contexts if id(x) == ctx)
        if len(c):
            result.errors.append(f"context {c} still holds {c.keys()}")
    return result


def tls_barrier(lib: Path, *, threads: int = 8, mode: str = "shared") -> tuple[list[str],
                                                                                set[int]]:
    """Every thread holds `lib` open at once; returns (problems, distinct module bases)."""
    contexts = [relink.LinkContext(f"tls-{mode}-{i}") for i in range(threads)] \
        if mode == "separate" else [relink.LinkContext(f"tls-{mode}")] * threads
    loaded = threading.Barrier(threads)
    written = threading.Barrier(threads)
    problems: list[str] = []
    bases: set[int] = set()
    lock = threading.Lock()

    def worker(tid: int) -> None:
        mod = contexts[tid].load(lib)
        try:
            with lock:
                bases.add(mod.base)
            loaded.wait(timeout=60)
            mod.function("tls_put", None, ctypes.c_long)(1000 + tid)
            written.wait(timeout=60)
            got = mod.function("tls_take", ctypes.c_long)()
            if got != 1000 + tid:
                with lock:
                    problems.append(f"thread {tid} read {got}, wrote {1000 + tid}")
        except BaseException as exc:  # noqa: BLE001
            with lock:
                problems.append(f"thread {tid}: {type(exc).__name__}: {exc}")
        finally:
            mod.close()

    ts = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    if any(t.is_alive() for t in ts):
        problems.append("deadlock: a thread did not finish")
    for c in {id(x): x for x in contexts}.values():
        if len(c):
            problems.append(f"context {c} still holds {c.keys()}")
    return problems, bases
