"""Generic ELF constants: the single source of truth for gABI/OS-level numbers.

Position in the pipeline::

    input -> elf -> arch -> memory -> loader -> relocation
             ^^^

This module belongs to the ``elf`` layer.  It is pure data: every number the
rest of ``relink`` needs to interpret an ELF file *independently of the target
instruction set* lives here (file header identification, object/segment/section
types and flags, special section indices, symbol binding/type/visibility,
dynamic-section tags and flag words, note types, symbol versioning and section
groups).  Relocation type numbers are ISA specific and live in
:mod:`relink.arch.rtypes`.

Sources (hand transcribed, numbers only):

* System V ABI, generic ELF chapters ("gABI", 4.1 and the 2015+ drafts),
  including SHT_RELR / DT_RELR* which were adopted in 2022.
* The GNU extensions as documented in the Linux Standard Base and implemented
  by glibc's ``<elf.h>`` / binutils' ``include/elf/common.h`` (GNU hash,
  versioning, GNU_PROPERTY notes, PT_GNU_*), plus the handful of Sun/Solaris
  tags that glibc also accepts.
* Processor-specific program-header, section and dynamic-tag values from the
  x86-64, AArch64 (aaelf64, memtagabielf64), Arm (aaelf32) and RISC-V psABIs.

Every class is an :class:`enum.IntEnum` (or :class:`enum.IntFlag` for bit
masks) whose member names are the *full* ABI spelling, e.g. ``ET.ET_DYN``.
Where several ABI names share a number the preferred (most specific / most
common) name is defined first; later ones are kept as aliases so that
``SHT.SHT_ARM_EXIDX`` still works, but ``SHT(0x70000001).name`` yields the
canonical spelling.  Values in processor- or OS-specific ranges are ambiguous
without knowing ``e_machine``; :func:`name_of` accepts an optional ``machine``
argument to resolve them (``name_of(SHT, 0x70000001, machine=EM.EM_ARM)`` gives
``"SHT_ARM_EXIDX"``).
"""

from __future__ import annotations

import enum
import functools
from enum import IntEnum, IntFlag
from typing import Final, TypeAlias

__all__ = [
    "DF",
    "DF_1",
    "DF_GNU_1",
    "DT",
    "EI",
    "ELFCLASS",
    "ELFCOMPRESS",
    "ELFDATA",
    "ELFMAG",
    "ELFOSABI",
    "EM",
    "ET",
    "EV",
    "GRP",
    "NT",
    "NT_CORE",
    "PF",
    "PT",
    "SHF",
    "SHN",
    "SHT",
    "STB",
    "STN_UNDEF",
    "STT",
    "STV",
    "VERSYM_HIDDEN",
    "VERSYM_VERSION",
    "VER_DEF_CURRENT",
    "VER_FLG",
    "VER_NDX",
    "VER_NEED_CURRENT",
    "name_of",
]

# ---------------------------------------------------------------------------
# File identification (e_ident)
# ---------------------------------------------------------------------------

#: The four magic bytes at the start of every ELF file.
ELFMAG: Final[bytes] = b"\x7fELF"


class EI(IntEnum):
    """Indices into ``e_ident``."""

    EI_MAG0 = 0
    EI_MAG1 = 1
    EI_MAG2 = 2
    EI_MAG3 = 3
    EI_CLASS = 4
    EI_DATA = 5
    EI_VERSION = 6
    EI_OSABI = 7
    EI_ABIVERSION = 8
    EI_PAD = 9
    EI_NIDENT = 16


class ELFCLASS(IntEnum):
    """``e_ident[EI_CLASS]``: word size of the file."""

    ELFCLASSNONE = 0
    ELFCLASS32 = 1
    ELFCLASS64 = 2


class ELFDATA(IntEnum):
    """``e_ident[EI_DATA]``: byte order of the file."""

    ELFDATANONE = 0
    ELFDATA2LSB = 1
    ELFDATA2MSB = 2


class EV(IntEnum):
    """``e_ident[EI_VERSION]`` and ``e_version``."""

    EV_NONE = 0
    EV_CURRENT = 1


class ELFOSABI(IntEnum):
    """``e_ident[EI_OSABI]``."""

    ELFOSABI_NONE = 0
    ELFOSABI_SYSV = 0
    ELFOSABI_HPUX = 1
    ELFOSABI_NETBSD = 2
    ELFOSABI_GNU = 3
    ELFOSABI_LINUX = 3
    ELFOSABI_HURD = 4
    ELFOSABI_SOLARIS = 6
    ELFOSABI_AIX = 7
    ELFOSABI_IRIX = 8
    ELFOSABI_FREEBSD = 9
    ELFOSABI_TRU64 = 10
    ELFOSABI_MODESTO = 11
    ELFOSABI_OPENBSD = 12
    ELFOSABI_OPENVMS = 13
    ELFOSABI_NSK = 14
    ELFOSABI_AROS = 15
    ELFOSABI_FENIXOS = 16
    ELFOSABI_CLOUDABI = 17
    ELFOSABI_OPENVOS = 18
    ELFOSABI_ARM_AEABI = 64
    ELFOSABI_ARM = 97
    ELFOSABI_STANDALONE = 255


