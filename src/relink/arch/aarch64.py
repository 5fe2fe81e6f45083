"""AArch64 (LP64, ELF64, RELA): dynamic relocation classes.

Arch layer. Source: "ELF for the Arm 64-bit Architecture" (aaelf64), §5.7 "Dynamic
relocations", with the GNU/Linux TLS meanings of TLS_IMPDEF1/2 (DTPMOD / DTPREL).
Formulas: RELATIVE = Delta(S) + A, ABS64 = S + A, GLOB_DAT = JUMP_SLOT = S + A,
TLS_DTPMOD = module id, TLS_DTPREL = S + A - (block start), TLS_TPREL = static offset
from the thread pointer (TLS variant I, 16-byte TCB), TLSDESC = (resolver, argument),
IRELATIVE = resolver(B + A)().
"""

from __future__ import annotations

from relink.arch import ArchSpec, FieldSpec, RelocClass, register
from relink.arch.rtypes import R_AARCH64 as T

__all__ = ["SPEC"]

R = RelocClass
SPEC = register(ArchSpec(
    name="aarch64",
    e_machine=183,
    elf_class=64,
    is_rela=True,
    classes={
        T.R_AARCH64_NONE: R.NONE,
        T.R_AARCH64_ABS64: R.SYMBOLIC,
        T.R_AARCH64_ABS32: R.FIELD,      # text relocation
        T.R_AARCH64_PREL64: R.FIELD,
        T.R_AARCH64_PREL32: R.FIELD,
        T.R_AARCH64_COPY: R.COPY,
        T.R_AARCH64_GLOB_DAT: R.GLOB_DAT,
        T.R_AARCH64_JUMP_SLOT: R.JUMP_SLOT,
        T.R_AARCH64_RELATIVE: R.RELATIVE,
        T.R_AARCH64_TLS_DTPMOD: R.DTPMOD,
        T.R_AARCH64_TLS_DTPREL: R.DTPOFF,
        T.R_AARCH64_TLS_TPREL: R.TPOFF,
        T.R_AARCH64_TLSDESC: R.TLSDESC,
        T.R_AARCH64_IRELATIVE: R.IRELATIVE,
    },
    fields={
        T.R_AARCH64_ABS32: FieldSpec(4, pcrel=False, signed=False),
        T.R_AARCH64_PREL64: FieldSpec(8, pcrel=True, signed=True),
        T.R_AARCH64_PREL32: FieldSpec(4, pcrel=True, signed=True),
    },
    tls_variant=1,
    tls_dtv_offset=0,
    zig_target="aarch64-linux-gnu",
    unicorn=("UC_ARCH_ARM64", "UC_MODE_ARM"),
))
