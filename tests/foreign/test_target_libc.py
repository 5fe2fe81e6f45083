"""The target's own glibc (Debian's cross packages, 2.36) loaded by relink into unicorn.

A zig-built library calling strlen (an IFUNC in glibc), snprintf, qsort (with a callback
back into the library), strdup/free (malloc: getrandom + mmap), printf (stdio: fstat +
write) and using general-dynamic TLS (glibc's ld.so's __tls_get_addr) is loaded with
its DT_NEEDED libc.so.6 — and libc's own dependency, the target's ld-linux — from the
unpacked sysroot. glibc's initializers run in the emulator; the few system calls it
makes are answered by ``syscalls="linux"``.
"""

from __future__ import annotations

import pytest
from foreign_support import CROSS_GLIBC, HAVE_UNICORN, HAVE_ZIG, build_uselibc, cross_glibc

import relink
from relink.errors import EmulationError
from relink.linker.search import SearchPathResolver

pytestmark = [pytest.mark.cross,
              pytest.mark.skipif(not (HAVE_UNICORN and HAVE_ZIG),
                                 reason="needs unicorn and ziglang")]


def _load(arch: str, syscalls: str | None) -> tuple[object, relink.Module]:
    libdir = cross_glibc(arch)
    if libdir is None:
        pytest.skip(f"Debian's {CROSS_GLIBC[arch][0]} is not available (see .ci/run)")
    from relink.memory.unicorn import Emulator

    emu = Emulator(arch, syscalls=syscalls)
    resolver = SearchPathResolver(fixed_dirs=(str(libdir),), use_ld_cache=False,
                                  use_default_dirs=False)
    return emu, relink.load(str(build_uselibc(arch)), memory=emu, resolver=resolver)


@pytest.mark.parametrize("arch", sorted(CROSS_GLIBC))
def test_target_glibc_runs_in_emulator(arch: str) -> None:
    emu, lib = _load(arch, "linux")
    with lib:
        libc = lib.dependencies[0]
        assert libc.name == "libc.so.6" and libc.arch == arch
        assert [d.name for d in libc.dependencies][0].startswith("ld-linux")
        call = emu.call  # type: ignore[attr-defined]
        assert call(lib.symbol("len"), b"hello world") == 11
        buf = emu.alloc(64)  # type: ignore[attr-defined]
        assert call(lib.symbol("fmt"), buf, 64, 42) == 7
        assert emu.read_cstring(buf) == b"v=42:ok"  # type: ignore[attr-defined]
        assert call(lib.symbol("sorted_first")) == 19
        assert call(lib.symbol("dup_len"), b"abcdef") == 6
        # GD TLS of the library through the target ld.so's own __tls_get_addr (or
        # TLSDESC on aarch64): relink's emulated DTV has the glibc layout.
        assert call(lib.symbol("tls_bump"), 2) == 42
        assert call(lib.symbol("tls_bump"), 3) == 45
        assert call(lib.symbol("print_it"), b"hi from glibc") == 14
        assert call(libc.symbol("fflush"), 0) == 0
        sys = emu.syscalls  # type: ignore[attr-defined]
        assert bytes(sys.stdout) == b"hi from glibc\n"
        assert "write" in [entry[0] for entry in sys.log]


def test_system_calls_need_the_linux_layer() -> None:
    emu, lib = _load("aarch64", None)
    with lib:
        assert emu.call(lib.symbol("len"), b"abc") == 3  # type: ignore[attr-defined]
        with pytest.raises(EmulationError, match="syscalls='linux'"):
            emu.call(lib.symbol("dup_len"), b"abc")  # type: ignore[attr-defined]


def test_cli_call_emulate_with_target_glibc() -> None:
    import contextlib
    import io

    from relink.cli import main

    libdir = cross_glibc("riscv64")
    if libdir is None:
        pytest.skip("Debian's libc6-riscv64-cross is not available (see .ci/run)")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["call", "--emulate", "--sysroot-lib", str(libdir),
                     str(build_uselibc("riscv64")), "print_it", "hello riscv64"]) == 0
    assert out.getvalue() == "hello riscv64\n14\n"


@pytest.mark.parametrize("arch", sorted(CROSS_GLIBC))
def test_program_main_runs_with_target_glibc(arch: str) -> None:
    from foreign_support import build_prog

    from relink.memory.unicorn import Emulator
    from relink.runtime.emulator import run_main

    libdir = cross_glibc(arch)
    if libdir is None:
        pytest.skip(f"Debian's {CROSS_GLIBC[arch][0]} is not available (see .ci/run)")
    emu = Emulator(arch, syscalls="linux")
    resolver = SearchPathResolver(fixed_dirs=(str(libdir),), use_ld_cache=False,
                                  use_default_dirs=False)
    with relink.load(str(build_prog(arch)), memory=emu, resolver=resolver) as prog:
        assert run_main(prog, ["prog", "4", "5", "300"]) == 309 % 256
    assert bytes(emu.syscalls.stdout) == b"sum of 3 args = 309\n"  # flushed by exit()
    assert emu.syscalls.log[-1][0] == "exit_group"


def test_cli_run_emulate() -> None:
    import subprocess
    import sys

    from foreign_support import build_prog

    libdir = cross_glibc("arm")
    if libdir is None:
        pytest.skip("Debian's libc6-armhf-cross is not available (see .ci/run)")
    res = subprocess.run([sys.executable, "-m", "relink", "run", "--emulate", "--sysroot-lib",
                          str(libdir), str(build_prog("arm")), "7", "8"],
                         capture_output=True, check=False, timeout=300)
    assert res.stdout == b"sum of 2 args = 15\n", res.stderr
    assert res.returncode == 15
