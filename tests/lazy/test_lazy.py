"""Lazy binding (``relink.load(..., lazy=True)``): port of relink-study §4.4 and more.

Slots resolve independently on first call, BIND_NOW stays eager, the scope is retained,
every argument register (GPRs, rax for varargs, xmm/ymm) survives the trampoline, racing
threads bind correctly, RELRO still protects what it can, unresolvable symbols abort
with a message, and an eager load never imports the lazy runtime.
"""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from lazy_support import HAVE_AVX, HAVE_AVX512

import relink
from relink.runtime import lazy
from relink.runtime.exec_code import xsave_info

pytestmark = pytest.mark.needs_cc
REPO = Path(__file__).resolve().parents[2]


def slot_value(module: relink.Module, name: str) -> int:
    addr, _bound = lazy.slots(module)[name]
    return ctypes.c_uint64.from_address(addr).value


def load(path: Path, how: str, **kw: object) -> relink.Module:
    """Load from the path, or from bytes with the fixture directory as a search path."""
    if how == "path":
        return relink.load(path, **kw)  # type: ignore[arg-type]
    resolver = relink.SearchPathResolver(fixed_dirs=(str(path.parent),))
    return relink.load(path.read_bytes(), name=path.name, resolver=resolver,
                       **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["path", "bytes"])
def test_resolves_slots_independently(consumer: Path, how: str) -> None:
    with load(consumer, how, lazy=True) as m:
        prov = m.dependencies[0]
        first, second = prov["first"], prov["second"]
        assert lazy.slots(m)["first"][1] is None and lazy.slots(m)["second"][1] is None
        # Pending slots point back into the consumer's own PLT (PLTn+6), not the target.
        assert m.contains(slot_value(m, "first")) and slot_value(m, "first") != first
        assert m.contains(slot_value(m, "second"))
        assert m.function("call_first", ctypes.c_int)() == 1
        assert slot_value(m, "first") == first
        assert m.contains(slot_value(m, "second"))
        assert lazy.slots(m)["second"][1] is None
        assert m.function("call_second", ctypes.c_int)() == 2
        assert slot_value(m, "second") == second
        assert lazy.slots(m)["first"][1] == first
        # Bound slots stay bound: a second call does not re-enter the resolver.
        assert m.function("call_first", ctypes.c_int)() == 1


def test_bind_now_is_eager(consumer_now: Path) -> None:
    with relink.load(consumer_now, lazy=True) as m:
        assert lazy.slots(m) == {}
        assert lazy.lazy_module(m) is None
        assert m.function("call_second", ctypes.c_int)() == 2


def test_eager_default_binds_everything(consumer: Path) -> None:
    with relink.load(consumer) as m:
        assert lazy.lazy_module(m) is None
        assert m.function("call_first", ctypes.c_int)() == 1


