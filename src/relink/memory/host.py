"""The native memory backend: libc mmap / mprotect / munmap through ctypes.

Memory layer, host only. `HostMapper.reserve` takes a PROT_NONE span from the kernel
(at a fixed address with MAP_FIXED_NOREPLACE for ET_EXEC, so a clash is an error and
nothing is ever replaced); segments are then mapped over it with MAP_FIXED. Python's
`mmap` module cannot place a mapping or change its protection, hence ctypes.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

from relink.errors import MappingError
from relink.runtime import libc as c

__all__ = ["HostMapper", "HostRegion"]

_FILE_FIXED = c.MAP_PRIVATE | c.MAP_FIXED
_ANON_FIXED = c.MAP_PRIVATE | c.MAP_FIXED | c.MAP_ANONYMOUS


def _fail(op: str, addr: int, size: int) -> MappingError:
    err = ctypes.get_errno()
    return MappingError(f"{op}({addr:#x}, {size:#x}) failed: {c.errno_message(err)}",
                        op=op, errno=err, address=addr)


class HostRegion:
    """A span of this process's address space. See `relink.memory.Region`."""

    __slots__ = ("start", "size", "_view", "_released", "__weakref__")

    def __init__(self, start: int, size: int) -> None:
        self.start = start
        self.size = size
        self._view: memoryview | None = None
        self._released = False

    # A failed mmap returns None (NULL) or MAP_FAILED, never `addr`: one comparison.
    def map_file(self, addr: int, size: int, fd: int, offset: int, prot: int) -> None:
        if c.mmap(addr, size, prot, _FILE_FIXED, fd, offset) != addr:
            raise _fail("mmap", addr, size)

    def map_files(self, fd: int, maps: list[tuple[int, int, int, int]]) -> None:
        """`map_file` for each (offset from `start`, length, file offset, prot): the
        other segments of a file mapped by its recipe, in one loop."""
        mmap = c.mmap  # looked up per call: tests replace it to inject failures
        start = self.start
        for at, size, offset, prot in maps:
            if mmap(start + at, size, prot, _FILE_FIXED, fd, offset) != start + at:
                raise _fail("mmap", start + at, size)

    def map_anon(self, addr: int, size: int, prot: int) -> None:
        if c.mmap(addr, size, prot, _ANON_FIXED, -1, 0) != addr:
            raise _fail("mmap", addr, size)

    def protect(self, addr: int, size: int, prot: int) -> None:
        if c.mprotect(addr, size, prot) != 0:
            raise _fail("mprotect", addr, size)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        ctypes.memmove(addr, bytes(data), len(data))

    def read(self, addr: int, size: int) -> bytes:
        return ctypes.string_at(addr, size)

    def view(self) -> memoryview:
        if self._view is None:
            # Straight from the address: a ctypes array type per size would be created
            # (and left to the cycle collector) on every load.
            self._view = c.memoryview_at(self.start, self.size)
        return self._view

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._view is not None:
            self._view.release()
            self._view = None
        if c.munmap(self.start, self.size) != 0:
            raise _fail("munmap", self.start, self.size)

    def __repr__(self) -> str:
        return f"<HostRegion {self.start:#x}-{self.start + self.size:#x}>"


class HostMapper:
    """Creates `HostRegion`s in the running process. See `relink.memory.Mapper`."""

    native = True
    # mmap.PAGESIZE without importing the mmap extension module (a dlopen of its own)
    page_size = os.sysconf("SC_PAGESIZE")

    def reserve(self, size: int, *, address: int | None = None,
                fixed: bool = False) -> HostRegion:
        flags = c.MAP_PRIVATE | c.MAP_ANONYMOUS
        if fixed:
            flags |= c.MAP_FIXED_NOREPLACE
        got = c.mmap(address or None, size, c.PROT_NONE, flags, -1, 0)
        if got is None or got == c.MAP_FAILED:
            err = ctypes.get_errno()
            if fixed and err == 17:  # EEXIST
                raise MappingError(
                    f"cannot place the image at its fixed address {address:#x}: something is "
                    "already mapped there (ET_EXEC images must load at their link address)",
                    op="mmap", errno=err, address=address)
            raise _fail("mmap", address or 0, size)
        if fixed and got != address:
            # Kernels before 4.17 ignore MAP_FIXED_NOREPLACE and treat it as a hint.
            c.munmap(got, size)
            raise MappingError(f"cannot place the image at its fixed address {address:#x}",
                               op="mmap", errno=17, address=address)
        return HostRegion(got, size)

    def reserve_file(self, size: int, fd: int, offset: int, prot: int) -> HostRegion:
        """Reserve `size` bytes mapped from `fd` at `offset` with `prot` (ld.so's trick:
        the first segment's mapping is the reservation, one system call less). The
        caller maps every other page of the span over it with MAP_FIXED."""
        got = c.mmap(None, size, prot, c.MAP_PRIVATE, fd, offset)
        if got is None or got == c.MAP_FAILED:
            raise _fail("mmap", 0, size)
        return HostRegion(got, size)

    def map_file_span(self, size: int, fd: int, offset: int, prot: int,
                      maps: list[tuple[int, int, int, int]],
                      zero: Iterable[tuple[slice, memoryview]] = ()) -> HostRegion:
        """`reserve_file`, then `HostRegion.map_files` of `maps` over it, then
        each (slice of the span, bytes) in `zero` written (the zeroed tails of the
        segments' last file pages, writable already), in one call: how a file whose
        segments tile its span is mapped (the loader's recipe). The region's view is
        made now: the loader relocates through it. Nothing stays mapped if a call
        fails."""
        mmap = c.mmap  # looked up per call: tests replace it to inject failures
        got = mmap(None, size, prot, c.MAP_PRIVATE, fd, offset)
        if got is None or got == c.MAP_FAILED:
            raise _fail("mmap", 0, size)
        region = HostRegion(got, size)
        try:
            # `map_files`, inlined (every reload of a file comes here). A plain loop:
            # driving the calls with map() inside C saves bytecode but costs more
            # instructions per call (measured with callgrind).
            for at, length, file_offset, map_prot in maps:
                if mmap(got + at, length, map_prot, _FILE_FIXED, fd, file_offset) \
                        != got + at:
                    raise _fail("mmap", got + at, length)
            view = region._view = c.memoryview_at(got, size)
            for where, data in zero:
                view[where] = data
        except BaseException:
            region.release()
            raise
        return region
