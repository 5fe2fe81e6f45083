#!/usr/bin/env python3
"""Full-size concurrency and resource runs of issue 9 (the test suite runs smaller ones).

    python scripts/fuzz_stress.py [--ops 10000] [--threads 8] [--cycles 10000]

* 8 threads x `--ops` load/call/close operations on distinct and identical TLS-using
  libraries, in one LinkContext, in one context per thread, and as plain `relink.load`
  calls (a context per load; repeated roots replay load templates)
  (tests/robustness/stress.py); then the TLS barrier check in the first two modes;
* `--cycles` single-thread load/close cycles, reporting /proc/self/maps entries, fds,
  memfds and RSS after a 500-cycle warm-up and at the end.

Prints the measured numbers; exit status 1 on any error, deadlock or growth.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO / "src", REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import relink  # noqa: E402
from robustness.conftest import FIXTURES, Snapshot  # noqa: E402
from robustness.stress import run_stress, tls_barrier  # noqa: E402
from support.build import build_shared  # noqa: E402


def _counts() -> tuple[int, int, int, int]:
    snap = Snapshot.take()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return len(snap.maps), len(snap.fds), snap.memfds, rss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--cycles", type=int, default=10_000)
    args = ap.parse_args(argv)
    src = (FIXTURES / "tlsrw.c").read_text()
    distinct = [build_shared(f"rb_tls_{n}", src, group="robustness", cflags=[f"-DNAME={n}"])
                for n in "abcd"]
    shared = build_shared("rb_tls_shared", src, group="robustness")
    bad = 0
    for mode in ("shared", "separate", "plain"):
        r = run_stress(distinct, shared, threads=args.threads, ops=args.ops, mode=mode)
        print(f"stress {mode:8s}: {r.ops} ops by {args.threads} threads in {r.seconds:.1f}s "
              f"({r.ops / max(r.seconds, 1e-9):.0f} ops/s), errors {len(r.errors)}, "
              f"deadlock {r.deadlocked}")
        for e in r.errors[:10]:
            print("   ", e)
        bad += bool(r.errors or r.deadlocked or r.ops != args.ops)
        if mode == "plain":
            continue  # (the barrier check holds modules of one or per-thread contexts)
        problems, bases = tls_barrier(shared, threads=args.threads, mode=mode)
        print(f"tls barrier {mode:8s}: {len(bases)} module copies, problems {problems}")
        bad += bool(problems)
    seed_src = {"seedlib.c": (FIXTURES / "seedlib.c").read_text(),
                "seedlib.map": (FIXTURES / "seedlib.map").read_text()}
    lib = build_shared("rb_seed", seed_src, soname="librbseed.so",
                       ldflags=["-Wl,--version-script=seedlib.map"], group="robustness")
    data = lib.read_bytes()
    ctx = relink.LinkContext("cycles")
    warm = None
    for i in range(args.cycles):
        ctx.load(lib if i % 2 else data, name="librbseed.so").close()
        if i + 1 == min(500, args.cycles):
            warm = _counts()
    end = _counts()
    assert warm is not None
    print(f"cycles: {args.cycles} load/close; after warm-up maps/fds/memfds/RSS = "
          f"{warm[0]}/{warm[1]}/{warm[2]}/{warm[3] >> 10} KiB, at the end "
          f"{end[0]}/{end[1]}/{end[2]}/{end[3] >> 10} KiB")
    bad += end[1] != warm[1] or end[2] != warm[2] or abs(end[0] - warm[0]) > 8 \
        or end[3] - warm[3] > 8 << 20
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
