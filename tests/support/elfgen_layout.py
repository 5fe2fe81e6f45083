"""Layout and serialisation engine behind :meth:`tests.support.elfgen.DylibWriter.build`.

Test-only support code. Turns the writer's description into bytes in four steps: order the
symbols (locals, undefined, then defined grouped by GNU hash bucket), build the name-only
tables (strings, hash tables, versions), place the sections (read-only headers and tables,
then ``.plt``/``.text``, then the writable segment, each segment starting on a page so that
``p_offset == p_vaddr - base``), and finally fill in everything that depends on addresses.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import elfgen_defs as d

if TYPE_CHECKING:
    from .elfgen import DylibWriter, GeneratedElf, RelocDesc, SymbolDesc

__all__ = ["build_image"]

_REF = re.compile(r"(?P<base>.+?)(?P<off>[+-](?:0[xX][0-9a-fA-F]+|\d+))?")


def build_image(w: DylibWriter) -> GeneratedElf:
    """Build the image described by ``w``."""
    return _Builder(w).run()


def _align(value: int, align: int) -> int:
    return value + (-value % align) if align > 1 else value


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


class _StrTab:
    def __init__(self) -> None:
        self.buf = bytearray(b"\0")
        self.index: dict[str, int] = {"": 0}

    def add(self, s: str) -> int:
        if s not in self.index:
            self.index[s] = len(self.buf)
            self.buf += s.encode() + b"\0"
        return self.index[s]


@dataclass
class _Rel:
    section: str
    offset: int
    r_type: int
    sym: int
    addend: int
    rel_to: str | None
    user: int | None = None


class _Builder:
    def __init__(self, w: DylibWriter) -> None:
        self.w = w
        self.cls = w.elf_class
        self.word = w.word
        self.sp = {k: d.spec(k, self.cls) for k in ("Ehdr", "Phdr", "Shdr", "Sym", "Dyn")}
        self.rel_spec = d.spec("Rela" if w.rela else "Rel", self.cls)
        self.wfmt = "<Q" if self.word == 8 else "<I"
        self.secs: dict[str, _Sec] = {}

    # --- step 1: symbols, strings, hashes, versions ----------------------------------------
    def run(self) -> GeneratedElf:
        self._symbols()
        self._versions()
        self._strings()
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

    def _symbols(self) -> None:
        from .elfgen import SymbolDesc

        w = self.w
        syms = list(w.symbols)
        known = {s.name for s in syms} | {s.display_name for s in syms}
        for r in w.relocs:
            if isinstance(r.symbol, str) and r.symbol not in known:
                syms.append(SymbolDesc(r.symbol, defined=False, section=None, type="notype"))
                known.add(r.symbol)
        dyn = [s for s in syms if s.dynamic]
        loc = [s for s in dyn if self._bind(s) == d.STB_LOCAL]
        und = [s for s in dyn if self._bind(s) != d.STB_LOCAL and not s.defined]
        defs = [s for s in dyn if self._bind(s) != d.STB_LOCAL and s.defined]
        self.gnu_nb = w.gnu_buckets or max(1, (len(defs) + 1) // 2)
        if w.gnu_hash:
            defs.sort(key=lambda s: d.gnu_hash(s.name) % self.gnu_nb)
        self.dynsyms: list[SymbolDesc | None] = [None, *loc, *und, *defs]
        self.first_global = 1 + len(loc)
        self.symoffset = 1 + len(loc) + len(und)
        self.symtab: list[SymbolDesc | None] = []
        if w.symtab and w.section_headers:
            others = [s for s in syms if not s.dynamic]
            sloc = loc + [s for s in others if self._bind(s) == d.STB_LOCAL]
            sglob = und + defs + [s for s in others if self._bind(s) != d.STB_LOCAL]
            self.symtab = [None, *sloc, *sglob]
            self.symtab_first_global = 1 + len(sloc)

    @staticmethod
    def _bind(s: SymbolDesc) -> int:
        return d.BINDS[s.bind] if isinstance(s.bind, str) else s.bind

    def _find_sym(self, name: str, *, defined: bool = False) -> SymbolDesc:
        cands = [s for s in self.dynsyms[1:] + self.symtab[1:] if s is not None]
        for match in (lambda s: s.display_name == name, lambda s: s.name == name):
            hits = [s for s in cands if match(s) and (s.defined or not defined)]
            hits.sort(key=lambda s: (not s.defined, s.version_hidden))
            if hits:
                return hits[0]
        raise KeyError(f"unknown symbol {name!r}")

    def _versions(self) -> None:
        w = self.w
        dyn = [s for s in self.dynsyms if s is not None]
        self.verdefs: list[tuple[str, str | None, int, int]] = []  # name, parent, flags, ndx
        self.verneeds: dict[str, list[tuple[str, int, int]]] = {}  # lib -> (ver, flags, ndx)
        self.versym: list[int] = []
        if not (any(s.version for s in dyn) or w.version_defs or w.version_needs):
            return
        defs = list(w.version_defs)
        for s in dyn:
            if s.defined and s.version and s.version not in [v[0] for v in defs]:
                defs.append((s.version, None, 0))
        index: dict[tuple[str | None, str], int] = {}
        if defs:
            self.verdefs.append((w.soname or "generated.so", None, d.VER_FLG_BASE, 1))
            for ndx, (name, parent, flags) in enumerate(defs, start=2):
                self.verdefs.append((name, parent, flags, ndx))
                index[(None, name)] = ndx
        nxt = 2 + len(defs)
        needs = {lib: list(vs) for lib, vs in w.version_needs.items()}
        for s in dyn:
            if not s.defined and s.version:
                lib = s.version_lib or (w.needed[0] if len(w.needed) == 1 else None)
                if lib is None:
                    raise ValueError(f"{s.name}@{s.version}: set version_lib")
                if s.version not in [v for v, _ in needs.setdefault(lib, [])]:
                    needs[lib].append((s.version, 0))
        for lib, vers in needs.items():
            self.verneeds[lib] = []
            for ver, flags in vers:
                self.verneeds[lib].append((ver, flags, nxt))
                index[(lib, ver)] = nxt
                nxt += 1
        for s in self.dynsyms:
            if s is None or self._bind(s) == d.STB_LOCAL:
                self.versym.append(d.VER_NDX_LOCAL)
            elif not s.version:
                self.versym.append(d.VER_NDX_GLOBAL)
            elif s.defined:
                hidden = d.VERSYM_HIDDEN if s.version_hidden else 0
                self.versym.append(index[(None, s.version)] | hidden)
            else:
                lib = s.version_lib or w.needed[0]
                self.versym.append(index[(lib, s.version)])

    def _strings(self) -> None:
        w = self.w
        st = self.dynstr = _StrTab()
        for lib in w.needed:
            st.add(lib)
        for s in (w.soname, w.rpath, w.runpath):
            if s is not None:
                st.add(s)
        for sym in self.dynsyms[1:]:
            assert sym is not None
            st.add(sym.name)
        for name, parent, _, _ in self.verdefs:
            st.add(name)
            if parent:
                st.add(parent)
        for lib, vers in self.verneeds.items():
            st.add(lib)
            for ver, _, _ in vers:
                st.add(ver)
        self.strtab = _StrTab()
        for sym in self.symtab[1:]:
            assert sym is not None
            self.strtab.add(sym.name)

    def _hash_tables(self) -> tuple[bytes, bytes]:
        names = [s.name if s else "" for s in self.dynsyms]
        n = len(names)
        nb = self.w.sysv_buckets or next(b for b in (1, 3, 17, 37, 67, 97, 131, 197, 263,
                                                     521, 1031, 2053, 4099, 8209, 16411,
                                                     1 << 30) if b * 2 >= n - 1)  # fmt: skip
        buckets, chains = [0] * nb, [0] * n
        for i in range(1, n):
            b = d.sysv_hash(names[i]) % nb
            chains[i], buckets[b] = buckets[b], i
        sysv = struct.pack(f"<{2 + nb + n}I", nb, n, *buckets, *chains)
        bits = 8 * self.word
        hashed = [d.gnu_hash(nm) for nm in names[self.symoffset :]]
        want = max(1, -(-len(hashed) * 2 // bits))  # about two filter bits per symbol
        nbloom = self.w.gnu_bloom_words or 1 << (want - 1).bit_length()
        shift = 6 if self.word == 8 else 5
        bloom = [0] * nbloom
        gb, chain = [0] * self.gnu_nb, []
        for i, h in enumerate(hashed):
            bloom[(h // bits) % nbloom] |= (1 << (h % bits)) | (1 << ((h >> shift) % bits))
            b = h % self.gnu_nb
            if not gb[b]:
                gb[b] = self.symoffset + i
            last = i + 1 == len(hashed) or hashed[i + 1] % self.gnu_nb != b
            chain.append((h & ~1) | int(last))
        wc = "Q" if self.word == 8 else "I"
        gnu = struct.pack(f"<4I{nbloom}{wc}{self.gnu_nb + len(chain)}I", self.gnu_nb,
                          self.symoffset, nbloom, shift, *bloom, *gb, *chain)  # fmt: skip
        return sysv, gnu

    def _version_tables(self) -> tuple[bytes, bytes, bytes]:
        versym = struct.pack(f"<{len(self.versym)}H", *self.versym) if self.versym else b""
        vd, vda = d.spec("Verdef", self.cls), d.spec("Verdaux", self.cls)
        verdef = bytearray()
        for i, (name, parent, flags, ndx) in enumerate(self.verdefs):
            auxes = [name] + ([parent] if parent else [])
            nxt = 0 if i + 1 == len(self.verdefs) else vd.size + vda.size * len(auxes)
            verdef += vd.pack(vd_version=1, vd_flags=flags, vd_ndx=ndx, vd_cnt=len(auxes),
                              vd_hash=d.sysv_hash(name), vd_aux=vd.size, vd_next=nxt)  # fmt: skip
            for j, aux in enumerate(auxes):
                last = j + 1 == len(auxes)
                verdef += vda.pack(vda_name=self.dynstr.add(aux), vda_next=0 if last else vda.size)
        vn, vna = d.spec("Verneed", self.cls), d.spec("Vernaux", self.cls)
        verneed = bytearray()
        libs = list(self.verneeds.items())
        for i, (lib, vers) in enumerate(libs):
            nxt = 0 if i + 1 == len(libs) else vn.size + vna.size * len(vers)
            verneed += vn.pack(vn_version=1, vn_cnt=len(vers), vn_file=self.dynstr.add(lib),
                               vn_aux=vn.size if vers else 0, vn_next=nxt)  # fmt: skip
            for j, (ver, flags, ndx) in enumerate(vers):
                verneed += vna.pack(vna_hash=d.sysv_hash(ver), vna_flags=flags, vna_other=ndx,
                                    vna_name=self.dynstr.add(ver),
                                    vna_next=0 if j + 1 == len(vers) else vna.size)  # fmt: skip
        return versym, bytes(verdef), bytes(verneed)

    # --- step 2: relocation tables and section list ------------------------------------------
    def _relocs(self) -> None:
        w = self.w
        self.dyn_rels: list[_Rel] = []
        self.plt_rels: list[_Rel] = []
        for arr, refs in ((".init_array", w.init_array), (".fini_array", w.fini_array)):
            for i, ref in enumerate(refs):
                self.dyn_rels.append(_Rel(arr, i * self.word, 8, 0, 0, ref))  # RELATIVE is 8
        self.user_index: list[tuple[str, int]] = []
        for n, r in enumerate(w.relocs):
            table = self.plt_rels if r.table == "plt" else self.dyn_rels
            self.user_index.append((r.table, len(table)))
            table.append(_Rel(r.section or ".data", r.offset or 0, w.reloc_type(r.r_type),
                              self._sym_index(r), r.addend, r.rel_to, n))  # fmt: skip

    def _sym_index(self, r: RelocDesc) -> int:
        if r.symbol is None or isinstance(r.symbol, int):
            return r.symbol or 0
        return self.dynsyms.index(self._find_sym(r.symbol))

    def _sections(self) -> None:
        w, word, cls = self.w, self.word, self.cls
        a, wa, ax = d.SHF_ALLOC, d.SHF_ALLOC | d.SHF_WRITE, d.SHF_ALLOC | d.SHF_EXECINSTR
        rel = "rela" if w.rela else "rel"
        rtype = d.SHT_RELA if w.rela else d.SHT_REL
        self.sysv_bytes, self.gnu_bytes = self._hash_tables()
        versym, verdef, verneed = self._version_tables()
        plan: list[tuple[bool, _Sec, bytes | None]] = [
            (w.sysv_hash, _Sec(".hash", d.SHT_HASH, a, word, 4, link=".dynsym"), self.sysv_bytes),
            (w.gnu_hash, _Sec(".gnu.hash", d.SHT_GNU_HASH, a, word, 0 if cls == 64 else 4,
                              link=".dynsym"), self.gnu_bytes),
            (True, _Sec(".dynsym", d.SHT_DYNSYM, a, word, self.sp["Sym"].size, link=".dynstr",
                        info=self.first_global), None),
            (True, _Sec(".dynstr", d.SHT_STRTAB, a, 1), None),
            (bool(versym), _Sec(".gnu.version", d.SHT_GNU_VERSYM, a, 2, 2, link=".dynsym"),
             versym),
            (bool(verdef), _Sec(".gnu.version_d", d.SHT_GNU_VERDEF, a, word, link=".dynstr",
                                info=len(self.verdefs)), verdef),
            (bool(verneed), _Sec(".gnu.version_r", d.SHT_GNU_VERNEED, a, word, link=".dynstr",
                                 info=len(self.verneeds)), verneed),
            (bool(self.dyn_rels), _Sec(f".{rel}.dyn", rtype, a, word, self.rel_spec.size,
                                       link=".dynsym"), None),
            (bool(self.plt_rels), _Sec(f".{rel}.plt", rtype, a | d.SHF_INFO_LINK, word,
                                       self.rel_spec.size, link=".dynsym", info=".got.plt"),
             None),
            (bool(w.relr), _Sec(".relr.dyn", d.SHT_RELR, a, word, word), None),
            (bool(w.plt_symbols), _Sec(".plt", d.SHT_PROGBITS, ax, 16, 16, segment="x"),
             bytes(16 * (1 + len(w.plt_symbols)))),
            (bool(w.text), _Sec(".text", d.SHT_PROGBITS, ax, 16, segment="x"), w.text),
            (bool(w.tls_init), _Sec(".tdata", d.SHT_PROGBITS, wa | d.SHF_TLS, w.tls_align,
                                    segment="w"), w.tls_init),
            (bool(w.tls_bss), _Sec(".tbss", d.SHT_NOBITS, wa | d.SHF_TLS, w.tls_align,
                                   segment="w", size=w.tls_bss), None),
            (bool(w.init_array), _Sec(".init_array", d.SHT_INIT_ARRAY, wa, word, word,
                                      segment="w"), bytes(word * len(w.init_array))),
            (bool(w.fini_array), _Sec(".fini_array", d.SHT_FINI_ARRAY, wa, word, word,
                                      segment="w"), bytes(word * len(w.fini_array))),
            (True, _Sec(".dynamic", d.SHT_DYNAMIC, wa, word, self.sp["Dyn"].size, segment="w",
                        link=".dynstr"), None),
            (bool(w.got), _Sec(".got", d.SHT_PROGBITS, wa, word, word, segment="w"), w.got),
            (bool(self.plt_rels), _Sec(".got.plt", d.SHT_PROGBITS, wa, word, word, segment="w"),
             bytes(word * (3 + w.gotplt_slots))),
            (bool(w.data), _Sec(".data", d.SHT_PROGBITS, wa, w.data_align, segment="w"), w.data),
            (bool(w.bss_size), _Sec(".bss", d.SHT_NOBITS, wa, w.data_align, segment="w",
                                    size=w.bss_size), None),
            (bool(self.symtab), _Sec(".symtab", d.SHT_SYMTAB, 0, word, self.sp["Sym"].size,
                                     segment="n", link=".strtab",
                                     info=getattr(self, "symtab_first_global", 0)), None),
            (bool(self.symtab), _Sec(".strtab", d.SHT_STRTAB, 0, 1, segment="n"),
             self.strtab.buf),
            (w.section_headers, _Sec(".shstrtab", d.SHT_STRTAB, 0, 1, segment="n"), None),
        ]  # fmt: skip
        for wanted, sec, content in plan:
            if wanted:
                if content is not None:
                    sec.buf = bytearray(content)
                    sec.size = len(content)
                self.secs[sec.name] = sec
        self.secs[".dynsym"].size = len(self.dynsyms) * self.sp["Sym"].size
        self.secs[".dynstr"].buf = self.dynstr.buf  # complete: versions added their strings
        self.secs[".dynstr"].size = len(self.dynstr.buf)
        self.rel_dyn = self.secs.get(f".{rel}.dyn")
        self.rel_plt = self.secs.get(f".{rel}.plt")
        if self.rel_dyn:
            self.rel_dyn.size = len(self.dyn_rels) * self.rel_spec.size
        if self.rel_plt:
            self.rel_plt.size = len(self.plt_rels) * self.rel_spec.size
        if w.symtab and ".symtab" in self.secs:
            self.secs[".symtab"].size = len(self.symtab) * self.sp["Sym"].size
        self.shstrtab = _StrTab()
        self.shidx = {name: i for i, name in enumerate(self.secs, start=1)}
        for name in self.secs:
            self.shstrtab.add(name)
        if ".shstrtab" in self.secs:
            self.secs[".shstrtab"].buf = self.shstrtab.buf
            self.secs[".shstrtab"].size = len(self.shstrtab.buf)
        self.dyn_plan = self._dynamic_plan()
        self.secs[".dynamic"].size = len(self.dyn_plan) * self.sp["Dyn"].size
        self.tls = w.tls_align > 0
        self.nphdr = (2 + any(s.segment == "x" for s in self.secs.values()) + 1 + self.tls
                      + w.gnu_stack + w.relro + len(w.extra_phdrs))  # fmt: skip

    def _dynamic_plan(self) -> list[tuple[int, Callable[[], int]]]:
        w, st = self.w, self.dynstr
        plan: list[tuple[int, Callable[[], int]]] = []

        def add(tag: int, fn: Callable[[], int]) -> None:
            plan.append((tag, fn))

        def addr(name: str) -> Callable[[], int]:
            return lambda: self.secs[name].vaddr

        def size(name: str) -> Callable[[], int]:
            return lambda: self.secs[name].size

        for lib in w.needed:
            add(d.DT_NEEDED, lambda lib=lib: st.add(lib))
        for tag, value in ((d.DT_SONAME, w.soname), (d.DT_RPATH, w.rpath),
                           (d.DT_RUNPATH, w.runpath)):  # fmt: skip
            if value is not None:
                add(tag, lambda v=value: st.add(v))
        if w.init:
            add(d.DT_INIT, lambda: self._ref(w.init or ""))
        if w.fini:
            add(d.DT_FINI, lambda: self._ref(w.fini or ""))
        for arr, tag, sztag in ((".init_array", d.DT_INIT_ARRAY, d.DT_INIT_ARRAYSZ),
                                (".fini_array", d.DT_FINI_ARRAY, d.DT_FINI_ARRAYSZ)):  # fmt: skip
            if arr in self.secs:
                add(tag, addr(arr))
                add(sztag, size(arr))
        for name, tag in ((".hash", d.DT_HASH), (".gnu.hash", d.DT_GNU_HASH)):
            if name in self.secs:
                add(tag, addr(name))
        add(d.DT_STRTAB, addr(".dynstr"))
        add(d.DT_SYMTAB, addr(".dynsym"))
        add(d.DT_STRSZ, size(".dynstr"))
        add(d.DT_SYMENT, lambda: self.sp["Sym"].size)
        rel_tags = ((d.DT_RELA, d.DT_RELASZ, d.DT_RELAENT) if w.rela
                    else (d.DT_REL, d.DT_RELSZ, d.DT_RELENT))  # fmt: skip
        if self.rel_plt:
            add(d.DT_PLTGOT, addr(".got.plt"))
            add(d.DT_PLTRELSZ, size(self.rel_plt.name))
            add(d.DT_PLTREL, lambda: rel_tags[0])
            add(d.DT_JMPREL, addr(self.rel_plt.name))
        if self.rel_dyn:
            add(rel_tags[0], addr(self.rel_dyn.name))
            add(rel_tags[1], size(self.rel_dyn.name))
            add(rel_tags[2], lambda: self.rel_spec.size)
        if w.relr:
            add(d.DT_RELR, addr(".relr.dyn"))
            add(d.DT_RELRSZ, size(".relr.dyn"))
            add(d.DT_RELRENT, lambda: self.word)
        if w.symbolic:
            add(d.DT_SYMBOLIC, lambda: 0)
        if w.textrel:
            add(d.DT_TEXTREL, lambda: 0)
        flags = w.flags | (d.DF_SYMBOLIC if w.symbolic else 0) | (d.DF_TEXTREL if w.textrel else 0)
        flags |= d.DF_BIND_NOW if w.bind_now else 0
        flags_1 = w.flags_1 | (d.DF_1_NOW if w.bind_now else 0)
        if flags:
            add(d.DT_FLAGS, lambda: flags)
        if flags_1:
            add(d.DT_FLAGS_1, lambda: flags_1)
        if self.versym:
            add(d.DT_VERSYM, addr(".gnu.version"))
        if self.verdefs:
            add(d.DT_VERDEF, addr(".gnu.version_d"))
            add(d.DT_VERDEFNUM, lambda: len(self.verdefs))
        if self.verneeds:
            add(d.DT_VERNEED, addr(".gnu.version_r"))
            add(d.DT_VERNEEDNUM, lambda: len(self.verneeds))
        count = 0
        for r in self.dyn_rels:
            if r.r_type != 8:  # RELATIVE on x86_64 and i386
                break
            count += 1
        if count and w.relcount:
            add(d.DT_RELACOUNT if w.rela else d.DT_RELCOUNT, lambda: count)
        for tag, value in w.extra_dynamic:
            add(tag, lambda v=value: v)
        add(d.DT_NULL, lambda: 0)
        return plan

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
                off = _align(off, page)
            start = mem_end = off
            for sec in group:
                if sec.name in (".got.plt", ".data", ".bss") and relro_end is None:
                    relro_end = off
                    if w.relro:  # pad so that the RELRO part ends on a page boundary
                        off = mem_end = _align(off, page)
                pos = _align(off, sec.align)
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
                    mem_end = max(mem_end, _align(off, page))
            self.seg[segment] = (start, off, mem_end)
        self.relro_end = relro_end or 0
        for sec in self.secs.values():
            if sec.segment == "n":
                sec.offset, sec.vaddr = off, 0
                off += sec.size
        self.shoff = _align(off, self.word) if w.section_headers else 0
        self.file_size = self.shoff + len(self.secs) * self.sp["Shdr"].size + self.sp["Shdr"].size
        if not w.section_headers:
            self.file_size = off

    def _relr_words(self) -> list[int]:
        return d.encode_relr((self._place_addr(r.section, r.offset) for r in self.w.relr),
                             self.word)  # fmt: skip

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
            value = self._sym_value(self._find_sym(base, defined=True))
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
            code = bytearray(struct.pack("<BBiBBi", 0xFF, 0x35, got + 8 - (plt0 + 6), 0xFF, 0x25,
                                         got + 16 - (plt0 + 12)) + b"\x0f\x1f\x40\x00")  # fmt: skip
            for n, (ridx, sym) in enumerate(w.plt_symbols, start=1):
                stub = plt0 + 16 * n
                slot = got + (w.relocs[ridx].offset or 0)
                index = self.user_index[ridx][1]
                code += struct.pack("<BBiBiBi", 0xFF, 0x25, slot - (stub + 6), 0x68, index, 0xE9,
                                    plt0 - (stub + 16))  # fmt: skip
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
            self._put(rr.section, rr.offset, (self._ref(rr.rel_to) if rr.rel_to else 0)
                      + rr.addend)  # fmt: skip
        if ".relr.dyn" in self.secs:
            self.secs[".relr.dyn"].buf = bytearray(b"".join(struct.pack(self.wfmt, x)
                                                            for x in relr_words))  # fmt: skip
        self.relr_addrs = [self._place_addr(rr.section, rr.offset) for rr in w.relr]
        for table, sym_list, strtab in ((".dynsym", self.dynsyms, self.dynstr),
                                        (".symtab", self.symtab, self.strtab)):  # fmt: skip
            if table not in self.secs:
                continue
            buf = self.secs[table].buf = bytearray(self.sp["Sym"].size)
            for s in sym_list[1:]:
                assert s is not None
                typ = d.TYPES[s.type] if isinstance(s.type, str) else s.type
                vis = s.visibility
                vis = d.VISIBILITIES[vis] if isinstance(vis, str) else vis
                buf += self.sp["Sym"].pack(st_name=strtab.add(s.name),
                                           st_info=(self._bind(s) << 4) | typ, st_other=vis,
                                           st_shndx=self._sym_shndx(s),
                                           st_value=self._sym_value(s), st_size=s.size)  # fmt: skip
        dyn = self.secs[".dynamic"].buf = bytearray()
        for tag, fn in self.dyn_plan:
            dyn += self.sp["Dyn"].pack(d_tag=tag, d_val=fn())

    # --- step 5: headers -----------------------------------------------------------------
    def _phdrs(self) -> list[dict[str, int]]:
        w, page = self.w, self.w.page_size
        flags = {"r": d.PF_R, "x": d.PF_R | d.PF_X, "w": d.PF_R | d.PF_W}
        out = []
        for segment, (start, fend, mend) in self.seg.items():
            if segment == "r":
                start = 0
            out.append({"p_type": d.PT_LOAD, "p_flags": flags[segment], "p_offset": start,
                        "p_vaddr": w.base + start, "p_paddr": w.base + start,
                        "p_filesz": fend - start, "p_memsz": mend - start,
                        "p_align": page})  # fmt: skip
        dyn = self.secs[".dynamic"]
        out.append({"p_type": d.PT_DYNAMIC, "p_flags": d.PF_R | d.PF_W, "p_offset": dyn.offset,
                    "p_vaddr": dyn.vaddr, "p_paddr": dyn.vaddr, "p_filesz": dyn.size,
                    "p_memsz": dyn.size, "p_align": self.word})  # fmt: skip
        if self.tls:
            first = self.secs.get(".tdata") or self.secs.get(".tbss")
            if first is None:
                wstart = self.seg["w"][0]
                off, vaddr = wstart, w.base + wstart
            else:
                off, vaddr = first.offset, first.vaddr
            tb = self.secs.get(".tbss")
            mem = (tb.vaddr + tb.size - vaddr) if tb else len(w.tls_init)
            out.append({"p_type": d.PT_TLS, "p_flags": d.PF_R, "p_offset": off, "p_vaddr": vaddr,
                        "p_paddr": vaddr, "p_filesz": len(w.tls_init), "p_memsz": mem,
                        "p_align": w.tls_align})  # fmt: skip
        if w.gnu_stack:
            out.append({"p_type": d.PT_GNU_STACK, "p_align": 16,
                        "p_flags": d.PF_R | d.PF_W | (d.PF_X if w.exec_stack else 0)})  # fmt: skip
        if w.relro:
            start = self.seg["w"][0]
            size = _align(self.relro_end, page) - start
            out.append({"p_type": d.PT_GNU_RELRO, "p_flags": d.PF_R, "p_offset": start,
                        "p_vaddr": w.base + start, "p_paddr": w.base + start, "p_filesz": size,
                        "p_memsz": size, "p_align": 1})  # fmt: skip
        out.extend(dict(ph) for ph in w.extra_phdrs)
        return out

    def _serialise(self) -> GeneratedElf:
        from .elfgen import GeneratedElf

        w = self.w
        out = bytearray(self.file_size)
        phdrs = self._phdrs()
        osabi = w.osabi
        if osabi is None:
            gnu = any(s is not None and (s.type == "ifunc" or s.bind == "unique")
                      for s in self.dynsyms)  # fmt: skip
            osabi = d.ELFOSABI_GNU if gnu else d.ELFOSABI_SYSV
        ident = d.ELFMAG + bytes([1 if self.cls == 32 else 2, d.ELFDATA2LSB, d.EV_CURRENT, osabi])
        eh = self.sp["Ehdr"]
        shnum = len(self.secs) + 1 if w.section_headers else 0
        out[: eh.size] = eh.pack(
            e_ident=ident, e_type=w.e_type, e_machine=w.machine, e_version=d.EV_CURRENT,
            e_entry=self._ref(w.entry) if w.entry else 0, e_phoff=eh.size,
            e_shoff=self.shoff, e_ehsize=eh.size, e_phentsize=self.sp["Phdr"].size,
            e_phnum=len(phdrs), e_shentsize=self.sp["Shdr"].size,
            e_shnum=shnum, e_shstrndx=self.shidx.get(".shstrtab", 0),
        )  # fmt: skip
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
                    sh_name=self.shstrtab.add(sec.name), sh_type=sec.sh_type, sh_flags=sec.flags,
                    sh_addr=sec.vaddr, sh_offset=sec.offset, sh_size=sec.size,
                    sh_link=self.shidx.get(sec.link, 0) if sec.link else 0, sh_info=info,
                    sh_addralign=sec.align, sh_entsize=sec.entsize,
                )  # fmt: skip
        symbols: dict[str, int] = {}
        index: dict[str, int] = {}
        entries = [(s, i) for i, s in enumerate(self.dynsyms)] + [(s, None) for s in self.symtab]
        for s, i in entries:
            if s is not None:
                symbols.setdefault(s.display_name, self._sym_value(s))
                if i is not None:
                    index.setdefault(s.display_name, i)
        # plain names: prefer defined, default-version entries
        entries.sort(key=lambda e: (e[0] is None or not e[0].defined, e[0] and e[0].version_hidden))
        for s, i in entries:
            if s is not None:
                symbols.setdefault(s.name, self._sym_value(s))
                if i is not None:
                    index.setdefault(s.name, i)
        return GeneratedElf(
            data=bytes(out), elf_class=self.cls, machine=w.machine, layout=layout,
            symbols=symbols, symbol_index=index, reloc_addrs=self.reloc_addrs,
            reloc_table_index=list(self.user_index), relr_addrs=self.relr_addrs,
            plt_addrs=self.plt_addrs, phdrs=phdrs,
        )  # fmt: skip


def _norm(name: str) -> str:
    return name if name.startswith(".") or name in ("abs", "tls") else "." + name
