"""Repair an x86_64 module whose allocated sections moved (section-region materialization).

Plan layer, run on Python bytearrays *before* anything is mapped, so a module that cannot
be repaired fails with a `PlanError` and nothing is left behind. Inputs: the module's
sections with their new link-time addresses (from `layout.normalize`). What is rewritten,
in order (Relink's rewrite.rs, extended to what gcc + GNU ld emit):

1. retained relocations (``--emit-relocs``: non-allocated ``.rela.*`` sections) in every
   moved section: R_X86_64_64 / 32 / 32S (S + A), PC32 / PC64 / PLT32 / GOTPCREL /
   GOTPCRELX / REX_GOTPCRELX / GOTPC32 / TLSGD / TLSLD / GOTTPOFF / GOTPC32_TLSDESC
   (S + A - P) and GOTOFF64. For the PC-relative ones the *old target* is recovered from
   the field itself (``T = field + P - A``): after GOT/PLT indirection or linker
   relaxation (GOTPCRELX -> lea) the code refers to a GOT slot, a PLT stub or the symbol,
   and whichever it is gets remapped. When that target is the symbol's own address the
   symbol's section decides (so ``__TMC_END__`` at the end of one section and the start
   of the next maps correctly); otherwise the address is looked up. TLS offsets
   (TPOFF32, DTPOFF32/64, TPOFF64) and SIZE relocations need no change: TLS sections move
   as one block.
2. ``.dynsym`` values (TLS and absolute symbols excepted).
3. allocated relocation tables (``.rela.dyn``, ``.rela.plt``): r_offset, RELATIVE and
   IRELATIVE addends (taken from the retained R_X86_64_64 at the same place when there is
   one), lazy GOT slots of JUMP_SLOT entries.
4. ``.dynamic`` address tags (PLTGOT, HASH, GNU_HASH, STRTAB, SYMTAB, RELA, REL, JMPREL,
   RELR, INIT, FINI, INIT_ARRAY, FINI_ARRAY, PREINIT_ARRAY, VERSYM, VERDEF, VERNEED) and
   GOT[0] (= _DYNAMIC).
5. linker-generated code without retained relocations: PLT stubs (``.plt``, ``.plt.got``,
   ``.plt.sec``, ``.iplt``; lazy, IBT and BND forms) are decoded and their RIP-relative
   displacements re-targeted; anything else there is refused.
6. ``.eh_frame`` (CIE personality, FDE pc_begin / LSDA pointers) and ``.eh_frame_hdr``
   (rebuilt, sorted) — see `relink.plan.ehframe`.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right

from relink.arch.rtypes import rtype_name
from relink.elf.dynamic import (
    ADDRESS_TAGS,
    DT_DEBUG,
    DT_JMPREL,
    DT_NULL,
    DT_PLTGOT,
    DT_PLTRELSZ,
    DT_RELA,
    DT_RELASZ,
    DT_RELR,
)
from relink.errors import PlanError
from relink.plan.model import MemoryClass, ModulePlan, Section

__all__ = ["ModuleRepair"]

EM_X86_64 = 62
SHT_SYMTAB, SHT_RELA, SHT_DYNSYM, SHT_DYNAMIC = 2, 4, 11, 6
SHN_UNDEF, SHN_LORESERVE = 0, 0xFF00
STT_SECTION, STT_TLS = 3, 6
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
_DYN = struct.Struct("<qQ")

# type -> (field width, signed) for S + A - P relocations
_PCREL = {2: (4, True), 4: (4, True), 9: (4, True), 41: (4, True), 42: (4, True),
          26: (4, True), 19: (4, True), 20: (4, True), 22: (4, True), 34: (4, True),
          24: (8, True)}
# type -> (width, signed) for S + A relocations
_ABS = {1: (8, None), 10: (4, False), 11: (4, True)}
# TLS offsets, sizes, markers and module ids: unchanged when the TLS block moves whole.
_KEEP = {0, 16, 17, 18, 21, 23, 32, 33, 35}
R_GOTOFF64 = 25
R_RELATIVE, R_JUMP_SLOT, R_IRELATIVE = 8, 7, 37
_STUB_NOPS = (b"\x66\x0f\x1f\x84\x00\x00\x00\x00\x00", b"\x0f\x1f\x84\x00\x00\x00\x00\x00",
              b"\x0f\x1f\x80\x00\x00\x00\x00", b"\x66\x0f\x1f\x44\x00\x00",
              b"\x0f\x1f\x44\x00\x00", b"\x0f\x1f\x40\x00", b"\x0f\x1f\x00", b"\x66\x90",
              b"\x90", b"\xcc")


class ModuleRepair:
    """Compute the repaired bytes of every allocated section of one moved module.

    Args:
        mod: a section-region module (capability REORDERABLE).
        new_addr: id(section) -> new link-time address.
    """

    def __init__(self, mod: ModulePlan, new_addr: dict[int, int]) -> None:
        self.mod = mod
        self.label = mod.elf.label
        self.new = {s.index: new_addr[id(s)] for s in mod.alloc_sections()}
        self.buf: dict[int, bytearray] = {}
        for s in mod.alloc_sections():
            if s.parent is None or s.overridden:
                self.buf[s.index] = bytearray(s.data())
        for s in mod.alloc_sections():  # fragments: slices of their parent's bytes
            if s.index not in self.buf and s.parent is not None:
                at = s.addr - s.parent.addr
                self.buf[s.index] = self.buf[s.parent.index][at:at + s.orig_size]
        # Address lookup excludes .tbss: it has an address but no memory of its own.
        spans = sorted((s.addr, s.orig_size, s.index) for s in mod.alloc_sections()
                       if not (s.nobits and s.mem_class is MemoryClass.TLS)
                       and s.parent is None)
        # Function fragments (hot copies split out of a code section) take precedence
        # over their parent for addresses inside them; the parent keeps a working copy.
        self.fragments: dict[int, list[Section]] = {}
        for s in mod.alloc_sections():
            if s.parent is not None:
                self.fragments.setdefault(s.parent.index, []).append(s)
        self._frag_list = sorted((f for fs in self.fragments.values() for f in fs),
                                 key=lambda f: f.addr)
        self._frag_starts = [f.addr for f in self._frag_list]
        self._starts = [a for a, _, _ in spans]
        self._spans = spans
        self.abs_targets: dict[int, int] = {}
        self._symtabs: dict[int, list[tuple[int, int, int, int]]] = {}

    # -- address mapping ----------------------------------------------------------------

    def remap(self, addr: int, what: str) -> int:
        """New address of old address `addr` (inside, or at the end of, a section)."""
        k = bisect_right(self._frag_starts, addr) - 1
        if k >= 0:
            f = self._frag_list[k]
            if addr < f.addr + f.orig_size:
                return self.new[f.index] + addr - f.addr
        i = bisect_right(self._starts, addr) - 1
        j = i
        while j >= 0 and self._starts[j] == self._starts[i]:
            start, size, idx = self._spans[j]
            if start <= addr < start + size:
                return self.new[idx] + addr - start
            j -= 1
        for start, size, idx in self._spans:
            if size == 0 and start == addr:
                return self.new[idx]
        for start, size, idx in self._spans:
            if size and start + size == addr:
                return self.new[idx] + size
        raise PlanError(f"cannot repair {what}: address {addr:#x} is not inside any "
                        "allocated section", file=self.label)

    def remap_symbol(self, shndx: int, value: int, stype: int, what: str) -> int | None:
        """New value of a symbol defined in section `shndx` (None: leave unchanged)."""
        if stype == STT_TLS or shndx == SHN_UNDEF or shndx >= SHN_LORESERVE:
            return None
        if shndx >= len(self.mod.sections):
            raise PlanError(f"{what}: section index {shndx} out of range", file=self.label)
        sec = self.mod.sections[shndx]
        if sec.mem_class is None:
            return None
        if sec.mem_class is MemoryClass.TLS:
            return None
        if shndx in self.fragments:
            k = bisect_right(self._frag_starts, value) - 1
            if k >= 0:
                f = self._frag_list[k]
                if f.parent is sec and value < f.addr + f.orig_size:
                    return self.new[f.index] + value - f.addr
        return self.new[shndx] + value - sec.addr

    def section_at(self, addr: int) -> Section:
        i = bisect_right(self._starts, addr) - 1
        if i >= 0:
            start, size, idx = self._spans[i]
            if start <= addr < start + size:
                return self.mod.sections[idx]
        raise PlanError(f"address {addr:#x} is not inside any allocated section",
                        file=self.label)

    # -- the steps ----------------------------------------------------------------------

    def run(self) -> dict[int, bytearray]:
        dyn = self.mod.elf.dynamic
        if dyn is not None and dyn.relr:
            raise PlanError("DT_RELR (packed relative relocations) cannot be re-encoded for "
                            "moved sections yet; relink the library without "
                            "-z pack-relative-relocs or use whole-image materialization",
                            module=self.mod.name)
        if dyn is not None and dyn.textrel:
            raise PlanError("text relocations (DT_TEXTREL): moved code would be written "
                            "after it is made executable; use whole-image materialization",
                            module=self.mod.name)
        retained_in = set()
        for s in self.mod.sections:
            if s.sh_type == SHT_RELA and not s.allocated and 0 < s.info < len(self.mod.sections):
                target = self.mod.sections[s.info]
                if target.mem_class is not None:
                    retained_in.add(target.index)
                    if target.name != ".eh_frame":
                        self._retained(s, target)
        for s in self.mod.alloc_sections():
            if s.sh_type == SHT_DYNSYM:
                self._dynsym(s)
        for s in self.mod.alloc_sections():
            if s.sh_type == SHT_RELA:
                self._alloc_relocs(s)
        for s in self.mod.alloc_sections():
            if s.sh_type == SHT_DYNAMIC:
                self._dynamic(s)
        for s in self.mod.alloc_sections():
            if s.mem_class is MemoryClass.CODE and s.index not in retained_in and \
                    (s.name.startswith(".plt") or s.name == ".iplt"):
                self._stubs(s)
        from relink.plan.ehframe import repair_eh_frame

        repair_eh_frame(self)
        return self.buf

    def _symbols(self, symtab: Section) -> list[tuple[int, int, int, int]]:
        """(value, shndx, type, name offset) per symbol of a (possibly non-alloc) table."""
        raw = symtab.file_bytes()
        if len(raw) % _SYM.size:
            raise PlanError("symbol table size is not a multiple of 24", file=self.label,
                            section=symtab.name)
        return [(v, shndx, info & 0xF, name)
                for name, info, _o, shndx, v, _sz in _SYM.iter_unpack(raw)]

    def _retained(self, rel: Section, target: Section) -> None:
        if not 0 < rel.link < len(self.mod.sections):
            raise PlanError("retained relocation section has no symbol table",
                            file=self.label, section=rel.name)
        symtab = self.mod.sections[rel.link]
        syms = self._symtabs.get(symtab.index)
        if syms is None:
            syms = self._symtabs[symtab.index] = self._symbols(symtab)
        raw = rel.file_bytes()
        if len(raw) % _RELA.size:
            raise PlanError("relocation section size is not a multiple of 24",
                            file=self.label, section=rel.name)
        entries = sorted(_RELA.iter_unpack(raw))
        self._retained_into(entries, syms, symtab, target, target)
        offsets = [e[0] for e in entries]
        for frag in self.fragments.get(target.index, ()):
            lo = bisect_left(offsets, frag.addr)
            hi = bisect_left(offsets, frag.addr + frag.orig_size)
            self._retained_into(entries[lo:hi], syms, symtab, target, frag)

    def _retained_into(self, entries: list[tuple[int, int, int]],
                       syms: list[tuple[int, int, int, int]], symtab: Section,
                       target: Section, copy: Section) -> None:
        """Apply retained relocations of `target` to the bytes of `copy` (`target`
        itself, or a function fragment of it; places outside it are skipped)."""
        buf = self.buf[copy.index]
        old_base, new_base = copy.addr, self.new[copy.index]
        fragment = copy is not target
        got = None
        for r_offset, info, addend in entries:
            rtype, symi = info & 0xFFFFFFFF, info >> 32
            if rtype in _KEEP:
                continue
            name = rtype_name(EM_X86_64, rtype)
            where = f"{name} at {r_offset:#x} in {target.name}"
            if symi >= len(syms):
                raise PlanError(f"{where}: symbol index {symi} out of range",
                                file=self.label, section=target.name)
            value, shndx, stype, _n = syms[symi]
            off = r_offset - old_base
            if fragment and not 0 <= off < copy.orig_size:
                continue
            if rtype in _PCREL:
                width, _signed = _PCREL[rtype]
            elif rtype in _ABS:
                width = _ABS[rtype][0]
            elif rtype == R_GOTOFF64:
                width = 8
            else:
                raise PlanError(f"cannot repair {where}: relocation type not supported in "
                                "moved code", file=self.label, section=target.name)
            if off < 0 or off + width > len(buf):
                raise PlanError(f"{where}: place is outside the section", file=self.label,
                                section=target.name)
            p_new = new_base + off
            s_new = self.remap_symbol(shndx, value, stype, where)
            if rtype in _PCREL:
                fmt = "<i" if width == 4 else "<q"
                field = struct.unpack_from(fmt, buf, off)[0]
                t_old = field + r_offset - addend
                # The symbol decides when the code refers to it directly; otherwise
                # (GOT slot, PLT stub) the recovered address is looked up.
                t_new = s_new if s_new is not None and t_old == value else \
                    self.remap(t_old, where)
                _store(buf, off, width, True, t_new + addend - p_new, where, self.label)
            elif rtype == R_GOTOFF64:
                if got is None:
                    got = self._got_symbol(syms, symtab)
                if s_new is None:
                    continue
                _store(buf, off, 8, True, s_new + addend - got, where, self.label)
            else:
                if s_new is None:
                    continue  # undefined / absolute: the dynamic relocation sets it
                width, signed = _ABS[rtype]
                _store(buf, off, width, signed, s_new + addend, where, self.label)
                if rtype == 1 and not fragment:
                    self.abs_targets[r_offset] = s_new + addend

    def _got_symbol(self, syms: list[tuple[int, int, int, int]], symtab: Section) -> int:
        strtab = self.mod.sections[symtab.link].file_bytes() \
            if 0 < symtab.link < len(self.mod.sections) else b""
        for value, shndx, stype, name in syms:
            if strtab[name:name + 22] == b"_GLOBAL_OFFSET_TABLE_\0":
                new = self.remap_symbol(shndx, value, stype, "_GLOBAL_OFFSET_TABLE_")
                if new is not None:
                    return new
        raise PlanError("R_X86_64_GOTOFF64 needs _GLOBAL_OFFSET_TABLE_ in .symtab",
                        file=self.label)

    def _dynsym(self, s: Section) -> None:
        buf = self.buf[s.index]
        for i in range(1, len(buf) // _SYM.size):
            at = i * _SYM.size
            name, info, other, shndx, value, size = _SYM.unpack_from(buf, at)
            new = self.remap_symbol(shndx, value, info & 0xF, f"dynamic symbol {i}")
            if new is not None:
                _SYM.pack_into(buf, at, name, info, other, shndx, new, size)

    def _alloc_relocs(self, s: Section) -> None:
        buf = self.buf[s.index]
        for at in range(0, len(buf) - len(buf) % _RELA.size, _RELA.size):
            r_offset, info, addend = _RELA.unpack_from(buf, at)
            rtype = info & 0xFFFFFFFF
            if rtype == 0:
                continue
            where = f"{rtype_name(EM_X86_64, rtype)} at {r_offset:#x} in {s.name}"
            new_off = self.remap(r_offset, where)
            if rtype == R_RELATIVE and r_offset in self.abs_targets:
                addend = self.abs_targets[r_offset]  # symbol-exact (end-of-section safe)
            elif rtype in (R_RELATIVE, R_IRELATIVE):
                addend = self.remap(addend, where)
            elif rtype == R_JUMP_SLOT:
                self._lazy_slot(r_offset, where)
            _RELA.pack_into(buf, at, new_off, info, addend)

    def _lazy_slot(self, slot: int, where: str) -> None:
        sec = self.section_at(slot)
        gbuf = self.buf[sec.index]
        off = slot - sec.addr
        if off + 8 > len(gbuf):
            return
        value = struct.unpack_from("<Q", gbuf, off)[0]
        if value and any(st <= value < st + n for st, n, _ in self._spans):
            struct.pack_into("<Q", gbuf, off, self.remap(value, where))

    def _dynamic(self, s: Section) -> None:
        buf = self.buf[s.index]
        entries = [_DYN.unpack_from(buf, at) for at in range(0, len(buf) - 15, 16)]
        tags: dict[int, int] = {}
        for tag, val in entries:
            if tag == DT_NULL:
                break
            tags.setdefault(tag, val)
        rela, relasz = tags.get(DT_RELA, 0), tags.get(DT_RELASZ, 0)
        jmprel, pltrelsz = tags.get(DT_JMPREL, 0), tags.get(DT_PLTRELSZ, 0)
        plt_is_tail = bool(rela and jmprel and rela <= jmprel < rela + relasz
                           and jmprel + pltrelsz == rela + relasz)
        for i, (tag, val) in enumerate(entries):
            if tag == DT_NULL:
                break
            if tag in ADDRESS_TAGS and tag != DT_DEBUG and val:
                if tag == DT_RELR:
                    continue
                _DYN.pack_into(buf, i * 16, tag, self.remap(val, f"dynamic tag {tag:#x}"))
            elif tag == DT_RELASZ and plt_is_tail:
                # .rela.plt no longer follows .rela.dyn: DT_RELASZ covers .rela.dyn only.
                _DYN.pack_into(buf, i * 16, tag, val - pltrelsz)
        pltgot = tags.get(DT_PLTGOT)
        if pltgot:
            sec = self.section_at(pltgot)
            gbuf, off = self.buf[sec.index], pltgot - sec.addr
            if off + 8 <= len(gbuf) and struct.unpack_from("<Q", gbuf, off)[0] == s.addr:
                struct.pack_into("<Q", gbuf, off, self.new[s.index])

    def _stubs(self, s: Section) -> None:
        """Re-target the RIP-relative operands of linker-generated PLT stubs."""
        buf = self.buf[s.index]
        old, new = s.addr, self.new[s.index]
        i, n = 0, len(buf)

        def fix(disp_at: int, next_at: int) -> None:
            disp = struct.unpack_from("<i", buf, disp_at)[0]
            where = f"PLT stub at {old + i:#x} in {s.name}"
            target = self.remap(old + next_at + disp, where)
            _store(buf, disp_at, 4, True, target - (new + next_at), where, self.label)

        while i < n:
            b = bytes(buf[i:i + 9])
            if b.startswith(b"\xf3\x0f\x1e\xfa"):        # endbr64
                i += 4
            elif b[:2] in (b"\xff\x35", b"\xff\x25"):     # push / jmp *disp(%rip)
                fix(i + 2, i + 6)
                i += 6
            elif b[:3] == b"\xf2\xff\x25":                 # bnd jmp *disp(%rip)
                fix(i + 3, i + 7)
                i += 7
            elif b[:1] == b"\x68":                          # push $index
                i += 5
            elif b[:1] == b"\xe9":                          # jmp rel32
                fix(i + 1, i + 5)
                i += 5
            elif b[:2] == b"\xf2\xe9":                      # bnd jmp rel32
                fix(i + 2, i + 6)
                i += 6
            else:
                nop = next((p for p in _STUB_NOPS if b.startswith(p)), None)
                if nop is None:
                    raise PlanError(f"unrecognized instruction bytes {b[:6].hex()} at offset "
                                    f"{i:#x} of linker-generated code: cannot move it",
                                    file=self.label, section=s.name)
                i += len(nop)


def _store(buf: bytearray, off: int, width: int, signed: bool | None, value: int,
           where: str, label: str) -> None:
    bits = 8 * width
    if signed is None:
        value &= (1 << bits) - 1
    elif signed and not -(1 << (bits - 1)) <= value < (1 << (bits - 1)) or \
            not signed and not 0 <= value < (1 << bits):
        raise PlanError(f"cannot repair {where}: new value {value:#x} does not fit in "
                        f"{bits} bits", file=label)
    fmt = {(4, True): "<i", (4, False): "<I", (8, True): "<q", (8, False): "<Q"}[
        (width, bool(signed) if signed is not None else False)]
    struct.pack_into(fmt, buf, off, value)