# ---------------------------------------------------------------------------
# ELF header: e_type, e_machine
# ---------------------------------------------------------------------------


class ET(IntEnum):
    """``e_type``: object file type."""

    ET_NONE = 0
    ET_REL = 1
    ET_EXEC = 2
    ET_DYN = 3
    ET_CORE = 4
    ET_LOOS = 0xFE00
    ET_HIOS = 0xFEFF
    ET_LOPROC = 0xFF00
    ET_HIPROC = 0xFFFF


class EM(IntEnum):
    """``e_machine``: target instruction set (gABI registry, glibc spelling).

    Only EM_386, EM_X86_64, EM_ARM, EM_AARCH64, EM_RISCV and EM_LOONGARCH are
    loadable by relink; the rest exist so diagnostics can name the machine.
    """

    EM_NONE = 0
    EM_M32 = 1
    EM_SPARC = 2
    EM_386 = 3
    EM_68K = 4
    EM_88K = 5
    EM_IAMCU = 6
    EM_860 = 7
    EM_MIPS = 8
    EM_S370 = 9
    EM_MIPS_RS3_LE = 10
    EM_PARISC = 15
    EM_VPP500 = 17
    EM_SPARC32PLUS = 18
    EM_960 = 19
    EM_PPC = 20
    EM_PPC64 = 21
    EM_S390 = 22
    EM_SPU = 23
    EM_V800 = 36
    EM_FR20 = 37
    EM_RH32 = 38
    EM_RCE = 39
    EM_ARM = 40
    EM_FAKE_ALPHA = 41  # gABI calls 41 EM_ALPHA; Linux/Alpha really uses 0x9026
    EM_SH = 42
    EM_SPARCV9 = 43
    EM_TRICORE = 44
    EM_ARC = 45
    EM_H8_300 = 46
    EM_H8_300H = 47
    EM_H8S = 48
    EM_H8_500 = 49
    EM_IA_64 = 50
    EM_MIPS_X = 51
    EM_COLDFIRE = 52
    EM_68HC12 = 53
    EM_MMA = 54
    EM_PCP = 55
    EM_NCPU = 56
    EM_NDR1 = 57
    EM_STARCORE = 58
    EM_ME16 = 59
    EM_ST100 = 60
    EM_TINYJ = 61
    EM_X86_64 = 62
    EM_PDSP = 63
    EM_PDP10 = 64
    EM_PDP11 = 65
    EM_FX66 = 66
    EM_ST9PLUS = 67
    EM_ST7 = 68
    EM_68HC16 = 69
    EM_68HC11 = 70
    EM_68HC08 = 71
    EM_68HC05 = 72
    EM_SVX = 73
    EM_ST19 = 74
    EM_VAX = 75
    EM_CRIS = 76
    EM_JAVELIN = 77
    EM_FIREPATH = 78
    EM_ZSP = 79
    EM_MMIX = 80
    EM_HUANY = 81
    EM_PRISM = 82
    EM_AVR = 83
    EM_FR30 = 84
    EM_D10V = 85
    EM_D30V = 86
    EM_V850 = 87
    EM_M32R = 88
    EM_MN10300 = 89
    EM_MN10200 = 90
    EM_PJ = 91
    EM_OPENRISC = 92
    EM_ARC_COMPACT = 93
    EM_XTENSA = 94
    EM_VIDEOCORE = 95
    EM_TMM_GPP = 96
    EM_NS32K = 97
    EM_TPC = 98
    EM_SNP1K = 99
    EM_ST200 = 100
    EM_IP2K = 101
    EM_MAX = 102
    EM_CR = 103
    EM_F2MC16 = 104
    EM_MSP430 = 105
    EM_BLACKFIN = 106
    EM_SE_C33 = 107
    EM_SEP = 108
    EM_ARCA = 109
    EM_UNICORE = 110
    EM_EXCESS = 111
    EM_DXP = 112
    EM_ALTERA_NIOS2 = 113
    EM_CRX = 114
    EM_XGATE = 115
    EM_C166 = 116
    EM_M16C = 117
    EM_DSPIC30F = 118
    EM_CE = 119
    EM_M32C = 120
    EM_TSK3000 = 131
    EM_RS08 = 132
    EM_SHARC = 133
    EM_ECOG2 = 134
    EM_SCORE7 = 135
    EM_DSP24 = 136
    EM_VIDEOCORE3 = 137
    EM_LATTICEMICO32 = 138
    EM_SE_C17 = 139
    EM_TI_C6000 = 140
    EM_TI_C2000 = 141
    EM_TI_C5500 = 142
    EM_TI_ARP32 = 143
    EM_TI_PRU = 144
    EM_MMDSP_PLUS = 160
    EM_CYPRESS_M8C = 161
    EM_R32C = 162
    EM_TRIMEDIA = 163
    EM_QDSP6 = 164
    EM_HEXAGON = 164
    EM_8051 = 165
    EM_STXP7X = 166
    EM_NDS32 = 167
    EM_ECOG1X = 168
    EM_MAXQ30 = 169
    EM_XIMO16 = 170
    EM_MANIK = 171
    EM_CRAYNV2 = 172
    EM_RX = 173
    EM_METAG = 174
    EM_MCST_ELBRUS = 175
    EM_ECOG16 = 176
    EM_CR16 = 177
    EM_ETPU = 178
    EM_SLE9X = 179
    EM_L10M = 180
    EM_K10M = 181
    EM_AARCH64 = 183
    EM_AVR32 = 185
    EM_STM8 = 186
    EM_TILE64 = 187
    EM_TILEPRO = 188
    EM_MICROBLAZE = 189
    EM_CUDA = 190
    EM_TILEGX = 191
    EM_CLOUDSHIELD = 192
    EM_COREA_1ST = 193
    EM_COREA_2ND = 194
    EM_ARCV2 = 195
    EM_ARC_COMPACT2 = 195
    EM_OPEN8 = 196
    EM_RL78 = 197
    EM_VIDEOCORE5 = 198
    EM_78KOR = 199
    EM_56800EX = 200
    EM_BA1 = 201
    EM_BA2 = 202
    EM_XCORE = 203
    EM_MCHP_PIC = 204
    EM_INTELGT = 205
    EM_KM32 = 210
    EM_KMX32 = 211
    EM_EMX16 = 212
    EM_KMX16 = 212
    EM_EMX8 = 213
    EM_KMX8 = 213
    EM_KVARC = 214
    EM_CDP = 215
    EM_COGE = 216
    EM_COOL = 217
    EM_NORC = 218
    EM_CSR_KALIMBA = 219
    EM_Z80 = 220
    EM_VISIUM = 221
    EM_FT32 = 222
    EM_MOXIE = 223
    EM_AMDGPU = 224
    EM_RISCV = 243
    EM_LANAI = 244
    EM_BPF = 247
    EM_VE = 251
    EM_CSKY = 252
    EM_LOONGARCH = 258
    EM_ALPHA = 0x9026  # unofficial value used by Linux/Alpha (glibc, binutils)


