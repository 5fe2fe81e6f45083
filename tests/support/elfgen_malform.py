"""Malformation helpers for test ELF images: truncate, patch headers and tables, enumerate
header boundaries.

Test-only support code, re-exported by :mod:`tests.support.elfgen`. Every function takes
the image as ``bytes``/``bytearray`` or a :class:`~tests.support.elfgen.GeneratedElf` and
returns new ``bytes``; the input is never modified. Tables are located the way a loader
would find them (program headers and the dynamic section), falling back to section headers,
so the helpers also work on images compiled by gcc. Little-endian ELF32/ELF64 only.

Example::

    bad = patch_ehdr(img, e_phentsize=0)
    bad = patch_dyn(img, DT_STRSZ, 1 << 40)
    for n in header_boundaries(img):
        check_rejected(truncate(img, n))
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from . import elfgen_defs as d

if TYPE_CHECKING:
    from .elfgen_defs import StructSpec

__all__ = [
    "ElfView",
    "header_boundaries",
    "patch_bytes",
    "patch_dyn",
    "patch_ehdr",
    "patch_phdr",
    "patch_reloc",
    "patch_relr",
    "patch_shdr",
    "patch_sym",
    "truncate",
]


class _HasData(Protocol):
    data: bytes


ImageLike = bytes | bytearray | memoryview | _HasData

_IDENT_FIELDS = {"ei_class": 4, "ei_data": 5, "ei_version": 6, "ei_osabi": 7, "ei_abiversion": 8}


def _raw(image: ImageLike) -> bytearray:
    if isinstance(image, bytes | bytearray | memoryview):
        return bytearray(image)
    return bytearray(image.data)


class ElfView:
    """A tolerant, read-only parse of an image: headers, sections, dynamic entries.

    Entries that lie outside the file are skipped rather than raising, so the view can be
    built over already damaged images.
    """

    def __init__(self, image: ImageLike) -> None:
        """Parse ``image``.

        Raises:
            ValueError: when the ELF header itself is missing or of an unknown class.
        """
        self.data = _raw(image)
        if len(self.data) < 52 or self.data[:4] != d.ELFMAG or self.data[4] not in (1, 2):
            raise ValueError("not an ELF image with a readable header")
        self.elf_class = 32 if self.data[4] == d.ELFCLASS32 else 64
        self.word = self.elf_class // 8
        self.ehdr_spec = self.spec("Ehdr")
        self.ehdr = self.ehdr_spec.unpack(self.data)
        self.phdrs = self._table("Phdr", self.ehdr["e_phoff"], self.ehdr["e_phnum"])
        self.shdrs = self._table("Shdr", self.ehdr["e_shoff"], self.ehdr["e_shnum"])
        self.dynamic: list[tuple[int, int, int]] = []  # (file offset, tag, value)
        dyn = next((p for _, p in self.phdrs if p["p_type"] == d.PT_DYNAMIC), None)
        if dyn is not None:
            spec = self.spec("Dyn")
            end = min(dyn["p_offset"] + dyn["p_filesz"], len(self.data))
            for pos in range(dyn["p_offset"], end - spec.size + 1, spec.size):
                entry = spec.unpack(self.data, pos)
                self.dynamic.append((pos, entry["d_tag"], entry["d_val"]))
                if entry["d_tag"] == d.DT_NULL:
                    break

    def spec(self, kind: str) -> StructSpec:
        """The record spec of ``kind`` for this image's class."""
        return d.spec(kind, self.elf_class)

    def _table(self, kind: str, offset: int, count: int) -> list[tuple[int, dict[str, int]]]:
        spec = self.spec(kind)
        out = []
        for i in range(count if offset else 0):
            pos = offset + i * spec.size
            if pos + spec.size > len(self.data):
                break
            out.append((pos, spec.unpack(self.data, pos)))
        return out

    def dyn(self, tag: int) -> int | None:
        """Value of the first dynamic entry with ``tag``, or ``None``."""
        return next((v for _, t, v in self.dynamic if t == tag), None)

    def vaddr_to_offset(self, vaddr: int) -> int:
        """File offset of ``vaddr`` through the PT_LOAD headers.

        Raises:
            ValueError: when no PT_LOAD maps that address from the file.
        """
        for _, ph in self.phdrs:
            if ph["p_type"] == d.PT_LOAD and 0 <= vaddr - ph["p_vaddr"] < ph["p_filesz"]:
                return ph["p_offset"] + vaddr - ph["p_vaddr"]
        raise ValueError(f"vaddr {vaddr:#x} is not backed by the file")

    def section_name(self, shdr: dict[str, int]) -> str:
        """Name of a section from ``.shstrtab`` (empty when unreadable)."""
        idx = self.ehdr["e_shstrndx"]
        if idx >= len(self.shdrs):
            return ""
        return self.cstr(self.shdrs[idx][1]["sh_offset"] + shdr["sh_name"])

    def section(self, name_or_type: str | int) -> tuple[int, dict[str, int]] | None:
        """``(header offset, header)`` of the first section with that name or ``sh_type``."""
        for pos, sh in self.shdrs:
            if name_or_type in (sh["sh_type"], self.section_name(sh)):
                return pos, sh
        return None

    def cstr(self, offset: int) -> str:
        """NUL-terminated string at a file offset (empty when out of bounds)."""
        if not 0 <= offset < len(self.data):
            return ""
        end = self.data.find(b"\0", offset)
        return self.data[offset : end if end >= 0 else len(self.data)].decode(errors="replace")

    def symbols(self, table: str = "dynsym") -> tuple[int, int, int]:
        """``(file offset, count, string table offset)`` of ``.dynsym`` or ``.symtab``.

        Raises:
            ValueError: when the table cannot be located.
        """
        sym_size = self.spec("Sym").size
        found = self.section(d.SHT_DYNSYM if table == "dynsym" else d.SHT_SYMTAB)
        if found is not None:
            sh = found[1]
            link = self.shdrs[sh["sh_link"]][1] if sh["sh_link"] < len(self.shdrs) else None
            return sh["sh_offset"], sh["sh_size"] // sym_size, link["sh_offset"] if link else 0
        symtab, strtab = self.dyn(d.DT_SYMTAB), self.dyn(d.DT_STRTAB)
        if table != "dynsym" or symtab is None or strtab is None:
            raise ValueError(f"cannot locate the {table} table")
        count = self._dynsym_count()
        return self.vaddr_to_offset(symtab), count, self.vaddr_to_offset(strtab)

    def _dynsym_count(self) -> int:
        hash_vaddr = self.dyn(d.DT_HASH)
        if hash_vaddr is not None:
            return int(struct.unpack_from("<I", self.data, self.vaddr_to_offset(hash_vaddr) + 4)[0])
        gnu = self.dyn(d.DT_GNU_HASH)
        if gnu is None:
            raise ValueError("no section headers and no hash table: dynsym size unknown")
        pos = self.vaddr_to_offset(gnu)
        nb, symoffset, nbloom, _ = struct.unpack_from("<4I", self.data, pos)
        pos += 16 + nbloom * self.word
        buckets: tuple[int, ...] = struct.unpack_from(f"<{nb}I", self.data, pos)
        last = int(max(buckets, default=0))
        if last < symoffset:
            return int(symoffset)
        chain = pos + 4 * nb
        while not struct.unpack_from("<I", self.data, chain + 4 * (last - symoffset))[0] & 1:
            last += 1
        return last + 1

    def reloc_table(self, table: str) -> tuple[int, int, bool]:
        """``(file offset, entry count, is_rela)`` of the ``"dyn"`` or ``"plt"`` table.

        Raises:
            ValueError: when the table is absent.
        """
        if table == "plt":
            addr, size = self.dyn(d.DT_JMPREL), self.dyn(d.DT_PLTRELSZ)
            is_rela = self.dyn(d.DT_PLTREL) == d.DT_RELA
        elif self.dyn(d.DT_RELA) is not None:
            addr, size, is_rela = self.dyn(d.DT_RELA), self.dyn(d.DT_RELASZ), True
        else:
            addr, size, is_rela = self.dyn(d.DT_REL), self.dyn(d.DT_RELSZ), False
        if addr is None or size is None:
            raise ValueError(f"no {table} relocation table")
        entsize = self.spec("Rela" if is_rela else "Rel").size
        return self.vaddr_to_offset(addr), size // entsize, is_rela


