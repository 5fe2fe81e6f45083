"""A virtual address space backed by a bytearray, at any base address, for any ISA.

Memory layer. `BufferMapper` lets the loader and the relocation loop work on an image
that will never run on this host (a foreign architecture, a firmware image, a test
layout): pages are bytes in a bytearray, protections are recorded, not enforced, and
nothing is ever executed. Mapping a file copies its bytes.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from relink.errors import MappingError

__all__ = ["DEFAULT_MAX_SIZE", "BufferMapper", "BufferRegion", "fill_from_file"]

DEFAULT_MAX_SIZE = 1 << 30


def fill_from_file(buf: bytearray | memoryview, off: int, addr: int, size: int, fd: int,
                   offset: int) -> None:
    """``mmap``'s effect, by copy: `size` bytes of the file at `offset` into ``buf[off:]``,
    zeros past the end of the file. An I/O error is a MappingError with its errno."""
    try:
        chunk = os.pread(fd, size, offset)
    except OSError as exc:
        raise MappingError(f"cannot read {size:#x} bytes at offset {offset:#x}: "
                           f"{exc.strerror}", op="pread", errno=exc.errno,
                           address=addr) from exc
    buf[off:off + len(chunk)] = chunk
    buf[off + len(chunk):off + size] = bytes(size - len(chunk))


class BufferRegion:
    """A span of virtual memory held in a bytearray. See `relink.memory.Region`.

    Attributes:
        protections: page-aligned (addr, size, prot) records, most recent last.
    """

    def __init__(self, start: int, size: int) -> None:
        self.start = start
        self.size = size
        try:
            self.data = bytearray(size)
        except (MemoryError, OverflowError) as exc:
            raise MappingError(f"cannot allocate a {size:#x}-byte buffer region",
                               op="reserve", errno=12, address=start) from exc
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
        fill_from_file(self.data, off, addr, size, fd, offset)
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
        max_size: the largest span one reservation may have. Buffer pages are real
            zero-filled host memory, so an image whose segments claim a huge span (a
            malformed or hostile file) is refused with MappingError instead of
            exhausting the host's memory (1 GiB by default).
    """

    native = False

    def __init__(self, base: int = 0x10000000, page_size: int = 0x1000,
                 max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.page_size = page_size
        self.max_size = max_size
        self._next = base
        self.regions: list[BufferRegion] = []
        self.tls_policy: Any = None

    def reserve(self, size: int, *, address: int | None = None,
                fixed: bool = False) -> BufferRegion:
        if size < 0 or size > self.max_size:
            raise MappingError(f"cannot reserve {size:#x} bytes of buffer memory (the limit "
                               f"is {self.max_size:#x}: raise BufferMapper(max_size=...) "
                               "if the image really is that large)", op="reserve",
                               errno=errno.ENOMEM, address=address)
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

    def host_view(self, addr: int, size: int) -> memoryview:
        """A writable memoryview of ``[addr, addr + size)`` (used by `Module.variable`)."""
        for r in self.regions:
            if not r.released and r.start <= addr and addr + size <= r.start + r.size:
                return memoryview(r.data)[addr - r.start:addr - r.start + size]
        raise MappingError(f"{size:#x} bytes at {addr:#x} are not in any buffer region",
                           op="access", address=addr)

    @property
    def tls(self) -> Any:
        """The TLS policy `relink.load` uses for images in this buffer.

        A `relink.runtime.emulator.ForeignTls`: module ids and the target ISA's static
        TLS layout (variant I or II), so DTPMOD / DTPOFF / TPOFF relocations get the
        values the target's code expects. There is no thread and no TLS area here, so
        TLSDESC needs ``ForeignTls(tlsdesc_function=...)`` set on `tls_policy`.
        """
        if self.tls_policy is None:
            from relink.runtime.emulator import ForeignTls

            self.tls_policy = ForeignTls()
        return self.tls_policy
