"""Linking objects together: calls and data across objects, libc, archives, scopes.

Ports relink-study §4.2 object scenarios to gcc-built x86_64 objects, across -O0/-O2,
PIC/PIE/non-PIC, per-function sections and -fno-plt.
"""

from __future__ import annotations

import ctypes
import itertools
import subprocess
from pathlib import Path

import pytest
from objsupport import archive, needs_gcc, obj, shared

import relink
from relink.errors import (
    ElfParseError,
    LinkerError,
    RelinkError,
    RelocationOverflowError,
    UnknownSymbolError,
    UnsupportedError,
)

pytestmark = [needs_gcc]

MATRIX = [list(f) for f in itertools.product(
    ["-O0", "-O2"], ["-fPIC", "-fno-pic", "-fPIE"],
    ["", "-ffunction-sections -fdata-sections"], ["", "-fno-plt"])]
IDS = ["_".join(x for x in m if x).replace(" ", "") for m in MATRIX]


def _flags(m: list[str]) -> list[str]:
    return [f for part in m for f in part.split()] + ["-fcommon"]


def _pair(flags: list[str]) -> tuple[Path, Path]:
    return obj("calc_a.c", flags), obj("calc_b.c", flags)


def _check_calc(m: relink.Module) -> None:
    compute = m.function("a_compute", ctypes.c_int, ctypes.c_int)
    # b_scale(5) = 15, b_value = 7, b_table[2] = 30, strlen("hello from a") = 12
    assert compute(5) == 15 + 7 + 30 + 12
    assert m.function("a_counter", ctypes.c_int)() == 101  # constructor ran, then +1
    buf = ctypes.create_string_buffer(64)
    n = m.function("a_format", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int)(
        buf, 64, 42)
    assert buf.value == b"v=42 bee" and n == 8
    assert m.variable("b_value", ctypes.c_int).value == 7
    fnptr = m.function("a_fnptr", ctypes.c_void_p)()
    assert fnptr == m.symbol("b_scale")


@pytest.mark.parametrize("m", MATRIX, ids=IDS)
def test_two_objects_link_and_run(m: list[str]) -> None:
    a, b = _pair(_flags(m))
    with relink.load_object([a, b]) as mod:
        _check_calc(mod)
        assert mod.state == "initialized"
        # COMMON in both objects -> one variable; merged identical literals -> one copy
        assert mod.function("a_common_addr", ctypes.c_void_p)() == \
            mod.function("b_common_addr", ctypes.c_void_p)() == mod.symbol("shared_common")
        sa = mod.function("a_dup_string", ctypes.c_void_p)()
        sb = mod.function("b_dup_string", ctypes.c_void_p)()
        assert ctypes.string_at(sa) == b"duplicated literal"
        if "-O0" not in m:  # -O2 puts literals in SHF_MERGE sections: one copy wins
            assert sa == sb


@pytest.mark.parametrize("relax", [True, False])
def test_gotpcrelx_relaxation(relax: bool) -> None:
    a, b = _pair(["-O2", "-fPIC", "-fno-plt", "-fcommon"])
    with relink.load_object([a, b], relax=relax) as mod:
        _check_calc(mod)
        counts = mod._state.counts
        assert counts["GOTPCRELX"] and counts["REX_GOTPCRELX"]
        relaxed = counts.get("GOTPCRELX (relaxed)", 0) + counts.get("REX_GOTPCRELX (relaxed)",
                                                                    0)
        assert bool(relaxed) == relax
        text = mod._state.section(".text")
        assert text is not None
        code = ctypes.string_at(text.address, text.size)
        assert (b"\x67\xe8" in code) == relax  # call *f@GOTPCREL -> addr32 call f


def test_from_bytes_and_order_independent() -> None:
    a, b = _pair(["-O2", "-fcommon"])
    with relink.load_object([b.read_bytes(), a.read_bytes()], name="calc") as mod:
        assert mod.name == "calc"
        _check_calc(mod)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        with relink.load_object([fa, fb]) as mod:
            _check_calc(mod)


