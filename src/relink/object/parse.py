"""Parse and validate one relocatable object (ET_REL): sections, symbols, relocations.

Elf layer for `relink.object` (input -> **parse** -> resolve -> layout -> relocate ->
module). An `ObjectFile` decodes the section header table, the full ``.symtab`` (not a
dynamic table: objects have none), every REL/RELA section and every ``SHT_GROUP``
once, into plain ints and lists, and checks what Relink's ET_REL loader checks (see
relink-study §2.3 step 1): section 0 is ``SHT_NULL``, the name table exists and is
NUL-terminated, every non-NOBITS section lies inside the file, relocation sections have
the arch's entry size and point at real sections, a symbol table exists and every symbol's
name and section index is in range. Malformed input raises `ElfParseError`, never an
IndexError or struct.error. Nothing is mapped here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from relink.arch import ArchSpec, spec_for
from relink.elf.header import ElfHeader, SectionHeader, parse_header, parse_section_headers
from relink.elf.source import ElfSource
from relink.errors import ElfParseError, UnsupportedError

__all__ = [
    "ObjectFile", "RelocSection", "SHF_ALLOC", "SHF_EXECINSTR", "SHF_GROUP", "SHF_MERGE",
    "SHF_STRINGS", "SHF_TLS", "SHF_WRITE", "SHN_ABS", "SHN_COMMON", "SHN_UNDEF",
    "SHT_NOBITS", "SHT_PROGBITS", "parse_object",
]

SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_NOBITS, SHT_REL, SHT_GROUP, SHT_SYMTAB_SHNDX = 8, 9, 17, 18
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_MERGE, SHF_STRINGS = 0x1, 0x2, 0x4, 0x10, 0x20
SHF_GROUP, SHF_TLS, SHF_COMPRESSED, SHF_EXCLUDE = 0x200, 0x400, 0x800, 0x80000000
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON, SHN_XINDEX = 0, 0xFF00, 0xFFF1, 0xFFF2, 0xFFFF
SHN_X86_64_LCOMMON = 0xFF02
GRP_COMDAT = 1
ET_REL = 1
_SYM = {64: struct.Struct("<IBBHQQ"), 32: struct.Struct("<IIIBBH")}
_RELA = {64: struct.Struct("<QQq"), 32: struct.Struct("<IIi")}
_REL = {64: struct.Struct("<QQ"), 32: struct.Struct("<II")}
_MAX_ENTRIES = 1 << 24


@dataclass(slots=True)
class RelocSection:
    """One REL/RELA section, decoded into parallel columns.

    Attributes:
        index: the relocation section's own index; target: the section it patches.
        rela: explicit addends (RELA) or implicit ones read from the place (REL).
    """

    index: int
    name: str
    target: int
    rela: bool
    offsets: list[int]
    types: list[int]
    syms: list[int]
    addends: list[int]


@dataclass(slots=True)
class Group:
    """An ``SHT_GROUP`` section: its signature and members (COMDAT: one copy wins)."""

    index: int
    signature: str
    comdat: bool
    members: list[int]


@dataclass(eq=False)
class ObjectFile:
    """One parsed ET_REL file.

    Attributes:
        source: the input (kept open while the object is being linked).
        label: the name used in messages (``archive.a(member.o)`` for archive members).
        sections: every section header, names filled in.
        sym_*: parallel symbol columns of ``.symtab`` (index 0 is the null symbol).
        relocs: REL/RELA sections by target section index (several may target one).
        groups: section groups in file order.
    """

    source: ElfSource
    label: str
    header: ElfHeader
    spec: ArchSpec
    sections: list[SectionHeader]
    sym_names: list[str] = field(default_factory=list)
    sym_values: list[int] = field(default_factory=list)
    sym_sizes: list[int] = field(default_factory=list)
    sym_infos: list[int] = field(default_factory=list)
    sym_others: list[int] = field(default_factory=list)
    sym_shndx: list[int] = field(default_factory=list)
    first_global: int = 0
    relocs: dict[int, list[RelocSection]] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)

    def data(self, index: int) -> bytes:
        """The file bytes of section `index` (zeros for NOBITS)."""
        sh = self.sections[index]
        if sh.sh_type == SHT_NOBITS:
            return bytes(sh.sh_size)
        return self.source.read(sh.sh_offset, sh.sh_size)

    def defined_globals(self) -> list[str]:
        """Names of the global/weak symbols this object defines (COMMON included)."""
        return [self.sym_names[i] for i in range(self.first_global, len(self.sym_names))
                if self.sym_shndx[i] != SHN_UNDEF and self.sym_infos[i] >> 4 != 0
                and self.sym_names[i]]

    def modinfo(self) -> list[tuple[str, str]]:
        """``key=value`` pairs of a kernel module's ``.modinfo`` section (empty if none)."""
        sec = next((s for s in self.sections if s.name == ".modinfo"), None)
        if sec is None:
            return []
        out = []
        for item in self.data(sec.index).split(b"\0"):
            if b"=" in item:
                k, v = item.split(b"=", 1)
                out.append((k.decode("utf-8", "replace"), v.decode("utf-8", "replace")))
        return out


