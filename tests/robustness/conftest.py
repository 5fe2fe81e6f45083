"""Shared helpers of the robustness suite (issue 9): process snapshots, a bounds-checking
mapper, and the compiled fixtures.

`Snapshot` records what a load could leak — /proc/self/maps entries, open fds, memfds —
so a test can assert that a failed or closed load left nothing behind. `CheckedMapper`
is a native `Mapper` that wraps `HostMapper` and records every Region call that falls
outside the region it was made on (the "no write outside the module's own mapping"
contract), and every mapping it created, so a test can see they were all released.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relink.memory.host import HostMapper, HostRegion
from relink.runtime.host import HostPolicy

HERE = Path(__file__).resolve().parent
# Virtual (BufferMapper) loads bind libc's and ld.so's symbols to the host's copies
# instead of loading those two into the buffer (which would need an IFUNC executor).
BUFFER_HOST = HostPolicy(("libc.so.6", "ld-linux*.so*"), serve_loaded=False)
FIXTURES = HERE / "fixtures"
SCRIPTS = HERE.parents[1] / "scripts"


@dataclass(frozen=True)
class Snapshot:
    """What a load could leak: maps entries (addresses + perms), fds, memfds."""

    maps: frozenset[tuple[str, str, str]]
    fds: frozenset[int]
    memfds: int

    @classmethod
    def take(cls) -> Snapshot:
        maps = set()
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                maps.add((parts[0], parts[1], parts[5].strip() if len(parts) > 5 else ""))
        fds = set()
        memfds = 0
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue  # the directory's own fd, closed already
            fds.add(int(name))
            memfds += target.startswith("/memfd:")
        return cls(frozenset(maps), frozenset(fds), memfds)

    def new_since(self, before: Snapshot) -> list[str]:
        """Human-readable leaks compared with `before` (maps that appeared, new fds)."""
        out = [f"mapping {m}" for m in sorted(self.maps - before.maps)
               if not _heap_growth(m)]
        out += [f"fd {fd} -> {_link(fd)}" for fd in sorted(self.fds - before.fds)]
        if self.memfds > before.memfds:
            out.append(f"memfds {before.memfds} -> {self.memfds}")
        return out


def _link(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _heap_growth(entry: tuple[str, str, str]) -> bool:
    # The interpreter's own allocator (anonymous rw-p arenas, [heap]) may grow while a
    # test runs; relink's images are never anonymous rw-p-only without being tracked by
    # CheckedMapper, which the tests check separately.
    _span, perms, path = entry
    return perms == "rw-p" and path in ("", "[heap]")


class CheckedRegion:
    """A HostRegion proxy that records any call reaching outside its span."""

    def __init__(self, inner: HostRegion, mapper: CheckedMapper) -> None:
        self.inner = inner
        self.mapper = mapper
        self.start = inner.start
        self.size = inner.size

    def _check(self, op: str, addr: int, size: int) -> None:
        if addr < self.start or addr + size > self.start + self.size or size < 0:
            self.mapper.violations.append(
                f"{op}({addr:#x}, {size:#x}) outside {self.start:#x}+{self.size:#x}")

    def map_file(self, addr: int, size: int, fd: int, offset: int, prot: int) -> None:
        self._check("map_file", addr, size)
        self.inner.map_file(addr, size, fd, offset, prot)

    def map_anon(self, addr: int, size: int, prot: int) -> None:
        self._check("map_anon", addr, size)
        self.inner.map_anon(addr, size, prot)

    def protect(self, addr: int, size: int, prot: int) -> None:
        self._check("protect", addr, size)
        self.inner.protect(addr, size, prot)

    def write(self, addr: int, data: Any) -> None:
        self._check("write", addr, len(data))
        self.inner.write(addr, data)

    def read(self, addr: int, size: int) -> bytes:
        self._check("read", addr, size)
        return self.inner.read(addr, size)

    def view(self) -> memoryview:
        # Bounded by construction: a memoryview of exactly the span.
        return self.inner.view()

    def release(self) -> None:
        self.inner.release()
        self.mapper.live.discard(self.start)

    def __getattr__(self, name: str) -> Any:  # extras other layers may use
        return getattr(self.inner, name)


class CheckedMapper:
    """A native Mapper over HostMapper that audits every Region call."""

    native = True

    def __init__(self) -> None:
        self._host = HostMapper()
        self.page_size = self._host.page_size
        self.violations: list[str] = []
        self.live: set[int] = set()
        self.reserved = 0

    def reserve(self, size: int, *, address: int | None = None,
                fixed: bool = False) -> CheckedRegion:
        region = self._host.reserve(size, address=address, fixed=fixed)
        self.live.add(region.start)
        self.reserved += 1
        return CheckedRegion(region, self)


@pytest.fixture
def checked_mapper() -> CheckedMapper:
    return CheckedMapper()


class RegionTracker:
    """Every HostRegion any HostMapper reserved while installed (default mappers too)."""

    def __init__(self) -> None:
        self.regions: list[HostRegion] = []

    def unreleased(self) -> list[HostRegion]:
        return [r for r in self.regions if not r._released]


@pytest.fixture
def host_regions(monkeypatch: pytest.MonkeyPatch) -> RegionTracker:
    """Record the host regions relink reserves during the test (anonymous rw-p pages
    are indistinguishable from the interpreter's heap in /proc/self/maps)."""
    tracker = RegionTracker()
    # Every HostMapper method that creates a region.
    for name in ("reserve", "reserve_file", "map_file_span"):
        monkeypatch.setattr(HostMapper, name, _tracked(getattr(HostMapper, name), tracker))
    return tracker


def _tracked(original: Any, tracker: RegionTracker) -> Any:
    def method(self: HostMapper, *args: Any, **kw: Any) -> HostRegion:
        region = original(self, *args, **kw)
        tracker.regions.append(region)
        return region
    return method


@pytest.fixture(scope="session")
def seedlib() -> Path:
    """The robustness fixture library (RELATIVE, GLOB_DAT, JUMP_SLOT, TLS, versions)."""
    from support.build import build_shared

    src = {"seedlib.c": (FIXTURES / "seedlib.c").read_text(),
           "seedlib.map": (FIXTURES / "seedlib.map").read_text()}
    return build_shared("rb_seed", src, soname="librbseed.so",
                        ldflags=["-Wl,--version-script=seedlib.map"], group="robustness")


@pytest.fixture(scope="session")
def scripts_on_path() -> Path:
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return SCRIPTS
