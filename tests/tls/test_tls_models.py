"""Thread-local storage of relink-loaded modules, for every x86_64 TLS model.

Each model's fixture is checked for the relocation kinds it must exercise, then loaded
from a path and from bytes and used from several threads (relink-study §4.3).
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import pytest
from tlshelp import src, tls_module

import relink
from relink.arch import host_spec
from relink.elf import ElfFile
from relink.runtime import libc
from support.build import build_shared

pytestmark = pytest.mark.needs_cc

EXPECTED = {  # relocation types each model's build must contain
    "gd": {"R_X86_64_DTPMOD64", "R_X86_64_DTPOFF64"},
    "ld": {"R_X86_64_DTPMOD64"},
    "ie": {"R_X86_64_TPOFF64"},
    "desc": {"R_X86_64_TLSDESC"},
}


def reloc_types(path: Path) -> set[str]:
    with ElfFile(str(path)) as elf:
        tables, _relr = elf.relocation_tables()
        spec = host_spec()
        return {spec.rtype_name(t) for table in tables for t in table.types}


def load(path: Path, how: str) -> relink.Module:
    if how == "bytes":
        return relink.load(path.read_bytes(), name=path.name)
    return relink.load(str(path))


def funcs(m: relink.Module) -> dict[str, ctypes._CFuncPtr]:  # type: ignore[name-defined]
    P = ctypes.c_void_p
    return {
        "get_counter": m.function("get_counter", ctypes.c_int),
        "set_counter": m.function("set_counter", None, ctypes.c_int),
        "counter_addr": m.function("counter_addr", P),
        "get_hidden": m.function("get_hidden", ctypes.c_int),
        "set_hidden": m.function("set_hidden", None, ctypes.c_int),
        "get_local_ptr": m.function("get_local_ptr", ctypes.c_char_p),
        "get_global_ptr": m.function("get_global_ptr", ctypes.c_char_p),
        "get_value": m.function("get_value", ctypes.c_uint),
        "set_value": m.function("set_value", None, ctypes.c_uint),
        "zeroed_is_zero": m.function("zeroed_is_zero", ctypes.c_int),
        "fill_zeroed": m.function("fill_zeroed", None, ctypes.c_ubyte),
        "aligned_value": m.function("aligned_value", ctypes.c_long),
    }


def test_fixture_has_the_model_relocations(model: str) -> None:
    assert EXPECTED[model] <= reloc_types(tls_module(model))


@pytest.mark.parametrize("how", ["path", "bytes"])
def test_initial_image_and_writes(model: str, how: str) -> None:
    with load(tls_module(model), how) as m:
        f = funcs(m)
        assert f["get_counter"]() == 5
        assert f["get_hidden"]() == 7
        assert f["get_local_ptr"]() == b"local"    # RELATIVE inside .tdata
        assert f["get_global_ptr"]() == b"global"  # R_X86_64_64 inside .tdata
        assert f["get_value"]() == 0x04030201
        assert f["zeroed_is_zero"]() == 1
        assert f["aligned_value"]() == 9           # 64-byte alignment kept
        f["set_counter"](100)
        f["set_hidden"](70)
        assert (f["get_counter"](), f["get_hidden"]()) == (100, 70)
        addr = m.tls_address("counter")
        assert addr == f["counter_addr"]()
        assert ctypes.c_int.from_address(addr).value == 100
        ctypes.c_int.from_address(addr).value = 101
        assert f["get_counter"]() == 101


def test_four_threads_are_isolated(model: str) -> None:
    """relink-study §4.3 thread::isolates_threads, on the real fixture module."""
    with load(tls_module(model), "path") as m:
        f = funcs(m)
        barrier = threading.Barrier(4)
        results: dict[int, tuple[int, int, int, int, int, int]] = {}
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                first = (f["get_value"](), f["get_counter"](), f["zeroed_is_zero"]())
                barrier.wait()
                f["set_value"](i + 0x100)
                f["set_counter"](i + 0x200)
                f["fill_zeroed"](i + 1)
                barrier.wait()
                results[i] = (*first, f["get_value"](), f["get_counter"](),
                              f["counter_addr"]())
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                barrier.abort()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for i, (v0, c0, z0, v1, c1, _addr) in results.items():
            assert (v0, c0, z0) == (0x04030201, 5, 1)
            assert (v1, c1) == (i + 0x100, i + 0x200)
        assert len({r[5] for r in results.values()}) == 4  # four distinct blocks
        assert f["get_counter"]() == 5  # the main thread's block is untouched


def test_thread_started_before_the_load_sees_the_image(model: str) -> None:
    loaded = threading.Event()
    done = threading.Event()
    box: dict[str, object] = {}
    seen: list[tuple[int, int, bytes]] = []

    def early() -> None:
        loaded.wait(30)
        f = box["f"]
        assert isinstance(f, dict)
        seen.append((f["get_counter"](), f["get_value"](), f["get_local_ptr"]()))
        done.set()

    t = threading.Thread(target=early)
    t.start()
    with load(tls_module(model), "path") as m:
        box["f"] = funcs(m)
        funcs(m)["set_counter"](99)  # the loading thread's copy only
        loaded.set()
        done.wait(30)
        t.join()
    assert seen == [(5, 0x04030201, b"local")]


def _carrier_paths() -> set[str]:
    names: set[str] = set()

    def visit(info_p: object, _size: int, _data: object) -> int:
        info = info_p.contents  # type: ignore[attr-defined]
        if info.dlpi_tls_modid and info.dlpi_name:
            names.add(info.dlpi_name.decode())
        return 0

    libc.dl_iterate_phdr(libc.DL_ITERATE_PHDR_CALLBACK(visit), None)
    return {n for n in names if n.startswith("/proc/self/fd/")}


def _relink_memfds() -> set[int]:
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "relink-tls" in os.readlink(f"/proc/self/fd/{fd}"):
                fds.add(int(fd))
        except OSError:
            pass
    return fds


def test_close_releases_the_tls(model: str) -> None:
    before_paths, before_fds = _carrier_paths(), _relink_memfds()
    m = load(tls_module(model), "path")
    assert funcs(m)["get_counter"]() == 5
    assert len(_carrier_paths() - before_paths) == 1
    assert len(_relink_memfds() - before_fds) == 1
    m.close()
    assert _carrier_paths() == before_paths
    assert _relink_memfds() == before_fds
    with pytest.raises(relink.RelinkError):
        m.tls_address("counter")


def test_tls_address_errors() -> None:
    with load(tls_module("gd"), "path") as m:
        with pytest.raises(relink.SymbolNotFoundError):
            m.tls_address("no_such_variable")
        with pytest.raises(relink.TlsError, match="not a thread-local"):
            m.tls_address("get_counter")
        # dlsym semantics: symbol() of a TLS variable is the calling thread's address
        assert m.symbol("counter") == m.tls_address("counter")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_thread_exit_frees_its_block() -> None:
    """60 threads each touch a 1 MiB TLS block and exit: memory does not pile up."""
    path = build_shared("bigdyn", {"bigdyn.c": src("bigdyn.c")}, group="tls",
                        cflags=["-O2", "-ftls-model=global-dynamic"])
    with load(path, "path") as m:
        touch = m.function("touch_big", ctypes.c_long)
        addrs: set[int] = set()

        def run() -> None:
            addrs.add(touch())

        run()  # the main thread's copy
        before = _rss()
        for _ in range(60):
            t = threading.Thread(target=run)
            t.start()
            t.join()
        grown = _rss() - before
        assert len(addrs) >= 2  # each thread really had its own block
        assert grown < 24 << 20, f"RSS grew by {grown >> 20} MiB for 60 MiB of blocks"


def test_load_close_cycles_reuse_nothing_stale(model: str) -> None:
    """40 load/close cycles: each load sees a fresh image (a carrier path reused from a
    closed memfd never returns the old carrier) and static TLS space is given back (40 IE
    blocks would not fit in glibc's surplus otherwise)."""
    path = tls_module(model)
    for _ in range(40):
        with load(path, "path") as m:
            f = funcs(m)
            assert f["get_counter"]() == 5 and f["get_local_ptr"]() == b"local"
            f["set_counter"](99)
