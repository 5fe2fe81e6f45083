"""Side-by-side measurements against ctypes.CDLL (the system's dlopen), in one run.

Used by ``relink bench`` and the scripts in ``benchmarks/`` (issue 8, targets T1-T8;
BENCHMARKS.md has the figures). Sits on top of the whole pipeline: it only calls the
public API (``relink.load``, ``Module.symbol/function/close``) and libc through ctypes.

Method, the same for every comparison:

- both sides run in the same process (or, for start-up, as child processes of the same
  run), alternating round by round with a rotating order, and the figure is the median;
- in-process rounds are timed as CPU time of this thread (user + system, so the loaders'
  system calls count): on a shared machine that is far steadier than wall time, and both
  sides pay the same way; child processes are timed by their rusage CPU time;
- the dlopen side never times a refcount bump: glibc reuses a loaded object whose path or
  SONAME matches, so every library that may already be loaded is dlopened as a fresh
  copy with a unique same-length SONAME (`soname_copy`), and the chain loaded "from the
  same files" is a private copy nothing else in the process has open.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Result", "bench_big_library", "bench_chain_load", "bench_library",
           "bench_lookup", "bench_processes", "build_many_relocs", "format_table",
           "import_profile", "interleave", "mapped_paths", "relocation_counts", "run_all",
           "soname_copy"]

Progress = Callable[[str, int, int], None]
clock = time.thread_time


@dataclass
class Result:
    """One comparison: medians in microseconds, relink / baseline, and the target.

    `target` is a ratio bound (relink / baseline) unless `absolute` is set, in which case
    it is a bound in microseconds on `relink_us` itself (T7: start-up cost).
    """

    name: str
    relink_us: float
    baseline_us: float
    baseline: str
    target: float | None = None
    target_id: str = ""
    absolute: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    unit: str = "us"  # of relink_us / baseline_us: "us", or e.g. "maps", "KiB" (T8)

    @property
    def ratio(self) -> float:
        return self.relink_us / self.baseline_us if self.baseline_us > 0 else float("inf")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return (self.relink_us if self.absolute else self.ratio) <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.target_id, "name": self.name, "relink_us": round(self.relink_us, 3),
                "baseline_us": round(self.baseline_us, 3), "baseline": self.baseline,
                "ratio": round(self.ratio, 3), "target": self.target,
                "target_kind": self.unit if self.absolute else "ratio", "met": self.met,
                "unit": self.unit, "extra": self.extra}


def _noop(label: str, done: int, total: int) -> None:
    return None


_GC_EVERY = 32


def interleave(sides: Mapping[str, Callable[[int], object]], rounds: int, *,
               progress: Progress = _noop, label: str = "",
               before: Callable[[int], None] | None = None,
               after: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Run every side once per round, rotating the order; per-side CPU seconds per round.

    `before(i)` / `after(i)` run untimed around round `i` (making / removing copies).
    The collector is off while timing; it runs off the clock every `_GC_EVERY` rounds
    (not every round: a full collection evicts the CPU caches, which would time cold
    starts, and costs the Python side more than the C side).
    """
    names = list(sides)
    out: dict[str, list[float]] = {n: [] for n in names}
    step = max(1, rounds // 50)
    for i in range(rounds):
        if before is not None:
            before(i)
        if i % _GC_EVERY == 0:
            gc.collect()
        gc.disable()
        try:
            for k in range(len(names)):
                name = names[(i + k) % len(names)]
                fn = sides[name]
                t0 = clock()
                fn(i)
                out[name].append(clock() - t0)
        finally:
            gc.enable()
        if after is not None:
            after(i)
        if (i + 1) % step == 0 or i + 1 == rounds:
            progress(label, i + 1, rounds)
    return out


def _median_us(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1e6


def mapped_paths() -> set[str]:
    """Paths of the files mapped in this process (from /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return {p for line in f if len(parts := line.split(None, 5)) == 6
                and (p := parts[5].strip()).startswith("/")}


def _dlclose(handle: int) -> None:
    from relink.runtime.libc import dlclose

    if dlclose(handle) != 0:
        raise RuntimeError("dlclose failed")


# --- T1: the chain, load + call + close repeated ----------------------------------------

def _call_leaf(fn: Any) -> None:
    if fn() != 3:
        raise RuntimeError("leaf_value() did not return 3: the benchmark loaded a wrong chain")


def bench_chain_load(rounds: int = 300, progress: Progress = _noop) -> list[Result]:
    """T1: leaf -> middle -> base, load + call + close, relink vs ctypes.CDLL + dlclose.

    The dlopen side loads the same private copy every round (dlclose unloads the chain,
    checked at the end) and, for reference, a fresh uniquely named copy per round.
    """
    import relink
    from relink.demo import build_chain, uniquify

    chain = build_chain()
    leaf = chain / "libleaf.so"
    data = leaf.read_bytes()
    resolver = relink.SearchPathResolver(fixed_dirs=(str(chain),))
    base = build_chain(suffix="_0000")
    c_int = ctypes.c_int

    def rl_file(i: int) -> None:
        m = relink.load(leaf)
        _call_leaf(m.function("leaf_value", c_int))
        m.close()

    def rl_bytes(i: int) -> None:
        m = relink.load(data, name="libleaf.so", resolver=resolver)
        _call_leaf(m.function("leaf_value", c_int))
        m.close()

    with tempfile.TemporaryDirectory(prefix="relink-bench-") as tmp:
        same = str(uniquify(base, Path(tmp) / "same", "same"))
        copies = [str(uniquify(base, Path(tmp) / str(i), f"{i:04d}")) for i in range(rounds)]

        def dl(path: str) -> None:
            lib = ctypes.CDLL(path)
            _call_leaf(lib.leaf_value)
            _dlclose(lib._handle)

        sides = {"relink file": rl_file, "relink bytes": rl_bytes,
                 "dlopen same": lambda i: dl(same), "dlopen fresh": lambda i: dl(copies[i])}
        for fn in sides.values():  # warm imports and caches on every side
            fn(0)
        t = interleave(sides, rounds, progress=progress, label="T1 chain load")
        unloaded = not any(p.startswith(tmp) for p in mapped_paths())
    same_us, fresh_us = _median_us(t["dlopen same"]), _median_us(t["dlopen fresh"])
    extra = {"rounds": rounds, "dlopen_unloaded": unloaded, "clock": "thread CPU time"}
    return [
        Result("chain load+call+close (file)", _median_us(t["relink file"]), same_us,
               "CDLL+dlclose, same files", 1.0, "T1", extra=extra),
        Result("chain load+call+close (bytes)", _median_us(t["relink bytes"]), same_us,
               "CDLL+dlclose, same files", None, "T1", extra=extra),
        Result("chain (file) vs fresh copies", _median_us(t["relink file"]), fresh_us,
               "CDLL+dlclose, new SONAMEs", None, "T1", extra=extra),
    ]


# --- T3 / T4: one library, load + close, dlopen of unique SONAME copies ------------------

def soname_copy(data: bytes, soname: str, tag: str, dest: Path) -> Path:
    """Write `data` to `dest` with its SONAME replaced by a unique same-length name.

    The last ``len(tag)`` characters of the SONAME become `tag` in the dynamic string
    table (every NUL-delimited occurrence: DT_SONAME and the base version definition).
    """
    old = soname.encode()
    if len(tag) >= len(old):
        raise ValueError(f"tag {tag!r} is too long for SONAME {soname!r}")
    new = old[:len(old) - len(tag)] + tag.encode()
    patched = data.replace(b"\0" + old + b"\0", b"\0" + new + b"\0")
    if patched == data:
        raise ValueError(f"SONAME {soname!r} not found in the file's strings")
    dest.write_bytes(patched)
    return dest


def bench_library(path: str | os.PathLike[str], rounds: int = 100, *,
                  progress: Progress = _noop, name: str | None = None,
                  target: float | None = 2.0, target_id: str = "T4",
                  call: tuple[str, int] | None = None) -> Result:
    """relink.load + close of `path` vs CDLL + dlclose of a fresh SONAME copy per round.

    `call`: (function name, expected int result) called on both sides every round.
    """
    import relink
    from relink.elf import ElfFile

    src = Path(path)
    data = src.read_bytes()
    with ElfFile(src) as elf:
        soname = (elf.dynamic.soname if elf.dynamic else None) or src.name
    label = name or src.name

    def check(fn: Any) -> None:
        if call is not None:
            fn.restype = ctypes.c_int
            if fn() != call[1]:
                raise RuntimeError(f"{label}: {call[0]}() returned a wrong value")

    def rl(i: int) -> None:
        m = relink.load(src)
        if call is not None:
            check(m.function(call[0], ctypes.c_int))
        m.close()

    with tempfile.TemporaryDirectory(prefix="relink-bench-") as tmp:
        # A new path and SONAME every round: even a copy dlclose could not unload
        # (DF_1_NODELETE) is never matched again.
        def copy(i: int) -> Path:
            return Path(tmp) / f"{i:05d}.so"

        def make(i: int) -> None:
            soname_copy(data, soname, f"{i % 10000:04d}", copy(i))

        def drop(i: int) -> None:
            copy(i).unlink()

        def dl(i: int) -> None:
            lib = ctypes.CDLL(str(copy(i)))
            if call is not None:
                check(getattr(lib, call[0]))
            _dlclose(lib._handle)

        make(rounds)
        rl(rounds)
        dl(rounds)
        drop(rounds)
        t = interleave({"relink": rl, "dlopen": dl}, rounds, progress=progress,
                       label=f"{target_id} {label}", before=make, after=drop)
        unloaded = not any(p.startswith(tmp) for p in mapped_paths())
    return Result(f"{label} load+close", _median_us(t["relink"]), _median_us(t["dlopen"]),
                  "CDLL+dlclose, new SONAME", target, target_id,
                  extra={"rounds": rounds, "file": str(src), "size": len(data),
                         "dlopen_unloaded": unloaded})


def relocation_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """RELATIVE / symbol / other dynamic relocations and default exports of a library."""
    from relink.elf import ElfFile

    with ElfFile(path) as elf:
        tables, relr = elf.relocation_tables()
        rel = relative = 0
        for t in tables:
            for typ, sym in zip(t.types, t.syms):
                relative += typ == 8 and sym == 0  # R_X86_64_RELATIVE
                rel += sym != 0
        syms = elf.symbols
        exports = len(syms.exports) if syms is not None else 0
    return {"relative": relative + len(relr), "symbolic": rel, "exports": exports}


def build_many_relocs(relative: int = 20000, symbolic: int = 5000, exports: int = 2000,
                      directory: str | os.PathLike[str] | None = None) -> Path:
    """Compile (cached) ``libmany_0000.so`` for T3 and return its path.

    `exports` functions ``f_<i>`` returning i; a table of `relative` pointers into a
    static pool (R_X86_64_RELATIVE each); a table of `symbolic` pointers to the exported
    functions (R_X86_64_64 against a symbol each, as they are interposable). ``check()``
    returns ``exports - 1`` read through both tables.
    """
    from relink.demo import find_cc

    if exports < 1 or symbolic < 1 or relative < 1:
        raise ValueError("every count must be at least 1")
    lines = [f"static char pool[{relative}];"]
    lines += [f"int f_{i}(void) {{ return {i}; }}" for i in range(exports)]
    lines.append("char *const rel_table[] = {"
                 + ",".join(f"pool+{i}" for i in range(relative)) + "};")
    lines.append("int (*const sym_table[])(void) = {"
                 + ",".join(f"f_{i % exports}" for i in range(symbolic)) + "};")
    last = (symbolic - 1) % exports
    lines.append(f"int check(void) {{ return sym_table[{symbolic - 1}]() + {exports - 1}"
                 f" - {last} + (int)(rel_table[{relative - 1}] - pool) - {relative - 1}; }}")
    source = "\n".join(lines) + "\n"
    cc = find_cc()
    key = hashlib.sha256(f"{cc}\n{source}".encode()).hexdigest()[:12]
    if directory is None:
        directory = _cache_root() / f"bench-many-{key}"
    out = Path(directory) / "libmany_0000.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        c = Path(tmp) / "many.c"
        c.write_text(source)
        part = Path(tmp) / out.name
        cmd = [cc, "-shared", "-fPIC", "-O1", "-o", str(part), str(c),
               "-Wl,-soname,libmany_0000.so"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"building the T3 library failed: {' '.join(cmd)}\n"
                               f"{proc.stderr.strip()}")
        os.replace(part, out)  # atomic: a cached file is always complete
    return out


def bench_big_library(rounds: int = 100, progress: Progress = _noop, *,
                      relative: int = 20000, symbolic: int = 5000,
                      exports: int = 2000) -> list[Result]:
    """T3: the generated many-relocation library, load + call + close vs dlopen."""
    path = build_many_relocs(relative, symbolic, exports)
    r = bench_library(path, rounds, progress=progress, target=2.0, target_id="T3",
                      name=f"libmany {relative}rel+{symbolic}sym",
                      call=("check", exports - 1))
    r.extra["relocations"] = relocation_counts(path)
    return [r]


# --- T5: symbol lookup ------------------------------------------------------------------

def _per_op_us(stmt: str, env: dict[str, Any], n: int) -> float:
    timer = timeit.Timer(stmt, timer=clock, globals=env)
    return statistics.median(timer.repeat(repeat=7, number=n)) / n * 1e6


class _Floor:
    """The least a lookup method can cost in CPython: a call that does one dict get."""

    def __init__(self) -> None:
        self.cache: dict[object, object] = {"leaf_value": 1, ("leaf_value", ctypes.c_int): 1}

    def symbol(self, name: str) -> object:
        return self.cache.get(name)

    def function(self, name: str, restype: Any, *argtypes: Any) -> object:
        return self.cache.get((name, restype) if not argtypes else (name, restype, argtypes))


def bench_lookup(n: int = 20000, progress: Progress = _noop) -> list[Result]:
    """T5: Module.symbol hit / miss vs dlsym through ctypes; a second Module.function."""
    import relink
    from relink.demo import build_chain, uniquify
    from relink.runtime.libc import dlsym

    with tempfile.TemporaryDirectory(prefix="relink-bench-") as tmp:
        leaf = uniquify(build_chain(suffix="_0000"), Path(tmp), "look")
        m = relink.load(leaf)
        lib = ctypes.CDLL(str(leaf))
        env = {"sym": m.symbol, "fn": m.function, "c_int": ctypes.c_int, "lib": lib,
               "dlsym": dlsym, "h": lib._handle}
        m.function("leaf_value", ctypes.c_int)
        lib.leaf_value  # noqa: B018 - the attribute is now cached on the CDLL
        env["floor"] = _Floor()
        stmts = {"rel hit": 'sym("leaf_value")', "rel miss": 'sym("no_such_symbol")',
                 "dl hit": 'dlsym(h, b"leaf_value")', "dl miss": 'dlsym(h, b"no_such_symbol")',
                 "rel fn": 'fn("leaf_value", c_int)', "cdll attr": "lib.leaf_value",
                 "loop": "pass", "floor get": 'floor.symbol("leaf_value")',
                 "floor fn": 'floor.function("leaf_value", c_int)'}
        us: dict[str, float] = {}
        for k, (label, stmt) in enumerate(stmts.items()):
            us[label] = _per_op_us(stmt, env, n)
            progress("T5 lookup", k + 1, len(stmts))
        if m.symbol("leaf_value") is None or m.symbol("no_such_symbol") is not None:
            raise RuntimeError("Module.symbol answered wrongly")
        m.close()
        _dlclose(lib._handle)
    extra = {"n": n, "loop_overhead_us": round(us["loop"], 4),
             "floor_symbol_us": round(us["floor get"], 4),
             "floor_function_us": round(us["floor fn"], 4),
             "note": "per operation, loop overhead included on both sides"}
    return [
        Result("symbol lookup hit", us["rel hit"], us["dl hit"], "dlsym via ctypes", 0.2,
               "T5", extra=extra),
        Result("symbol lookup miss", us["rel miss"], us["dl miss"], "dlsym via ctypes", 0.1,
               "T5", extra=extra),
        Result("second Module.function()", us["rel fn"], us["cdll attr"],
               "cached CDLL attribute", 1.2, "T5", extra=extra),
    ]


# --- T2 / T7: fresh processes -----------------------------------------------------------

def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "relink"


def _child_env() -> dict[str, str]:
    import relink

    env = dict(os.environ)
    # Measure start-up as an installed package sees it: with compiled bytecode. (Some
    # environments set PYTHONDONTWRITEBYTECODE, which recompiles every module of every
    # child from source.) The .pyc files go to a cache directory, not the source tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(_cache_root() / "pycache")
    src = str(Path(relink.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _spawn(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `argv`; (child CPU seconds from rusage, wall seconds). Raises on failure."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        raise RuntimeError(f"benchmark child failed: {argv}\n{proc.stderr.strip()}")
    return usage.ru_utime + usage.ru_stime, wall


def bench_processes(runs: int = 40, progress: Progress = _noop) -> list[Result]:
    """T2 (first chain load in a fresh process) and T7 (``import relink``).

    Each figure is the median over runs of (command - ``python -c pass``) within the same
    round, child CPU time; rounds rotate the command order. Wall-time medians are kept in
    ``extra``.
    """
    from relink.demo import build_chain

    leaf = str(build_chain() / "libleaf.so")
    py = sys.executable
    cmds = {
        "pass": "pass",
        "import ctypes": "import ctypes",
        "import relink": "import relink",
        "relink load": f"import relink, ctypes; m = relink.load({leaf!r}); "
                       "f = m.function('leaf_value', ctypes.c_int)\n"
                       "if f() != 3: raise SystemExit('wrong result')",
        "ctypes load": f"import ctypes\nif ctypes.CDLL({leaf!r}).leaf_value() != 3: "
                       "raise SystemExit('wrong result')",
    }
    env = _child_env()
    argv = {k: [py, "-c", v] for k, v in cmds.items()}
    for k in cmds:
        _spawn(argv[k], env)  # warm the page cache and .pyc files
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    wall: dict[str, list[float]] = {k: [] for k in cmds}
    names = list(cmds)
    for i in range(runs):
        for j in range(len(names)):
            k = names[(i + j) % len(names)]
            c, w = _spawn(argv[k], env)
            cpu[k].append(c)
            wall[k].append(w)
        progress("T2/T7 processes", i + 1, runs)

    def delta(k: str, series: dict[str, list[float]]) -> float:
        return statistics.median(a - b for a, b in zip(series[k], series["pass"])) * 1e6

    extra = {"runs": runs, "clock": "child CPU time (rusage)", "bytecode": "cached .pyc",
             "pass_us": round(_median_us(cpu["pass"]), 1),
             "wall_delta_us": {k: round(delta(k, wall), 1) for k in cmds if k != "pass"}}
    return [
        Result("first chain load, fresh process", delta("relink load", cpu),
               delta("ctypes load", cpu), "python -c CDLL(leaf)", 3.0, "T2", extra=extra),
        Result("import relink (start-up cost)", delta("import relink", cpu),
               delta("import ctypes", cpu), "import ctypes", 30000.0, "T7", absolute=True,
               extra=extra),
    ]


def import_profile(runs: int = 5, top: int = 12, code: str = "import relink"
                   ) -> list[tuple[str, float, float]]:
    """``python -X importtime -c <code>``: (module, self us, cumulative us), the medians
    over `runs`, the `top` modules by self time (relink's own and what it pulls)."""
    line = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|\s+(.*)$")
    seen: dict[str, tuple[list[int], list[int]]] = {}
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                              env=_child_env(), capture_output=True, text=True, check=True)
        for row in proc.stderr.splitlines():
            if mt := line.match(row):
                s, c = seen.setdefault(mt.group(3).strip(), ([], []))
                s.append(int(mt.group(1)))
                c.append(int(mt.group(2)))
    rows = [(mod, float(statistics.median(s)), float(statistics.median(c)))
            for mod, (s, c) in seen.items()]
    return sorted(rows, key=lambda r: -r[1])[:top]


# --- the headline set and the table -----------------------------------------------------

def run_all(rounds: int = 300, progress: Progress = _noop, *, quick: bool = False
            ) -> list[Result]:
    """The headline comparisons: T1, T2, T3, T5, T7 (``quick``: few rounds)."""
    if quick:
        return (bench_chain_load(min(rounds, 40), progress)
                + bench_big_library(10, progress)
                + bench_lookup(2000, progress)
                + bench_processes(8, progress))
    return (bench_chain_load(rounds, progress) + bench_big_library(max(rounds // 3, 20),
                                                                   progress)
            + bench_lookup(progress=progress) + bench_processes(40, progress))


def _fmt_us(us: float, unit: str = "us") -> str:
    if unit != "us":
        return f"{us:.0f} {unit}" if abs(us) >= 100 else f"{us:.4g} {unit}"
    return f"{us / 1000:.2f}ms" if abs(us) >= 10000 else f"{us:.2f}us"


def _fmt_ratio(x: float) -> str:
    if x == float("inf"):
        return "-"  # the baseline is zero (e.g. dlopen keeps no fd open)
    return f"{x:.2f}x" if 0.1 <= x < 1000 else f"{x:.3g}x"


def format_table(results: Sequence[Result]) -> str:
    """A fixed-width table: id, benchmark, relink, baseline, ratio, target, verdict."""
    lines = [f"{'':3} {'benchmark':<36} {'relink':>10} {'baseline':>10} {'ratio':>7} "
             f"{'target':>8}  verdict  baseline is"]
    for r in results:
        if r.target is None:
            target = ""
        elif r.absolute:
            target = "<=" + _fmt_us(r.target, r.unit).replace(".00", "")
        else:
            target = f"<={r.target:.3g}x"
        verdict = {None: "", True: "ok", False: "MISSED"}[r.met]
        ratio = "" if r.absolute and r.unit != "us" else _fmt_ratio(r.ratio)
        lines.append(f"{r.target_id:3} {r.name:<36} {_fmt_us(r.relink_us, r.unit):>10} "
                     f"{_fmt_us(r.baseline_us, r.unit):>10} {ratio:>7} {target:>8}  "
                     f"{verdict:<7}  {r.baseline}")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, kernel, Python and libc: the context of a figure."""
    import os
    import platform

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(), "libc": " ".join(platform.libc_ver())}