def truncate(image: ImageLike, n: int) -> bytes:
    """The first ``n`` bytes of the image."""
    return bytes(_raw(image)[:n])


def patch_bytes(image: ImageLike, offset: int, new: bytes) -> bytes:
    """Overwrite ``len(new)`` bytes at file ``offset`` (the file grows if needed)."""
    buf = _raw(image)
    if offset + len(new) > len(buf):
        buf += bytes(offset + len(new) - len(buf))
    buf[offset : offset + len(new)] = new
    return bytes(buf)


def patch_ehdr(image: ImageLike, **fields: int | bytes) -> bytes:
    """Rewrite ELF header fields.

    Accepts the ``Ehdr`` field names (``e_ident`` replaces all 16 bytes, shorter values are
    NUL padded) plus ``ei_mag`` (4 bytes), ``ei_class``, ``ei_data``, ``ei_version``,
    ``ei_osabi`` and ``ei_abiversion``. Field offsets follow the class of the *input*.
    """
    view = ElfView(image)
    buf = view.data
    if "ei_mag" in fields:
        magic = fields.pop("ei_mag")
        assert isinstance(magic, bytes)
        buf[0:4] = magic.ljust(4, b"\0")[:4]
    for name, pos in _IDENT_FIELDS.items():
        if name in fields:
            value = fields.pop(name)
            assert isinstance(value, int)
            buf[pos] = value & 0xFF
    view.ehdr_spec.patch(buf, 0, **fields)
    return bytes(buf)


