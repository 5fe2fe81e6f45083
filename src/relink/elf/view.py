"""Bounds-checked access to an image's link-time virtual addresses.

The elf layer reads dynamic tables (symbols, strings, hash tables, relocations,
versions) by virtual address. An `AddressView` answers those reads from either the
file's bytes (for ``relink info`` and scanning: nothing is mapped) or a mapped image
(for loading: tables are read where they will live, as ld.so does). This is the one
layer that checks that every table lies inside a PT_LOAD segment; the parsers above it
trust the memoryviews they get.
"""

from __future__ import annotations

from collections.abc import Sequence

from relink.elf.header import ProgramHeader
from relink.errors import ElfParseError

__all__ = ["AddressView", "PT_LOAD"]

PT_LOAD = 1


class AddressView:
    """Reads ``[vaddr, vaddr + size)`` ranges of an image as memoryviews.

    Args:
        buf: the backing bytes (file contents, or a view of the mapped span).
        ranges: ``(vaddr_start, vaddr_end, index_in_buf_of_vaddr_start)`` per segment.
        label: file name used in error messages.
    """

    __slots__ = ("buf", "ranges", "label")

    def __init__(self, buf: memoryview, ranges: Sequence[tuple[int, int, int]],
                 label: str) -> None:
        self.buf = buf
        # Never mutated: a list already in order (the layout a file's later loads reuse)
        # is shared, not copied (one view per loaded module, kept while it is loaded).
        self.ranges: Sequence[tuple[int, int, int]] = \
            ranges if type(ranges) is list and _ascending(ranges) else sorted(ranges)
        self.label = label

    @classmethod
    def for_file(cls, data: memoryview, phdrs: Sequence[ProgramHeader],
                 label: str) -> AddressView:
        """A view over the file bytes: only the file-backed part of each segment."""
        ranges = []
        n = len(data)
        for ph in phdrs:
            if ph.p_type == PT_LOAD and ph.p_filesz:
                end_off = min(ph.p_offset + ph.p_filesz, n)
                if ph.p_offset < n:
                    ranges.append((ph.p_vaddr, ph.p_vaddr + (end_off - ph.p_offset),
                                   ph.p_offset))
        return cls(data, ranges, label)

    @classmethod
    def for_image(cls, view: memoryview, span_vaddr: int, phdrs: Sequence[ProgramHeader],
                  label: str) -> AddressView:
        """A view over a mapped image whose byte 0 is link-time address `span_vaddr`."""
        ranges = [(ph.p_vaddr, ph.p_vaddr + ph.p_memsz, ph.p_vaddr - span_vaddr)
                  for ph in phdrs if ph.p_type == PT_LOAD and ph.p_memsz]
        return cls(view, ranges, label)

    def locate(self, vaddr: int, size: int, what: str) -> int:
        """Return the buffer index of `vaddr`, checking the whole range is readable."""
        for start, end, index in self.ranges:
            if start <= vaddr and vaddr + size <= end:
                return index + (vaddr - start)
        raise ElfParseError(f"{size} bytes at address {vaddr:#x} are outside every loadable "
                            "segment", file=self.label, what=what, offset=vaddr)

    def get(self, vaddr: int, size: int, what: str) -> memoryview:
        """Return a read-only memoryview of ``[vaddr, vaddr + size)``."""
        if size < 0 or vaddr < 0:
            raise ElfParseError(f"invalid range {vaddr:#x}+{size}", file=self.label, what=what)
        i = self.locate(vaddr, size, what)
        return self.buf[i:i + size]

    def until(self, vaddr: int, what: str) -> memoryview:
        """Return a view from `vaddr` to the end of its segment (for unsized tables)."""
        for start, end, index in self.ranges:
            if start <= vaddr < end:
                return self.buf[index + vaddr - start:index + end - start]
        raise ElfParseError(f"address {vaddr:#x} is outside every loadable segment",
                            file=self.label, what=what, offset=vaddr)

    def contains(self, vaddr: int, size: int) -> bool:
        return any(start <= vaddr and vaddr + size <= end for start, end, _ in self.ranges)


def _ascending(ranges: list[tuple[int, int, int]]) -> bool:
    """True if `ranges` is in order already (what `sorted` would return)."""
    prev = None
    for r in ranges:
        if prev is not None and r < prev:
            return False
        prev = r
    return True
