"""Bit-field encoders shared by every ISA's object-relocation recipes.

Relocation layer (style.md item 3: "recipes are data plus shared encoders"). A relocation
recipe names a formula (``S+A``, ``S+A-P``, ``Page(S+A)-Page(P)`` …) and a `Field`: how
the computed value is range-checked (`Check`) and inserted into the bytes at the place.
One encoder serves every relocation with the same field shape: aarch64 ``CALL26`` and
``JUMP26`` share `aarch64_imm26`, every RISC-V I-type low-12 relocation shares
`riscv_i`, and so on, instead of one class per relocation type.

A value that does not fit raises `FieldOverflow` (carrying the value, the width and the
signedness); the relocator turns it into `RelocationOverflowError` with the file,
relocation type and symbol. Nothing is wrapped silently. Encoders work on any mutable
buffer (host memoryview or a bytearray of a foreign image); everything is little-endian.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Check", "Field", "FieldOverflow", "NONE", "ObjectArch", "aarch64_add_lo12", "aarch64_adr",
    "aarch64_imm14", "aarch64_imm19", "aarch64_imm26", "aarch64_movw", "data_add",
    "data_set6", "data_sub", "data_sub6", "either", "riscv_b", "riscv_call", "riscv_cb",
    "Recipe", "riscv_cj", "riscv_i", "riscv_j", "riscv_s", "riscv_u", "signed", "unsigned",
    "word",
]


class FieldOverflow(Exception):
    """A value does not fit its field, or violates its alignment."""

    def __init__(self, value: int, bits: int, signed: bool, align: int = 1) -> None:
        self.value = value
        self.bits = bits
        self.signed = signed
        self.align = align
        super().__init__(f"{value:#x} does not fit {bits} bits"
                         + (f" or is not a multiple of {align}" if align > 1 else ""))


@dataclass(frozen=True, slots=True)
class Check:
    """Range check: ``kind`` is none, signed, unsigned or either (signed or unsigned)."""

    kind: str
    bits: int = 64
    align: int = 1

    def __call__(self, value: int) -> None:
        if self.align > 1 and value % self.align:
            raise FieldOverflow(value, self.bits, self.kind != "unsigned", self.align)
        if self.kind == "none":
            return
        b = self.bits
        if self.kind == "signed":
            ok = -(1 << (b - 1)) <= value < (1 << (b - 1))
        elif self.kind == "unsigned":
            ok = 0 <= value < (1 << b)
        else:  # either
            ok = -(1 << (b - 1)) <= value < (1 << b)
        if not ok:
            raise FieldOverflow(value, b, self.kind != "unsigned")


NONE = Check("none")


def signed(bits: int, align: int = 1) -> Check:
    return Check("signed", bits, align)


def unsigned(bits: int, align: int = 1) -> Check:
    return Check("unsigned", bits, align)


def either(bits: int) -> Check:
    return Check("either", bits)


@dataclass(frozen=True, slots=True)
class Field:
    """How a value lands at the place: `size` bytes, `combine(old, value) -> new`.

    `combine` receives the current little-endian contents (so instruction encoders keep
    the opcode and registers, and ADD/SUB relocations accumulate) and must return the
    new contents; `check` runs first on the value.
    """

    name: str
    size: int
    combine: Callable[[int, int], int]
    check: Check = NONE

    def apply(self, buf: bytearray | memoryview, off: int, value: int) -> None:
        self.check(value)
        end = off + self.size
        old = int.from_bytes(buf[off:end], "little")
        new = self.combine(old, value) & ((1 << (8 * self.size)) - 1)
        buf[off:end] = new.to_bytes(self.size, "little")

    def read_addend(self, buf: bytearray | memoryview, off: int) -> int:
        """The implicit addend a REL relocation keeps at the place (data fields only)."""
        if not self.name.startswith("word"):
            raise NotImplementedError(f"implicit addends of {self.name} fields")
        return int.from_bytes(buf[off:off + self.size], "little", signed=True)

    def with_check(self, check: Check) -> Field:
        return Field(self.name, self.size, self.combine, check)


# -- plain data ------------------------------------------------------------------------

def word(width: int, check: Check = NONE) -> Field:
    """A `width`-byte datum replaced by the value."""
    mask = (1 << (8 * width)) - 1
    return Field(f"word{8 * width}", width, lambda _old, v: v & mask, check)


def data_add(width: int) -> Field:
    """RISC-V ADD8..64: the place's datum plus the value (wraps, as the psABI says)."""
    mask = (1 << (8 * width)) - 1
    return Field(f"add{8 * width}", width, lambda old, v: (old + v) & mask)


def data_sub(width: int) -> Field:
    """RISC-V SUB8..64: the place's datum minus the value."""
    mask = (1 << (8 * width)) - 1
    return Field(f"sub{8 * width}", width, lambda old, v: (old - v) & mask)


