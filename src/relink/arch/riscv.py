"""RISC-V (RV64 and RV32, RELA): dynamic relocation classes for both ELF classes.

Arch layer. Source: RISC-V ELF psABI (riscv-non-isa/riscv-elf-psabi-doc), "Relocations"
and "Thread Local Storage". RV32 and RV64 share EM_RISCV (243), hence two specs keyed by
ELF class. There is no GLOB_DAT: GOT entries use R_RISCV_64 / R_RISCV_32 (S + A).
TLS is variant I with the thread pointer at the start of the static TLS area (no TCB
before the blocks) and a DTV offset of 0x800: DTPREL values are biased by -0x800 and
``__tls_get_addr`` adds it back. TLSDESC = (resolver, argument); the resolver returns
through t0. Formulas: RELATIVE = B + A, JUMP_SLOT = S + A, IRELATIVE = resolver(B + A)().
"""

from __future__ import annotations

from relink.arch import ArchSpec, FieldSpec, RelocClass, register
from relink.arch.rtypes import R_RISCV as T

__all__ = ["SPEC32", "SPEC64"]

R = RelocClass
_COMMON: dict[int, RelocClass] = {
    T.R_RISCV_NONE: R.NONE,
    T.R_RISCV_RELATIVE: R.RELATIVE,
    T.R_RISCV_COPY: R.COPY,
    T.R_RISCV_JUMP_SLOT: R.JUMP_SLOT,
    T.R_RISCV_TLSDESC: R.TLSDESC,
    T.R_RISCV_IRELATIVE: R.IRELATIVE,
}

SPEC64 = register(ArchSpec(
    name="riscv64",
    e_machine=243,
    elf_class=64,
    is_rela=True,
    classes={
        **_COMMON,
        T.R_RISCV_64: R.SYMBOLIC,
        T.R_RISCV_32: R.FIELD,           # text relocation
        T.R_RISCV_TLS_DTPMOD64: R.DTPMOD,
        T.R_RISCV_TLS_DTPREL64: R.DTPOFF,
        T.R_RISCV_TLS_TPREL64: R.TPOFF,
    },
    fields={T.R_RISCV_32: FieldSpec(4, pcrel=False, signed=False)},
    tls_variant=1,
    tls_dtv_offset=0x800,
    zig_target="riscv64-linux-gnu",
    unicorn=("UC_ARCH_RISCV", "UC_MODE_RISCV64"),
))

SPEC32 = register(ArchSpec(
    name="riscv32",
    e_machine=243,
    elf_class=32,
    is_rela=True,
    classes={
        **_COMMON,
        T.R_RISCV_32: R.SYMBOLIC,
        T.R_RISCV_TLS_DTPMOD32: R.DTPMOD,
        T.R_RISCV_TLS_DTPREL32: R.DTPOFF,
        T.R_RISCV_TLS_TPREL32: R.TPOFF,
    },
    tls_variant=1,
    tls_dtv_offset=0x800,
    zig_target="riscv32-linux-gnu",
    unicorn=("UC_ARCH_RISCV", "UC_MODE_RISCV32"),
))
