"""Helpers shared by the plan tests (fixture paths, the ``value`` array of provider.c)."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from relink.plan import ModulePlan

HERE = Path(__file__).parent / "fixtures"


def value_offset(mod: ModulePlan) -> int:
    """Offset of the ``value`` array inside .data (C puts __dso_handle first)."""
    syms = mod.elf.symbols
    assert syms is not None
    i = syms.find("value")
    assert i is not None
    return syms.values[i] - mod.section(".data").addr


def read_value(module: Any) -> bytes:
    return bytes(module.variable("value", ctypes.c_ubyte * 4))


def with_value(mod: ModulePlan, new: bytes, size: int | None = None) -> bytes:
    """.data of `mod` with ``value`` replaced by `new` (resized to `size` if given)."""
    data = bytearray(mod.section(".data").data())
    if size is not None:
        data = data[:size] + bytearray(max(0, size - len(data)))
    off = value_offset(mod)
    data[off:off + len(new)] = new
    return bytes(data)