data_sub6 = Field("sub6", 1, lambda old, v: (old & 0xC0) | ((old - v) & 0x3F))
data_set6 = Field("set6", 1, lambda old, v: (old & 0xC0) | (v & 0x3F))


# -- aarch64 instruction fields ----------------------------------------------------------

def _imm26(old: int, v: int) -> int:
    return (old & ~0x3FFFFFF) | ((v >> 2) & 0x3FFFFFF)


def _imm19(old: int, v: int) -> int:
    return (old & ~(0x7FFFF << 5)) | (((v >> 2) & 0x7FFFF) << 5)


def _imm14(old: int, v: int) -> int:
    return (old & ~(0x3FFF << 5)) | (((v >> 2) & 0x3FFF) << 5)


def aarch64_imm26(check: Check) -> Field:
    """B/BL: imm26 = value >> 2 (CALL26, JUMP26)."""
    return Field("aarch64_imm26", 4, _imm26, check)


def aarch64_imm19(check: Check) -> Field:
    """B.cond / CBZ / LDR literal: imm19 = value >> 2 at bits 5..23."""
    return Field("aarch64_imm19", 4, _imm19, check)


def aarch64_imm14(check: Check) -> Field:
    """TBZ/TBNZ: imm14 = value >> 2 at bits 5..18."""
    return Field("aarch64_imm14", 4, _imm14, check)


def aarch64_adr(shift: int, check: Check) -> Field:
    """ADR/ADRP: the 21-bit immediate (value >> shift) split into immlo:immhi."""

    def combine(old: int, v: int) -> int:
        x = (v >> shift) & 0x1FFFFF
        return (old & ~((3 << 29) | (0x7FFFF << 5))) | ((x & 3) << 29) | ((x >> 2) << 5)

    return Field(f"aarch64_adr{'p' if shift else ''}", 4, combine, check)


def aarch64_add_lo12(shift: int) -> Field:
    """ADD / LDR / STR immediate: bits [11:shift] of the value into imm12 (bits 10..21).

    `shift` is log2 of the access size (0 for ADD and byte accesses, 4 for 128-bit); the
    low `shift` bits must be zero, as the psABI requires for LDSTn_ABS_LO12_NC.
    """

    def combine(old: int, v: int) -> int:
        return (old & ~(0xFFF << 10)) | ((((v & 0xFFF) >> shift) & 0xFFF) << 10)

    return Field(f"aarch64_lo12_{shift}", 4, combine, Check("none", 12, 1 << shift))


def aarch64_movw(group: int, check: Check, signed_op: bool = False) -> Field:
    """MOVZ/MOVK/MOVN: 16 bits of the value (group 0..3) into imm16 (bits 5..20).

    With `signed_op` (MOVW_SABS_*), a negative value turns the instruction into MOVN of
    the inverted value, as aaelf64 specifies.
    """

    def combine(old: int, v: int) -> int:
        if signed_op:
            if v < 0:
                v = ~v
                old &= ~(3 << 29)            # opc = 00: MOVN
            else:
                old = (old & ~(3 << 29)) | (2 << 29)  # opc = 10: MOVZ
        imm = (v >> (16 * group)) & 0xFFFF
        return (old & ~(0xFFFF << 5)) | (imm << 5)

    return Field(f"aarch64_movw_g{group}", 4, combine, check)


# -- RISC-V instruction fields -----------------------------------------------------------

def _hi20(v: int) -> int:
    return ((v + 0x800) >> 12) & 0xFFFFF


def _u(old: int, v: int) -> int:
    return (old & 0xFFF) | (_hi20(v) << 12)


def _i(old: int, v: int) -> int:
    return (old & 0xFFFFF) | ((v & 0xFFF) << 20)


def _s(old: int, v: int) -> int:
    return (old & 0x1FFF07F) | (((v >> 5) & 0x7F) << 25) | ((v & 0x1F) << 7)


def _b(old: int, v: int) -> int:
    return ((old & 0x1FFF07F) | (((v >> 12) & 1) << 31) | (((v >> 5) & 0x3F) << 25)
            | (((v >> 1) & 0xF) << 8) | (((v >> 11) & 1) << 7))


def _j(old: int, v: int) -> int:
    return ((old & 0xFFF) | (((v >> 20) & 1) << 31) | (((v >> 1) & 0x3FF) << 21)
            | (((v >> 11) & 1) << 20) | (((v >> 12) & 0xFF) << 12))


def _cb(old: int, v: int) -> int:
    return ((old & 0xE383) | (((v >> 8) & 1) << 12) | (((v >> 3) & 3) << 10)
            | (((v >> 6) & 3) << 5) | (((v >> 1) & 3) << 3) | (((v >> 5) & 1) << 2))