# ---------------------------------------------------------------------------
# Program headers
# ---------------------------------------------------------------------------


class PT(IntEnum):
    """``p_type``: segment type.

    0x70000000..0x7fffffff is processor specific; see :func:`name_of`.
    """

    PT_NULL = 0
    PT_LOAD = 1
    PT_DYNAMIC = 2
    PT_INTERP = 3
    PT_NOTE = 4
    PT_SHLIB = 5
    PT_PHDR = 6
    PT_TLS = 7
    PT_LOOS = 0x60000000
    PT_GNU_EH_FRAME = 0x6474E550
    PT_GNU_STACK = 0x6474E551
    PT_GNU_RELRO = 0x6474E552
    PT_GNU_PROPERTY = 0x6474E553
    PT_GNU_SFRAME = 0x6474E554
    PT_SUNWBSS = 0x6FFFFFFA
    PT_LOSUNW = 0x6FFFFFFA
    PT_SUNWSTACK = 0x6FFFFFFB
    PT_HIOS = 0x6FFFFFFF
    PT_HISUNW = 0x6FFFFFFF
    PT_LOPROC = 0x70000000
    PT_ARM_ARCHEXT = 0x70000000
    PT_AARCH64_ARCHEXT = 0x70000000
    PT_MIPS_REGINFO = 0x70000000
    PT_ARM_EXIDX = 0x70000001
    PT_AARCH64_UNWIND = 0x70000001
    PT_MIPS_RTPROC = 0x70000001
    PT_AARCH64_MEMTAG_MTE = 0x70000002
    PT_MIPS_OPTIONS = 0x70000002
    PT_RISCV_ATTRIBUTES = 0x70000003
    PT_MIPS_ABIFLAGS = 0x70000003
    PT_HIPROC = 0x7FFFFFFF


class PF(IntFlag):
    """``p_flags``: segment permissions."""

    PF_X = 0x1
    PF_W = 0x2
    PF_R = 0x4
    PF_MASKOS = 0x0FF00000
    PF_MASKPROC = 0xF0000000


# ---------------------------------------------------------------------------
# Section headers
# ---------------------------------------------------------------------------


