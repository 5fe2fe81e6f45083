"""riscv64 object-relocation recipes (ET_REL): data for the shared relocator.

Arch layer; pure data over `relink.relocation.fields`. Formulas from the RISC-V ELF
psABI, "Relocations": data (32, 64, 32_PCREL, SET6/8/16/32, ADD8..64, SUB6/8..64 and the
SET/SUB_ULEB128 pair), absolute HI20 / LO12_I / LO12_S, PC-relative PCREL_HI20 with its
PCREL_LO12_I/S partner (the LO12 relocation names the *label of the AUIPC*, and reuses
the value computed there), GOT_HI20 and GOT32_PCREL (a synthesized GOT slot), branches
(BRANCH ±4 KiB, JAL ±1 MiB, RVC_BRANCH, RVC_JUMP) and calls (CALL, CALL_PLT: AUIPC+JALR,
through a stub when the target is beyond ±2 GiB). RELAX only permits linker relaxation,
which relink does not do (valid: relaxation is optional), so it is a no-op; ALIGN is
checked (see `relink.object.relocator`). TLS relocations have no recipe (no native
riscv64 TLS runtime on this host) and fail by name.

The stub is ``auipc t3, %hi(slot); ld t3, %lo(slot)(t3); jr t3; nop``.
"""

from __future__ import annotations

from relink.arch.rtypes import R_RISCV as RT
from relink.relocation.fields import (
    NONE,
    ObjectArch,
    Recipe,
    data_add,
    data_set6,
    data_sub,
    data_sub6,
    either,
    riscv_b,
    riscv_call,
    riscv_cb,
    riscv_cj,
    riscv_i,
    riscv_j,
    riscv_s,
    riscv_u,
    signed,
    word,
)

__all__ = ["OBJECT_ARCH", "RECIPES"]

RECIPES: dict[int, Recipe] = {RT[f"R_RISCV_{r.name}"].value: r for r in (
    Recipe("NONE", "none"),
    Recipe("RELAX", "none"),
    Recipe("ALIGN", "align"),
    Recipe("32", "S+A", word(4, either(32))),
    Recipe("64", "S+A", word(8)),
    Recipe("32_PCREL", "S+A-P", word(4, signed(32))),
    Recipe("PLT32", "L+A-P", word(4, signed(32)), "plt"),
    Recipe("BRANCH", "S+A-P", riscv_b(signed(13, 2))),
    Recipe("JAL", "S+A-P", riscv_j(signed(21, 2))),
    Recipe("CALL", "L+A-P", riscv_call(), "plt"),
    Recipe("CALL_PLT", "L+A-P", riscv_call(), "plt"),
    Recipe("GOT_HI20", "G+A-P", riscv_u(), "got"),
    Recipe("GOT32_PCREL", "G+A-P", word(4, signed(32)), "got"),
    Recipe("PCREL_HI20", "S+A-P", riscv_u()),
    Recipe("PCREL_LO12_I", "hi-partner", riscv_i()),
    Recipe("PCREL_LO12_S", "hi-partner", riscv_s()),
    Recipe("HI20", "S+A", riscv_u()),
    Recipe("LO12_I", "S+A", riscv_i()),
    Recipe("LO12_S", "S+A", riscv_s()),
    Recipe("ADD8", "S+A", data_add(1)),
    Recipe("ADD16", "S+A", data_add(2)),
    Recipe("ADD32", "S+A", data_add(4)),
    Recipe("ADD64", "S+A", data_add(8)),
    Recipe("SUB8", "S+A", data_sub(1)),
    Recipe("SUB16", "S+A", data_sub(2)),
    Recipe("SUB32", "S+A", data_sub(4)),
    Recipe("SUB64", "S+A", data_sub(8)),
    Recipe("SUB6", "S+A", data_sub6),
    Recipe("SET6", "S+A", data_set6),
    Recipe("SET8", "S+A", word(1, NONE)),
    Recipe("SET16", "S+A", word(2, NONE)),
    Recipe("SET32", "S+A", word(4, NONE)),
    Recipe("RVC_BRANCH", "S+A-P", riscv_cb(signed(9, 2))),
    Recipe("RVC_JUMP", "S+A-P", riscv_cj(signed(12, 2))),
    Recipe("SET_ULEB128", "uleb-set"),
    Recipe("SUB_ULEB128", "uleb-sub"),
)}


def _stub(stub: int, slot: int) -> bytes:
    buf = bytearray(b"\x17\x0e\x00\x00"      # auipc t3, 0
                    b"\x03\x3e\x0e\x00"      # ld    t3, 0(t3)
                    b"\x67\x00\x0e\x00"      # jalr  x0, 0(t3)
                    b"\x13\x00\x00\x00")     # nop
    riscv_u().apply(buf, 0, slot - stub)
    riscv_i().apply(buf, 4, slot - stub)
    return bytes(buf)


OBJECT_ARCH = ObjectArch(
    name="riscv64", e_machine=243, elf_class=64, recipes=RECIPES, stub_size=16,
    branch_range=1 << 31, make_stub=_stub,
    pcrel_hi=frozenset({RT.R_RISCV_PCREL_HI20.value, RT.R_RISCV_GOT_HI20.value}))
