#!/usr/bin/env python3
"""Fuzz relink's parsing and non-executing load paths (issue 9).

Usage::

    python scripts/fuzz.py --execs 1000000 --workers 1 --coverage --out fuzz-out
    python scripts/fuzz.py --seconds 60                       # a quick look
    python scripts/fuzz.py --replay fuzz-out/findings/*.elf   # re-run saved findings

Each execution mutates an input from the corpus (seeds from `fuzz_seeds`, plus mutants
that produced a behaviour not seen before) with the structure-aware `fuzz_mutate.Mutator`
and runs it through one target of `fuzz_targets.Targets`, picked by weight: ELF parsing
and all its tables, ``relink info``, ``relink deps``, scan, loading into a `BufferMapper`,
object loading (``--replay`` runs every target). The contract under test:

* the only exceptions that escape are `RelinkError` subclasses;
* nothing hangs (a per-execution alarm turns a hang into a finding);
* the interpreter never dies (workers are separate processes; a dead worker's current
  input is kept through a shared memory slot and saved as a ``crash`` finding);
* nothing maps executable host memory or runs target code (`fuzz_targets.guards`);
* file descriptors and mappings do not leak (checked every ``--check-every`` executions).

Findings are saved as ``<out>/findings/<kind>-<hash>.elf`` with a ``.txt`` traceback,
deduplicated by (exception type, innermost relink frame). Workers are separate processes
so ``--workers 1`` keeps the run on one core. Exit status: 0 clean, 1 findings.
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import multiprocessing as mp
import os
import random
import re
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fuzz_mutate import Mutator  # noqa: E402
from fuzz_seeds import REPO, Seed, load_seeds  # noqa: E402
from fuzz_targets import (  # noqa: E402
    ALL,
    WEIGHTS,
    SafetyViolation,
    Targets,
    guards,
    native_guards,  # noqa: E402
)

from relink.errors import RelinkError  # noqa: E402

__all__ = ["FuzzStats", "fuzz_loop", "main", "replay"]

# The code the fuzz targets can reach without executing anything (coverage is also
# reported for it alone: the native-only runtime — TLS, lazy binding, exec — is out of
# reach by design).
SURFACE = ["*/relink/elf/*", "*/relink/relocation/*", "*/relink/loader.py",
           "*/relink/memory/buffer.py", "*/relink/cli/info.py", "*/relink/cli/deps.py",
           "*/relink/linker/deps.py", "*/relink/plan/scan.py", "*/relink/object/*"]
SLOT = 8 << 20          # shared "current input" slot per worker (crash recovery)
CORPUS_MAX = 400        # interesting mutants kept per worker
MAX_RESTARTS = 50       # crashed workers replaced (each crash is saved as a finding)
MAX_INPUT = 4 << 20     # mutants larger than this are cut back


class FuzzTimeout(BaseException):
    """Raised by the per-execution alarm."""


class FuzzStats:
    """Counters of one run (merged across workers)."""

    def __init__(self) -> None:
        self.execs = 0
        self.outcomes: dict[str, int] = {}
        self.findings: dict[str, str] = {}  # key -> saved file (or traceback text)
        self.corpus = 0
        self.leaks: list[str] = []

    def merge(self, other: dict[str, Any]) -> None:
        self.execs += other["execs"]
        for k, v in other["outcomes"].items():
            self.outcomes[k] = self.outcomes.get(k, 0) + v
        self.findings.update(other["findings"])
        self.corpus += other["corpus"]
        self.leaks += other["leaks"]

    def as_dict(self) -> dict[str, Any]:
        return {"execs": self.execs, "outcomes": dict(self.outcomes),
                "findings": dict(self.findings), "corpus": self.corpus,
                "leaks": list(self.leaks)}


_NUM = re.compile(r"0x[0-9a-f]+|\d+")


def _signature(exc: BaseException | None) -> str:
    """A behaviour signature: outcome class plus the message with numbers removed."""
    if exc is None:
        return "ok"
    what = getattr(exc, "what", None) or getattr(exc, "op", None) or ""
    msg = _NUM.sub("N", getattr(exc, "message", str(exc)))[:80]
    return f"{type(exc).__name__}|{what}|{msg}"


def _finding_key(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if "/relink/" in f.filename] or list(tb)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__}@{where}"


def _resources() -> tuple[int, int]:
    """(open fds, /proc/self/maps entries) of this process."""
    fds = len(os.listdir("/proc/self/fd"))
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    return fds, maps


def fuzz_loop(seeds: list[Seed], *, execs: int, seed: int = 0, seconds: float | None = None,
              out: Path | None = None, slot: mmap.mmap | None = None, timeout: float = 10.0,
              check_every: int = 5000, report: Any = None,
              targets: tuple[str, ...] = ALL) -> FuzzStats:
    """Run `execs` executions in this process and return the statistics.

    Args:
        seeds: the starting corpus.
        execs: number of executions (mutants) to run.
        seed: RNG seed (a run is reproducible for a given seed and corpus).
        seconds: optional wall-clock budget, whichever ends first.
        out: where findings are written (None: kept in memory only).
        slot: shared memory that receives each input before it runs (crash recovery).
        timeout: seconds one execution may take before it is a ``timeout`` finding.
        check_every: executions between fd / mapping leak checks.
        report: callable receiving a stats dict every `check_every` executions.
        targets: which targets to run (unavailable ones are skipped).
    """
    with native_guards() if "native" in targets else guards():
        return _fuzz_loop(seeds, execs=execs, seed=seed, seconds=seconds, out=out, slot=slot,
                          timeout=timeout, check_every=check_every, report=report,
                          targets=targets)


def _fuzz_loop(seeds: list[Seed], *, execs: int, seed: int, seconds: float | None,
               out: Path | None, slot: mmap.mmap | None, timeout: float, check_every: int,
               report: Any, targets: tuple[str, ...]) -> FuzzStats:
    rng = random.Random(seed)
    mut = Mutator(rng)
    tg = Targets(targets)
    names = list(tg.available)
    weights = [WEIGHTS.get(n, 1) for n in names]
    stats = FuzzStats()
    corpus: list[bytes] = [d for _n, d in seeds]
    base_corpus = len(corpus)
    added = 0
    seen: set[str] = set()
    small = [d for d in corpus if len(d) < 200_000] or corpus
    objects = [d for d in corpus if d[16:18] == b"\x01\x00" or d[:8] == b"!<arch>\n"]
    deadline = time.monotonic() + seconds if seconds else None
    findings_dir = out / "findings" if out else None
    if findings_dir:
        findings_dir.mkdir(parents=True, exist_ok=True)

    def on_alarm(signum: int, frame: Any) -> None:
        raise FuzzTimeout(f"execution took longer than {timeout}s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    baseline: tuple[int, int] | None = None
    try:
        for n in range(execs):
            if deadline is not None and n % 64 == 0 and time.monotonic() > deadline:
                break
            # Favour small inputs: large ones (libc) are slow and rarely add new paths.
            which = rng.choices(names, weights)[0]
            pool = corpus if rng.random() < 0.5 else small
            if which == "object" and objects and rng.random() < 0.8:
                pool = objects  # mutants of .o files, not of shared objects, mostly
            parent = rng.choice(pool)
            data = mut.mutate(parent, small)[:MAX_INPUT] if rng.random() < 0.97 else parent
            if slot is not None:
                slot[:8] = len(data).to_bytes(8, "little")
                slot[8:8 + len(data)] = data
            variant = rng.getrandbits(3)
            exc: BaseException | None = None
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                tg.run(data, variant, which)
            except RelinkError as e:
                exc = e
            except (FuzzTimeout, SafetyViolation, Exception) as e:
                exc = e
                key = _finding_key(e)
                if key not in stats.findings:
                    stats.findings[key] = _save(findings_dir, key, data, e, which)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            sig = f"{which}|{_signature(exc)}"
            outcome = f"{which}:{type(exc).__name__ if exc is not None else 'ok'}"
            stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
            if sig not in seen:
                seen.add(sig)
                added += 1
                if len(corpus) - base_corpus < CORPUS_MAX:
                    corpus.append(data)
                else:  # full: new behaviour replaces a random earlier mutant
                    corpus[rng.randrange(base_corpus, len(corpus))] = data
                if data[16:18] == b"\x01\x00" and len(objects) < CORPUS_MAX:
                    objects.append(data)
                if len(data) < 200_000:
                    if len(small) < CORPUS_MAX + base_corpus:
                        small.append(data)
                    else:
                        small[rng.randrange(len(small))] = data
            stats.execs += 1
            if check_every and (n + 1) % check_every == 0:
                now = _resources()
                if baseline is None:
                    baseline = now
                elif now[0] > baseline[0] + 4 or now[1] > baseline[1] + 64:
                    stats.leaks.append(f"after {n + 1} execs: fds/maps {baseline} -> {now}")
                    baseline = now
                if report is not None:
                    stats.corpus, added = added, 0
                    report(stats.as_dict())
                    stats = _reset_counts(stats)
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        tg.close()
    stats.corpus = added
    return stats


def _reset_counts(stats: FuzzStats) -> FuzzStats:
    fresh = FuzzStats()
    fresh.findings = stats.findings  # keep dedup state; counts are reported as deltas
    return fresh


def _save(findings_dir: Path | None, key: str, data: bytes, exc: BaseException,
          target: str = "") -> str:
    text = f"{key} (target {target})\n" + "".join(traceback.format_exception(exc))
    if findings_dir is None:
        return text
    h = hashlib.sha256(data).hexdigest()[:16]
    kind = "timeout" if isinstance(exc, FuzzTimeout) else "exception"
    path = findings_dir / f"{kind}-{h}.elf"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(text)
    return str(path)


# -- multi-process driver ---------------------------------------------------------------

def _worker(wid: int, args: dict[str, Any], queue: Any, slot_path: str) -> None:
    os.nice(5)  # the team's tests come first on a shared machine
    import logging

    logging.disable(logging.WARNING)  # malformed inputs make relink warn, by design
    cov = None
    if args["coverage"]:
        import coverage

        cov = coverage.Coverage(data_file=str(Path(args["out"]) / ".coverage"),
                                data_suffix=f"w{wid}", source=["relink"], branch=False)
        cov.start()
    with open(slot_path, "r+b") as f:
        slot = mmap.mmap(f.fileno(), SLOT)
    seeds = load_seeds()

    def report(d: dict[str, Any]) -> None:
        queue.put(("stats", wid, d))

    try:
        stats = fuzz_loop(seeds, execs=args["execs"], seed=args["seed"] * 1000 + wid,
                          seconds=args["seconds"], out=Path(args["out"]), slot=slot,
                          timeout=args["timeout"], check_every=args["check_every"],
                          report=report, targets=args["targets"])
        queue.put(("stats", wid, stats.as_dict()))
    finally:
        if cov is not None:
            cov.stop()
            cov.save()
        queue.put(("done", wid, None))


def run_workers(args: argparse.Namespace) -> FuzzStats:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    per = -(-args.execs // args.workers)
    total = FuzzStats()
    procs: dict[int, Any] = {}
    slots: dict[int, str] = {}
    wargs: dict[str, Any] = {
             "execs": per, "seed": args.seed, "seconds": args.seconds, "out": str(out),
             "timeout": args.timeout, "check_every": args.check_every,
             "coverage": args.coverage,
             "targets": ("native",) if args.native else ALL}
    reported: dict[int, int] = {}
    restarts = 0

    def spawn(wid: int, execs: int, seed: int) -> None:
        with open(slots[wid], "wb") as f:
            f.truncate(SLOT)
        p = ctx.Process(target=_worker, args=(wid, {**wargs, "execs": execs, "seed": seed},
                                              queue, slots[wid]), daemon=True)
        p.start()
        procs[wid] = p

    for wid in range(args.workers):
        slots[wid] = str(out / f".slot{wid}")
        reported[wid] = 0
        spawn(wid, per, args.seed)
    start = time.monotonic()
    done: set[int] = set()
    last = 0.0
    while len(done) < len(procs):
        try:
            kind, wid, payload = queue.get(timeout=5)
        except Exception:
            kind, wid, payload = "poll", -1, None
        if kind == "stats":
            total.merge(payload)
            reported[wid] += payload["execs"]
        elif kind == "done":
            done.add(wid)
        for w, p in list(procs.items()):
            if w not in done and not p.is_alive() and p.exitcode not in (0, None):
                saved = _save_crash(out, slots[w])
                total.findings[f"crash:{Path(saved).stem}:exit{p.exitcode}"] = saved
                left = per - reported[w]
                if restarts < MAX_RESTARTS and left > 0:  # keep fuzzing past a crash
                    restarts += 1
                    spawn(w, left, args.seed + 7919 * restarts)
                else:
                    done.add(w)
        if time.monotonic() - last > 30:
            last = time.monotonic()
            rate = total.execs / max(time.monotonic() - start, 1e-9)
            print(f"[fuzz] {total.execs} execs, {rate:.0f}/s, findings {len(total.findings)},"
                  f" corpus +{total.corpus}", flush=True)
    for p in procs.values():
        p.join(timeout=10)
    return total


def _save_crash(out: Path, slot_path: str) -> str:
    with open(slot_path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    data = raw[8:8 + n]
    path = out / "findings" / f"crash-{hashlib.sha256(data).hexdigest()[:16]}.elf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def coverage_report(out: Path) -> str:
    """Combine the workers' coverage data; return the per-file line coverage table."""
    import io

    import coverage

    cov = coverage.Coverage(data_file=str(out / ".coverage"))
    if list(out.glob(".coverage.*")):  # workers' files not combined yet
        cov.combine(data_paths=[str(out)], strict=False)
        cov.save()
    cov.load()
    buf = io.StringIO()
    cov.report(file=buf, show_missing=False, ignore_errors=True)
    surface = io.StringIO()
    pct = cov.report(file=surface, include=SURFACE, ignore_errors=True)
    return (buf.getvalue() + f"\nfuzzed surface ({', '.join(SURFACE)}): {pct:.1f}% of lines"
            "\n" + surface.getvalue())


