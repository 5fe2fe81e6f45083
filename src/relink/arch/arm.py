"""32-bit Arm (AAPCS, ELF32, REL): dynamic relocation classes.

Arch layer. Source: "ELF for the Arm Architecture" (aaelf32), §5.6 "Dynamic
relocations" and the Arm TLS description. REL format: the addend of ABS32 / RELATIVE /
TLS_DTPOFF32 / TLS_TPOFF32 is read from the place by the generic loop. Thumb function
symbols carry bit 0 in st_value, so S already includes the T bit. Formulas:
RELATIVE = B + A, ABS32 = S + A, GLOB_DAT = JUMP_SLOT = S, REL32 = S + A - P,
TLS_DTPMOD32 = module id, TLS_DTPOFF32 = S + A - (block start), TLS_TPOFF32 = static
offset from the thread pointer (TLS variant I, 8-byte TCB), IRELATIVE = resolver(B + A)().

Not supported: R_ARM_TLS_DESC (GNU2 TLS dialect; its REL addend lives in the
descriptor's second word) — raises UnsupportedRelocationError by name.
"""

from __future__ import annotations

from relink.arch import ArchSpec, FieldSpec, RelocClass, register
from relink.arch.rtypes import R_ARM as T

__all__ = ["SPEC"]

R = RelocClass
SPEC = register(ArchSpec(
    name="arm",
    e_machine=40,
    elf_class=32,
    is_rela=False,
    classes={
        T.R_ARM_NONE: R.NONE,
        T.R_ARM_ABS32: R.SYMBOLIC,
        T.R_ARM_REL32: R.FIELD,          # text relocation
        T.R_ARM_COPY: R.COPY,
        T.R_ARM_GLOB_DAT: R.GLOB_DAT,
        T.R_ARM_JUMP_SLOT: R.JUMP_SLOT,
        T.R_ARM_RELATIVE: R.RELATIVE,
        T.R_ARM_TLS_DTPMOD32: R.DTPMOD,
        T.R_ARM_TLS_DTPOFF32: R.DTPOFF,
        T.R_ARM_TLS_TPOFF32: R.TPOFF,
        T.R_ARM_IRELATIVE: R.IRELATIVE,
    },
    fields={T.R_ARM_REL32: FieldSpec(4, pcrel=True, signed=True)},
    tls_variant=1,
    tls_dtv_offset=0,
    zig_target="arm-linux-gnueabihf",
    unicorn=("UC_ARCH_ARM", "UC_MODE_ARM"),
))