def patch_phdr(image: ImageLike, index: int, **fields: int) -> bytes:
    """Rewrite fields of program header ``index`` (negative counts from the end).

    Raises:
        IndexError: when the header does not exist.
    """
    view = ElfView(image)
    pos, _ = view.phdrs[index]
    view.spec("Phdr").patch(view.data, pos, **fields)
    return bytes(view.data)


def patch_shdr(image: ImageLike, index_or_name: int | str, **fields: int) -> bytes:
    """Rewrite fields of a section header chosen by index or name.

    Raises:
        KeyError: when no such section exists.
    """
    view = ElfView(image)
    if isinstance(index_or_name, int):
        pos = view.shdrs[index_or_name][0]
    else:
        found = view.section(index_or_name)
        if found is None:
            raise KeyError(f"no section {index_or_name!r}")
        pos = found[0]
    view.spec("Shdr").patch(view.data, pos, **fields)
    return bytes(view.data)


def patch_dyn(
    image: ImageLike,
    tag: int,
    value: int | None = None,
    *,
    new_tag: int | None = None,
    occurrence: int = 0,
) -> bytes:
    """Rewrite the value (and optionally the tag) of a dynamic entry.

    Args:
        image: the image.
        tag: tag of the entry to rewrite.
        value: new ``d_val`` (unchanged when ``None``).
        new_tag: new ``d_tag`` (``DT_NULL`` truncates the table there).
        occurrence: which entry with ``tag`` (0 = the first).

    Raises:
        KeyError: when there is no such entry.
    """
    view = ElfView(image)
    hits = [pos for pos, t, _ in view.dynamic if t == tag]
    if len(hits) <= occurrence:
        raise KeyError(f"no dynamic entry #{occurrence} with tag {tag:#x}")
    fields: dict[str, int] = {}
    if value is not None:
        fields["d_val"] = value
    if new_tag is not None:
        fields["d_tag"] = new_tag
    view.spec("Dyn").patch(view.data, hits[occurrence], **fields)
    return bytes(view.data)


def patch_sym(
    image: ImageLike, name_or_index: str | int, *, table: str = "dynsym", **fields: int | str
) -> bytes:
    """Rewrite a symbol of ``.dynsym`` (default) or ``.symtab``, found by name or index.

    Accepts the ``Sym`` field names plus ``bind``, ``type`` and ``visibility`` (names as in
    :class:`~tests.support.elfgen.SymbolDesc` or ints), which update parts of ``st_info`` and
    ``st_other``.

    Raises:
        KeyError: when no symbol has that name.
        IndexError: when the index is out of range.
    """
    view = ElfView(image)
    spec = view.spec("Sym")
    start, count, strtab = view.symbols(table)
    if isinstance(name_or_index, int):
        if not 0 <= name_or_index < count:
            raise IndexError(f"symbol index {name_or_index} out of range ({count})")
        index = name_or_index
    else:
        names = [
            view.cstr(strtab + spec.unpack(view.data, start + i * spec.size)["st_name"])
            for i in range(count)
        ]
        if name_or_index not in names:
            raise KeyError(f"no symbol {name_or_index!r} in {table}")
        index = names.index(name_or_index)
    pos = start + index * spec.size
    old = spec.unpack(view.data, pos)
    info, other = old["st_info"], old["st_other"]
    if "bind" in fields:
        bind = fields.pop("bind")
        info = ((d.BINDS[bind] if isinstance(bind, str) else bind) << 4) | (info & 0xF)
    if "type" in fields:
        typ = fields.pop("type")
        info = (info & 0xF0) | (d.TYPES[typ] if isinstance(typ, str) else typ)
    if "visibility" in fields:
        vis = fields.pop("visibility")
        other = (other & ~3) | (d.VISIBILITIES[vis] if isinstance(vis, str) else vis)
    ints = {k: v for k, v in fields.items() if isinstance(v, int)}
    spec.patch(
        view.data,
        pos,
        st_info=ints.pop("st_info", info),
        st_other=ints.pop("st_other", other),
        **ints,
    )
    return bytes(view.data)


