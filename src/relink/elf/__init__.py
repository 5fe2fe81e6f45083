"""The elf layer: parse and validate ELF files without mapping or running anything.

`ElfFile` is the facade over the pieces (header, program/section headers, dynamic
section, symbols, versions, relocation tables, notes). Reading goes through the file's
bytes and `AddressView`, so every offset and count is checked before use. The loader
reuses the same parsers on the mapped image.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from relink.elf.dynamic import DynamicInfo, parse_dynamic
from relink.elf.header import (
    ElfHeader,
    ProgramHeader,
    SectionHeader,
    parse_header,
    parse_program_headers,
    parse_section_headers,
)
from relink.elf.relocs import RelocTable, decode_relr, read_table
from relink.elf.source import ElfSource, SourceLike, open_source
from relink.elf.symbols import SymbolTable
from relink.elf.view import AddressView
from relink.errors import ElfParseError

if TYPE_CHECKING:
    from relink.elf.notes import Note

__all__ = [
    "DynamicInfo", "ElfFile", "ElfHeader", "ElfSource", "ProgramHeader", "SectionHeader",
    "SymbolTable", "check_segments", "dynamic_tables",
]

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE, PT_TLS, PT_GNU_RELRO = 1, 2, 3, 4, 7, 0x6474E552
SHT_NOTE = 7
_MAX_SPAN = 1 << 40


def check_segments(phdrs: list[ProgramHeader], file_size: int | None, label: str,
                   page_size: int) -> list[ProgramHeader]:
    """Validate the PT_LOAD segments and return them sorted by address.

    Checks: at least one, filesz <= memsz, file ranges inside the file (when its size is
    known), no address overflow or absurd span, ascending and non-overlapping pages, and
    ``p_vaddr % page == p_offset % page`` (so the file can be mapped).
    """
    loads = [ph for ph in phdrs if ph.p_type == PT_LOAD]
    if not loads:
        raise ElfParseError("no PT_LOAD segment", file=label, what="program headers")
    prev_end = -1
    for i, ph in enumerate(loads):
        what = f"PT_LOAD segment {i}"
        if ph.p_filesz > ph.p_memsz:
            raise ElfParseError(f"p_filesz {ph.p_filesz:#x} > p_memsz {ph.p_memsz:#x}",
                                file=label, what=what)
        if ph.p_memsz > _MAX_SPAN or ph.p_vaddr + ph.p_memsz > (1 << 64) - page_size:
            raise ElfParseError(f"absurd segment size {ph.p_memsz:#x}", file=label, what=what)
        if file_size is not None and ph.p_offset + ph.p_filesz > file_size:
            raise ElfParseError(f"file range {ph.p_offset:#x}+{ph.p_filesz:#x} is past the "
                                f"end of the file ({file_size:#x})", file=label, what=what)
        if ph.p_vaddr % page_size != ph.p_offset % page_size:
            raise ElfParseError(f"p_vaddr {ph.p_vaddr:#x} and p_offset {ph.p_offset:#x} "
                                f"differ modulo the page size {page_size:#x}",
                                file=label, what=what)
        start = ph.p_vaddr & ~(page_size - 1)
        if ph.p_vaddr < prev_end or start < ((prev_end + page_size - 1) & ~(page_size - 1)):
            raise ElfParseError("segments overlap, share a page or are not in ascending order",
                                file=label, what=what)
        prev_end = ph.p_vaddr + ph.p_memsz
    span = loads[-1].p_vaddr + loads[-1].p_memsz - (loads[0].p_vaddr & ~(page_size - 1))
    if span > _MAX_SPAN:
        raise ElfParseError(f"absurd image span {span:#x}", file=label, what="program headers")
    return loads


def dynamic_tables(view: AddressView, dyn: DynamicInfo, elf_class: int,
                   relr_limit: int) -> tuple[list[RelocTable], list[int]]:
    """Decode every dynamic relocation table named by `dyn`: (REL/RELA tables, RELR list).

    When ``.rela.plt`` is the tail of ``.rela.dyn`` (same end address), the dyn table is
    shortened so no entry is processed twice.
    """
    tables = []
    rela = dyn.pltrel != 17  # DT_REL
    dyn_addr, dyn_size, dyn_rela = (dyn.rela, dyn.relasz, True) if dyn.rela else \
        (dyn.rel, dyn.relsz, False)
    if dyn.jmprel and dyn_addr and dyn_addr <= dyn.jmprel < dyn_addr + dyn_size:
        if dyn.jmprel + dyn.pltrelsz != dyn_addr + dyn_size:
            raise ElfParseError("DT_JMPREL lies inside the dynamic relocation table but is "
                                "not its tail", file=view.label, what="relocation tables")
        dyn_size = dyn.jmprel - dyn_addr
    if dyn_addr and dyn_size:
        ent = dyn.relaent if dyn_rela else dyn.relent
        tables.append(read_table(view, dyn_addr, dyn_size, ent, rela=dyn_rela,
                                 elf_class=elf_class,
                                 name=".rela.dyn" if dyn_rela else ".rel.dyn"))
    if dyn.jmprel and dyn.pltrelsz:
        ent = (dyn.relaent if rela else dyn.relent) or 0
        tables.append(read_table(view, dyn.jmprel, dyn.pltrelsz, ent, rela=rela,
                                 elf_class=elf_class,
                                 name=".rela.plt" if rela else ".rel.plt"))
    relr = decode_relr(view, dyn.relr, dyn.relrsz, dyn.relrent, elf_class, relr_limit) \
        if dyn.relr and dyn.relrsz else []
    return tables, relr


class ElfFile:
    """A parsed ELF file (any type), read from a path, fd or bytes. Nothing is mapped.

    Args:
        source: anything `open_source` accepts.
        name: name for memory inputs.
    """

    def __init__(self, source: SourceLike, *, name: str | None = None) -> None:
        self.source: ElfSource = open_source(source, name=name)
        try:
            self.header: ElfHeader = parse_header(self.source)
            self.phdrs: list[ProgramHeader] = parse_program_headers(self.source, self.header)
        except BaseException:
            if self.source is not source:  # we opened it: do not leak its fd (issue 9)
                self.source.close()
            raise

    @property
    def label(self) -> str:
        return self.source.label

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> ElfFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def phdr(self, p_type: int) -> ProgramHeader | None:
        return next((ph for ph in self.phdrs if ph.p_type == p_type), None)

    @cached_property
    def sections(self) -> list[SectionHeader]:
        return parse_section_headers(self.source, self.header)

    def section(self, name: str) -> SectionHeader | None:
        return next((s for s in self.sections if s.name == name), None)

    def section_data(self, sh: SectionHeader) -> memoryview:
        if sh.sh_type == 8:  # SHT_NOBITS
            return memoryview(bytes(sh.sh_size if sh.sh_size < (1 << 24) else 0))
        if sh.sh_offset + sh.sh_size > self.source.size:
            raise ElfParseError(f"section {sh.name or sh.index} lies past the end of the file",
                                file=self.label, what="section headers", offset=sh.sh_offset)
        return self.source.data[sh.sh_offset:sh.sh_offset + sh.sh_size]

    @cached_property
    def file_view(self) -> AddressView:
        return AddressView.for_file(self.source.data, self.phdrs, self.label)

    @cached_property
    def interp(self) -> str | None:
        ph = self.phdr(PT_INTERP)
        if ph is None:
            return None
        raw = self.source.read(ph.p_offset, ph.p_filesz)
        if not raw.endswith(b"\0"):
            raise ElfParseError("PT_INTERP is not NUL-terminated", file=self.label,
                                what="PT_INTERP")
        return raw[:-1].decode("utf-8", "surrogateescape")

    @cached_property
    def dynamic(self) -> DynamicInfo | None:
        ph = self.phdr(PT_DYNAMIC)
        if ph is None:
            return None
        return parse_dynamic(self.file_view, ph.p_vaddr, ph.p_memsz, self.header.elf_class)

    @cached_property
    def symbols(self) -> SymbolTable | None:
        dyn = self.dynamic
        if dyn is None or not dyn.symtab:
            return None
        return SymbolTable(self.file_view, dyn, self.header.elf_class)

    def relocation_tables(self) -> tuple[list[RelocTable], list[int]]:
        dyn = self.dynamic
        if dyn is None:
            return [], []
        return dynamic_tables(self.file_view, dyn, self.header.elf_class,
                              relr_limit=max(self.source.size, 1 << 16))

    def notes(self) -> list[Note]:
        from relink.elf.notes import parse_notes

        out: list[Note] = []
        phs = [ph for ph in self.phdrs if ph.p_type == PT_NOTE]
        if phs:
            for ph in phs:
                out += parse_notes(self.source.read(ph.p_offset, ph.p_filesz), ph.p_align,
                                   self.label)
            return out
        for sh in self.sections:
            if sh.sh_type == SHT_NOTE:
                out += parse_notes(self.section_data(sh), sh.sh_addralign, self.label)
        return out
