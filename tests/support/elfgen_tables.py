"""Name-only tables of the test ELF writer: symbol order, string tables, hash tables and
symbol versioning.

Test-only support code, step one of :func:`tests.support.elfgen_layout.build_image`. None of
these tables depends on addresses, so they are complete before any section is placed.
``.dynsym`` is ordered ``[null, locals, undefined, defined]`` with the defined symbols grouped
by GNU hash bucket, as DT_GNU_HASH requires.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import elfgen_defs as d

if TYPE_CHECKING:
    from .elfgen import DylibWriter, SymbolDesc

__all__ = ["NameTables", "StrTab", "bind_of"]

_SYSV_BUCKETS = (1, 3, 17, 37, 67, 97, 131, 197, 263, 521, 1031, 2053, 4099, 8209, 16411)


def bind_of(s: SymbolDesc) -> int:
    """Numeric ``STB_*`` binding of a symbol description."""
    return d.BINDS[s.bind] if isinstance(s.bind, str) else s.bind


class StrTab:
    """A string table under construction (deduplicating, starting with the empty string)."""

    def __init__(self) -> None:
        """Start with just the leading NUL."""
        self.buf = bytearray(b"\0")
        self.index: dict[str, int] = {"": 0}

    def add(self, s: str) -> int:
        """Offset of ``s``, appending it when new."""
        if s not in self.index:
            self.index[s] = len(self.buf)
            self.buf += s.encode() + b"\0"
        return self.index[s]


class NameTables:
    """Symbol order, ``.dynstr``/``.strtab``, hash tables and version tables of one image."""

    def __init__(self, w: DylibWriter) -> None:
        """Compute every table from the writer's symbols, relocations and versions."""
        self.w = w
        self.cls = w.elf_class
        self._order_symbols()
        self._versions()
        self._strings()
        self.sysv_hash, self.gnu_hash = self._hash_tables()
        self.versym_bytes, self.verdef_bytes, self.verneed_bytes = self._version_tables()

    def _order_symbols(self) -> None:
        from .elfgen import SymbolDesc

        w = self.w
        syms = list(w.symbols)
        known = {s.name for s in syms} | {s.display_name for s in syms}
        for r in w.relocs:  # relocations may name symbols nobody declared: undefined ones
            if isinstance(r.symbol, str) and r.symbol not in known:
                name, _, version = r.symbol.partition("@")  # "puts@GLIBC_2.2.5" is versioned
                syms.append(
                    SymbolDesc(
                        name,
                        defined=False,
                        section=None,
                        type="notype",
                        version=version.lstrip("@") or None,
                    )
                )
                known.add(r.symbol)
        dyn = [s for s in syms if s.dynamic]
        loc = [s for s in dyn if bind_of(s) == d.STB_LOCAL]
        und = [s for s in dyn if bind_of(s) != d.STB_LOCAL and not s.defined]
        defs = [s for s in dyn if bind_of(s) != d.STB_LOCAL and s.defined]
        self.gnu_nb = w.gnu_buckets or max(1, (len(defs) + 1) // 2)
        if w.gnu_hash:
            defs.sort(key=lambda s: d.gnu_hash(s.name) % self.gnu_nb)
        self.dynsyms: list[SymbolDesc | None] = [None, *loc, *und, *defs]
        self.first_global = 1 + len(loc)
        self.symoffset = 1 + len(loc) + len(und)
        self.symtab: list[SymbolDesc | None] = []
        self.symtab_first_global = 0
        if w.symtab and w.section_headers:
            others = [s for s in syms if not s.dynamic]
            sloc = loc + [s for s in others if bind_of(s) == d.STB_LOCAL]
            sglob = und + defs + [s for s in others if bind_of(s) != d.STB_LOCAL]
            self.symtab = [None, *sloc, *sglob]
            self.symtab_first_global = 1 + len(sloc)

    def find(self, name: str, *, defined: bool = False) -> SymbolDesc:
        """The symbol called ``name`` (display name first, then plain name; defined symbols
        and default versions win).

        Raises:
            KeyError: when no symbol matches.
        """
        cands = [s for s in self.dynsyms[1:] + self.symtab[1:] if s is not None]
        for attr in ("display_name", "name"):
            hits = [s for s in cands if getattr(s, attr) == name and (s.defined or not defined)]
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
        for sym in self.dynsyms:
            if sym is None or bind_of(sym) == d.STB_LOCAL:
                self.versym.append(d.VER_NDX_LOCAL)
            elif not sym.version:
                self.versym.append(d.VER_NDX_GLOBAL)
            elif sym.defined:
                hidden = d.VERSYM_HIDDEN if sym.version_hidden else 0
                self.versym.append(index[(None, sym.version)] | hidden)
            else:
                self.versym.append(index[(sym.version_lib or w.needed[0], sym.version)])

    def _strings(self) -> None:
        w = self.w
        st = self.dynstr = StrTab()
        for text in [*w.needed, w.soname, w.rpath, w.runpath]:
            if text is not None:
                st.add(text)
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
        self.strtab = StrTab()
        for sym in self.symtab[1:]:
            assert sym is not None
            self.strtab.add(sym.name)

    def _hash_tables(self) -> tuple[bytes, bytes]:
        names = [s.name if s else "" for s in self.dynsyms]
        n = len(names)
        nb = self.w.sysv_buckets or next((b for b in _SYSV_BUCKETS if 2 * b >= n - 1), 16411)
        buckets, chains = [0] * nb, [0] * n
        for i in range(1, n):
            b = d.sysv_hash(names[i]) % nb
            chains[i], buckets[b] = buckets[b], i
        sysv = struct.pack(f"<{2 + nb + n}I", nb, n, *buckets, *chains)

        bits = self.cls  # bloom filter words are as wide as the ELF class
        hashed = [d.gnu_hash(nm) for nm in names[self.symoffset :]]
        want = max(1, -(-len(hashed) * 2 // bits))  # about two filter bits per symbol
        nbloom = self.w.gnu_bloom_words or 1 << (want - 1).bit_length()
        shift = 6 if bits == 64 else 5
        bloom = [0] * nbloom
        gb, chain = [0] * self.gnu_nb, []
        for i, h in enumerate(hashed):
            bloom[(h // bits) % nbloom] |= (1 << (h % bits)) | (1 << ((h >> shift) % bits))
            b = h % self.gnu_nb
            if not gb[b]:
                gb[b] = self.symoffset + i
            last = i + 1 == len(hashed) or hashed[i + 1] % self.gnu_nb != b
            chain.append((h & ~1) | int(last))
        head = struct.pack("<4I", self.gnu_nb, self.symoffset, nbloom, shift)
        wc = "Q" if bits == 64 else "I"
        gnu = head + struct.pack(f"<{nbloom}{wc}{self.gnu_nb + len(chain)}I", *bloom, *gb, *chain)
        return sysv, gnu

    def _version_tables(self) -> tuple[bytes, bytes, bytes]:
        versym = struct.pack(f"<{len(self.versym)}H", *self.versym) if self.versym else b""
        vd, vda = d.spec("Verdef", self.cls), d.spec("Verdaux", self.cls)
        verdef = bytearray()
        for i, (name, parent, flags, ndx) in enumerate(self.verdefs):
            auxes = [name] + ([parent] if parent else [])
            nxt = 0 if i + 1 == len(self.verdefs) else vd.size + vda.size * len(auxes)
            verdef += vd.struct.pack(1, flags, ndx, len(auxes), d.sysv_hash(name), vd.size, nxt)
            for j, aux in enumerate(auxes):
                last = j + 1 == len(auxes)
                verdef += vda.struct.pack(self.dynstr.add(aux), 0 if last else vda.size)
        vn, vna = d.spec("Verneed", self.cls), d.spec("Vernaux", self.cls)
        verneed = bytearray()
        libs = list(self.verneeds.items())
        for i, (lib, vers) in enumerate(libs):
            nxt = 0 if i + 1 == len(libs) else vn.size + vna.size * len(vers)
            first_aux = vn.size if vers else 0
            verneed += vn.struct.pack(1, len(vers), self.dynstr.add(lib), first_aux, nxt)
            for j, (ver, flags, ndx) in enumerate(vers):
                last = j + 1 == len(vers)
                ver_name = self.dynstr.add(ver)
                verneed += vna.struct.pack(
                    d.sysv_hash(ver), flags, ndx, ver_name, 0 if last else vna.size
                )
        return versym, bytes(verdef), bytes(verneed)

    def symbol_maps(
        self, value_of: Callable[[SymbolDesc], int]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """``(name -> value, name -> .dynsym index)`` keyed by display and plain names.

        ``value_of`` maps a :class:`SymbolDesc` to its final ``st_value``. Plain names prefer
        defined, default-version entries.
        """
        symbols: dict[str, int] = {}
        index: dict[str, int] = {}
        entries: list[tuple[SymbolDesc, int | None]] = [
            (s, n) for n, s in enumerate(self.dynsyms) if s is not None
        ] + [(s, None) for s in self.symtab if s is not None]
        for s, idx in entries:
            symbols.setdefault(s.display_name, value_of(s))
            if idx is not None:
                index.setdefault(s.display_name, idx)
        entries.sort(key=lambda e: (not e[0].defined, e[0].version_hidden))
        for s, idx in entries:
            symbols.setdefault(s.name, value_of(s))
            if idx is not None:
                index.setdefault(s.name, idx)
        return symbols, index