class SHT(IntEnum):
    """``sh_type``: section type.

    0x70000000..0x7fffffff is processor specific; see :func:`name_of`.
    """

    SHT_NULL = 0
    SHT_PROGBITS = 1
    SHT_SYMTAB = 2
    SHT_STRTAB = 3
    SHT_RELA = 4
    SHT_HASH = 5
    SHT_DYNAMIC = 6
    SHT_NOTE = 7
    SHT_NOBITS = 8
    SHT_REL = 9
    SHT_SHLIB = 10
    SHT_DYNSYM = 11
    SHT_INIT_ARRAY = 14
    SHT_FINI_ARRAY = 15
    SHT_PREINIT_ARRAY = 16
    SHT_GROUP = 17
    SHT_SYMTAB_SHNDX = 18
    SHT_RELR = 19
    SHT_LOOS = 0x60000000
    SHT_ANDROID_REL = 0x60000001
    SHT_ANDROID_RELA = 0x60000002
    SHT_LLVM_ODRTAB = 0x6FFF4C00
    SHT_LLVM_LINKER_OPTIONS = 0x6FFF4C01
    SHT_LLVM_ADDRSIG = 0x6FFF4C03
    SHT_LLVM_DEPENDENT_LIBRARIES = 0x6FFF4C04
    SHT_LLVM_SYMPART = 0x6FFF4C05
    SHT_LLVM_PART_EHDR = 0x6FFF4C06
    SHT_LLVM_PART_PHDR = 0x6FFF4C07
    SHT_LLVM_BB_ADDR_MAP_V0 = 0x6FFF4C08
    SHT_LLVM_CALL_GRAPH_PROFILE = 0x6FFF4C09
    SHT_LLVM_BB_ADDR_MAP = 0x6FFF4C0A
    SHT_LLVM_OFFLOADING = 0x6FFF4C0B
    SHT_LLVM_LTO = 0x6FFF4C0C
    SHT_ANDROID_RELR = 0x6FFFFF00
    SHT_GNU_SFRAME = 0x6FFFFFF4
    SHT_GNU_ATTRIBUTES = 0x6FFFFFF5
    SHT_GNU_HASH = 0x6FFFFFF6
    SHT_GNU_LIBLIST = 0x6FFFFFF7
    SHT_CHECKSUM = 0x6FFFFFF8
    SHT_SUNW_move = 0x6FFFFFFA
    SHT_LOSUNW = 0x6FFFFFFA
    SHT_SUNW_COMDAT = 0x6FFFFFFB
    SHT_SUNW_syminfo = 0x6FFFFFFC
    SHT_GNU_verdef = 0x6FFFFFFD
    SHT_GNU_verneed = 0x6FFFFFFE
    SHT_GNU_versym = 0x6FFFFFFF
    SHT_HISUNW = 0x6FFFFFFF
    SHT_HIOS = 0x6FFFFFFF
    SHT_LOPROC = 0x70000000
    SHT_X86_64_UNWIND = 0x70000001
    SHT_ARM_EXIDX = 0x70000001
    SHT_ARM_PREEMPTMAP = 0x70000002
    SHT_ARM_ATTRIBUTES = 0x70000003
    SHT_RISCV_ATTRIBUTES = 0x70000003
    SHT_AARCH64_ATTRIBUTES = 0x70000003
    SHT_ARM_DEBUGOVERLAY = 0x70000004
    SHT_ARM_OVERLAYSECTION = 0x70000005
    SHT_HIPROC = 0x7FFFFFFF
    SHT_LOUSER = 0x80000000
    SHT_HIUSER = 0xFFFFFFFF


class SHF(IntFlag):
    """``sh_flags``: section attribute bits."""

    SHF_WRITE = 0x1
    SHF_ALLOC = 0x2
    SHF_EXECINSTR = 0x4
    SHF_MERGE = 0x10
    SHF_STRINGS = 0x20
    SHF_INFO_LINK = 0x40
    SHF_LINK_ORDER = 0x80
    SHF_OS_NONCONFORMING = 0x100
    SHF_GROUP = 0x200
    SHF_TLS = 0x400
    SHF_COMPRESSED = 0x800
    SHF_GNU_RETAIN = 0x00200000
    SHF_GNU_MBIND = 0x01000000
    SHF_MASKOS = 0x0FF00000
    SHF_X86_64_LARGE = 0x10000000
    SHF_ARM_PURECODE = 0x20000000
    SHF_AARCH64_PURECODE = 0x20000000
    SHF_ORDERED = 0x40000000
    SHF_EXCLUDE = 0x80000000
    SHF_MASKPROC = 0xF0000000


class SHN(IntEnum):
    """Special section indices (``st_shndx``, ``e_shstrndx``...)."""

    SHN_UNDEF = 0
    SHN_LORESERVE = 0xFF00
    SHN_LOPROC = 0xFF00
    SHN_X86_64_LCOMMON = 0xFF02
    SHN_HIPROC = 0xFF1F
    SHN_LOOS = 0xFF20
    SHN_HIOS = 0xFF3F
    SHN_ABS = 0xFFF1
    SHN_COMMON = 0xFFF2
    SHN_XINDEX = 0xFFFF
    SHN_HIRESERVE = 0xFFFF


class ELFCOMPRESS(IntEnum):
    """``ch_type`` of the Chdr that starts an ``SHF_COMPRESSED`` section."""

    ELFCOMPRESS_ZLIB = 1
    ELFCOMPRESS_ZSTD = 2
    ELFCOMPRESS_LOOS = 0x60000000
    ELFCOMPRESS_HIOS = 0x6FFFFFFF
    ELFCOMPRESS_LOPROC = 0x70000000
    ELFCOMPRESS_HIPROC = 0x7FFFFFFF


class GRP(IntFlag):
    """First word of an ``SHT_GROUP`` section."""

    GRP_COMDAT = 0x1
    GRP_MASKOS = 0x0FF00000
    GRP_MASKPROC = 0xF0000000


