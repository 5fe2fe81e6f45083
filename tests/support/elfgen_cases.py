"""Malformed-but-parseable shared objects for the robustness suite (issue 9 §3).

Test-only. Each case starts from one valid image built with `DylibWriter` (two writable
words relocated by GLOB_DAT / R64 / RELATIVE, a JUMP_SLOT to ``puts``, RELR entries, a
version definition, RELRO) and breaks exactly one thing with the `elfgen_malform`
patchers, so the file still parses as ELF and only a later check can catch it. `cases()`
returns them with the error relink must raise and a regex its message must match.

Example::

    for case in cases():
        with pytest.raises(case.error, match=case.match):
            relink.load(case.data)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from relink.errors import ElfParseError, RelinkError, RelocationError

from . import elfgen_defs as d
from .elfgen import (
    DylibWriter,
    ElfView,
    GeneratedElf,
    patch_bytes,
    patch_dyn,
    patch_phdr,
    patch_reloc,
    patch_relr,
    patch_sym,
)

__all__ = ["Case", "base_image", "cases"]


@dataclass(frozen=True)
class Case:
    """One malformed image and the error it must produce."""

    name: str
    data: bytes
    error: type[RelinkError]
    match: str


def base_image(*, copy_size: int | None = None) -> GeneratedElf:
    """The valid image every case starts from (it loads natively as is)."""
    w = DylibWriter(soname="libcase.so", needed=["libc.so.6"], relro=True)
    w.add_function("answer", b"\xb8\x2a\x00\x00\x00\xc3")
    w.add_object("counter", (7).to_bytes(8, "little"))
    w.add_reloc("GLOB_DAT", "answer")
    w.add_reloc("R64", "counter", addend=8)
    w.add_reloc("RELATIVE", rel_to="counter")
    w.add_reloc("JUMP_SLOT", "puts", table="plt")
    for _ in range(3):
        w.add_relr(rel_to="counter")
    if copy_size is not None:
        # An R_X86_64_COPY of libc's 'stdout' (8 bytes) into an 8-byte slot.
        w.add_undefined("stdout", type="object", size=copy_size)
        w.add_reloc(d.R_X86_64.COPY, "stdout")
    w.add_version("CASE_1")
    return w.build()


def _word(img: GeneratedElf, vaddr: int, value: int) -> bytes:
    return patch_bytes(img.data, img.vaddr_to_offset(vaddr), struct.pack("<Q", value))


def _segments(img: GeneratedElf) -> list[dict[str, int]]:
    return [p for p in img.phdrs if p["p_type"] == d.PT_LOAD]


def _index_of_load(img: GeneratedElf, n: int) -> int:
    loads = [i for i, p in enumerate(img.phdrs) if p["p_type"] == d.PT_LOAD]
    return loads[n]


def cases() -> list[Case]:
    """Every malformed case, in a stable order."""
    img = base_image()
    data = img.data
    loads = _segments(img)
    text, rw = loads[1], loads[2]
    view = ElfView(data)
    nsyms = view.symbols("dynsym")[1]
    strsz = view.dyn(d.DT_STRSZ) or 0
    gnu_at = img.layout[".gnu.hash"][1]
    sysv_at = img.layout[".hash"][1]
    out: list[Case] = []

    def add(name: str, make: Callable[[], bytes], error: type[RelinkError], match: str) -> None:
        out.append(Case(name, make(), error, match))

    # -- segments ---------------------------------------------------------------------
    add("overlapping segments", lambda: patch_phdr(
        data, _index_of_load(img, 2), p_vaddr=text["p_vaddr"], p_paddr=text["p_vaddr"],
        p_offset=text["p_offset"]), ElfParseError, "overlap")
    add("segments out of order", lambda: patch_phdr(
        data, _index_of_load(img, 1), p_vaddr=rw["p_vaddr"] + 0x10000,
        p_paddr=rw["p_vaddr"] + 0x10000, p_offset=text["p_offset"]), ElfParseError,
        "overlap|order")
    add("segment file range past EOF", lambda: patch_phdr(
        data, _index_of_load(img, 2), p_filesz=len(data), p_memsz=len(data)),
        ElfParseError, "past the end of the file")
    relro = next(i for i, p in enumerate(img.phdrs) if p["p_type"] == d.PT_GNU_RELRO)
    add("PT_GNU_RELRO far past the image", lambda: patch_phdr(
        data, relro, p_memsz=0x800_0000_0000), ElfParseError, "PT_GNU_RELRO")
    add("PT_GNU_RELRO just past the image", lambda: patch_phdr(
        data, relro, p_memsz=rw["p_vaddr"] + rw["p_memsz"] + 0x3000 - rw["p_vaddr"]),
        ElfParseError, "PT_GNU_RELRO")
    add("absurd segment size", lambda: patch_phdr(
        data, _index_of_load(img, 2), p_memsz=1 << 50), ElfParseError, "absurd")
    # -- relocation targets -----------------------------------------------------------
    add("relocation offset outside every segment", lambda: patch_reloc(
        data, 0, "dyn", offset=0x7FFF_0000), RelocationError, "outside every writable")
    add("relocation offset in read-only text", lambda: patch_reloc(
        data, 0, "dyn", offset=text["p_vaddr"]), RelocationError, "outside every writable")
    add("relocation straddles the end of the writable segment", lambda: patch_reloc(
        data, 1, "dyn", offset=rw["p_vaddr"] + rw["p_memsz"] - 4), RelocationError,
        "outside every writable")
    add("negative relocation offset", lambda: patch_reloc(
        data, 2, "dyn", offset=(1 << 64) - 8), RelocationError, "outside every writable")
    add("PLT relocation outside the image", lambda: patch_reloc(
        data, 0, "plt", offset=rw["p_vaddr"] + 0x100000), RelocationError,
        "outside every writable")
    # -- symbols ----------------------------------------------------------------------
    add("symbol index out of range", lambda: patch_reloc(
        data, 0, "dyn", sym=nsyms + 1000), RelinkError,
        "symbol index|out of range")
    add("PLT symbol index out of range", lambda: patch_reloc(
        data, 0, "plt", sym=0xFFFFFF), RelinkError, "symbol index|out of range")
    add("symbol name offset past the string table", lambda: patch_sym(
        data, "answer", st_name=strsz + 0x1000), ElfParseError, "past the string table")
    # -- hash tables ------------------------------------------------------------------
    add("SysV hash nchain larger than the segment", lambda: patch_dyn(
        patch_bytes(data, sysv_at + 4, struct.pack("<I", 0xFFFFFF)), d.DT_GNU_HASH,
        new_tag=d.DT_DEBUG, value=0), ElfParseError, "outside|claims")
    add("SysV hash nbucket absurd", lambda: patch_dyn(
        patch_bytes(data, sysv_at, struct.pack("<I", 0x7FFFFFFF)), d.DT_GNU_HASH,
        new_tag=d.DT_DEBUG, value=0), ElfParseError, "claims|outside")
    add("SysV hash nchain smaller than the symbol table", lambda: patch_dyn(
        patch_bytes(data, sysv_at + 4, struct.pack("<I", 1)), d.DT_GNU_HASH,
        new_tag=d.DT_DEBUG, value=0), RelinkError, "out of range")
    add("GNU hash symoffset past the symbols", lambda: patch_bytes(
        data, gnu_at + 4, struct.pack("<I", 0x10000)), ElfParseError, "below the symbol|past")
    add("GNU hash with zero buckets", lambda: patch_bytes(
        data, gnu_at, struct.pack("<I", 0)), ElfParseError, "no buckets")
    add("GNU hash bucket below symoffset", lambda: patch_bytes(
        data, gnu_at + 4, struct.pack("<I", 0xFFFF)), ElfParseError, "below the symbol")
    add("GNU hash chain without an end", lambda: _gnu_endless(data, gnu_at),
        ElfParseError, "chain runs past")
    add("GNU hash bloom size not a power of two", lambda: patch_bytes(
        data, gnu_at + 8, struct.pack("<I", 3)), ElfParseError, "power of two")
    # -- strings and required entries -------------------------------------------------
    add("DT_NEEDED offset past the string table", lambda: patch_dyn(
        data, d.DT_NEEDED, strsz + 5), ElfParseError, "past the string table")
    add("DT_SONAME offset past the string table", lambda: patch_dyn(
        data, d.DT_SONAME, 1 << 40), ElfParseError, "past the string table")
    add("DT_STRSZ larger than the segment", lambda: patch_dyn(
        data, d.DT_STRSZ, 1 << 32), ElfParseError, "outside every loadable")
    add("string table not NUL-terminated", lambda: _unterminated_strtab(data, view),
        ElfParseError, "NUL-terminated|past the string table")
    add("DT_STRTAB missing", lambda: patch_dyn(data, d.DT_STRTAB, new_tag=d.DT_DEBUG),
        ElfParseError, "DT_STRTAB")
    add("DT_NULL missing", lambda: _no_dt_null(data, view), ElfParseError, "DT_NULL")
    add("DT_SYMTAB missing while relocations name symbols", lambda: patch_dyn(
        data, d.DT_SYMTAB, new_tag=d.DT_DEBUG), RelinkError, "symbol")
    add("DT_RELAENT wrong", lambda: patch_dyn(data, d.DT_RELAENT, 16), ElfParseError,
        "entry size")
    add("DT_RELASZ not a multiple of the entry size", lambda: patch_dyn(
        data, d.DT_RELASZ, (view.dyn(d.DT_RELASZ) or 0) - 4), ElfParseError, "multiple")
    add("DT_RELASZ past the segment", lambda: patch_dyn(data, d.DT_RELASZ, 24 << 20),
        ElfParseError, "outside every loadable|not its tail")
    add("DT_RELA outside the image", lambda: patch_dyn(data, d.DT_RELA, 0x5000_0000),
        ElfParseError, "outside every loadable")
    add("DT_SYMENT wrong", lambda: patch_dyn(data, d.DT_SYMENT, 16), ElfParseError,
        "DT_SYMENT")
    add("DT_INIT_ARRAY outside the image", lambda: _with_dyn(
        data, d.DT_INIT_ARRAY, 0x7000_0000, d.DT_INIT_ARRAYSZ, 8), RelinkError,
        "outside every loadable")
    # -- RELR -------------------------------------------------------------------------
    relr_words = img.layout[".relr.dyn"][2] // 8
    add("RELR bitmap running past the image", lambda: patch_relr(
        data, relr_words - 1, (1 << 64) - 1), RelocationError, "outside every writable")
    add("RELR address outside the image", lambda: patch_relr(data, 0, 0x4000_0000),
        RelocationError, "outside every writable")
    add("DT_RELRENT wrong", lambda: _with_dyn(data, d.DT_RELRENT, 4), ElfParseError,
        "DT_RELRENT")
    # -- COPY -------------------------------------------------------------------------
    add("COPY larger than its writable segment", lambda: base_image(
        copy_size=0x10_0000).data, RelocationError, "COPY|outside")
    return out


def _gnu_endless(data: bytes, at: int) -> bytes:
    """Clear the end-of-chain bit of every GNU hash chain word, to the end of the file."""
    nbuckets, _symoffset, bloom_size = struct.unpack_from("<III", data, at)
    chains = at + 16 + bloom_size * 8 + nbuckets * 4
    buf = bytearray(data)
    for pos in range(chains, min(len(buf), chains + 4096) - 3, 4):
        word = struct.unpack_from("<I", buf, pos)[0]
        struct.pack_into("<I", buf, pos, word & ~1 if word & 1 else word | 2)
    return bytes(buf)


def _unterminated_strtab(data: bytes, view: ElfView) -> bytes:
    at = view.vaddr_to_offset(view.dyn(d.DT_STRTAB) or 0)
    size = view.dyn(d.DT_STRSZ) or 0
    return patch_bytes(data, at, b"A" * size)


def _no_dt_null(data: bytes, view: ElfView) -> bytes:
    buf = data
    for pos, tag, _val in view.dynamic:
        if tag == d.DT_NULL:
            buf = patch_bytes(buf, pos, struct.pack("<qQ", d.DT_DEBUG, 0))
    return buf


def _with_dyn(data: bytes, *pairs: int) -> bytes:
    """Turn trailing DT_NULL padding entries into the given (tag, value) pairs."""
    view = ElfView(data)
    nulls = [pos for pos, tag, _ in view.dynamic if tag == d.DT_NULL]
    buf = data
    it = iter(pairs)
    for (tag, value), pos in zip(zip(it, it), nulls[:-1] if len(nulls) > 1 else []):
        buf = patch_bytes(buf, pos, struct.pack("<qQ", tag, value))
    if len(nulls) <= len(pairs) // 2:
        # No spare DT_NULL slots: retag DT_DEBUG / DT_SONAME entries instead.
        spare = [t for t in (d.DT_DEBUG, d.DT_FLAGS_1, d.DT_FLAGS, d.DT_SONAME)
                 if view.dyn(t) is not None]
        it = iter(pairs)
        for (tag, value), old in zip(zip(it, it), spare):
            buf = patch_dyn(buf, old, value, new_tag=tag)
    return buf
