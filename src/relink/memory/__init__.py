"""Memory backends: where an image's address space comes from and how it is accessed.

Memory layer of the pipeline (input -> elf -> arch -> memory -> loader -> relocation).
A `Mapper` creates address space (`reserve`); the `Region` it returns maps file-backed
and anonymous pages into that space, reads, writes and protects them, and releases the
whole span. The loader and the relocation loop only talk to these two protocols, so the
same pipeline loads into the host process (`HostMapper`), into a plain buffer at any
base address for any ISA (`BufferMapper`), or into a user's backend (an emulator, a
remote target, a fault-injecting test double).

Protection values use the POSIX PROT_* bits: READ=1, WRITE=2, EXEC=4.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Mapper", "Region", "PROT_EXEC", "PROT_NONE", "PROT_READ", "PROT_WRITE"]

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4


@runtime_checkable
class Region(Protocol):
    """One reserved span of target address space, owned by one image.

    Addresses are target addresses (``start <= addr < start + size``). Callers (the
    loader and the relocation loop) guarantee every call stays inside the span; the
    segment layer does the bounds checks, so a Region need not repeat them.
    """

    start: int
    size: int

    def map_file(self, addr: int, size: int, fd: int, offset: int, prot: int) -> None:
        """Map `size` bytes of file `fd` at `offset` to `addr` (page-aligned, private)."""

    def map_anon(self, addr: int, size: int, prot: int) -> None:
        """Map zero-filled private memory at `addr` (page-aligned)."""

    def protect(self, addr: int, size: int, prot: int) -> None:
        """Change the protection of ``[addr, addr + size)`` (page-aligned)."""

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write bytes at `addr`."""

    def read(self, addr: int, size: int) -> bytes:
        """Read `size` bytes at `addr`."""

    def view(self) -> memoryview | None:
        """A writable host memoryview of the whole span (byte 0 = `start`), if any.

        The fast path: the relocation loop writes words through it. Backends without
        host-addressable memory return None and get `write` calls instead.
        """

    def release(self) -> None:
        """Unmap the whole span. Idempotent."""


@runtime_checkable
class Mapper(Protocol):
    """Creates address space for images.

    Attributes:
        page_size: the granule of `map_*` and `protect`.
        native: True when addresses are host addresses and code in them may run here.
    """

    page_size: int
    native: bool

    def reserve(self, size: int, *, address: int | None = None, fixed: bool = False) -> Region:
        """Reserve `size` bytes (inaccessible) at `address` (a hint unless `fixed`).

        With `fixed`, fail (MappingError) rather than place the span elsewhere or replace
        an existing mapping.
        """
        ...
