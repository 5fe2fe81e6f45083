"""Relink's tests/linker/planning.rs scenarios (relink-study §4.5), ported, plus scan tests.

Each scenario scans a fixture (from its path and from bytes where no dependency search is
involved), runs a pass over the plan and loads it into this process.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
from plan_support import read_value, with_value

import relink
from relink.errors import PlanError
from relink.memory.buffer import BufferMapper
from relink.plan import (
    PAGE,
    Capability,
    Materialization,
    MemoryClass,
    Plan,
    scan,
)
from support.elfgen_malform import patch_ehdr

pytestmark = pytest.mark.needs_cc


@pytest.fixture(params=["path", "bytes"])
def provider_plan(request: pytest.FixtureRequest, libs: dict[str, Path]) -> Plan:
    src = libs["provider"] if request.param == "path" else libs["provider"].read_bytes()
    return scan(src, name="libprovider.so")


def test_scan_resolves_graph_without_mapping(libs: dict[str, Path]) -> None:
    with scan(libs["root"]) as plan:
        assert [m.key for m in plan] == ["libroot.so", "libdependent.so", "libprovider.so"]
        assert plan.root.deps == ["libdependent.so"]
        assert plan.module("libdependent.so").deps == ["libprovider.so"]
        assert plan.root.runpath == "$ORIGIN"
        assert all(m.capability is Capability.REORDERABLE for m in plan)
        text = plan.root.section(".text")
        assert text.mem_class is MemoryClass.CODE and text.align >= 16
        assert plan.root.section(".dynamic").mem_class is MemoryClass.RELRO
        assert plan.root.section(".bss").mem_class is MemoryClass.DATA
        assert plan.root.section(".rodata" if plan.root.find(".rodata") else ".dynsym") \
            .mem_class is MemoryClass.RODATA
        assert not plan.arenas


def test_scan_reports_plain_module_as_section_data(libs: dict[str, Path]) -> None:
    with scan(libs["plain"]) as plan:
        assert plan.root.capability is Capability.SECTION_DATA
        assert "--emit-relocs" in plan.root.capability_reason
        assert plan.root.effective_materialization is Materialization.WHOLE_IMAGE


def test_scan_missing_dependency(libs: dict[str, Path], tmp_path: Path) -> None:
    lonely = tmp_path / "libdependent.so"
    lonely.write_bytes(libs["dependent"].read_bytes())
    with pytest.raises(relink.UnresolvedDependencyError, match="libprovider.so"):
        scan(lonely)
    with scan(lonely, missing_ok=True) as plan:
        assert plan.missing == ["libprovider.so"]
        with pytest.raises(relink.UnresolvedDependencyError):
            plan.load()


def test_arena_materializes_section_bytes(provider_plan: Plan) -> None:
    mod = provider_plan.root
    assert mod.capability is Capability.REORDERABLE
    data = mod.section(".data")
    assert data in mod.alloc_sections()
    data.set_data(with_value(mod, bytes([9, 8, 7, 6])))
    arena = provider_plan.create_arena(MemoryClass.DATA, page_size=PAGE)
    data.assign(arena, 0)
    with provider_plan.load() as lib:
        assert read_value(lib) == bytes([9, 8, 7, 6])
        addr = lib.symbol("value")
        assert arena.address is not None
        assert arena.address <= addr < arena.address + arena.size
        assert lib.function("provider_value", ctypes.c_int)() == 1


def test_arena_supports_assign_next(provider_plan: Plan) -> None:
    mod = provider_plan.root
    data = mod.section(".data")
    grown = data.size + 8
    data.resize(grown)
    assert data.size == grown and data.orig_size == grown - 8
    data.set_data(with_value(mod, bytes([4, 3, 2, 1, 8, 7, 6, 5]), grown))
    arena = provider_plan.create_arena(MemoryClass.DATA)
    assert data.assign_next(arena) == 0
    assert data.placement is not None and data.placement.offset == 0
    assert arena.size == grown
    with provider_plan.load() as lib:
        assert read_value(lib) == bytes([4, 3, 2, 1])


def test_defaults_to_section_regions(provider_plan: Plan) -> None:
    mod = provider_plan.root
    assert mod.capability is Capability.REORDERABLE
    assert mod.effective_materialization is Materialization.SECTION_REGIONS
    with provider_plan.load() as lib:
        assert read_value(lib) == bytes([1, 2, 3, 4])
        code = next(a for a in provider_plan.arenas if a.mem_class is MemoryClass.CODE)
        fn = lib.symbol("provider_value")
        assert code.address is not None and code.address <= fn < code.address + code.size
        assert lib.function("provider_value", ctypes.c_int)() == 1


@pytest.mark.parametrize("patch", [dict(e_shoff=0, e_shnum=0, e_shstrndx=0),
                                   dict(e_shstrndx=0xFFFF)], ids=["missing", "invalid"])
def test_bad_section_tables_become_opaque(libs: dict[str, Path], patch: dict[str, int]
                                          ) -> None:
    raw = patch_ehdr(libs["plain"].read_bytes(), **patch)
    plan = scan(raw, name="libplain.so")
    mod = plan.root
    assert mod.capability is Capability.OPAQUE
    assert mod.sections == []
    assert "section" in mod.capability_reason
    with pytest.raises(PlanError, match="no usable section table"):
        mod.section(".data")
    mod.set_materialization(Materialization.WHOLE_IMAGE)
    with plan.load() as lib:
        assert read_value(lib) == bytes([1, 2, 3, 4])


def test_whole_image_supports_section_overrides(libs: dict[str, Path]) -> None:
    for src in (libs["plain"], libs["plain"].read_bytes()):
        plan = scan(src, name="libplain.so")
        mod = plan.root
        assert mod.capability is Capability.SECTION_DATA
        mod.section(".data").set_data(with_value(mod, bytes([9, 8, 7, 6])))
        mod.set_materialization(Materialization.WHOLE_IMAGE)
        with plan.load() as lib:
            assert read_value(lib) == bytes([9, 8, 7, 6])
            assert lib.function("provider_value", ctypes.c_int)() == 1


class CountingMapper(BufferMapper):
    def __init__(self) -> None:
        super().__init__()
        self.reserved = 0

    def reserve(self, size: int, **kw: object) -> object:  # type: ignore[override]
        self.reserved += 1
        return super().reserve(size, **kw)  # type: ignore[arg-type]


def test_section_data_rejects_section_regions(libs: dict[str, Path]) -> None:
    plan = scan(libs["plain"])
    mod = plan.root
    mod.set_materialization(Materialization.SECTION_REGIONS)
    assert mod.materialization is Materialization.SECTION_REGIONS
    mapper = CountingMapper()
    with pytest.raises(PlanError, match="cannot use section regions") as exc:
        plan.load(mapper=mapper)
    assert exc.value.module == "libplain.so"
    assert mapper.reserved == 0  # refused before anything was mapped
    arena = plan.create_arena(MemoryClass.DATA)
    with pytest.raises(PlanError, match="cannot assign sections to arenas"):
        mod.section(".data").assign(arena, 0)
    with pytest.raises(PlanError, match="cannot resize"):
        mod.section(".data").resize(64)


def test_whole_image_rejects_placed_sections(provider_plan: Plan) -> None:
    mod = provider_plan.root
    mod.section(".data").assign_next(provider_plan.create_arena(MemoryClass.DATA))
    mod.set_materialization(Materialization.WHOLE_IMAGE)
    with pytest.raises(PlanError, match="cannot assign sections"):
        provider_plan.load()


def test_placement_errors(provider_plan: Plan) -> None:
    mod = provider_plan.root
    code = provider_plan.create_arena(MemoryClass.CODE)
    with pytest.raises(PlanError, match="cannot go into"):
        mod.section(".data").assign(code, 0)
    data = provider_plan.create_arena(MemoryClass.DATA)
    with pytest.raises(PlanError, match="alignment"):
        mod.section(".data").assign(data, 1)
    mod.section(".data").assign(data, 0)
    with pytest.raises(PlanError, match="overlaps"):
        mod.section(".bss").assign(data, 0) if mod.section(".bss").size else \
            pytest.fail("fixture has no .bss")
    with pytest.raises(PlanError, match="not a multiple|page size"):
        provider_plan.create_arena(MemoryClass.CODE, page_size=3000)
    with pytest.raises(PlanError, match="override is"):
        mod.section(".data").set_data(b"x")


def test_whole_image_code_override_from_file(libs: dict[str, Path]) -> None:
    """Patch code of a file-backed (r-x) mapping: provider_value returns 2."""
    plan = scan(libs["plain"])
    mod = plan.root
    text = mod.section(".text")
    syms = mod.elf.symbols
    assert syms is not None
    i = syms.find("provider_value")
    assert i is not None
    off = syms.values[i] - text.addr
    code = bytearray(text.data())
    assert code[off:off + 6] == b"\xb8\x01\x00\x00\x00\xc3"  # mov $1, %eax; ret
    code[off + 1] = 2
    text.set_data(code)
    with plan.load() as lib:
        assert lib.function("provider_value", ctypes.c_int)() == 2
        assert read_value(lib) == bytes([1, 2, 3, 4])
