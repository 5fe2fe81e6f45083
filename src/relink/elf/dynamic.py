"""The dynamic section (PT_DYNAMIC): what a module needs, exports and asks of the loader.

Elf layer. `parse_dynamic` decodes the tag list once into a `DynamicInfo` record of
plain ints and strings: DT_NEEDED / SONAME / RPATH / RUNPATH, table addresses and sizes
(symbols, strings, hashes, relocations, versions), init/fini, flags. Strings are read
through the `AddressView`, so a malformed offset is an `ElfParseError`, not a crash.
"""

from __future__ import annotations

import struct

from relink._record import Record
from relink.elf.view import AddressView
from relink.errors import ElfParseError

__all__ = ["DynamicInfo", "parse_dynamic", "read_cstr"]

DT_NULL, DT_NEEDED, DT_PLTRELSZ, DT_PLTGOT, DT_HASH, DT_STRTAB, DT_SYMTAB = 0, 1, 2, 3, 4, 5, 6
DT_RELA, DT_RELASZ, DT_RELAENT, DT_STRSZ, DT_SYMENT, DT_INIT, DT_FINI = 7, 8, 9, 10, 11, 12, 13
DT_SONAME, DT_RPATH, DT_SYMBOLIC, DT_REL = 14, 15, 16, 17
DT_RELSZ, DT_RELENT, DT_PLTREL = 18, 19, 20
DT_DEBUG, DT_TEXTREL, DT_JMPREL, DT_BIND_NOW, DT_INIT_ARRAY, DT_FINI_ARRAY = 21, 22, 23, 24, 25, 26
DT_INIT_ARRAYSZ, DT_FINI_ARRAYSZ, DT_RUNPATH, DT_FLAGS = 27, 28, 29, 30
DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ, DT_RELRSZ, DT_RELR, DT_RELRENT = 32, 33, 35, 36, 37
DT_GNU_HASH, DT_TLSDESC_PLT, DT_TLSDESC_GOT = 0x6FFFFEF5, 0x6FFFFEF6, 0x6FFFFEF7
DT_VERSYM, DT_RELACOUNT, DT_RELCOUNT, DT_FLAGS_1 = 0x6FFFFFF0, 0x6FFFFFF9, 0x6FFFFFFA, 0x6FFFFFFB
DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM = (0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE,
                                                      0x6FFFFFFF)
DF_SYMBOLIC, DF_TEXTREL, DF_BIND_NOW, DF_STATIC_TLS = 0x2, 0x4, 0x8, 0x10
DF_1_NOW, DF_1_NODELETE, DF_1_PIE = 0x1, 0x8, 0x08000000

_DYN = {32: struct.Struct("<iI"), 64: struct.Struct("<qQ")}
# Tags whose value is an address (relocated by ld.so in glibc's l_info); used by tools.
ADDRESS_TAGS = frozenset({DT_PLTGOT, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_RELA, DT_INIT,
                          DT_FINI, DT_REL, DT_JMPREL, DT_INIT_ARRAY, DT_FINI_ARRAY,
                          DT_PREINIT_ARRAY, DT_RELR, DT_GNU_HASH, DT_VERSYM, DT_VERDEF,
                          DT_VERNEED, DT_DEBUG})


class DynamicInfo(Record):
    """Decoded PT_DYNAMIC. Addresses are link-time virtual addresses (vaddr).

    Every field starts empty (0, None, False or an empty list); keyword arguments
    set fields by name.
    """

    __slots__ = ("entries", "needed", "soname", "rpath", "runpath", "strtab", "strsz",
                 "symtab", "syment", "hash", "gnu_hash", "rela", "relasz", "relaent",
                 "rel", "relsz", "relent", "relr", "relrsz", "relrent", "jmprel",
                 "pltrelsz", "pltrel", "relcount", "pltgot", "init", "fini", "init_array",
                 "init_arraysz", "fini_array", "fini_arraysz", "preinit_array",
                 "preinit_arraysz", "versym", "verdef", "verdefnum", "verneed",
                 "verneednum", "flags", "flags_1", "symbolic", "textrel", "bind_now",
                 "debug_slot", "strings")

    def __init__(self, **fields: object) -> None:
        self.entries: list[tuple[int, int]] = []
        self.needed: list[str] = []
        self.soname: str | None = None
        self.rpath: str | None = None
        self.runpath: str | None = None
        self.strtab: int = 0
        self.strsz: int = 0
        self.symtab: int = 0
        self.syment: int = 0
        self.hash: int = 0
        self.gnu_hash: int = 0
        self.rela: int = 0
        self.relasz: int = 0
        self.relaent: int = 0
        self.rel: int = 0
        self.relsz: int = 0
        self.relent: int = 0
        self.relr: int = 0
        self.relrsz: int = 0
        self.relrent: int = 0
        self.jmprel: int = 0
        self.pltrelsz: int = 0
        self.pltrel: int = 0
        self.relcount: int = 0
        self.pltgot: int = 0
        self.init: int = 0
        self.fini: int = 0
        self.init_array: int = 0
        self.init_arraysz: int = 0
        self.fini_array: int = 0
        self.fini_arraysz: int = 0
        self.preinit_array: int = 0
        self.preinit_arraysz: int = 0
        self.versym: int = 0
        self.verdef: int = 0
        self.verdefnum: int = 0
        self.verneed: int = 0
        self.verneednum: int = 0
        self.flags: int = 0
        self.flags_1: int = 0
        self.symbolic: bool = False
        self.textrel: bool = False
        self.bind_now: bool = False
        self.debug_slot: int | None = None  # vaddr of the DT_DEBUG value word, if any
        self.strings: memoryview | None = None
        for name, value in fields.items():
            if name not in DynamicInfo.__slots__:
                raise TypeError(f"DynamicInfo has no field {name!r}")
            setattr(self, name, value)

    @property
    def static_tls(self) -> bool:
        return bool(self.flags & DF_STATIC_TLS)

    @property
    def nodelete(self) -> bool:
        return bool(self.flags_1 & DF_1_NODELETE)


