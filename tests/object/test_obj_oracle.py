"""Oracle tests: relink's relocated bytes equal a real linker's, at the same addresses.

relink loads objects into a `BufferMapper` at a fixed base; the same objects are linked
by GNU ld (x86_64) or ld.lld (aarch64, riscv64, cross-compiled with zig) with a linker
script that puts every section where relink put it and ``--defsym`` for the externals
(see objoracle.py). Every loaded section must match byte for byte — x86_64 GOT-relative
fields excepted, where GNU ld orders its GOT differently: there the GOT slot each
instruction reaches must hold the same address in both images.
"""

from __future__ import annotations

import importlib.util
import struct
import subprocess
from pathlib import Path

import pytest
from objoracle import (
    compare,
    have_linker,
    link_like,
    load_in_buffer,
    read_linked,
    section_range,
)
from objsupport import obj, source

import relink
from relink.elf.source import open_source
from relink.errors import RelocationOverflowError
from relink.memory.buffer import BufferMapper
from relink.object.parse import parse_object

HAVE_ZIG = importlib.util.find_spec("ziglang") is not None
needs_lld = pytest.mark.skipif(not (HAVE_ZIG and have_linker("ld.lld")),
                               reason="needs zig (pip install ziglang) and ld.lld (apt lld)")
TARGETS = {"aarch64": "aarch64-linux-gnu", "riscv64": "riscv64-linux-gnu"}
GOT_BIAS = {"aarch64": 0, "riscv64": 8}  # lld's riscv .got starts with one header word
EXT = {"ext_var": 0x500000, "ext_arr": 0x500100, "ext_fn": 0x480000}
ASM_EXT = {"ext_abs": 0x123456789ABC, "small_abs": 0x1234, "mid_abs": 0x12345678,
           "big_abs": 0x123456789ABC, "neg_abs": 2**64 - 0x1234, "ext_near": 0x404000,
           "ext_literal": 0x402000, "ext_fn": 0x480000, "ext_data": 0x500010,
           "ext_small": 0x7F, "ext_tiny": 0x1234, "ext_tiny2": 0x403000, "ext_a": 0x600123,
           "ext_b": 0x600001, "ext_six": 0x3, "ext_close": 0x400100}
C_FLAGS = [["-O2"], ["-O0"], ["-O2", "-fno-pic"], ["-O2", "-ffunction-sections",
                                                  "-fdata-sections"], ["-Os", "-fPIC"]]


def _cross(name: str, arch: str, flags: list[str]) -> Path:
    extra = ["-mno-relax"] if arch == "riscv64" and name.endswith(".c") else []
    # zig's *-linux-gnu targets insist on PIC; freestanding ones allow -fno-pic
    target = f"{arch}-freestanding" if "-fno-pic" in flags else TARGETS[arch]
    return obj(name, [*flags, *extra, "-g0", "-fno-sanitize=all"], cc="zig", target=target)


@needs_lld
@pytest.mark.parametrize("arch", sorted(TARGETS))
@pytest.mark.parametrize("flags", C_FLAGS, ids=["_".join(f) for f in C_FLAGS])
def test_c_matches_lld(arch: str, flags: list[str], tmp_path: Path) -> None:
    o = _cross("oracle.c", arch, flags)
    mod, mapper = load_in_buffer([o], EXT)
    assert mod.arch == arch and mod.state == "relocated"
    linked = link_like(mod, [o], EXT, tmp_path / "out", "ld.lld", got_bias=GOT_BIAS[arch])
    assert compare(mod, mapper, linked) == []
    got = mod._state.section(".got")
    theirs_got = section_range(linked.read_bytes(), ".got")
    if got is not None and theirs_got is not None:  # same addresses in the GOT slots
        size = theirs_got[1] - GOT_BIAS[arch]  # relink's stub slots follow, lld has none
        mine = mapper.regions[0].read(got.address, size)
        assert mine == read_linked(linked.read_bytes(), got.address, size)


@needs_lld
@pytest.mark.parametrize("arch", sorted(TARGETS))
def test_every_recipe_matches_lld(arch: str, tmp_path: Path) -> None:
    o = _cross(f"relocs_{'aarch64' if arch == 'aarch64' else 'riscv'}.s", arch, [])
    mod, mapper = load_in_buffer([o], ASM_EXT)
    counts = mod._state.counts
    linked = link_like(mod, [o], ASM_EXT, tmp_path / "out", "ld.lld",
                       got_bias=GOT_BIAS[arch])
    assert compare(mod, mapper, linked) == []
    if arch == "aarch64":
        for name in ("MOVW_UABS_G3", "MOVW_SABS_G2", "ADR_PREL_LO21", "LDST128_ABS_LO12_NC",
                     "LD_PREL_LO19", "CONDBR19", "TSTBR14", "CALL26", "JUMP26",
                     "ADR_GOT_PAGE", "LD64_GOT_LO12_NC", "PREL16", "ABS16"):
            assert counts.get(name), name
    else:
        for name in ("HI20", "LO12_S", "PCREL_LO12_S", "GOT_HI20", "BRANCH", "JAL",
                     "CALL_PLT", "RVC_BRANCH", "RVC_JUMP", "ADD8", "SUB64", "SET6", "SUB6",
                     "SET16", "32_PCREL"):
            assert counts.get(name), name


