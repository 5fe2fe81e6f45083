"""Spot checks of the generic ELF constants and the per-ISA relocation tables.

Numbers are checked against values quoted from the gABI and the psABIs.  When
binutils' ``readelf`` is installed the relocation tables are also compared with
its names: a tiny relocatable file holding one relocation of every type number
is written by hand (nothing is compiled) and ``readelf -rW`` names them.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from enum import IntEnum
from pathlib import Path

import pytest

from relink.arch.rtypes import (
    R_386,
    R_AARCH64,
    R_ARM,
    R_LARCH,
    R_RISCV,
    R_X86_64,
    RTYPES_BY_MACHINE,
    rtype_name,
)
from relink.elf.constants import (
    DF,
    DF_1,
    DT,
    ELFCLASS,
    ELFDATA,
    ELFMAG,
    EM,
    ET,
    GRP,
    NT,
    NT_CORE,
    PF,
    PT,
    SHF,
    SHN,
    SHT,
    STB,
    STT,
    STV,
    VER_FLG,
    VER_NDX,
    VERSYM_HIDDEN,
    VERSYM_VERSION,
    name_of,
)

# ---------------------------------------------------------------------------
# Generic constants
# ---------------------------------------------------------------------------

GENERIC: list[tuple[int, int]] = [
    (ELFCLASS.ELFCLASS32, 1),
    (ELFCLASS.ELFCLASS64, 2),
    (ELFDATA.ELFDATA2LSB, 1),
    (ELFDATA.ELFDATA2MSB, 2),
    (ET.ET_REL, 1),
    (ET.ET_EXEC, 2),
    (ET.ET_DYN, 3),
    (ET.ET_CORE, 4),
    (EM.EM_386, 3),
    (EM.EM_68K, 4),
    (EM.EM_MIPS, 8),
    (EM.EM_MIPS_RS3_LE, 10),
    (EM.EM_PPC, 20),
    (EM.EM_PPC64, 21),
    (EM.EM_S390, 22),
    (EM.EM_ARM, 40),
    (EM.EM_SH, 42),
    (EM.EM_SPARCV9, 43),
    (EM.EM_IA_64, 50),
    (EM.EM_X86_64, 62),
    (EM.EM_XTENSA, 94),
    (EM.EM_AARCH64, 183),
    (EM.EM_RISCV, 243),
    (EM.EM_BPF, 247),
    (EM.EM_LOONGARCH, 258),
    (PT.PT_LOAD, 1),
    (PT.PT_DYNAMIC, 2),
    (PT.PT_INTERP, 3),
    (PT.PT_NOTE, 4),
    (PT.PT_SHLIB, 5),
    (PT.PT_PHDR, 6),
    (PT.PT_TLS, 7),
    (PT.PT_GNU_EH_FRAME, 0x6474E550),
    (PT.PT_GNU_STACK, 0x6474E551),
    (PT.PT_GNU_RELRO, 0x6474E552),
    (PT.PT_GNU_PROPERTY, 0x6474E553),
    (PT.PT_ARM_EXIDX, 0x70000001),
    (PT.PT_RISCV_ATTRIBUTES, 0x70000003),
    (PF.PF_X, 1),
    (PF.PF_W, 2),
    (PF.PF_R, 4),
    (SHT.SHT_RELA, 4),
    (SHT.SHT_NOBITS, 8),
    (SHT.SHT_INIT_ARRAY, 14),
    (SHT.SHT_GROUP, 17),
    (SHT.SHT_SYMTAB_SHNDX, 18),
    (SHT.SHT_RELR, 19),
    (SHT.SHT_GNU_HASH, 0x6FFFFFF6),
    (SHT.SHT_GNU_verdef, 0x6FFFFFFD),
    (SHT.SHT_GNU_verneed, 0x6FFFFFFE),
    (SHT.SHT_GNU_versym, 0x6FFFFFFF),
    (SHT.SHT_X86_64_UNWIND, 0x70000001),
    (SHT.SHT_ARM_EXIDX, 0x70000001),
    (SHT.SHT_RISCV_ATTRIBUTES, 0x70000003),
    (SHT.SHT_LLVM_ADDRSIG, 0x6FFF4C03),
    (SHF.SHF_MERGE, 0x10),
    (SHF.SHF_STRINGS, 0x20),
    (SHF.SHF_INFO_LINK, 0x40),
    (SHF.SHF_LINK_ORDER, 0x80),
    (SHF.SHF_GROUP, 0x200),
    (SHF.SHF_TLS, 0x400),
    (SHF.SHF_COMPRESSED, 0x800),
    (SHF.SHF_GNU_RETAIN, 0x200000),
    (SHF.SHF_EXCLUDE, 0x80000000),
    (SHN.SHN_UNDEF, 0),
    (SHN.SHN_LORESERVE, 0xFF00),
    (SHN.SHN_ABS, 0xFFF1),
    (SHN.SHN_COMMON, 0xFFF2),
    (SHN.SHN_XINDEX, 0xFFFF),
    (STB.STB_WEAK, 2),
    (STB.STB_GNU_UNIQUE, 10),
    (STT.STT_TLS, 6),
    (STT.STT_GNU_IFUNC, 10),
    (STV.STV_PROTECTED, 3),
    (DT.DT_NEEDED, 1),
    (DT.DT_JMPREL, 23),
    (DT.DT_FLAGS, 30),
    (DT.DT_PREINIT_ARRAY, 32),
    (DT.DT_RELRSZ, 35),
    (DT.DT_RELR, 36),
    (DT.DT_RELRENT, 37),
    (DT.DT_GNU_HASH, 0x6FFFFEF5),
    (DT.DT_TLSDESC_PLT, 0x6FFFFEF6),
    (DT.DT_TLSDESC_GOT, 0x6FFFFEF7),
    (DT.DT_VERSYM, 0x6FFFFFF0),
    (DT.DT_RELACOUNT, 0x6FFFFFF9),
    (DT.DT_RELCOUNT, 0x6FFFFFFA),
    (DT.DT_FLAGS_1, 0x6FFFFFFB),
    (DT.DT_VERDEF, 0x6FFFFFFC),
    (DT.DT_VERNEEDNUM, 0x6FFFFFFF),
    (DT.DT_CHECKSUM, 0x6FFFFDF8),
    (DT.DT_SYMINFO, 0x6FFFFEFF),
    (DT.DT_AUXILIARY, 0x7FFFFFFD),
    (DT.DT_FILTER, 0x7FFFFFFF),
    (DT.DT_X86_64_PLT, 0x70000000),
    (DT.DT_X86_64_PLTENT, 0x70000003),
    (DF.DF_BIND_NOW, 0x8),
    (DF.DF_STATIC_TLS, 0x10),
    (DF_1.DF_1_NOW, 0x1),
    (DF_1.DF_1_NODELETE, 0x8),
    (DF_1.DF_1_PIE, 0x08000000),
    (NT.NT_GNU_ABI_TAG, 1),
    (NT.NT_GNU_BUILD_ID, 3),
    (NT.NT_GNU_PROPERTY_TYPE_0, 5),
    (NT_CORE.NT_PRSTATUS, 1),
    (NT_CORE.NT_AUXV, 6),
    (VER_NDX.VER_NDX_LOCAL, 0),
    (VER_NDX.VER_NDX_GLOBAL, 1),
    (VER_FLG.VER_FLG_WEAK, 2),
    (VERSYM_HIDDEN, 0x8000),
    (VERSYM_VERSION, 0x7FFF),
    (GRP.GRP_COMDAT, 1),
]


@pytest.mark.parametrize(("member", "expected"), GENERIC)
def test_generic_numbers(member: int, expected: int) -> None:
    assert member == expected


def test_magic() -> None:
    assert ELFMAG == b"\x7fELF"


def test_canonical_names_win_over_aliases() -> None:
    assert DT(32).name == "DT_PREINIT_ARRAY"
    assert DT(0x6FFFFDFF).name == "DT_SYMINENT"
    assert DT(0x7FFFFFFF).name == "DT_FILTER"
    assert SHN(0xFFFF).name == "SHN_XINDEX"
    assert STT(10).name == "STT_GNU_IFUNC"
    assert STB(10).name == "STB_GNU_UNIQUE"
    assert NT(3).name == "NT_GNU_BUILD_ID"
    assert NT_CORE(1).name == "NT_PRSTATUS"
    assert R_AARCH64(1028).name == "R_AARCH64_TLS_DTPMOD"
    assert R_ARM(10).name == "R_ARM_THM_CALL"
    assert R_386(7).name == "R_386_JUMP_SLOT"


def test_name_of_known_and_unknown() -> None:
    assert name_of(DT, 0x6FFFFEF5) == "DT_GNU_HASH"
    assert name_of(DT, 0x6FFFFFF1) == "DT_0x6ffffff1"
    assert name_of(EM, 999) == "EM_0x3e7"
    assert name_of(DF_1, 0x40000000) == "DF_1_NOCOMMON"
    assert name_of(SHT, -1) == "SHT_-0x1"


def test_name_of_flags() -> None:
    assert name_of(SHF, 0x3) == "SHF_WRITE|SHF_ALLOC"
    assert name_of(SHF, 0x1002) == "SHF_ALLOC|SHF_0x1000"
    assert name_of(PF, 0x5) == "PF_X|PF_R"
    assert name_of(SHF, 0) == "0"
    assert name_of(DF_1, 0x08000001) == "DF_1_NOW|DF_1_PIE"


def test_name_of_machine_specific() -> None:
    assert name_of(SHT, 0x70000001, machine=EM.EM_ARM) == "SHT_ARM_EXIDX"
    assert name_of(SHT, 0x70000001, machine=EM.EM_X86_64) == "SHT_X86_64_UNWIND"
    assert name_of(SHT, 0x70000003, machine=EM.EM_RISCV) == "SHT_RISCV_ATTRIBUTES"
    assert name_of(SHT, 0x70000003, machine=EM.EM_X86_64) == "SHT_0x70000003"
    assert name_of(DT, 0x70000001, machine=EM.EM_AARCH64) == "DT_AARCH64_BTI_PLT"
    assert name_of(DT, 0x70000001, machine=EM.EM_RISCV) == "DT_RISCV_VARIANT_CC"
    assert name_of(DT, 0x70000000, machine=EM.EM_X86_64) == "DT_X86_64_PLT"
    assert name_of(DT, 0x70000000, machine=EM.EM_AARCH64) == "DT_LOPROC"
    assert name_of(PT, 0x70000001, machine=EM.EM_ARM) == "PT_ARM_EXIDX"
    assert name_of(SHF, 0x20000000, machine=EM.EM_AARCH64) == "SHF_AARCH64_PURECODE"
    assert name_of(DT, 1, machine=EM.EM_ARM) == "DT_NEEDED"


@pytest.mark.parametrize("bad", [None, "x", 1.5j])
def test_name_of_never_raises(bad: object) -> None:
    assert name_of(DT, bad).startswith("DT_")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Relocation types: 20+ known numbers per ISA
# ---------------------------------------------------------------------------

X86_64: list[tuple[int, int]] = [
    (R_X86_64.R_X86_64_NONE, 0),
    (R_X86_64.R_X86_64_64, 1),
    (R_X86_64.R_X86_64_PC32, 2),
    (R_X86_64.R_X86_64_GOT32, 3),
    (R_X86_64.R_X86_64_PLT32, 4),
    (R_X86_64.R_X86_64_COPY, 5),
    (R_X86_64.R_X86_64_GLOB_DAT, 6),
    (R_X86_64.R_X86_64_JUMP_SLOT, 7),
    (R_X86_64.R_X86_64_RELATIVE, 8),
    (R_X86_64.R_X86_64_GOTPCREL, 9),
    (R_X86_64.R_X86_64_32, 10),
    (R_X86_64.R_X86_64_32S, 11),
    (R_X86_64.R_X86_64_DTPMOD64, 16),
    (R_X86_64.R_X86_64_DTPOFF64, 17),
    (R_X86_64.R_X86_64_TPOFF64, 18),
    (R_X86_64.R_X86_64_TLSGD, 19),
    (R_X86_64.R_X86_64_TLSLD, 20),
    (R_X86_64.R_X86_64_GOTTPOFF, 22),
    (R_X86_64.R_X86_64_TPOFF32, 23),
    (R_X86_64.R_X86_64_PC64, 24),
    (R_X86_64.R_X86_64_SIZE64, 33),
    (R_X86_64.R_X86_64_GOTPC32_TLSDESC, 34),
    (R_X86_64.R_X86_64_TLSDESC_CALL, 35),
    (R_X86_64.R_X86_64_TLSDESC, 36),
    (R_X86_64.R_X86_64_IRELATIVE, 37),
    (R_X86_64.R_X86_64_RELATIVE64, 38),
    (R_X86_64.R_X86_64_GOTPCRELX, 41),
    (R_X86_64.R_X86_64_REX_GOTPCRELX, 42),
    (R_X86_64.R_X86_64_CODE_4_GOTPCRELX, 43),
    (R_X86_64.R_X86_64_CODE_4_GOTTPOFF, 44),
    (R_X86_64.R_X86_64_CODE_4_GOTPC32_TLSDESC, 45),
    (R_X86_64.R_X86_64_CODE_6_GOTPC32_TLSDESC, 51),
]

I386: list[tuple[int, int]] = [
    (R_386.R_386_NONE, 0),
    (R_386.R_386_32, 1),
    (R_386.R_386_PC32, 2),
    (R_386.R_386_GOT32, 3),
    (R_386.R_386_PLT32, 4),
    (R_386.R_386_COPY, 5),
    (R_386.R_386_GLOB_DAT, 6),
    (R_386.R_386_JUMP_SLOT, 7),
    (R_386.R_386_RELATIVE, 8),
    (R_386.R_386_GOTOFF, 9),
    (R_386.R_386_GOTPC, 10),
    (R_386.R_386_TLS_TPOFF, 14),
    (R_386.R_386_TLS_IE, 15),
    (R_386.R_386_TLS_GOTIE, 16),
    (R_386.R_386_TLS_LE, 17),
    (R_386.R_386_TLS_GD, 18),
    (R_386.R_386_TLS_LDM, 19),
    (R_386.R_386_16, 20),
    (R_386.R_386_PC8, 23),
    (R_386.R_386_TLS_LDO_32, 32),
    (R_386.R_386_TLS_IE_32, 33),
    (R_386.R_386_TLS_LE_32, 34),
    (R_386.R_386_TLS_DTPMOD32, 35),
    (R_386.R_386_TLS_DTPOFF32, 36),
    (R_386.R_386_TLS_TPOFF32, 37),
    (R_386.R_386_SIZE32, 38),
    (R_386.R_386_TLS_GOTDESC, 39),
    (R_386.R_386_TLS_DESC_CALL, 40),
    (R_386.R_386_TLS_DESC, 41),
    (R_386.R_386_IRELATIVE, 42),
    (R_386.R_386_GOT32X, 43),
]

AARCH64: list[tuple[int, int]] = [
    (R_AARCH64.R_AARCH64_NONE, 0),
    (R_AARCH64.R_AARCH64_ABS64, 257),
    (R_AARCH64.R_AARCH64_ABS32, 258),
    (R_AARCH64.R_AARCH64_PREL32, 261),
    (R_AARCH64.R_AARCH64_MOVW_UABS_G0, 263),
    (R_AARCH64.R_AARCH64_MOVW_UABS_G3, 269),
    (R_AARCH64.R_AARCH64_ADR_PREL_LO21, 274),
    (R_AARCH64.R_AARCH64_ADR_PREL_PG_HI21, 275),
    (R_AARCH64.R_AARCH64_ADD_ABS_LO12_NC, 277),
    (R_AARCH64.R_AARCH64_CONDBR19, 280),
    (R_AARCH64.R_AARCH64_JUMP26, 282),
    (R_AARCH64.R_AARCH64_CALL26, 283),
    (R_AARCH64.R_AARCH64_LDST64_ABS_LO12_NC, 286),
    (R_AARCH64.R_AARCH64_LDST128_ABS_LO12_NC, 299),
    (R_AARCH64.R_AARCH64_ADR_GOT_PAGE, 311),
    (R_AARCH64.R_AARCH64_LD64_GOT_LO12_NC, 312),
    (R_AARCH64.R_AARCH64_PLT32, 314),
    (R_AARCH64.R_AARCH64_GOTPCREL32, 315),
    (R_AARCH64.R_AARCH64_TLSGD_ADR_PAGE21, 513),
    (R_AARCH64.R_AARCH64_TLSLD_ADR_PAGE21, 518),
    (R_AARCH64.R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21, 541),
    (R_AARCH64.R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC, 542),
    (R_AARCH64.R_AARCH64_TLSLE_ADD_TPREL_HI12, 549),
    (R_AARCH64.R_AARCH64_TLSLE_ADD_TPREL_LO12_NC, 551),
    (R_AARCH64.R_AARCH64_TLSDESC_ADR_PAGE21, 562),
    (R_AARCH64.R_AARCH64_TLSDESC_LD64_LO12, 563),
    (R_AARCH64.R_AARCH64_TLSDESC_ADD_LO12, 564),
    (R_AARCH64.R_AARCH64_TLSDESC_CALL, 569),
    (R_AARCH64.R_AARCH64_TLSLD_LDST128_DTPREL_LO12_NC, 573),
    (R_AARCH64.R_AARCH64_COPY, 1024),
    (R_AARCH64.R_AARCH64_GLOB_DAT, 1025),
    (R_AARCH64.R_AARCH64_JUMP_SLOT, 1026),
    (R_AARCH64.R_AARCH64_RELATIVE, 1027),
    (R_AARCH64.R_AARCH64_TLS_DTPMOD, 1028),
    (R_AARCH64.R_AARCH64_TLS_DTPREL, 1029),
    (R_AARCH64.R_AARCH64_TLS_TPREL, 1030),
    (R_AARCH64.R_AARCH64_TLSDESC, 1031),
    (R_AARCH64.R_AARCH64_IRELATIVE, 1032),
    (R_AARCH64.R_AARCH64_TLS_DTPMOD64, 1028),
]

ARM: list[tuple[int, int]] = [
    (R_ARM.R_ARM_NONE, 0),
    (R_ARM.R_ARM_PC24, 1),
    (R_ARM.R_ARM_ABS32, 2),
    (R_ARM.R_ARM_REL32, 3),
    (R_ARM.R_ARM_THM_CALL, 10),
    (R_ARM.R_ARM_TLS_DESC, 13),
    (R_ARM.R_ARM_TLS_DTPMOD32, 17),
    (R_ARM.R_ARM_TLS_DTPOFF32, 18),
    (R_ARM.R_ARM_TLS_TPOFF32, 19),
    (R_ARM.R_ARM_COPY, 20),
    (R_ARM.R_ARM_GLOB_DAT, 21),
    (R_ARM.R_ARM_JUMP_SLOT, 22),
    (R_ARM.R_ARM_RELATIVE, 23),
    (R_ARM.R_ARM_GOTOFF32, 24),
    (R_ARM.R_ARM_BASE_PREL, 25),
    (R_ARM.R_ARM_GOT_BREL, 26),
    (R_ARM.R_ARM_CALL, 28),
    (R_ARM.R_ARM_JUMP24, 29),
    (R_ARM.R_ARM_THM_JUMP24, 30),
    (R_ARM.R_ARM_TARGET1, 38),
    (R_ARM.R_ARM_V4BX, 40),
    (R_ARM.R_ARM_PREL31, 42),
    (R_ARM.R_ARM_MOVW_ABS_NC, 43),
    (R_ARM.R_ARM_MOVT_ABS, 44),
    (R_ARM.R_ARM_THM_MOVW_ABS_NC, 47),
    (R_ARM.R_ARM_THM_MOVT_ABS, 48),
    (R_ARM.R_ARM_THM_JUMP19, 51),
    (R_ARM.R_ARM_TLS_GOTDESC, 90),
    (R_ARM.R_ARM_TLS_CALL, 91),
    (R_ARM.R_ARM_GOT_PREL, 96),
    (R_ARM.R_ARM_THM_JUMP11, 102),
    (R_ARM.R_ARM_TLS_GD32, 104),
    (R_ARM.R_ARM_TLS_IE32, 107),
    (R_ARM.R_ARM_TLS_LE32, 108),
    (R_ARM.R_ARM_IRELATIVE, 160),
    (R_ARM.R_ARM_TLS_IE32_FDPIC, 167),
]

RISCV: list[tuple[int, int]] = [
    (R_RISCV.R_RISCV_NONE, 0),
    (R_RISCV.R_RISCV_32, 1),
    (R_RISCV.R_RISCV_64, 2),
    (R_RISCV.R_RISCV_RELATIVE, 3),
    (R_RISCV.R_RISCV_COPY, 4),
    (R_RISCV.R_RISCV_JUMP_SLOT, 5),
    (R_RISCV.R_RISCV_TLS_DTPMOD32, 6),
    (R_RISCV.R_RISCV_TLS_DTPMOD64, 7),
    (R_RISCV.R_RISCV_TLS_DTPREL32, 8),
    (R_RISCV.R_RISCV_TLS_DTPREL64, 9),
    (R_RISCV.R_RISCV_TLS_TPREL32, 10),
    (R_RISCV.R_RISCV_TLS_TPREL64, 11),
    (R_RISCV.R_RISCV_TLSDESC, 12),
    (R_RISCV.R_RISCV_BRANCH, 16),
    (R_RISCV.R_RISCV_JAL, 17),
    (R_RISCV.R_RISCV_CALL, 18),
    (R_RISCV.R_RISCV_CALL_PLT, 19),
    (R_RISCV.R_RISCV_GOT_HI20, 20),
    (R_RISCV.R_RISCV_TLS_GOT_HI20, 21),
    (R_RISCV.R_RISCV_TLS_GD_HI20, 22),
    (R_RISCV.R_RISCV_PCREL_HI20, 23),
    (R_RISCV.R_RISCV_PCREL_LO12_S, 25),
    (R_RISCV.R_RISCV_HI20, 26),
    (R_RISCV.R_RISCV_LO12_S, 28),
    (R_RISCV.R_RISCV_TPREL_ADD, 32),
    (R_RISCV.R_RISCV_ADD64, 36),
    (R_RISCV.R_RISCV_SUB64, 40),
    (R_RISCV.R_RISCV_GOT32_PCREL, 41),
    (R_RISCV.R_RISCV_ALIGN, 43),
    (R_RISCV.R_RISCV_RVC_BRANCH, 44),
    (R_RISCV.R_RISCV_RVC_JUMP, 45),
    (R_RISCV.R_RISCV_RELAX, 51),
    (R_RISCV.R_RISCV_SUB6, 52),
    (R_RISCV.R_RISCV_SET32, 56),
    (R_RISCV.R_RISCV_32_PCREL, 57),
    (R_RISCV.R_RISCV_IRELATIVE, 58),
    (R_RISCV.R_RISCV_PLT32, 59),
    (R_RISCV.R_RISCV_SET_ULEB128, 60),
    (R_RISCV.R_RISCV_SUB_ULEB128, 61),
    (R_RISCV.R_RISCV_TLSDESC_HI20, 62),
    (R_RISCV.R_RISCV_TLSDESC_LOAD_LO12, 63),
    (R_RISCV.R_RISCV_TLSDESC_ADD_LO12, 64),
    (R_RISCV.R_RISCV_TLSDESC_CALL, 65),
]

LARCH: list[tuple[int, int]] = [
    (R_LARCH.R_LARCH_NONE, 0),
    (R_LARCH.R_LARCH_32, 1),
    (R_LARCH.R_LARCH_64, 2),
    (R_LARCH.R_LARCH_RELATIVE, 3),
    (R_LARCH.R_LARCH_COPY, 4),
    (R_LARCH.R_LARCH_JUMP_SLOT, 5),
    (R_LARCH.R_LARCH_TLS_DTPMOD32, 6),
    (R_LARCH.R_LARCH_TLS_DTPMOD64, 7),
    (R_LARCH.R_LARCH_TLS_TPREL64, 11),
    (R_LARCH.R_LARCH_IRELATIVE, 12),
    (R_LARCH.R_LARCH_TLS_DESC32, 13),
    (R_LARCH.R_LARCH_TLS_DESC64, 14),
    (R_LARCH.R_LARCH_MARK_LA, 20),
    (R_LARCH.R_LARCH_SOP_POP_32_U, 46),
    (R_LARCH.R_LARCH_ADD8, 47),
    (R_LARCH.R_LARCH_SUB64, 56),
    (R_LARCH.R_LARCH_B16, 64),
    (R_LARCH.R_LARCH_B21, 65),
    (R_LARCH.R_LARCH_B26, 66),
    (R_LARCH.R_LARCH_ABS_HI20, 67),
    (R_LARCH.R_LARCH_ABS64_HI12, 70),
    (R_LARCH.R_LARCH_PCALA_HI20, 71),
    (R_LARCH.R_LARCH_PCALA_LO12, 72),
    (R_LARCH.R_LARCH_GOT_PC_HI20, 75),
    (R_LARCH.R_LARCH_GOT_PC_LO12, 76),
    (R_LARCH.R_LARCH_TLS_LE_HI20, 83),
    (R_LARCH.R_LARCH_TLS_IE_PC_HI20, 87),
    (R_LARCH.R_LARCH_TLS_LD_PC_HI20, 95),
    (R_LARCH.R_LARCH_TLS_GD_PC_HI20, 97),
    (R_LARCH.R_LARCH_32_PCREL, 99),
    (R_LARCH.R_LARCH_RELAX, 100),
    (R_LARCH.R_LARCH_ALIGN, 102),
    (R_LARCH.R_LARCH_PCREL20_S2, 103),
    (R_LARCH.R_LARCH_ADD6, 105),
    (R_LARCH.R_LARCH_SUB6, 106),
    (R_LARCH.R_LARCH_ADD_ULEB128, 107),
    (R_LARCH.R_LARCH_SUB_ULEB128, 108),
    (R_LARCH.R_LARCH_64_PCREL, 109),
    (R_LARCH.R_LARCH_CALL36, 110),
    (R_LARCH.R_LARCH_TLS_DESC_PC_HI20, 111),
    (R_LARCH.R_LARCH_TLS_DESC_CALL, 120),
    (R_LARCH.R_LARCH_TLS_DESC_PCREL20_S2, 126),
]


@pytest.mark.parametrize(("member", "expected"), X86_64 + I386 + AARCH64 + ARM + RISCV + LARCH)
def test_relocation_numbers(member: int, expected: int) -> None:
    assert member == expected


def test_rtypes_by_machine() -> None:
    assert RTYPES_BY_MACHINE == {
        3: R_386,
        62: R_X86_64,
        183: R_AARCH64,
        40: R_ARM,
        243: R_RISCV,
        258: R_LARCH,
    }


def test_rtype_name() -> None:
    assert rtype_name(62, 22) == "R_X86_64_GOTTPOFF"
    assert rtype_name(62, 41) == "R_X86_64_GOTPCRELX"
    assert rtype_name(3, 14) == "R_386_TLS_TPOFF"
    assert rtype_name(183, 283) == "R_AARCH64_CALL26"
    assert rtype_name(183, 1029) == "R_AARCH64_TLS_DTPREL"
    assert rtype_name(40, 28) == "R_ARM_CALL"
    assert rtype_name(243, 19) == "R_RISCV_CALL_PLT"
    assert rtype_name(258, 66) == "R_LARCH_B26"


def test_rtype_name_unknown() -> None:
    assert rtype_name(62, 200) == "R_X86_64_<unknown 200>"
    assert rtype_name(183, 281) == "R_AARCH64_<unknown 281>"
    assert rtype_name(243, 13) == "R_RISCV_<unknown 13>"
    assert rtype_name(62, -1) == "R_X86_64_<unknown -1>"
    assert rtype_name(8, 5) == "R_<EM_MIPS>_<unknown 5>"
    assert rtype_name(0xBEEF, 1) == "R_<EM_0xbeef>_<unknown 1>"
    assert rtype_name(None, None).startswith("R_")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Cross-check against binutils' readelf (skipped when it is not installed)
# ---------------------------------------------------------------------------

READELF = shutil.which("readelf")

# (e_machine, ELFCLASS64?, RELA?, highest type number to probe)
PROBES: list[tuple[int, bool, bool, int]] = [
    (EM.EM_X86_64, True, True, 255),
    (EM.EM_386, False, False, 255),
    (EM.EM_AARCH64, True, True, 1100),
    (EM.EM_ARM, False, False, 255),
    (EM.EM_RISCV, True, True, 255),
    (EM.EM_LOONGARCH, True, True, 255),
]


def _relocatable(machine: int, is64: bool, rela: bool, types: list[int]) -> bytes:
    """A minimal little-endian ET_REL whose only relocation section has one
    entry per type number, with ``r_offset`` equal to the type."""
    shstrtab = b"\0.text\0.rel\0.symtab\0.strtab\0.shstrtab\0"
    if is64:
        fmt, entsize, sym = ("<QQq" if rela else "<QQ"), (24 if rela else 16), bytes(24)
        relocs = b"".join(struct.pack(fmt, t, t, *([0] if rela else [])) for t in types)
    else:
        fmt, entsize, sym = ("<IIi" if rela else "<II"), (12 if rela else 8), bytes(16)
        relocs = b"".join(struct.pack(fmt, t, t & 0xFF, *([0] if rela else [])) for t in types)
    ehsize = 64 if is64 else 52
    blobs = [bytes(16), relocs, sym, b"\0", shstrtab]
    body = bytearray()
    offsets: list[int] = []
    for blob in blobs:
        body += bytes(-(ehsize + len(body)) % 8)
        offsets.append(ehsize + len(body))
        body += blob
    body += bytes(-(ehsize + len(body)) % 8)
    shoff = ehsize + len(body)

    def shdr(name: bytes, *fields: int) -> bytes:
        idx = shstrtab.index(name + b"\0") if name else 0
        if is64:
            return struct.pack("<IIQQQQIIQQ", idx, *fields)
        return struct.pack("<IIIIIIIIII", idx, *fields)

    # sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign, sh_entsize
    shdrs = b"".join(
        [
            shdr(b"", 0, 0, 0, 0, 0, 0, 0, 0, 0),
            shdr(b".text", SHT.SHT_PROGBITS, 6, 0, offsets[0], 16, 0, 0, 4, 0),
            shdr(
                b".rel",
                SHT.SHT_RELA if rela else SHT.SHT_REL,
                SHF.SHF_INFO_LINK,
                0,
                offsets[1],
                len(relocs),
                3,
                1,
                8,
                entsize,
            ),
            shdr(b".symtab", SHT.SHT_SYMTAB, 0, 0, offsets[2], len(sym), 4, 1, 8, len(sym)),
            shdr(b".strtab", SHT.SHT_STRTAB, 0, 0, offsets[3], 1, 0, 0, 1, 0),
            shdr(b".shstrtab", SHT.SHT_STRTAB, 0, 0, offsets[4], len(shstrtab), 0, 0, 1, 0),
        ]
    )
    ident = ELFMAG + bytes([2 if is64 else 1, 1, 1]) + bytes(9)
    if is64:
        header = struct.pack("<HHIQQQIHHHHHH", 1, machine, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 6, 5)
    else:
        eflags = 0x05000000 if machine == EM.EM_ARM else 0  # EABI version 5
        header = struct.pack(
            "<HHIIIIIHHHHHH", 1, machine, 1, 0, 0, shoff, eflags, 52, 0, 0, 40, 6, 5
        )
    return ident + header + bytes(body) + shdrs


def _readelf_names(path: Path) -> dict[int, str]:
    assert READELF is not None
    out = subprocess.run(
        [READELF, "-rW", str(path)], capture_output=True, text=True, check=True
    ).stdout
    names: dict[int, str] = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[2].startswith("unrecognized"):
            continue
        try:
            offset = int(fields[0], 16)
            int(fields[1], 16)
        except ValueError:
            continue
        names[offset] = fields[2]
    return names


@pytest.mark.skipif(READELF is None, reason="binutils readelf is not installed")
@pytest.mark.parametrize(("machine", "is64", "rela", "highest"), PROBES)
def test_relocation_names_match_readelf(
    tmp_path: Path, machine: int, is64: bool, rela: bool, highest: int
) -> None:
    enum_cls: type[IntEnum] = RTYPES_BY_MACHINE[machine]
    path = tmp_path / "probe.o"
    path.write_bytes(_relocatable(machine, is64, rela, list(range(highest + 1))))
    names = _readelf_names(path)
    assert names, "readelf printed no relocations"
    spellings: dict[int, set[str]] = {}
    for name, member in enum_cls.__members__.items():
        spellings.setdefault(int(member), set()).add(name)
    problems = []
    for number, readelf_name in sorted(names.items()):
        if readelf_name.startswith("R_AARCH64_P32_"):
            continue  # ILP32 numbering, which readelf also applies to ELFCLASS64
        if readelf_name not in spellings.get(number, set()):
            problems.append((number, readelf_name, sorted(spellings.get(number, set()))))
    assert not problems, f"readelf disagrees with {enum_cls.__name__}: {problems}"
