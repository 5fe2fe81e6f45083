"""Relocation programs (relocation/replay.py): a reload with the same scope replays the
recorded resolutions as (place, slot, constant) triples instead of running the loop.

Each test loads the same files several times (a new base each time) and checks every
relocated word against what it must hold at *this* load's addresses, so a program that
kept a stale base, slot or addend fails. The first load runs the generic loop (it
records the binding plan); the program is compiled at the second.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

import relink
from support.build import build_shared, have_cc

pytestmark = pytest.mark.skipif(not have_cc(), reason="needs gcc")

DEP = r"""
int dep_array[8] = {10, 11, 12, 13, 14, 15, 16, 17};
int dep_func(int x) { return x * 3; }
"""

# RELATIVE (local pointers), GLOB_DAT (address of dep_array through the GOT), JUMP_SLOT
# (dep_func through the PLT), R_X86_64_64 with an addend (&dep_array[5] in data), and a
# weak undefined reference (binds to 0, slot "nowhere").
USER = r"""
extern int dep_array[8];
int dep_func(int x);
extern int missing_weak __attribute__((weak));
static int local[3] = {1, 2, 3};
int *local_ptr = &local[2];
int *dep_ptr = &dep_array[5];
int *weak_ptr = &missing_weak;
int call_dep(int x) { return dep_func(x); }
int read_dep(int i) { return dep_array[i]; }
int *address_of_dep(void) { return dep_array; }
"""

# Above NUMPY_THRESHOLD entries: 300 pointers into the dependency (64 with addends) and
# 300 local pointers, so the numpy form of the program is used.
BIG = r"""
extern int dep_array[8];
__attribute__((visibility("hidden"))) int mine[300];  /* RELATIVE, not symbolic */
int *mine_addr(void) { return mine; }
#define R10(m, b) m(b) m(b+1) m(b+2) m(b+3) m(b+4) m(b+5) m(b+6) m(b+7) m(b+8) m(b+9)
#define R100(m, b) R10(m, b) R10(m, b+10) R10(m, b+20) R10(m, b+30) R10(m, b+40) \
    R10(m, b+50) R10(m, b+60) R10(m, b+70) R10(m, b+80) R10(m, b+90)