def _strtab(src: ElfSource, sections: list[SectionHeader], index: int, what: str,
            label: str) -> bytes:
    if not 0 < index < len(sections) or sections[index].sh_type != SHT_STRTAB:
        raise ElfParseError(f"{what} links to section {index}, which is not a string table",
                            file=label, what="section headers")
    sh = sections[index]
    return src.read(sh.sh_offset, sh.sh_size)


def _cstr(table: bytes, off: int, label: str, what: str) -> str:
    if off >= len(table):
        if off == 0:
            return ""
        raise ElfParseError(f"name offset {off:#x} is past the string table "
                            f"({len(table)} bytes)", file=label, what=what)
    end = table.find(b"\0", off)
    if end < 0:
        raise ElfParseError("string table is not NUL-terminated", file=label, what=what)
    return table[off:end].decode("utf-8", "surrogateescape")


def parse_object(src: ElfSource, *, label: str | None = None) -> ObjectFile:
    """Decode and validate `src` as a relocatable object.

    Raises:
        ElfParseError: malformed headers, tables or indices.
        UnsupportedError: not ET_REL, an unknown machine, compressed or extended-index
            sections.
    """
    label = label or src.label
    eh = parse_header(src)
    if eh.e_type != ET_REL:
        raise UnsupportedError(f"not a relocatable object ({eh.type_name}); shared objects "
                               "and executables load with relink.load()", file=label)
    spec = spec_for(eh.e_machine, eh.elf_class)
    if spec is None:
        raise UnsupportedError(f"no architecture spec for {eh.machine_name} "
                               f"(e_machine {eh.e_machine}, ELF{eh.elf_class})", file=label)
    if eh.e_shnum == 0 or eh.e_shoff == 0:
        raise ElfParseError("relocatable object without a section header table", file=label,
                            what="section headers")
    if not 0 < eh.e_shstrndx < eh.e_shnum:
        raise ElfParseError(f"e_shstrndx {eh.e_shstrndx} is out of range "
                            f"({eh.e_shnum} sections)", file=label, what="section headers")
    sections = parse_section_headers(src, eh)
    if sections[0].sh_type != SHT_NULL or sections[0].sh_size or sections[0].sh_offset:
        raise ElfParseError("section 0 is not an empty SHT_NULL", file=label,
                            what="section headers")
    for sh in sections[1:]:
        if sh.sh_type not in (SHT_NOBITS, SHT_NULL) and sh.sh_offset + sh.sh_size > src.size:
            raise ElfParseError(f"section {sh.name or sh.index} ({sh.sh_size:#x} bytes at "
                                f"{sh.sh_offset:#x}) lies past the end of the file",
                                file=label, what="section headers", offset=sh.sh_offset)
        if sh.sh_flags & SHF_COMPRESSED and sh.sh_flags & SHF_ALLOC:
            raise UnsupportedError(f"compressed allocated section {sh.name}", file=label)
        if sh.sh_type == SHT_SYMTAB_SHNDX:
            raise UnsupportedError("objects with more than 65279 sections (SHT_SYMTAB_SHNDX) "
                                   "are not supported", file=label)
        if sh.sh_addralign & (sh.sh_addralign - 1):
            raise ElfParseError(f"section {sh.name}: alignment {sh.sh_addralign} is not a "
                                "power of two", file=label, what="section headers")
    obj = ObjectFile(src, label, eh, spec, sections)
    symtabs = [s for s in sections if s.sh_type == SHT_SYMTAB]
    if not symtabs:
        raise ElfParseError("relocatable object has no symbol table (SHT_SYMTAB)",
                            file=label, what="section headers")
    if len(symtabs) > 1:
        raise ElfParseError("more than one SHT_SYMTAB", file=label, what="section headers")
    _parse_symbols(obj, symtabs[0])
    for sh in sections:
        if sh.sh_type in (SHT_REL, SHT_RELA):
            _parse_relocs(obj, sh, symtabs[0].index)
        elif sh.sh_type == SHT_GROUP:
            _parse_group(obj, sh, symtabs[0].index)
    return obj


