"""Malformed input: every case raises a RelinkError subclass and the interpreter survives.

Each mutated image is loaded natively from bytes (so the loader really maps and relocates
what it accepts) and parsed with ElfFile; nothing may crash, leak a mapping, or escape
as KeyError / IndexError / struct.error.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
from core_fixtures import shared

import relink
from relink.elf import ElfFile
from support.elfgen_malform import (
    header_boundaries,
    patch_dyn,
    patch_ehdr,
    patch_phdr,
    patch_reloc,
    patch_sym,
    truncate,
)

pytestmark = pytest.mark.needs_cc

DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SYMTAB, DT_RELA, DT_RELASZ = 1, 5, 10, 6, 7, 8
DT_GNU_HASH, DT_HASH, DT_JMPREL, DT_PLTRELSZ, DT_INIT_ARRAYSZ = 0x6FFFFEF5, 4, 23, 2, 27


@pytest.fixture(scope="module")
def image() -> bytes:
    return shared("badinput", ldflags=["-Wl,--hash-style=both"]).read_bytes()


def maps_count() -> int:
    return len(Path("/proc/self/maps").read_text().splitlines())


def rejects(data: bytes) -> relink.RelinkError | None:
    """Load `data`; return the RelinkError raised (None if it loaded and ran)."""
    try:
        m = relink.load(data, name="bad.so")
    except relink.RelinkError as exc:
        return exc
    try:
        m.function("read_relative", ctypes.c_int)()
    finally:
        m.close()
    return None


def parse_all(data: bytes) -> None:
    try:
        elf = ElfFile(data, name="bad.so")
        assert elf.sections is not None
        assert elf.dynamic is None or elf.dynamic.entries is not None
        assert elf.symbols is None or elf.symbols.count >= 0
        elf.relocation_tables()
        elf.notes()
    except relink.RelinkError:
        pass


def test_intact_image_loads(image: bytes) -> None:
    assert rejects(image) is None


def test_truncation_at_every_header_boundary(image: bytes) -> None:
    before = maps_count()
    elf = ElfFile(image)
    # Past the last loaded byte only section headers and non-alloc sections remain,
    # which a loader does not need: such cuts may load. Every earlier cut must fail.
    loaded_end = max(ph.p_offset + ph.p_filesz for ph in elf.phdrs if ph.p_type == 1)
    cuts = [n for n in header_boundaries(image) if n < len(image)]
    assert len(cuts) > 30
    for n in cuts:
        cut = truncate(image, n)
        parse_all(cut)
        err = rejects(cut)
        if n < loaded_end:
            assert isinstance(err, relink.RelinkError), f"truncated at {n}"
    assert maps_count() <= before + 2


@pytest.mark.parametrize("fields,match", [
    ({"ei_mag": b"\x7fELG"}, "bad magic"),
    ({"ei_class": 3}, "class"),
    ({"ei_class": 0}, "class"),
    ({"ei_data": 2}, "big-endian"),
    ({"ei_data": 7}, "encoding"),
    ({"ei_version": 2}, "EI_VERSION"),
    ({"e_version": 0}, "e_version"),
    ({"e_machine": 183}, "aarch64"),
    ({"e_machine": 0x1234}, "no architecture spec"),
    ({"e_type": 4}, "ET_CORE"),
    ({"e_type": 1}, "ET_REL"),
    ({"e_phentsize": 10}, "e_phentsize"),
    ({"e_phoff": 1 << 40}, "past the end"),
    ({"e_phnum": 0xFFFF}, "past the end"),
    ({"e_ehsize": 10}, "e_ehsize"),
])
def test_bad_header_fields(image: bytes, fields: dict[str, object], match: str) -> None:
    if "ei_mag" in fields:
        bad = b"\x7fELG" + image[4:]
    else:
        bad = patch_ehdr(image, **fields)  # type: ignore[arg-type]
    err = rejects(bad)
    assert isinstance(err, relink.RelinkError)
    assert match in str(err)
    parse_all(bad)


def _load_index(data: bytes) -> list[int]:
    elf = ElfFile(data)
    return [i for i, ph in enumerate(elf.phdrs) if ph.p_type == 1]


def test_segment_cases(image: bytes) -> None:
    loads = _load_index(image)
    elf = ElfFile(image)
    last = elf.phdrs[loads[-1]]
    cases = {
        "file range past EOF": patch_phdr(image, loads[-1], p_offset=len(image) + 0x1000),
        "filesz > memsz": patch_phdr(image, loads[-1], p_filesz=last.p_memsz + 0x100),
        "absurd size": patch_phdr(image, loads[-1], p_memsz=1 << 62),
        "overlap": patch_phdr(image, loads[1], p_vaddr=0, p_offset=0),
        "misaligned": patch_phdr(image, loads[-1], p_vaddr=last.p_vaddr + 1),
        "no PT_LOAD": b"".join([image]) if False else _no_loads(image, loads),
        "dynamic outside": patch_phdr(image, next(i for i, ph in enumerate(elf.phdrs)
                                                  if ph.p_type == 2), p_vaddr=1 << 44),
    }
    before = maps_count()
    for what, bad in cases.items():
        err = rejects(bad)
        assert isinstance(err, relink.RelinkError), what
        parse_all(bad)
    assert maps_count() <= before + 2


def _no_loads(image: bytes, loads: list[int]) -> bytes:
    out = image
    for i in loads:
        out = patch_phdr(out, i, p_type=0)
    return out


@pytest.mark.parametrize("tag,value", [
    (DT_STRSZ, 1 << 40), (DT_STRTAB, 1 << 44), (DT_SYMTAB, 1 << 44), (DT_RELA, 1 << 44),
    (DT_RELASZ, 1 << 30), (DT_RELASZ, 7), (DT_GNU_HASH, 1 << 44), (DT_HASH, 1 << 44),
    (DT_JMPREL, 1 << 44), (DT_PLTRELSZ, 1 << 30), (DT_INIT_ARRAYSZ, 1 << 30),
    (DT_NEEDED, 1 << 30),
])
def test_dynamic_cases(image: bytes, tag: int, value: int) -> None:
    try:
        bad = patch_dyn(image, tag, value)
    except (KeyError, ValueError, LookupError):
        pytest.skip(f"image has no dynamic tag {tag:#x}")
    err = rejects(bad)
    assert isinstance(err, relink.RelinkError)
    parse_all(bad)


def test_relocation_offset_outside_every_segment(image: bytes) -> None:
    for off in (1 << 40, 0, 0x10, (1 << 64) - 8):
        bad = patch_reloc(image, 0, "dyn", offset=off)
        err = rejects(bad)
        assert isinstance(err, relink.RelocationError), off
        assert "outside every writable segment" in str(err)


def test_symbol_index_out_of_range(image: bytes) -> None:
    elf = ElfFile(image)
    tables, _ = elf.relocation_tables()
    idx = next(i for i, s in enumerate(tables[0].syms) if s)
    info = ((1 << 20) << 32) | tables[0].types[idx]
    err = rejects(patch_reloc(image, idx, "dyn", info=info))
    assert isinstance(err, relink.RelocationError)
    assert "out of range" in str(err)


def test_symbol_name_past_string_table(image: bytes) -> None:
    bad = patch_sym(image, "read_relative", st_name=1 << 30)
    assert isinstance(rejects(bad), relink.ElfParseError)
    parse_all(bad)


def test_unsupported_relocation_type_is_named(image: bytes) -> None:
    err = rejects(patch_reloc(image, 0, "dyn", info=(0 << 32) | 22))
    assert isinstance(err, relink.UnsupportedRelocationError)
    assert "R_X86_64_GOTTPOFF" in str(err)


def test_random_byte_flips_never_crash(image: bytes) -> None:
    import random

    rng = random.Random(1234)
    head = min(len(image), 0x1000)
    for _ in range(300):
        data = bytearray(image)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(head)] = rng.randrange(256)
        parse_all(bytes(data))
        try:
            relink.load(bytes(data), mapper=relink.BufferMapper()).close()
        except relink.RelinkError:
            pass
