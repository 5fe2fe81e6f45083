"""ELF notes (PT_NOTE / SHT_NOTE): GNU build-id, ABI tag, properties.

Elf layer; used by ``relink info``. Each note's header, name and descriptor are checked
against the note area before use.
"""

from __future__ import annotations

import struct

from relink._record import FrozenRecord
from relink.errors import ElfParseError

__all__ = ["Note", "describe_note", "parse_notes"]

_NHDR = struct.Struct("<III")
NT_GNU_ABI_TAG, NT_GNU_BUILD_ID, NT_GNU_PROPERTY_TYPE_0 = 1, 3, 5


class Note(FrozenRecord):
    """One note: owner name, type and descriptor bytes."""

    __slots__ = ("name", "n_type", "desc")
    name: str
    n_type: int
    desc: bytes

    def __init__(self, name: str, n_type: int, desc: bytes) -> None:
        self._set(name, n_type, desc)


def parse_notes(data: bytes | memoryview, align: int, label: str) -> list[Note]:
    """Decode a note area. `align` is 4 or 8 (the segment's p_align; 0/1 mean 4)."""
    if align in (0, 1):
        align = 4
    if align not in (4, 8):
        raise ElfParseError(f"invalid note alignment {align}", file=label, what="notes")
    buf = bytes(data)
    out = []
    pos = 0
    while pos + _NHDR.size <= len(buf):
        namesz, descsz, ntype = _NHDR.unpack_from(buf, pos)
        name_at = pos + _NHDR.size
        desc_at = name_at + ((namesz + 3) & ~3)
        end = desc_at + descsz
        if namesz > len(buf) or descsz > len(buf) or end > len(buf):
            raise ElfParseError(f"note at {pos:#x} runs past its area", file=label,
                                what="notes", offset=pos)
        name = buf[name_at:name_at + namesz].rstrip(b"\0").decode("ascii", "replace")
        out.append(Note(name, ntype, buf[desc_at:end]))
        pos = (end + align - 1) & ~(align - 1)
    return out


def describe_note(note: Note) -> str:
    """A one-line human description (build-id in hex, ABI tag as a version)."""
    if note.name == "GNU" and note.n_type == NT_GNU_BUILD_ID:
        return f"GNU build-id {note.desc.hex()}"
    if note.name == "GNU" and note.n_type == NT_GNU_ABI_TAG and len(note.desc) >= 16:
        os_, a, b, c = struct.unpack_from("<IIII", note.desc)
        osname = {0: "Linux", 1: "Hurd", 2: "Solaris", 3: "FreeBSD"}.get(os_, str(os_))
        return f"GNU ABI tag: {osname} {a}.{b}.{c}"
    if note.name == "GNU" and note.n_type == NT_GNU_PROPERTY_TYPE_0:
        return f"GNU property ({len(note.desc)} bytes)"
    return f"{note.name or '<none>'} type {note.n_type:#x} ({len(note.desc)} bytes)"
