"""ELF parsing against oracles: LIEF and readelf on real system libraries."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from relink.elf import ElfFile
from relink.elf.symbols import gnu_hash, sysv_hash

LIBC = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")
SYSTEM_LIBS = [p for p in (LIBC, Path("/usr/lib/x86_64-linux-gnu/libz.so.1"),
                           Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6"))
               if p.exists()]


def test_hash_functions() -> None:
    assert gnu_hash(b"") == 5381
    assert gnu_hash(b"printf") == 0x156B2BB8
    assert sysv_hash(b"printf") == 0x077905A6
    assert sysv_hash(b"") == 0


@pytest.mark.parametrize("path", SYSTEM_LIBS, ids=lambda p: p.name)
def test_hash_walks_agree_with_export_index(path: Path) -> None:
    elf = ElfFile(path)
    syms = elf.symbols
    assert syms is not None and syms.count > 10
    for name in syms.exports:
        found = syms.gnu_lookup(name)
        assert found is not None and syms.names[found] == name
    assert syms.gnu_lookup("definitely_not_a_symbol_xyz") is None
    assert syms.sysv_lookup("definitely_not_a_symbol_xyz") is None


@pytest.mark.parametrize("path", SYSTEM_LIBS, ids=lambda p: p.name)
def test_against_lief(path: Path) -> None:
    lief = pytest.importorskip("lief")
    ref = lief.ELF.parse(str(path))
    elf = ElfFile(path)
    assert elf.header.e_machine == 62 and elf.header.elf_class == 64
    assert elf.dynamic is not None and elf.symbols is not None
    assert elf.dynamic.needed == [lib for lib in ref.libraries]
    assert elf.symbols.count == len(ref.dynamic_symbols)
    assert elf.symbols.names == [s.name for s in ref.dynamic_symbols]
    tables, relr = elf.relocation_tables()
    assert sum(len(t) for t in tables) + len(relr) == len(ref.relocations)
    ours = sorted(o for t in tables for o in t.offsets) + sorted(relr)
    assert sorted(ours) == sorted(r.address for r in ref.relocations)
    ref_relr = sorted(r.address for r in ref.relocations
                      if str(r.encoding).endswith("RELR"))
    if ref_relr:
        assert sorted(relr) == ref_relr
    names = {v.name for v in ref.symbols_version_definition for v in v.auxiliary_symbols}
    assert {d.name for d in elf.symbols.versions.definitions} == names


def test_readelf_agrees_on_program_headers() -> None:
    out = subprocess.run(["readelf", "-W", "-l", str(LIBC)], capture_output=True,
                         text=True).stdout
    rows = [ln.split() for ln in out.splitlines() if ln.strip().startswith("LOAD")]
    loads = [ph for ph in ElfFile(LIBC).phdrs if ph.p_type == 1]
    assert [int(r[2], 16) for r in rows] == [ph.p_vaddr for ph in loads]
    assert [int(r[5], 16) for r in rows] == [ph.p_memsz for ph in loads]


def test_versioned_libc_symbols() -> None:
    syms = ElfFile(LIBC).symbols
    assert syms is not None
    # memcpy has two versions in glibc for x86_64: memcpy@GLIBC_2.2.5 and @@GLIBC_2.14
    assert syms.find("memcpy", "GLIBC_2.14", exact=True) is not None
    assert syms.find("memcpy", "GLIBC_2.2.5", exact=True) is not None
    assert syms.find("memcpy") == syms.find("memcpy", "GLIBC_2.14", exact=True)
    needs = ElfFile(LIBC).symbols.versions.needs  # type: ignore[union-attr]
    assert any(n.file.startswith("ld-linux") for n in needs)


def test_gnu_hash_without_exports_still_sizes_the_table(tmp_path: Path) -> None:
    # A program that exports nothing: its GNU hash table has no hashed symbol and a
    # symoffset the linker may leave at 1, yet relocations use indices 1..3.
    src = tmp_path / "noexp.c"
    src.write_text("#include <stdio.h>\nint main(void) { puts(\"hi\"); return 3; }\n")
    exe = tmp_path / "noexp"
    subprocess.run(["gcc", "-no-pie", "-o", str(exe), str(src)], check=True)
    syms = ElfFile(exe).symbols
    assert syms is not None
    assert "puts" in syms.names and syms.count == len(syms.names) >= 3
