"""Malformed objects and archives: always a RelinkError, never a crash or a stray error.

Deterministic mutation of real gcc objects (headers, section table, symbol table,
relocation and group entries), each loaded into a buffer (nothing runs), plus a few
hand-made malformations with exact expectations.
"""

from __future__ import annotations

import random
import struct

import pytest
from objsupport import archive, needs_gcc, obj

import relink
from relink.errors import ElfParseError, RelinkError
from relink.memory.buffer import BufferMapper

pytestmark = [needs_gcc]


def _load(data: bytes) -> None:
    relink.load_object(data, mapper=BufferMapper(), host=False,
                       resolve=lambda name: 0x1000)


def _shdrs(data: bytes) -> list[tuple[int, ...]]:
    (shoff,) = struct.unpack_from("<Q", data, 40)
    shentsize, shnum = struct.unpack_from("<HH", data, 58)
    return [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
            for i in range(shnum)]


def _targets(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of the interesting tables: ELF header, section headers, symtab,
    relocations, groups."""
    (shoff,) = struct.unpack_from("<Q", data, 40)
    _, shnum = struct.unpack_from("<HH", data, 58)
    out = [(0, 64), (shoff, shnum * 64)]
    for row in _shdrs(data):
        if row[1] in (2, 4, 17):  # SYMTAB, RELA, GROUP
            out.append((row[4], row[5]))
    return out


@pytest.mark.parametrize(("name", "flags", "lang"), [
    ("calc_a.c", ["-O2", "-fPIC", "-fcommon"], "c"),
    ("calc_a.c", ["-O0", "-fno-pic", "-fcommon"], "c"),
    ("cxx_other.cpp", ["-O2", "-fPIC"], "c++")])  # COMDAT groups
def test_mutated_objects_fail_cleanly(name: str, flags: list[str], lang: str) -> None:
    base = obj(name, flags, lang=lang).read_bytes()
    targets = _targets(base)
    rng = random.Random(0xC0FFEE)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            off, size = rng.choice(targets)
            if size <= 0:
                continue
            at = off + rng.randrange(size)
            if at < len(data):
                data[at] = rng.choice([0, 0xFF, rng.randrange(256), data[at] ^ 0x80])
        try:
            _load(bytes(data))
            outcomes["ok"] += 1
        except RelinkError:
            outcomes["error"] += 1
        except ValueError as exc:  # only the documented ValueErrors (bad arguments)
            pytest.fail(f"ValueError on malformed input: {exc}")
    assert outcomes["error"] > 50


def test_truncations_fail_cleanly() -> None:
    base = obj("calc_b.c", ["-O2", "-fcommon"]).read_bytes()
    for n in range(0, len(base), max(1, len(base) // 97)):
        try:
            _load(base[:n])
        except RelinkError:
            continue


def test_specific_malformations() -> None:
    base = bytearray(obj("calc_b.c", ["-O2", "-fcommon"]).read_bytes())
    rows = _shdrs(bytes(base))
    (shoff,) = struct.unpack_from("<Q", base, 40)
    symtab = next(i for i, r in enumerate(rows) if r[1] == 2)
    rela = next(i for i, r in enumerate(rows) if r[1] == 4)
    bad = bytearray(base)
    struct.pack_into("<H", bad, 62, 200)  # e_shstrndx out of range
    with pytest.raises(ElfParseError, match="e_shstrndx"):
        _load(bytes(bad))
    bad = bytearray(base)
    struct.pack_into("<I", bad, shoff + symtab * 64 + 4, 1)  # symtab -> PROGBITS
    with pytest.raises(ElfParseError, match="no symbol table"):
        _load(bytes(bad))
    bad = bytearray(base)
    r_off = rows[rela][4]
    struct.pack_into("<Q", bad, r_off + 8, (9999 << 32) | 2)  # symbol index 9999
    with pytest.raises(ElfParseError, match="references symbol 9999"):
        _load(bytes(bad))
    bad = bytearray(base)
    struct.pack_into("<Q", bad, r_off, 1 << 20)  # offset past its section
    with pytest.raises(ElfParseError, match="past the end"):
        _load(bytes(bad))


def test_unknown_relocation_type_is_named() -> None:
    base = bytearray(obj("calc_b.c", ["-O2", "-fcommon"]).read_bytes())
    rows = _shdrs(bytes(base))
    rela = next(r for r in rows if r[1] == 4)
    info = struct.unpack_from("<Q", base, rela[4] + 8)[0]
    struct.pack_into("<Q", base, rela[4] + 8, (info & ~0xFFFFFFFF) | 3)
    from relink.errors import UnsupportedRelocationError

    with pytest.raises(UnsupportedRelocationError) as exc:
        _load(bytes(base))
    assert exc.value.r_type_name == "R_X86_64_GOT32" and exc.value.r_type == 3
    assert "R_X86_64_GOT32" in str(exc.value) and "calc_b" not in (exc.value.symbol or "")


def test_mutated_archives_fail_cleanly() -> None:
    lib = archive("fuzzar", [obj("ar_one.c"), obj("ar_two.c")]).read_bytes()
    rng = random.Random(7)
    for _ in range(200):
        data = bytearray(lib)
        at = rng.randrange(8, min(len(data), 400))
        data[at] = rng.randrange(256)
        try:
            relink.load_object(bytes(data), mapper=BufferMapper(), host=False,
                               resolve=lambda name: 0x1000)
        except RelinkError:
            pass
