"""x86_64 (AMD64, ELF64, RELA): dynamic relocation classes.

Source: System V AMD64 psABI, §4.4 "Relocation" (Table 4.9) and the TLS supplement
(Drepper, "ELF Handling For Thread-Local Storage", §4.4). Formulas: RELATIVE = B + A,
64 = S + A, GLOB_DAT = JUMP_SLOT = S, PC32 = S + A - P (signed 32), 32 = S + A (zero
extended), 32S = S + A (sign extended), DTPMOD64 = module id, DTPOFF64 = S + A,
TPOFF64 = S + A - (static TLS offset), TLSDESC = descriptor.
"""

from __future__ import annotations

from relink.arch import ArchSpec, FieldSpec, RelocClass, register

__all__ = ["SPEC"]

R = RelocClass
SPEC = register(ArchSpec(
    name="x86_64",
    e_machine=62,
    elf_class=64,
    is_rela=True,
    classes={
        0: R.NONE,          # R_X86_64_NONE
        1: R.SYMBOLIC,      # R_X86_64_64
        2: R.FIELD,         # R_X86_64_PC32 (text relocation)
        5: R.COPY,          # R_X86_64_COPY
        6: R.GLOB_DAT,      # R_X86_64_GLOB_DAT
        7: R.JUMP_SLOT,     # R_X86_64_JUMP_SLOT
        8: R.RELATIVE,      # R_X86_64_RELATIVE
        10: R.FIELD,        # R_X86_64_32 (text relocation)
        11: R.FIELD,        # R_X86_64_32S (text relocation)
        16: R.DTPMOD,       # R_X86_64_DTPMOD64
        17: R.DTPOFF,       # R_X86_64_DTPOFF64
        18: R.TPOFF,        # R_X86_64_TPOFF64
        36: R.TLSDESC,      # R_X86_64_TLSDESC
        37: R.IRELATIVE,    # R_X86_64_IRELATIVE
        24: R.FIELD,        # R_X86_64_PC64
    },
    fields={
        2: FieldSpec(4, pcrel=True, signed=True),
        10: FieldSpec(4, pcrel=False, signed=False),
        11: FieldSpec(4, pcrel=False, signed=True),
        24: FieldSpec(8, pcrel=True, signed=True),
    },
    tls_variant=2,
    tls_dtv_offset=0,
    zig_target="x86_64-linux-gnu",
    unicorn=("UC_ARCH_X86", "UC_MODE_64"),
))
