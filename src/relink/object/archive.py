"""Static archives (``.a``): read members and pick the ones a link needs, as ld does.

Input stage of `relink.object`. `Archive` decodes the System V / GNU ``ar`` format
(``!<arch>\\n`` magic, 60-byte member headers, the ``/`` symbol index and the ``//``
long-name table; BSD ``#1/<len>`` names too) without extracting anything to disk. A
member is parsed only when the linker asks for a symbol it defines: `member_defining`
consults the archive's symbol index when there is one, else each member's symbol table.
Thin archives (``!<thin>\\n``) are refused with a clear message. Malformed archives
raise `ElfParseError` naming the archive and the member.
"""

from __future__ import annotations

import struct

from relink.elf.source import ElfSource, open_source
from relink.errors import ElfParseError, UnsupportedError
from relink.object.parse import ObjectFile, parse_object

__all__ = ["AR_MAGIC", "Archive", "Member", "is_archive"]

AR_MAGIC = b"!<arch>\n"
THIN_MAGIC = b"!<thin>\n"
_HDR = 60


def is_archive(src: ElfSource) -> bool:
    """True when `src` starts with an ar magic (regular or thin)."""
    return src.size >= 8 and src.read(0, 8) in (AR_MAGIC, THIN_MAGIC)


class Member:
    """One archive member: its name and byte range inside the archive."""

    __slots__ = ("name", "offset", "size", "header")

    def __init__(self, name: str, offset: int, size: int, header: int) -> None:
        self.name = name
        self.offset = offset  # where the member's bytes start
        self.size = size
        self.header = header  # where its ar header starts (what the symbol index names)

    def __repr__(self) -> str:
        return f"<Member {self.name} {self.size} bytes>"


class Archive:
    """An ``ar`` archive of relocatable objects.

    Attributes:
        label: the archive's path or name.
        members: object members in archive order (symbol-index and name-table members
            excluded).
        index: symbol name -> member offsets defining it (from the ``/`` member; empty
            when the archive has no index).
    """

    def __init__(self, src: ElfSource) -> None:
        self.source = src
        self.label = src.label
        head = src.read(0, 8) if src.size >= 8 else b""
        if head == THIN_MAGIC:
            raise UnsupportedError("thin archives (members stored outside the archive) are "
                                   "not supported: rebuild with 'ar rcs' without T",
                                   file=self.label)
        if head != AR_MAGIC:
            raise ElfParseError("not an ar archive (bad magic)", file=self.label,
                                what="archive")
        self.members: list[Member] = []
        self.index: dict[str, list[int]] = {}
        self._parsed: dict[int, ObjectFile] = {}
        self._scanned = False
        self._parse_members()

    def _parse_members(self) -> None:
        src = self.source
        off = 8
        longnames = b""
        raw_index: tuple[int, bytes, bool] | None = None
        while off + _HDR <= src.size:
            hdr = src.read(off, _HDR)
            if hdr[58:60] != b"`\n":
                raise ElfParseError(f"bad member header at offset {off:#x}",
                                    file=self.label, what="archive", offset=off)
            name = hdr[0:16].decode("latin-1").rstrip(" ")
            try:
                size = int(hdr[48:58].decode("ascii").strip() or "0")
            except ValueError:
                raise ElfParseError(f"bad member size at offset {off:#x}", file=self.label,
                                    what="archive", offset=off) from None
            data_off = off + _HDR
            if data_off + size > src.size:
                raise ElfParseError(f"member '{name}' runs past the end of the archive",
                                    file=self.label, what="archive", offset=off)
            if name == "/" or name == "/SYM64/":
                raw_index = (data_off, src.read(data_off, size), name == "/SYM64/")
            elif name == "//":
                longnames = src.read(data_off, size)
            else:
                real, skip = self._member_name(name, longnames, data_off, size)
                self.members.append(Member(real, data_off + skip, size - skip, off))
            off = data_off + size + (size & 1)
        if off < src.size and src.read(off, src.size - off).strip(b"\n"):
            raise ElfParseError(f"truncated member header at offset {off:#x}",
                                file=self.label, what="archive", offset=off)
        if raw_index is not None:
            self._read_index(*raw_index)

    def _member_name(self, name: str, longnames: bytes, data_off: int,
                     size: int) -> tuple[str, int]:
        if name.startswith("#1/"):  # BSD: the name follows the header
            try:
                n = int(name[3:])
            except ValueError:
                raise ElfParseError(f"bad BSD member name {name!r}", file=self.label,
                                    what="archive") from None
            if n > size:
                raise ElfParseError("BSD member name longer than the member",
                                    file=self.label, what="archive")
            raw = self.source.read(data_off, n)
            return raw.rstrip(b"\0").decode("utf-8", "replace"), n
        if name.startswith("/") and name[1:].isdigit():
            start = int(name[1:])
            if start >= len(longnames):
                raise ElfParseError(f"long member name offset {start} is out of range",
                                    file=self.label, what="archive")
            end = longnames.find(b"/\n", start)
            end = len(longnames) if end < 0 else end
            return longnames[start:end].decode("utf-8", "replace"), 0
        return name.rstrip("/"), 0

    def _read_index(self, at: int, raw: bytes, wide: bool) -> None:
        width = 8 if wide else 4
        fmt = ">Q" if wide else ">I"
        if len(raw) < width:
            raise ElfParseError("truncated symbol index", file=self.label, what="archive")
        (count,) = struct.unpack_from(fmt, raw, 0)
        table_end = width + count * width
        if table_end > len(raw):
            raise ElfParseError("symbol index count runs past the index", file=self.label,
                                what="archive", offset=at)
        offsets = struct.unpack_from(f">{count}{'Q' if wide else 'I'}", raw, width)
        names = raw[table_end:].split(b"\0")
        if len(names) < count:
            raise ElfParseError("symbol index has fewer names than entries",
                                file=self.label, what="archive", offset=at)
        by_header = {m.header: m.offset for m in self.members}
        for name, hoff in zip(names, offsets):
            data = by_header.get(hoff)
            if data is None:
                raise ElfParseError(f"symbol index points at offset {hoff:#x}, which is "
                                    "not a member", file=self.label, what="archive")
            self.index.setdefault(name.decode("utf-8", "surrogateescape"), []).append(data)

    def member_at(self, data_offset: int) -> ObjectFile:
        """Parse (once) the member whose data starts at `data_offset`."""
        obj = self._parsed.get(data_offset)
        if obj is None:
            m = next(m for m in self.members if m.offset == data_offset)
            src = open_source(self.source.read(m.offset, m.size), name=m.name)
            obj = parse_object(src, label=f"{self.label}({m.name})")
            self._parsed[data_offset] = obj
        return obj

    def _scan(self) -> None:
        """Build the index from the members' own symbol tables (archive without one)."""
        if self._scanned:
            return
        self._scanned = True
        if self.index:
            return
        for m in self.members:
            if m.size < 4 or self.source.read(m.offset, 4) != b"\x7fELF":
                continue
            for name in self.member_at(m.offset).defined_globals():
                self.index.setdefault(name, []).append(m.offset)

    def member_defining(self, name: str) -> ObjectFile | None:
        """The first member that defines global `name`, parsed, or None."""
        self._scan()
        offsets = self.index.get(name)
        if not offsets:
            return None
        return self.member_at(offsets[0])

    def objects(self) -> list[ObjectFile]:
        """Every ELF member, parsed (for ``--whole-archive`` and for ``relink info``)."""
        out = []
        for m in self.members:
            if m.size >= 4 and self.source.read(m.offset, 4) == b"\x7fELF":
                out.append(self.member_at(m.offset))
        return out