def test_sections_are_grouped_by_permission() -> None:
    a, b = _pair(["-O2", "-fcommon", "-ffunction-sections", "-fdata-sections"])
    mod = relink.load_object([a, b])
    st = mod._state
    groups = {s.group for s in st.sections}
    assert {"text", "rodata", "data", "relro"} <= groups
    for addr, size, prot in mod.segments:
        assert addr % 4096 == 0 and size % 4096 == 0
        assert not (prot & 2 and prot & 4), "a segment is writable and executable"
    text = next(s for s in st.sections if s.name == ".text.a_compute")
    assert mod.contains(text.address)
    assert _maps_prot(text.address) == "r-xp"
    relro = next(s for s in st.sections if s.name == ".init_array")
    assert _maps_prot(relro.address) == "r--p"  # read-only after init
    data = next(s for s in st.sections if s.name.startswith(".data"))
    assert _maps_prot(data.address) == "rw-p"
    mod.close()
    assert mod.closed


def _maps_prot(addr: int) -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        rng, perms = line.split()[:2]
        lo, hi = (int(x, 16) for x in rng.split("-"))
        if lo <= addr < hi:
            return perms
    return ""


def test_archive_pulls_only_needed_members(tmp_path: Path) -> None:
    main = obj("arch_main.c")
    lib = archive("arch", [obj("ar_poison.c"), obj("ar_one.c"), obj("ar_two.c")])
    with relink.load_object([main, lib]) as mod:
        assert mod.function("arch_main", ctypes.c_int, ctypes.c_int)(4) == 1005 + 8
        assert mod.symbol("ar_poison") is None  # never pulled in
        labels = {s.object for s in mod._state.sections}
        assert any("ar_one" in x for x in labels) and not any("poison" in x for x in labels)
    # the same archive without a symbol index (members' symtabs are scanned), as bytes
    noindex = tmp_path / "libnoindex.a"
    subprocess.run(["ar", "rcS", str(noindex), str(obj("ar_two.c")), str(obj("ar_one.c"))],
                   check=True)
    with relink.load_object([main, noindex.read_bytes()]) as mod:
        assert mod.function("arch_main", ctypes.c_int, ctypes.c_int)(1) == 1007
    with pytest.raises(UnknownSymbolError, match="this_symbol_does_not_exist_anywhere"):
        relink.load_object(lib, whole_archive=True)


def test_scope_shared_object_and_synthetic_module() -> None:
    prov = relink.load(shared("objprovider", (Path(__file__).parent / "fixtures" /
                                              "provider.c").read_text()))
    data = ctypes.c_long(1000)
    synth = relink.SyntheticModule("py", {
        "py_callback": (lambda v: v * 10, ctypes.c_int, ctypes.c_int), "py_data": data})
    # -fPIC: the variables are read through GOT slots, so nothing constrains where the
    # image goes (GCC's default PIE code reads them PC-relative: provider_value in the
    # relink-mapped library and py_data in Python's heap can be >2 GiB apart in a long
    # run; test_symbols_mapping_and_resolve_hook covers that code with near variables).
    with relink.load_object(obj("scoped.c", ["-O2", "-fPIC"]), scope=[synth, prov]) as mod:
        # provider_fn(2) = 19, provider_value = 17, py_callback(2) = 20, py_data = 1000
        assert mod.function("scoped_sum", ctypes.c_int, ctypes.c_int)(2) == 19 + 17 + 20 + 1000
    prov.close()


