"""Test-only ELF writer: minimal, exact shared objects and their malformed variants.

Modelled on Relink's gen-elf ``DylibWriter``. Tests describe a shared object (code bytes,
data, symbols, relocations, TLS, versions, dynamic flags) and get back the image bytes plus
metadata (section layout, where each relocation lands, symbol addresses) to assert on.
The produced files are accepted by ``readelf -W -a`` without warnings and by glibc's
``ld.so`` (see ``tests/support_selftest/test_elfgen.py``). Malformation helpers live in
:mod:`tests.support.elfgen_malform` and are re-exported here. Internals: constants and record
layouts in ``elfgen_defs``, name-only tables in ``elfgen_tables``, placement and
serialisation in ``elfgen_layout`` and ``elfgen_headers``.

Support matrix:

* x86_64 ELF64 (``machine=62, elf_class=64``): everything, including lazy PLT stubs,
  TLS-getter and IFUNC helpers; images load with glibc.
* i386 ELF32 (``machine=3, elf_class=32``): headers, segments, dynamic section, hash
  tables, symbols, versions, REL tables (implicit addends written into the place), RELR,
  TLS segment. No PLT stubs and no code helpers (callers pass their own i386 code).
* Any other ``machine`` (or x32: ``machine=62, elf_class=32, rela=True``): same as its
  class; relocation numbers without a name table must be given as ints.

References (``rel_to``, fixups, init arrays, RELR targets) are strings: a defined symbol
name, a section name with a leading dot (``".data"``, ``".got"``, ``".text"`` ...),
``"plt:<symbol>"`` (the PLT stub generated for that symbol), ``"reloc:<n>"`` or
``"relr:<n>"`` (the place of the n-th relocation / RELR entry), each optionally followed by
``+N`` or ``-N``.

Example::

    w = DylibWriter(soname="libgen.so")
    w.add_function("answer", b"\\xb8\\x2a\\x00\\x00\\x00\\xc3")   # mov eax, 42; ret
    slot = w.add_reloc("GLOB_DAT", "answer")                      # pointer slot in .data
    img = w.build()
    img.reloc_addrs[slot]                                         # vaddr of that slot
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import elfgen_defs as d
from .elfgen_malform import (
    ElfView,
    header_boundaries,
    patch_bytes,
    patch_dyn,
    patch_ehdr,
    patch_phdr,
    patch_reloc,
    patch_relr,
    patch_shdr,
    patch_sym,
    truncate,
)

__all__ = [
    "DylibWriter",
    "ElfView",
    "Fixup",
    "GeneratedElf",
    "RelocDesc",
    "RelrDesc",
    "SymbolDesc",
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


@dataclass
class SymbolDesc:
    """One symbol of the generated object.

    ``value`` is interpreted per ``section``: an offset into ``.text`` / ``.data`` / ``.bss``
    / ``.got``, an offset into the TLS block (``"tls"``), or an absolute value with
    ``SHN_ABS`` (``None``). Undefined symbols (``defined=False``) get ``SHN_UNDEF``.
    ``version`` names a version: defined symbols create a Verdef (``foo@@V``, or
    ``foo@V`` with ``version_hidden``), undefined ones a Vernaux of ``version_lib`` (default:
    the only DT_NEEDED entry). ``dynamic=False`` keeps the symbol out of ``.dynsym`` (it
    then only appears in ``.symtab``). ``shndx`` overrides ``st_shndx`` verbatim.
    """

    name: str
    value: int = 0
    size: int = 0
    bind: str | int = "global"
    type: str | int = "func"
    defined: bool = True
    visibility: str | int = "default"
    section: str | None = "text"
    version: str | None = None
    version_hidden: bool = False
    version_lib: str | None = None
    dynamic: bool = True
    shndx: int | None = None

    @property
    def display_name(self) -> str:
        """``name``, ``name@@V`` (default version) or ``name@V`` (hidden or undefined)."""
        if self.version is None:
            return self.name
        sep = "@@" if self.defined and not self.version_hidden else "@"
        return f"{self.name}{sep}{self.version}"


@dataclass
class RelocDesc:
    """One dynamic relocation.

    ``r_type`` is the raw number or a name of the writer's architecture (``"RELATIVE"``,
    ``"GLOB_DAT"``, ``"JUMP_SLOT"``, ``"R64"``) or a generic alias (``"ABS"``, ``"DTPMOD"``,
    ``"DTPOFF"``, ``"TPOFF"``). ``symbol`` is a name (undeclared names become undefined
    globals), a raw symbol index (``int``, for malformed tables) or ``None`` (index 0).
    The place is ``section`` + ``offset``; ``section="abs"`` makes ``offset`` the raw
    ``r_offset``. With ``offset=None`` a fresh slot is allocated in ``.data`` (``table="dyn"``)
    or in ``.got.plt`` with a lazy PLT stub (``table="plt"``). ``rel_to`` adds the address
    of a reference to ``addend`` (for RELATIVE and IRELATIVE).
    """

    r_type: int | str
    symbol: str | int | None = None
    addend: int = 0
    offset: int | None = None
    table: str = "dyn"
    section: str | None = None
    rel_to: str | None = None
    slot_size: int | None = None


@dataclass
class RelrDesc:
    """One RELR-encoded relative pointer: the word at ``section+offset`` becomes
    ``base + resolve(rel_to) + addend`` (``rel_to=None`` means just ``base + addend``)."""

    section: str
    offset: int
    rel_to: str | None = None
    addend: int = 0


@dataclass
class Fixup:
    """A link-time patch of generated code or data, resolved when the image is built.

    ``kind`` is ``"rel32"`` (``S + A - (P + 4)``: a rip-relative or branch displacement
    that ends the instruction), ``"pc32"`` (``S + A - P``), ``"abs32"`` or ``"abs64"``
    (``S + A``). ``S`` is the address of ``ref`` and ``P`` that of the patched field.
    """

    pos: int
    ref: str
    kind: str = "rel32"
    addend: int = 0
    section: str = ".text"


@dataclass
class GeneratedElf:
    """A built image and the metadata tests assert on. All addresses are link-time vaddrs.

    Attributes:
        data: the file bytes.
        elf_class: 32 or 64.
        machine: ``e_machine``.
        layout: section name -> ``(vaddr, offset, size)``.
        symbols: symbol display name (and plain name for the default version) -> value
            (the ``st_value``: a vaddr, or the TLS offset for TLS symbols).
        symbol_index: same keys -> ``.dynsym`` index (``.symtab``-only symbols absent).
        reloc_addrs: ``r_offset`` of each relocation added with ``add_reloc``, in order.
        reloc_table_index: ``(table, index)`` of each of those entries, for ``patch_reloc``.
        relr_addrs: address of each ``add_relr`` entry, in order.
        plt_addrs: symbol -> vaddr of its generated PLT stub.
        phdrs: the program headers as field dicts.
    """

    data: bytes
    elf_class: int
    machine: int
    layout: dict[str, tuple[int, int, int]]
    symbols: dict[str, int]
    symbol_index: dict[str, int]
    reloc_addrs: list[int]
    reloc_table_index: list[tuple[str, int]]
    relr_addrs: list[int]
    plt_addrs: dict[str, int]
    phdrs: list[dict[str, int]] = field(default_factory=list)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the image to ``path`` and return it as a ``Path``."""
        out = Path(path)
        out.write_bytes(self.data)
        return out

    def section(self, name: str) -> bytes:
        """File bytes of one section (empty for NOBITS sections)."""
        _, offset, size = self.layout[name]
        if name in (".bss", ".tbss"):
            return b""
        return self.data[offset : offset + size]

    def vaddr_to_offset(self, vaddr: int) -> int:
        """File offset backing ``vaddr``.

        Raises:
            ValueError: when no PT_LOAD maps that address from the file.
        """
        for ph in self.phdrs:
            if ph["p_type"] == d.PT_LOAD and 0 <= vaddr - ph["p_vaddr"] < ph["p_filesz"]:
                return ph["p_offset"] + vaddr - ph["p_vaddr"]
        raise ValueError(f"vaddr {vaddr:#x} is not backed by the file")

    def read_word(self, vaddr: int) -> int:
        """Read the unsigned word (4 or 8 bytes per class) stored at ``vaddr`` in the file."""
        fmt = "<Q" if self.elf_class == 64 else "<I"
        return int(struct.unpack_from(fmt, self.data, self.vaddr_to_offset(vaddr))[0])