def _cj(old: int, v: int) -> int:
    return ((old & 0xE003) | (((v >> 11) & 1) << 12) | (((v >> 4) & 1) << 11)
            | (((v >> 8) & 3) << 9) | (((v >> 10) & 1) << 8) | (((v >> 6) & 1) << 7)
            | (((v >> 7) & 1) << 6) | (((v >> 1) & 7) << 3) | (((v >> 5) & 1) << 2))


def _call(old: int, v: int) -> int:
    return _u(old & 0xFFFFFFFF, v) | (_i(old >> 32, v) << 32)


class _Hi20Check(Check):
    """HI20-style check: value + 0x800 must fit a signed 32-bit quantity."""

    def __call__(self, value: int) -> None:
        if not -(1 << 31) <= value + 0x800 < (1 << 31):
            raise FieldOverflow(value, 32, True)


HI20 = _Hi20Check("signed", 32)


def riscv_u(check: Check = HI20) -> Field:
    """LUI/AUIPC: the rounded upper 20 bits ``(value + 0x800) >> 12``."""
    return Field("riscv_u", 4, _u, check)


def riscv_i(check: Check = NONE) -> Field:
    """I-type (ADDI, loads, JALR): the low 12 bits at bits 20..31."""
    return Field("riscv_i", 4, _i, check)


def riscv_s(check: Check = NONE) -> Field:
    """S-type (stores): the low 12 bits split into imm[11:5] and imm[4:0]."""
    return Field("riscv_s", 4, _s, check)


def riscv_b(check: Check) -> Field:
    """B-type conditional branch (±4 KiB, even)."""
    return Field("riscv_b", 4, _b, check)


def riscv_j(check: Check) -> Field:
    """J-type JAL (±1 MiB, even)."""
    return Field("riscv_j", 4, _j, check)


def riscv_cb(check: Check) -> Field:
    """Compressed C.BEQZ/C.BNEZ (±256 B)."""
    return Field("riscv_cb", 2, _cb, check)


def riscv_cj(check: Check) -> Field:
    """Compressed C.J/C.JAL (±2 KiB)."""
    return Field("riscv_cj", 2, _cj, check)


def riscv_call(check: Check = HI20) -> Field:
    """AUIPC + JALR pair (CALL, CALL_PLT): hi20 into the AUIPC, lo12 into the JALR."""
    return Field("riscv_call", 8, _call, check)


# -- recipes -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Recipe:
    """How one object-relocation type is applied: a formula and a field.

    Formulas (S symbol, A addend, P place, G GOT slot of S, GOT GOT base, L call target —
    S or a synthesized stub, Z symbol size, TP/DTP thread-pointer / module offsets):
    ``none``, ``S+A``, ``S+A-P``, ``L+A-P``, ``G+A-P``, ``G``, ``GOT+A-P``, ``S+A-GOT``,
    ``Z+A``, ``Page(S+A)-Page(P)``, ``Page(G)-Page(P)``, ``hi-partner`` (RISC-V
    PCREL_LO12: the value computed for the paired HI20), ``align`` (RISC-V ALIGN),
    ``uleb-set``/``uleb-sub`` (RISC-V SET/SUB_ULEB128), and the TLS formulas
    ``tls-gd``, ``tls-ld``, ``tls-ie``, ``tls-desc`` (GOT pairs/slots, relative to P),
    ``tls-le`` (S+A-TP) and ``tls-dtp`` (S+A in the module's block).

    ``needs`` names what the layout must synthesize: ``got``, ``plt``, ``tls``.
    """

    name: str
    formula: str
    field: Field | None = None
    needs: str = ""
    relax: bool = False  # the instruction may be rewritten to skip the GOT (x86_64)


@dataclass(frozen=True)
class ObjectArch:
    """Everything the object relocator needs about one ISA: recipes plus stub shape.

    Attributes:
        recipes: relocation type -> Recipe (a type not listed is unsupported, by name).
        stub_size: bytes per synthesized PLT stub / branch veneer.
        branch_range: reach of the direct call the stubs back up (bytes, each way).
        make_stub: ``make_stub(stub_addr, slot_addr) -> bytes`` — a stub that jumps to
            the address stored in the GOT slot at `slot_addr`.
        got_symbol: the name that means "the GOT base" (``_GLOBAL_OFFSET_TABLE_``).
    """

    name: str
    e_machine: int
    elf_class: int
    recipes: dict[int, Recipe]
    stub_size: int
    branch_range: int
    make_stub: Callable[[int, int], bytes]
    got_symbol: str = "_GLOBAL_OFFSET_TABLE_"
    pcrel_hi: frozenset[int] = frozenset()  # types whose value a *_LO12 partner reuses

    @property
    def word_size(self) -> int:
        return self.elf_class // 8

    def always_got(self, unit: object) -> bool:
        """True when the unit names the GOT base symbol, so a GOT must exist."""
        return bool(getattr(unit, "wants_got", False))
