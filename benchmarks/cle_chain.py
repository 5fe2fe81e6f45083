"""T6: angr's CLE on the same chain, side by side with relink.

Run: ``python benchmarks/cle_chain.py [--rounds 10] [--quick] [--json out.json]``.
CLE (``pip install cle 'bitstring<5'``) is often kept out of the main environment (it
pins old dependencies), so the CLE side runs in a child interpreter: the one named by
``$RELINK_BENCH_CLE_PYTHON``, else this interpreter if it can ``import cle``, else
``/tmp/cle-venv/bin/python``. When none has CLE the script says so and exits 0.

Both sides load leaf -> middle -> base and are timed by thread CPU time, medians:
relink in this process (load + close, as T1), CLE in the child as
``cle.Loader(leaf, auto_load_libs=False, force_load_libs=[middle, base])`` (the same
three objects; CLE stubs libc imports) and ``auto_load_libs=True`` (CLE's default, which
also loads the host libc and ld.so). The expectation (issue 8): relink >= 200x faster.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import _common

import relink
from relink.bench import Progress, Result, interleave
from relink.demo import build_chain

CHILD = r"""
import json, statistics, sys, time
import cle
d, rounds = sys.argv[1], int(sys.argv[2])
leaf, mid, base = (f"{d}/lib{n}.so" for n in ("leaf", "middle", "base"))
def forced():
    return cle.Loader(leaf, auto_load_libs=False, force_load_libs=[mid, base])
def auto():
    return cle.Loader(leaf, auto_load_libs=True, ld_path=[d])
out = {"cle_version": cle.__version__}
for name, fn in (("forced", forced), ("auto", auto)):
    ld = fn()  # warm-up
    out[name + "_objects"] = [o.binary_basename for o in ld.all_objects]
    samples = []
    for _ in range(rounds):
        t0 = time.thread_time()
        fn()
        samples.append(time.thread_time() - t0)
    out[name + "_us"] = statistics.median(samples) * 1e6
print(json.dumps(out))
"""

INSTALL = "pip install cle 'bitstring<5' (or set RELINK_BENCH_CLE_PYTHON to a Python that has it)"


def cle_python(candidates: list[str | None] | None = None) -> str | None:
    """The first interpreter (of `candidates`, default: $RELINK_BENCH_CLE_PYTHON, this
    one, /tmp/cle-venv) that can import cle, or None."""
    if candidates is None:
        candidates = [os.environ.get("RELINK_BENCH_CLE_PYTHON"), sys.executable,
                      "/tmp/cle-venv/bin/python"]
    for py in candidates:
        if py and Path(py).exists():
            ok = subprocess.run([py, "-c", "import cle"], capture_output=True).returncode == 0
            if ok:
                return py
    return None


def bench_cle(rounds: int = 10, progress: Progress = _common.progress,
              python: str | None = None, candidates: list[str | None] | None = None
              ) -> tuple[list[Result], dict[str, object]]:
    """([CLE forced, CLE auto] results, facts); ([], {"cle": "not installed ..."}) if
    no interpreter has CLE (`python`, else the first of `candidates` that has it)."""
    py = python or cle_python(candidates)
    if py is None:
        return [], {"cle": f"not installed -- {INSTALL}"}
    chain = build_chain()
    leaf = chain / "libleaf.so"

    def rl(i: int) -> None:
        relink.load(leaf).close()

    rl(0)
    t = interleave({"relink": rl}, max(rounds * 10, 50), progress=progress,
                   label="T6 relink chain")
    relink_us = statistics.median(t["relink"]) * 1e6
    progress("T6 CLE (child process)", 0, 1)
    proc = subprocess.run([py, "-c", CHILD, str(chain), str(rounds)], capture_output=True,
                          text=True)
    progress("T6 CLE (child process)", 1, 1)
    if proc.returncode:
        raise RuntimeError(f"the CLE child failed ({py}):\n{proc.stderr.strip()[-2000:]}")
    cle = json.loads(proc.stdout.strip().splitlines()[-1])
    facts = {"cle": f"CLE {cle['cle_version']} in {py}",
             "CLE objects (forced)": ", ".join(cle["forced_objects"]),
             "CLE objects (auto)": ", ".join(cle["auto_objects"])}
    target = 1 / 200
    return [
        Result("chain: relink vs CLE (same 3 objects)", relink_us, cle["forced_us"],
               "cle.Loader force_load_libs", target, "T6", extra={"rounds": rounds}),
        Result("chain: relink vs CLE (auto_load_libs)", relink_us, cle["auto_us"],
               "cle.Loader auto_load_libs", None, "T6", extra={"rounds": rounds}),
    ], facts


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--python", help="interpreter that has CLE installed")
    a = p.parse_args()
    results, facts = bench_cle(2 if a.quick else a.rounds, python=a.python)
    for r in results:
        facts[f"relink is faster than {r.baseline} by"] = f"{1 / r.ratio:.0f}x"
    _common.report("T6 CLE side by side", results, a.json, facts)


if __name__ == "__main__":
    main()