class DylibWriter:
    """Collects the content of one shared object and builds it with :meth:`build`.

    Every constructor option is also a public attribute that may be changed before
    :meth:`build`; ``init``/``fini`` (references for DT_INIT/DT_FINI) are attributes only.
    """

    def __init__(
        self,
        soname: str | None = None,
        needed: tuple[str, ...] | list[str] = (),
        machine: int = d.EM_X86_64,
        elf_class: int = 64,
        runpath: str | None = None,
        rpath: str | None = None,
        symbolic: bool = False,
        bind_now: bool = True,
        textrel: bool = False,
        *,
        relro: bool = False,
        sysv_hash: bool = True,
        gnu_hash: bool = True,
        symtab: bool = False,
        section_headers: bool = True,
        rela: bool | None = None,
        base: int = 0,
        page_size: int = 0x1000,
        flags: int = 0,
        flags_1: int = 0,
        osabi: int | None = None,
        e_type: int = d.ET_DYN,
        entry: str | None = None,
        exec_stack: bool = False,
        gnu_stack: bool = True,
        relcount: bool = True,
        sysv_buckets: int | None = None,
        gnu_buckets: int | None = None,
        gnu_bloom_words: int | None = None,
    ) -> None:
        """Configure the object.

        Args:
            soname: DT_SONAME (also the name of the base Verdef).
            needed: DT_NEEDED entries in order.
            machine: ``e_machine`` (62 x86_64, 3 i386).
            elf_class: 64 or 32.
            runpath: DT_RUNPATH string.
            rpath: DT_RPATH string.
            symbolic: emit DT_SYMBOLIC and DF_SYMBOLIC.
            bind_now: DF_BIND_NOW and DF_1_NOW.
            textrel: DT_TEXTREL and DF_TEXTREL (allow relocations in ``.text``).
            relro: emit PT_GNU_RELRO over .tdata/.init_array/.fini_array/.dynamic/.got, padded
                to a page so it really gets protected.
            sysv_hash: emit DT_HASH.
            gnu_hash: emit DT_GNU_HASH.
            symtab: also emit ``.symtab``/``.strtab`` (holds ``dynamic=False`` symbols).
            section_headers: ``False`` produces no section headers at all.
            rela: RELA instead of REL; default RELA for ELF64, REL for ELF32.
            base: link-time address of the first byte (0 for normal shared objects).
            page_size: segment alignment.
            flags: extra DT_FLAGS bits; flags_1: extra DT_FLAGS_1 bits.
            osabi: EI_OSABI; default GNU when IFUNC/unique symbols exist, else SYSV.
            e_type: ``e_type`` (ET_DYN by default).
            entry: reference for ``e_entry``.
            exec_stack: PF_X on PT_GNU_STACK; gnu_stack: emit PT_GNU_STACK at all.
            relcount: emit DT_RELACOUNT/DT_RELCOUNT for leading RELATIVE entries.
            sysv_buckets / gnu_buckets / gnu_bloom_words: override table sizes (power of two
                for the bloom filter), e.g. 1 bucket to force long chains.
        """
        if elf_class not in (32, 64):
            raise ValueError("elf_class must be 32 or 64")
        self.soname = soname
        self.needed = list(needed)
        self.machine = machine
        self.elf_class = elf_class
        self.runpath = runpath
        self.rpath = rpath
        self.symbolic = symbolic
        self.bind_now = bind_now
        self.textrel = textrel
        self.relro = relro
        self.sysv_hash = sysv_hash
        self.gnu_hash = gnu_hash
        self.symtab = symtab
        self.section_headers = section_headers
        self.rela = elf_class == 64 if rela is None else rela
        self.base = base
        self.page_size = page_size
        self.flags = flags
        self.flags_1 = flags_1
        self.osabi = osabi
        self.e_type = e_type
        self.entry = entry
        self.exec_stack = exec_stack
        self.gnu_stack = gnu_stack
        self.relcount = relcount
        self.sysv_buckets = sysv_buckets
        self.gnu_buckets = gnu_buckets
        self.gnu_bloom_words = gnu_bloom_words
        self.word = elf_class // 8
        self.text = bytearray()
        self.data = bytearray()
        self.got = bytearray()
        self.bss_size = 0
        self.data_align = self.word
        self.tls_init = b""
        self.tls_bss = 0
        self.tls_align = 0
        self.symbols: list[SymbolDesc] = []
        self.relocs: list[RelocDesc] = []
        self.relr: list[RelrDesc] = []
        self.fixups: list[Fixup] = []
        self.init_array: list[str] = []
        self.fini_array: list[str] = []
        self.init: str | None = None
        self.fini: str | None = None
        self.version_defs: list[tuple[str, str | None, int]] = []
        self.version_needs: dict[str, list[tuple[str, int]]] = {}
        self.plt_symbols: list[tuple[int, str]] = []  # (reloc index, symbol) with a stub
        self.gotplt_slots = 0
        self.extra_dynamic: list[tuple[int, int]] = []
        self.extra_phdrs: list[dict[str, int]] = []

    # --- content -------------------------------------------------------------------------
    def add_text(self, code: bytes, *, align: int = 16, fixups: Sequence[Fixup] = ()) -> int:
        """Append machine code to ``.text`` and return its offset there.

        ``fixups`` positions are relative to ``code``.
        """
        self.text += b"\xcc" * (-len(self.text) % align)  # int3 padding
        off = len(self.text)
        self.text += code
        self._add_fixups(fixups, ".text", off)
        return off

    def add_data(
        self, content: int | bytes, *, align: int = 8, fixups: Sequence[Fixup] = ()
    ) -> int:
        """Append ``content`` (bytes, or that many zero bytes) to ``.data``; return the offset."""
        self.data_align = max(self.data_align, align)
        self.data += b"\0" * (-len(self.data) % align)
        off = len(self.data)
        self.data += bytes(content)
        self._add_fixups(fixups, ".data", off)
        return off

    def add_got(self, content: int | bytes | None = None) -> int:
        """Append a ``.got`` slot (one word of zeroes by default); return its offset."""
        content = self.word if content is None else content
        self.got += b"\0" * (-len(self.got) % self.word)
        off = len(self.got)
        self.got += bytes(content)
        return off

    def add_bss(self, size: int, *, align: int = 8) -> int:
        """Reserve zero-initialised ``.bss`` space; return its offset."""
        self.data_align = max(self.data_align, align)
        self.bss_size += -self.bss_size % align
        off = self.bss_size
        self.bss_size += size
        return off

    def set_tls(self, init: bytes = b"", bss_size: int = 0, *, align: int = 16) -> None:
        """Define the TLS image (PT_TLS): ``init`` in ``.tdata`` then ``bss_size`` zeroes."""
        self.tls_init = bytes(init)
        self.tls_bss = bss_size
        self.tls_align = align

    def _add_fixups(self, fixups: Sequence[Fixup], section: str, base: int) -> None:
        for fx in fixups:
            self.fixups.append(Fixup(fx.pos + base, fx.ref, fx.kind, fx.addend, section))

    # --- symbols -------------------------------------------------------------------------
    def add_symbol(self, sym: SymbolDesc) -> SymbolDesc:
        """Add a symbol as described."""
        self.symbols.append(sym)
        return sym

    def add_function(self, name: str, code: bytes, **kw: object) -> SymbolDesc:
        """Append ``code`` to ``.text`` and define a function symbol at it.

        Keyword arguments ``fixups`` and ``align`` go to :meth:`add_text`, the rest to
        :class:`SymbolDesc` (``size`` defaults to ``len(code)``).
        """
        fixups = kw.pop("fixups", ())
        align = kw.pop("align", 16)
        off = self.add_text(code, align=align, fixups=fixups)  # type: ignore[arg-type]
        kw.setdefault("size", len(code))
        return self.add_symbol(SymbolDesc(name, off, section="text", **kw))  # type: ignore[arg-type]

    def add_object(self, name: str, content: int | bytes, **kw: object) -> SymbolDesc:
        """Append ``content`` to ``.data`` and define an object symbol over it."""
        align = kw.pop("align", 8)
        off = self.add_data(content, align=align)  # type: ignore[arg-type]
        size = content if isinstance(content, int) else len(content)
        kw.setdefault("size", size)
        kw.setdefault("type", "object")
        return self.add_symbol(SymbolDesc(name, off, section="data", **kw))  # type: ignore[arg-type]

    def add_tls_symbol(self, name: str, offset: int, size: int, **kw: object) -> SymbolDesc:
        """Define a TLS symbol at ``offset`` in the TLS block (see :meth:`set_tls`)."""
        kw.setdefault("type", "tls")
        return self.add_symbol(SymbolDesc(name, offset, size, section="tls", **kw))  # type: ignore[arg-type]

    def add_undefined(self, name: str, **kw: object) -> SymbolDesc:
        """Declare an undefined symbol (``type`` defaults to ``notype``)."""
        kw.setdefault("type", "notype")
        return self.add_symbol(SymbolDesc(name, defined=False, section=None, **kw))  # type: ignore[arg-type]

    def add_version(self, name: str, parent: str | None = None, *, weak: bool = False) -> None:
        """Declare a Verdef explicitly (versions used by symbols are declared implicitly)."""
        self.version_defs.append((name, parent, d.VER_FLG_WEAK if weak else 0))

    def add_version_need(self, lib: str, version: str, *, weak: bool = False) -> None:
        """Declare a Vernaux ``version`` of DT_NEEDED ``lib`` even if no symbol uses it."""
        self.version_needs.setdefault(lib, []).append((version, d.VER_FLG_WEAK if weak else 0))

    def require_glibc_relr_marker(self) -> None:
        """Add NEEDED libc.so.6 and its ``GLIBC_ABI_DT_RELR`` version, which glibc >= 2.36
        demands from every object that uses DT_RELR."""
        if "libc.so.6" not in self.needed:
            self.needed.append("libc.so.6")
        self.add_version_need("libc.so.6", "GLIBC_ABI_DT_RELR")

    # --- relocations ---------------------------------------------------------------------
    def reloc_type(self, r_type: int | str) -> int:
        """Resolve a relocation name of this writer's architecture to its number."""
        if isinstance(r_type, int):
            return r_type
        name = r_type.upper().removeprefix("R_X86_64_").removeprefix("R_386_")
        generic = d.GENERIC_RELOCS.get(self.machine, {})
        if name in generic:
            return int(generic[name])
        enum = d.ARCH_RELOCS.get(self.machine)
        if enum is None:
            raise ValueError(f"no relocation names for machine {self.machine}")
        return int(enum[name if not name[0].isdigit() else "R" + name])

    def add_reloc(
        self, reloc: RelocDesc | int | str, symbol: str | int | None = None, **kw: object
    ) -> int:
        """Add a relocation; return its index into ``GeneratedElf.reloc_addrs``.

        Accepts a :class:`RelocDesc` or its fields (``add_reloc("GLOB_DAT", "foo")``).
        Slots for ``offset=None`` are allocated immediately.
        """
        desc = reloc if isinstance(reloc, RelocDesc) else RelocDesc(reloc, symbol, **kw)  # type: ignore[arg-type]
        desc = dataclasses.replace(desc)  # the writer owns (and completes) its copy
        r_type = self.reloc_type(desc.r_type)
        if desc.offset is None:
            size = desc.slot_size or (
                16 if r_type == d.R_X86_64.TLSDESC and self.machine == d.EM_X86_64 else self.word
            )
            if desc.table == "plt" and desc.section in (None, ".got.plt", "got.plt"):
                desc.section = ".got.plt"
                desc.offset = (3 + self.gotplt_slots) * self.word
                self.gotplt_slots += -(-size // self.word)
                if isinstance(desc.symbol, str) and (self.machine, self.word) == (d.EM_X86_64, 8):
                    self.plt_symbols.append((len(self.relocs), desc.symbol))
            elif desc.section in (None, ".data", "data"):
                desc.section, desc.offset = ".data", self.add_data(size, align=self.word)
            elif desc.section in (".got", "got"):
                desc.section, desc.offset = ".got", self.add_got(size)
            else:
                raise ValueError(f"cannot allocate a slot in {desc.section!r}")
        desc.section = _norm_section(desc.section or ".data")
        self.relocs.append(desc)
        return len(self.relocs) - 1

    def add_relr(
        self,
        *,
        offset: int | None = None,
        section: str = ".data",
        rel_to: str | None = None,
        addend: int = 0,
    ) -> int:
        """Add a RELR relative pointer (a fresh ``.data`` word by default); return its index
        into ``GeneratedElf.relr_addrs``."""
        section = _norm_section(section)
        if offset is None:
            if section == ".data":
                offset = self.add_data(self.word, align=self.word)
            elif section == ".got":
                offset = self.add_got()
            else:
                raise ValueError(f"cannot allocate a RELR slot in {section!r}")
        self.relr.append(RelrDesc(section, offset, rel_to, addend))
        return len(self.relr) - 1

    def add_init_array(self, ref: str) -> None:
        """Append an ``.init_array`` entry pointing at ``ref`` (RELATIVE-relocated)."""
        self.init_array.append(ref)

    def add_fini_array(self, ref: str) -> None:
        """Append a ``.fini_array`` entry pointing at ``ref`` (RELATIVE-relocated)."""
        self.fini_array.append(ref)

    def add_dynamic(self, tag: int, value: int) -> None:
        """Append a raw dynamic entry just before DT_NULL."""
        self.extra_dynamic.append((tag, value))

    def add_phdr(self, **fields: int) -> None:
        """Append a raw program header (``p_type``, ``p_flags``, ``p_offset`` ...)."""
        self.extra_phdrs.append(fields)

    # --- x86_64 code helpers -------------------------------------------------------------
    def _need_x86_64(self) -> None:
        if self.machine != d.EM_X86_64 or self.elf_class != 64:
            raise NotImplementedError("code helpers generate x86_64 code only")

    def plt_stub(self, symbol: str) -> str:
        """Ensure a lazy JUMP_SLOT + PLT stub for ``symbol``; return the ``plt:`` reference."""
        self._need_x86_64()
        if all(sym != symbol for _, sym in self.plt_symbols):
            self.add_reloc("JUMP_SLOT", symbol, table="plt")
        return f"plt:{symbol}"

    def add_plt_caller(self, name: str, target: str, **kw: object) -> SymbolDesc:
        """Define function ``name`` that tail-calls ``target`` through its PLT stub."""
        ref = self.plt_stub(target)
        return self.add_function(name, b"\xe9" + bytes(4), fixups=[Fixup(1, ref)], **kw)

    def add_tls_getter(self, name: str, tls_symbol: str, **kw: object) -> SymbolDesc:
        """Define ``name()`` returning ``&tls_symbol`` of the calling thread.

        Emits a DTPMOD/DTPOFF pair in ``.got`` and ``lea rdi,[pair]; jmp __tls_get_addr@plt``.
        """
        ref = self.plt_stub("__tls_get_addr")
        pair = self.add_got(16)
        self.add_reloc("DTPMOD64", tls_symbol, section=".got", offset=pair)
        self.add_reloc("DTPOFF64", tls_symbol, section=".got", offset=pair + 8)
        code = b"\x48\x8d\x3d" + bytes(4) + b"\xe9" + bytes(4)
        fixups = [Fixup(3, f".got+{pair}"), Fixup(8, ref)]
        return self.add_function(name, code, fixups=fixups, **kw)

    def add_ifunc(self, name: str, impl: str, **kw: object) -> SymbolDesc:
        """Define IFUNC ``name`` whose generated resolver returns the address of ``impl``."""
        self._need_x86_64()
        code = b"\x48\x8d\x05" + bytes(4) + b"\xc3"  # lea rax, [rip + impl]; ret
        kw.setdefault("type", "ifunc")
        return self.add_function(name, code, fixups=[Fixup(3, impl)], **kw)

    # --- output --------------------------------------------------------------------------
    def build(self) -> GeneratedElf:
        """Lay out and serialise the image (the writer can be built again after changes)."""
        from .elfgen_layout import build_image

        return build_image(self)


def _norm_section(name: str) -> str:
    if name in ("abs", "tls") or name.startswith("."):
        return name
    return "." + name
