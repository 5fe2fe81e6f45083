"""Initializers, finalizers, protections and hooks of loaded objects (relink-study §4.6).

Also C++ objects (static constructors, COMDAT inline functions, exceptions), IFUNC,
thread-local storage in every x86_64 model, far code and SIZE relocations.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import pytest
from objsupport import needs_gcc, obj

import relink
from relink.errors import (
    RelocationOverflowError,
    UnknownSymbolError,
    UnsupportedError,
    UnsupportedRelocationError,
)
from relink.memory.buffer import BufferMapper
from relink.object.layout import SectionGroup

pytestmark = [needs_gcc]
RECORD = ctypes.CFUNCTYPE(None, ctypes.c_int)


def _recorder() -> tuple[list[int], dict[str, object]]:
    seen: list[int] = []
    return seen, {"record": (seen.append, None, ctypes.c_int)}


def _prot(addr: int) -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        rng, perms = line.split()[:2]
        lo, hi = (int(x, 16) for x in rng.split("-"))
        if lo <= addr < hi:
            return perms
    return ""


@pytest.mark.parametrize("flags", [["-O2", "-fPIC"], ["-O0", "-fno-pic"]])
def test_init_fini_order_and_scratch(flags: list[str]) -> None:
    seen, syms = _recorder()
    mod = relink.load_object(obj("lifecycle.c", flags), symbols=syms)
    # priorities first (101, 202, 300), then .ctors (ld moves them into .init_array,
    # reversed) and unprioritized .init_array entries in input order.
    assert seen[:2] == [1, 2] and set(seen) == {1, 2, 3, 4, 5}
    assert mod.function("get_configured", ctypes.c_int)() == 42  # .init.text ran
    st = mod._state
    init_text = st.section(".init.text")
    assert init_text is not None and init_text.group == "init_text"
    assert _prot(init_text.address) == "---p"  # released after init
    assert mod.symbol("boot_setup") is None and mod.symbol("boot_param") is None
    table = st.section(".data.rel.ro.local") or st.section(".data.rel.ro") or \
        st.section(".rodata")
    assert table is not None
    assert mod.function("read_table", ctypes.c_int, ctypes.c_int)(0) == 9
    if table.group == "relro":
        assert _prot(table.address) == "r--p"  # read-only after init
    seen.clear()
    mod.close()
    assert seen == [-3, -1, -2] or seen == [-1, -2, -3] or sorted(seen) == [-3, -2, -1]
    assert seen.index(-1) < seen.index(-2)  # destructor(150) runs after the default one
    mod.close()  # idempotent


def test_deferred_init_and_buffer_protections() -> None:
    seen, syms = _recorder()
    mapper = BufferMapper(base=0x40000000)
    mod = relink.load_object(obj("lifecycle.c", ["-O2", "-fPIC"]), symbols=syms,
                             mapper=mapper)
    assert mod.state == "relocated" and seen == []  # nothing runs in a buffer
    region = mapper.regions[0]
    relro = mod._state.section(".init_array")
    assert relro is not None and region.protection_at(relro.address) == 3  # RW until init
    calls: list[tuple[str, int]] = []

    class Recording:
        def call_init(self, func: int, argc: int, argv: int, envp: int) -> None:
            calls.append(("init", func))

        def call_fini(self, func: int) -> None:
            calls.append(("fini", func))

        def call_ifunc(self, resolver: int) -> int:
            return resolver

    mod._state.executor = Recording()
    mod.initialize()
    mod.initialize()  # once only
    assert len(calls) == 6 and all(k == "init" for k, _ in calls)
    assert all(mod.contains(f) for _, f in calls)
    assert region.protection_at(relro.address) == 1  # final protection: read-only
    init_text = mod._state.section(".init.text")
    assert init_text is not None and region.protection_at(init_text.address) == 0
    mod.close()
    assert [k for k, _ in calls[6:]] == ["fini"] * 3


def test_layout_hook_custom_group_and_skip() -> None:
    mapper = BufferMapper(base=0x50000000)
    seen: list[str] = []

    def hook(info: relink.object.layout.SectionInfo) -> str | None:
        seen.append(info.name)
        if info.name == ".data":
            return "sealed"
        if info.name == ".eh_frame":
            return "skip"
        return None

    sealed = SectionGroup("sealed", 3, 1, 20)
    mod = relink.load_object(obj("calc_b.c", ["-O2", "-fcommon"]), mapper=mapper,
                             layout=hook, groups=[sealed])
    assert ".data" in seen and ".text" in seen
    data = mod._state.section(".data")
    assert data is not None and data.group == "sealed"
    assert mod._state.section(".eh_frame") is None
    assert mapper.regions[0].read(mod.symbol("b_table") or 0, 8) == bytes([10, 0, 0, 0, 20, 0,
                                                                         0, 0])
    mod._state.initialize(0, 0, 0)
    assert mapper.regions[0].protection_at(data.address) == 1
    with pytest.raises(UnsupportedError, match="writable and executable"):
        SectionGroup("bad", 7, 5, 1)


def test_exports_filter() -> None:
    o = obj("calc_b.c", ["-O2", "-fcommon"])
    with relink.load_object(o, exports=["b_scale"]) as mod:
        assert mod.symbol("b_scale") is not None and mod.symbol("b_value") is None
    with relink.load_object(o, exports=lambda n, a, s, t: t == 1) as mod:
        assert mod.symbol("b_value") is not None and mod.symbol("b_scale") is None
        assert mod._state.local_symbol("b_scale") is None


def test_cxx_static_constructors_comdat_and_exceptions() -> None:
    seen, syms = _recorder()
    a = obj("cxx_static.cpp", ["-O2", "-fPIC"], lang="c++")
    b = obj("cxx_other.cpp", ["-O2", "-fPIC"], lang="c++")
    mod = relink.load_object([a, b], symbols=syms)
    assert sorted(seen) == [10, 20, 30]
    # one copy of the inline function's static local survives (COMDAT: one copy wins)
    assert mod.function("cxx_a_bump", ctypes.c_int)() == 1
    assert mod.function("cxx_b_bump", ctypes.c_int)() == 2
    assert mod.function("cxx_a_twice", ctypes.c_int, ctypes.c_int)(4) == 18
    assert mod.function("cxx_b_twice", ctypes.c_long, ctypes.c_long)(5) == 12
    assert mod.function("cxx_throw_catch", ctypes.c_int, ctypes.c_int)(21) == 42
    seen.clear()
    mod.close()
    assert sorted(seen) == [-20, -10]


def test_ifunc_in_object() -> None:
    with relink.load_object(obj("ifunc.c", ["-O2", "-fPIC"])) as mod:
        assert mod.function("call_pick", ctypes.c_int, ctypes.c_int)(3) == 301
        assert mod.function("pick", ctypes.c_int, ctypes.c_int)(2) == 200
        ptr = mod.function("pick_ptr", ctypes.c_void_p)()
        assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(ptr)(1) == 100


@pytest.mark.parametrize("flags", [["-O2"], ["-O2", "-fPIC"], ["-O0", "-fPIC"],
                                   ["-O2", "-fPIC", "-mtls-dialect=gnu2"], ["-O2", "-fno-pic"]],
                         ids=["LE", "GD", "GD-O0", "TLSDESC", "LE-nopic"])
def test_thread_local_storage(flags: list[str]) -> None:
    with relink.load_object(obj("tls.c", flags)) as mod:
        get = mod.function("tls_get", ctypes.c_int)
        assert get() == 5 + 3 + 0
        mod.function("tls_set", None, ctypes.c_int)(9)
        assert get() == 9 + 3 + 1
        assert mod.function("tls_addr", ctypes.c_void_p)() == mod.symbol("tls_value")
        assert mod.variable("tls_value", ctypes.c_int).value == 9
        other: list[int] = []
        t = threading.Thread(target=lambda: other.append(get()))
        t.start()
        t.join()
        assert other == [8]  # a fresh thread sees the initial image
        assert mod.function("set_errno", ctypes.c_int, ctypes.c_int)(33) == 33


def test_tls_into_a_buffer_is_refused_clearly() -> None:
    with pytest.raises(UnsupportedRelocationError, match="R_X86_64_TLSGD.*thread-local"):
        relink.load_object(obj("tls.c", ["-O2", "-fPIC"]), mapper=BufferMapper(),
                           resolve=lambda name: 0x1000)


def test_far_code_non_pic() -> None:
    with relink.load_object(obj("far.c", ["-O2", "-fno-pic"])) as mod:
        assert mod.base + 0x100000 < 1 << 31  # R_X86_64_32S needs the low 2 GiB
        assert mod.function("far_len", ctypes.c_int, ctypes.c_int)(3) == 5
        assert mod.function("far_atoi", ctypes.c_int, ctypes.c_char_p)(b"41") == 42
        # libc is far above 2 GiB: its calls went through synthesized stubs
        plt = mod._state.section(".plt")
        assert plt is not None
        assert ctypes.string_at(plt.address, 4) == b"\xf3\x0f\x1e\xfa"  # endbr64


def test_pie_code_reading_host_data_is_placed_near_it() -> None:
    environ = ctypes.c_void_p.in_dll(ctypes.CDLL(None), "environ")
    with relink.load_object(obj("hostdata.c", ["-O2", "-fPIE"])) as mod:
        assert abs(mod.base - ctypes.addressof(environ)) < 1 << 31
        assert mod.function("has_env", ctypes.c_int)() == 1
    with pytest.raises(RelocationOverflowError, match="R_X86_64_PC32.*environ"):
        relink.load_object(obj("hostdata.c", ["-O2", "-fPIE"]), mapper=BufferMapper(),
                           symbols={"environ": 1 << 44})


def test_overflow_is_reported_not_wrapped() -> None:
    # A PC32 reference to data 1 TiB away cannot be encoded (no stub can help data).
    with pytest.raises(RelocationOverflowError) as exc:
        relink.load_object(obj("calc_a.c", ["-O2", "-fcommon"]),
                           symbols={"b_value": 1 << 40, "b_table": 1 << 40,
                                    "b_scale": 1 << 40, "b_name": 1 << 40},
                           mapper=BufferMapper(base=0x10000000), host=False,
                           resolve=lambda n: 0x1000)
    err = exc.value
    assert err.r_type_name in ("R_X86_64_PC32", "R_X86_64_GOTPCREL", "R_X86_64_32S")
    assert err.symbol in ("b_value", "b_table") and err.bits == 32


def test_failed_load_leaves_nothing_mapped() -> None:
    before = Path("/proc/self/maps").read_text().count("\n")
    for _ in range(3):
        with pytest.raises(RelocationOverflowError):
            relink.load_object(obj("calc_a.c", ["-O2", "-fcommon"]),
                               symbols={"b_value": 1 << 48, "b_table": 1 << 48},
                               resolve=lambda name: 0x1000)
    with pytest.raises(UnknownSymbolError):
        relink.load_object(obj("calc_a.c", ["-O2", "-fcommon"]))
    after = Path("/proc/self/maps").read_text().count("\n")
    assert after <= before + 2  # (allocator noise only; three leaks would be 12+ lines)


def test_size_relocations() -> None:
    with relink.load_object(obj("sizes.s", []), symbols={"extern_thing": 0},
                            resolve=None) as mod:
        assert mod.function("get_size32", ctypes.c_int)() == 24
        assert mod.variable("size64_value", ctypes.c_uint64).value == 32
        assert mod.function("get_extern_size", ctypes.c_int)() == 0
