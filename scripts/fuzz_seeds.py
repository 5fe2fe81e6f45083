"""Seed corpus for scripts/fuzz.py: real ELF files to start mutating from.

Three sources, all produced or read at run time (nothing is checked in):

* gcc-built fixtures from ``tests/robustness/fixtures/*.c`` through the cached fixture
  compiler ``tests/support/build.py``: a shared object (RELATIVE / GLOB_DAT / JUMP_SLOT,
  TLS, symbol versions, init/fini) in three link flavours (GNU hash, SysV hash only,
  packed RELR relocations), a PIE and an ET_EXEC executable, a relocatable object and
  an archive of it;
* the system's own libraries read as bytes (libz, libc) — large, real tables;
* images from the test-only ELF writer ``tests/support/elfgen.py`` (exact layouts:
  RELR, versions, both hash tables, ELF32 i386, no section headers).

Every source is optional: a missing compiler or library only shrinks the corpus.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO / "src", REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

FIXTURES = REPO / "tests" / "robustness" / "fixtures"
SYSTEM_LIBS = ("libz.so.1", "libc.so.6")
_SYSTEM_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64")

Seed = tuple[str, bytes]

__all__ = ["FIXTURES", "Seed", "elfgen_seeds", "fixture_seeds", "load_seeds", "system_seeds"]


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def fixture_seeds() -> list[Seed]:
    """gcc-built shared objects, executables and an object file (empty without gcc)."""
    from support.build import (
        FixtureBuildError,
        build_archive,
        build_executable,
        build_object,
        build_shared,
        have_cc,
    )

    if not have_cc("gcc"):
        return []
    lib_src = {"seedlib.c": _fixture("seedlib.c"), "seedlib.map": _fixture("seedlib.map")}
    script = ["-Wl,--version-script=seedlib.map"]
    builders: list[tuple[str, Callable[[], Path]]] = [
        ("seedlib-gnu.so", lambda: build_shared("fzseed_gnu", lib_src, ldflags=script,
                                                soname="libfzseed.so")),
        ("seedlib-sysv.so", lambda: build_shared(
            "fzseed_sysv", lib_src, soname="libfzseed.so",
            ldflags=[*script, "-Wl,--hash-style=sysv", "-Wl,-z,lazy"])),
        ("seedlib-relr.so", lambda: build_shared(
            "fzseed_relr", lib_src, soname="libfzseed.so",
            ldflags=[*script, "-Wl,-z,pack-relative-relocs", "-Wl,-z,now"])),
        ("seedexe-pie", lambda: build_executable("fzseed_pie", _fixture("seedexe.c"))),
        ("seedexe-exec", lambda: build_executable("fzseed_exec", _fixture("seedexe.c"),
                                                  pie=False)),
        ("seedobj.o", lambda: build_object("fzseed_obj", _fixture("seedobj.c"),
                                           cflags=["-O1", "-fPIC"])),
    ]
    builders.append(("libseedobj.a", lambda: build_archive(
        "fzseed", [build_object("fzseed_obj", _fixture("seedobj.c"), cflags=["-O1", "-fPIC"])])))
    out: list[Seed] = []
    for name, build in builders:
        try:
            out.append((name, build().read_bytes()))
        except FixtureBuildError:
            continue  # e.g. an old linker without -z pack-relative-relocs
    return out


def system_seeds(names: tuple[str, ...] = SYSTEM_LIBS) -> list[Seed]:
    """The system's libraries, read as bytes (never loaded by the host)."""
    out: list[Seed] = []
    for name in names:
        for d in _SYSTEM_DIRS:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    out.append((name, f.read()))
                break
    return out


def elfgen_seeds() -> list[Seed]:
    """Exact images from the test ELF writer: RELR, versions, hashes, ELF32, no shdrs."""
    from support.elfgen import DylibWriter, SymbolDesc

    out: list[Seed] = []

    w = DylibWriter(soname="libgen1.so", needed=["libc.so.6"], relro=True)
    w.add_function("answer", b"\xb8\x2a\x00\x00\x00\xc3")
    w.add_object("counter", (7).to_bytes(8, "little"))
    w.add_reloc("GLOB_DAT", "answer")
    w.add_reloc("R64", "counter", addend=8)
    w.add_reloc("RELATIVE", rel_to="counter")
    w.add_reloc("JUMP_SLOT", "puts", table="plt")
    for _ in range(6):
        w.add_relr(rel_to="counter")
    w.add_version("GEN_1")
    w.add_symbol(SymbolDesc("versioned", section="text", version="GEN_1"))
    w.add_init_array("answer")
    out.append(("elfgen-basic.so", w.build().data))

    w = DylibWriter(soname="libgen2.so", gnu_hash=False, section_headers=False)
    w.add_object("table", bytes(64))
    for i in range(8):
        w.add_relr(rel_to="table", addend=i * 8)
    w.add_reloc("RELATIVE", rel_to="table")
    out.append(("elfgen-relr-sysv.so", w.build().data))

    w = DylibWriter(soname="libgen3.so", machine=3, elf_class=32, sysv_hash=False)
    w.add_function("f32", b"\xb8\x01\x00\x00\x00\xc3")
    w.add_object("d32", (5).to_bytes(4, "little"))
    w.add_reloc("RELATIVE", rel_to="d32")
    w.add_reloc(1, "d32")  # R_386_32
    out.append(("elfgen-i386.so", w.build().data))

    w = DylibWriter(soname="libgen4.so", needed=["libc.so.6"], gnu_buckets=1, sysv_buckets=1)
    for i in range(12):
        w.add_function(f"fn{i}", b"\x31\xc0\xc3")
    w.add_undefined("malloc", version="GLIBC_2.2.5", version_lib="libc.so.6")
    w.add_reloc("GLOB_DAT", "malloc")
    out.append(("elfgen-chains.so", w.build().data))

    # Foreign ISAs (loaded into a BufferMapper only): aarch64 and riscv64 numbers.
    for machine, name, (relative, glob_dat, abs64) in (
            (183, "aarch64", (1027, 1025, 257)), (243, "riscv64", (3, 2, 2))):
        w = DylibWriter(soname=f"libgen-{name}.so", machine=machine, needed=["libc.so.6"])
        w.add_function("fn", b"\x00" * 8)
        w.add_object("obj", bytes(16))
        w.add_reloc(relative, rel_to="obj")
        w.add_reloc(glob_dat, "fn")
        w.add_reloc(abs64, "obj", addend=4)
        w.add_reloc(glob_dat, "malloc")
        w.add_relr(rel_to="fn")
        out.append((f"elfgen-{name}.so", w.build().data))
    return out


def load_seeds(*, fixtures: bool = True, system: bool = True,
               elfgen: bool = True) -> list[Seed]:
    """The whole seed corpus, deduplicated by content."""
    seeds: list[Seed] = []
    if fixtures:
        seeds += fixture_seeds()
    if system:
        seeds += system_seeds()
    if elfgen:
        seeds += elfgen_seeds()
    seen: set[bytes] = set()
    out = []
    for name, data in seeds:
        if data not in seen:
            seen.add(data)
            out.append((name, data))
    return out
