"""Foreign-ISA fixture helpers: the leaf -> middle -> base chain cross-compiled with zig.

Built at test time with ``python -m ziglang cc -target <triple>`` through the cached
fixture compiler (tests/support/build.py), ``-nostdlib``: the chain needs no libc, so
nothing from the host (or a target sysroot) is involved and every symbol the images
import is resolved by relink inside the chain or by the emulator's runtime traps
(``__tls_get_addr``, ``__aeabi_read_tp``, TLSDESC).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from relink.arch import spec_named
from support.build import FixtureBuildError, build_shared

FIXTURES = Path(__file__).parent / "fixtures"
EMULATED = ("x86", "x86_64", "aarch64", "arm", "riscv32", "riscv64")
ALL_ISAS = (*EMULATED, "loongarch64")
HAVE_ZIG = importlib.util.find_spec("ziglang") is not None
HAVE_UNICORN = importlib.util.find_spec("unicorn") is not None


def source(name: str) -> str:
    return (FIXTURES / name).read_text()


def cflags(arch: str) -> list[str]:
    flags = ["-O1", "-fno-builtin", "-nostdlib"]
    if arch == "loongarch64":
        flags.append("-mcpu=generic_la64")  # QEMU 7.2 lacks the default CPU's extensions
    return flags


def build_chain(arch: str) -> dict[str, Path]:
    """Build libbase.so, libmiddle.so, libleaf.so for `arch`; returns name -> path."""
    if not HAVE_ZIG:
        pytest.skip("the ziglang package is not installed (pip install ziglang)")
    spec = spec_named(arch)
    assert spec is not None
    target = spec.zig_target
    group = "foreign-chain"
    common = {"cc": "zig", "target": target, "group": group, "cflags": cflags(arch)}
    try:
        base = build_shared("base", {"base.c": source("base.c"), "base.map": source("base.map")},
                            ldflags=["-nostdlib", "-Wl,--version-script=base.map"],
                            soname="libbase.so", **common)
        middle = build_shared("middle", source("middle.c"), deps=[base], soname="libmiddle.so",
                              ldflags=["-nostdlib", "-Wl,-rpath,$ORIGIN"], **common)
        leaf = build_shared("leaf", source("leaf.c"), deps=[middle, base], soname="libleaf.so",
                            ldflags=["-nostdlib", "-Wl,-rpath,$ORIGIN"], **common)
    except FixtureBuildError as exc:
        pytest.fail(f"cross-compiling the {arch} chain failed: {exc}")
    return {"base": base, "middle": middle, "leaf": leaf}
