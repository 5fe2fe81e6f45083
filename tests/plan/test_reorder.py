"""Section-region materialization of real libraries: moved code still computes the right
values (static calls, function-pointer tables, switches, strings, GOT, TLS, PLT), hot-code
packing across modules, huge-page arenas, unrepairable input, and the ``relink plan`` CLI.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from plan_support import HERE, with_value

import relink
from relink.cli import main
from relink.elf import ElfFile
from relink.errors import MappingError, PlanError
from relink.memory.buffer import BufferMapper
from relink.plan import HUGE_PAGE, MemoryClass, hot_pack, read_profile, scan
from support.build import FixtureBuildError, build_shared

pytestmark = pytest.mark.needs_cc

RICH = ["twice", "apply", "classify", "bump", "greet_len", "call_twice", "tls_bump"]


def check_rich(lib: object) -> None:
    f = lib.function  # type: ignore[attr-defined]
    assert f("twice", ctypes.c_int, ctypes.c_int)(21) == 42
    assert f("apply", ctypes.c_int, ctypes.c_int, ctypes.c_int)(0, 7) == 49
    assert f("apply", ctypes.c_int, ctypes.c_int, ctypes.c_int)(1, 7) == 14
    assert [f("classify", ctypes.c_int, ctypes.c_int)(i) for i in range(8)] == \
        [11, 22, 37, 41, 55, 69, 70, -1]
    assert f("bump", ctypes.c_int)() == 11
    assert f("greet_len", ctypes.c_ulong)() == 5
    assert f("call_twice", ctypes.c_int, ctypes.c_int)(3) == 15


def test_chain_reordered_returns_right_values(libs: dict[str, Path]) -> None:
    with scan(libs["root"]) as plan, plan.load() as lib:
        assert lib.function("root_value", ctypes.c_int)() == 3
        dep = lib.dependencies[0]
        assert dep.function("dependent_value", ctypes.c_int)() == 2


def test_rich_library_reordered(libs: dict[str, Path]) -> None:
    plan = scan(libs["rich"])
    with plan.load() as lib:
        check_rich(lib)
        try:
            assert lib.function("tls_bump", ctypes.c_int)() == 6
        except Exception as exc:  # no TLS runtime: must be a clear relink error
            pytest.fail(f"TLS in a moved module failed: {exc}")
        code = next(a for a in plan.arenas if a.mem_class is MemoryClass.CODE)
        assert code.address is not None and code.address % HUGE_PAGE == 0
        assert code.address <= lib.symbol("classify") < code.address + code.size


def test_unwind_tables_follow_moved_code(libs: dict[str, Path]) -> None:
    """.eh_frame_hdr's search table is rebuilt: sorted, and each entry's start address
    is the pc_begin of the FDE it points to."""
    plan = scan(libs["rich"])
    plan.run(hot_pack(["classify", "twice"]))
    with plan.load() as lib:
        mod = plan.root
        hdr = mod.section(".eh_frame_hdr")
        frame = mod.section(".eh_frame")
        hdr_addr = hdr.placement.arena.address + hdr.placement.offset  # type: ignore
        raw = ctypes.string_at(hdr_addr, hdr.size)
        count = struct.unpack_from("<I", raw, 8)[0]
        rows = [struct.unpack_from("<ii", raw, 12 + 8 * k) for k in range(count)]
        assert [r[0] for r in rows] == sorted(r[0] for r in rows)
        frame_addr = frame.placement.arena.address + frame.placement.offset  # type: ignore
        starts = set()
        for loc, fde in rows:
            at = hdr_addr + fde
            assert frame_addr <= at < frame_addr + frame.size
            pc_field = at + 8
            pc = pc_field + struct.unpack("<i", ctypes.string_at(pc_field, 4))[0]
            assert pc == hdr_addr + loc
            starts.add(pc)
        assert lib.symbol("classify") in starts


def test_hot_pack_across_modules(libs: dict[str, Path], tmp_path: Path) -> None:
    profile = tmp_path / "hot.txt"
    profile.write_text("# count name\n10 provider_value\n500 classify\n20 root_value\n"
                       "1 not_a_function\n")
    assert read_profile(profile) == ["classify", "root_value", "provider_value",
                                     "not_a_function"]
    plan = scan(libs["root"])
    rich = scan(libs["rich"])
    packer = hot_pack(profile)
    plan.run(packer)
    assert [(m, f) for m, f, _n, _o in packer.packed] == [("libroot.so", "root_value"),
                                                         ("libprovider.so", "provider_value")]
    assert packer.missing == ["classify", "not_a_function"]
    hot = next(a for a in plan.arenas if a.name == "code.hot")
    with plan.load() as lib:
        assert hot.address is not None and hot.address % HUGE_PAGE == 0
        assert lib.symbol("root_value") == hot.address
        prov = lib.dependencies[0].dependencies[0]
        assert hot.address < prov.symbol("provider_value") < hot.address + 64
        assert lib.function("root_value", ctypes.c_int)() == 3
        assert "smaps_kb" in hot.huge and hot.huge["mode"] == "auto"
        assert hot.huge["madvise"] or hot.huge["hugetlb"]
    rich.run(hot_pack(RICH))
    with rich.load() as lib:
        check_rich(lib)


def test_hot_pack_refuses_relocation_free_branch(libs: dict[str, Path]) -> None:
    """Without -ffunction-sections, gas resolves a call to a static function of the same
    section itself: the caller cannot move alone (its callee could)."""
    plan = scan(libs["norel"])
    with pytest.raises(PlanError, match="caller branches to helper"):
        plan.run(hot_pack(["caller"]))
    with pytest.raises(PlanError, match="no size"):
        scan(libs["provider"]).run(hot_pack(["deregister_tm_clones"]))
    plan = scan(libs["norel"])
    plan.run(hot_pack(["helper"]))  # the original copy stays valid for relocation-free calls
    with plan.load() as lib:
        assert lib.function("caller", ctypes.c_int, ctypes.c_int)(4) == 10


def test_unsupported_retained_relocation_fails_before_mapping(libs: dict[str, Path]) -> None:
    raw = bytearray(libs["rich"].read_bytes())
    with ElfFile(bytes(raw)) as elf:
        rela = elf.section(".rela.text")
        assert rela is not None
        at = rela.sh_offset + 8
    info = struct.unpack_from("<Q", raw, at)[0]
    struct.pack_into("<Q", raw, at, (info & ~0xFFFFFFFF) | 14)  # R_X86_64_8
    plan = scan(bytes(raw), name="librich.so")
    mapper = BufferMapper()
    with pytest.raises(PlanError, match="R_X86_64_8") as exc:
        plan.load(mapper=mapper)
    assert "librich.so" in str(exc.value)


def test_cli_plan(libs: dict[str, Path], capsys: pytest.CaptureFixture[str],
                  tmp_path: Path) -> None:
    assert main(["plan", str(libs["root"])]) == 0
    out = capsys.readouterr().out
    assert "libprovider.so" in out and "capability: reorderable" in out
    assert ".text" in out and "code" in out
    assert main(["plan", str(libs["plain"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    mod = data["modules"][0]
    assert mod["capability"] == "section_data"
    data_sec = next(s for s in mod["sections"] if s["name"] == ".data")
    assert data_sec["class"] == "data" and data_sec["align"] >= 1
    assert main(["plan", str(libs["root"]), "--hot", "root_value", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert any(a["name"] == "code.hot" for a in data["arenas"])
    assert data["hot"]["packed"][0]["function"] == "root_value"
    profile = tmp_path / "hot.prof"
    profile.write_text("provider_value\n")
    assert main(["plan", str(libs["root"]), "--hot", str(profile)]) == 0
    out = capsys.readouterr().out
    assert "code.hot" in out and "hot functions packed: 1" in out
    assert main(["plan", str(libs["plain"])]) == 0
    assert "arenas: none" in capsys.readouterr().out
    assert main(["plan", "/nonexistent/libx.so"]) == 1


def test_rich_library_from_bytes_and_loaded_twice(libs: dict[str, Path]) -> None:
    plan = scan(libs["rich"].read_bytes(), name="librich.so")
    first = plan.load()
    second = plan.load()  # the same plan materializes again: two independent copies
    try:
        check_rich(first)
        assert second.function("bump", ctypes.c_int)() == 11  # its own counter
        assert first.symbol("twice") != second.symbol("twice")
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("mode", ["thp", "off", "hugetlb"])
def test_huge_page_modes(libs: dict[str, Path], mode: str) -> None:
    plan = scan(libs["provider"])
    try:
        lib = plan.load(hugepages=mode)
    except MappingError as exc:
        assert mode == "hugetlb" and "nr_hugepages" in str(exc)
        return
    with lib:
        code = next(a for a in plan.arenas if a.mem_class is MemoryClass.CODE)
        assert code.address is not None and code.address % HUGE_PAGE == 0
        assert code.huge["mode"] == mode
        assert code.huge["madvise"] is (mode == "thp")
        if mode == "hugetlb":
            assert code.huge["hugetlb"] and code.huge["smaps_kb"]["Private_Hugetlb"] >= 2048
        assert lib.function("provider_value", ctypes.c_int)() == 1
    with pytest.raises(ValueError, match="huge page mode"):
        scan(libs["provider"]).load(hugepages="bogus")


def test_planned_module_serves_a_link_context(libs: dict[str, Path]) -> None:
    """A plan-loaded provider registered in a LinkContext satisfies later loads' needs."""
    plan = scan(libs["provider"])
    plan.root.section(".data").set_data(with_value(plan.root, bytes([5, 5, 5, 5])))
    with plan.load() as provider, relink.LinkContext() as ctx:
        lease = ctx.insert("libprovider.so", provider)  # the lease keeps it registered
        dep = ctx.load(str(libs["dependent"]))
        assert dep.function("dependent_value", ctypes.c_int)() == 2
        assert dep.dependencies[0].symbol("provider_value") == \
            provider.symbol("provider_value")
        assert ctx.how_found(dep.dependencies[0]) == "inserted"
        dep.close()
        lease.close()


