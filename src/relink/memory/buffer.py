"""A virtual address space backed by a bytearray, at any base address, for any ISA.

Memory layer. `BufferMapper` lets the loader and the relocation loop work on an image
that will never run on this host (a foreign architecture, a firmware image, a test
layout): pages are bytes in a bytearray, protections are recorded, not enforced, and
nothing is ever executed. Mapping a file copies its bytes.
"""

from __future__ import annotations

import os

from relink.errors import MappingError

__all__ = ["BufferMapper", "BufferRegion"]


class BufferRegion:
    """A span of virtual memory held in a bytearray. See `relink.memory.Region`.

    Attributes:
        protections: page-aligned (addr, size, prot) records, most recent last.
    """

    def __init__(self, start: int, size: int) -> None:
        self.start = start
        self.size = size
        self.data = bytearray(size)
        self.protections: list[tuple[int, int, int]] = []
        self.released = False

    def _check(self, addr: int, size: int) -> int:
        off = addr - self.start
        if off < 0 or size < 0 or off + size > self.size:
            raise MappingError(f"{size:#x} bytes at {addr:#x} are outside the region "
                               f"{self.start:#x}-{self.start + self.size:#x}", op="access",
                               address=addr)
        return off

    def map_file(self, addr: int, size: int, fd: int, offset: int, prot: int) -> None:
        off = self._check(addr, size)
        chunk = os.pread(fd, size, offset)
        self.data[off:off + len(chunk)] = chunk
        self.data[off + len(chunk):off + size] = bytes(size - len(chunk))
        self.protections.append((addr, size, prot))

    def map_anon(self, addr: int, size: int, prot: int) -> None:
        off = self._check(addr, size)
        self.data[off:off + size] = bytes(size)
        self.protections.append((addr, size, prot))

    def protect(self, addr: int, size: int, prot: int) -> None:
        self._check(addr, size)
        self.protections.append((addr, size, prot))

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        off = self._check(addr, len(data))
        self.data[off:off + len(data)] = data

    def read(self, addr: int, size: int) -> bytes:
        off = self._check(addr, size)
        return bytes(self.data[off:off + size])

    def view(self) -> memoryview:
        return memoryview(self.data)

    def protection_at(self, addr: int) -> int:
        """The protection last set on the page holding `addr` (0 if never mapped)."""
        for start, size, prot in reversed(self.protections):
            if start <= addr < start + size:
                return prot
        return 0

    def release(self) -> None:
        self.released = True


class BufferMapper:
    """Creates `BufferRegion`s. See `relink.memory.Mapper`.

    Args:
        base: the address of the first reservation when no address is asked for.
        page_size: the target's page size (4 KiB by default).
    """

    native = False

    def __init__(self, base: int = 0x10000000, page_size: int = 0x1000) -> None:
        self.page_size = page_size
        self._next = base
        self.regions: list[BufferRegion] = []

    def reserve(self, size: int, *, address: int | None = None,
                fixed: bool = False) -> BufferRegion:
        start = address if address is not None else self._next
        for r in self.regions:
            if not r.released and start < r.start + r.size and r.start < start + size:
                if fixed:
                    raise MappingError(f"fixed address {start:#x} overlaps another image",
                                       op="reserve", address=start)
                start = max(self._next, r.start + r.size)
        region = BufferRegion(start, size)
        self.regions.append(region)
        self._next = max(self._next, (start + size + 0xFFFF) & ~0xFFFF)
        return region
