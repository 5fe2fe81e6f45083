"""Exact relocation layouts from the test ELF writer: text relocations and RELR.

gcc will not emit PC32 / 32 / 32S text relocations in a shared object, so the writer
builds them: functions whose immediates are patched at load time, in a DT_TEXTREL image.
"""

from __future__ import annotations

import ctypes
import struct

import pytest

import relink
from support.elfgen import DylibWriter, RelocDesc

R_X86_64_PC32, R_X86_64_32, R_X86_64_32S, R_X86_64_64 = 2, 10, 11, 1


def _textrel_image(r_type: int, target: str, addend: int) -> tuple[bytes, int]:
    """A lib with `get()`: ``mov eax, imm32; ret`` whose imm32 is relocated."""
    w = DylibWriter(soname="libtextrel.so", textrel=True)
    w.add_object(target, 7)
    sym = w.add_function("get", b"\xb8\x00\x00\x00\x00\xc3")  # mov eax, imm32; ret
    index = w.add_reloc(RelocDesc(r_type, target, addend=addend, section=".text",
                                  offset=sym.value + 1, slot_size=4))
    return w.build().data, index


@pytest.mark.parametrize("r_type", [R_X86_64_PC32, R_X86_64_32S, R_X86_64_32])
def test_text_field_relocations(r_type: int) -> None:
    data, _ = _textrel_image(r_type, "target", 0x10)
    mapper = relink.BufferMapper(base=0x10000000)
    with relink.load(data, name="libtextrel.so", mapper=mapper) as m:
        get = m.symbol("get") or 0
        target = m.symbol("target") or 0
        region = next(r for r in mapper.regions if not r.released)
        (imm,) = struct.unpack("<i" if r_type != R_X86_64_32 else "<I",
                               region.read(get + 1, 4))
        if r_type == R_X86_64_PC32:
            assert imm == target + 0x10 - (get + 1)
        else:
            assert imm == target + 0x10


def test_text_relocation_runs_natively() -> None:
    data, _ = _textrel_image(R_X86_64_PC32, "target", 0)
    with relink.load(data, name="libtextrel.so") as m:
        get = m.function("get", ctypes.c_int)
        assert get() == (m.symbol("target") or 0) - ((m.symbol("get") or 0) + 1)
        # The text segment was writable only while relocating.
        maps = open("/proc/self/maps").read().splitlines()
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= (m.symbol("get") or 0) < hi:
                assert line.split()[1].startswith("r-x")


def test_field_overflow_is_an_error() -> None:
    data, _ = _textrel_image(R_X86_64_32, "target", 0)
    # Far above 4 GiB, an absolute 32-bit field cannot hold the address.
    with pytest.raises(relink.RelocationOverflowError) as info:
        relink.load(data, name="libtextrel.so",
                    mapper=relink.BufferMapper(base=0x7F0000000000))
    assert info.value.r_type_name == "R_X86_64_32" and info.value.bits == 32


def test_relr_and_relative_anywhere() -> None:
    w = DylibWriter(soname="librelr.so")
    w.add_object("value", 5)
    for _ in range(70):  # enough to need RELR bitmap words
        w.add_relr(rel_to="value")
    # RELATIVE after a symbolic entry: not in a DT_RELACOUNT prefix.
    w.add_reloc(RelocDesc(R_X86_64_64, "value"))
    w.add_reloc(RelocDesc("RELATIVE", None, rel_to="value", addend=4))
    img = w.build()
    mapper = relink.BufferMapper(base=0x20000000)
    with relink.load(img.data, name="librelr.so", mapper=mapper) as m:
        value = m.symbol("value") or 0
        region = next(r for r in mapper.regions if not r.released)
        base = m.base
        for vaddr in img.relr_addrs:
            assert struct.unpack("<Q", region.read(base + vaddr, 8))[0] == value
        words = [struct.unpack("<Q", region.read(base + a, 8))[0] for a in img.reloc_addrs]
        assert words[-2:] == [value, value + 4]


def test_relocation_plan_counts_match_the_file() -> None:
    from relink.elf.source import open_source
    from relink.loader import map_image
    from relink.relocation.dynamic import relocate_module
    from relink.relocation.scope import Binder
    from relink.state import ModuleState

    w = DylibWriter(soname="libcounts.so")
    w.add_object("value", 5)
    for _ in range(3):
        w.add_reloc(RelocDesc(R_X86_64_64, "value"))
    w.add_reloc(RelocDesc("RELATIVE", None, rel_to="value"))
    w.add_relr(rel_to="value")
    img = w.build()
    st = ModuleState(map_image(open_source(img.data), mapper=relink.BufferMapper()), None)
    try:
        plan = relocate_module(st, Binder(st, [st]))
        assert plan.by_class == {"R_X86_64_64": 3, "R_X86_64_RELATIVE": 1, "RELATIVE": 1}
    finally:
        st.release()


def test_bulk_numpy_path_matches_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table above the numpy threshold gives exactly the loop's words."""
    pytest.importorskip("numpy")
    import relink.relocation.dynamic as dyn

    w = DylibWriter(soname="libbulk.so")
    names = [f"obj{i}" for i in range(40)]
    for name in names:
        w.add_object(name, 8)
    for i in range(dyn.NUMPY_THRESHOLD + 500):
        kind = i % 4
        if kind == 0:
            w.add_reloc(RelocDesc("RELATIVE", None, rel_to=names[i % 40], addend=i % 16))
        elif kind == 1:
            w.add_reloc(RelocDesc(R_X86_64_64, names[(i * 7) % 40], addend=(i % 9) - 4))
        elif kind == 2:
            w.add_reloc(RelocDesc("GLOB_DAT", names[(i * 3) % 40]))
        else:
            w.add_reloc(RelocDesc(R_X86_64_64, "external", addend=i % 5))  # from scope
    img = w.build()

    def words(threshold: int) -> list[int]:
        monkeypatch.setattr(dyn, "NUMPY_THRESHOLD", threshold)
        mapper = relink.BufferMapper(base=0x30000000)
        ext = relink.SyntheticModule("ext", {"external": 0x12345678})
        with relink.load(img.data, name="libbulk.so", mapper=mapper, scope=[ext]) as m:
            region = next(r for r in mapper.regions if not r.released)
            return [struct.unpack("<Q", region.read(m.base + a, 8))[0]
                    for a in img.reloc_addrs]

    bulk, loop = words(4096), words(1 << 30)
    assert bulk == loop
    assert len(set(bulk)) > 40  # really relocated: distinct values, not one fill
