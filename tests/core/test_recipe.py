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


_PER_FILE = ("header", "phdrs", "loads", "spec", "dynamic", "symbols", "tls", "relro",
             "page_size", "span_vaddr", "parsed", "_layout")  # _layout: shared, not copied


def test_reload_image_has_every_slot_of_the_first() -> None:
    """`loader._reload` fills the slots without `Image.__init__`: each must be set, and
    hold what the first (generic) load computed, relative to the base."""
    from relink.elf.view import AddressView
    from relink.loader import Image, clear_parse_cache

    lib = build_shared("recipe", SOURCE, group="core")
    clear_parse_cache()
    with relink.load(lib) as first, relink.load(lib, context=relink.LinkContext("b")) as m:
        a, b = first._state.image, m._state.image
        assert type(a._view) is AddressView  # the first load's (generic) path
        assert type(b._view) is memoryview  # the reload's, view made on first use
        for name in Image.__slots__:
            if name != "__weakref__":
                assert hasattr(b, name), name
        for name in _PER_FILE:
            assert getattr(b, name) is getattr(a, name) or \
                getattr(b, name) == getattr(a, name), name
        assert (a.eh_frame_hdr - a.base, b.eh_frame_hdr - b.base) == \
            (a.eh_frame_hdr - a.base,) * 2
        assert [(x - a.base, n, p) for x, n, p in a.protections] == \
            [(x - b.base, n, p) for x, n, p in b.protections]
        assert list(b.view.ranges) == list(a.view.ranges)
        assert b.view.get(b.dynamic.strtab, 1, "t") == a.view.get(a.dynamic.strtab, 1, "t")
        assert b.keep_writable == [] and b._keep_writable == []


def test_recipe_zero_slices_only_when_every_tail_page_is_writable() -> None:
    from relink.segments import ZEROS, Recipe

    writable = Recipe(4096, 8192, 0, None, [(0, 8192, 0, 3)], [(4100, 4092, 4096, None)],
                      [], ((0, 8192, 3),))
    assert writable.zero_slices is not None
    (where, zeros), = writable.zero_slices
    assert (where, bytes(zeros)) == (slice(4100, 8192), bytes(ZEROS[:4092]))
    assert writable.maps_after_first is writable.maps
    read_only = Recipe(4096, 8192, 0, (0, 1), [(0, 4096, 0, 1), (4096, 4096, 4096, 1)],
                       [(4100, 4092, 4096, 1)], [], ((0, 4096, 1), (4096, 4096, 1)))
    assert read_only.zero_slices is None  # made writable, zeroed, restored: _zero_tails
    assert read_only.maps_after_first == [(4096, 4096, 4096, 1)]


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_map_file_span_failure_leaves_nothing_mapped(fail_at: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """HostMapper.map_file_span maps the rest of the span in one call: the first
    failing mmap ends it (no further one), with that call's errno, and the span is
    unmapped."""
    import errno
    import os

    from relink.errors import MappingError
    from relink.memory.host import HostMapper
    from relink.runtime import libc

    lib = build_shared("recipe", SOURCE, group="core")
    real_mmap, real_munmap = libc.mmap, libc.munmap
    calls: list[int] = []
    unmapped: list[tuple[int, int]] = []

    def mmap(addr: int | None, size: int, *args: int) -> int | None:
        calls.append(size)
        if len(calls) == fail_at:
            ctypes.set_errno(errno.ENOMEM)
            return libc.MAP_FAILED  # type: ignore[no-any-return]
        return real_mmap(addr, size, *args)  # type: ignore[no-any-return]

    def munmap(addr: int, size: int) -> int:
        unmapped.append((addr, size))
        return real_munmap(addr, size)  # type: ignore[no-any-return]

    page = HostMapper.page_size
    maps = [(page, page, 0, 1), (2 * page, page, 0, 1)]
    fd = os.open(lib, os.O_RDONLY)
    try:
        monkeypatch.setattr(libc, "mmap", mmap)
        monkeypatch.setattr(libc, "munmap", munmap)
        with pytest.raises(MappingError) as info:
            HostMapper().map_file_span(3 * page, fd, 0, 1, maps)
    finally:
        os.close(fd)
    assert info.value.errno == errno.ENOMEM and len(calls) == fail_at
    assert unmapped == ([] if fail_at == 1 else [(unmapped[0][0], 3 * page)])