def _x86_got_fields(mod: relink.Module) -> list[tuple[int, int]]:
    """(place, addend) of every GOTPCREL-family relocation relink applied."""
    from relink.arch.rtypes import R_X86_64 as RT

    got_types = {RT.R_X86_64_GOTPCREL, RT.R_X86_64_GOTPCRELX, RT.R_X86_64_REX_GOTPCRELX}
    st = mod._state
    out = []
    for s in st.sections:
        if s.object == "<relink>":
            continue
        src = open_source(s.object)
        try:
            o = parse_object(src)
        finally:
            src.close()
        idx = next(h.index for h in o.sections if h.name == s.name)
        for rs in o.relocs.get(idx, []):
            for off, t, a in zip(rs.offsets, rs.types, rs.addends):
                if t in got_types:
                    out.append((s.address + off, a))
    return out


X86_FLAGS = [["-O2", "-fno-pic"], ["-O0", "-fno-pic"], ["-O2", "-fPIE"],
             ["-O2", "-fPIC", "-ffunction-sections", "-fdata-sections"], ["-O0", "-fPIC"],
             ["-O2", "-fPIC", "-fno-plt"]]


@pytest.mark.skipif(not have_linker("ld"), reason="needs GNU ld")
@pytest.mark.parametrize("flags", X86_FLAGS, ids=["_".join(f) for f in X86_FLAGS])
def test_x86_64_matches_gnu_ld(flags: list[str], tmp_path: Path) -> None:
    objs = [obj(n, [*flags, "-fcommon", "-fno-merge-constants"])
            for n in ("calc_a.c", "calc_b.c")]
    ext = {"strlen": 0x480000, "snprintf": 0x480100}
    mod, mapper = load_in_buffer(objs, ext)
    linked = link_like(mod, objs, ext, tmp_path / "out", "ld")
    elf = linked.read_bytes()
    region = mapper.regions[0]
    fields = _x86_got_fields(mod)
    for place, addend in fields:  # same target through both GOTs, then mask the field
        mine = struct.unpack("<i", region.read(place, 4))[0] + place - addend
        theirs = struct.unpack("<i", read_linked(elf, place, 4))[0] + place - addend
        assert region.read(mine, 8) == read_linked(elf, theirs, 8)
        region.write(place, read_linked(elf, place, 4))
    assert compare(mod, mapper, linked) == []
    if "-fno-plt" in flags or "-O0" in flags and "-fPIC" in flags:
        assert fields


@needs_lld
def test_aarch64_call_veneer_when_out_of_range() -> None:
    o = _cross("oracle.c", "aarch64", ["-O2"])
    far = {"ext_var": 0x500000, "ext_arr": 0x500100, "ext_fn": 0x400000 + (1 << 30)}
    mod, mapper = load_in_buffer([o], far)
    st = mod._state
    plt = st.section(".plt")
    assert plt is not None
    region = mapper.regions[0]
    text = st.section(".text")
    assert text is not None
    # find the BL/B to ext_fn: its target must be the veneer, which loads the slot
    code = region.read(text.address, text.size)
    targets = []
    for i in range(0, len(code), 4):
        insn = struct.unpack_from("<I", code, i)[0]
        if insn >> 26 in (0b100101, 0b000101):  # BL / B
            imm = insn & 0x3FFFFFF
            imm -= (1 << 26) if imm & (1 << 25) else 0
            targets.append(text.address + i + imm * 4)
    assert plt.address in targets
    veneer = region.read(plt.address, 16)
    adrp, ldr = struct.unpack_from("<II", veneer)
    page = ((adrp >> 5 & 0x7FFFF) << 2 | (adrp >> 29 & 3)) << 12
    slot = (plt.address & ~0xFFF) + page + ((ldr >> 10 & 0xFFF) << 3)
    assert struct.unpack("<Q", region.read(slot, 8))[0] == far["ext_fn"]


@needs_lld
def test_riscv_relaxable_objects_load() -> None:
    o = obj("oracle.c", ["-O2", "-mrelax", "-g0", "-fno-sanitize=all"], cc="zig",
            target=TARGETS["riscv64"])
    mod = relink.load_object(o, mapper=BufferMapper(), symbols=EXT, host=False)
    assert mod._state.counts.get("RELAX")


