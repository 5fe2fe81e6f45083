"""aarch64 object-relocation recipes (ET_REL): data for the shared relocator.

Arch layer; pure data over `relink.relocation.fields`. Formulas and overflow checks from
"ELF for the Arm 64-bit Architecture" (aaelf64) §5.7: data (ABS64/32/16, PREL64/32/16),
MOVZ/MOVK groups (MOVW_UABS_G0..G3 with and without _NC, MOVW_SABS_G0..G2), PC-relative
addressing (ADR_PREL_LO21, ADR_PREL_PG_HI21(_NC), LD_PREL_LO19), the ``:lo12:`` family
(ADD_ABS_LO12_NC, LDST8/16/32/64/128_ABS_LO12_NC — one encoder with the access-size
shift), branches (CALL26 and JUMP26 share one encoder and get a range-extension veneer
when the target is beyond ±128 MiB; CONDBR19, TSTBR14) and GOT-indirect addressing
(ADR_GOT_PAGE, LD64_GOT_LO12_NC, GOT_LD_PREL19). TLS relocations have no recipe: there
is no native aarch64 TLS runtime on this x86_64 host, and the error says so by name.

The veneer is ``adrp x16, slot; ldr x16, [x16, :lo12:slot]; br x16; nop`` (x16 is IP0,
the register the ABI reserves for exactly this), reading the target from a GOT slot.
"""

from __future__ import annotations

from relink.arch.rtypes import R_AARCH64 as RT
from relink.relocation.fields import (
    NONE,
    ObjectArch,
    Recipe,
    aarch64_add_lo12,
    aarch64_adr,
    aarch64_imm14,
    aarch64_imm19,
    aarch64_imm26,
    aarch64_movw,
    either,
    signed,
    unsigned,
    word,
)

__all__ = ["OBJECT_ARCH", "RECIPES"]

_B26 = aarch64_imm26(signed(28, 4))
_PAGE = aarch64_adr(12, signed(33))

RECIPES: dict[int, Recipe] = {RT[f"R_AARCH64_{r.name}"].value: r for r in (
    Recipe("NONE", "none"),
    Recipe("NULL", "none"),
    Recipe("ABS64", "S+A", word(8)),
    Recipe("ABS32", "S+A", word(4, either(32))),
    Recipe("ABS16", "S+A", word(2, either(16))),
    Recipe("PREL64", "S+A-P", word(8)),
    Recipe("PREL32", "S+A-P", word(4, either(32))),
    Recipe("PREL16", "S+A-P", word(2, either(16))),
    Recipe("PLT32", "L+A-P", word(4, signed(32)), "plt"),
    Recipe("MOVW_UABS_G0", "S+A", aarch64_movw(0, unsigned(16))),
    Recipe("MOVW_UABS_G0_NC", "S+A", aarch64_movw(0, NONE)),
    Recipe("MOVW_UABS_G1", "S+A", aarch64_movw(1, unsigned(32))),
    Recipe("MOVW_UABS_G1_NC", "S+A", aarch64_movw(1, NONE)),
    Recipe("MOVW_UABS_G2", "S+A", aarch64_movw(2, unsigned(48))),
    Recipe("MOVW_UABS_G2_NC", "S+A", aarch64_movw(2, NONE)),
    Recipe("MOVW_UABS_G3", "S+A", aarch64_movw(3, NONE)),
    Recipe("MOVW_SABS_G0", "S+A", aarch64_movw(0, signed(17), signed_op=True)),
    Recipe("MOVW_SABS_G1", "S+A", aarch64_movw(1, signed(33), signed_op=True)),
    Recipe("MOVW_SABS_G2", "S+A", aarch64_movw(2, signed(49), signed_op=True)),
    Recipe("LD_PREL_LO19", "S+A-P", aarch64_imm19(signed(21, 4))),
    Recipe("ADR_PREL_LO21", "S+A-P", aarch64_adr(0, signed(21))),
    Recipe("ADR_PREL_PG_HI21", "Page(S+A)-Page(P)", _PAGE),
    Recipe("ADR_PREL_PG_HI21_NC", "Page(S+A)-Page(P)", aarch64_adr(12, NONE)),
    Recipe("ADD_ABS_LO12_NC", "S+A", aarch64_add_lo12(0)),
    Recipe("LDST8_ABS_LO12_NC", "S+A", aarch64_add_lo12(0)),
    Recipe("LDST16_ABS_LO12_NC", "S+A", aarch64_add_lo12(1)),
    Recipe("LDST32_ABS_LO12_NC", "S+A", aarch64_add_lo12(2)),
    Recipe("LDST64_ABS_LO12_NC", "S+A", aarch64_add_lo12(3)),
    Recipe("LDST128_ABS_LO12_NC", "S+A", aarch64_add_lo12(4)),
    Recipe("TSTBR14", "S+A-P", aarch64_imm14(signed(16, 4))),
    Recipe("CONDBR19", "S+A-P", aarch64_imm19(signed(21, 4))),
    Recipe("JUMP26", "L+A-P", _B26, "plt"),
    Recipe("CALL26", "L+A-P", _B26, "plt"),
    Recipe("ADR_GOT_PAGE", "Page(G)-Page(P)", _PAGE, "got"),
    Recipe("LD64_GOT_LO12_NC", "G", aarch64_add_lo12(3), "got"),
    Recipe("GOT_LD_PREL19", "G+A-P", aarch64_imm19(signed(21, 4)), "got"),
    Recipe("GOTPCREL32", "G+A-P", word(4, signed(32)), "got"),
)}


def _veneer(stub: int, slot: int) -> bytes:
    buf = bytearray(b"\x10\x00\x00\x90"      # adrp x16, 0
                    b"\x10\x02\x40\xf9"      # ldr  x16, [x16]
                    b"\x00\x02\x1f\xd6"      # br   x16
                    b"\x1f\x20\x03\xd5")     # nop
    _PAGE.apply(buf, 0, (slot & ~0xFFF) - (stub & ~0xFFF))
    aarch64_add_lo12(3).apply(buf, 4, slot)
    return bytes(buf)


OBJECT_ARCH = ObjectArch(name="aarch64", e_machine=183, elf_class=64, recipes=RECIPES,
                         stub_size=16, branch_range=1 << 27, make_stub=_veneer)