_TAG_FIELDS = {
    DT_STRTAB: "strtab", DT_STRSZ: "strsz", DT_SYMTAB: "symtab", DT_SYMENT: "syment",
    DT_HASH: "hash", DT_GNU_HASH: "gnu_hash", DT_RELA: "rela", DT_RELASZ: "relasz",
    DT_RELAENT: "relaent", DT_REL: "rel", DT_RELSZ: "relsz", DT_RELENT: "relent",
    DT_RELR: "relr", DT_RELRSZ: "relrsz", DT_RELRENT: "relrent", DT_JMPREL: "jmprel",
    DT_PLTRELSZ: "pltrelsz", DT_PLTREL: "pltrel", DT_RELACOUNT: "relcount",
    DT_PLTGOT: "pltgot", DT_INIT: "init", DT_FINI: "fini", DT_INIT_ARRAY: "init_array",
    DT_INIT_ARRAYSZ: "init_arraysz", DT_FINI_ARRAY: "fini_array",
    DT_FINI_ARRAYSZ: "fini_arraysz", DT_PREINIT_ARRAY: "preinit_array",
    DT_PREINIT_ARRAYSZ: "preinit_arraysz", DT_FLAGS: "flags", DT_FLAGS_1: "flags_1",
    DT_VERSYM: "versym", DT_VERDEF: "verdef", DT_VERDEFNUM: "verdefnum",
    DT_VERNEED: "verneed", DT_VERNEEDNUM: "verneednum",
}


def read_cstr(table: memoryview, offset: int, label: str, what: str) -> str:
    """Read a NUL-terminated string at `offset` of a string table view."""
    if offset < 0 or offset >= len(table):
        raise ElfParseError(f"string offset {offset:#x} is past the string table "
                            f"({len(table)} bytes)", file=label, what=what)
    raw = table[offset:].tobytes() if len(table) - offset < 4096 else \
        table[offset:offset + 4096].tobytes()
    end = raw.find(b"\0")
    if end < 0:
        if len(raw) == 4096:
            raise ElfParseError("string longer than 4096 bytes", file=label, what=what)
        raise ElfParseError("string table is not NUL-terminated", file=label, what=what)
    return raw[:end].decode("utf-8", "surrogateescape")


def parse_dynamic(view: AddressView, vaddr: int, size: int, elf_class: int) -> DynamicInfo:
    """Decode the dynamic section at link-time address `vaddr` (`size` bytes max).

    Raises:
        ElfParseError: the section lies outside the segments, has no DT_NULL, a string
            tag without DT_STRTAB/DT_STRSZ, or a string offset past the table.
    """
    layout = _DYN[elf_class]
    label = view.label
    count = size // layout.size
    if count == 0:
        raise ElfParseError("PT_DYNAMIC is empty", file=label, what="dynamic section")
    raw = view.get(vaddr, count * layout.size, "dynamic section")
    info = DynamicInfo()
    rows = list(layout.iter_unpack(raw))
    try:
        n = [tag for tag, _ in rows].index(DT_NULL)
    except ValueError:
        raise ElfParseError("dynamic section has no DT_NULL terminator", file=label,
                            what="dynamic section", offset=vaddr) from None
    entries = info.entries = rows[:n]
    tags = dict(entries)  # last occurrence wins, as in ld.so's l_info
    for tag, attr in _TAG_FIELDS.items():
        value = tags.get(tag)
        if value is not None:
            setattr(info, attr, value)
    if DT_RELCOUNT in tags and DT_RELACOUNT not in tags:
        info.relcount = tags[DT_RELCOUNT]
    needed_offs = [v for t, v in entries if t == DT_NEEDED] if DT_NEEDED in tags else []
    soname, rpath, runpath = tags.get(DT_SONAME), tags.get(DT_RPATH), tags.get(DT_RUNPATH)
    info.symbolic = DT_SYMBOLIC in tags
    info.textrel = DT_TEXTREL in tags
    info.bind_now = DT_BIND_NOW in tags
    if DT_DEBUG in tags:
        i = [t for t, _ in entries].index(DT_DEBUG)
        info.debug_slot = vaddr + i * layout.size + layout.size // 2
    if info.flags & DF_SYMBOLIC:
        info.symbolic = True
    if info.flags & DF_TEXTREL:
        info.textrel = True
    if info.flags & DF_BIND_NOW or info.flags_1 & DF_1_NOW:
        info.bind_now = True
    if needed_offs or soname is not None or rpath is not None or runpath is not None:
        if not info.strtab or not info.strsz:
            raise ElfParseError("string tags present but DT_STRTAB/DT_STRSZ missing",
                                file=label, what="dynamic section")
    if info.strtab and info.strsz:
        strings = view.get(info.strtab, info.strsz, "dynamic string table")
        info.strings = strings
        what = "dynamic string table"
        info.needed = [read_cstr(strings, off, label, what) for off in needed_offs]
        if soname is not None:
            info.soname = read_cstr(strings, soname, label, what)
        if rpath is not None:
            info.rpath = read_cstr(strings, rpath, label, what)
        if runpath is not None:
            info.runpath = read_cstr(strings, runpath, label, what)
    return info