def test_riscv_uleb128_pair() -> None:
    if not HAVE_ZIG:
        pytest.skip("needs zig")
    o = _cross("uleb_riscv.s", "riscv64", [])
    syms = {"ext_a": 0x600123, "ext_b": 0x600001}
    with pytest.raises(RelocationOverflowError, match="SUB_ULEB128"):
        load_in_buffer([o], syms)  # 0x122 does not fit the 1-byte ULEB at 'short'
    syms = {"ext_a": 0x600023, "ext_b": 0x600001}
    mod, mapper = load_in_buffer([o], syms)
    at = mod.symbol("uleb")
    assert at is not None
    assert mapper.regions[0].read(at, 4) == bytes([0xA2, 0x80, 0x00, 0x22])


def test_overflow_in_foreign_field() -> None:
    if not HAVE_ZIG:
        pytest.skip("needs zig")
    o = _cross("relocs_aarch64.s", "aarch64", [])
    bad = dict(ASM_EXT, ext_near=0x400000 + (1 << 20))  # beyond TBZ's ±32 KiB
    with pytest.raises(RelocationOverflowError, match="R_AARCH64_TSTBR14.*ext_near"):
        load_in_buffer([o], bad)


def test_source_helper_is_used() -> None:
    assert "ext_fn" in source("oracle.c")


I386_FLAGS = [["-m32", "-O2", "-fPIC"], ["-m32", "-O0", "-fPIC"], ["-m32", "-O2", "-fno-pic"],
              ["-m32", "-O2", "-fPIC", "-ffunction-sections", "-fdata-sections"]]


def _ld_symbol(linked: Path, name: str) -> int:
    out = subprocess.run(["nm", str(linked)], capture_output=True, text=True, check=True)
    return next(int(line.split()[0], 16) for line in out.stdout.splitlines()
                if line.endswith(" " + name))


@pytest.mark.skipif(not have_linker("ld"), reason="needs GNU ld")
@pytest.mark.parametrize("flags", I386_FLAGS, ids=["_".join(f) for f in I386_FLAGS])
def test_i386_rel_objects_match_gnu_ld(flags: list[str], tmp_path: Path) -> None:
    """REL objects (implicit addends) against GNU ld -m elf_i386.

    GOT-base-relative fields (GOTOFF, GOTPC, GOT32X) depend on where each linker puts its
    GOT base (ld: .got.plt; relink: its .got): each is checked for what it computes,
    then masked, and everything else must match byte for byte.
    """
    from relink.arch.rtypes import R_386

    o = obj("oracle.c", [*flags, "-fno-merge-constants", "-fno-asynchronous-unwind-tables"])
    mod, mapper = load_in_buffer([o], EXT)
    assert mod.arch == "x86"
    linked = link_like(mod, [o], EXT, tmp_path / "out", "ld", extra=["-m", "elf_i386"])
    elf = linked.read_bytes()
    region = mapper.regions[0]
    st = mod._state
    got = st.section(".got")
    checked = 0
    if got is not None:
        mine_got, their_got = got.address, _ld_symbol(linked, "_GLOBAL_OFFSET_TABLE_")
        src = open_source(o)
        try:
            parsed = parse_object(src)
        finally:
            src.close()
        for sec in st.sections:
            if sec.object == "<relink>":
                continue
            idx = next(h.index for h in parsed.sections if h.name == sec.name)
            for rs in parsed.relocs.get(idx, []):
                for off, t in zip(rs.offsets, rs.types):
                    place = sec.address + off
                    mine = struct.unpack("<I", region.read(place, 4))[0]
                    theirs = struct.unpack("<I", read_linked(elf, place, 4))[0]
                    if t == R_386.R_386_GOTOFF:
                        assert (mine + mine_got) % 2**32 == (theirs + their_got) % 2**32
                    elif t == R_386.R_386_GOTPC:
                        assert (mine - mine_got) % 2**32 == (theirs - their_got) % 2**32
                    elif t in (R_386.R_386_GOT32, R_386.R_386_GOT32X):
                        target = region.read((mine + mine_got) % 2**32, 4)  # slot contents
                        op = read_linked(elf, place - 2, 1)
                        if op == b"\x8d":
                            # ld relaxed mov foo@GOT(%reg) into lea foo@GOTOFF(%reg)
                            assert struct.unpack("<I", target)[0] == \
                                (theirs + their_got) % 2**32
                            region.write(place - 2, op)
                        elif op == b"\xc7":
                            # ld relaxed it into mov $foo, %reg (an absolute symbol)
                            assert struct.unpack("<I", target)[0] == theirs
                            region.write(place - 2, read_linked(elf, place - 2, 2))
                        else:
                            assert target == read_linked(elf, (theirs + their_got) % 2**32, 4)
                    else:
                        continue
                    checked += 1
                    region.write(place, read_linked(elf, place, 4))
    assert compare(mod, mapper, linked) == []
    assert bool(checked) == ("-fPIC" in flags)