# ---------------------------------------------------------------------------
# Symbols
# ---------------------------------------------------------------------------

#: Symbol table index 0: the undefined symbol.
STN_UNDEF: Final[int] = 0


class STB(IntEnum):
    """``ELF_ST_BIND(st_info)``: symbol binding."""

    STB_LOCAL = 0
    STB_GLOBAL = 1
    STB_WEAK = 2
    STB_GNU_UNIQUE = 10
    STB_LOOS = 10
    STB_HIOS = 12
    STB_LOPROC = 13
    STB_HIPROC = 15


class STT(IntEnum):
    """``ELF_ST_TYPE(st_info)``: symbol type."""

    STT_NOTYPE = 0
    STT_OBJECT = 1
    STT_FUNC = 2
    STT_SECTION = 3
    STT_FILE = 4
    STT_COMMON = 5
    STT_TLS = 6
    STT_GNU_IFUNC = 10
    STT_LOOS = 10
    STT_HIOS = 12
    STT_LOPROC = 13
    STT_ARM_TFUNC = 13
    STT_SPARC_REGISTER = 13
    STT_HIPROC = 15
    STT_ARM_16BIT = 15


class STV(IntEnum):
    """``ELF_ST_VISIBILITY(st_other)``: symbol visibility."""

    STV_DEFAULT = 0
    STV_INTERNAL = 1
    STV_HIDDEN = 2
    STV_PROTECTED = 3


# ---------------------------------------------------------------------------
# Dynamic section
# ---------------------------------------------------------------------------


class DT(IntEnum):
    """``d_tag``: dynamic array tags (gABI, GNU, Sun, Android, psABI).

    Range markers that coincide with a real tag (DT_ENCODING, DT_VALRNGHI,
    DT_ADDRRNGHI, DT_HIOS-like values, DT_HIPROC) are aliases of the real tag.
    0x70000000..0x7fffffff is processor specific; see :func:`name_of`.
    """

    DT_NULL = 0
    DT_NEEDED = 1
    DT_PLTRELSZ = 2
    DT_PLTGOT = 3
    DT_HASH = 4
    DT_STRTAB = 5
    DT_SYMTAB = 6
    DT_RELA = 7
    DT_RELASZ = 8
    DT_RELAENT = 9
    DT_STRSZ = 10
    DT_SYMENT = 11
    DT_INIT = 12
    DT_FINI = 13
    DT_SONAME = 14
    DT_RPATH = 15
    DT_SYMBOLIC = 16
    DT_REL = 17
    DT_RELSZ = 18
    DT_RELENT = 19
    DT_PLTREL = 20
    DT_DEBUG = 21
    DT_TEXTREL = 22
    DT_JMPREL = 23
    DT_BIND_NOW = 24
    DT_INIT_ARRAY = 25
    DT_FINI_ARRAY = 26
    DT_INIT_ARRAYSZ = 27
    DT_FINI_ARRAYSZ = 28
    DT_RUNPATH = 29
    DT_FLAGS = 30
    DT_PREINIT_ARRAY = 32
    DT_ENCODING = 32
    DT_PREINIT_ARRAYSZ = 33
    DT_SYMTAB_SHNDX = 34
    DT_RELRSZ = 35
    DT_RELR = 36
    DT_RELRENT = 37
    # --- OS specific (0x6000000d..0x6ffff000 per gABI) ---
    DT_LOOS = 0x6000000D
    DT_ANDROID_REL = 0x6000000F
    DT_ANDROID_RELSZ = 0x60000010
    DT_ANDROID_RELA = 0x60000011
    DT_ANDROID_RELASZ = 0x60000012
    DT_ANDROID_RELR = 0x6FFFE000
    DT_ANDROID_RELRSZ = 0x6FFFE001
    DT_ANDROID_RELRENT = 0x6FFFE003
    DT_HIOS = 0x6FFFF000
    # --- "value" tags (d_val) ---
    DT_VALRNGLO = 0x6FFFFD00
    DT_GNU_FLAGS_1 = 0x6FFFFDF4
    DT_GNU_PRELINKED = 0x6FFFFDF5
    DT_GNU_CONFLICTSZ = 0x6FFFFDF6
    DT_GNU_LIBLISTSZ = 0x6FFFFDF7
    DT_CHECKSUM = 0x6FFFFDF8
    DT_PLTPADSZ = 0x6FFFFDF9
    DT_MOVEENT = 0x6FFFFDFA
    DT_MOVESZ = 0x6FFFFDFB
    DT_FEATURE_1 = 0x6FFFFDFC
    DT_POSFLAG_1 = 0x6FFFFDFD
    DT_SYMINSZ = 0x6FFFFDFE
    DT_SYMINENT = 0x6FFFFDFF
    DT_VALRNGHI = 0x6FFFFDFF
    # --- "address" tags (d_ptr) ---
    DT_ADDRRNGLO = 0x6FFFFE00
    DT_GNU_HASH = 0x6FFFFEF5
    DT_TLSDESC_PLT = 0x6FFFFEF6
    DT_TLSDESC_GOT = 0x6FFFFEF7
    DT_GNU_CONFLICT = 0x6FFFFEF8
    DT_GNU_LIBLIST = 0x6FFFFEF9
    DT_CONFIG = 0x6FFFFEFA
    DT_DEPAUDIT = 0x6FFFFEFB
    DT_AUDIT = 0x6FFFFEFC
    DT_PLTPAD = 0x6FFFFEFD
    DT_MOVETAB = 0x6FFFFEFE
    DT_SYMINFO = 0x6FFFFEFF
    DT_ADDRRNGHI = 0x6FFFFEFF
    # --- GNU versioning and friends ---
    DT_VERSYM = 0x6FFFFFF0
    DT_RELACOUNT = 0x6FFFFFF9
    DT_RELCOUNT = 0x6FFFFFFA
    DT_FLAGS_1 = 0x6FFFFFFB
    DT_VERDEF = 0x6FFFFFFC
    DT_VERDEFNUM = 0x6FFFFFFD
    DT_VERNEED = 0x6FFFFFFE
    DT_VERNEEDNUM = 0x6FFFFFFF
    # --- processor specific ---
    DT_LOPROC = 0x70000000
    DT_X86_64_PLT = 0x70000000
    DT_X86_64_PLTSZ = 0x70000001
    DT_AARCH64_BTI_PLT = 0x70000001
    DT_RISCV_VARIANT_CC = 0x70000001
    DT_X86_64_PLTENT = 0x70000003
    DT_AARCH64_PAC_PLT = 0x70000003
    DT_AARCH64_VARIANT_PCS = 0x70000005
    DT_AARCH64_MEMTAG_MODE = 0x70000009
    DT_AARCH64_MEMTAG_HEAP = 0x7000000B
    DT_AARCH64_MEMTAG_STACK = 0x7000000C
    DT_AARCH64_MEMTAG_GLOBALS = 0x7000000D
    DT_AARCH64_MEMTAG_GLOBALSSZ = 0x7000000F
    # --- Sun extensions at the top of the processor range ---
    DT_AUXILIARY = 0x7FFFFFFD
    DT_USED = 0x7FFFFFFE
    DT_FILTER = 0x7FFFFFFF
    DT_HIPROC = 0x7FFFFFFF


