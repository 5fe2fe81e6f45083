"""LoongArch64 (LP64, ELF64, RELA): dynamic relocation classes.

Arch layer. Source: "ELF for the LoongArch Architecture" (loongson/la-abi-specs,
psABI v2.30). There is no GLOB_DAT: GOT entries use R_LARCH_64 (S + A). TLS is
variant I with the thread pointer ($tp) at the start of the static TLS area and no DTV
offset. Formulas: RELATIVE = B + A, JUMP_SLOT = S + A, TLS_DTPMOD64 = module id,
TLS_DTPREL64 = S + A - (block start), TLS_TPREL64 = static offset from $tp,
TLS_DESC64 = (resolver, argument), IRELATIVE = resolver(B + A)(). Unicorn has no
LoongArch CPU; images are verified under qemu-user instead (see docs/foreign.md).
"""

from __future__ import annotations

from relink.arch import ArchSpec, FieldSpec, RelocClass, register
from relink.arch.rtypes import R_LARCH as T

__all__ = ["SPEC"]

R = RelocClass
SPEC = register(ArchSpec(
    name="loongarch64",
    e_machine=258,
    elf_class=64,
    is_rela=True,
    classes={
        T.R_LARCH_NONE: R.NONE,
        T.R_LARCH_64: R.SYMBOLIC,
        T.R_LARCH_32: R.FIELD,           # text relocation
        T.R_LARCH_RELATIVE: R.RELATIVE,
        T.R_LARCH_COPY: R.COPY,
        T.R_LARCH_JUMP_SLOT: R.JUMP_SLOT,
        T.R_LARCH_TLS_DTPMOD64: R.DTPMOD,
        T.R_LARCH_TLS_DTPREL64: R.DTPOFF,
        T.R_LARCH_TLS_TPREL64: R.TPOFF,
        T.R_LARCH_TLS_DESC64: R.TLSDESC,
        T.R_LARCH_IRELATIVE: R.IRELATIVE,
    },
    fields={T.R_LARCH_32: FieldSpec(4, pcrel=False, signed=False)},
    tls_variant=1,
    tls_dtv_offset=0,
    zig_target="loongarch64-linux-gnu",
    unicorn=None,
))
