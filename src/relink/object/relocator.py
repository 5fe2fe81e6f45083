"""Apply object relocations through per-ISA recipe tables and the shared field encoders.

Relocate stage of `relink.object` (parse -> link -> layout -> **relocate** -> module).
The relocator works on a bytearray holding the whole image (copied into the target
memory afterwards, so the same code serves host memory, buffers and remote backends).
For each kept relocation section it computes S (the symbol's address: a section of the
unit, a merged-constant pool entry, a COMMON, a GOT base or an external definition), A
and P, evaluates the recipe's formula and lets the recipe's `Field` check and encode
the value. A value that does not fit raises `RelocationOverflowError`; a type without a
recipe raises `UnsupportedRelocationError` naming it; nothing is skipped silently.

Call relocations (``L+A-P``) go straight to the target when it is in reach and through
the synthesized stub otherwise. RISC-V ``PCREL_LO12`` relocations reuse the value
computed for their ``PCREL_HI20``/``GOT_HI20`` partner (looked up by the partner's
address, as the psABI defines). RISC-V ``ALIGN`` is checked: relink never deletes
bytes, so in code the assembler's NOP padding stays and runs (correct, only the
alignment hint is lost; counted in `Relocator.unaligned`), in data it is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relink.arch import rtype_name
from relink.errors import (
    RelocationError,
    RelocationOverflowError,
    UnsupportedRelocationError,
)
from relink.object.layout import Layout, symbol_key
from relink.object.link import STT_SECTION, LinkUnit
from relink.object.parse import SHF_EXECINSTR, SHN_ABS, SHN_COMMON, SHN_UNDEF
from relink.object.tls import ObjectTls
from relink.relocation.fields import FieldOverflow, ObjectArch, Recipe

__all__ = ["ObjectRelocation", "Relocator"]

_PAGE = ~0xFFF
_GOT_FORMULAS = frozenset({"G+A-P", "G", "Page(G)-Page(P)", "G+A-GOT", "G+A-GOT/i386"})
_TLS_KEYS = (("gd",), ("ld",), ("ie",), ("desc",))


_METADATA = (".eh_frame", ".gcc_except_table", ".debug", ".stack_sizes", ".note",
             "__patchable_function_entries", ".sframe")


class _Discarded(RelocationError):
    """A symbol lives in a section dropped by COMDAT resolution."""

    def __init__(self, section: str) -> None:
        self.section = section
        super().__init__(f"refers to a symbol in section {section}, discarded because "
                         "another object's COMDAT copy won")


@dataclass
class ObjectRelocation:
    """What a ``relocation_hook`` sees for a relocation type relink has no recipe for.

    The hook patches ``buffer[at:at + n]`` (the image bytes, written to memory after
    relocation) and returns True, or returns False to let relink raise
    `UnsupportedRelocationError`.
    """

    object: str
    section: str
    offset: int          # r_offset inside the section
    address: int         # P: the runtime address of the place
    r_type: int
    r_type_name: str
    symbol: str | None
    s: int               # S: the symbol's resolved address (0 for none)
    a: int               # A: the addend
    buffer: memoryview
    at: int              # index of the place in `buffer`


class Relocator:
    """Relocates one laid-out link unit into `buf` (byte 0 = runtime address `base`).

    Attributes:
        counts: relocation type name -> how many were applied.
        unaligned: RISC-V ALIGN paddings left in place in code.
    """

    def __init__(self, unit: LinkUnit, lay: Layout, arch: ObjectArch, base: int,
                 buf: bytearray, tls: ObjectTls | None = None,
                 hook: Callable[[ObjectRelocation], bool] | None = None,
                 relax: bool = True) -> None:
        self.hook = hook
        self.relax = relax
        self.unit = unit
        self.lay = lay
        self.arch = arch
        self.base = base
        self.buf = buf
        self.tls = tls
        self.counts: dict[str, int] = {}
        self.unaligned = 0
        self.got_base = base + lay.got_piece.offset if lay.got_piece is not None else 0
        self.plt_base = base + lay.plt_piece.offset if lay.plt_piece is not None else 0
        self.tls_buf = bytearray(lay.tls_size)  # the TLS initialization image
        for p in lay.tls:
            if not p.nobits:
                self.tls_buf[p.offset:p.offset + p.size] = unit.objects[p.obj].data(p.index)
        self._tls_done: set[Any] = set()
        self._hi: dict[int, int] = {}
        self._uleb: dict[int, int] = {}

    # -- addresses -------------------------------------------------------------------

    def section_addr(self, oi: int, shndx: int) -> int | None:
        """Runtime address of a section; for a TLS section, its offset in the block."""
        p = self.lay.sections.get((oi, shndx))
        if p is None:
            return None
        return p.offset if p.group == "tls" else self.base + p.offset

    def defined_addr(self, oi: int, si: int) -> int:
        """Runtime address of a symbol defined in object `oi` (not undefined)."""
        obj = self.unit.objects[oi]
        shndx = obj.sym_shndx[si]
        value = obj.sym_values[si]
        if shndx == SHN_ABS:
            return value
        if shndx == SHN_COMMON:
            return self.base + self.lay.commons[obj.sym_names[si]].offset
        mm = self.lay.merged.get((oi, shndx))
        if mm is not None:
            if obj.sym_infos[si] & 0xF == STT_SECTION:
                return self.base + mm.pool.offset  # the addend selects the piece
            out = mm.map(value)
            if out is None:
                raise RelocationError(f"symbol '{obj.sym_names[si]}' points outside every "
                                      f"piece of merged section {obj.sections[shndx].name}",
                                      file=obj.label)
            return self.base + mm.pool.offset + out
        at = self.section_addr(oi, shndx)
        if at is None:
            if shndx in self.unit.discarded[oi]:
                raise _Discarded(obj.sections[shndx].name)
            raise RelocationError(f"symbol '{obj.sym_names[si] or obj.sections[shndx].name}'"
                                  f" is in section {obj.sections[shndx].name}, which is not "
                                  "loaded", file=obj.label)
        return at + value

    def symbol_addr(self, oi: int, si: int) -> int:
        """S for symbol `si` of object `oi` (0 for the null symbol)."""
        if si == 0:
            return 0
        unit = self.unit
        obj = unit.objects[oi]
        name = obj.sym_names[si]
        shndx = obj.sym_shndx[si]
        if obj.sym_infos[si] >> 4 == 0 and shndx != SHN_UNDEF:
            return self.defined_addr(oi, si)
        d = unit.defs.get(name)
        if d is not None:
            return self.defined_addr(d.obj, d.sym)
        if name in self.lay.commons:
            return self.base + self.lay.commons[name].offset
        if name in self.lay.linker:
            return self.base + self.lay.linker[name]
        if name in unit.external:
            return unit.external[name]
        if name == self.arch.got_symbol and self.lay.got_piece is not None:
            return self.got_base
        if shndx != SHN_UNDEF:
            return self.defined_addr(oi, si)
        raise RelocationError(f"symbol '{name}' was never resolved", file=obj.label)

    def symbol_size(self, oi: int, si: int) -> int:
        obj = self.unit.objects[oi]
        name = obj.sym_names[si]
        if obj.sym_shndx[si] != SHN_UNDEF or obj.sym_infos[si] >> 4 == 0:
            return obj.sym_sizes[si]
        d = self.unit.defs.get(name)
        if d is not None:
            return self.unit.objects[d.obj].sym_sizes[d.sym]
        if name in self.unit.commons:
            return self.unit.commons[name][0]
        return self.unit.external_sizes.get(name, 0)

    def target_value(self, key: Any) -> int:
        """What the GOT slot of `key` holds (IFUNC slots are filled after relocation)."""
        oi, si = self.lay.targets[key]
        return self.symbol_addr(oi, si)

    # -- GOT and stubs ------------------------------------------------------------------

    def fill_got_plt(self, resolve_ifunc: Callable[[int], int] | None) -> None:
        """Write every GOT slot and PLT stub (IFUNC slots only with `resolve_ifunc`)."""
        lay, word = self.lay, self.arch.word_size
        if lay.got_piece is None:
            return
        mask = (1 << (8 * word)) - 1
        for key, off in lay.got.items():
            if isinstance(key, tuple) and key[:1] in _TLS_KEYS:
                continue  # TLS slots are written when their relocation is applied
            target = key[1] if isinstance(key, tuple) and key[:1] == ("plt",) else key
            if target in lay.ifuncs:
                if resolve_ifunc is None:
                    continue
                value = resolve_ifunc(self.target_value(target))
            else:
                value = self.target_value(target)
            at = lay.got_piece.offset + off
            self.buf[at:at + word] = (value & mask).to_bytes(word, "little")
        if lay.plt_piece is not None:
            size = self.arch.stub_size
            for key, off in lay.plt.items():
                stub = self.plt_base + off
                slot = self.got_base + lay.got[("plt", key)]
                at = lay.plt_piece.offset + off
                self.buf[at:at + size] = self.arch.make_stub(stub, slot)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Apply every relocation of every kept section (HI20 partners first)."""
        self.fill_got_plt(None)
        later: list[tuple[int, Any, int, Recipe]] = []
        work: list[tuple[int, Any, Any]] = []
        for oi, obj in enumerate(self.unit.objects):
            dropped = self.unit.discarded[oi]
            for target, rsecs in obj.relocs.items():
                placed = self.lay.sections.get((oi, target))
                if placed is None or target in dropped:
                    continue  # relocations of unloaded sections (debug info, skipped)
                work += [(oi, rs, placed) for rs in rsecs if rs.index not in dropped]
        # The TLS image first: it is handed to the TLS runtime before any TLS formula.
        work.sort(key=lambda w: w[2].group != "tls")
        for oi, rs, placed in work:
            if self.tls is not None and placed.group != "tls" and not self.tls.image:
                self.tls.image = bytes(self.tls_buf[:self.lay.tls_filesz])
            for k in range(len(rs.offsets)):
                recipe = self.arch.recipes.get(rs.types[k])
                if recipe is not None and recipe.formula == "hi-partner":
                    later.append((oi, rs, k, recipe))
                    continue
                self._one(oi, rs, k, placed, recipe)
        if self.tls is not None and not self.tls.image:
            self.tls.image = bytes(self.tls_buf[:self.lay.tls_filesz])
        for oi, rs, k, recipe in later:
            self._one(oi, rs, k, self.lay.sections[(oi, rs.target)], recipe)

    def _context(self, oi: int, rs: Any, k: int, placed: Any) -> ObjectRelocation:
        obj = self.unit.objects[oi]
        si = rs.syms[k]
        buf = self.tls_buf if placed.group == "tls" else self.buf
        return ObjectRelocation(
            object=obj.label, section=obj.sections[rs.target].name, offset=rs.offsets[k],
            address=self.base + placed.offset + rs.offsets[k], r_type=rs.types[k],
            r_type_name=rtype_name(obj.header.e_machine, rs.types[k]),
            symbol=obj.sym_names[si] if si else None, s=self.symbol_addr(oi, si),
            a=rs.addends[k], buffer=memoryview(buf), at=placed.offset + rs.offsets[k])

    def _error_args(self, oi: int, rs: Any, k: int) -> dict[str, Any]:
        obj = self.unit.objects[oi]
        t = rs.types[k]
        si = rs.syms[k]
        sym = obj.sym_names[si] if si else None
        if si and not sym and obj.sym_infos[si] & 0xF == STT_SECTION:
            sym = obj.sections[obj.sym_shndx[si]].name
        return {"file": obj.label, "r_type": t,
                "r_type_name": rtype_name(obj.header.e_machine, t), "symbol": sym,
                "offset": rs.offsets[k]}

    def _one(self, oi: int, rs: Any, k: int, placed: Any, recipe: Recipe | None) -> None:
        if recipe is None and self.hook is not None:
            if self.hook(self._context(oi, rs, k, placed)):
                key_name = f"hook:{rtype_name(self.unit.objects[oi].header.e_machine, rs.types[k])}"
                self.counts[key_name] = self.counts.get(key_name, 0) + 1
                return
        if recipe is None:
            raise UnsupportedRelocationError(
                **self._error_args(oi, rs, k),
                detail=f"relink has no {self.arch.name} object-relocation recipe for it")
        formula = recipe.formula
        name = recipe.name
        self.counts[name] = self.counts.get(name, 0) + 1
        if formula == "none":
            return
        buf = self.tls_buf if placed.group == "tls" else self.buf
        off = placed.offset + rs.offsets[k]
        place = self.base + off
        si = rs.syms[k]
        a = rs.addends[k]
        if not rs.rela and recipe.field is not None:  # REL: the addend is at the place
            try:
                a = recipe.field.read_addend(buf, off)
            except NotImplementedError as exc:
                raise UnsupportedRelocationError(**self._error_args(oi, rs, k),
                                                 detail=str(exc)) from None
        obj = self.unit.objects[oi]
        try:
            s = self.symbol_addr(oi, si)
        except _Discarded as gone:
            if not placed.name.startswith(_METADATA):
                raise RelocationError(
                    f"refers to a symbol in section {gone.section}, discarded because "
                    "another object's COMDAT copy won", **self._error_args(oi, rs, k)
                ) from None
            s = 0  # unwind/debug entries for the discarded copy: ld writes 0 as well
        if si and obj.sym_infos[si] & 0xF == STT_SECTION:
            mm = self.lay.merged.get((oi, obj.sym_shndx[si]))
            if mm is not None:
                mapped = mm.map(a)
                if mapped is None:
                    raise RelocationError("addend points outside the merged section",
                                          **self._error_args(oi, rs, k))
                s, a = s + mapped, 0
        key = symbol_key(self.unit, oi, si) if si else None
        if key is not None and key in self.lay.ifuncs and formula not in _GOT_FORMULAS:
            s = self.plt_base + self.lay.plt[key]  # the canonical address of an IFUNC
        if recipe.relax and self.relax and key not in self.lay.ifuncs and \
                self._relax_gotpcrelx(buf, off, s + a - place):
            self.counts[f"{name} (relaxed)"] = self.counts.get(f"{name} (relaxed)", 0) + 1
            return
        if recipe.needs == "tls":
            value: int | None = self._tls_value(formula, s, a, place, key, oi, si, rs, k)
        else:
            value = self._value(formula, s, a, place, key, oi, si, rs, k, off, recipe)
        if value is None:
            return
        field = recipe.field
        assert field is not None
        # Address arithmetic is modulo 2^64 (2^32 for ELF32): read the result as a signed
        # quantity, so 0xffffffff80000000 is -2^31 for a sign-extended 32-bit field.
        bits = 8 * self.arch.word_size
        value = ((value + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))
        try:
            field.apply(buf, off, value)
        except FieldOverflow as exc:
            err = RelocationOverflowError(**self._error_args(oi, rs, k), value=exc.value,
                                          bits=exc.bits, signed=exc.signed)
            if formula.endswith("-P") and exc.bits <= 32:
                err.add_note("relink: the target is more than 2 GiB from the code, out of "
                             "reach of a 32-bit PC-relative field (non-PIC code; GCC's PIE "
                             "code reads extern data this way too): compile the object "
                             "with -fPIC, or provide the data within 2 GiB of the other "
                             "targets")
            raise err from None

    def _got(self, key: Any, oi: int, rs: Any, k: int) -> int:
        off = self.lay.got.get(key)
        if off is None:
            raise RelocationError("no GOT slot was planned for this symbol",
                                  **self._error_args(oi, rs, k))
        return self.got_base + off

    def _value(self, formula: str, s: int, a: int, p: int, key: Any, oi: int, si: int,
               rs: Any, k: int, off: int, recipe: Recipe) -> int | None:
        if formula == "S+A":
            return s + a
        if formula == "S+A-P":
            v = s + a - p
            if rs.types[k] in self.arch.pcrel_hi:
                self._hi[p] = v
            return v
        if formula == "L+A-P":
            v = s + a - p
            stub = self.lay.plt.get(key) if key is not None else None
            if stub is not None:
                assert recipe.field is not None
                try:
                    recipe.field.check(v)
                except FieldOverflow:
                    v = self.plt_base + stub + a - p
            return v
        if formula in _GOT_FORMULAS:
            g = self._got(key, oi, rs, k)
            if formula == "G":
                return g + a
            if formula == "G+A-GOT":
                return g + a - self.got_base
            if formula == "G+A-GOT/i386":
                # R_386_GOT32X: relative to the GOT base register, unless the ModRM byte
                # says there is none (mod 00, r/m 101: an absolute disp32).
                no_base = off >= 1 and self.buf[off - 1] & 0xC7 == 0x05
                return g + a if no_base else g + a - self.got_base
            if formula == "Page(G)-Page(P)":
                return ((g + a) & _PAGE) - (p & _PAGE)
            v = g + a - p
            if rs.types[k] in self.arch.pcrel_hi:
                self._hi[p] = v
            return v
        if formula == "Page(S+A)-Page(P)":
            return ((s + a) & _PAGE) - (p & _PAGE)
        if formula == "GOT+A-P":
            return self._need_got(oi, rs, k) + a - p
        if formula == "S+A-GOT":
            return s + a - self._need_got(oi, rs, k)
        if formula == "Z+A":
            return self.symbol_size(oi, si) + a
        if formula == "hi-partner":
            hi = self._hi.get(s)
            if hi is None:
                raise RelocationError("no PCREL_HI20/GOT_HI20 relocation at the address "
                                      "its LO12 partner names", **self._error_args(oi, rs, k))
            return hi
        if formula == "align":
            self._align(oi, rs, k, p, a)
            return None
        if formula == "uleb-set":
            self._uleb[p] = s + a
            return None
        if formula == "uleb-sub":
            if p not in self._uleb:
                raise RelocationError("SUB_ULEB128 without a SET_ULEB128 at the same place",
                                      **self._error_args(oi, rs, k))
            self._write_uleb(off, self._uleb.pop(p) - (s + a), oi, rs, k)
            return None
        raise UnsupportedRelocationError(**self._error_args(oi, rs, k),
                                         detail=f"formula {formula} is not implemented")

    def _tls_value(self, formula: str, s: int, a: int, p: int, key: Any, oi: int, si: int,
                   rs: Any, k: int) -> int:
        """TLS formulas: the unit's own block, or another module's TLS variable."""
        tls = self.tls
        if tls is None:
            raise UnsupportedRelocationError(
                **self._error_args(oi, rs, k),
                detail="thread-local storage needs relink's native TLS runtime, which "
                       "serves x86_64 objects loaded into this process only (not a buffer "
                       "or an emulator)")
        obj = self.unit.objects[oi]
        name = obj.sym_names[si]
        own = obj.sym_shndx[si] != SHN_UNDEF or name in self.unit.defs
        provider = None if own else self.unit.providers.get(name)
        if not own and (provider is None or not s):
            raise RelocationError("thread-local symbol is not defined anywhere",
                                  **self._error_args(oi, rs, k))
        if formula == "tls-le":
            if not own:
                raise RelocationError("local-exec TLS access to another module's variable",
                                      **self._error_args(oi, rs, k))
            return tls.tpoff(s + a)
        if formula == "tls-dtp":
            if not own:
                raise RelocationError("DTPOFF relocation against another module's variable",
                                      **self._error_args(oi, rs, k))
            return s + a
        if formula == "tls-ld":
            slot_key: Any = ("ld",)
        else:
            slot_key = ({"tls-gd": "gd", "tls-ie": "ie", "tls-desc": "desc"}[formula], key)
        slot = self._got(slot_key, oi, rs, k)
        if slot_key not in self._tls_done:
            self._tls_done.add(slot_key)
            if formula == "tls-ld":
                words = [tls.modid(), 0]
            elif formula == "tls-gd":
                words = list((tls.modid(), s) if own else tls.ext_gd(provider, s))
            elif formula == "tls-ie":
                words = [tls.tpoff(s) if own else tls.ext_tpoff(provider, s)]
            else:
                words = list(tls.desc(s) if own else tls.ext_desc(provider, s))
            word = self.arch.word_size
            at = slot - self.base
            for i, w in enumerate(words):
                self.buf[at + i * word:at + (i + 1) * word] = \
                    (w % (1 << (8 * word))).to_bytes(word, "little")
        return slot + a - p

    @staticmethod
    def _relax_gotpcrelx(buf: Any, off: int, disp: int) -> bool:
        """Rewrite a GOT load into a direct reference, as ld does (psABI §B.2).

        ``mov foo@GOTPCREL(%rip), %reg`` becomes ``lea foo(%rip), %reg``; ``call/jmp
        *foo@GOTPCREL(%rip)`` become ``addr32 call foo`` / ``jmp foo; nop``. Done only
        when the final address is within ±2 GiB of the place; relink knows every
        address at load time, so this also applies to symbols of other modules.
        """
        if off < 2 or not (-(1 << 31) <= disp - 1 and disp + 1 < (1 << 31)):
            return False
        op, modrm = buf[off - 2], buf[off - 1]
        if op == 0x8B and modrm & 0xC7 == 0x05:        # mov disp(%rip), %reg
            buf[off - 2] = 0x8D                         # lea disp(%rip), %reg
        elif op == 0xFF and modrm == 0x15:              # call *disp(%rip)
            buf[off - 2:off] = b"\x67\xe8"              # addr32 call rel32
        elif op == 0xFF and modrm == 0x25:              # jmp *disp(%rip)
            buf[off - 2] = 0xE9                         # jmp rel32 ; nop
            buf[off - 1:off + 3] = (disp + 1).to_bytes(4, "little", signed=True)
            buf[off + 3] = 0x90
            return True
        else:
            return False
        buf[off:off + 4] = disp.to_bytes(4, "little", signed=True)
        return True

    def _need_got(self, oi: int, rs: Any, k: int) -> int:
        if self.lay.got_piece is None:
            raise RelocationError("relocation relative to the GOT but no GOT was planned",
                                  **self._error_args(oi, rs, k))
        return self.got_base

    def _align(self, oi: int, rs: Any, k: int, p: int, a: int) -> None:
        obj = self.unit.objects[oi]
        rvc = bool(obj.header.e_flags & 1)
        n = a + (2 if rvc else 4)
        if n & (n - 1) or (p + a) % n == 0:
            if n & (n - 1):
                raise RelocationError(f"ALIGN padding of {a} bytes is not 2^k - "
                                      f"{2 if rvc else 4}", **self._error_args(oi, rs, k))
            return
        if obj.sections[rs.target].sh_flags & SHF_EXECINSTR:
            self.unaligned += 1  # the NOPs stay and execute: correct, merely unaligned
            return
        raise UnsupportedRelocationError(
            **self._error_args(oi, rs, k),
            detail="alignment of data would need linker relaxation (byte deletion), "
                   "which relink does not do; compile with -mno-relax")

    def _write_uleb(self, off: int, value: int, oi: int, rs: Any, k: int) -> None:
        n = 0
        while off + n < len(self.buf) and self.buf[off + n] & 0x80:
            n += 1
        n += 1
        value &= (1 << 64) - 1
        if value >> (7 * n):
            raise RelocationOverflowError(**self._error_args(oi, rs, k), value=value,
                                          bits=7 * n, signed=False)
        for i in range(n):
            byte = (value >> (7 * i)) & 0x7F
            self.buf[off + i] = byte | (0x80 if i < n - 1 else 0)