def test_foreign_module_whole_image_into_buffer(libs: dict[str, Path]) -> None:
    pytest.importorskip("ziglang")
    try:
        lib = build_shared("provider", (HERE / "provider.c").read_text(), cc="zig",
                           target="aarch64-linux-gnu", cflags=["-O1", "-nostdlib"],
                           ldflags=["-nostdlib"], group="plan-aarch64")
    except FixtureBuildError as exc:
        pytest.skip(f"zig cannot build for aarch64 here: {exc}")
    plan = scan(lib)
    mod = plan.root
    assert mod.header.machine_name == "aarch64"
    assert mod.capability.name == "SECTION_DATA" and "x86_64 only" in mod.capability_reason
    assert plan.options["host"].family == ()  # the host serves nothing to a foreign image
    mod.section(".data").set_data(with_value(mod, bytes([7, 7, 7, 7])))
    mapper = BufferMapper()
    with pytest.raises(relink.ArchMismatchError):
        scan(lib).load()  # native mapper
    loaded = plan.load(mapper=mapper)
    with loaded:
        region = loaded._state.image.region
        assert region.read(loaded.symbol("value"), 4) == bytes([7, 7, 7, 7])


def _patched(lib: Path, section: str, at: int, new: bytes) -> bytes:
    raw = bytearray(lib.read_bytes())
    with ElfFile(bytes(raw)) as elf:
        sh = elf.section(section)
        assert sh is not None
        raw[sh.sh_offset + at:sh.sh_offset + at + len(new)] = new
    return bytes(raw)


