"""Resources (issue 9 §5): load/close cycles stay flat, a failed load leaves nothing.

10,000 native load/close cycles of a library with TLS (so each load also makes a glibc
TLS carrier from a memfd), half from a path and half from bytes: after a warm-up of
500 cycles, open fds and memfds must not grow at all, /proc/self/maps may differ by at
most MAPS_SLACK entries (the interpreter's allocator comes and goes) and RSS by at most
RSS_SLACK. A chain root -> second -> third whose third library needs a symbol nothing
defines must fail with UnknownSymbolError naming it and leave no mapping, fd, memfd or
context entry behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import relink
from relink.api import default_context
from relink.errors import UnknownSymbolError

from .conftest import FIXTURES, RegionTracker, Snapshot

CYCLES = 10_000
WARMUP = 500
MAPS_SLACK = 8
RSS_SLACK = 8 << 20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _counts() -> tuple[int, int, int, int]:
    snap = Snapshot.take()
    return len(snap.maps), len(snap.fds), snap.memfds, _rss()


def test_load_close_cycles_stay_flat(seedlib: Path, host_regions: RegionTracker) -> None:
    import ctypes

    data = seedlib.read_bytes()
    ctx = relink.LinkContext("cycles")
    base: tuple[int, int, int, int] | None = None
    for i in range(CYCLES):
        mod = ctx.load(seedlib if i % 2 else data, name="librbseed.so")
        if i % 1000 == 0:  # the module works, not just maps
            assert mod.function("seed_add", ctypes.c_int, ctypes.c_int, ctypes.c_int)(1, 2) == 6
        mod.close()
        if i + 1 == WARMUP:
            base = _counts()
    assert base is not None
    maps, fds, memfds, rss = _counts()
    assert fds == base[1], f"fds grew {base[1]} -> {fds}"
    assert memfds == base[2], f"memfds grew {base[2]} -> {memfds}"
    assert abs(maps - base[0]) <= MAPS_SLACK, f"maps entries {base[0]} -> {maps}"
    assert rss - base[3] <= RSS_SLACK, f"RSS grew by {(rss - base[3]) >> 10} KiB"
    assert len(ctx) == 0
    assert len(host_regions.regions) >= CYCLES and host_regions.unreleased() == []


@pytest.fixture(scope="module")
def failing_chain() -> Path:
    """libfc_root -> libfc_second -> libfc_third; the third needs 'fc_nowhere'."""
    from support.build import build_shared

    src = (FIXTURES / "chain.c").read_text()
    rpath = ["-Wl,-rpath,$ORIGIN"]
    third = build_shared("fc_third", src, group="robustness-chain",
                         cflags=["-DCHAIN_FN=fc_third", "-DCHAIN_CALL=fc_nowhere"])
    second = build_shared("fc_second", src, group="robustness-chain", deps=[third],
                          ldflags=rpath, cflags=["-DCHAIN_FN=fc_second",
                                                 "-DCHAIN_CALL=fc_third"])
    return build_shared("fc_root", src, group="robustness-chain", deps=[second],
                        ldflags=rpath, cflags=["-DCHAIN_FN=fc_root",
                                               "-DCHAIN_CALL=fc_second"])


@pytest.mark.parametrize("where", ["default context", "own context"])
def test_failure_in_the_third_library_leaves_nothing(failing_chain: Path, where: str,
                                                     host_regions: RegionTracker) -> None:
    ctx = default_context() if where == "default context" else relink.LinkContext("failing")
    keys = set(ctx.keys())
    # One failure first: process-wide one-time allocations (libffi's closure page for
    # ctypes callbacks, host lookup caches) are not per-load leaks.
    with pytest.raises(UnknownSymbolError):
        ctx.load(failing_chain)
    before = Snapshot.take()
    for _ in range(3):  # and again: nothing half-registered makes the retry differ
        with pytest.raises(UnknownSymbolError) as info:
            ctx.load(failing_chain)
        assert info.value.symbol == "fc_nowhere"
        assert "libfc_third.so" in str(info.value)
    assert len(host_regions.regions) >= 4 * 3, "the three libraries were not all mapped"
    assert host_regions.unreleased() == []
    assert set(ctx.keys()) == keys
    assert Snapshot.take().new_since(before) == []
