"""i386 (x86, ELF32, REL) object-relocation recipes: data for the shared relocator.

Arch layer; pure data over `relink.relocation.fields`. Formulas from the System V i386
psABI (Intel386 supplement, "Relocation Types"): 32 = S + A, PC32 = S + A - P, PLT32 =
L + A - P, GOT32 / GOT32X = G + A - GOT (the GOT slot's offset from the GOT base that PIC
code keeps in a register; GOT32X without a base register, as non-PIC ``-fno-plt`` code
writes ``call *foo@GOT``, is the slot's absolute address G + A), GOTOFF = S + A - GOT,
GOTPC = GOT + A - P, 16/PC16/8/PC8.
i386 objects use REL: the addend is the value already stored at the place. In a 32-bit
address space every 32-bit field reaches everything, so no stub is ever needed for
reach; the PLT stub (``jmp *slot`` with an absolute slot address, valid with or without
%ebx holding the GOT) serves IFUNCs. TLS relocations have no recipe (no i386 TLS runtime
in this x86_64 process) and fail by name. Objects load into a buffer or an emulator.
"""

from __future__ import annotations

import struct

from relink.arch.rtypes import R_386 as RT
from relink.relocation.fields import NONE, ObjectArch, Recipe, either, signed, word

__all__ = ["OBJECT_ARCH", "RECIPES"]

_W32 = word(4, NONE)  # any 32-bit value: arithmetic wraps modulo 2^32 on this ISA

RECIPES: dict[int, Recipe] = {RT[f"R_386_{r.name}"].value: r for r in (
    Recipe("NONE", "none"),
    Recipe("32", "S+A", _W32),
    Recipe("PC32", "S+A-P", _W32),
    Recipe("PLT32", "L+A-P", _W32, "plt"),
    Recipe("GOT32", "G+A-GOT", _W32, "got"),
    Recipe("GOT32X", "G+A-GOT/i386", _W32, "got"),
    Recipe("GOTOFF", "S+A-GOT", _W32),
    Recipe("GOTPC", "GOT+A-P", _W32),
    Recipe("16", "S+A", word(2, either(16))),
    Recipe("PC16", "S+A-P", word(2, signed(16))),
    Recipe("8", "S+A", word(1, either(8))),
    Recipe("PC8", "S+A-P", word(1, signed(8))),
)}


def _stub(stub: int, slot: int) -> bytes:
    # jmp *slot (absolute) ; int3 padding
    return b"\xff\x25" + struct.pack("<I", slot & 0xFFFFFFFF) + b"\xcc" * 10


OBJECT_ARCH = ObjectArch(name="x86", e_machine=3, elf_class=32, recipes=RECIPES,
                         stub_size=16, branch_range=1 << 32, make_stub=_stub)
