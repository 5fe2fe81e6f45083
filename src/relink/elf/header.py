"""ELF header, program headers and section headers, for ELF32 and ELF64 little-endian.

The elf layer of the pipeline: everything here is decoded once from the input's bytes
with precompiled `struct.Struct`s and checked against the file size before use. Nothing
here maps memory or runs code, so it is safe on untrusted files.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from relink._record import FrozenRecord
from relink.elf.source import ElfSource
from relink.errors import ElfParseError

__all__ = [
    "ELF_MAGIC",
    "ElfHeader",
    "ProgramHeader",
    "SectionHeader",
    "parse_header",
    "parse_program_headers",
    "parse_section_headers",
    "section_names",
]

ELF_MAGIC = b"\x7fELF"

# e_ident indices and values (see elf/constants.py for the full named tables).
_EI_CLASS, _EI_DATA, _EI_VERSION = 4, 5, 6
_CLASS32, _CLASS64 = 1, 2
_DATA_LSB, _DATA_MSB = 1, 2

_EHDR = {32: struct.Struct("<16sHHIIIIIHHHHHH"), 64: struct.Struct("<16sHHIQQQIHHHHHH")}
# Program header field order differs between classes (p_flags moves).
_PHDR = {32: struct.Struct("<IIIIIIII"), 64: struct.Struct("<IIQQQQQQ")}
_SHDR = {32: struct.Struct("<IIIIIIIIII"), 64: struct.Struct("<IIQQQQIIQQ")}

_MACHINES = {3: "x86", 62: "x86_64", 183: "aarch64", 40: "arm", 243: "riscv",
             258: "loongarch64", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390",
             2: "sparc", 43: "sparcv9", 50: "ia64", 42: "sh", 94: "xtensa", 247: "bpf"}
_TYPES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}


class ElfHeader(FrozenRecord):
    """The decoded ELF header (`elf_class` is 32 or 64)."""

    __slots__ = ("elf_class", "e_type", "e_machine", "e_version", "e_entry", "e_phoff",
                 "e_shoff", "e_flags", "e_ehsize", "e_phentsize", "e_phnum", "e_shentsize",
                 "e_shnum", "e_shstrndx", "osabi")
    elf_class: int
    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int
    e_shstrndx: int
    osabi: int

    def __init__(self, elf_class: int, e_type: int, e_machine: int, e_version: int,
                 e_entry: int, e_phoff: int, e_shoff: int, e_flags: int, e_ehsize: int,
                 e_phentsize: int, e_phnum: int, e_shentsize: int, e_shnum: int,
                 e_shstrndx: int, osabi: int) -> None:
        self._set(elf_class, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff,
                  e_flags, e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx,
                  osabi)

    @property
    def machine_name(self) -> str:
        """Short machine name (``x86_64``, ``aarch64``, ``riscv``…) or ``EM_<n>``."""
        return _MACHINES.get(self.e_machine, f"EM_{self.e_machine}")

    @property
    def type_name(self) -> str:
        return _TYPES.get(self.e_type, f"ET_{self.e_type:#x}")

    @property
    def word_size(self) -> int:
        return self.elf_class // 8


class ProgramHeader(FrozenRecord):
    """One program header (same field names for both classes)."""

    __slots__ = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz",
                 "p_memsz", "p_align")
    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int

    def __init__(self, p_type: int, p_flags: int, p_offset: int, p_vaddr: int, p_paddr: int,
                 p_filesz: int, p_memsz: int, p_align: int) -> None:
        self._set(p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align)


class SectionHeader(FrozenRecord):
    """One section header; `name` is filled in from the section name table."""

    __slots__ = ("index", "sh_name", "sh_type", "sh_flags", "sh_addr", "sh_offset", "sh_size",
                 "sh_link", "sh_info", "sh_addralign", "sh_entsize", "name")
    index: int
    sh_name: int
    sh_type: int
    sh_flags: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_info: int
    sh_addralign: int
    sh_entsize: int
    name: str

    def __init__(self, index: int, sh_name: int, sh_type: int, sh_flags: int, sh_addr: int,
                 sh_offset: int, sh_size: int, sh_link: int, sh_info: int,
                 sh_addralign: int, sh_entsize: int, name: str = "") -> None:
        self._set(index, sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link,
                  sh_info, sh_addralign, sh_entsize, name)


def parse_header(src: ElfSource) -> ElfHeader:
    """Decode and validate the ELF header of `src`.

    Raises:
        ElfParseError: bad magic, class, data encoding, version or header sizes, or a
            big-endian file (relink reads little-endian ELF only).
    """
    if src.size < 16:
        raise ElfParseError(f"file is too small to be ELF ({src.size} bytes)",
                            file=src.label, what="ELF header")
    ident = src.read(0, 16)
    if ident[:4] != ELF_MAGIC:
        raise ElfParseError("bad magic: not an ELF file", file=src.label, what="ELF header")
    cls = ident[_EI_CLASS]
    if cls not in (_CLASS32, _CLASS64):
        raise ElfParseError(f"invalid ELF class {cls}", file=src.label, what="ELF header")
    data = ident[_EI_DATA]
    if data == _DATA_MSB:
        raise ElfParseError("big-endian ELF is not supported (relink reads little-endian "
                            "ELF only)", file=src.label, what="ELF header")
    if data != _DATA_LSB:
        raise ElfParseError(f"invalid data encoding {data}", file=src.label,
                            what="ELF header")
    if ident[_EI_VERSION] != 1:
        raise ElfParseError(f"invalid EI_VERSION {ident[_EI_VERSION]}", file=src.label,
                            what="ELF header")
    bits = 64 if cls == _CLASS64 else 32
    layout = _EHDR[bits]
    if src.size < layout.size:
        raise ElfParseError(f"truncated ELF header ({src.size} < {layout.size} bytes)",
                            file=src.label, what="ELF header")
    (_, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize,
     e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx) = layout.unpack(
        src.read(0, layout.size))
    if e_version != 1:
        raise ElfParseError(f"invalid e_version {e_version}", file=src.label,
                            what="ELF header")
    if e_ehsize < layout.size:
        raise ElfParseError(f"e_ehsize {e_ehsize} is smaller than an ELF{bits} header",
                            file=src.label, what="ELF header")
    return ElfHeader(bits, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags,
                     e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx,
                     ident[7])


def parse_program_headers(src: ElfSource, eh: ElfHeader) -> list[ProgramHeader]:
    """Decode the program header table, checked against the file size."""
    if eh.e_phnum == 0:
        return []
    layout = _PHDR[eh.elf_class]
    if eh.e_phentsize != layout.size:
        raise ElfParseError(f"e_phentsize is {eh.e_phentsize}, expected {layout.size}",
                            file=src.label, what="program headers")
    size = eh.e_phnum * layout.size
    if eh.e_phoff + size > src.size:
        raise ElfParseError(f"program header table ({eh.e_phnum} entries at "
                            f"{eh.e_phoff:#x}) runs past the end of the file",
                            file=src.label, what="program headers", offset=eh.e_phoff)
    raw = src.read(eh.e_phoff, size)
    out = []
    for fields in layout.iter_unpack(raw):
        if eh.elf_class == 64:
            p_type, p_flags, off, vaddr, paddr, filesz, memsz, align = fields
        else:
            p_type, off, vaddr, paddr, filesz, memsz, p_flags, align = fields
        out.append(ProgramHeader(p_type, p_flags, off, vaddr, paddr, filesz, memsz, align))
    return out


def parse_section_headers(src: ElfSource, eh: ElfHeader) -> list[SectionHeader]:
    """Decode the section header table and section names.

    Returns an empty list when the file has no section header table. Raises
    `ElfParseError` when the table is present but does not fit the file.
    """
    if eh.e_shoff == 0 or eh.e_shnum == 0:
        return []
    layout = _SHDR[eh.elf_class]
    if eh.e_shentsize != layout.size:
        raise ElfParseError(f"e_shentsize is {eh.e_shentsize}, expected {layout.size}",
                            file=src.label, what="section headers")
    count = eh.e_shnum
    size = count * layout.size
    if eh.e_shoff + size > src.size:
        raise ElfParseError(f"section header table ({count} entries at {eh.e_shoff:#x}) "
                            "runs past the end of the file", file=src.label,
                            what="section headers", offset=eh.e_shoff)
    raw = src.read(eh.e_shoff, size)
    rows = list(layout.iter_unpack(raw))
    shdrs = [SectionHeader(i, *row) for i, row in enumerate(rows)]
    if 0 < eh.e_shstrndx < count:
        names = section_names(src, shdrs[eh.e_shstrndx])
        shdrs = [
            SectionHeader(s.index, s.sh_name, s.sh_type, s.sh_flags, s.sh_addr,
                          s.sh_offset, s.sh_size, s.sh_link, s.sh_info, s.sh_addralign,
                          s.sh_entsize, names(s.sh_name, src.label))
            for s in shdrs
        ]
    return shdrs


def section_names(src: ElfSource, strtab: SectionHeader) -> Callable[[int, str], str]:
    """Return a function mapping an sh_name offset to the section name (bounds-checked)."""
    SHT_NOBITS = 8
    if strtab.sh_type == SHT_NOBITS or strtab.sh_offset + strtab.sh_size > src.size:
        raise ElfParseError("section name table lies outside the file", file=src.label,
                            what="section headers", offset=strtab.sh_offset)
    table = src.read(strtab.sh_offset, strtab.sh_size)

    def name(offset: int, label: str) -> str:
        if offset >= len(table):
            if offset == 0 and not table:
                return ""
            raise ElfParseError(f"sh_name {offset:#x} is past the section name table "
                                f"({len(table)} bytes)", file=label, what="section headers")
        end = table.find(b"\0", offset)
        if end < 0:
            raise ElfParseError("section name table is not NUL-terminated", file=label,
                                what="section headers")
        return table[offset:end].decode("utf-8", "replace")

    return name