def test_symbols_mapping_and_resolve_hook() -> None:
    asked: list[str] = []
    # The object reads both variables with 32-bit PC-relative fields (GCC's PIE code): the
    # image is placed within 2 GiB of them, which needs them within 2 GiB of each other.
    # Two separate ctypes objects can land in heap arenas farther apart than that (seen
    # in long test runs): one buffer holds both.
    both = (ctypes.c_long * 2)()
    value = ctypes.c_int.from_buffer(both, 0)
    value.value = 5
    data = ctypes.c_long.from_buffer(both, 8)
    data.value = 3

    def hook(name: str) -> int | None:
        asked.append(name)
        return ctypes.addressof(value) if name == "provider_value" else None

    with relink.load_object(obj("scoped.c"), symbols={
            "provider_fn": (lambda v: v + 1, ctypes.c_int, ctypes.c_int),
            "py_callback": (lambda v: 0, ctypes.c_int, ctypes.c_int),
            "py_data": data}, resolve=hook, host=False) as mod:
        assert mod.function("scoped_sum", ctypes.c_int, ctypes.c_int)(1) == 2 + 5 + 0 + 3
    assert asked == ["provider_value"]


def test_data_out_of_pc32_reach_says_how_to_fix() -> None:
    """Two variables 2+ GiB apart read by 32-bit PC-relative fields: no placement reaches
    both; the error says so and names the fix."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    far = libc.mmap(0x100000000, 4096, 3, 0x22, -1, 0)  # a hint: 4 GiB, RW, private anon
    assert far and far != ctypes.c_void_p(-1).value
    try:
        near = ctypes.c_long(3)
        if abs(ctypes.addressof(near) - far) < 1 << 33:
            pytest.skip("the heap is within 8 GiB of the low mapping here")
        with pytest.raises(RelocationOverflowError) as exc:
            relink.load_object(obj("scoped.c"), symbols={
                "provider_fn": (lambda v: v + 1, ctypes.c_int, ctypes.c_int),
                "py_callback": (lambda v: 0, ctypes.c_int, ctypes.c_int),
                "py_data": near, "provider_value": far}, host=False)
        assert exc.value.symbol in {"py_data", "provider_value"}
        assert any("-fPIC" in n for n in exc.value.__notes__)
    finally:
        libc.munmap(far, 4096)


def test_unresolved_symbol_names_what_was_searched() -> None:
    synth = relink.SyntheticModule("only-this", {})
    with pytest.raises(UnknownSymbolError) as exc:
        relink.load_object(obj("scoped.c"), scope=[synth])
    err = exc.value
    assert err.symbol in {"provider_fn", "provider_value", "py_callback", "py_data"}
    assert "only-this" in err.searched and "<process>" in err.searched
    assert "scoped" in str(err)


def test_duplicate_strong_definition_is_an_error() -> None:
    b = obj("calc_b.c", ["-O2", "-fcommon"])
    with pytest.raises(LinkerError, match="multiple definition of 'b_"):
        relink.load_object([b, b.read_bytes()])


def test_bad_inputs() -> None:
    b = obj("calc_b.c", ["-O2", "-fcommon"]).read_bytes()
    with pytest.raises(ElfParseError):
        relink.load_object(b[:100])
    with pytest.raises(ElfParseError):
        relink.load_object(b"!<arch>\nnot-a-member-header")
    with pytest.raises(UnsupportedError, match="relink.load"):
        relink.load_object(shared("objprovider", "int x;"))
    with pytest.raises(RelinkError):
        relink.load_object(b"\x7fELF" + bytes(60))
    with pytest.raises(ValueError):
        relink.load_object([])


@pytest.mark.parametrize("flags", [["-O2", "-fPIC"], ["-O0"], ["-O2", "-fno-pic"]])
def test_weak_symbols(flags: list[str]) -> None:
    with relink.load_object(obj("weak_a.c", flags), host=False) as mod:
        assert mod.function("weak_missing_addr_is_null", ctypes.c_int)() == 1
        assert mod.function("call_overridable", ctypes.c_int)() == 1
    with relink.load_object([obj("weak_a.c", flags), obj("weak_b.c", flags)]) as mod:
        assert mod.function("call_overridable", ctypes.c_int)() == 2  # strong wins
