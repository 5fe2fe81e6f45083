"""ELF constants, struct layouts, hash functions and RELR encoding for the test ELF writer.

Test-only support code (``tests/support``). :mod:`tests.support.elfgen` builds images with
these definitions and :mod:`tests.support.elfgen_malform` re-reads and patches them. The
values are written by hand from the gABI, the GNU extensions and the x86_64 / i386 psABIs;
they are independent of the ``relink`` package on purpose so that the writer is an
independent oracle. Little-endian only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import Any

# --- e_ident / ELF header -------------------------------------------------------------------
ELFMAG = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ELFOSABI_SYSV = 0
ELFOSABI_GNU = 3
ET_NONE, ET_REL, ET_EXEC, ET_DYN, ET_CORE = 0, 1, 2, 3, 4
EM_386 = 3
EM_X86_64 = 62

# --- program headers ------------------------------------------------------------------------
PT_NULL, PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE, PT_SHLIB, PT_PHDR, PT_TLS = range(8)
PT_GNU_EH_FRAME = 0x6474E550
PT_GNU_STACK = 0x6474E551
PT_GNU_RELRO = 0x6474E552
PF_X, PF_W, PF_R = 1, 2, 4

# --- section headers ------------------------------------------------------------------------
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_HASH, SHT_DYNAMIC = range(7)
SHT_NOTE, SHT_NOBITS, SHT_REL, SHT_SHLIB, SHT_DYNSYM = 7, 8, 9, 10, 11
SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY = 14, 15, 16
SHT_RELR = 19
SHT_GNU_HASH = 0x6FFFFFF6
SHT_GNU_VERDEF = 0x6FFFFFFD
SHT_GNU_VERNEED = 0x6FFFFFFE
SHT_GNU_VERSYM = 0x6FFFFFFF
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHF_INFO_LINK = 0x40
SHF_TLS = 0x400
SHN_UNDEF = 0
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2
SHN_XINDEX = 0xFFFF

# --- dynamic tags ---------------------------------------------------------------------------
DT_NULL, DT_NEEDED, DT_PLTRELSZ, DT_PLTGOT, DT_HASH, DT_STRTAB, DT_SYMTAB = range(7)
DT_RELA, DT_RELASZ, DT_RELAENT, DT_STRSZ, DT_SYMENT, DT_INIT, DT_FINI = range(7, 14)
DT_SONAME, DT_RPATH, DT_SYMBOLIC, DT_REL, DT_RELSZ, DT_RELENT, DT_PLTREL = range(14, 21)
DT_DEBUG, DT_TEXTREL, DT_JMPREL, DT_BIND_NOW = range(21, 25)
DT_INIT_ARRAY, DT_FINI_ARRAY, DT_INIT_ARRAYSZ, DT_FINI_ARRAYSZ = range(25, 29)
DT_RUNPATH, DT_FLAGS = 29, 30
DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ = 32, 33
DT_RELRSZ, DT_RELR, DT_RELRENT = 35, 36, 37
DT_GNU_HASH = 0x6FFFFEF5
DT_VERSYM = 0x6FFFFFF0
DT_RELACOUNT = 0x6FFFFFF9
DT_RELCOUNT = 0x6FFFFFFA
DT_FLAGS_1 = 0x6FFFFFFB
DT_VERDEF = 0x6FFFFFFC
DT_VERDEFNUM = 0x6FFFFFFD
DT_VERNEED = 0x6FFFFFFE
DT_VERNEEDNUM = 0x6FFFFFFF
DF_ORIGIN, DF_SYMBOLIC, DF_TEXTREL, DF_BIND_NOW, DF_STATIC_TLS = 0x1, 0x2, 0x4, 0x8, 0x10
DF_1_NOW, DF_1_GLOBAL, DF_1_GROUP, DF_1_NODELETE = 0x1, 0x2, 0x4, 0x8
DF_1_INITFIRST, DF_1_NOOPEN, DF_1_ORIGIN = 0x20, 0x40, 0x80
DF_1_PIE = 0x08000000

# --- symbols --------------------------------------------------------------------------------
STB_LOCAL, STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE = 0, 1, 2, 10
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE, STT_COMMON, STT_TLS = range(7)
STT_GNU_IFUNC = 10
STV_DEFAULT, STV_INTERNAL, STV_HIDDEN, STV_PROTECTED = range(4)
BINDS = {"local": STB_LOCAL, "global": STB_GLOBAL, "weak": STB_WEAK, "unique": STB_GNU_UNIQUE}
TYPES = {
    "notype": STT_NOTYPE,
    "object": STT_OBJECT,
    "func": STT_FUNC,
    "section": STT_SECTION,
    "file": STT_FILE,
    "common": STT_COMMON,
    "tls": STT_TLS,
    "ifunc": STT_GNU_IFUNC,
}
VISIBILITIES = {
    "default": STV_DEFAULT,
    "internal": STV_INTERNAL,
    "hidden": STV_HIDDEN,
    "protected": STV_PROTECTED,
}

# --- symbol versioning ----------------------------------------------------------------------
VER_NDX_LOCAL = 0
VER_NDX_GLOBAL = 1
VER_FLG_BASE = 0x1
VER_FLG_WEAK = 0x2
VERSYM_HIDDEN = 0x8000


# x86_64 relocation numbers (System V x86_64 psABI, table 4.9).
R_X86_64 = IntEnum(
    "R_X86_64",
    {
        "NONE": 0,
        "R64": 1,
        "PC32": 2,
        "GOT32": 3,
        "PLT32": 4,
        "COPY": 5,
        "GLOB_DAT": 6,
        "JUMP_SLOT": 7,
        "RELATIVE": 8,
        "GOTPCREL": 9,
        "R32": 10,
        "R32S": 11,
        "R16": 12,
        "PC16": 13,
        "R8": 14,
        "PC8": 15,
        "DTPMOD64": 16,
        "DTPOFF64": 17,
        "TPOFF64": 18,
        "TLSGD": 19,
        "TLSLD": 20,
        "DTPOFF32": 21,
        "GOTTPOFF": 22,
        "TPOFF32": 23,
        "PC64": 24,
        "GOTOFF64": 25,
        "GOTPC32": 26,
        "SIZE32": 32,
        "SIZE64": 33,
        "GOTPC32_TLSDESC": 34,
        "TLSDESC_CALL": 35,
        "TLSDESC": 36,
        "IRELATIVE": 37,
        "RELATIVE64": 38,
    },
)


# i386 relocation numbers (System V i386 psABI).
R_386 = IntEnum(
    "R_386",
    {
        "NONE": 0,
        "R32": 1,
        "PC32": 2,
        "GOT32": 3,
        "PLT32": 4,
        "COPY": 5,
        "GLOB_DAT": 6,
        "JMP_SLOT": 7,
        "RELATIVE": 8,
        "GOTOFF": 9,
        "GOTPC": 10,
        "TLS_TPOFF": 14,
        "TLS_DTPMOD32": 35,
        "TLS_DTPOFF32": 36,
        "TLS_TPOFF32": 37,
        "TLS_DESC": 41,
        "IRELATIVE": 42,
    },
)


# Architecture-neutral relocation names accepted as ``r_type`` strings.
GENERIC_RELOCS: dict[int, dict[str, int]] = {
    EM_X86_64: {
        "ABS": R_X86_64.R64,
        "64": R_X86_64.R64,
        "32": R_X86_64.R32,
        "JMP_SLOT": R_X86_64.JUMP_SLOT,
        "DTPMOD": R_X86_64.DTPMOD64,
        "DTPOFF": R_X86_64.DTPOFF64,
        "TPOFF": R_X86_64.TPOFF64,
    },
    EM_386: {
        "ABS": R_386.R32,
        "32": R_386.R32,
        "JUMP_SLOT": R_386.JMP_SLOT,
        "DTPMOD": R_386.TLS_DTPMOD32,
        "DTPOFF": R_386.TLS_DTPOFF32,
        "TPOFF": R_386.TLS_TPOFF,
        "TLSDESC": R_386.TLS_DESC,
    },
}
ARCH_RELOCS: dict[int, Any] = {EM_X86_64: R_X86_64, EM_386: R_386}


class StructSpec:
    """One little-endian on-disk record (for example ``Elf64_Sym``) described field by field."""

    def __init__(self, name: str, fields: Sequence[tuple[str, str]]) -> None:
        """Create the spec.

        Args:
            name: C name of the record, for messages.
            fields: ``(field_name, struct_code)`` pairs in file order.
        """
        self.name = name
        self.fields = tuple(fields)
        self.struct = struct.Struct("<" + "".join(code for _, code in self.fields))
        self.size = self.struct.size
        self._offsets: dict[str, tuple[int, str]] = {}
        pos = 0
        for field, code in self.fields:
            self._offsets[field] = (pos, code)
            pos += struct.calcsize("<" + code)

    def pack(self, **values: int | bytes) -> bytes:
        """Pack a record; missing fields are zero.

        Raises:
            KeyError: for a field name the record does not have.
        """
        unknown = set(values) - set(self._offsets)
        if unknown:
            raise KeyError(f"{self.name} has no field(s) {sorted(unknown)}")
        args = [values.get(f, b"" if code.endswith("s") else 0) for f, code in self.fields]
        return self.struct.pack(*args)

    def unpack(self, data: bytes | bytearray | memoryview, offset: int = 0) -> dict[str, int]:
        """Unpack one record at ``offset`` into a field dict."""
        return dict(zip((f for f, _ in self.fields), self.struct.unpack_from(data, offset)))

    def field(self, name: str) -> tuple[int, str]:
        """Return ``(offset_in_record, struct_code)`` of one field.

        Raises:
            KeyError: for a field name the record does not have.
        """
        if name not in self._offsets:
            raise KeyError(f"{self.name} has no field {name!r}")
        return self._offsets[name]

    def patch(self, buf: bytearray, offset: int, **values: int | bytes) -> None:
        """Overwrite selected fields of the record at ``offset`` in place."""
        for field, value in values.items():
            pos, code = self.field(field)
            if code.endswith("s"):
                assert isinstance(value, bytes | bytearray)
                width = struct.calcsize(code)
                buf[offset + pos : offset + pos + width] = bytes(value).ljust(width, b"\0")[:width]
            else:
                assert isinstance(value, int)
                fmt = "<" + code.upper()  # write two's complement for signed fields
                width = struct.calcsize(fmt)
                struct.pack_into(fmt, buf, offset + pos, value & ((1 << (8 * width)) - 1))


_SPECS: dict[tuple[str, int], StructSpec] = {}


def _define(kind: str, cls: int, fields: Sequence[tuple[str, str]]) -> None:
    _SPECS[(kind, cls)] = StructSpec(f"Elf{cls}_{kind}", fields)


_define(
    "Ehdr",
    64,
    [
        ("e_ident", "16s"),
        ("e_type", "H"),
        ("e_machine", "H"),
        ("e_version", "I"),
        ("e_entry", "Q"),
        ("e_phoff", "Q"),
        ("e_shoff", "Q"),
        ("e_flags", "I"),
        ("e_ehsize", "H"),
        ("e_phentsize", "H"),
        ("e_phnum", "H"),
        ("e_shentsize", "H"),
        ("e_shnum", "H"),
        ("e_shstrndx", "H"),
    ],
)
_define(
    "Ehdr",
    32,
    [
        ("e_ident", "16s"),
        ("e_type", "H"),
        ("e_machine", "H"),
        ("e_version", "I"),
        ("e_entry", "I"),
        ("e_phoff", "I"),
        ("e_shoff", "I"),
        ("e_flags", "I"),
        ("e_ehsize", "H"),
        ("e_phentsize", "H"),
        ("e_phnum", "H"),
        ("e_shentsize", "H"),
        ("e_shnum", "H"),
        ("e_shstrndx", "H"),
    ],
)
_define(
    "Phdr",
    64,
    [
        ("p_type", "I"),
        ("p_flags", "I"),
        ("p_offset", "Q"),
        ("p_vaddr", "Q"),
        ("p_paddr", "Q"),
        ("p_filesz", "Q"),
        ("p_memsz", "Q"),
        ("p_align", "Q"),
    ],
)
_define(
    "Phdr",
    32,
    [
        ("p_type", "I"),
        ("p_offset", "I"),
        ("p_vaddr", "I"),
        ("p_paddr", "I"),
        ("p_filesz", "I"),
        ("p_memsz", "I"),
        ("p_flags", "I"),
        ("p_align", "I"),
    ],
)
_define(
    "Shdr",
    64,
    [
        ("sh_name", "I"),
        ("sh_type", "I"),
        ("sh_flags", "Q"),
        ("sh_addr", "Q"),
        ("sh_offset", "Q"),
        ("sh_size", "Q"),
        ("sh_link", "I"),
        ("sh_info", "I"),
        ("sh_addralign", "Q"),
        ("sh_entsize", "Q"),
    ],
)
_define(
    "Shdr",
    32,
    [
        ("sh_name", "I"),
        ("sh_type", "I"),
        ("sh_flags", "I"),
        ("sh_addr", "I"),
        ("sh_offset", "I"),
        ("sh_size", "I"),
        ("sh_link", "I"),
        ("sh_info", "I"),
        ("sh_addralign", "I"),
        ("sh_entsize", "I"),
    ],
)
_define(
    "Sym",
    64,
    [
        ("st_name", "I"),
        ("st_info", "B"),
        ("st_other", "B"),
        ("st_shndx", "H"),
        ("st_value", "Q"),
        ("st_size", "Q"),
    ],
)
_define(
    "Sym",
    32,
    [
        ("st_name", "I"),
        ("st_value", "I"),
        ("st_size", "I"),
        ("st_info", "B"),
        ("st_other", "B"),
        ("st_shndx", "H"),
    ],
)
_define("Dyn", 64, [("d_tag", "q"), ("d_val", "Q")])
_define("Dyn", 32, [("d_tag", "i"), ("d_val", "I")])
_define("Rela", 64, [("r_offset", "Q"), ("r_info", "Q"), ("r_addend", "q")])
_define("Rela", 32, [("r_offset", "I"), ("r_info", "I"), ("r_addend", "i")])
_define("Rel", 64, [("r_offset", "Q"), ("r_info", "Q")])
_define("Rel", 32, [("r_offset", "I"), ("r_info", "I")])
for _cls in (32, 64):
    _define(
        "Verdef",
        _cls,
        [
            ("vd_version", "H"),
            ("vd_flags", "H"),
            ("vd_ndx", "H"),
            ("vd_cnt", "H"),
            ("vd_hash", "I"),
            ("vd_aux", "I"),
            ("vd_next", "I"),
        ],
    )
    _define("Verdaux", _cls, [("vda_name", "I"), ("vda_next", "I")])
    _define(
        "Verneed",
        _cls,
        [("vn_version", "H"), ("vn_cnt", "H"), ("vn_file", "I"), ("vn_aux", "I"), ("vn_next", "I")],
    )
    _define(
        "Vernaux",
        _cls,
        [
            ("vna_hash", "I"),
            ("vna_flags", "H"),
            ("vna_other", "H"),
            ("vna_name", "I"),
            ("vna_next", "I"),
        ],
    )


def spec(kind: str, elf_class: int) -> StructSpec:
    """Return the record spec for ``kind`` (Ehdr, Phdr, Shdr, Sym, Dyn, Rel, Rela, Verdef,
    Verdaux, Verneed, Vernaux) in ELF class 32 or 64."""
    return _SPECS[(kind, elf_class)]


def r_info(elf_class: int, sym: int, r_type: int) -> int:
    """Compose ``r_info`` (``sym << 32 | type`` for ELF64, ``sym << 8 | type`` for ELF32)."""
    if elf_class == 64:
        return (sym << 32) | (r_type & 0xFFFFFFFF)
    return (sym << 8) | (r_type & 0xFF)


def sysv_hash(name: bytes | str) -> int:
    """The SysV ``elf_hash`` of a symbol name (DT_HASH, vd_hash, vna_hash)."""
    if isinstance(name, str):
        name = name.encode()
    h = 0
    for c in name:
        h = (h << 4) + c
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def gnu_hash(name: bytes | str) -> int:
    """The GNU (DJB, ``h * 33 + c`` from 5381, 32-bit) hash used by DT_GNU_HASH."""
    if isinstance(name, str):
        name = name.encode()
    h = 5381
    for c in name:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


def encode_relr(addrs: Iterable[int], word: int) -> list[int]:
    """Encode word-aligned addresses into DT_RELR words (address entries and bitmaps).

    Args:
        addrs: relocation addresses (duplicates are dropped).
        word: word size in bytes (8 for ELF64, 4 for ELF32).

    Raises:
        ValueError: for an address that is not word aligned.
    """
    todo = sorted(set(addrs))
    if any(a % word for a in todo):
        raise ValueError("RELR addresses must be word aligned")
    nbits = 8 * word - 1  # addresses one bitmap word covers
    out: list[int] = []
    i = 0
    while i < len(todo):
        out.append(todo[i])
        base = todo[i] + word
        i += 1
        while True:
            bitmap = 0
            while i < len(todo) and todo[i] - base < nbits * word:
                bitmap |= 1 << ((todo[i] - base) // word)
                i += 1
            if not bitmap:
                break
            out.append((bitmap << 1) | 1)
            base += nbits * word
    return out


def decode_relr(words: Iterable[int], word: int) -> list[int]:
    """Decode DT_RELR words back into the list of addresses they relocate."""
    out: list[int] = []
    base = 0
    nbits = 8 * word - 1
    for entry in words:
        if entry & 1 == 0:
            out.append(entry)
            base = entry + word
        else:
            bits = entry >> 1
            j = 0
            while bits:
                if bits & 1:
                    out.append(base + j * word)
                bits >>= 1
                j += 1
            base += nbits * word
    return out
