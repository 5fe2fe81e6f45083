"""Objects: from a ``.o`` / ``.a`` to a callable function, relink vs ``ld -shared`` + dlopen.

Run: ``python benchmarks/objects.py [--rounds 15] [--quick] [--json out.json]``.
relink links the object (or the needed members of an archive) straight into memory;
the baseline is what one does without relink: ``ld -shared`` into a temporary file, then
``ctypes.CDLL`` (a fresh SONAME-free file every round, so glibc cannot reuse a loaded
copy) and the same call. Medians of interleaved rounds; the objects are compiled once,
outside the timing. (Debian's non-PIC static archives such as libz.a cannot go through
``ld -shared`` at all; relink loads them — see tests/object/test_obj_realworld.py.)
"""

from __future__ import annotations

import ctypes
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import _common

import relink
from relink.bench import Result

SOURCE = """
#include <string.h>
static int table[256];
int checksum(const char *s) { int h = 0; while (*s) h = h * 31 + table[(unsigned char)*s++];
                              return h + (int)strlen(s); }
__attribute__((constructor)) static void init(void) { for (int i = 0; i < 256; i++)
                                                       table[i] = i * 7 + 1; }
"""


def _time(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e6


def with_relink(inputs: list[str], func: str) -> None:
    m = relink.load_object(inputs, undefined=[func])
    m.function(func, ctypes.c_void_p, ctypes.c_char_p)(b"x")
    m.close()


def with_ld(inputs: list[str], func: str, so: Path, ld_extra: list[str]) -> None:
    subprocess.run(["ld", "-shared", "-o", str(so), *ld_extra, *inputs], check=True)
    f = getattr(ctypes.CDLL(str(so)), func)
    f.restype, f.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    f(b"x")


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    a = p.parse_args()
    rounds = 3 if a.quick else a.rounds
    tmp = Path(tempfile.mkdtemp(prefix="relink-bench-obj-"))
    (tmp / "c.c").write_text(SOURCE)
    obj = tmp / "c.o"
    subprocess.run(["gcc", "-O2", "-fPIC", "-c", str(tmp / "c.c"), "-o", str(obj)], check=True)
    cases: list[tuple[str, list[str], str, list[str]]] = [
        ("small .o -> checksum()", [str(obj)], "checksum", [])]
    results = []
    for label, inputs, func, ld_extra in cases:
        mine: list[float] = []
        theirs: list[float] = []
        for r in range(rounds):
            order = [(mine, partial(with_relink, inputs, func)),
                     (theirs, partial(with_ld, inputs, func, tmp / f"b{r}.so", ld_extra))]
            for sink, fn in (order if r % 2 else order[::-1]):
                sink.append(_time(fn))
            _common.progress(label, r + 1, rounds)
        results.append(Result(label, statistics.median(mine), statistics.median(theirs),
                              "ld -shared + ctypes.CDLL"))
    _common.report("Objects to callables", results, a.json)


if __name__ == "__main__":
    main()
