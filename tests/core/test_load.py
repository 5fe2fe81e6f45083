"""Loading shared objects natively: the chain, bytes input, lifecycle, /proc/self/maps."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest
from core_fixtures import shared, src

import relink
from support.build import build_shared

pytestmark = pytest.mark.needs_cc


def maps_text() -> str:
    return Path("/proc/self/maps").read_text()


def test_chain_from_path(chain: Path) -> None:
    with relink.load(chain) as leaf:
        assert leaf.function("leaf_value", ctypes.c_int)() == 3
        assert leaf.name == "libleaf.so"
        assert leaf.soname == "libleaf.so"
        assert leaf.path == str(chain)
        assert leaf.needed == ["libmiddle.so"]  # gcc links --as-needed
        assert [d.name for d in leaf.dependencies] == ["libmiddle.so"]
        middle = leaf.dependencies[0]
        assert middle.variable("middle_ready", ctypes.c_int).value == 1  # constructor ran
        assert [d.name for d in middle.dependencies] == ["libbase.so"]
        base = middle.dependencies[0]
        assert [d.name for d in base.dependencies] == ["libc.so.6"]
        assert base.dependencies[0].is_host
        assert leaf.base % os.sysconf("SC_PAGE_SIZE") == 0
        assert leaf.contains(leaf.symbol("leaf_value") or 0)
        assert leaf.state == "initialized"


def test_chain_from_bytes(chain: Path) -> None:
    resolver = relink.SearchPathResolver(fixed_dirs=(str(chain.parent),))
    with relink.load(chain.read_bytes(), name="libleaf.so", resolver=resolver) as leaf:
        assert leaf.path is None
        assert leaf.name == "libleaf.so"
        assert leaf.function("leaf_value", ctypes.c_int)() == 3


def test_bytes_without_search_path_names_what_was_tried(chain: Path) -> None:
    resolver = relink.SearchPathResolver(use_ld_cache=False, use_default_dirs=False)
    with pytest.raises(relink.UnresolvedDependencyError) as info:
        relink.load(chain.read_bytes(), name="libleaf.so", resolver=resolver)
    err = info.value
    assert err.needed == "libmiddle.so"
    assert err.needed_by == "libleaf.so"


def test_other_inputs(chain: Path) -> None:
    with open(chain, "rb") as f:
        with relink.load(f) as leaf:
            assert leaf.function("leaf_value", ctypes.c_int)() == 3
    fd = os.open(chain, os.O_RDONLY)
    try:
        resolver = relink.SearchPathResolver(fixed_dirs=(str(chain.parent),))
        with relink.load(fd, resolver=resolver) as leaf:
            assert leaf.function("leaf_value", ctypes.c_int)() == 3
    finally:
        os.close(fd)
    data = bytearray(chain.read_bytes())
    with relink.load(memoryview(data), resolver=resolver) as leaf:
        data[:4] = b"\0\0\0\0"  # the loader took a snapshot
        assert leaf.function("leaf_value", ctypes.c_int)() == 3


def test_shared_context_shares_like_dlopen(chain: Path) -> None:
    ctx = relink.LinkContext()
    a = relink.load(chain, context=ctx)
    b = relink.load(chain, context=ctx)  # the same module, one more lease
    try:
        assert a.base == b.base
        a.function("leaf_value", ctypes.c_int)()
        counter = b.dependencies[0].dependencies[0].variable("base_counter", ctypes.c_int)
        assert counter.value == 1
    finally:
        a.close()
    assert b.function("leaf_value", ctypes.c_int)() == 3  # still loaded: b's lease
    b.close()
    assert b.closed


def test_plain_loads_are_independent(chain: Path) -> None:
    a = relink.load(chain)  # each plain load: a context of its own (like dlmopen)
    b = relink.load(chain)
    try:
        assert a.base != b.base
        ca = a.dependencies[0].dependencies[0].variable("base_counter", ctypes.c_int)
        cb = b.dependencies[0].dependencies[0].variable("base_counter", ctypes.c_int)
        a.function("leaf_value", ctypes.c_int)()
        a.function("leaf_value", ctypes.c_int)()
        assert (ca.value, cb.value) == (2, 0)
    finally:
        a.close()
        b.close()


def test_close_unmaps_everything(chain: Path) -> None:
    leaf = relink.load(chain)
    bases = [leaf.base, leaf.dependencies[0].base, leaf.dependencies[0].dependencies[0].base]
    text = maps_text()
    for base in bases:
        assert f"{base:x}-" in text
    leaf.close()
    leaf.close()  # idempotent
    text = maps_text()
    for base in bases:
        assert f"{base:x}-" not in text
    assert leaf.closed
    with pytest.raises(relink.RelinkError, match="closed"):
        leaf.symbol("leaf_value")


def test_garbage_collection_unmaps(chain: Path) -> None:
    import gc

    leaf = relink.load(chain)
    base = leaf.base
    del leaf
    gc.collect()
    assert f"{base:x}-" not in maps_text()


def test_function_keeps_module_alive(chain: Path) -> None:
    import gc

    fn = relink.load(chain).function("leaf_value", ctypes.c_int)
    gc.collect()
    assert fn() == 3


def test_symbol_lookup_and_errors(chain: Path) -> None:
    with relink.load(chain) as leaf:
        assert leaf.symbol("no_such_symbol") is None
        assert "leaf_value" in leaf
        assert leaf["leaf_value"] == leaf.symbol("leaf_value")
        with pytest.raises(relink.SymbolNotFoundError, match="no_such_symbol"):
            leaf.function("no_such_symbol", ctypes.c_int)
        with pytest.raises(relink.SymbolNotFoundError):
            leaf.variable("no_such_symbol", ctypes.c_int)
        # Only the module's own exports, like dlsym on a handle... of that object:
        assert leaf.symbol("base_value") is None
        f1 = leaf.function("leaf_value", ctypes.c_int)
        assert leaf.function("leaf_value", ctypes.c_int) is f1


def test_segments_and_protections(chain: Path) -> None:
    with relink.load(chain) as leaf:
        segs = leaf.segments
        assert segs and all(size > 0 for _, size, _ in segs)
        text = maps_text()
        lines = [ln for ln in text.splitlines()
                 if leaf.base <= int(ln.split("-")[0], 16) < leaf.base + 0x10000]
        perms = {ln.split()[1][:3] for ln in lines}
        assert "r-x" in perms
        assert not any("w" in p and "x" in p for p in perms)


def test_libc_calls_and_callbacks() -> None:
    lib = shared("libcuser")
    for source in (lib, lib.read_bytes()):
        with relink.load(source) as m:
            arr = (ctypes.c_int * 6)(5, 3, 9, 1, 7, 2)
            first = ctypes.c_int()
            total = m.function("sort_and_sum", ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                               ctypes.POINTER(ctypes.c_int))(arr, 6, ctypes.byref(first))
            assert (total, first.value, list(arr)) == (27, 1, [1, 2, 3, 5, 7, 9])
            cmp_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

            def descending(a: int | None, b: int | None) -> int:
                x = ctypes.c_int.from_address(a or 0).value
                y = ctypes.c_int.from_address(b or 0).value
                return (x < y) - (x > y)

            cb = cmp_t(descending)
            m.function("sort_with", None, ctypes.c_void_p, ctypes.c_int, cmp_t)(arr, 6, cb)
            assert list(arr) == [9, 7, 5, 3, 2, 1]
            fmt = m.function("format_pair", ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)
            p = fmt(b"answer", 42)
            assert ctypes.string_at(p) == b"answer=42 (6)"
            m.function("release", None, ctypes.c_void_p)(p)


def test_init_fini_order() -> None:
    events: list[int] = []
    record_t = ctypes.CFUNCTYPE(None, ctypes.c_int)
    host = relink.SyntheticModule("__host", {"record": (events.append, None, ctypes.c_int)})
    libs = {}
    for ident in (1, 2, 3):
        deps = [libs[ident - 1]] if ident > 1 else []
        libs[ident] = build_shared(
            f"order{ident}", {"order.c": src("order.c")}, group="core-order",
            cflags=[f"-DID={ident}", "-Wl,--no-as-needed"], soname=f"liborder{ident}.so", deps=deps,
            ldflags=["-Wl,-rpath,$ORIGIN", "-Wl,-init,legacy_init",
                     "-Wl,-fini,legacy_fini"])
    del record_t
    m = relink.load(libs[3], scope=[host])
    # Dependencies first; in each library DT_INIT, then DT_INIT_ARRAY by priority.
    assert events == [10, 11, 12, 20, 21, 22, 30, 31, 32]
    events.clear()
    m.close()
    # Dependents first; DT_FINI_ARRAY in reverse, then DT_FINI.
    assert events == [-32, -31, -30, -22, -21, -20, -12, -11, -10]


def test_versioned_symbols() -> None:
    lib = build_shared("versioned", {"versioned.c": src("versioned.c"),
                                     "versioned.map": src("versioned.map")}, group="core-ver",
                       soname="libversioned.so",
                       ldflags=[f"-Wl,--version-script={Path(__file__).parent}/fixtures/"
                                "versioned.map"])
    for source in (lib, lib.read_bytes()):
        with relink.load(source) as m:
            assert m.function("foo", ctypes.c_int)() == 2            # default foo@@V2
            assert m.function("foo", ctypes.c_int, version="V2")() == 2
            assert m.function("foo", ctypes.c_int, version="V1")() == 1
            assert m.symbol("foo", "V3") is None
            assert m.symbol("plain") is not None
            assert m.symbol("plain", "V1") == m.symbol("plain")
            assert m.symbol("foo_v1") is None  # local: *
    # The system's dlvsym agrees.
    c = ctypes.CDLL(str(lib))
    dlvsym = ctypes.CDLL(None).dlvsym
    dlvsym.restype = ctypes.c_void_p
    dlvsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    v1 = ctypes.CFUNCTYPE(ctypes.c_int)(dlvsym(c._handle, b"foo", b"V1"))
    assert v1() == 1


def test_versioned_binding_from_consumer() -> None:
    lib = build_shared("versioned", {"versioned.c": src("versioned.c"),
                                     "versioned.map": src("versioned.map")}, group="core-ver",
                       soname="libversioned.so",
                       ldflags=[f"-Wl,--version-script={Path(__file__).parent}/fixtures/"
                                "versioned.map"])
    user = build_shared("version_user", {"version_user.c": src("version_user.c")},
                        group="core-ver", deps=[lib], ldflags=["-Wl,-rpath,$ORIGIN"])
    with relink.load(user) as m:
        assert m.function("call_foo", ctypes.c_int)() == 2  # bound to foo@V2 via verneed


def test_text_relocations() -> None:
    lib = build_shared("textrel", {"textrel.S": src("textrel.S")}, group="core",
                       ldflags=["-Wl,-z,notext"])
    from relink.elf import ElfFile

    assert ElfFile(lib).dynamic.textrel  # type: ignore[union-attr]
    for source in (lib, lib.read_bytes()):
        with relink.load(source) as m:
            assert m.function("read_target", ctypes.c_int)() == 99
            text = maps_text()
            for ln in text.splitlines():
                lo = int(ln.split("-")[0], 16)
                if m.base <= lo < m.base + 0x5000:
                    assert not ("w" in ln.split()[1] and "x" in ln.split()[1])


def test_zlib_from_the_system() -> None:
    import zlib

    from relink.runtime.host import host_library

    path = "/usr/lib/x86_64-linux-gnu/libz.so.1"
    if not os.path.exists(path):
        pytest.skip("libz.so.1 not installed")
    del host_library
    for source in (path, Path(path).read_bytes()):
        with relink.load(source, name="libz.so.1") as z:
            assert not z.is_host and z.path in (path, None)
            assert z.function("zlibVersion", ctypes.c_char_p)().decode() == zlib.ZLIB_VERSION
            data = b"relink loads zlib itself " * 200
            bound = z.function("compressBound", ctypes.c_ulong, ctypes.c_ulong)(len(data))
            out = ctypes.create_string_buffer(bound)
            n = ctypes.c_ulong(bound)
            compress2 = z.function("compress2", ctypes.c_int, ctypes.c_char_p,
                                   ctypes.POINTER(ctypes.c_ulong), ctypes.c_char_p,
                                   ctypes.c_ulong, ctypes.c_int)
            assert compress2(out, ctypes.byref(n), data, len(data), 9) == 0
            packed = out.raw[:n.value]
            assert packed == zlib.compress(data, 9)
            back = ctypes.create_string_buffer(len(data))
            m = ctypes.c_ulong(len(data))
            uncompress = z.function("uncompress", ctypes.c_int, ctypes.c_char_p,
                                    ctypes.POINTER(ctypes.c_ulong), ctypes.c_char_p,
                                    ctypes.c_ulong)
            assert uncompress(back, ctypes.byref(m), zlib.compress(data, 1), len(
                zlib.compress(data, 1))) == 0
            assert back.raw[:m.value] == data
            crc = z.function("crc32", ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p,
                             ctypes.c_uint)
            assert crc(0, data, len(data)) == zlib.crc32(data)


def test_a_loaded_module_keeps_no_fd(chain: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))  # (the listing's own fd counts both times)
    leaf = relink.load(chain)
    try:
        assert len(os.listdir("/proc/self/fd")) == before
        assert leaf.function("leaf_value", ctypes.c_int)() == 3
        src = leaf._state.image.source
        assert src.fd is None and src.read(0, 4) == b"\x7fELF"  # reopened, same file
    finally:
        leaf.close()