class DF(IntFlag):
    """``DT_FLAGS`` value bits."""

    DF_ORIGIN = 0x1
    DF_SYMBOLIC = 0x2
    DF_TEXTREL = 0x4
    DF_BIND_NOW = 0x8
    DF_STATIC_TLS = 0x10


class DF_1(IntFlag):
    """``DT_FLAGS_1`` value bits."""

    DF_1_NOW = 0x00000001
    DF_1_GLOBAL = 0x00000002
    DF_1_GROUP = 0x00000004
    DF_1_NODELETE = 0x00000008
    DF_1_LOADFLTR = 0x00000010
    DF_1_INITFIRST = 0x00000020
    DF_1_NOOPEN = 0x00000040
    DF_1_ORIGIN = 0x00000080
    DF_1_DIRECT = 0x00000100
    DF_1_TRANS = 0x00000200
    DF_1_INTERPOSE = 0x00000400
    DF_1_NODEFLIB = 0x00000800
    DF_1_NODUMP = 0x00001000
    DF_1_CONFALT = 0x00002000
    DF_1_ENDFILTEE = 0x00004000
    DF_1_DISPRELDNE = 0x00008000
    DF_1_DISPRELPND = 0x00010000
    DF_1_NODIRECT = 0x00020000
    DF_1_IGNMULDEF = 0x00040000
    DF_1_NOKSYMS = 0x00080000
    DF_1_NOHDR = 0x00100000
    DF_1_EDITED = 0x00200000
    DF_1_NORELOC = 0x00400000
    DF_1_SYMINTPOSE = 0x00800000
    DF_1_GLOBAUDIT = 0x01000000
    DF_1_SINGLETON = 0x02000000
    DF_1_STUB = 0x04000000
    DF_1_PIE = 0x08000000
    DF_1_KMOD = 0x10000000
    DF_1_WEAKFILTER = 0x20000000
    DF_1_NOCOMMON = 0x40000000


class DF_GNU_1(IntFlag):
    """``DT_GNU_FLAGS_1`` value bits."""

    DF_GNU_1_UNIQUE = 0x1


# ---------------------------------------------------------------------------
# Notes
# ---------------------------------------------------------------------------


