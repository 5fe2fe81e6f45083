"""Relocation type numbers (``ELF*_R_TYPE(r_info)``) for every ISA relink knows.

Position in the pipeline::

    input -> elf -> arch -> memory -> loader -> relocation
                    ^^^^

This module belongs to the ``arch`` layer and is pure data: one
:class:`enum.IntEnum` per instruction set, members spelled exactly as in that
ISA's processor supplement (psABI), plus :func:`rtype_name` for diagnostics.
Generic ELF numbers live in :mod:`relink.elf.constants`.

Sources, per ISA (hand transcribed, numbers only):

* ``R_X86_64`` -- System V Application Binary Interface, AMD64 Architecture
  Processor Supplement (x86-64 psABI, gitlab.com/x86-psABIs/x86-64-ABI),
  chapter "Relocation Types", including the APX ``CODE_4/5/6`` additions
  (43..51).  Types 39/40 were the deprecated MPX ``*_BND`` relocations.
* ``R_386`` -- System V ABI, Intel386 Architecture Processor Supplement
  (i386 psABI, gitlab.com/x86-psABIs/i386-ABI), through ``R_386_GOT32X``.
* ``R_AARCH64`` -- ELF for the Arm 64-bit Architecture (AArch64), "aaelf64",
  ARM-software/abi-aa; the LP64 numbering only (the ILP32 ``R_AARCH64_P32_*``
  set and the PAuth ABI ``R_AARCH64_AUTH_*`` extension are not included).
* ``R_ARM`` -- ELF for the Arm Architecture, "aaelf32", ARM-software/abi-aa,
  plus the Arm FDPIC ABI (161..167) and the historic GNU values 249..255.
* ``R_RISCV`` -- RISC-V ELF psABI specification (riscv-non-isa/riscv-elf-psabi-doc),
  including TLS descriptors (12, 62..65).
* ``R_LARCH`` -- ELF for the LoongArch Architecture (loongson/la-abi-specs),
  psABI v2.30 (20231219), which adds TLS descriptors (13, 14, 111..126).

Where toolchains use a different spelling for the same number (glibc's
``R_AARCH64_TLS_DTPMOD64``, the pre-AAELF ``R_ARM_THM_PC22`` ...), the psABI
name is defined first and the other spellings are kept as aliases.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

from relink.elf.constants import EM, name_of

__all__ = [
    "RTYPES_BY_MACHINE",
    "R_386",
    "R_AARCH64",
    "R_ARM",
    "R_LARCH",
    "R_RISCV",
    "R_X86_64",
    "rtype_name",
]


class R_X86_64(IntEnum):
    """x86-64 (EM_X86_64) relocation types; also used by x32 (ELFCLASS32)."""

    R_X86_64_NONE = 0
    R_X86_64_64 = 1
    R_X86_64_PC32 = 2
    R_X86_64_GOT32 = 3
    R_X86_64_PLT32 = 4
    R_X86_64_COPY = 5
    R_X86_64_GLOB_DAT = 6
    R_X86_64_JUMP_SLOT = 7
    R_X86_64_RELATIVE = 8
    R_X86_64_GOTPCREL = 9
    R_X86_64_32 = 10
    R_X86_64_32S = 11
    R_X86_64_16 = 12
    R_X86_64_PC16 = 13
    R_X86_64_8 = 14
    R_X86_64_PC8 = 15
    R_X86_64_DTPMOD64 = 16
    R_X86_64_DTPOFF64 = 17
    R_X86_64_TPOFF64 = 18
    R_X86_64_TLSGD = 19
    R_X86_64_TLSLD = 20
    R_X86_64_DTPOFF32 = 21
    R_X86_64_GOTTPOFF = 22
    R_X86_64_TPOFF32 = 23
    R_X86_64_PC64 = 24
    R_X86_64_GOTOFF64 = 25
    R_X86_64_GOTPC32 = 26
    R_X86_64_GOT64 = 27
    R_X86_64_GOTPCREL64 = 28
    R_X86_64_GOTPC64 = 29
    R_X86_64_GOTPLT64 = 30
    R_X86_64_PLTOFF64 = 31
    R_X86_64_SIZE32 = 32
    R_X86_64_SIZE64 = 33
    R_X86_64_GOTPC32_TLSDESC = 34
    R_X86_64_TLSDESC_CALL = 35
    R_X86_64_TLSDESC = 36
    R_X86_64_IRELATIVE = 37
    R_X86_64_RELATIVE64 = 38
    R_X86_64_PC32_BND = 39  # deprecated (MPX); number now reserved
    R_X86_64_PLT32_BND = 40  # deprecated (MPX); number now reserved
    R_X86_64_GOTPCRELX = 41
    R_X86_64_REX_GOTPCRELX = 42
    R_X86_64_CODE_4_GOTPCRELX = 43
    R_X86_64_CODE_4_GOTTPOFF = 44
    R_X86_64_CODE_4_GOTPC32_TLSDESC = 45
    R_X86_64_CODE_5_GOTPCRELX = 46
    R_X86_64_CODE_5_GOTTPOFF = 47
    R_X86_64_CODE_5_GOTPC32_TLSDESC = 48
    R_X86_64_CODE_6_GOTPCRELX = 49
    R_X86_64_CODE_6_GOTTPOFF = 50
    R_X86_64_CODE_6_GOTPC32_TLSDESC = 51
    R_X86_64_GNU_VTINHERIT = 250  # GNU extension (C++ vtable GC)
    R_X86_64_GNU_VTENTRY = 251  # GNU extension (C++ vtable GC)


class R_386(IntEnum):
    """Intel386 (EM_386) relocation types."""

    R_386_NONE = 0
    R_386_32 = 1
    R_386_PC32 = 2
    R_386_GOT32 = 3
    R_386_PLT32 = 4
    R_386_COPY = 5
    R_386_GLOB_DAT = 6
    R_386_JUMP_SLOT = 7
    R_386_RELATIVE = 8
    R_386_GOTOFF = 9
    R_386_GOTPC = 10
    R_386_32PLT = 11
    R_386_TLS_TPOFF = 14
    R_386_TLS_IE = 15
    R_386_TLS_GOTIE = 16
    R_386_TLS_LE = 17
    R_386_TLS_GD = 18
    R_386_TLS_LDM = 19
    R_386_16 = 20
    R_386_PC16 = 21
    R_386_8 = 22
    R_386_PC8 = 23
    R_386_TLS_GD_32 = 24
    R_386_TLS_GD_PUSH = 25
    R_386_TLS_GD_CALL = 26
    R_386_TLS_GD_POP = 27
    R_386_TLS_LDM_32 = 28
    R_386_TLS_LDM_PUSH = 29
    R_386_TLS_LDM_CALL = 30
    R_386_TLS_LDM_POP = 31
    R_386_TLS_LDO_32 = 32
    R_386_TLS_IE_32 = 33
    R_386_TLS_LE_32 = 34
    R_386_TLS_DTPMOD32 = 35
    R_386_TLS_DTPOFF32 = 36
    R_386_TLS_TPOFF32 = 37
    R_386_SIZE32 = 38
    R_386_TLS_GOTDESC = 39
    R_386_TLS_DESC_CALL = 40
    R_386_TLS_DESC = 41
    R_386_IRELATIVE = 42
    R_386_GOT32X = 43
    R_386_USED_BY_INTEL_200 = 200  # binutils placeholder
    R_386_GNU_VTINHERIT = 250  # GNU extension
    R_386_GNU_VTENTRY = 251  # GNU extension
    # glibc spelling of R_386_JUMP_SLOT.
    R_386_JMP_SLOT = 7


class R_AARCH64(IntEnum):
    """AArch64 LP64 (EM_AARCH64, ELFCLASS64) relocation types."""

    R_AARCH64_NONE = 0
    # Static data relocations.
    R_AARCH64_ABS64 = 257
    R_AARCH64_ABS32 = 258
    R_AARCH64_ABS16 = 259
    R_AARCH64_PREL64 = 260
    R_AARCH64_PREL32 = 261
    R_AARCH64_PREL16 = 262
    # Group relocations to create a 16-, 32-, 48- or 64-bit unsigned/signed value.
    R_AARCH64_MOVW_UABS_G0 = 263
    R_AARCH64_MOVW_UABS_G0_NC = 264
    R_AARCH64_MOVW_UABS_G1 = 265
    R_AARCH64_MOVW_UABS_G1_NC = 266
    R_AARCH64_MOVW_UABS_G2 = 267
    R_AARCH64_MOVW_UABS_G2_NC = 268
    R_AARCH64_MOVW_UABS_G3 = 269
    R_AARCH64_MOVW_SABS_G0 = 270
    R_AARCH64_MOVW_SABS_G1 = 271
    R_AARCH64_MOVW_SABS_G2 = 272
    # PC-relative addresses.
    R_AARCH64_LD_PREL_LO19 = 273
    R_AARCH64_ADR_PREL_LO21 = 274
    R_AARCH64_ADR_PREL_PG_HI21 = 275
    R_AARCH64_ADR_PREL_PG_HI21_NC = 276
    R_AARCH64_ADD_ABS_LO12_NC = 277
    R_AARCH64_LDST8_ABS_LO12_NC = 278
    # Control flow.
    R_AARCH64_TSTBR14 = 279
    R_AARCH64_CONDBR19 = 280
    R_AARCH64_JUMP26 = 282
    R_AARCH64_CALL26 = 283
    R_AARCH64_LDST16_ABS_LO12_NC = 284
    R_AARCH64_LDST32_ABS_LO12_NC = 285
    R_AARCH64_LDST64_ABS_LO12_NC = 286
    # Group relocations to create a PC-relative offset inline.
    R_AARCH64_MOVW_PREL_G0 = 287
    R_AARCH64_MOVW_PREL_G0_NC = 288
    R_AARCH64_MOVW_PREL_G1 = 289
    R_AARCH64_MOVW_PREL_G1_NC = 290
    R_AARCH64_MOVW_PREL_G2 = 291
    R_AARCH64_MOVW_PREL_G2_NC = 292
    R_AARCH64_MOVW_PREL_G3 = 293
    R_AARCH64_LDST128_ABS_LO12_NC = 299
    # Group relocations to create a GOT-relative offset inline.
    R_AARCH64_MOVW_GOTOFF_G0 = 300
    R_AARCH64_MOVW_GOTOFF_G0_NC = 301
    R_AARCH64_MOVW_GOTOFF_G1 = 302
    R_AARCH64_MOVW_GOTOFF_G1_NC = 303
    R_AARCH64_MOVW_GOTOFF_G2 = 304
    R_AARCH64_MOVW_GOTOFF_G2_NC = 305
    R_AARCH64_MOVW_GOTOFF_G3 = 306
    # GOT-relative data and GOT-indirect addressing.
    R_AARCH64_GOTREL64 = 307
    R_AARCH64_GOTREL32 = 308
    R_AARCH64_GOT_LD_PREL19 = 309
    R_AARCH64_LD64_GOTOFF_LO15 = 310
    R_AARCH64_ADR_GOT_PAGE = 311
    R_AARCH64_LD64_GOT_LO12_NC = 312
    R_AARCH64_LD64_GOTPAGE_LO15 = 313
    R_AARCH64_PLT32 = 314
    R_AARCH64_GOTPCREL32 = 315
    # Thread-local storage: general dynamic.
    R_AARCH64_TLSGD_ADR_PREL21 = 512
    R_AARCH64_TLSGD_ADR_PAGE21 = 513
    R_AARCH64_TLSGD_ADD_LO12_NC = 514
    R_AARCH64_TLSGD_MOVW_G1 = 515
    R_AARCH64_TLSGD_MOVW_G0_NC = 516
    # Local dynamic.
    R_AARCH64_TLSLD_ADR_PREL21 = 517
    R_AARCH64_TLSLD_ADR_PAGE21 = 518
    R_AARCH64_TLSLD_ADD_LO12_NC = 519
    R_AARCH64_TLSLD_MOVW_G1 = 520
    R_AARCH64_TLSLD_MOVW_G0_NC = 521
    R_AARCH64_TLSLD_LD_PREL19 = 522
    R_AARCH64_TLSLD_MOVW_DTPREL_G2 = 523
    R_AARCH64_TLSLD_MOVW_DTPREL_G1 = 524
    R_AARCH64_TLSLD_MOVW_DTPREL_G1_NC = 525
    R_AARCH64_TLSLD_MOVW_DTPREL_G0 = 526
    R_AARCH64_TLSLD_MOVW_DTPREL_G0_NC = 527
    R_AARCH64_TLSLD_ADD_DTPREL_HI12 = 528
    R_AARCH64_TLSLD_ADD_DTPREL_LO12 = 529
    R_AARCH64_TLSLD_ADD_DTPREL_LO12_NC = 530
    R_AARCH64_TLSLD_LDST8_DTPREL_LO12 = 531
    R_AARCH64_TLSLD_LDST8_DTPREL_LO12_NC = 532
    R_AARCH64_TLSLD_LDST16_DTPREL_LO12 = 533
    R_AARCH64_TLSLD_LDST16_DTPREL_LO12_NC = 534
    R_AARCH64_TLSLD_LDST32_DTPREL_LO12 = 535
    R_AARCH64_TLSLD_LDST32_DTPREL_LO12_NC = 536
    R_AARCH64_TLSLD_LDST64_DTPREL_LO12 = 537
    R_AARCH64_TLSLD_LDST64_DTPREL_LO12_NC = 538
    # Initial exec.
    R_AARCH64_TLSIE_MOVW_GOTTPREL_G1 = 539
    R_AARCH64_TLSIE_MOVW_GOTTPREL_G0_NC = 540
    R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21 = 541
    R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC = 542
    R_AARCH64_TLSIE_LD_GOTTPREL_PREL19 = 543
    # Local exec.
    R_AARCH64_TLSLE_MOVW_TPREL_G2 = 544
    R_AARCH64_TLSLE_MOVW_TPREL_G1 = 545
    R_AARCH64_TLSLE_MOVW_TPREL_G1_NC = 546
    R_AARCH64_TLSLE_MOVW_TPREL_G0 = 547
    R_AARCH64_TLSLE_MOVW_TPREL_G0_NC = 548
    R_AARCH64_TLSLE_ADD_TPREL_HI12 = 549
    R_AARCH64_TLSLE_ADD_TPREL_LO12 = 550
    R_AARCH64_TLSLE_ADD_TPREL_LO12_NC = 551
    R_AARCH64_TLSLE_LDST8_TPREL_LO12 = 552
    R_AARCH64_TLSLE_LDST8_TPREL_LO12_NC = 553
    R_AARCH64_TLSLE_LDST16_TPREL_LO12 = 554
    R_AARCH64_TLSLE_LDST16_TPREL_LO12_NC = 555
    R_AARCH64_TLSLE_LDST32_TPREL_LO12 = 556
    R_AARCH64_TLSLE_LDST32_TPREL_LO12_NC = 557
    R_AARCH64_TLSLE_LDST64_TPREL_LO12 = 558
    R_AARCH64_TLSLE_LDST64_TPREL_LO12_NC = 559
    # TLS descriptors.
    R_AARCH64_TLSDESC_LD_PREL19 = 560
    R_AARCH64_TLSDESC_ADR_PREL21 = 561
    R_AARCH64_TLSDESC_ADR_PAGE21 = 562
    R_AARCH64_TLSDESC_LD64_LO12 = 563
    R_AARCH64_TLSDESC_ADD_LO12 = 564
    R_AARCH64_TLSDESC_OFF_G1 = 565
    R_AARCH64_TLSDESC_OFF_G0_NC = 566
    R_AARCH64_TLSDESC_LDR = 567
    R_AARCH64_TLSDESC_ADD = 568
    R_AARCH64_TLSDESC_CALL = 569
    R_AARCH64_TLSLE_LDST128_TPREL_LO12 = 570
    R_AARCH64_TLSLE_LDST128_TPREL_LO12_NC = 571
    R_AARCH64_TLSLD_LDST128_DTPREL_LO12 = 572
    R_AARCH64_TLSLD_LDST128_DTPREL_LO12_NC = 573
    # Dynamic relocations.
    R_AARCH64_COPY = 1024
    R_AARCH64_GLOB_DAT = 1025
    R_AARCH64_JUMP_SLOT = 1026
    R_AARCH64_RELATIVE = 1027
    R_AARCH64_TLS_DTPMOD = 1028  # aaelf64 "TLS_IMPDEF1"; DTPMOD on GNU/Linux
    R_AARCH64_TLS_DTPREL = 1029  # aaelf64 "TLS_IMPDEF2"; DTPREL on GNU/Linux
    R_AARCH64_TLS_TPREL = 1030
    R_AARCH64_TLSDESC = 1031
    R_AARCH64_IRELATIVE = 1032
    # Other spellings of the same numbers (aaelf64 generic / binutils / LLVM).
    R_AARCH64_TLS_IMPDEF1 = 1028
    R_AARCH64_TLS_IMPDEF2 = 1029
    R_AARCH64_TLS_DTPMOD64 = 1028
    R_AARCH64_TLS_DTPREL64 = 1029
    R_AARCH64_TLS_TPREL64 = 1030
    # binutils name for 256, the withdrawn alternative encoding of R_AARCH64_NONE.
    R_AARCH64_NULL = 256


class R_ARM(IntEnum):
    """32-bit Arm (EM_ARM) relocation types."""

    R_ARM_NONE = 0
    R_ARM_PC24 = 1  # deprecated
    R_ARM_ABS32 = 2
    R_ARM_REL32 = 3
    R_ARM_LDR_PC_G0 = 4
    R_ARM_ABS16 = 5
    R_ARM_ABS12 = 6
    R_ARM_THM_ABS5 = 7
    R_ARM_ABS8 = 8
    R_ARM_SBREL32 = 9
    R_ARM_THM_CALL = 10
    R_ARM_THM_PC8 = 11
    R_ARM_BREL_ADJ = 12
    R_ARM_TLS_DESC = 13
    R_ARM_THM_SWI8 = 14  # obsolete
    R_ARM_XPC25 = 15  # obsolete
    R_ARM_THM_XPC22 = 16  # obsolete
    R_ARM_TLS_DTPMOD32 = 17
    R_ARM_TLS_DTPOFF32 = 18
    R_ARM_TLS_TPOFF32 = 19
    R_ARM_COPY = 20
    R_ARM_GLOB_DAT = 21
    R_ARM_JUMP_SLOT = 22
    R_ARM_RELATIVE = 23
    R_ARM_GOTOFF32 = 24
    R_ARM_BASE_PREL = 25
    R_ARM_GOT_BREL = 26
    R_ARM_PLT32 = 27  # deprecated
    R_ARM_CALL = 28
    R_ARM_JUMP24 = 29
    R_ARM_THM_JUMP24 = 30
    R_ARM_BASE_ABS = 31
    R_ARM_ALU_PCREL_7_0 = 32  # obsolete
    R_ARM_ALU_PCREL_15_8 = 33  # obsolete
    R_ARM_ALU_PCREL_23_15 = 34  # obsolete
    R_ARM_LDR_SBREL_11_0_NC = 35  # deprecated
    R_ARM_ALU_SBREL_19_12_NC = 36  # deprecated
    R_ARM_ALU_SBREL_27_20_CK = 37  # deprecated
    R_ARM_TARGET1 = 38
    R_ARM_SBREL31 = 39  # deprecated
    R_ARM_V4BX = 40
    R_ARM_TARGET2 = 41
    R_ARM_PREL31 = 42
    R_ARM_MOVW_ABS_NC = 43
    R_ARM_MOVT_ABS = 44
    R_ARM_MOVW_PREL_NC = 45
    R_ARM_MOVT_PREL = 46
    R_ARM_THM_MOVW_ABS_NC = 47
    R_ARM_THM_MOVT_ABS = 48
    R_ARM_THM_MOVW_PREL_NC = 49
    R_ARM_THM_MOVT_PREL = 50
    R_ARM_THM_JUMP19 = 51
    R_ARM_THM_JUMP6 = 52
    R_ARM_THM_ALU_PREL_11_0 = 53
    R_ARM_THM_PC12 = 54
    R_ARM_ABS32_NOI = 55
    R_ARM_REL32_NOI = 56
    R_ARM_ALU_PC_G0_NC = 57
    R_ARM_ALU_PC_G0 = 58
    R_ARM_ALU_PC_G1_NC = 59
    R_ARM_ALU_PC_G1 = 60
    R_ARM_ALU_PC_G2 = 61
    R_ARM_LDR_PC_G1 = 62
    R_ARM_LDR_PC_G2 = 63
    R_ARM_LDRS_PC_G0 = 64
    R_ARM_LDRS_PC_G1 = 65
    R_ARM_LDRS_PC_G2 = 66
    R_ARM_LDC_PC_G0 = 67
    R_ARM_LDC_PC_G1 = 68
    R_ARM_LDC_PC_G2 = 69
    R_ARM_ALU_SB_G0_NC = 70
    R_ARM_ALU_SB_G0 = 71
    R_ARM_ALU_SB_G1_NC = 72
    R_ARM_ALU_SB_G1 = 73
    R_ARM_ALU_SB_G2 = 74
    R_ARM_LDR_SB_G0 = 75
    R_ARM_LDR_SB_G1 = 76
    R_ARM_LDR_SB_G2 = 77
    R_ARM_LDRS_SB_G0 = 78
    R_ARM_LDRS_SB_G1 = 79
    R_ARM_LDRS_SB_G2 = 80
    R_ARM_LDC_SB_G0 = 81
    R_ARM_LDC_SB_G1 = 82
    R_ARM_LDC_SB_G2 = 83
    R_ARM_MOVW_BREL_NC = 84
    R_ARM_MOVT_BREL = 85
    R_ARM_MOVW_BREL = 86
    R_ARM_THM_MOVW_BREL_NC = 87
    R_ARM_THM_MOVT_BREL = 88
    R_ARM_THM_MOVW_BREL = 89
    R_ARM_TLS_GOTDESC = 90
    R_ARM_TLS_CALL = 91
    R_ARM_TLS_DESCSEQ = 92
    R_ARM_THM_TLS_CALL = 93
    R_ARM_PLT32_ABS = 94
    R_ARM_GOT_ABS = 95
    R_ARM_GOT_PREL = 96
    R_ARM_GOT_BREL12 = 97
    R_ARM_GOTOFF12 = 98
    R_ARM_GOTRELAX = 99
    R_ARM_GNU_VTENTRY = 100  # deprecated
    R_ARM_GNU_VTINHERIT = 101  # deprecated
    R_ARM_THM_JUMP11 = 102
    R_ARM_THM_JUMP8 = 103
    R_ARM_TLS_GD32 = 104
    R_ARM_TLS_LDM32 = 105
    R_ARM_TLS_LDO32 = 106
    R_ARM_TLS_IE32 = 107
    R_ARM_TLS_LE32 = 108
    R_ARM_TLS_LDO12 = 109
    R_ARM_TLS_LE12 = 110
    R_ARM_TLS_IE12GP = 111
    R_ARM_PRIVATE_0 = 112
    R_ARM_PRIVATE_1 = 113
    R_ARM_PRIVATE_2 = 114
    R_ARM_PRIVATE_3 = 115
    R_ARM_PRIVATE_4 = 116
    R_ARM_PRIVATE_5 = 117
    R_ARM_PRIVATE_6 = 118
    R_ARM_PRIVATE_7 = 119
    R_ARM_PRIVATE_8 = 120
    R_ARM_PRIVATE_9 = 121
    R_ARM_PRIVATE_10 = 122
    R_ARM_PRIVATE_11 = 123
    R_ARM_PRIVATE_12 = 124
    R_ARM_PRIVATE_13 = 125
    R_ARM_PRIVATE_14 = 126
    R_ARM_PRIVATE_15 = 127
    R_ARM_ME_TOO = 128  # obsolete
    R_ARM_THM_TLS_DESCSEQ16 = 129
    R_ARM_THM_TLS_DESCSEQ32 = 130
    R_ARM_THM_GOT_BREL12 = 131
    R_ARM_THM_ALU_ABS_G0_NC = 132
    R_ARM_THM_ALU_ABS_G1_NC = 133
    R_ARM_THM_ALU_ABS_G2_NC = 134
    R_ARM_THM_ALU_ABS_G3 = 135
    R_ARM_THM_BF16 = 136
    R_ARM_THM_BF12 = 137
    R_ARM_THM_BF18 = 138
    R_ARM_IRELATIVE = 160
    # Arm FDPIC ABI.
    R_ARM_GOTFUNCDESC = 161
    R_ARM_GOTOFFFUNCDESC = 162
    R_ARM_FUNCDESC = 163
    R_ARM_FUNCDESC_VALUE = 164
    R_ARM_TLS_GD32_FDPIC = 165
    R_ARM_TLS_LDM32_FDPIC = 166
    R_ARM_TLS_IE32_FDPIC = 167
    # Historic GNU values (not in aaelf32).
    R_ARM_RXPC25 = 249
    R_ARM_RSBREL32 = 250
    R_ARM_THM_RPC22 = 251
    R_ARM_RREL32 = 252
    R_ARM_RABS32 = 253
    R_ARM_RPC24 = 254
    R_ARM_RBASE = 255
    # Pre-aaelf32 / glibc spellings of the same numbers.
    R_ARM_PC13 = 4
    R_ARM_THM_PC22 = 10
    R_ARM_AMP_VCALL9 = 12
    R_ARM_SWI24 = 13
    R_ARM_GOTOFF = 24
    R_ARM_GOTPC = 25
    R_ARM_GOT32 = 26
    R_ARM_LDR_SBREL_11_0 = 35
    R_ARM_ALU_SBREL_19_12 = 36
    R_ARM_ALU_SBREL_27_20 = 37
    R_ARM_THM_PC11 = 102
    R_ARM_THM_PC9 = 103
    R_ARM_THM_TLS_DESCSEQ = 129
    R_ARM_RABS22 = 253
    # binutils (readelf) spellings.
    R_ARM_ALU_PCREL7_0 = 32
    R_ARM_ALU_PCREL15_8 = 33
    R_ARM_ALU_PCREL23_15 = 34
    R_ARM_THM_ALU_ABS_G3_NC = 135


class R_RISCV(IntEnum):
    """RISC-V (EM_RISCV) relocation types, RV32 and RV64."""

    R_RISCV_NONE = 0
    R_RISCV_32 = 1
    R_RISCV_64 = 2
    R_RISCV_RELATIVE = 3
    R_RISCV_COPY = 4
    R_RISCV_JUMP_SLOT = 5
    R_RISCV_TLS_DTPMOD32 = 6
    R_RISCV_TLS_DTPMOD64 = 7
    R_RISCV_TLS_DTPREL32 = 8
    R_RISCV_TLS_DTPREL64 = 9
    R_RISCV_TLS_TPREL32 = 10
    R_RISCV_TLS_TPREL64 = 11
    R_RISCV_TLSDESC = 12
    R_RISCV_BRANCH = 16
    R_RISCV_JAL = 17
    R_RISCV_CALL = 18  # deprecated in favour of CALL_PLT
    R_RISCV_CALL_PLT = 19
    R_RISCV_GOT_HI20 = 20
    R_RISCV_TLS_GOT_HI20 = 21
    R_RISCV_TLS_GD_HI20 = 22
    R_RISCV_PCREL_HI20 = 23
    R_RISCV_PCREL_LO12_I = 24
    R_RISCV_PCREL_LO12_S = 25
    R_RISCV_HI20 = 26
    R_RISCV_LO12_I = 27
    R_RISCV_LO12_S = 28
    R_RISCV_TPREL_HI20 = 29
    R_RISCV_TPREL_LO12_I = 30
    R_RISCV_TPREL_LO12_S = 31
    R_RISCV_TPREL_ADD = 32
    R_RISCV_ADD8 = 33
    R_RISCV_ADD16 = 34
    R_RISCV_ADD32 = 35
    R_RISCV_ADD64 = 36
    R_RISCV_SUB8 = 37
    R_RISCV_SUB16 = 38
    R_RISCV_SUB32 = 39
    R_RISCV_SUB64 = 40
    R_RISCV_GOT32_PCREL = 41  # was R_RISCV_GNU_VTINHERIT before psABI 1.0
    R_RISCV_ALIGN = 43
    R_RISCV_RVC_BRANCH = 44
    R_RISCV_RVC_JUMP = 45
    # 46..50 were withdrawn from the psABI (now reserved); named for old objects.
    R_RISCV_RVC_LUI = 46
    R_RISCV_GPREL_I = 47
    R_RISCV_GPREL_S = 48
    R_RISCV_TPREL_I = 49
    R_RISCV_TPREL_S = 50
    R_RISCV_RELAX = 51
    R_RISCV_SUB6 = 52
    R_RISCV_SET6 = 53
    R_RISCV_SET8 = 54
    R_RISCV_SET16 = 55
    R_RISCV_SET32 = 56
    R_RISCV_32_PCREL = 57
    R_RISCV_IRELATIVE = 58
    R_RISCV_PLT32 = 59
    R_RISCV_SET_ULEB128 = 60
    R_RISCV_SUB_ULEB128 = 61
    R_RISCV_TLSDESC_HI20 = 62
    R_RISCV_TLSDESC_LOAD_LO12 = 63
    R_RISCV_TLSDESC_ADD_LO12 = 64
    R_RISCV_TLSDESC_CALL = 65
    R_RISCV_VENDOR = 191  # marks the next relocation as vendor specific (192..255)


class R_LARCH(IntEnum):
    """LoongArch (EM_LOONGARCH) relocation types, LA32 and LA64."""

    R_LARCH_NONE = 0
    R_LARCH_32 = 1
    R_LARCH_64 = 2
    R_LARCH_RELATIVE = 3
    R_LARCH_COPY = 4
    R_LARCH_JUMP_SLOT = 5
    R_LARCH_TLS_DTPMOD32 = 6
    R_LARCH_TLS_DTPMOD64 = 7
    R_LARCH_TLS_DTPREL32 = 8
    R_LARCH_TLS_DTPREL64 = 9
    R_LARCH_TLS_TPREL32 = 10
    R_LARCH_TLS_TPREL64 = 11
    R_LARCH_IRELATIVE = 12
    R_LARCH_TLS_DESC32 = 13
    R_LARCH_TLS_DESC64 = 14
    # Stack-machine relocations of psABI v1 (deprecated since v2.00).
    R_LARCH_MARK_LA = 20
    R_LARCH_MARK_PCREL = 21
    R_LARCH_SOP_PUSH_PCREL = 22
    R_LARCH_SOP_PUSH_ABSOLUTE = 23
    R_LARCH_SOP_PUSH_DUP = 24
    R_LARCH_SOP_PUSH_GPREL = 25
    R_LARCH_SOP_PUSH_TLS_TPREL = 26
    R_LARCH_SOP_PUSH_TLS_GOT = 27
    R_LARCH_SOP_PUSH_TLS_GD = 28
    R_LARCH_SOP_PUSH_PLT_PCREL = 29
    R_LARCH_SOP_ASSERT = 30
    R_LARCH_SOP_NOT = 31
    R_LARCH_SOP_SUB = 32
    R_LARCH_SOP_SL = 33
    R_LARCH_SOP_SR = 34
    R_LARCH_SOP_ADD = 35
    R_LARCH_SOP_AND = 36
    R_LARCH_SOP_IF_ELSE = 37
    R_LARCH_SOP_POP_32_S_10_5 = 38
    R_LARCH_SOP_POP_32_U_10_12 = 39
    R_LARCH_SOP_POP_32_S_10_12 = 40
    R_LARCH_SOP_POP_32_S_10_16 = 41
    R_LARCH_SOP_POP_32_S_10_16_S2 = 42
    R_LARCH_SOP_POP_32_S_5_20 = 43
    R_LARCH_SOP_POP_32_S_0_5_10_16_S2 = 44
    R_LARCH_SOP_POP_32_S_0_10_10_16_S2 = 45
    R_LARCH_SOP_POP_32_U = 46
    R_LARCH_ADD8 = 47
    R_LARCH_ADD16 = 48
    R_LARCH_ADD24 = 49
    R_LARCH_ADD32 = 50
    R_LARCH_ADD64 = 51
    R_LARCH_SUB8 = 52
    R_LARCH_SUB16 = 53
    R_LARCH_SUB24 = 54
    R_LARCH_SUB32 = 55
    R_LARCH_SUB64 = 56
    R_LARCH_GNU_VTINHERIT = 57
    R_LARCH_GNU_VTENTRY = 58
    # psABI v2.00 direct (non stack-machine) relocations.
    R_LARCH_B16 = 64
    R_LARCH_B21 = 65
    R_LARCH_B26 = 66
    R_LARCH_ABS_HI20 = 67
    R_LARCH_ABS_LO12 = 68
    R_LARCH_ABS64_LO20 = 69
    R_LARCH_ABS64_HI12 = 70
    R_LARCH_PCALA_HI20 = 71
    R_LARCH_PCALA_LO12 = 72
    R_LARCH_PCALA64_LO20 = 73
    R_LARCH_PCALA64_HI12 = 74
    R_LARCH_GOT_PC_HI20 = 75
    R_LARCH_GOT_PC_LO12 = 76
    R_LARCH_GOT64_PC_LO20 = 77
    R_LARCH_GOT64_PC_HI12 = 78
    R_LARCH_GOT_HI20 = 79
    R_LARCH_GOT_LO12 = 80
    R_LARCH_GOT64_LO20 = 81
    R_LARCH_GOT64_HI12 = 82
    R_LARCH_TLS_LE_HI20 = 83
    R_LARCH_TLS_LE_LO12 = 84
    R_LARCH_TLS_LE64_LO20 = 85
    R_LARCH_TLS_LE64_HI12 = 86
    R_LARCH_TLS_IE_PC_HI20 = 87
    R_LARCH_TLS_IE_PC_LO12 = 88
    R_LARCH_TLS_IE64_PC_LO20 = 89
    R_LARCH_TLS_IE64_PC_HI12 = 90
    R_LARCH_TLS_IE_HI20 = 91
    R_LARCH_TLS_IE_LO12 = 92
    R_LARCH_TLS_IE64_LO20 = 93
    R_LARCH_TLS_IE64_HI12 = 94
    R_LARCH_TLS_LD_PC_HI20 = 95
    R_LARCH_TLS_LD_HI20 = 96
    R_LARCH_TLS_GD_PC_HI20 = 97
    R_LARCH_TLS_GD_HI20 = 98
    R_LARCH_32_PCREL = 99
    R_LARCH_RELAX = 100
    R_LARCH_DELETE = 101  # psABI v2.10 only; reserved since v2.20
    R_LARCH_ALIGN = 102
    R_LARCH_PCREL20_S2 = 103
    R_LARCH_CFA = 104  # psABI v2.10 only; reserved since v2.20
    R_LARCH_ADD6 = 105
    R_LARCH_SUB6 = 106
    R_LARCH_ADD_ULEB128 = 107
    R_LARCH_SUB_ULEB128 = 108
    R_LARCH_64_PCREL = 109
    R_LARCH_CALL36 = 110
    # psABI v2.30: TLS descriptors and relaxable TLS sequences.
    R_LARCH_TLS_DESC_PC_HI20 = 111
    R_LARCH_TLS_DESC_PC_LO12 = 112
    R_LARCH_TLS_DESC64_PC_LO20 = 113
    R_LARCH_TLS_DESC64_PC_HI12 = 114
    R_LARCH_TLS_DESC_HI20 = 115
    R_LARCH_TLS_DESC_LO12 = 116
    R_LARCH_TLS_DESC64_LO20 = 117
    R_LARCH_TLS_DESC64_HI12 = 118
    R_LARCH_TLS_DESC_LD = 119
    R_LARCH_TLS_DESC_CALL = 120
    R_LARCH_TLS_LE_HI20_R = 121
    R_LARCH_TLS_LE_ADD_R = 122
    R_LARCH_TLS_LE_LO12_R = 123
    R_LARCH_TLS_LD_PCREL20_S2 = 124
    R_LARCH_TLS_GD_PCREL20_S2 = 125
    R_LARCH_TLS_DESC_PCREL20_S2 = 126


#: e_machine -> relocation type enum of that ISA.
RTYPES_BY_MACHINE: Final[dict[int, type[IntEnum]]] = {
    EM.EM_386: R_386,
    EM.EM_X86_64: R_X86_64,
    EM.EM_AARCH64: R_AARCH64,
    EM.EM_ARM: R_ARM,
    EM.EM_RISCV: R_RISCV,
    EM.EM_LOONGARCH: R_LARCH,
}


def rtype_name(e_machine: int, r_type: int) -> str:
    """The psABI name of relocation *r_type* on *e_machine*; never raises.

    ``rtype_name(62, 22) == "R_X86_64_GOTTPOFF"``; an unassigned number gives
    ``"R_X86_64_<unknown 200>"``; a machine without a table gives e.g.
    ``"R_<EM_MIPS>_<unknown 5>"``.
    """
    try:
        enum_cls = RTYPES_BY_MACHINE.get(int(e_machine))
        if enum_cls is None:
            return f"R_<{name_of(EM, e_machine)}>_<unknown {r_type}>"
        try:
            return enum_cls(int(r_type)).name
        except ValueError:
            return f"{enum_cls.__name__}_<unknown {r_type}>"
    except Exception:  # noqa: BLE001 - the contract is "never raise"
        return f"R_<machine {e_machine!r}>_<unknown {r_type!r}>"
