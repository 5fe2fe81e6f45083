"""Relocation tables: REL, RELA and RELR, decoded into int columns.

Elf layer. Each table is decoded once into parallel lists (offsets, infos, addends)
through ``memoryview.cast`` with a stride — no Python object per relocation — which is
the form the generic relocation loop (relocation/dynamic.py) consumes. REL tables have
no addend column (`addends` is None): the loop reads implicit addends from the place.
"""

from __future__ import annotations

from relink._record import Record
from relink.elf.view import AddressView
from relink.errors import ElfParseError

__all__ = ["RelocTable", "decode_relr", "read_table", "split_info"]


class RelocTable(Record):
    """One decoded relocation table.

    Attributes:
        name: ``".rela.dyn"``, ``".rela.plt"``, ``".rel.dyn"``…, for messages.
        offsets: r_offset per entry (link-time addresses).
        types: relocation type per entry.
        syms: symbol index per entry.
        addends: explicit addends (RELA) or None (REL).
    """

    __slots__ = ("name", "offsets", "types", "syms", "addends", "arrays")

    def __init__(self, name: str, offsets: list[int], types: list[int], syms: list[int],
                 addends: list[int] | None, arrays: dict[str, object] | None = None) -> None:
        self.name = name
        self.offsets = offsets
        self.types = types
        self.syms = syms
        self.addends = addends
        # Base-independent numpy views of the columns, built on first bulk use and kept
        # with the table (relocation/dynamic.py's numpy path).
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.offsets)


def split_info(infos: list[int], elf_class: int) -> tuple[list[int], list[int]]:
    """Split r_info words into (types, symbol indices)."""
    if elf_class == 64:
        return [i & 0xFFFFFFFF for i in infos], [i >> 32 for i in infos]
    return [i & 0xFF for i in infos], [i >> 8 for i in infos]


def read_table(view: AddressView, vaddr: int, size: int, entsize: int, *, rela: bool,
               elf_class: int, name: str) -> RelocTable:
    """Decode a REL or RELA table of `size` bytes at link-time address `vaddr`."""
    w = elf_class // 8
    expected = w * (3 if rela else 2)
    if entsize and entsize != expected:
        raise ElfParseError(f"relocation entry size is {entsize}, expected {expected}",
                            file=view.label, what=name)
    if size % expected:
        raise ElfParseError(f"table size {size} is not a multiple of the entry size "
                            f"{expected}", file=view.label, what=name)
    if size == 0:
        return RelocTable(name, [], [], [], [] if rela else None)
    raw = view.get(vaddr, size, name)
    if vaddr % w:
        raw = memoryview(raw.tobytes())
    u = raw.cast("Q" if w == 8 else "I")
    stride = 3 if rela else 2
    offsets = u[0::stride].tolist()
    types, syms = split_info(u[1::stride].tolist(), elf_class)
    addends = raw.cast("q" if w == 8 else "i")[2::3].tolist() if rela else None
    return RelocTable(name, offsets, types, syms, addends)


def decode_relr(view: AddressView, vaddr: int, size: int, entsize: int, elf_class: int,
                limit: int) -> list[int]:
    """Expand a RELR table into the list of link-time addresses to relocate.

    Args:
        limit: upper bound on the number of addresses (a lying bitmap cannot make the
            loader spin or allocate without bound); exceeding it raises ElfParseError.
    """
    w = elf_class // 8
    if entsize and entsize != w:
        raise ElfParseError(f"DT_RELRENT is {entsize}, expected {w}", file=view.label,
                            what=".relr.dyn")
    if size % w:
        raise ElfParseError(f"RELR table size {size} is not a multiple of {w}",
                            file=view.label, what=".relr.dyn")
    if size == 0:
        return []
    raw = view.get(vaddr, size, ".relr.dyn")
    if vaddr % w:
        raw = memoryview(raw.tobytes())
    words = raw.cast("Q" if w == 8 else "I").tolist()
    out: list[int] = []
    append = out.append
    where = 0
    span = (w * 8 - 1) * w
    for entry in words:
        if entry & 1 == 0:
            append(entry)
            where = entry + w
        else:
            bits = entry >> 1
            i = where
            while bits:
                if bits & 1:
                    append(i)
                bits >>= 1
                i += w
            where += span
        if len(out) > limit:
            raise ElfParseError(f"RELR table expands to more than {limit} relocations",
                                file=view.label, what=".relr.dyn")
    return out