def test_eager_load_does_not_import_lazy_runtime(consumer: Path) -> None:
    code = textwrap.dedent(f"""
        import ctypes, sys, relink
        m = relink.load({str(consumer)!r})
        assert m.function("call_first", ctypes.c_int)() == 1
        print("relink.runtime.lazy" in sys.modules, "relink.runtime.exec_code" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_retains_scope(consumer: Path) -> None:
    m = relink.load(consumer, lazy=True)
    lm = lazy.lazy_module(m)
    assert lm is not None
    names = [getattr(p, "name", "") for p in lm.binder.scope]
    assert "liblazyprov.so" in names
    m.dependencies = []  # drop every facade of the provider; the scope keeps it
    gc.collect()
    assert lazy.slots(m)["second"][1] is None
    assert m.function("call_second", ctypes.c_int)() == 2
    assert lazy.slots(m)["second"][1] is not None
    m.close()


def test_argument_registers_survive(consumer: Path) -> None:
    with relink.load(consumer, lazy=True) as m:
        expected = (1 + 2 * 2 + 3 * 3 + 4 * 4 + 5 * 5 + 6 * 6 + 7 * 0.5 + 8 * 1.5 + 9 * 2.5
                    + 10 * 3.5 + 11 * 4.5 + 12 * 5.5 + 13 * 6.5 + 14 * 7.5 + 15 * 8
                    + 16 * 9.5)
        assert m.function("call_many", ctypes.c_double)() == expected
        # Variadic: %al (the vector register count) must survive too.
        assert m.function("call_vsum", ctypes.c_double)() == 1.25 + 5.0 + 11.25 + 20.0


def test_vector_state_survives_a_resolver_that_wipes_it(consumer: Path) -> None:
    """The provider's IFUNC resolver runs inside the lazy window and zeroes the vector
    registers (vzeroall on AVX machines): the arguments must still arrive intact."""
    with relink.load(consumer, lazy=True) as m:
        prov = m.dependencies[0]
        wiped = prov.variable("wiped_with_avx", ctypes.c_int)
        assert wiped.value == 0
        assert m.function("call_clobbered", ctypes.c_double)() == 87654321.0
        assert wiped.value == (1 if HAVE_AVX else 0)


@pytest.mark.skipif(not HAVE_AVX, reason="the CPU has no AVX")
def test_ymm_upper_halves_survive(consumer: Path) -> None:
    assert xsave_info().osxsave
    with relink.load(consumer, lazy=True) as m:
        vec = ctypes.c_double * 4
        a, b, out = vec(1, 2, 3, 4), vec(10, 20, 30, 40), vec()
        m.function("call_avx_add", None, vec, vec, vec)(a, b, out)
        assert list(out) == [11, 22, 33, 44]
        assert lazy.slots(m)["avx_add"][1] is not None


@pytest.mark.skipif(not HAVE_AVX512, reason="the CPU has no AVX-512")
def test_zmm_registers_survive(consumer: Path) -> None:
    with relink.load(consumer, lazy=True) as m:
        vec = ctypes.c_double * 8
        a, b, out = vec(*range(1, 9)), vec(*range(10, 90, 10)), vec()
        m.function("call_avx512_add", None, vec, vec, vec)(a, b, out)
        assert list(out) == [11 * k for k in range(1, 9)]


def test_threads_race_on_first_calls(consumer: Path) -> None:
    with relink.load(consumer, lazy=True) as m:
        funcs = [m.function(f"call_slot_{n}", ctypes.c_long, ctypes.c_long)
                 for n in range(20)]
        barrier = threading.Barrier(8)
        errors: list[str] = []

        def worker(t: int) -> None:
            barrier.wait()
            for n in range(20):
                k = (n + t) % 20
                got = funcs[k](t)
                if got != t * 1000 + k:
                    errors.append(f"thread {t} slot {k}: {got}")

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert all(lazy.slots(m)[f"slot_{n}"][1] for n in range(20))


def _maps_prot(addr: int) -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, perms = line.split()[:2]
        lo, hi = (int(x, 16) for x in span.split("-"))
        if lo <= addr < hi:
            return perms[:3]
    raise AssertionError(f"{addr:#x} is not mapped")


def test_relro_protects_all_but_lazy_slots(consumer: Path) -> None:
    from relink.elf import ElfFile

    with ElfFile(consumer) as f:
        relro = f.phdr(0x6474E552)
        dyn = f.dynamic
        assert relro is not None and dyn is not None
        got = dyn.pltgot
    with relink.load(consumer, lazy=True) as m:
        relro_page = (m.base + relro.p_vaddr) & ~0xFFF
        assert _maps_prot(relro_page) == "r--"
        # ld places GOT[0..2] inside RELRO here; they were written before protection.
        if relro.p_vaddr <= got + 8 < relro.p_vaddr + relro.p_memsz:
            assert _maps_prot(m.base + got + 8) == "r--"
        for addr, _bound in lazy.slots(m).values():
            assert _maps_prot(addr) == "rw-"
        assert m.function("call_first", ctypes.c_int)() == 1


def test_relro_subtraction_keeps_only_touched_pages() -> None:
    from relink.loader import _subtract_pages

    page = 0x1000
    assert _subtract_pages(0x3000, 0x6000, [], page) == [(0x3000, 0x6000)]
    assert _subtract_pages(0x3000, 0x6000, [(0x4010, 8)], page) == [(0x3000, 0x4000),
                                                                   (0x5000, 0x6000)]
    assert _subtract_pages(0x3000, 0x6000, [(0x2ff8, 0x10)], page) == [(0x4000, 0x6000)]
    assert _subtract_pages(0x3000, 0x4000, [(0x3000, 0x1000)], page) == []


def test_close_unregisters(consumer: Path) -> None:
    m = relink.load(consumer, lazy=True)
    lm = lazy.lazy_module(m)
    assert lm is not None and lazy._registry.get(lm.cookie) is lm
    m.close()
    assert lm.cookie not in lazy._registry


def test_unresolved_symbol_loads_lazily_but_not_eagerly(broken: Path) -> None:
    with pytest.raises(relink.UnknownSymbolError, match="nowhere_to_be_found"):
        relink.load(broken)
    with relink.load(broken, lazy=True) as m:
        assert m.function("fine", ctypes.c_int)() == 7
        assert set(lazy.slots(m)) == {"nowhere_to_be_found", "weak_and_absent"}


@pytest.mark.parametrize(("func", "message"), [
    ("call_missing", "unknown symbol"),
    ("call_weak", "weak undefined symbol that nothing defines"),
])
def test_unresolvable_call_aborts_with_a_message(broken: Path, func: str,
                                                 message: str) -> None:
    code = textwrap.dedent(f"""
        import ctypes, relink
        m = relink.load({str(broken)!r}, lazy=True)
        m.function({func!r}, ctypes.c_int, ctypes.c_int)(1)
        print("returned")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == -6, proc  # SIGABRT, not a jump to garbage (SIGSEGV)
    assert "returned" not in proc.stdout
    assert "relink: lazy binding failed" in proc.stderr
    assert message in proc.stderr
    assert "aborting" in proc.stderr


def test_foreign_memory_refuses_lazy(consumer: Path) -> None:
    mapper = relink.BufferMapper()
    with pytest.raises(relink.UnsupportedError, match="lazy binding"):
        relink.load(consumer, mapper=mapper, lazy=True, init=False,
                    host=relink.HostPolicy())


def test_save_method_is_reported() -> None:
    method = lazy.save_method()
    info = xsave_info()
    if info.osxsave:
        assert method.startswith("xsave") and info.size >= 576
        assert info.size % 64 == 0 or info.size > 576
    else:
        assert method.startswith("fxsave")
    assert os.sysconf("SC_PAGE_SIZE") > 0


def _system_zlib() -> Path | None:
    for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"):
        p = Path(d) / "libz.so.1"
        if p.exists():
            return p
    return None


@pytest.mark.skipif(_system_zlib() is None, reason="no system libz.so.1")
def test_real_zlib_binds_lazily() -> None:
    """Debian's zlib is linked -z lazy: its internal calls go through lazy slots."""
    import zlib

    path = _system_zlib()
    assert path is not None
    with relink.load(path, lazy=True) as z:
        slots = lazy.slots(z)
        assert slots and all(bound is None for _a, bound in slots.values())
        data = b"relink lazy binding " * 200
        size = ctypes.c_ulong(len(data) + 64)
        out = ctypes.create_string_buffer(size.value)
        compress = z.function("compress", ctypes.c_int, ctypes.c_char_p,
                              ctypes.POINTER(ctypes.c_ulong), ctypes.c_char_p,
                              ctypes.c_ulong)
        assert compress(out, ctypes.byref(size), data, len(data)) == 0
        assert zlib.decompress(out.raw[:size.value]) == data
        bound = {name for name, (_a, b) in lazy.slots(z).items() if b}
        assert {"deflate", "deflateEnd"} <= bound
        assert all(bound_to == (z.symbol(name) or bound_to)
                   for name, (_a, bound_to) in lazy.slots(z).items() if bound_to)


def test_first_call_in_a_forked_child(consumer: Path) -> None:
    """After os.fork (CPython's after-fork hooks ran) the child binds its own copy."""
    with relink.load(consumer, lazy=True) as m:
        call_second = m.function("call_second", ctypes.c_int)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = call_second() if lazy.slots(m)["second"][1] is None else 99
            os._exit(code if lazy.slots(m)["second"][1] else 98)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 2
        assert lazy.slots(m)["second"][1] is None  # the parent's slot is still pending
        assert call_second() == 2