def _parse_symbols(obj: ObjectFile, sh: SectionHeader) -> None:
    layout = _SYM[obj.header.elf_class]
    label = obj.label
    if sh.sh_entsize != layout.size or sh.sh_size % layout.size:
        raise ElfParseError(f"symbol table entry size {sh.sh_entsize} (size {sh.sh_size}) "
                            f"does not match ELF{obj.header.elf_class}", file=label,
                            what=".symtab")
    count = sh.sh_size // layout.size
    if count > _MAX_ENTRIES:
        raise ElfParseError(f"absurd symbol count {count}", file=label, what=".symtab")
    strtab = _strtab(obj.source, obj.sections, sh.sh_link, ".symtab", label)
    raw = obj.source.read(sh.sh_offset, sh.sh_size)
    nsec = len(obj.sections)
    if not 0 < sh.sh_info <= max(count, 1):
        raise ElfParseError(f"sh_info {sh.sh_info} (first global) is out of range",
                            file=label, what=".symtab")
    obj.first_global = sh.sh_info
    is64 = obj.header.elf_class == 64
    for i, row in enumerate(layout.iter_unpack(raw)):
        if is64:
            name, info, other, shndx, value, size = row
        else:
            name, value, size, info, other, shndx = row
        if shndx == SHN_XINDEX:
            raise UnsupportedError("extended section indices (SHN_XINDEX)", file=label)
        if shndx == SHN_X86_64_LCOMMON and obj.header.e_machine == 62:
            shndx = SHN_COMMON  # -mcmodel=large COMMON: the same thing for a loader
        if shndx >= nsec and shndx not in (SHN_ABS, SHN_COMMON):
            raise ElfParseError(f"symbol {i} has section index {shndx:#x} "
                                f"({nsec} sections)", file=label, what=".symtab")
        obj.sym_names.append(_cstr(strtab, name, label, ".symtab"))
        obj.sym_values.append(value)
        obj.sym_sizes.append(size)
        obj.sym_infos.append(info)
        obj.sym_others.append(other)
        obj.sym_shndx.append(shndx)


def _parse_relocs(obj: ObjectFile, sh: SectionHeader, symtab: int) -> None:
    label = obj.label
    rela = sh.sh_type == SHT_RELA
    layout = (_RELA if rela else _REL)[obj.header.elf_class]
    what = sh.name or f"section {sh.index}"
    if sh.sh_entsize != layout.size or sh.sh_size % layout.size:
        raise ElfParseError(f"entry size {sh.sh_entsize} does not match "
                            f"{'RELA' if rela else 'REL'} ELF{obj.header.elf_class}",
                            file=label, what=what)
    if rela != obj.spec.is_rela and obj.spec.name in ("x86_64", "aarch64", "riscv64"):
        raise ElfParseError(f"{'RELA' if rela else 'REL'} section on an ISA that uses "
                            f"{'RELA' if obj.spec.is_rela else 'REL'}", file=label, what=what)
    if sh.sh_link != symtab:
        raise ElfParseError(f"sh_link {sh.sh_link} is not the symbol table", file=label,
                            what=what)
    if not 0 < sh.sh_info < len(obj.sections):
        raise ElfParseError(f"sh_info {sh.sh_info} (target section) is out of range",
                            file=label, what=what)
    n = sh.sh_size // layout.size
    if n > _MAX_ENTRIES:
        raise ElfParseError(f"absurd relocation count {n}", file=label, what=what)
    raw = obj.source.read(sh.sh_offset, sh.sh_size)
    shift, tmask = (32, 0xFFFFFFFF) if obj.header.elf_class == 64 else (8, 0xFF)
    offsets: list[int] = []
    types: list[int] = []
    syms: list[int] = []
    addends: list[int] = []
    nsyms = len(obj.sym_names)
    target = obj.sections[sh.sh_info]
    for k, row in enumerate(layout.iter_unpack(raw)):
        off, info = row[0], row[1]
        sym = info >> shift
        if sym >= nsyms:
            raise ElfParseError(f"entry {k} references symbol {sym} ({nsyms} symbols)",
                                file=label, what=what)
        if target.sh_type != SHT_NOBITS and off >= target.sh_size:
            raise ElfParseError(f"entry {k} offset {off:#x} is past the end of "
                                f"{target.name} ({target.sh_size:#x} bytes)", file=label,
                                what=what)
        offsets.append(off)
        types.append(info & tmask)
        syms.append(sym)
        addends.append(row[2] if rela else 0)
    obj.relocs.setdefault(sh.sh_info, []).append(
        RelocSection(sh.index, what, sh.sh_info, rela, offsets, types, syms, addends))


def _parse_group(obj: ObjectFile, sh: SectionHeader, symtab: int) -> None:
    label = obj.label
    if sh.sh_entsize not in (0, 4) or sh.sh_size % 4 or sh.sh_size < 4:
        raise ElfParseError("malformed SHT_GROUP section", file=label, what=sh.name)
    if sh.sh_link != symtab or sh.sh_info >= len(obj.sym_names):
        raise ElfParseError("SHT_GROUP signature symbol is out of range", file=label,
                            what=sh.name)
    words = struct.unpack(f"<{sh.sh_size // 4}I", obj.source.read(sh.sh_offset, sh.sh_size))
    members = list(words[1:])
    if any(not 0 < m < len(obj.sections) for m in members):
        raise ElfParseError("SHT_GROUP member index out of range", file=label, what=sh.name)
    signature = obj.sym_names[sh.sh_info]
    if obj.sym_infos[sh.sh_info] & 0xF == 3 and not signature:  # STT_SECTION signature
        signature = obj.sections[obj.sym_shndx[sh.sh_info]].name
    obj.groups.append(Group(sh.index, signature, bool(words[0] & GRP_COMDAT), members))
