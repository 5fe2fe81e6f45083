"""Foreign objects relocated by relink and executed in unicorn (relink-study §4.2 riscv64).

The same C is cross-compiled with zig for aarch64 and riscv64 (riscv64 also with linker
relaxation enabled, so RELAX and ALIGN relocations are present), linked by relink into
an emulator's address space and called there.
"""

from __future__ import annotations

import importlib.util

import pytest
from objsupport import obj

import relink

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ziglang") is None or importlib.util.find_spec("unicorn") is None,
    reason="needs zig (pip install ziglang) and unicorn")
TARGETS = {"aarch64": "aarch64-linux-gnu", "riscv64": "riscv64-linux-gnu"}
VARIANTS = [("aarch64", ["-O2"]), ("aarch64", ["-O0"]), ("riscv64", ["-O2", "-mno-relax"]),
            ("riscv64", ["-O2", "-mrelax"]), ("riscv64", ["-O0", "-mrelax"])]
IDS = [f"{a}{''.join(f)}" for a, f in VARIANTS]


def _o(name: str, arch: str, flags: list[str]) -> object:
    return obj(name, [*flags, "-g0", "-fno-sanitize=all"], cc="zig", target=TARGETS[arch])


def _emu(arch: str) -> object:
    from relink.memory.unicorn import Emulator

    return Emulator(arch)


@pytest.mark.parametrize(("arch", "flags"), VARIANTS, ids=IDS)
def test_resolves_external_symbols_across_objects(arch: str, flags: list[str]) -> None:
    emu = _emu(arch)
    b = relink.load_object(_o("emu_b.c", arch, flags), mapper=emu, executor=emu.executor)
    a = relink.load_object(_o("emu_a.c", arch, flags), mapper=emu, executor=emu.executor,
                           scope=[b])
    assert emu.call(b.symbol("b")) == 41
    assert emu.call(a.symbol("a")) == 83


@pytest.mark.parametrize(("arch", "flags"), VARIANTS, ids=IDS)
def test_calls_globals_hi_lo_pointers(arch: str, flags: list[str]) -> None:
    emu = _emu(arch)
    mod = relink.load_object([_o("emu_calls.c", arch, flags), _o("emu_b.c", arch, flags)],
                             mapper=emu, executor=emu.executor)
    assert mod.arch == arch

    def call(name: str, *args: int) -> int:
        return emu.call(mod.symbol(name), *args, signed=True)

    assert call("call_test", 5) == 210
    assert call("read_globals") == 141
    assert emu.read_word(call("get_global_ptr")) & 0xFFFFFFFF == 42
    assert call("modify_through_pointer", 8) == 50
    call("test_hi20_store", 50, 123)
    assert call("test_hi20_load", 50) == 123
    assert call("test_extern_array", 0) == 0 and call("test_extern_array", 2) == 6
    assert [call("call_through_table", i, 10) for i in range(3)] == [11, 20, 9]
    assert call("sum_through_ptrs") == 60
    assert call("text_len") == 9
    if "-mrelax" in flags:
        assert mod._state.counts.get("RELAX")


@pytest.mark.parametrize("arch", sorted(TARGETS))
def test_far_calls_go_through_stubs(arch: str) -> None:
    """Two units 1.5 GiB apart (aarch64 BL reaches ±128 MiB): the call takes the stub."""
    emu = _emu(arch)
    flags = ["-O2", "-mno-relax"] if arch == "riscv64" else ["-O2"]
    b = relink.load_object(_o("emu_b.c", arch, flags), mapper=emu, executor=emu.executor,
                           address=0x10000000)
    a = relink.load_object(_o("emu_a.c", arch, flags), mapper=emu, executor=emu.executor,
                           scope=[b], address=0x70200000)
    assert emu.call(a.symbol("a")) == 83
    plt = a._state.section(".plt")
    assert plt is not None


def test_cli_call_emulated_object(capsys: pytest.CaptureFixture[str]) -> None:
    from relink.cli import main

    o = _o("emu_b.c", "riscv64", ["-O2", "-mno-relax"])
    assert main(["call", "--emulate", str(o), "b"]) == 0
    assert capsys.readouterr().out.strip() == "41"
    assert main(["call", "--emulate", str(_o("emu_calls.c", "riscv64", ["-O2"])),
                 "call_test", "5"]) == 1  # ext_array is nowhere: a clear error
    assert "ext_array" in capsys.readouterr().err


def test_foreign_object_refused_natively() -> None:
    from relink.errors import ArchMismatchError

    with pytest.raises(ArchMismatchError, match="BufferMapper"):
        relink.load_object(_o("emu_b.c", "aarch64", ["-O2"]))


I386 = [["-m32", "-O2", "-fPIC"], ["-m32", "-O0", "-fPIC"], ["-m32", "-O2", "-fno-pic"],
        ["-m32", "-O2", "-fno-pic", "-fno-plt"], ["-m32", "-O2", "-fPIC", "-fno-plt"]]


@pytest.mark.parametrize("flags", I386, ids=["".join(f) for f in I386])
def test_i386_objects_run(flags: list[str]) -> None:
    """i386 REL objects (implicit addends, GOTPC/GOTOFF/GOT32X) run in the emulator."""
    emu = _emu("x86")
    mod = relink.load_object([obj("emu_calls.c", flags), obj("emu_b.c", flags)], mapper=emu)
    a = relink.load_object(obj("emu_a.c", flags), mapper=emu, scope=[mod])
    assert mod.arch == "x86"

    def call(name: str, *args: int) -> int:
        return emu.call(mod.symbol(name), *args, signed=True)

    assert call("call_test", 5) == 210
    assert call("modify_through_pointer", 8) == 50
    assert [call("call_through_table", i, 10) for i in range(3)] == [11, 20, 9]
    assert call("sum_through_ptrs") == 60 and call("test_extern_array", 2) == 6
    assert emu.call(a.symbol("a")) == 41 + 41 + 1
    if "-fno-plt" in flags:
        assert a._state.counts.get("GOT32X")  # call *b@GOT, with or without %ebx


def test_i386_zig_objects_run() -> None:
    emu = _emu("x86")
    flags = ["-O2", "-g0", "-fno-sanitize=all"]
    mod = relink.load_object([obj("emu_calls.c", flags, cc="zig", target="x86-linux-gnu"),
                              obj("emu_b.c", flags, cc="zig", target="x86-linux-gnu")],
                             mapper=emu)
    assert emu.call(mod.symbol("call_test"), 5) == 210
    assert emu.call(mod.symbol("text_len")) == 9


def test_riscv_align_padding_runs() -> None:
    """The NOP padding of a relaxable object stays and executes; the alignment hint of
    the code after it is lost (counted), which never changes what the code does."""
    emu = _emu("riscv64")
    mod = relink.load_object(obj("align_riscv.s", [], cc="zig", target=TARGETS["riscv64"]),
                             mapper=emu)
    assert mod._state.counts.get("ALIGN") == 1
    assert mod._state.unaligned == 1
    assert emu.call(mod.symbol("fall_through"), 10) == 113
    assert emu.call(mod.symbol("aligned_tail"), 10) == 12
