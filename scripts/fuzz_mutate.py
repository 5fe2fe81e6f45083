"""Structure-aware ELF mutator for scripts/fuzz.py.

Knows where the integer fields of an ELF image live — the ELF header, program and
section headers, dynamic entries, dynamic symbols, REL/RELA/RELR entries, GNU and SysV
hash table headers and buckets, version definitions/requirements, note headers, string
tables — and rewrites them with values that break loaders: 0, 1, all-ones, sign
boundaries, the file size and its neighbours, the old value nudged by a word, another
valid address or offset of the same image. Besides that it does plain byte-level
mutations (bit flips, interesting bytes, block copy/delete/insert, truncation, splicing
two inputs), since bugs hide between the structures too.

The field locator is deliberately tolerant (its own minimal parse, every read guarded):
it must keep working on images the previous mutation already broke. Nothing here
imports relink, so the mutator cannot be blinded by the parser it is testing.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

__all__ = ["Field", "Mutator", "locate_fields"]

Field = tuple[str, int, int]  # (kind, file offset, size in bytes)

# Field layouts: (name, offset, size) per ELF class.
_EHDR = {
    64: [("e_type", 16, 2), ("e_machine", 18, 2), ("e_version", 20, 4), ("e_entry", 24, 8),
         ("e_phoff", 32, 8), ("e_shoff", 40, 8), ("e_flags", 48, 4), ("e_ehsize", 52, 2),
         ("e_phentsize", 54, 2), ("e_phnum", 56, 2), ("e_shentsize", 58, 2),
         ("e_shnum", 60, 2), ("e_shstrndx", 62, 2), ("ei_class", 4, 1), ("ei_data", 5, 1),
         ("ei_version", 6, 1), ("ei_osabi", 7, 1)],
    32: [("e_type", 16, 2), ("e_machine", 18, 2), ("e_version", 20, 4), ("e_entry", 24, 4),
         ("e_phoff", 28, 4), ("e_shoff", 32, 4), ("e_flags", 36, 4), ("e_ehsize", 40, 2),
         ("e_phentsize", 42, 2), ("e_phnum", 44, 2), ("e_shentsize", 46, 2),
         ("e_shnum", 48, 2), ("e_shstrndx", 50, 2), ("ei_class", 4, 1), ("ei_data", 5, 1),
         ("ei_version", 6, 1), ("ei_osabi", 7, 1)],
}
_PHDR = {64: (56, [(0, 4), (4, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 8), (48, 8)]),
         32: (32, [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 4), (24, 4), (28, 4)])}
_SHDR = {64: (64, [(0, 4), (4, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 4), (44, 4),
                   (48, 8), (56, 8)]),
         32: (40, [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 4), (24, 4), (28, 4),
                   (32, 4), (36, 4)])}
_SYM = {64: (24, [(0, 4), (4, 1), (5, 1), (6, 2), (8, 8), (16, 8)]),
        32: (16, [(0, 4), (4, 4), (8, 4), (12, 1), (13, 1), (14, 2)])}
_DT = {"strtab": 5, "symtab": 6, "hash": 4, "rela": 7, "relasz": 8, "rel": 17, "relsz": 18,
       "jmprel": 23, "pltrelsz": 2, "relr": 36, "relrsz": 35, "gnu_hash": 0x6FFFFEF5,
       "versym": 0x6FFFFFF0, "verdef": 0x6FFFFFFC, "verneed": 0x6FFFFFFE, "strsz": 10,
       "init_array": 25, "fini_array": 26}
_PT_LOAD, _PT_DYNAMIC, _PT_NOTE = 1, 2, 4
_MAX_ENTRIES = 4096  # fields listed per table (big tables are sampled, not enumerated)

# Dynamic tags worth writing (as a replacement tag or a duplicated entry).
DYN_TAGS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
            22, 23, 24, 25, 26, 27, 28, 29, 30, 32, 33, 35, 36, 37, 0x6FFFFEF5, 0x6FFFFFF0,
            0x6FFFFFF9, 0x6FFFFFFA, 0x6FFFFFFB, 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE,
            0x6FFFFFFF]


class _Image:
    """A tolerant view of one image: class, segments, dynamic entries (all guarded)."""

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.cls = 64 if len(data) > 4 and data[4] == 2 else 32
        self.w = self.cls // 8
        self.loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
        self.phdrs: list[tuple[int, int, int, int]] = []  # (pos, type, offset, filesz)
        self.dyn: dict[int, int] = {}
        self.dyn_pos: list[int] = []
        try:
            self._parse()
        except (struct.error, IndexError, ValueError, OverflowError):
            pass

    def u(self, pos: int, size: int) -> int:
        return int.from_bytes(self.data[pos:pos + size], "little")

    def _parse(self) -> None:
        e = {n: (o, s) for n, o, s in _EHDR[self.cls]}
        phoff = self.u(*e["e_phoff"])
        phnum = min(self.u(*e["e_phnum"]), 512)
        entsize, fields = _PHDR[self.cls]
        for i in range(phnum):
            pos = phoff + i * entsize
            if pos + entsize > len(self.data):
                break
            vals = [self.u(pos + o, s) for o, s in fields]
            if self.cls == 64:
                ptype, _f, off, vaddr, _pa, filesz, _m, _a = vals
            else:
                ptype, off, vaddr, _pa, filesz, _m, _f, _a = vals
            self.phdrs.append((pos, ptype, off, filesz))
            if ptype == _PT_LOAD:
                self.loads.append((vaddr, off, filesz))
        dyn = next((p for p in self.phdrs if p[1] == _PT_DYNAMIC), None)
        if dyn is not None:
            _pos, _t, off, size = dyn
            step = 2 * self.w
            for pos in range(off, min(off + size, len(self.data) - step + 1), step):
                tag = self.u(pos, self.w)
                self.dyn_pos.append(pos)
                if tag == 0:
                    break
                self.dyn.setdefault(tag, self.u(pos + self.w, self.w))

    def offset(self, vaddr: int) -> int | None:
        for start, off, filesz in self.loads:
            if start <= vaddr < start + filesz:
                return off + vaddr - start
        return None

    def table(self, tag: str) -> int | None:
        addr = self.dyn.get(_DT[tag])
        return None if addr is None else self.offset(addr)


def _entries(out: list[Field], kind: str, start: int | None, entsize: int,
             layout: list[tuple[int, int]], count: int, limit: int) -> None:
    if start is None:
        return
    for i in range(min(count, _MAX_ENTRIES)):
        pos = start + i * entsize
        if pos + entsize > limit:
            return
        out.extend((kind, pos + o, s) for o, s in layout)


def locate_fields(data: bytearray) -> list[Field]:
    """Every integer field the mutator knows how to find in `data` (best effort)."""
    img = _Image(data)
    n = len(data)
    w = img.w
    out: list[Field] = [("ehdr", o, s) for _n, o, s in _EHDR[img.cls] if o + s <= n]
    phsize, phl = _PHDR[img.cls]
    for pos, *_ in img.phdrs:
        out.extend(("phdr", pos + o, s) for o, s in phl)
    shsize, shl = _SHDR[img.cls]
    shoff = img.u(40 if img.cls == 64 else 32, w)
    shnum = img.u(60 if img.cls == 64 else 48, 2)
    _entries(out, "shdr", shoff if shoff else None, shsize, shl, shnum, n)
    for pos in img.dyn_pos:
        out += [("dyn_tag", pos, w), ("dyn_val", pos + w, w)]
    symsize, syml = _SYM[img.cls]
    symtab, strtab = img.dyn.get(_DT["symtab"], 0), img.dyn.get(_DT["strtab"], 0)
    nsyms = (strtab - symtab) // symsize if strtab > symtab else 64
    _entries(out, "sym", img.table("symtab"), symsize, syml, nsyms, n)
    rela = [(0, w), (w, w), (2 * w, w)]
    for tag, size_tag in (("rela", "relasz"), ("rel", "relsz"), ("jmprel", "pltrelsz")):
        is_rela = tag == "rela" or (tag == "jmprel" and img.dyn.get(20, 7) == 7)
        ent = 3 * w if is_rela else 2 * w
        _entries(out, "reloc", img.table(tag), ent, rela[:3 if is_rela else 2],
                 img.dyn.get(_DT[size_tag], 0) // ent, n)
    _entries(out, "relr", img.table("relr"), w, [(0, w)],
             img.dyn.get(_DT["relrsz"], 0) // w, n)
    gh = img.table("gnu_hash")
    if gh is not None:
        _entries(out, "gnu_hash", gh, 4, [(0, 4)], 4, n)
        nb, bloom = img.u(gh, 4), img.u(gh + 8, 4)
        _entries(out, "gnu_hash", gh + 16 + bloom * w, 4, [(0, 4)], min(nb, 256), n)
    sh = img.table("hash")
    if sh is not None:
        _entries(out, "sysv_hash", sh, 4, [(0, 4)], 2 + min(img.u(sh, 4), 256), n)
    vd = img.table("verdef")
    if vd is not None:
        _entries(out, "verdef", vd, 20, [(0, 2), (2, 2), (4, 2), (6, 2), (12, 4), (16, 4)],
                 1, n)
    vn = img.table("verneed")
    if vn is not None:
        _entries(out, "verneed", vn, 16, [(0, 2), (2, 2), (4, 4), (8, 4), (12, 4)], 1, n)
    vs = img.table("versym")
    if vs is not None:
        _entries(out, "versym", vs, 2, [(0, 2)], 32, n)
    for _pos, ptype, off, _size in img.phdrs:
        if ptype == _PT_NOTE:
            _entries(out, "note", off, 4, [(0, 4)], 3, n)
    for tag in ("init_array", "fini_array"):
        _entries(out, tag, img.table(tag), w, [(0, w)], 2, n)
    return out


class Mutator:
    """Produces mutants of seed images; deterministic for a given `random.Random`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ops: list[tuple[int, Callable[[bytearray, list[bytes]], None]]] = [
            (30, self.field),
            (8, self.dyn_entry),
            (6, self.string_table),
            (10, self.bit_flip),
            (8, self.interesting_bytes),
            (4, self.block_copy),
            (3, self.block_delete),
            (3, self.block_insert),
            (4, self.truncate),
            (3, self.splice),
        ]
        self._weights = [w for w, _ in self.ops]

    def mutate(self, parent: bytes, others: list[bytes], max_stack: int = 4) -> bytes:
        """A mutant of `parent`: 1..`max_stack` stacked mutations."""
        data = bytearray(parent)
        for _ in range(self.rng.randint(1, max_stack)):
            op = self.rng.choices(self.ops, self._weights)[0][1]
            op(data, others)
            if not data:
                data = bytearray(parent[:64])
        return bytes(data)

    # -- value choice ----------------------------------------------------------------

    def value(self, old: int, size: int, data: bytearray) -> int:
        r = self.rng
        top = (1 << (8 * size)) - 1
        n = len(data)
        choices = [
            0, 1, 2, 3, 4, 7, 8, 16, 0x40, 0x7F, 0x80, 0xFF, 0x100, 0x1000, 0xFFFF, 0x10000,
            0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000, (1 << 63) - 1, 1 << 63, top,
            top - 7, n, n - 1, n + 1, n - 8, n // 2, old + 1, old - 1, old + 8, old - 8,
            old + 0x1000, old - 0x1000, old * 2, old // 2, old ^ (1 << r.randrange(8 * size)),
            r.randrange(max(n, 1)), r.getrandbits(8 * size), old << 16, old + n,
        ]
        return r.choice(choices) & top

    # -- structure-aware -------------------------------------------------------------

    def field(self, data: bytearray, _others: list[bytes]) -> None:
        fields = locate_fields(data)
        if not fields:
            return self.bit_flip(data, _others)
        kinds = sorted({k for k, _, _ in fields})
        kind = self.rng.choice(kinds)
        picked = [f for f in fields if f[0] == kind]
        _k, pos, size = self.rng.choice(picked)
        old = int.from_bytes(data[pos:pos + size], "little")
        data[pos:pos + size] = self.value(old, size, data).to_bytes(size, "little")

    def dyn_entry(self, data: bytearray, _others: list[bytes]) -> None:
        img = _Image(data)
        if not img.dyn_pos:
            return self.field(data, _others)
        r, w = self.rng, img.w
        pos = r.choice(img.dyn_pos)
        how = r.randrange(4)
        if how == 0:  # retag (duplicate a table pointer, drop one, or end the list early)
            data[pos:pos + w] = r.choice(DYN_TAGS).to_bytes(w, "little")
        elif how == 1:  # copy another entry over this one (duplicates, reorders)
            src = r.choice(img.dyn_pos)
            data[pos:pos + 2 * w] = data[src:src + 2 * w]
        elif how == 2:  # point a value at another table of the image
            vals = [v for v in img.dyn.values() if v]
            if vals:
                data[pos + w:pos + 2 * w] = (r.choice(vals) & ((1 << 8 * w) - 1)).to_bytes(
                    w, "little")
        else:  # swap two entries
            src = r.choice(img.dyn_pos)
            a, b = bytes(data[pos:pos + 2 * w]), bytes(data[src:src + 2 * w])
            data[pos:pos + 2 * w], data[src:src + 2 * w] = b, a

    def string_table(self, data: bytearray, _others: list[bytes]) -> None:
        img = _Image(data)
        at, size = img.table("strtab"), img.dyn.get(_DT["strsz"], 0)
        if at is None or not size:
            return self.bit_flip(data, _others)
        r = self.rng
        end = min(at + size, len(data))
        if end <= at:
            return None
        pos = r.randrange(at, end)
        how = r.randrange(3)
        if how == 0:  # remove terminators: strings run into each other or off the end
            for i in range(pos, min(end, pos + 64)):
                if data[i] == 0:
                    data[i] = 0x41
        elif how == 1:
            data[pos] = r.choice((0, 0x2F, 0x2E, 0x24, 0xFF, 0x80))  # NUL / . $ non-UTF-8
        else:
            data[pos:end] = bytes([0x41]) * (end - pos)
        return None

    # -- byte-level ------------------------------------------------------------------

    def bit_flip(self, data: bytearray, _others: list[bytes]) -> None:
        for _ in range(self.rng.randint(1, 8)):
            pos = self.rng.randrange(len(data))
            data[pos] ^= 1 << self.rng.randrange(8)

    def interesting_bytes(self, data: bytearray, _others: list[bytes]) -> None:
        r = self.rng
        size = r.choice((1, 2, 4, 8))
        pos = r.randrange(max(len(data) - size, 1))
        old = int.from_bytes(data[pos:pos + size], "little")
        data[pos:pos + size] = self.value(old, size, data).to_bytes(size, "little")

    def block_copy(self, data: bytearray, _others: list[bytes]) -> None:
        r, n = self.rng, len(data)
        size = r.randint(1, min(256, n))
        src, dst = r.randrange(n - size + 1), r.randrange(n - size + 1)
        data[dst:dst + size] = data[src:src + size]

    def block_delete(self, data: bytearray, _others: list[bytes]) -> None:
        r, n = self.rng, len(data)
        size = r.randint(1, min(512, n))
        pos = r.randrange(n - size + 1)
        del data[pos:pos + size]

    def block_insert(self, data: bytearray, _others: list[bytes]) -> None:
        r = self.rng
        size = r.choice((1, 4, 8, 16, 64, 4096))
        pos = r.randrange(len(data) + 1)
        data[pos:pos] = bytes(size) if r.random() < 0.5 else r.randbytes(size)

    def truncate(self, data: bytearray, _others: list[bytes]) -> None:
        r = self.rng
        fields = locate_fields(data)
        cut = r.choice(fields)[1] if fields and r.random() < 0.5 else r.randrange(len(data))
        del data[max(cut, 1):]

    def splice(self, data: bytearray, others: list[bytes]) -> None:
        if not others:
            return self.bit_flip(data, others)
        r = self.rng
        other = r.choice(others)
        if not other:
            return None
        size = r.randint(1, min(4096, len(other)))
        src = r.randrange(len(other) - size + 1)
        dst = r.randrange(max(len(data) - size, 0) + 1)
        data[dst:dst + size] = other[src:src + size]
        return None
