"""The mapping recipe (relink/segments.py): a file loaded before is mapped by replaying
recorded calls. The second load must produce exactly what the first (the generic path)
did: the same segments and protections, the same bytes in every read-only segment, a
zeroed .bss and zeroed tail of the last file page, and the same /proc/self/maps shape."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

import relink
from support.build import build_shared, have_cc

pytestmark = pytest.mark.skipif(not have_cc(), reason="needs gcc")

SOURCE = r"""
static char big_bss[3 * 4096 + 123];          /* anonymous pages past the file */
char small_bss[17];                           /* the zeroed tail of the last file page */
int data_word = 0x5a5a;
const char text[] = "a read-only string";
char *bss_at(void) { return big_bss; }
int bss_sum(void) { int s = 0; for (unsigned i = 0; i < sizeof big_bss; i++) s += big_bss[i];
                    for (unsigned i = 0; i < sizeof small_bss; i++) s += small_bss[i];
                    return s; }
void dirty(void) { for (unsigned i = 0; i < sizeof big_bss; i++) big_bss[i] = 1;
                   for (unsigned i = 0; i < sizeof small_bss; i++) small_bss[i] = 1; }
"""


def _maps_of(m: relink.Module) -> list[tuple[int, str]]:
    lo = min(a for a, _, _ in m.segments)
    hi = max(a + n for a, n, _ in m.segments)
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if lo <= start < hi + 4096:
                out.append((end - start, perms))
    return out


def _snapshot(m: relink.Module) -> tuple[object, ...]:
    base = m.base
    readonly = [ctypes.string_at(a, n) for a, n, p in m.segments if not p & 2]
    return ([(a - base, n, p) for a, n, p in m.segments], readonly, _maps_of(m),
            m.function("bss_sum", ctypes.c_int)(),
            ctypes.string_at(m.symbol("text"), 18))  # type: ignore[arg-type]


def test_second_load_maps_exactly_like_the_first(tmp_path: Path) -> None:
    lib = build_shared("recipe", SOURCE, group="core")
    first = relink.load(lib)
    expected = _snapshot(first)
    first.function("dirty", None)()  # the next load must not see this
    first.close()
    for _ in range(2):
        with relink.load(lib) as m:
            assert m._state.image.parsed.recipe is not None  # the replayed path
            assert _snapshot(m) == expected
            m.function("dirty", None)()
    assert expected[3] == 0 and expected[4] == b"a read-only string"