def replay(paths: list[str]) -> int:
    """Run saved inputs through every target once; print what escapes. Returns #bad."""
    with guards():
        return _replay(paths)


def _replay(paths: list[str]) -> int:
    tg = Targets()
    bad = 0
    for p in paths:
        data = Path(p).read_bytes()
        for variant in range(8):
            try:
                tg.run(data, variant)
            except RelinkError:
                pass
            except BaseException as e:  # noqa: BLE001 - report everything
                bad += 1
                print(f"{p} (variant {variant}): {_finding_key(e)}")
                traceback.print_exception(e)
                break
    tg.close()
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execs", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--check-every", type=int, default=5000)
    ap.add_argument("--out", default=str(REPO / ".fuzz-out"))
    ap.add_argument("--coverage", action="store_true", help="measure line coverage of relink")
    ap.add_argument("--native", action="store_true",
                    help="fuzz native loading (init=False, no target code runs) instead")
    ap.add_argument("--replay", nargs="+", metavar="FILE")
    args = ap.parse_args(argv)
    if args.replay:
        return 1 if replay(args.replay) else 0
    t0 = time.monotonic()
    stats = run_workers(args)
    elapsed = time.monotonic() - t0
    print(f"\nexecutions: {stats.execs} in {elapsed:.0f}s "
          f"({stats.execs / max(elapsed, 1e-9):.0f}/s, {args.workers} worker(s))")
    per_target: dict[str, int] = {}
    for k, v in stats.outcomes.items():
        per_target[k.split(":")[0]] = per_target.get(k.split(":")[0], 0) + v
    print("executions per target:", ", ".join(f"{k}={v}" for k, v in sorted(per_target.items())))
    print("outcomes:", ", ".join(f"{k}={v}" for k, v in sorted(stats.outcomes.items(),
                                                               key=lambda kv: -kv[1])))
    print(f"new behaviours (corpus additions): {stats.corpus}")
    print(f"leak checks: {'clean' if not stats.leaks else stats.leaks}")
    print(f"findings: {len(stats.findings)}")
    for key, where in sorted(stats.findings.items()):
        print(f"  {key}: {where.splitlines()[0] if where else ''}")
    if args.coverage:
        print("\ncoverage of relink (lines):")
        print(coverage_report(Path(args.out)))
    return 1 if stats.findings or stats.leaks else 0


if __name__ == "__main__":
    sys.exit(main())
