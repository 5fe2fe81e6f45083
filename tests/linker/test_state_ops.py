"""Per-load state bookkeeping made cheaper for issue 8: the same behaviour, checked.

`lifecycle_lists` reads both arrays with one unpack when they share a segment and with
one each otherwise; a root facade's death and the interpreter's exit still release its
lease (a slim weak reference replaced ``weakref.finalize``).
"""

from __future__ import annotations

import gc
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import relink
from relink.linker import context as ctxmod
from relink.state import lifecycle_lists

BASE = 0x10000


def _image(init: int, fini: int, arrays: dict[int, list[int]],
           loads: list[tuple[int, int]]) -> tuple[Any, memoryview, int]:
    """A duck-typed image whose DT_INIT_ARRAY / DT_FINI_ARRAY hold `arrays` (vaddr ->
    words; the first is the init array, the second the fini array)."""
    (ia, iwords), (fa, fwords) = list(arrays.items())
    mem = bytearray(0x4000)
    for vaddr, words in arrays.items():
        struct.pack_into(f"<{len(words)}Q", mem, vaddr, *words)
    ranges = [(v, v + n) for v, n in loads]
    view = SimpleNamespace(
        get=lambda v, n, what: mem[v:v + n],
        contains=lambda v, n: any(a <= v and v + n <= b for a, b in ranges))
    dyn = SimpleNamespace(init=init, fini=fini, init_array=ia, init_arraysz=8 * len(iwords),
                          fini_array=fa, fini_arraysz=8 * len(fwords))
    image = SimpleNamespace(
        dynamic=dyn, spec=SimpleNamespace(word_size=8), view=view, label="test", base=BASE,
        loads=[SimpleNamespace(p_vaddr=v, p_memsz=n) for v, n in loads],
        parsed=SimpleNamespace(complete=True, facts={}))
    return image, memoryview(mem), 0


@pytest.mark.parametrize("loads", [[(0x1000, 0x1000)],                      # one segment
                                   [(0x1000, 0x800), (0x1800, 0x800)]])    # two
@pytest.mark.parametrize("fini_at", [0x1010, 0x1020, 0x1900])  # adjacent, gap, apart
def test_lifecycle_lists_one_or_two_reads(loads: list[tuple[int, int]], fini_at: int) -> None:
    image, mem, delta = _image(0x50, 0x60, {0x1000: [BASE + 1, BASE + 2],
                                            fini_at: [BASE + 3, 0, BASE + 4]}, loads)
    for _ in range(2):  # computed, then from the cached layout
        st = SimpleNamespace(image=image, init_funcs=[], fini_funcs=[])
        lifecycle_lists(st, mem, delta)  # type: ignore[arg-type]
        assert st.init_funcs == [BASE + 0x50, BASE + 1, BASE + 2]
        assert st.fini_funcs == [BASE + 4, BASE + 3, BASE + 0x60]  # 0 skipped, reversed
    assert "lifecycle" in image.parsed.facts


def test_lifecycle_lists_placeholders_and_no_init() -> None:
    ones = (1 << 64) - 1
    image, mem, delta = _image(0, 0, {0x1000: [ones, BASE + 1], 0x1010: [BASE + 2]},
                               [(0x1000, 0x1000)])
    st = SimpleNamespace(image=image, init_funcs=[], fini_funcs=[])
    lifecycle_lists(st, mem, delta)  # type: ignore[arg-type]
    assert st.init_funcs == [BASE + 1] and st.fini_funcs == [BASE + 2]


def test_collected_facade_releases_its_lease(leaf: Path) -> None:
    def held(ref: Any) -> bool:
        return any(r is ref for r in ctxmod._facades.values())

    ctx = relink.LinkContext()
    m = ctx.load(leaf)
    ref = m._owner.finalizer
    assert ref is not None and held(ref) and len(ctx) >= 1
    del m
    gc.collect()
    assert len(ctx) == 0 and not held(ref)
    m = ctx.load(leaf)
    ref = m._owner.finalizer
    m.close()  # a closed lease leaves no reference behind
    assert not held(ref) and m._owner.finalizer is None and len(ctx) == 0


def test_held_facades_are_released_at_exit(leaf: Path) -> None:
    code = f"""
import relink, relink.linker.context as c
from relink.state import ModuleState
seen = []
orig = ModuleState.release
def release(self):
    seen.append(self.name)
    orig(self)
ModuleState.release = release
import atexit
atexit.register(lambda: print("released", sorted(seen)))  # runs after relink's hook
m = relink.load({str(leaf)!r})
ctx = relink.LinkContext()
kept = [ctx.load({str(leaf)!r})]
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == f"released {sorted([leaf.name, leaf.name])}"
