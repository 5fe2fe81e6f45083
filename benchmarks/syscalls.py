"""System calls per chain load + call + close: relink vs ctypes.CDLL (needs strace).

Run: ``python benchmarks/syscalls.py [--loads 20] [--json out.json]``.
A child process warms both loaders up, then strace records only the stretch between two
marker calls (a stat of a path that does not exist) around `--loads` load + call + close
cycles of one side. Reported: system calls per cycle, by name. Kernel work is not where
relink's time goes (issue 8, feasibility §3): this shows it makes fewer calls than ld.so,
which probes hwcaps directories.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

from relink.demo import build_chain, uniquify

CHILD = r"""
import ctypes, os, sys
sys.path.insert(0, sys.argv[4])
import relink
from relink.runtime.libc import dlclose
side, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def once():
    if side == "relink":
        m = relink.load(path); assert m.function("leaf_value", ctypes.c_int)() == 3; m.close()
    else:
        lib = ctypes.CDLL(path); assert lib.leaf_value() == 3; dlclose(lib._handle)
for _ in range(5):
    once()
try: os.stat("/relink-syscalls-start")
except OSError: pass
for _ in range(n):
    once()
try: os.stat("/relink-syscalls-end")
except OSError: pass
"""
NAME = re.compile(r"^(?:\d+\s+)?([a-z_0-9]+)\(")


def count(side: str, path: str, loads: int) -> collections.Counter[str]:
    """System calls by name per cycle for one side."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "trace"
        subprocess.run(["strace", "-f", "-o", str(log), sys.executable, "-c", CHILD, side,
                        path, str(loads), str(_common.ROOT / "src")], check=True,
                       capture_output=True)
        counts: collections.Counter[str] = collections.Counter()
        inside = False
        for line in log.read_text().splitlines():
            if "/relink-syscalls-start" in line:
                inside = True
                continue
            if "/relink-syscalls-end" in line:
                break
            if inside and (m := NAME.match(line)):
                counts[m.group(1)] += 1
    return counts


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--loads", type=int, default=20)
    a = p.parse_args()
    if shutil.which("strace") is None:
        print("strace is not installed (apt-get install strace); nothing measured")
        return
    loads = 3 if a.quick else a.loads
    leaf = str(build_chain() / "libleaf.so")
    with tempfile.TemporaryDirectory(prefix="relink-sys-") as tmp:
        copy = str(uniquify(build_chain(suffix="_0000"), Path(tmp), "sysc"))
        rel = count("relink", leaf, loads)
        dl = count("dlopen", copy, loads)
    names = sorted(set(rel) | set(dl), key=lambda k: -(rel[k] + dl[k]))
    print(f"system calls per chain load + call + close ({loads} cycles, strace -f)")
    print(f"{'syscall':<18} {'relink':>8} {'dlopen':>8}")
    for k in names:
        print(f"{k:<18} {rel[k] / loads:>8.1f} {dl[k] / loads:>8.1f}")
    tr, td = sum(rel.values()) / loads, sum(dl.values()) / loads
    print(f"{'total':<18} {tr:>8.1f} {td:>8.1f}")
    if a.json:
        import json

        Path(a.json).write_text(json.dumps({
            "machine": _common.machine(), "loads": loads,
            "relink": {k: v / loads for k, v in rel.items()},
            "dlopen": {k: v / loads for k, v in dl.items()},
            "total": {"relink": tr, "dlopen": td}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