def patch_reloc(
    image: ImageLike,
    index: int,
    table: str = "dyn",
    *,
    offset: int | None = None,
    info: int | None = None,
    addend: int | None = None,
    sym: int | None = None,
    r_type: int | None = None,
) -> bytes:
    """Rewrite relocation ``index`` of the ``"dyn"`` (DT_RELA/DT_REL) or ``"plt"``
    (DT_JMPREL) table.

    ``offset``/``info``/``addend`` set ``r_offset``/``r_info``/``r_addend``; ``sym`` and
    ``r_type`` replace one half of ``r_info``. ``GeneratedElf.reloc_table_index`` gives the
    ``(table, index)`` of each relocation a writer added.

    Raises:
        IndexError: when the entry does not exist.
        ValueError: for ``addend`` on a REL table (the addend lives in the place there).
    """
    view = ElfView(image)
    start, count, is_rela = view.reloc_table(table)
    if not 0 <= index < count:
        raise IndexError(f"relocation {index} out of range ({count})")
    spec = view.spec("Rela" if is_rela else "Rel")
    pos = start + index * spec.size
    old = spec.unpack(view.data, pos)
    fields: dict[str, int] = {}
    if offset is not None:
        fields["r_offset"] = offset
    if addend is not None:
        if not is_rela:
            raise ValueError("REL entries have no r_addend; patch the place instead")
        fields["r_addend"] = addend
    r_info = old["r_info"] if info is None else info
    shift, mask = (32, 0xFFFFFFFF) if view.elf_class == 64 else (8, 0xFF)
    if sym is not None:
        r_info = (sym << shift) | (r_info & mask)
    if r_type is not None:
        r_info = (r_info & ~mask) | (r_type & mask)
    if info is not None or sym is not None or r_type is not None:
        fields["r_info"] = r_info
    spec.patch(view.data, pos, **fields)
    return bytes(view.data)


def patch_relr(image: ImageLike, index: int, word: int) -> bytes:
    """Replace the ``index``-th DT_RELR word.

    Raises:
        ValueError: when the image has no DT_RELR table.
        IndexError: when the word does not exist.
    """
    view = ElfView(image)
    addr, size = view.dyn(d.DT_RELR), view.dyn(d.DT_RELRSZ)
    if addr is None or size is None:
        raise ValueError("no DT_RELR table")
    if not 0 <= index < size // view.word:
        raise IndexError(f"RELR word {index} out of range")
    pos = view.vaddr_to_offset(addr) + index * view.word
    fmt = "<Q" if view.word == 8 else "<I"
    struct.pack_into(fmt, view.data, pos, word & ((1 << 8 * view.word) - 1))
    return bytes(view.data)


def header_boundaries(image: ImageLike) -> Iterator[int]:
    """Yield, in ascending order, every file offset where a header or table starts or ends.

    Covers the ELF header, each program and section header, each section's and segment's
    file bytes and each dynamic entry, plus 0 and the file size. Meant for "truncate at
    every boundary" tests: ``for n in header_boundaries(img): truncate(img, n)``.
    """
    view = ElfView(image)
    size = len(view.data)
    marks = {0, size, view.ehdr_spec.size}
    for kind, off, num in (
        ("Phdr", view.ehdr["e_phoff"], view.ehdr["e_phnum"]),
        ("Shdr", view.ehdr["e_shoff"], view.ehdr["e_shnum"]),
    ):
        if off:
            marks.update(off + i * view.spec(kind).size for i in range(num + 1))
    for _, ph in view.phdrs:
        marks.update((ph["p_offset"], ph["p_offset"] + ph["p_filesz"]))
    for _, sh in view.shdrs:
        if sh["sh_type"] not in (d.SHT_NOBITS, d.SHT_NULL):
            marks.update((sh["sh_offset"], sh["sh_offset"] + sh["sh_size"]))
    dyn_size = view.spec("Dyn").size
    for pos, _, _ in view.dynamic:
        marks.update((pos, pos + dyn_size))
    yield from sorted(m for m in marks if 0 <= m <= size)
