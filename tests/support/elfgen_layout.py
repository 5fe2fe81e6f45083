"""Layout and serialisation engine behind :meth:`tests.support.elfgen.DylibWriter.build`.

Test-only support code. Turns the writer's description into bytes in four steps: build the
name-only tables (:mod:`tests.support.elfgen_tables`), choose the sections, place them
(read-only headers and tables, then ``.plt``/``.text``, then the writable segment, each
segment starting on a page so that ``p_offset == p_vaddr - base``), and finally fill in
everything that depends on addresses (symbol values, relocations, PLT code, fixups, the
dynamic section) and serialise the headers.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import elfgen_defs as d
from .elfgen_headers import RELATIVE, align_up, dynamic_plan, program_headers
from .elfgen_tables import NameTables, StrTab, bind_of

if TYPE_CHECKING:
    from .elfgen import DylibWriter, GeneratedElf, RelocDesc, SymbolDesc

__all__ = ["build_image"]

_REF = re.compile(r"(?P<base>.+?)(?P<off>[+-](?:0[xX][0-9a-fA-F]+|\d+))?")


def build_image(w: DylibWriter) -> GeneratedElf:
    """Build the image described by ``w``."""
    return Builder(w).run()


@dataclass
class _Sec:
    name: str
    sh_type: int
    flags: int
    align: int
    entsize: int = 0
    size: int = 0
    segment: str = "r"  # r, x, w or n (not allocated)
    link: str | None = None
    info: int | str = 0
    vaddr: int = 0
    offset: int = 0
    buf: bytearray = field(default_factory=bytearray)

    @property
    def nobits(self) -> bool:
        return self.sh_type == d.SHT_NOBITS


@dataclass
class _Rel:
    section: str
    offset: int
    r_type: int
    sym: int
    addend: int
    rel_to: str | None
    user: int | None = None


class Builder:
    """Lays out and serialises one image; see the module docstring for the steps."""

    def __init__(self, w: DylibWriter) -> None:
        self.w = w
        self.cls = w.elf_class
        self.word = w.word
        self.sp = {k: d.spec(k, self.cls) for k in ("Ehdr", "Phdr", "Shdr", "Sym", "Dyn")}
        self.rel_spec = d.spec("Rela" if w.rela else "Rel", self.cls)
        self.wfmt = "<Q" if self.word == 8 else "<I"
        self.secs: dict[str, _Sec] = {}

    def run(self) -> GeneratedElf:
        self.t = NameTables(self.w)
        self._relocs()
        self._sections()
        relr_size = 0
        for _ in range(8):
            self._place(relr_size)
            words = self._relr_words()
            if len(words) * self.word == relr_size:
                break
            relr_size = len(words) * self.word
        else:  # pragma: no cover - the encoding size converges after one round
            raise RuntimeError("RELR layout did not converge")
        self._fill(words)
        return self._serialise()

    # --- relocation tables and section list ----------------------------------------------
    def _relocs(self) -> None:
        w = self.w
        self.dyn_rels: list[_Rel] = []
        self.plt_rels: list[_Rel] = []
        for arr, refs in ((".init_array", w.init_array), (".fini_array", w.fini_array)):
            for i, ref in enumerate(refs):
                self.dyn_rels.append(_Rel(arr, i * self.word, RELATIVE, 0, 0, ref))
        self.user_index: list[tuple[str, int]] = []
        for n, r in enumerate(w.relocs):
            table = self.plt_rels if r.table == "plt" else self.dyn_rels
            self.user_index.append((r.table, len(table)))
            r_type, sym = w.reloc_type(r.r_type), self._sym_index(r)
            table.append(
                _Rel(r.section or ".data", r.offset or 0, r_type, sym, r.addend, r.rel_to, n)
            )

    def _sym_index(self, r: RelocDesc) -> int:
        if r.symbol is None or isinstance(r.symbol, int):
            return r.symbol or 0
        return self.t.dynsyms.index(self.t.find(r.symbol))

    def _add(
        self,
        name: str,
        sh_type: int,
        flags: int,
        align: int,
        content: bytes | bytearray | None = None,
        **kw: int | str,
    ) -> None:
        sec = _Sec(name, sh_type, flags, align, **kw)  # type: ignore[arg-type]
        if content is not None:
            sec.buf, sec.size = bytearray(content), len(content)
        self.secs[name] = sec

    def _sections(self) -> None:
        w, t, word, add = self.w, self.t, self.word, self._add
        a, wa, ax = d.SHF_ALLOC, d.SHF_ALLOC | d.SHF_WRITE, d.SHF_ALLOC | d.SHF_EXECINSTR
        sym, rel = self.sp["Sym"].size, self.rel_spec.size
        rname, rtype = ("rela", d.SHT_RELA) if w.rela else ("rel", d.SHT_REL)
        if w.sysv_hash:
            add(".hash", d.SHT_HASH, a, word, t.sysv_hash, entsize=4, link=".dynsym")
        if w.gnu_hash:
            ent = 0 if self.cls == 64 else 4
            add(".gnu.hash", d.SHT_GNU_HASH, a, word, t.gnu_hash, entsize=ent, link=".dynsym")
        size = len(t.dynsyms) * sym
        add(
            ".dynsym",
            d.SHT_DYNSYM,
            a,
            word,
            size=size,
            entsize=sym,
            link=".dynstr",
            info=t.first_global,
        )
        add(".dynstr", d.SHT_STRTAB, a, 1)  # content is final after the dynamic plan
        if t.versym:
            add(".gnu.version", d.SHT_GNU_VERSYM, a, 2, t.versym_bytes, entsize=2, link=".dynsym")
        if t.verdefs:
            add(
                ".gnu.version_d",
                d.SHT_GNU_VERDEF,
                a,
                word,
                t.verdef_bytes,
                link=".dynstr",
                info=len(t.verdefs),
            )
        if t.verneeds:
            add(
                ".gnu.version_r",
                d.SHT_GNU_VERNEED,
                a,
                word,
                t.verneed_bytes,
                link=".dynstr",
                info=len(t.verneeds),
            )
        if self.dyn_rels:
            add(
                f".{rname}.dyn",
                rtype,
                a,
                word,
                size=len(self.dyn_rels) * rel,
                entsize=rel,
                link=".dynsym",
            )
        if self.plt_rels:
            add(
                f".{rname}.plt",
                rtype,
                a | d.SHF_INFO_LINK,
                word,
                size=len(self.plt_rels) * rel,
                entsize=rel,
                link=".dynsym",
                info=".got.plt",
            )
        if w.relr:
            add(".relr.dyn", d.SHT_RELR, a, word, entsize=word)
        if w.plt_symbols:
            plt = bytes(16 * (1 + len(w.plt_symbols)))
            add(".plt", d.SHT_PROGBITS, ax, 16, plt, entsize=16, segment="x")
        if w.text:
            add(".text", d.SHT_PROGBITS, ax, 16, w.text, segment="x")
        if w.tls_init:
            add(".tdata", d.SHT_PROGBITS, wa | d.SHF_TLS, w.tls_align, w.tls_init, segment="w")
        if w.tls_bss:
            add(".tbss", d.SHT_NOBITS, wa | d.SHF_TLS, w.tls_align, size=w.tls_bss, segment="w")
        for arr, sh_type, refs in (
            (".init_array", d.SHT_INIT_ARRAY, w.init_array),
            (".fini_array", d.SHT_FINI_ARRAY, w.fini_array),
        ):
            if refs:
                add(arr, sh_type, wa, word, bytes(word * len(refs)), entsize=word, segment="w")
        dyn = self.sp["Dyn"].size
        add(".dynamic", d.SHT_DYNAMIC, wa, word, entsize=dyn, segment="w", link=".dynstr")
        if w.got:
            add(".got", d.SHT_PROGBITS, wa, word, w.got, entsize=word, segment="w")
        if self.plt_rels:
            gotplt = bytes(word * (3 + w.gotplt_slots))
            add(".got.plt", d.SHT_PROGBITS, wa, word, gotplt, entsize=word, segment="w")
        if w.data:
            add(".data", d.SHT_PROGBITS, wa, w.data_align, w.data, segment="w")
        if w.bss_size:
            add(".bss", d.SHT_NOBITS, wa, w.data_align, size=w.bss_size, segment="w")
        if t.symtab:
            add(
                ".symtab",
                d.SHT_SYMTAB,
                0,
                word,
                size=len(t.symtab) * sym,
                entsize=sym,
                segment="n",
                link=".strtab",
                info=t.symtab_first_global,
            )
            add(".strtab", d.SHT_STRTAB, 0, 1, t.strtab.buf, segment="n")
        if w.section_headers:
            add(".shstrtab", d.SHT_STRTAB, 0, 1, segment="n")
        self.rel_dyn = self.secs.get(f".{rname}.dyn")
        self.rel_plt = self.secs.get(f".{rname}.plt")
        self.shidx = {name: i for i, name in enumerate(self.secs, start=1)}
        self.shstrtab = StrTab()
        for name in self.secs:
            self.shstrtab.add(name)
        if w.section_headers:
            self.secs[".shstrtab"].buf = self.shstrtab.buf
            self.secs[".shstrtab"].size = len(self.shstrtab.buf)
        self.dyn_plan = dynamic_plan(self)
        self.secs[".dynamic"].size = len(self.dyn_plan) * dyn
        self.secs[".dynstr"].buf = t.dynstr.buf  # the same object: any later growth would show
        self.secs[".dynstr"].size = len(t.dynstr.buf)
        self.tls = w.tls_align > 0
        has_x = any(s.segment == "x" for s in self.secs.values())
        # LOAD r, LOAD w and DYNAMIC, plus the optional ones
        self.nphdr = 3 + has_x + self.tls + w.gnu_stack + w.relro + len(w.extra_phdrs)

    # --- step 3: placement ---------------------------------------------------------------
    def _place(self, relr_size: int) -> None:
        w, page = self.w, self.w.page_size
        if ".relr.dyn" in self.secs:
            self.secs[".relr.dyn"].size = relr_size
        off = self.sp["Ehdr"].size + self.nphdr * self.sp["Phdr"].size
        self.seg: dict[str, tuple[int, int, int]] = {}  # r/x/w -> (offset, file end, mem end)
        relro_end: int | None = None
        for segment in ("r", "x", "w"):
            group = [s for s in self.secs.values() if s.segment == segment]
            if not group:
                continue
            if segment != "r":
                off = align_up(off, page)
            start = mem_end = off
            for sec in group:
                if sec.name in (".got.plt", ".data", ".bss") and relro_end is None:
                    relro_end = off
                    if w.relro:  # pad so that the RELRO part ends on a page boundary
                        off = mem_end = align_up(off, page)
                pos = align_up(off, sec.align)
                if sec.nobits:  # .tbss takes no room in the segment, .bss comes last
                    sec.offset, sec.vaddr = off, w.base + pos
                    if sec.name != ".tbss":
                        mem_end = pos + sec.size
                    continue
                off = pos
                sec.offset, sec.vaddr = off, w.base + off
                off += sec.size
                mem_end = max(mem_end, off)
            if segment == "w" and relro_end is None:
                relro_end = off
                if w.relro:
                    mem_end = max(mem_end, align_up(off, page))
            self.seg[segment] = (start, off, mem_end)
        self.relro_end = relro_end or 0
        for sec in self.secs.values():
            if sec.segment == "n":
                sec.offset, sec.vaddr = off, 0
                off += sec.size
        self.shoff = align_up(off, self.word) if w.section_headers else 0
        self.file_size = self.shoff + len(self.secs) * self.sp["Shdr"].size + self.sp["Shdr"].size
        if not w.section_headers:
            self.file_size = off

    def _relr_words(self) -> list[int]:
        return d.encode_relr(
            (self._place_addr(r.section, r.offset) for r in self.w.relr), self.word
        )

    def _place_addr(self, section: str, offset: int) -> int:
        if section == "abs":
            return offset
        if section == "tls":
            raise ValueError("a relocation cannot be placed in the TLS block")
        if section not in self.secs:
            raise ValueError(f"section {section} does not exist (it is empty)")
        return self.secs[section].vaddr + offset

    # --- step 4: contents ----------------------------------------------------------------
    def _ref(self, ref: str) -> int:
        m = _REF.fullmatch(ref)
        if m is None:
            raise ValueError(f"bad reference {ref!r}")
        base, extra = m["base"], int(m["off"], 0) if m["off"] else 0
        if base.startswith("."):
            value = self._place_addr(base, 0)
        elif base.startswith("plt:"):
            value = self.plt_addrs[base[4:]]
        elif base.startswith("reloc:"):
            r = self.w.relocs[int(base[6:])]
            value = self._place_addr(r.section or ".data", r.offset or 0)
        elif base.startswith("relr:"):
            rr = self.w.relr[int(base[5:])]
            value = self._place_addr(rr.section, rr.offset)
        else:
            value = self._sym_value(self.t.find(base, defined=True))
        return value + extra

    def _sym_value(self, s: SymbolDesc) -> int:
        if not s.defined or s.section in (None, "tls"):
            return s.value
        return self._place_addr(_norm(s.section), s.value)

    def _sym_shndx(self, s: SymbolDesc) -> int:
        if s.shndx is not None:
            return s.shndx
        if not s.defined:
            return d.SHN_UNDEF
        if s.section is None:
            return d.SHN_ABS
        if s.section == "tls":
            return self.shidx.get(".tdata", self.shidx.get(".tbss", d.SHN_ABS))
        return self.shidx[_norm(s.section)]

    def _put(self, section: str, offset: int, value: int, size: int | None = None) -> None:
        if section == "abs":  # find the section holding that address, if any
            for sec in self.secs.values():
                if sec.segment != "n" and not sec.nobits and 0 <= offset - sec.vaddr < sec.size:
                    section, offset = sec.name, offset - sec.vaddr
                    break
            else:
                return
        size = size or self.word
        buf = self.secs[section].buf
        struct.pack_into("<Q" if size == 8 else "<I", buf, offset, value & ((1 << 8 * size) - 1))

    def _fill(self, relr_words: list[int]) -> None:
        w = self.w
        self.plt_addrs: dict[str, int] = {}
        if ".plt" in self.secs:
            plt0 = self.secs[".plt"].vaddr
            got = self.secs[".got.plt"].vaddr
            code = bytearray(
                struct.pack(
                    "<BBiBBi", 0xFF, 0x35, got + 8 - (plt0 + 6), 0xFF, 0x25, got + 16 - (plt0 + 12)
                )
                + b"\x0f\x1f\x40\x00"
            )
            for n, (ridx, sym) in enumerate(w.plt_symbols, start=1):
                stub = plt0 + 16 * n
                slot = got + (w.relocs[ridx].offset or 0)
                index = self.user_index[ridx][1]
                code += struct.pack(
                    "<BBiBiBi", 0xFF, 0x25, slot - (stub + 6), 0x68, index, 0xE9, plt0 - (stub + 16)
                )
                self.plt_addrs.setdefault(sym, stub)
                self._put(".got.plt", slot - got, stub + 6)
            self.secs[".plt"].buf = code
        if ".got.plt" in self.secs:
            self._put(".got.plt", 0, self.secs[".dynamic"].vaddr)
        for fx in w.fixups:
            pos = self._place_addr(fx.section, fx.pos)
            value = self._ref(fx.ref) + fx.addend
            value -= {"rel32": pos + 4, "pc32": pos}.get(fx.kind, 0)
            width = 8 if fx.kind == "abs64" else 4
            if fx.kind in ("rel32", "pc32") and not -(1 << 31) <= value < 1 << 31:
                raise ValueError(f"fixup to {fx.ref} does not fit in 32 bits")
            self._put(fx.section, fx.pos, value, width)
        self.reloc_addrs: list[int] = [0] * len(w.relocs)
        stubbed = {ridx for ridx, _ in w.plt_symbols}
        for table, sec in ((self.dyn_rels, self.rel_dyn), (self.plt_rels, self.rel_plt)):
            for r in table:
                assert sec is not None
                place = self._place_addr(r.section, r.offset)
                addend = r.addend + (self._ref(r.rel_to) if r.rel_to else 0)
                info = d.r_info(self.cls, r.sym, r.r_type)
                fields = {"r_offset": place, "r_info": info}
                if w.rela:
                    fields["r_addend"] = addend
                elif r.user not in stubbed:  # REL: the addend lives in the place
                    ur = w.relocs[r.user] if r.user is not None else None
                    self._put(r.section, r.offset, addend, ur.slot_size if ur else None)
                sec.buf += self.rel_spec.pack(**fields)
                if r.user is not None:
                    self.reloc_addrs[r.user] = place
        for rr in w.relr:
            self._put(rr.section, rr.offset, (self._ref(rr.rel_to) if rr.rel_to else 0) + rr.addend)
        if ".relr.dyn" in self.secs:
            self.secs[".relr.dyn"].buf = bytearray(
                b"".join(struct.pack(self.wfmt, x) for x in relr_words)
            )
        self.relr_addrs = [self._place_addr(rr.section, rr.offset) for rr in w.relr]
        for sym_sec, sym_list, strtab in (
            (".dynsym", self.t.dynsyms, self.t.dynstr),
            (".symtab", self.t.symtab, self.t.strtab),
        ):
            if sym_sec not in self.secs:
                continue
            buf = self.secs[sym_sec].buf = bytearray(self.sp["Sym"].size)
            for s in sym_list[1:]:
                assert s is not None
                typ = d.TYPES[s.type] if isinstance(s.type, str) else s.type
                vis = s.visibility
                vis = d.VISIBILITIES[vis] if isinstance(vis, str) else vis
                buf += self.sp["Sym"].pack(
                    st_name=strtab.add(s.name),
                    st_info=(bind_of(s) << 4) | typ,
                    st_other=vis,
                    st_shndx=self._sym_shndx(s),
                    st_value=self._sym_value(s),
                    st_size=s.size,
                )
        dyn = self.secs[".dynamic"].buf = bytearray()
        for tag, fn in self.dyn_plan:
            dyn += self.sp["Dyn"].pack(d_tag=tag, d_val=fn())

    # --- step 5: headers -----------------------------------------------------------------
    def _serialise(self) -> GeneratedElf:
        from .elfgen import GeneratedElf

        w = self.w
        out = bytearray(self.file_size)
        phdrs = program_headers(self)
        osabi = w.osabi
        if osabi is None:
            gnu = any(
                s is not None and (s.type == "ifunc" or s.bind == "unique") for s in self.t.dynsyms
            )
            osabi = d.ELFOSABI_GNU if gnu else d.ELFOSABI_SYSV
        ident = d.ELFMAG + bytes([1 if self.cls == 32 else 2, d.ELFDATA2LSB, d.EV_CURRENT, osabi])
        eh = self.sp["Ehdr"]
        shnum = len(self.secs) + 1 if w.section_headers else 0
        out[: eh.size] = eh.pack(
            e_ident=ident,
            e_type=w.e_type,
            e_machine=w.machine,
            e_version=d.EV_CURRENT,
            e_entry=self._ref(w.entry) if w.entry else 0,
            e_phoff=eh.size,
            e_shoff=self.shoff,
            e_ehsize=eh.size,
            e_phentsize=self.sp["Phdr"].size,
            e_phnum=len(phdrs),
            e_shentsize=self.sp["Shdr"].size,
            e_shnum=shnum,
            e_shstrndx=self.shidx.get(".shstrtab", 0),
        )
        for i, ph in enumerate(phdrs):
            pos = eh.size + i * self.sp["Phdr"].size
            out[pos : pos + self.sp["Phdr"].size] = self.sp["Phdr"].pack(**ph)
        layout: dict[str, tuple[int, int, int]] = {}
        sh = self.sp["Shdr"]
        for i, sec in enumerate(self.secs.values(), start=1):
            if not sec.nobits:
                assert len(sec.buf) == sec.size, (sec.name, len(sec.buf), sec.size)
                out[sec.offset : sec.offset + sec.size] = sec.buf
            layout[sec.name] = (sec.vaddr, sec.offset, sec.size)
            if w.section_headers:
                info = self.shidx.get(sec.info, 0) if isinstance(sec.info, str) else sec.info
                pos = self.shoff + i * sh.size
                out[pos : pos + sh.size] = sh.pack(
                    sh_name=self.shstrtab.add(sec.name),
                    sh_type=sec.sh_type,
                    sh_flags=sec.flags,
                    sh_addr=sec.vaddr,
                    sh_offset=sec.offset,
                    sh_size=sec.size,
                    sh_link=self.shidx.get(sec.link, 0) if sec.link else 0,
                    sh_info=info,
                    sh_addralign=sec.align,
                    sh_entsize=sec.entsize,
                )
        symbols, index = self.t.symbol_maps(self._sym_value)
        return GeneratedElf(
            data=bytes(out),
            elf_class=self.cls,
            machine=w.machine,
            layout=layout,
            symbols=symbols,
            symbol_index=index,
            reloc_addrs=self.reloc_addrs,
            reloc_table_index=list(self.user_index),
            relr_addrs=self.relr_addrs,
            plt_addrs=self.plt_addrs,
            phdrs=phdrs,
        )


def _norm(name: str) -> str:
    return name if name.startswith(".") or name in ("abs", "tls") else "." + name
