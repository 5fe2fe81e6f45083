"""Symbol binding rules (relink-study §4.2 relocator scenarios, for shared objects)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
from core_fixtures import shared

import relink

pytestmark = pytest.mark.needs_cc


def pointer(m: relink.Module, name: str) -> int:
    return ctypes.c_void_p.from_address(m.symbol(name) or 0).value or 0


@pytest.mark.parametrize("from_bytes", [False, True])
def test_eager_binding(consumer: Path, provider: Path, from_bytes: bool) -> None:
    resolver = relink.SearchPathResolver(fixed_dirs=(str(provider.parent),))
    source = consumer.read_bytes() if from_bytes else consumer
    with relink.load(source, resolver=resolver) as m:
        prov = m.dependencies[0]
        assert prov.name == "libprovider.so"
        assert pointer(m, "external_pointer") == prov.symbol("external_value")
        assert m.function("call_external", ctypes.c_int, ctypes.c_int)(5) == 22


def test_relative_relocations() -> None:
    lib = shared("relative")
    for source in (lib, lib.read_bytes()):
        with relink.load(source) as m:
            local = m.function("local_address", ctypes.c_void_p)()
            assert pointer(m, "relative_pointer") == local
            assert m.function("read_relative", ctypes.c_int)() == 23
            at = m.function("string_at", ctypes.c_char_p, ctypes.c_int)
            assert [at(i) for i in range(3)] == [b"zero", b"one", b"two"]


def test_irelative_and_ifunc_symbols() -> None:
    lib = shared("ifunc")
    for source in (lib, lib.read_bytes()):
        with relink.load(source) as m:
            assert m.function("call_selected", ctypes.c_int)() == 73
            # dlsym semantics: the exported IFUNC symbol resolves to the implementation.
            impl = m.symbol("exported_selected")
            fp = m.function("selected_pointer", ctypes.c_void_p)()
            assert impl == fp
            assert m.function("exported_selected", ctypes.c_int)() == 73


def test_synthetic_precedes_loaded(consumer: Path, provider: Path) -> None:
    host_value = ctypes.c_int(100)
    host = relink.SyntheticModule("__host", {"external_value": host_value})
    with relink.load(provider) as prov:
        with relink.load(consumer, scope=[host, prov]) as m:
            assert pointer(m, "external_pointer") == ctypes.addressof(host_value)
            # external_fn is not synthetic: it comes from the scope's provider instance.
            assert m.function("call_external", ctypes.c_int, ctypes.c_int)(1) == 18


def test_loaded_precedes_synthetic(consumer: Path, provider: Path) -> None:
    host_value = ctypes.c_int(100)
    host = relink.SyntheticModule("__host", {"external_value": host_value})
    with relink.load(provider) as prov:
        with relink.load(consumer, scope=[prov, host]) as m:
            assert pointer(m, "external_pointer") == prov.symbol("external_value")


def test_synthetic_python_function(consumer: Path, provider: Path) -> None:
    calls: list[int] = []

    def fake_external_fn(v: int) -> int:
        calls.append(v)
        return v * 1000

    host = relink.SyntheticModule("__mock", {
        "external_fn": (fake_external_fn, ctypes.c_int, ctypes.c_int)})
    with relink.load(consumer, scope=[host]) as m:
        assert m.function("call_external", ctypes.c_int, ctypes.c_int)(7) == 7000
        assert calls == [7]


def test_weak_undefined_is_zero() -> None:
    lib = shared("weak")
    with relink.load(lib) as m:
        assert pointer(m, "weak_pointer") == 0
        assert m.function("has_weak_fn", ctypes.c_int)() == 0
    provide = ctypes.c_int(5)
    with relink.load(lib, scope=[relink.SyntheticModule("w", {"weak_value": provide})]) as m:
        assert pointer(m, "weak_pointer") == ctypes.addressof(provide)


def test_scope_interposes_by_default(defining: Path, provider: Path) -> None:
    with relink.load(provider) as prov:
        with relink.load(defining, scope=[prov]) as m:
            assert pointer(m, "external_pointer") == prov.symbol("external_value")
            assert m.function("read_value", ctypes.c_int)() == 17
        with relink.load(defining) as alone:
            assert pointer(alone, "external_pointer") == alone.symbol("external_value")
            assert alone.function("read_value", ctypes.c_int)() == 23


def test_symbolic_prefers_self(symbolic: Path, provider: Path) -> None:
    with relink.load(provider) as prov:
        with relink.load(symbolic, scope=[prov]) as m:
            assert pointer(m, "external_pointer") == m.symbol("external_value")
            assert m.function("read_value", ctypes.c_int)() == 23


def test_unresolved_symbol_fails_with_names() -> None:
    lib = shared("unresolved", ldflags=["-Wl,-z,now"])
    with pytest.raises(relink.UnknownSymbolError) as info:
        relink.load(lib)
    err = info.value
    assert err.symbol == "missing_func"
    assert err.r_type_name == "R_X86_64_JUMP_SLOT"
    assert err.file == str(lib)
    assert "libunresolved.so" in err.searched and "<process>" in err.searched
    assert "missing_func" in str(err) and "R_X86_64_JUMP_SLOT" in str(err)


def test_failed_load_leaves_nothing_behind() -> None:
    import os

    lib = shared("unresolved", ldflags=["-Wl,-z,now"])
    before_maps = Path("/proc/self/maps").read_text().count(str(lib.parent))
    before_fds = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(relink.UnknownSymbolError):
            relink.load(lib)
    assert Path("/proc/self/maps").read_text().count(str(lib.parent)) == before_maps
    assert len(os.listdir("/proc/self/fd")) == before_fds


def test_interpose_from_python(consumer: Path) -> None:
    seen: list[int] = []

    def spy(v: int) -> int:
        seen.append(v)
        return -v

    with relink.load(consumer, interpose={
            "external_fn": (spy, ctypes.c_int, ctypes.c_int)}) as m:
        assert m.function("call_external", ctypes.c_int, ctypes.c_int)(4) == -4
    assert seen == [4]


def test_gnu_unique_has_one_definition() -> None:
    from core_fixtures import src

    from relink.elf import ElfFile
    from support.build import build_shared

    b = build_shared("uniqb", {"unique.cpp": src("unique.cpp")}, group="core-unique",
                     lang="c++", cflags=["-DSIDE_B"], soname="libuniqb.so",
                     ldflags=["-Wl,-Bsymbolic"])
    a = build_shared("uniqa", {"unique.cpp": src("unique.cpp")}, group="core-unique",
                     lang="c++", soname="libuniqa.so", deps=[b],
                     ldflags=["-Wl,-rpath,$ORIGIN"])
    syms = ElfFile(b).symbols
    assert syms is not None
    assert any(info >> 4 == 10 for info in syms.infos)  # STB_GNU_UNIQUE present
    with relink.load(a) as m:
        a_counter = m.function("a_counter", ctypes.c_void_p)()
        b_counter = m.function("a_sees_b", ctypes.c_void_p)()
        # libb (-Bsymbolic) binds first to its own definition, which becomes canonical;
        # liba's reference then gets the same object instead of its own copy.
        assert a_counter == b_counter
