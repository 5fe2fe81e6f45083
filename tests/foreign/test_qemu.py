"""LoongArch64 (which unicorn cannot emulate): relocated by relink, verified under qemu-user.

The chain is loaded into a `BufferMapper` with a `ForeignTls` static layout; its IFUNC
resolver runs under qemu through `QemuExecutor`; then one snapshot run under
qemu-loongarch64-static calls the initializers and the same functions the unicorn tests
call, on exactly the bytes relink relocated (see qemu_support.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from foreign_support import HAVE_ZIG, build_chain, source
from qemu_support import QemuExecutor, QemuRunner, elf_symbol, find_qemu, snapshot

import relink
from relink.memory.buffer import BufferMapper
from relink.module import SyntheticModule
from relink.runtime.emulator import ForeignTls
from support.build import build_executable

pytestmark = [pytest.mark.cross,
              pytest.mark.skipif(not HAVE_ZIG, reason="the ziglang package is not installed")]

TP = 0x30000000


@pytest.fixture(scope="module")
def qemu() -> Path:
    q = find_qemu("loongarch64")
    if q is None:
        pytest.skip("qemu-loongarch64-static not found (Debian qemu-user-static: see .ci/run)")
    return q


@pytest.fixture(scope="module")
def driver() -> Path:
    return build_executable("qemu_driver", source("qemu_driver.c"), cc="zig",
                            target="loongarch64-linux-musl", pie=False, static=True,
                            cflags=["-mcpu=generic_la64", "-O1", "-fno-builtin", "-fno-PIC"],
                            ldflags=["-nostdlib"], group="foreign-qemu")


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def test_loongarch64_chain_runs_under_qemu(qemu: Path, driver: Path) -> None:
    chain = build_chain("loongarch64")
    mapper = BufferMapper()
    tls = ForeignTls(thread_pointer=TP)
    mapper.tls_policy = tls
    runner = QemuRunner(qemu, driver)
    runtime = SyntheticModule("<qemu driver>",
                              {"__tls_get_addr": elf_symbol(driver, "relink_tls_get_addr")})
    lib = relink.load(str(chain["leaf"]), memory=mapper, scope=[runtime], init=False,
                      executor=QemuExecutor(runner, mapper, tls))
    with lib:
        assert lib.arch == "loongarch64"
        # The IFUNC resolver of base_pick ran under qemu while leaf was being relocated.
        assert runner.runs >= 1
        base, middle = lib.dependencies[1], lib.dependencies[0]
        inits = [f for m in (base, middle, lib) for f in m._state.init_funcs]
        assert len(inits) == 1  # base's .init_array entry
        names = [("leaf_value", 0, 0), ("leaf_add", 5, 6), ("leaf_deref", 0, 0),
                 ("leaf_apply", 0, 7), ("leaf_apply", 1, 7), ("leaf_apply", 2, 7),
                 ("leaf_tls", 0, 0), ("leaf_tls_ie", 0, 0), ("leaf_tls_set", 20, 0),
                 ("leaf_tls", 0, 0), ("leaf_middle_tls", 0, 0), ("leaf_ver", 0, 0),
                 ("leaf_pick", 0, 0), ("leaf_inited", 0, 0), ("leaf_weak", 0, 0),
                 ("leaf_name_len", 0, 0)]
        calls = [(f, 0, 0) for f in inits]
        for name, a0, a1 in names:
            addr = lib.symbol(name)
            assert addr is not None
            calls.append((addr, a0, a1))
        regions, tp, blocks = snapshot(mapper, tls)
        out = [_s32(v) for v in runner.run(regions, tp, blocks, calls)[len(inits):]]
        assert out == [207, 22, 100, 49, -7, 12, 12, 11, 41, 20, 4, 2, 42, 7, -9, 4]


def test_loongarch64_copy_executable_runs_under_qemu(qemu: Path, driver: Path) -> None:
    from foreign_support import build_copy_exe

    chain = build_chain("loongarch64")
    exe = build_copy_exe("loongarch64", chain["base"])
    mapper = BufferMapper()
    tls = ForeignTls(thread_pointer=TP)
    mapper.tls_policy = tls
    runner = QemuRunner(qemu, driver)
    runtime = SyntheticModule("<qemu driver>",
                              {"__tls_get_addr": elf_symbol(driver, "relink_tls_get_addr")})
    with relink.load(str(exe), memory=mapper, scope=[runtime], init=False,
                     executor=QemuExecutor(runner, mapper, tls)) as m:
        calls = [(m.symbol("exe_read"), 0, 0), (m.symbol("exe_bump"), 5, 0),
                 (m.symbol("exe_read"), 0, 0)]
        assert all(c[0] for c in calls)
        regions, tp, blocks = snapshot(mapper, tls)
        out = [_s32(v) for v in runner.run(regions, tp, blocks, calls)]  # type: ignore
        assert out == [100, 105, 105]


def test_loongarch64_tlsdesc_under_qemu(qemu: Path, driver: Path) -> None:
    from foreign_support import cflags

    from support.build import build_shared

    chain = build_chain("loongarch64")
    leaf = build_shared("leafdesc", source("leaf.c"), cc="zig",
                        target="loongarch64-linux-gnu", group="foreign-chain",
                        cflags=[*cflags("loongarch64"), "-mtls-dialect=desc"],
                        deps=[chain["middle"], chain["base"]], soname="libleafdesc.so",
                        ldflags=["-nostdlib", "-Wl,-rpath,$ORIGIN"])
    mapper = BufferMapper()
    tls = ForeignTls(thread_pointer=TP,
                     tlsdesc_function=elf_symbol(driver, "relink_tlsdesc"))
    mapper.tls_policy = tls
    runner = QemuRunner(qemu, driver)
    runtime = SyntheticModule("<qemu driver>",
                              {"__tls_get_addr": elf_symbol(driver, "relink_tls_get_addr")})
    with relink.load(str(leaf), memory=mapper, scope=[runtime], init=False,
                     executor=QemuExecutor(runner, mapper, tls)) as lib:
        from relink.elf import ElfFile

        with ElfFile(str(leaf)) as elf:
            types = {t for table in elf.relocation_tables()[0] for t in table.types}
        assert 14 in types  # R_LARCH_TLS_DESC64
        calls = [(lib.symbol(n), a, 0) for n, a in (("leaf_tls", 0), ("leaf_tls_set", 30),
                                                     ("leaf_tls", 0), ("leaf_value", 0))]
        regions, tp, blocks = snapshot(mapper, tls)
        out = [_s32(v) for v in runner.run(regions, tp, blocks, calls)]  # type: ignore
        assert out == [5, 61, 30, 207]