@pytest.mark.parametrize("section,at,new,message", [
    (".rela.text", 8 + 4, struct.pack("<I", 0xFFFFFF), "symbol index"),
    (".rela.text", 0, struct.pack("<Q", 0x10), "outside the section"),
    (".eh_frame_hdr", 0, b"\x02", "version"),
    (".plt", 0, b"\x0f\x0b", "unrecognized instruction"),
    (".rela.dyn", 0, struct.pack("<Q", 0x7FFFFFF0), "not inside any allocated section"),
], ids=["bad-symbol", "bad-place", "eh-frame-hdr", "plt", "dyn-offset"])
def test_corrupt_reorderable_input_fails_before_mapping(libs: dict[str, Path], section: str,
                                                        at: int, new: bytes, message: str
                                                        ) -> None:
    lib = libs["rich"] if section != ".plt" else libs["dependent"]
    raw = _patched(lib, section, at, new)
    plan = scan(raw, name=lib.name, missing_ok=True)
    plan.missing.clear()  # the repair runs before dependencies would be needed
    mapper = BufferMapper()
    reserved: list[int] = []
    real = mapper.reserve
    mapper.reserve = lambda size, **kw: reserved.append(size) or real(size, **kw)  # type: ignore
    with pytest.raises(PlanError, match=message) as exc:
        plan.load(mapper=mapper)
    assert lib.name in str(exc.value)
    assert reserved == []


def test_scan_survives_random_section_table_damage(libs: dict[str, Path]) -> None:
    """Flipping bytes of the section header table never escapes as a non-RelinkError:
    the module is planned (possibly opaque) or the scan fails with an ElfParseError."""
    import random

    raw = libs["provider"].read_bytes()
    with ElfFile(raw) as elf:
        shoff, shsize = elf.header.e_shoff, elf.header.e_shnum * 64
    rng = random.Random(1234)
    for _ in range(200):
        buf = bytearray(raw)
        for _k in range(rng.randint(1, 6)):
            buf[shoff + rng.randrange(shsize)] = rng.randrange(256)
        try:
            plan = scan(bytes(buf), name="libprovider.so")
        except relink.RelinkError:
            continue
        plan.describe()
        plan.close()


@pytest.mark.parametrize("hot", [False, True], ids=["regions", "hot-packed"])
def test_cxx_exceptions_unwind_through_moved_code(libs: dict[str, Path], hot: bool) -> None:
    plan = scan(libs["throwing"])
    if hot:
        packer = hot_pack(["_Z7throweri", "_Z6middlei", "catcher"])
        plan.run(packer)
        assert len(packer.packed) == 3
    with plan.load() as lib:
        catcher = lib.function("catcher", ctypes.c_int, ctypes.c_int)
        assert catcher(0) == 2
    # Thrown in thrower, unwound through middle, caught in catcher. A stale unwind table
    # ends in std::terminate (abort), so the throw runs in a fresh interpreter (not a
    # fork: the test process may have threads holding loader locks).
    script = f"""if True:
        import ctypes
        from relink.plan import hot_pack, scan
        plan = scan({str(libs["throwing"])!r})
        if {hot!r}:
            plan.run(hot_pack(["_Z7throweri", "_Z6middlei", "catcher"]))
        lib = plan.load()
        print(lib.function("catcher", ctypes.c_int, ctypes.c_int)(1))
    """
    src = str(Path(relink.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, f"child failed ({proc.returncode}): {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "42"
