"""Dynamic symbol tables, GNU and SysV hash tables, and the per-module export index.

Elf layer. A `SymbolTable` decodes ``.dynsym`` once into parallel int lists (the form
the relocation loop wants) and builds, on first use, two dicts: the default exports
(name -> symbol index, what dlsym would return) and versioned exports ((name, version) ->
index). Those dicts answer lookups in ~80 ns; the GNU and SysV hash walks are also
implemented (`gnu_lookup`, `sysv_lookup`) and agree with the dicts — they are what a
caller uses on a table too large to index, and what tests cross-check.
"""

from __future__ import annotations

import struct
from itertools import accumulate

from relink.elf.dynamic import DynamicInfo
from relink.elf.version import VersionInfo, parse_versions
from relink.elf.view import AddressView
from relink.errors import ElfParseError

__all__ = [
    "STB_GLOBAL", "STB_GNU_UNIQUE", "STB_LOCAL", "STB_WEAK", "STT_FUNC", "STT_GNU_IFUNC",
    "STT_OBJECT", "STT_TLS", "STV_DEFAULT", "STV_PROTECTED", "SHN_ABS", "SHN_UNDEF",
    "SymbolTable", "gnu_hash", "sysv_hash",
]

STB_LOCAL, STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE = 0, 1, 2, 10
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STT_COMMON, STT_TLS, STT_GNU_IFUNC = 5, 6, 10
STV_DEFAULT, STV_INTERNAL, STV_HIDDEN, STV_PROTECTED = 0, 1, 2, 3
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2

_SYM = {64: struct.Struct("<IBBHQQ"), 32: struct.Struct("<IIIBBH")}
_EXPORT_TYPES = frozenset({STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_COMMON, STT_TLS,
                           STT_GNU_IFUNC})
_EXPORT_BINDS = frozenset({STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE})
_MAX_SYMBOLS = 1 << 24


def gnu_hash(name: bytes) -> int:
    """The GNU hash (djb2, 32-bit) of a symbol name."""
    h = 5381
    for c in name:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


def sysv_hash(name: bytes) -> int:
    """The classic ELF (SysV) hash of a symbol name."""
    h = 0
    for c in name:
        h = (h << 4) + c
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


