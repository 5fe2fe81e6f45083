"""x86_64 object-relocation recipes (ET_REL ``.o`` files): data for the shared relocator.

Arch layer; pure data over the shared encoders of `relink.relocation.fields`. Formulas
from the System V AMD64 psABI §4.4.1 (Table 4.10) and the TLS supplement: 64 = S + A,
PC32 = S + A - P (signed 32), PLT32 = L + A - P (the symbol itself when it is in reach,
else a synthesized stub), 32 = S + A zero-extended, 32S = S + A sign-extended, PC64,
GOTPCREL / GOTPCRELX / REX_GOTPCRELX = G + A - P (a synthesized GOT slot holding S; the
X forms are relaxed to direct ``lea``/``call``/``jmp`` when S is within reach, as ld
does), GOTOFF64 = S + A - GOT, GOTPC32/64 = GOT + A - P, GOT64 = G + A - GOT and
PLTOFF64 = L + A - GOT (the large code model),
SIZE32/64 = Z + A, and the TLS models (general and local dynamic through GOT pairs,
initial exec through a GOT slot holding the TP offset, local exec, TLS descriptors).
TLSDESC_CALL only marks the call for linker relaxation: nothing to patch. The PLT stub
is ``endbr64; jmp *slot(%rip)`` padded with int3 to 16 bytes, so it also works under IBT.
"""

from __future__ import annotations

import struct

from relink.arch.rtypes import R_X86_64 as RT
from relink.relocation.fields import ObjectArch, Recipe, either, signed, unsigned, word

__all__ = ["OBJECT_ARCH", "RECIPES"]

_S32 = word(4, signed(32))
_U32 = word(4, unsigned(32))
_W64 = word(8)

RECIPES: dict[int, Recipe] = {RT[f"R_X86_64_{r.name}"].value: r for r in (
    Recipe("NONE", "none"),
    Recipe("64", "S+A", _W64),
    Recipe("PC32", "S+A-P", _S32),
    Recipe("PLT32", "L+A-P", _S32, "plt"),
    Recipe("32", "S+A", _U32),
    Recipe("32S", "S+A", _S32),
    Recipe("16", "S+A", word(2, either(16))),
    Recipe("PC16", "S+A-P", word(2, signed(16))),
    Recipe("8", "S+A", word(1, either(8))),
    Recipe("PC8", "S+A-P", word(1, signed(8))),
    Recipe("PC64", "S+A-P", _W64),
    Recipe("GOTPCREL", "G+A-P", _S32, "got"),
    Recipe("GOTPCRELX", "G+A-P", _S32, "got", relax=True),
    Recipe("REX_GOTPCRELX", "G+A-P", _S32, "got", relax=True),
    Recipe("GOTPCREL64", "G+A-P", _W64, "got"),
    Recipe("GOTOFF64", "S+A-GOT", _W64),
    Recipe("GOT64", "G+A-GOT", _W64, "got"),
    Recipe("GOTPLT64", "G+A-GOT", _W64, "got"),
    # L - GOT with a 64-bit field always reaches: the symbol itself serves as L.
    Recipe("PLTOFF64", "S+A-GOT", _W64),
    Recipe("GOTPC32", "GOT+A-P", _S32),
    Recipe("GOTPC64", "GOT+A-P", _W64),
    Recipe("SIZE32", "Z+A", _U32),
    Recipe("SIZE64", "Z+A", _W64),
    Recipe("TLSGD", "tls-gd", _S32, "tls"),
    Recipe("TLSLD", "tls-ld", _S32, "tls"),
    Recipe("DTPOFF32", "tls-dtp", _S32, "tls"),
    Recipe("DTPOFF64", "tls-dtp", _W64, "tls"),
    Recipe("GOTTPOFF", "tls-ie", _S32, "tls"),
    Recipe("TPOFF32", "tls-le", _S32, "tls"),
    Recipe("TPOFF64", "tls-le", _W64, "tls"),
    Recipe("GOTPC32_TLSDESC", "tls-desc", _S32, "tls"),
    Recipe("TLSDESC_CALL", "none", None, "tls"),
)}


def _stub(stub: int, slot: int) -> bytes:
    # endbr64 ; jmp *disp32(%rip) ; int3 x 6   (disp is relative to the end of the jmp)
    disp = slot - (stub + 10)
    return b"\xf3\x0f\x1e\xfa\xff\x25" + struct.pack("<i", disp) + b"\xcc" * 6


OBJECT_ARCH = ObjectArch(name="x86_64", e_machine=62, elf_class=64, recipes=RECIPES,
                         stub_size=16, branch_range=1 << 31, make_stub=_stub)