class NT(IntEnum):
    """``n_type`` of notes.

    Note types are only meaningful together with the note's owner name, so the
    same number has several spellings.  The GNU ("GNU" owner) names are the
    canonical ones here because those are what a loader inspects; the generic
    and core-file names are kept as aliases (``NT.NT_PRSTATUS`` works but its
    ``.name`` is ``NT_GNU_ABI_TAG``).  Use :class:`NT_CORE` to name notes of an
    ``ET_CORE`` file.
    """

    NT_GNU_ABI_TAG = 1
    NT_GNU_HWCAP = 2
    NT_GNU_BUILD_ID = 3
    NT_GNU_GOLD_VERSION = 4
    NT_GNU_PROPERTY_TYPE_0 = 5
    NT_GNU_BUILD_ATTRIBUTE_OPEN = 0x100
    NT_GNU_BUILD_ATTRIBUTE_FUNC = 0x101
    NT_FDO_PACKAGING_METADATA = 0xCAFE1A7E
    # Generic (owner-independent) spellings.
    NT_VERSION = 1
    NT_ARCH = 2
    # Core-file spellings (owner "CORE"/"LINUX"); see NT_CORE.
    NT_PRSTATUS = 1
    NT_PRFPREG = 2
    NT_FPREGSET = 2
    NT_PRPSINFO = 3
    NT_TASKSTRUCT = 4
    NT_PLATFORM = 5
    NT_AUXV = 6
    NT_GWINDOWS = 7
    NT_ASRS = 8
    NT_PSTATUS = 10
    NT_PSINFO = 13
    NT_PRCRED = 14
    NT_UTSNAME = 15
    NT_LWPSTATUS = 16
    NT_LWPSINFO = 17
    NT_PRFPXREG = 20
    NT_386_TLS = 0x200
    NT_386_IOPERM = 0x201
    NT_X86_XSTATE = 0x202
    NT_ARM_VFP = 0x400
    NT_ARM_TLS = 0x401
    NT_ARM_HW_BREAK = 0x402
    NT_ARM_HW_WATCH = 0x403
    NT_ARM_SYSTEM_CALL = 0x404
    NT_ARM_SVE = 0x405
    NT_ARM_PAC_MASK = 0x406
    NT_ARM_PACA_KEYS = 0x407
    NT_ARM_PACG_KEYS = 0x408
    NT_ARM_TAGGED_ADDR_CTRL = 0x409
    NT_ARM_PAC_ENABLED_KEYS = 0x40A
    NT_FILE = 0x46494C45
    NT_PRXFPREG = 0x46E62B7F
    NT_SIGINFO = 0x53494749


class NT_CORE(IntEnum):
    """``n_type`` of core-file notes (owner ``"CORE"`` / ``"LINUX"``)."""

    NT_PRSTATUS = 1
    NT_PRFPREG = 2
    NT_FPREGSET = 2
    NT_PRPSINFO = 3
    NT_TASKSTRUCT = 4
    NT_PRXREG = 4
    NT_PLATFORM = 5
    NT_AUXV = 6
    NT_GWINDOWS = 7
    NT_ASRS = 8
    NT_PSTATUS = 10
    NT_PSINFO = 13
    NT_PRCRED = 14
    NT_UTSNAME = 15
    NT_LWPSTATUS = 16
    NT_LWPSINFO = 17
    NT_PRFPXREG = 20
    NT_386_TLS = 0x200
    NT_386_IOPERM = 0x201
    NT_X86_XSTATE = 0x202
    NT_ARM_VFP = 0x400
    NT_ARM_TLS = 0x401
    NT_ARM_HW_BREAK = 0x402
    NT_ARM_HW_WATCH = 0x403
    NT_ARM_SYSTEM_CALL = 0x404
    NT_ARM_SVE = 0x405
    NT_ARM_PAC_MASK = 0x406
    NT_ARM_PACA_KEYS = 0x407
    NT_ARM_PACG_KEYS = 0x408
    NT_ARM_TAGGED_ADDR_CTRL = 0x409
    NT_ARM_PAC_ENABLED_KEYS = 0x40A
    NT_FILE = 0x46494C45
    NT_PRXFPREG = 0x46E62B7F
    NT_SIGINFO = 0x53494749


# ---------------------------------------------------------------------------
# Symbol versioning (GNU)
# ---------------------------------------------------------------------------

#: ``vd_version`` / ``vn_version`` of the only defined structure layout.
VER_DEF_CURRENT: Final[int] = 1
VER_NEED_CURRENT: Final[int] = 1

#: ``.gnu.version`` entry bit marking a non-default (``sym@VER``) version.
VERSYM_HIDDEN: Final[int] = 0x8000
#: ``.gnu.version`` entry mask selecting the version index.
VERSYM_VERSION: Final[int] = 0x7FFF


class VER_FLG(IntFlag):
    """``vd_flags`` / ``vna_flags``."""

    VER_FLG_BASE = 0x1
    VER_FLG_WEAK = 0x2
    VER_FLG_INFO = 0x4


class VER_NDX(IntEnum):
    """Reserved ``.gnu.version`` indices."""

    VER_NDX_LOCAL = 0
    VER_NDX_GLOBAL = 1
    VER_NDX_LORESERVE = 0xFF00
    VER_NDX_ELIMINATE = 0xFF01


# ---------------------------------------------------------------------------
# Naming helper
# ---------------------------------------------------------------------------

#: Architecture tokens as they appear inside processor-specific constant
#: names (``SHT_<TOKEN>_...``), longest first so that PPC64 wins over PPC.
_ARCH_TOKENS: Final[tuple[str, ...]] = (
    "LOONGARCH",
    "AARCH64",
    "PARISC",
    "X86_64",
    "SPARC",
    "IA_64",
    "PPC64",
    "RISCV",
    "ALPHA",
    "CSKY",
    "MIPS",
    "ARM",
    "PPC",
    "X86",
    "386",
)

