"""Foreign chains loaded by relink into unicorn and verified by running them there.

For x86, x86_64, aarch64, arm, riscv32 and riscv64: the zig-built leaf -> middle -> base
chain (-nostdlib) is loaded into an `Emulator` (from a path and from bytes), every
relocation class the chain uses is exercised by calling functions that depend on it, and
results are checked against values computed by hand from the C sources.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
from foreign_support import HAVE_UNICORN, build_copy_exe

import relink
from relink.errors import EmulationError, UnsupportedError
from relink.linker.search import SearchPathResolver

pytestmark = [pytest.mark.cross,
              pytest.mark.skipif(not HAVE_UNICORN, reason="unicorn is not installed")]

I = ctypes.c_int


def _emulator(arch: str) -> object:
    from relink.memory.unicorn import Emulator

    return Emulator(arch)


def _load(arch: str, chain: dict[str, Path], from_bytes: bool) -> tuple[object, relink.Module]:
    emu = _emulator(arch)
    if from_bytes:
        # No $ORIGIN for bytes: the dependencies are found through an explicit directory.
        lib = relink.load(chain["leaf"].read_bytes(), name="libleaf.so", memory=emu,
                          resolver=SearchPathResolver(fixed_dirs=(str(chain["leaf"].parent),)))
    else:
        lib = relink.load(str(chain["leaf"]), memory=emu)
    return emu, lib


@pytest.mark.parametrize("from_bytes", [False, True], ids=["path", "bytes"])
def test_chain_runs_in_emulator(emu_chain: tuple[str, dict[str, Path]], from_bytes: bool
                                ) -> None:
    arch, chain = emu_chain
    emu, lib = _load(arch, chain, from_bytes)
    with lib:
        assert lib.arch == arch
        assert [d.name for d in lib.dependencies] == ["libmiddle.so", "libbase.so"]
        f = lib.function
        # PLT calls leaf -> middle -> base, data read through base's GOT: (1+2+100)*2+1.
        assert f("leaf_value", I)() == 207
        assert f("leaf_add", I, I, I)(5, 6) == 22
        # A data pointer (middle_data_ptr = &base_data: ABS / GLOB_DAT into another module).
        assert f("leaf_deref", I)() == 100
        # A function-pointer table: two local functions (RELATIVE) and one in base (ABS).
        apply = f("leaf_apply", I, I, I)
        assert apply(0, 7) == 49
        assert apply(1, 7) == -7
        assert apply(2, 7) == 12  # base_tls_bump: 5 + 7
        # TLS: GD (__tls_get_addr trap) or TLSDESC, and initial-exec (TPOFF) of base.
        assert f("leaf_tls", I)() == 12
        assert f("leaf_tls_ie", I)() == 11
        assert f("leaf_tls_set", I, I)(20) == 41
        assert f("leaf_tls", I)() == 20
        assert f("leaf_middle_tls", I)() == 4
        assert f("leaf_middle_tls", I)() == 5
        # base_ver@@VER_2 (default) over base_ver@VER_1; an IFUNC resolved in the emulator.
        assert f("leaf_ver", I)() == 2
        assert f("leaf_pick", I)() == 42
        # The .init_array constructor of base ran exactly once, inside the emulator.
        assert f("leaf_inited", I)() == 7
        # Weak undefined (missing_weak = 0) and weak defined symbols.
        assert f("leaf_weak", I)() == -9
        # A RELATIVE-relocated string pointer; ten arguments (stack arguments everywhere).
        assert f("leaf_name_len", I)() == 4
        assert f("leaf_sum", I, *[I] * 10)(*range(1, 11)) == 385


def test_symbols_are_target_addresses(emu_chain: tuple[str, dict[str, Path]]) -> None:
    arch, chain = emu_chain
    emu, lib = _load(arch, chain, False)
    with lib:
        base = lib.dependencies[1]
        addr = base.symbol("base_data")
        assert addr is not None and base.contains(addr)
        assert int.from_bytes(emu.read(addr, 4), "little") == 100  # type: ignore[attr-defined]
        # Module.variable aliases emulated memory: writing it changes what code reads.
        var = base.variable("base_data", ctypes.c_int32)
        assert var.value == 100
        var.value = 1000
        assert lib.function("leaf_deref", I)() == 1000
        assert lib.function("leaf_value", I)() == (1 + 2 + 1000) * 2 + 1
        # The versioned pair: dlvsym-like lookups return different target functions.
        v1, v2 = base.symbol("base_ver", "VER_1"), base.symbol("base_ver", "VER_2")
        assert v1 and v2 and v1 != v2
        assert emu.call(v1) == 1 and emu.call(v2) == 2  # type: ignore[attr-defined]
        # The IFUNC symbol resolves (in the emulator) to the implementation returning 42.
        pick = base.symbol("base_pick")
        assert pick is not None and emu.call(pick) == 42  # type: ignore[attr-defined]
        # TLS symbols give the address of the emulated thread's copy.
        tls = base.symbol("base_tls")
        assert tls is not None and not base.contains(tls)
        assert int.from_bytes(emu.read(tls, 4), "little") == 5  # type: ignore[attr-defined]
        lib.function("leaf_tls_set", I, I)(70)
        assert int.from_bytes(emu.read(tls, 4), "little") == 70  # type: ignore[attr-defined]


def test_copy_relocation_in_executable(emu_chain: tuple[str, dict[str, Path]]) -> None:
    arch, chain = emu_chain
    exe = build_copy_exe(arch, chain["base"])
    emu = _emulator(arch)
    with relink.load(str(exe), memory=emu) as m:
        read = m.function("exe_read", I)
        assert read() == 100  # the COPY brought base's initial value into the executable
        # base binds base_data to the executable's copy, so both see one variable.
        assert m.function("exe_bump", I, I)(5) == 105
        assert read() == 105
        addr = m.symbol("base_data")
        assert addr is not None and m.contains(addr)


def test_provided_python_function_is_called_from_target(
        emu_chain: tuple[str, dict[str, Path]]) -> None:
    arch, chain = emu_chain
    emu = _emulator(arch)
    seen: list[int] = []

    def missing_weak() -> int:
        seen.append(1)
        return 5

    emu.provide("missing_weak", missing_weak)  # type: ignore[attr-defined]
    with relink.load(str(chain["leaf"]), memory=emu) as lib:
        assert lib.function("leaf_weak", I)() == 5 * 10 + 1
    assert seen == [1]


def test_trap_exception_propagates(emu_chain: tuple[str, dict[str, Path]]) -> None:
    arch, chain = emu_chain
    emu = _emulator(arch)

    def boom() -> int:
        raise ValueError("from the trap")

    emu.provide("missing_weak", boom)  # type: ignore[attr-defined]
    with relink.load(str(chain["leaf"]), memory=emu) as lib:
        with pytest.raises(ValueError, match="from the trap"):
            lib.function("leaf_weak", I)()
        # The emulator stays usable after a failed call.
        assert lib.function("leaf_value", I)() == 207


def test_faults_and_runaway_code_are_errors(emu_chain: tuple[str, dict[str, Path]]) -> None:
    arch, chain = emu_chain
    emu, lib = _load(arch, chain, False)
    with lib:
        with pytest.raises(EmulationError) as info:
            emu.call(0x100)  # type: ignore[attr-defined]
        assert info.value.arch == arch and info.value.pc is not None
        # A budget of a few instructions cannot finish leaf_value's call chain.
        with pytest.raises(EmulationError, match="did not return"):
            emu.call(lib.symbol("leaf_value"), max_instructions=3)  # type: ignore
        assert lib.function("leaf_value", I)() == 207
        with pytest.raises(UnsupportedError):
            lib.function("leaf_value", ctypes.c_double)


def test_close_unmaps_from_emulator(emu_chain: tuple[str, dict[str, Path]]) -> None:
    arch, chain = emu_chain
    emu, lib = _load(arch, chain, False)
    addr = lib.symbol("leaf_value")
    assert addr is not None
    lib.close()
    with pytest.raises(EmulationError):
        emu.call(addr)  # type: ignore[attr-defined]
    # The same emulator takes a fresh load afterwards.
    with relink.load(str(chain["leaf"]), memory=emu) as again:
        assert again.function("leaf_value", I)() == 207


def _gnu2_leaf(arch: str, chain: dict[str, Path]) -> Path:
    from foreign_support import cflags, source

    from relink.arch import spec_named
    from support.build import build_shared

    spec = spec_named(arch)
    assert spec is not None
    return build_shared("leafdesc", {"leaf.c": source("leaf.c")},
                        cc="zig", target=spec.zig_target, group="foreign-chain",
                        cflags=[*cflags(arch), f"-mtls-dialect={DIALECT.get(arch, 'gnu2')}"],
                        deps=[chain["middle"], chain["base"]], soname="libleafdesc.so",
                        ldflags=["-nostdlib", "-Wl,-rpath,$ORIGIN"])


DIALECT = {"riscv64": "desc", "riscv32": "desc", "loongarch64": "desc"}
TLSDESC_TYPE = {"x86_64": 36, "x86": 41, "riscv64": 12, "riscv32": 12}


@pytest.mark.parametrize("arch", ["x86_64", "x86", "riscv64", "riscv32"])
def test_tlsdesc_dialect_in_emulator(arch: str) -> None:
    from foreign_support import build_chain

    chain = build_chain(arch)
    leaf = _gnu2_leaf(arch, chain)
    from relink.elf import ElfFile

    with ElfFile(str(leaf)) as elf:
        types = {t for table in elf.relocation_tables()[0] for t in table.types}
    assert TLSDESC_TYPE[arch] in types  # the descriptor dialect really is in use
    with relink.load(str(leaf), memory=_emulator(arch)) as lib:
        assert lib.function("leaf_tls", I)() == 5
        assert lib.function("leaf_tls_set", I, I)(30) == 61
        assert lib.function("leaf_tls", I)() == 30



def test_arm_thumb_chain() -> None:
    from foreign_support import build_chain

    chain = build_chain("arm", thumb=True)
    emu = _emulator("arm")
    with relink.load(str(chain["leaf"]), memory=emu) as lib:
        addr = lib.symbol("leaf_value")
        assert addr is not None and addr & 1  # a Thumb function: bit 0 set
        assert lib.function("leaf_value", I)() == 207
        apply = lib.function("leaf_apply", I, I, I)
        assert [apply(0, 3), apply(1, 3), apply(2, 3)] == [9, -3, 8]
        assert lib.function("leaf_tls_set", I, I)(4) == 9
        assert lib.function("leaf_pick", I)() == 42
        assert lib.function("leaf_inited", I)() == 7
        assert lib.function("leaf_sum", I, *[I] * 10)(*range(1, 11)) == 385


@pytest.mark.parametrize(("arch", "code"), [
    ("x86_64", b"\x0f\x05\xc3"),                      # syscall; ret
    ("x86", b"\xcd\x80\xc3"),                          # int 0x80; ret
    ("aarch64", bytes.fromhex("010000d4c0035fd6")),    # svc #0; ret
    ("riscv64", bytes.fromhex("7300000067800000")),    # ecall; ret
])
def test_system_calls_are_errors(arch: str, code: bytes) -> None:
    emu = _emulator(arch)
    region = emu.reserve(0x1000)  # type: ignore[attr-defined]
    region.map_anon(region.start, 0x1000, 5)
    region.write(region.start, code)
    with pytest.raises(EmulationError, match="system call"):
        emu.call(region.start)  # type: ignore[attr-defined]


def test_finalizers_run_in_emulator_on_close(emu_chain: tuple[str, dict[str, Path]]) -> None:
    arch, chain = emu_chain
    emu = _emulator(arch)
    seen: list[int] = []
    emu.provide("base_fini_hook", seen.append, nargs=1)  # type: ignore[attr-defined]
    lib = relink.load(str(chain["leaf"]), memory=emu)
    assert lib.function("leaf_inited", I)() == 7
    assert seen == []
    lib.close()
    assert seen == [107]  # base's .fini_array ran once, after initialization (7 + 100)
    emu.close()  # type: ignore[attr-defined]


SCRIPT = [("leaf_value", ()), ("leaf_add", (7, 8)), ("leaf_deref", ()), ("leaf_apply", (0, 6)),
          ("leaf_apply", (1, 6)), ("leaf_apply", (2, 6)), ("leaf_tls", ()),
          ("leaf_tls_ie", ()), ("leaf_tls_set", (3,)), ("leaf_tls", ()),
          ("leaf_middle_tls", ()), ("leaf_ver", ()), ("leaf_pick", ()), ("leaf_inited", ()),
          ("leaf_weak", ()), ("leaf_name_len", ()), ("leaf_sum", tuple(range(10, 20)))]


def _run_script(lib: relink.Module) -> list[int]:
    return [lib.function(name, I, *[I] * len(args))(*args) for name, args in SCRIPT]


def test_x86_64_emulator_agrees_with_native_execution() -> None:
    """Oracle: the same x86_64 chain loaded natively (host CPU, glibc TLS) and into unicorn
    (emulated CPU, relink's static TLS) gives the same results for the same calls."""
    from foreign_support import build_chain

    chain = build_chain("x86_64")
    with relink.load(str(chain["leaf"])) as native:
        expected = _run_script(native)
    with relink.load(str(chain["leaf"]), memory=_emulator("x86_64")) as emulated:
        assert _run_script(emulated) == expected
    assert expected[0] == 207 and expected[-1] == sum(k * v for k, v in
                                                      zip(range(1, 11), range(10, 20)))


def test_static_tls_area_exhaustion_is_a_clear_error() -> None:
    from foreign_support import build_chain

    from relink.errors import TlsError

    emu = relink.Emulator("aarch64", tls_size=16)  # only the 16-byte TCB fits
    before = len(emu._regions)
    with pytest.raises(TlsError, match="static TLS area"):
        relink.load(str(build_chain("aarch64")["leaf"]), memory=emu)
    assert len(emu._regions) == before