class SymbolTable:
    """The dynamic symbol table of one module, decoded into parallel lists.

    Attributes:
        count: number of symbols (from the hash table, or DT_STRTAB - DT_SYMTAB).
        names, values, sizes, infos, others, shndx: per-symbol columns.
        versions: the module's version tables (`VersionInfo`), possibly empty.
    """

    __slots__ = ("label", "count", "names", "values", "sizes", "infos", "others", "shndx",
                 "versions", "_exports", "_versioned", "_gnu", "_sysv", "_word")

    def __init__(self, view: AddressView, dyn: DynamicInfo, elf_class: int) -> None:
        self.label = view.label
        self._word = elf_class // 8
        self._gnu: tuple[int, int, int, memoryview, memoryview, memoryview] | None = None
        self._sysv: tuple[memoryview, memoryview] | None = None
        self._exports: dict[str, int] | None = None
        self._versioned: dict[tuple[str, str], int] | None = None
        layout = _SYM[elf_class]
        if dyn.syment and dyn.syment != layout.size:
            raise ElfParseError(f"DT_SYMENT is {dyn.syment}, expected {layout.size}",
                                file=self.label, what="dynamic symbol table")
        self.count = self._count_symbols(view, dyn, layout.size) if dyn.symtab else 0
        names: list[str] = []
        values: list[int] = []
        sizes: list[int] = []
        infos: list[int] = []
        others: list[int] = []
        shndx: list[int] = []
        if self.count:
            raw = view.get(dyn.symtab, self.count * layout.size, "dynamic symbol table")
            rows = list(layout.iter_unpack(raw))
            if elf_class == 64:
                name_offs, infos, others, shndx, values, sizes = (list(c) for c in zip(*rows))
            else:
                name_offs, values, sizes, infos, others, shndx = (list(c) for c in zip(*rows))
            names = self._decode_names(dyn, name_offs)
        self.names, self.values, self.sizes = names, values, sizes
        self.infos, self.others, self.shndx = infos, others, shndx
        self.versions: VersionInfo = parse_versions(view, dyn, self.count)

    def _count_symbols(self, view: AddressView, dyn: DynamicInfo, entsize: int) -> int:
        what = "hash table"
        if dyn.gnu_hash:
            hdr = view.get(dyn.gnu_hash, 16, what).cast("I")
            nbuckets, symoffset, bloom_size, bloom_shift = hdr[0], hdr[1], hdr[2], hdr[3]
            if nbuckets == 0 or bloom_size == 0 or bloom_size & (bloom_size - 1):
                raise ElfParseError("GNU hash table has no buckets or a bloom size that is "
                                    "not a power of two", file=self.label, what=what)
            w = self._word
            bloom_at = dyn.gnu_hash + 16
            buckets_at = bloom_at + bloom_size * w
            chains_at = buckets_at + nbuckets * 4
            bloom = view.get(bloom_at, bloom_size * w, what).cast("Q" if w == 8 else "I")
            buckets = view.get(buckets_at, nbuckets * 4, what).cast("I")
            top = max(buckets)
            if top == 0:
                # No hashed symbol (the module exports nothing): the table only says
                # how many unhashed ones precede the hashed part, which a linker may
                # leave at 1. Size the table as tools do: DT_HASH, else the distance
                # to the string table that follows it.
                count = symoffset
                if dyn.hash:
                    count = max(count, view.get(dyn.hash + 4, 4, what).cast("I")[0])
                elif dyn.strtab > dyn.symtab:
                    count = max(count, (dyn.strtab - dyn.symtab) // entsize)
                chains = view.get(chains_at, 0, what).cast("I")
            else:
                if top < symoffset:
                    raise ElfParseError("GNU hash bucket points below the symbol offset",
                                        file=self.label, what=what)
                tail = view.until(chains_at, what)
                usable = len(tail) // 4
                chains = tail[:usable * 4].cast("I")
                i = top - symoffset
                while True:
                    if i >= usable or i > _MAX_SYMBOLS:
                        raise ElfParseError("GNU hash chain runs past its segment",
                                            file=self.label, what=what)
                    if chains[i] & 1:
                        break
                    i += 1
                count = symoffset + i + 1
                chains = chains[:count - symoffset]
            self._gnu = (nbuckets, symoffset, bloom_shift, bloom, buckets, chains)
        elif dyn.hash:
            hdr = view.get(dyn.hash, 8, what).cast("I")
            nbucket, nchain = hdr[0], hdr[1]
            if nchain > _MAX_SYMBOLS or nbucket > _MAX_SYMBOLS:
                raise ElfParseError(f"SysV hash table claims {nchain} symbols",
                                    file=self.label, what=what)
            table = view.get(dyn.hash + 8, (nbucket + nchain) * 4, what).cast("I")
            self._sysv = (table[:nbucket], table[nbucket:])
            count = nchain
        elif dyn.strtab > dyn.symtab:
            # No hash table: the heuristic binutils and glibc tools use.
            count = (dyn.strtab - dyn.symtab) // entsize
        else:
            raise ElfParseError("no DT_GNU_HASH or DT_HASH: cannot size the symbol table",
                                file=self.label, what=what)
        if count > _MAX_SYMBOLS:
            raise ElfParseError(f"implausible symbol count {count}", file=self.label,
                                what=what)
        if self._sysv is None and dyn.hash:
            hdr = view.get(dyn.hash, 8, what).cast("I")
            table = view.get(dyn.hash + 8, (hdr[0] + hdr[1]) * 4, what).cast("I")
            self._sysv = (table[:hdr[0]], table[hdr[0]:])
        return count

    def _decode_names(self, dyn: DynamicInfo, offsets: list[int]) -> list[str]:
        strings = dyn.strings
        if strings is None:
            raise ElfParseError("symbol table without a string table", file=self.label,
                                what="dynamic symbol table")
        blob = strings.tobytes()
        parts = blob.split(b"\0")
        starts = accumulate((len(p) + 1 for p in parts[:-1]), initial=0)
        by_offset = dict(zip(starts, parts))
        size = len(blob)
        out = []
        for off in offsets:
            raw = by_offset.get(off)
            if raw is None:
                # A suffix shared with a longer string (linkers merge tails).
                if off >= size:
                    raise ElfParseError(f"symbol name offset {off:#x} is past the string "
                                        f"table ({size} bytes)", file=self.label,
                                        what="dynamic symbol table")
                end = blob.find(b"\0", off)
                if end < 0:
                    raise ElfParseError("string table is not NUL-terminated",
                                        file=self.label, what="dynamic string table")
                raw = blob[off:end]
            out.append(raw.decode("utf-8", "surrogateescape"))
        return out

    def detach(self) -> None:
        """Copy every view into the image to private storage.

        After this the table no longer refers to the mapping it was parsed from, so it
        can outlive it (the loader's per-file parse cache relies on this).
        """
        if self._gnu is not None:
            nb, so, shift, bloom, buckets, chains = self._gnu
            self._gnu = (nb, so, shift,
                         memoryview(bytes(bloom)).cast("Q" if bloom.itemsize == 8 else "I"),
                         memoryview(bytes(buckets)).cast("I"),
                         memoryview(bytes(chains)).cast("I"))
        if self._sysv is not None:
            b, c = self._sysv
            self._sysv = (memoryview(bytes(b)).cast("I"), memoryview(bytes(c)).cast("I"))

    # -- export index ---------------------------------------------------------------

    def _build_exports(self) -> None:
        exports: dict[str, int] = {}
        versioned: dict[tuple[str, str], int] = {}
        versym = self.versions.versym
        vnames = self.versions.def_names
        infos, others, shndx, names = self.infos, self.others, self.shndx, self.names
        for i in range(1, self.count):
            if shndx[i] == SHN_UNDEF:
                continue
            info = infos[i]
            if (info >> 4) not in _EXPORT_BINDS or (info & 0xF) not in _EXPORT_TYPES:
                continue
            if others[i] & 3 not in (STV_DEFAULT, STV_PROTECTED):
                continue
            name = names[i]
            if versym is not None:
                ver = versym[i]
                ndx = ver & 0x7FFF
                if ndx >= 2:
                    vname = vnames.get(ndx)
                    if vname is None and ndx in self.versions.need_names:
                        # A definition versioned by a verneed entry: an executable's
                        # COPY target (glibc's l_versions holds both kinds of names).
                        vname = self.versions.need_names[ndx][0]
                    if vname is not None:
                        versioned.setdefault((name, vname), i)
                    if ver & 0x8000:
                        continue
                    prev = exports.get(name)
                    if prev is not None and (versym[prev] & 0x7FFF) < 2:
                        continue  # an unversioned definition wins for plain lookups
                    exports.setdefault(name, i)
                    continue
                exports[name] = i
                continue
            exports.setdefault(name, i)
        self._exports = exports
        self._versioned = versioned

    @property
    def exports(self) -> dict[str, int]:
        """Default exports: name -> symbol index (what an unversioned dlsym finds)."""
        if self._exports is None:
            self._build_exports()
        assert self._exports is not None
        return self._exports

    @property
    def versioned(self) -> dict[tuple[str, str], int]:
        """Versioned definitions: (name, version name) -> symbol index (hidden ones too)."""
        if self._versioned is None:
            self._build_exports()
        assert self._versioned is not None
        return self._versioned

    def find(self, name: str, version: str | None = None, exact: bool = False) -> int | None:
        """Index of the definition `name` (optionally of `version`), or None.

        With a version that is not `exact` (a relocation's verneed requirement), an
        unversioned non-hidden definition also matches, as in ld.so's check_match.
        """
        if version is None:
            exports = self._exports
            if exports is None:
                exports = self.exports
            return exports.get(name)
        i = self.versioned.get((name, version))
        if i is not None or exact:
            return i
        if self.versions.versym is None:
            return self.exports.get(name)
        i = self.exports.get(name)
        if i is not None and (self.versions.versym[i] & 0x7FFF) < 2:
            return i
        return None

    def find_reference(self, name: str) -> int | None:
        """The definition an *unversioned* relocation reference binds to, as in ld.so.

        ld.so's check_match (without DL_LOOKUP_RETURN_NEWEST) accepts a definition of
        version index 0, 1 or 2 — index 2 being the oldest version, the one a binary
        linked before the library had versions expects — even a hidden one, and
        otherwise the single default version. (dlsym, `find(name)`, takes the default.)
        """
        i = self.exports.get(name)
        versym = self.versions.versym
        if versym is None or (i is not None and (versym[i] & 0x7FFF) < 3):
            return i
        oldest = self.versions.def_names.get(2)
        if oldest is not None:
            j = self.versioned.get((name, oldest))
            if j is not None:
                return j
        return i

    # -- hash walks -------------------------------------------------------------------

    def gnu_lookup(self, name: str) -> int | None:
        """Walk the GNU hash table (bloom filter first); None when absent or no table."""
        if self._gnu is None:
            return None
        nbuckets, symoffset, shift, bloom, buckets, chains = self._gnu
        raw = name.encode("utf-8", "surrogateescape")
        h = gnu_hash(raw)
        bits = self._word * 8
        word = bloom[(h // bits) % len(bloom)]
        if not (word >> (h % bits)) & (word >> ((h >> shift) % bits)) & 1:
            return None
        i = buckets[h % nbuckets]
        if i == 0:
            return None
        names = self.names
        while True:
            j = i - symoffset
            if j < 0 or j >= len(chains):
                return None
            c = chains[j]
            if (c | 1) == (h | 1) and i < self.count and names[i] == name and \
                    self.shndx[i] != SHN_UNDEF:
                return i
            if c & 1:
                return None
            i += 1

    def sysv_lookup(self, name: str) -> int | None:
        """Walk the SysV hash table; None when absent or no table."""
        if self._sysv is None:
            return None
        buckets, chains = self._sysv
        if not buckets:
            return None
        h = sysv_hash(name.encode("utf-8", "surrogateescape"))
        i = buckets[h % len(buckets)]
        seen = 0
        while i and seen <= len(chains):
            if i >= self.count or i >= len(chains):
                return None
            if self.names[i] == name and self.shndx[i] != SHN_UNDEF:
                return i
            i = chains[i]
            seen += 1
        return None