#: e_machine -> architecture tokens whose processor-specific names apply.
_MACHINE_TOKENS: Final[dict[int, tuple[str, ...]]] = {
    EM.EM_386: ("386", "X86"),
    EM.EM_IAMCU: ("386", "X86"),
    EM.EM_X86_64: ("X86_64", "X86"),
    EM.EM_ARM: ("ARM",),
    EM.EM_AARCH64: ("AARCH64",),
    EM.EM_RISCV: ("RISCV",),
    EM.EM_LOONGARCH: ("LOONGARCH",),
    EM.EM_MIPS: ("MIPS",),
    EM.EM_MIPS_RS3_LE: ("MIPS",),
    EM.EM_PPC: ("PPC",),
    EM.EM_PPC64: ("PPC64",),
    EM.EM_SPARC: ("SPARC",),
    EM.EM_SPARC32PLUS: ("SPARC",),
    EM.EM_SPARCV9: ("SPARC",),
    EM.EM_IA_64: ("IA_64",),
    EM.EM_PARISC: ("PARISC",),
    EM.EM_CSKY: ("CSKY",),
    EM.EM_ALPHA: ("ALPHA",),
    EM.EM_FAKE_ALPHA: ("ALPHA",),
}

_EnumClass: TypeAlias = "type[IntEnum | IntFlag]"


def _machine_dependent(enum_cls: _EnumClass) -> bool:
    """Whether processor-specific aliases of *enum_cls* depend on e_machine."""
    return enum_cls in (PT, PF, SHT, SHF, SHN, STB, STT, DT)


@functools.cache
def _names_by_value(enum_cls: _EnumClass) -> dict[int, tuple[str, ...]]:
    """Map every value of *enum_cls* to all its names, canonical name first."""
    table: dict[int, list[str]] = {}
    for name, member in enum_cls.__members__.items():
        table.setdefault(int(member.value), []).append(name)
    return {value: tuple(names) for value, names in table.items()}


def _arch_token(prefix: str, name: str) -> str | None:
    """The architecture token embedded in *name* (``SHT_ARM_EXIDX`` -> ``ARM``)."""
    rest = name[len(prefix) + 1 :] if name.startswith(prefix + "_") else name
    for token in _ARCH_TOKENS:
        if rest.startswith(token + "_"):
            return token
    return None


def _exact_name(enum_cls: _EnumClass, value: int, machine: int | None) -> str | None:
    names = _names_by_value(enum_cls).get(value)
    if not names:
        return None
    if machine is None or not _machine_dependent(enum_cls):
        return names[0]
    prefix = enum_cls.__name__
    wanted = _MACHINE_TOKENS.get(machine, ())
    generic: str | None = None
    for name in names:
        token = _arch_token(prefix, name)
        if token is None:
            if generic is None:
                generic = name
        elif token in wanted:
            return name
    return generic


def _unknown(prefix: str, value: int) -> str:
    if value < 0:
        return f"{prefix}_-0x{-value:x}"
    return f"{prefix}_0x{value:x}"


def name_of(enum_cls: _EnumClass, value: int, *, machine: int | None = None) -> str:
    """Return the ABI name of *value* in *enum_cls*; never raises.

    * Known values give the canonical member name, e.g.
      ``name_of(DT, 0x6ffffef5) == "DT_GNU_HASH"``.
    * Unknown values give ``f"{enum_cls.__name__}_0x{value:x}"``, e.g.
      ``name_of(DT, 0x6ffffff1) == "DT_0x6ffffff1"``.
    * For :class:`~enum.IntFlag` classes a value that is not itself a member is
      decomposed into ``"A|B"`` with any unnamed bits appended as
      ``f"{prefix}_0x{bits:x}"``; zero gives ``"0"``.
    * *machine* (an ``e_machine`` number) selects the processor-specific
      spelling for PT/PF/SHT/SHF/SHN/STB/STT/DT values; a processor-specific
      name belonging to a different architecture is never returned then.
    """
    prefix = getattr(enum_cls, "__name__", "?")
    try:
        number = int(value)
    except Exception:  # noqa: BLE001 - the contract is "never raise"
        return f"{prefix}_{value!r}"
    try:
        exact = _exact_name(enum_cls, number, machine)
        if exact is not None:
            return exact
        if not issubclass(enum_cls, enum.Flag) or number < 0:
            return _unknown(prefix, number)
        if number == 0:
            return "0"
        parts: list[str] = []
        leftover = 0
        bit = 1
        remaining = number
        while remaining:
            if remaining & bit:
                part = _exact_name(enum_cls, bit, machine)
                if part is None:
                    leftover |= bit
                else:
                    parts.append(part)
                remaining &= ~bit
            bit <<= 1
        if leftover:
            parts.append(_unknown(prefix, leftover))
        return "|".join(parts)
    except Exception:  # noqa: BLE001 - the contract is "never raise"
        return _unknown(prefix, number)