#define EXT(i) &dep_array[(i) % 8],
#define LOC(i) &mine[i],
int *ext[300] = { R100(EXT, 0) R100(EXT, 100) R100(EXT, 200) };
int *loc[300] = { R100(LOC, 0) R100(LOC, 100) R100(LOC, 200) };
"""


@pytest.fixture(scope="module")
def libs() -> tuple[Path, Path, Path]:
    dep = build_shared("replaydep", DEP, soname="libreplaydep.so", group="core")
    user = build_shared("replayuser", USER, deps=[dep], ldflags=["-Wl,-rpath,$ORIGIN"],
                        group="core")
    big = build_shared("replaybig", BIG, deps=[dep], ldflags=["-Wl,-rpath,$ORIGIN"],
                       group="core")
    return dep, user, big


def _programs(m: relink.Module) -> list[object]:
    parsed = m._state.image.parsed
    return list(parsed.programs.values())


def _word(addr: int) -> int:
    return ctypes.c_uint64.from_address(addr).value


def _check_user(m: relink.Module) -> None:
    dep = m.dependencies[0]
    arr = dep.symbol("dep_array")
    assert arr is not None
    assert m.function("call_dep", ctypes.c_int, ctypes.c_int)(7) == 21
    assert m.function("read_dep", ctypes.c_int, ctypes.c_int)(4) == 14
    assert m.function("address_of_dep", ctypes.c_void_p)() == arr
    assert _word(m.symbol("dep_ptr")) == arr + 5 * 4  # type: ignore[arg-type]
    assert _word(m.symbol("weak_ptr")) == 0  # type: ignore[arg-type]
    local_ptr = _word(m.symbol("local_ptr"))  # type: ignore[arg-type]
    assert m.contains(local_ptr) and ctypes.c_int.from_address(local_ptr).value == 3


@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_reloads_replay_a_program_with_this_loads_addresses(libs: tuple[Path, Path, Path],
                                                             as_bytes: bool) -> None:
    _dep, user, _big = libs
    bases = set()
    contexts, held = [], []  # kept open, so every load gets a new base
    try:
        for i in range(4):
            source = user.read_bytes() if as_bytes else user
            ctx = relink.LinkContext()
            contexts.append(ctx)
            if as_bytes:
                # bytes have no RUNPATH origin: the dependency comes from the same context
                held.append(ctx.load(_dep))
            m = ctx.load(source, name="libreplayuser.so")
            _check_user(m)
            bases.add(m.base)
            if i >= 1:
                assert any(p is not None for p in _programs(m)), "the reload ran the loop"
    finally:
        for ctx in contexts:
            ctx.close()
    assert len(bases) > 1  # the test means something only if the base moved


def test_numpy_program_matches_every_word(libs: tuple[Path, Path, Path]) -> None:
    pytest.importorskip("numpy")
    _dep, _user, big = libs
    keep = []  # kept loaded, so every load gets a new base
    for i in range(3):
        with relink.load(big) as m:
            keep.append(relink.load(big))
            arr = m.dependencies[0].symbol("dep_array")
            mine = m.function("mine_addr", ctypes.c_void_p)()
            ext, loc = m.symbol("ext"), m.symbol("loc")
            assert None not in (arr, mine, ext, loc)
            got_ext = (ctypes.c_uint64 * 300).from_address(ext)  # type: ignore[arg-type]
            got_loc = (ctypes.c_uint64 * 300).from_address(loc)  # type: ignore[arg-type]
            assert list(got_ext) == [arr + 4 * (k % 8) for k in range(300)]  # type: ignore
            assert list(got_loc) == [mine + 4 * k for k in range(300)]  # type: ignore
            if i >= 1:
                programs = [p for p in _programs(m) if p is not None]
                assert programs and len(programs[0]) >= 600  # type: ignore[arg-type]


def test_a_different_scope_is_not_replayed(libs: tuple[Path, Path, Path]) -> None:
    """An interposed definition changes the scope: the loop binds afresh, and the
    interposer (not the plan of earlier loads) wins."""
    _dep, user, _big = libs
    with relink.load(user) as m:
        _check_user(m)
    calls: list[int] = []

    def fake(x: int) -> int:
        calls.append(x)
        return -x

    with relink.load(user, interpose={"dep_func": (fake, ctypes.c_int, ctypes.c_int)}) as m:
        assert m.function("call_dep", ctypes.c_int, ctypes.c_int)(5) == -5
        assert calls == [5]
    with relink.load(user) as m:
        _check_user(m)


def test_entries_the_program_cannot_express_fall_back_to_the_loop() -> None:
    """A module binding its own IFUNC: the program leaves that entry to the loop (its
    resolver runs once the code is executable) and the rest is replayed."""
    src = r"""
    static int impl(void) { return 42; }
    static void *resolve(void) { return (void *)impl; }
    int picked(void) __attribute__((ifunc("resolve")));
    int (*picked_ptr)(void) = picked;
    int call_picked(void) { return picked_ptr(); }
    """
    lib = build_shared("replayifunc", src, group="core")
    for i in range(3):
        with relink.load(lib) as m:
            assert m.function("call_picked", ctypes.c_int)() == 42
            if i:
                programs = [p for p in _programs(m) if p is not None]
                assert programs, "the reload ran the loop for everything"
                left = [t for p in programs for r in p.rest for t in r.types]  # type: ignore
                assert left, "the module's own IFUNC went into the program"


def test_tls_entries_are_left_to_the_loop_beside_a_program(tmp_path: Path) -> None:
    """A module with its own TLS and pointers: the TLS entries (module ids, offsets) are
    the loop's, the pointers the program's; both right on every reload."""
    src = r"""
    __thread int counter = 5;
    static int data[2] = {7, 8};
    int *ptr = &data[1];
    int bump(void) { return ++counter; }
    int deref(void) { return *ptr; }
    """
    lib = build_shared("replaytls", src, group="core")
    for i in range(3):
        with relink.load(lib) as m:
            assert m.function("bump", ctypes.c_int)() == 6
            assert m.function("deref", ctypes.c_int)() == 8
            if i:
                programs = [p for p in _programs(m) if p is not None]
                assert programs and any(p.rest for p in programs)  # type: ignore


def test_a_mid_sized_program_does_not_import_numpy(tmp_path: Path) -> None:
    """Replaying ~100 relocations must not import numpy in a process that has not:
    the import costs ~100 ms and starts BLAS threads (which end TLS carrier reuse)."""
    import subprocess
    import sys

    src = "\n".join(["static int cell[100];"] +
                    [f"int *p{i} = &cell[{i}];" for i in range(100)] +
                    ["int get(int i) { return i; }"])
    lib = build_shared("replaymid", src, group="core")
    code = (f"import sys, relink\n"
            f"for _ in range(3): relink.load({str(lib)!r}).close()\n"
            f"m = relink.load({str(lib)!r})\n"
            f"assert any(p is not None for p in m._state.image.parsed.programs.values())\n"
            f"print('numpy' in sys.modules)\n")
    src_dir = Path(relink.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(src_dir), "PATH": "/usr/bin:/bin"},
                         check=True)
    assert out.stdout.strip() == "False"
