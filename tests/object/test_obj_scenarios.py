"""relink-study §4.2 object scenarios and §4.6 object hooks, ported.

`relocations_match`: an object whose .data holds relocations at .data+0x10+8i against a
synthetic ``__host`` module; `addends_apply`; relocation hook for a type without recipe;
sections exposed; exports cleared.
"""

from __future__ import annotations

import ctypes
import struct

import pytest
from objsupport import needs_gcc, obj

import relink
from relink.errors import UnsupportedRelocationError
from relink.memory.buffer import BufferMapper
from relink.object.relocator import ObjectRelocation

pytestmark = [needs_gcc]


def _host() -> tuple[relink.SyntheticModule, int, int]:
    var = ctypes.c_long(5)
    host = relink.SyntheticModule("__host", {
        "external_func": (lambda a: a + 1, ctypes.c_long, ctypes.c_long),
        "external_var": var})
    return host, host.symbol("external_func") or 0, ctypes.addressof(var)


def test_relocations_match() -> None:
    host, func, var = _host()
    mod = relink.load_object(obj("relocs_match.s", []), scope=[host])
    assert mod.state == "initialized"
    base = mod.symbol("local_var")
    assert base is not None
    slot = [base + 0x10 + 8 * i for i in range(7)]

    def q(addr: int) -> int:
        return ctypes.c_uint64.from_address(addr).value

    def i32(addr: int) -> int:
        return ctypes.c_int32.from_address(addr).value

    assert q(slot[0]) == func
    assert q(slot[1] + i32(slot[1])) == var        # GOT slot holding the variable
    assert q(slot[2] + i32(slot[2])) == func       # GOT slot holding the function
    target = slot[3] + i32(slot[3])
    if target != func:                             # out of reach: an endbr64 stub
        assert ctypes.c_uint32.from_address(target).value == 0xFA1E0FF3
        assert ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long)(target)(41) == 42
    assert q(slot[4]) == mod._state.section(".data").address == base
    assert q(slot[5]) == var
    assert q(slot[6]) == var + 0x20                # addends_apply
    mod.close()


def test_relocation_hook_handles_unknown_types() -> None:
    data = bytearray(obj("relocs_match.s", []).read_bytes())
    # turn entry [5] (R_X86_64_64 external_var) into R_X86_64_GOT32 (3): no recipe
    (shoff,) = struct.unpack_from("<Q", data, 40)
    _, shnum = struct.unpack_from("<HH", data, 58)
    for i in range(shnum):
        sh = struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * 64)
        if sh[1] == 4:
            for off in range(sh[4], sh[4] + sh[5], 24):
                r_off, info = struct.unpack_from("<QQ", data, off)
                if r_off == 0x38:
                    struct.pack_into("<Q", data, off + 8, (info & ~0xFFFFFFFF) | 3)
    host, _func, var = _host()
    with pytest.raises(UnsupportedRelocationError, match="R_X86_64_GOT32.*external_var"):
        relink.load_object(bytes(data), scope=[host])
    seen: list[ObjectRelocation] = []

    def hook(ctx: ObjectRelocation) -> bool:
        seen.append(ctx)
        ctx.buffer[ctx.at:ctx.at + 8] = (ctx.s + 0x1234).to_bytes(8, "little")
        return True

    mod = relink.load_object(bytes(data), scope=[host], relocation_hook=hook,
                             mapper=BufferMapper(), host=False)
    assert [(c.r_type_name, c.symbol, c.section, c.offset) for c in seen] == \
        [("R_X86_64_GOT32", "external_var", ".data", 0x38)]
    at = (mod.symbol("local_var") or 0) + 0x38
    assert struct.unpack("<Q", mod._state.region.read(at, 8))[0] == var + 0x1234
    assert mod._state.counts["hook:R_X86_64_GOT32"] == 1


def test_sections_exposed_and_exports_cleared() -> None:
    mod = relink.load_object(obj("calc_b.c", ["-O2", "-fcommon"]))
    st = mod._state
    data = st.section(".data")
    assert data is not None and data.group == "data" and mod.contains(data.address)
    assert st.section(".comment") is None and st.section(".symtab") is None
    assert bytes((ctypes.c_char * 8).from_address(mod.symbol("b_table") or 0)) == \
        bytes([10, 0, 0, 0, 20, 0, 0, 0])
    st.exports.clear()
    with pytest.raises(relink.SymbolNotFoundError):
        mod.variable("b_value", ctypes.c_int)
    mod.close()
