"""x86 (Intel386, ELF32, REL): dynamic relocation classes.

Arch layer. Source: System V ABI Intel386 psABI, "Relocation Types", and the TLS
supplement (Drepper, "ELF Handling For Thread-Local Storage", §4.3). REL format: the
addend of R_386_32 / RELATIVE / TLS_DTPOFF32 is read from the place by the generic loop.
Formulas: RELATIVE = B + A, 32 = S + A, PC32 = S + A - P, GLOB_DAT = JMP_SLOT = S,
TLS_DTPMOD32 = module id, TLS_DTPOFF32 = offset in the block, TLS_TPOFF = negative
offset from the thread pointer (TLS variant II).

R_386_TLS_DESC (GNU2 dialect) = (resolver, offset), its REL addend read from the
descriptor's second word, as glibc does. Not supported (raises
UnsupportedRelocationError by name): R_386_TLS_TPOFF32, the *negated* static offset
only emitted for ``@gottpoff`` code, which clang and gcc do not produce by default.
"""

from __future__ import annotations

from relink.arch import ArchSpec, FieldSpec, RelocClass, register
from relink.arch.rtypes import R_386 as T

__all__ = ["SPEC"]

R = RelocClass
SPEC = register(ArchSpec(
    name="x86",
    e_machine=3,
    elf_class=32,
    is_rela=False,
    classes={
        T.R_386_NONE: R.NONE,
        T.R_386_32: R.SYMBOLIC,
        T.R_386_PC32: R.FIELD,          # text relocation
        T.R_386_COPY: R.COPY,
        T.R_386_GLOB_DAT: R.GLOB_DAT,
        T.R_386_JUMP_SLOT: R.JUMP_SLOT,
        T.R_386_RELATIVE: R.RELATIVE,
        T.R_386_TLS_TPOFF: R.TPOFF,
        T.R_386_TLS_DTPMOD32: R.DTPMOD,
        T.R_386_TLS_DTPOFF32: R.DTPOFF,
        T.R_386_TLS_DESC: R.TLSDESC,    # REL: the addend is the descriptor's 2nd word
        T.R_386_IRELATIVE: R.IRELATIVE,
    },
    fields={T.R_386_PC32: FieldSpec(4, pcrel=True, signed=True)},
    tls_variant=2,
    tls_dtv_offset=0,
    zig_target="x86-linux-gnu",
    unicorn=("UC_ARCH_X86", "UC_MODE_32"),
))
