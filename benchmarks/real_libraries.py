"""T4: real distribution libraries (the ones tests/realworld loads), load + close.

Run: ``python benchmarks/real_libraries.py [--rounds 60] [--only libz.so.1,...] [--quick]
[--json out.json]``. Target: relink <= 2x ctypes.CDLL + dlclose, per library.

relink loads the installed file itself (its dependencies: the glibc family, libstdc++
and libraries the process already has come from the host, as dlopen would share them).
The dlopen side gets a fresh copy with a unique same-length SONAME every round: Python
itself may have the library loaded already (zlib, lzma, bz2, libcrypto via _ssl), and
dlopen of the installed path would then only bump a reference count. A library that is
not installed is reported as such (.ci/run installs them from Debian's packages).
"""

from __future__ import annotations

from pathlib import Path

import _common

from relink.bench import Progress, Result, bench_library

# tests/realworld (test_compression, test_sqlite, test_parsing, test_crypto,
# test_cxx_libraries): the root library each test loads.
SONAMES = ("libz.so.1", "libsqlite3.so.0", "liblzma.so.5", "libzstd.so.1", "libbz2.so.1.0",
           "libexpat.so.1", "libjson-c.so.5", "libxml2.so.2", "libcrypto.so.3",
           "libsodium.so.23", "libgmp.so.10", "libgmpxx.so.4", "libjsoncpp.so.25")
LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
            "/usr/lib")


def find(soname: str) -> Path | None:
    for d in LIB_DIRS:
        p = Path(d) / soname
        if p.exists():
            return p.resolve()
    return None


def bench_real_libraries(rounds: int = 60, progress: Progress = _common.progress,
                         sonames: tuple[str, ...] = SONAMES
                         ) -> tuple[list[Result], list[str]]:
    """One Result per installed library; the SONAMEs that are not installed."""
    results: list[Result] = []
    missing: list[str] = []
    for soname in sonames:
        path = find(soname)
        if path is None:
            missing.append(soname)
            continue
        results.append(bench_library(path, rounds, progress=progress, name=soname,
                                     target=2.0, target_id="T4"))
    return results, missing


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--only", help="comma-separated SONAMEs (default: all of tests/realworld)")
    a = p.parse_args()
    names = tuple(a.only.split(",")) if a.only else SONAMES
    results, missing = bench_real_libraries(5 if a.quick else a.rounds, sonames=names)
    extra = {"not installed": ", ".join(missing) or "none",
             "dlopen could not unload (copies stay mapped, e.g. DF_1_NODELETE)":
                 ", ".join(r.name.split()[0] for r in results
                           if not r.extra["dlopen_unloaded"]) or "none"}
    _common.report("T4 real libraries", results, a.json, extra)


if __name__ == "__main__":
    main()
