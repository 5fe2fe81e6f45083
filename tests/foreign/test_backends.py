"""Memory backends, the foreign-load API and its gates, and the CLI on every ISA.

* A user-written `Mapper` / `Region` (no host view: the loader and the relocation loop
  must go through ``write`` / ``read``) plugs into `relink.load`, and what it produced
  runs correctly once copied into a unicorn instance.
* `BufferMapper` loads foreign images; steps that need to run target code fail clearly;
  nothing from a foreign file is ever run on the host.
* ``relink info`` / ``relink deps`` / ``relink call --emulate`` on each ISA's chain.
* The relocation classes each ISA's fixtures use, which docs/foreign.md's table claims.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import sys
from pathlib import Path

import pytest
from foreign_support import ALL_ISAS, EMULATED, HAVE_UNICORN, HAVE_ZIG, build_chain

import relink
from relink.arch import RelocClass, spec_named
from relink.cli import main as cli_main
from relink.elf import ElfFile
from relink.errors import (
    ArchMismatchError,
    InitializerError,
    MappingError,
    UnsupportedError,
)
from relink.memory import PROT_EXEC, PROT_READ, Mapper, Region
from relink.memory.buffer import BufferMapper
from relink.module import SyntheticModule
from relink.runtime.emulator import ForeignTls

pytestmark = [pytest.mark.cross,
              pytest.mark.skipif(not HAVE_ZIG, reason="the ziglang package is not installed")]

I = ctypes.c_int


class PagedRegion:
    """A 'remote' region: sparse pages in a dict, no host view, every call logged."""

    def __init__(self, start: int, size: int, log: list[str]) -> None:
        self.start, self.size, self.log = start, size, log
        self.pages: dict[int, bytearray] = {}
        self.prot: dict[int, int] = {}
        self.released = False

    def _page(self, addr: int) -> bytearray:
        if not self.start <= addr < self.start + self.size:
            raise MappingError(f"{addr:#x} outside region", op="access", address=addr)
        return self.pages.setdefault(addr & ~0xFFF, bytearray(0x1000))

    def map_file(self, addr: int, size: int, fd: int, offset: int, prot: int) -> None:
        self.log.append("map_file")
        self.write(addr, os.pread(fd, size, offset).ljust(size, b"\0"))
        self.protect(addr, size, prot)

    def map_anon(self, addr: int, size: int, prot: int) -> None:
        self.log.append("map_anon")
        self.write(addr, bytes(size))
        self.protect(addr, size, prot)

    def protect(self, addr: int, size: int, prot: int) -> None:
        self.log.append("protect")
        for p in range(addr & ~0xFFF, addr + size, 0x1000):
            self.prot[p] = prot

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        while data:
            page = self._page(addr)
            at = addr & 0xFFF
            n = min(len(data), 0x1000 - at)
            page[at:at + n] = data[:n]
            addr, data = addr + n, data[n:]

    def read(self, addr: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            at = addr & 0xFFF
            n = min(size, 0x1000 - at)
            out += self._page(addr)[at:at + n]
            addr, size = addr + n, size - n
        return bytes(out)

    def view(self) -> None:
        return None

    def release(self) -> None:
        self.released = True


class PagedMapper:
    """A user memory backend (the documented protocol, nothing inherited)."""

    native = False
    page_size = 0x1000

    def __init__(self) -> None:
        self.log: list[str] = []
        self.regions: list[PagedRegion] = []
        self.next = 0x10000000
        self.tls = ForeignTls()

    def reserve(self, size: int, *, address: int | None = None,
                fixed: bool = False) -> PagedRegion:
        start = address if address is not None and fixed else self.next
        self.next = (start + size + 0xFFFF) & ~0xFFFF
        region = PagedRegion(start, size, self.log)
        self.regions.append(region)
        return region


def test_protocols_are_runtime_checkable() -> None:
    mapper = PagedMapper()
    assert isinstance(mapper, Mapper)
    assert isinstance(mapper.reserve(0x1000), Region)
    assert isinstance(BufferMapper(), Mapper)


@pytest.mark.skipif(not HAVE_UNICORN, reason="unicorn is not installed")
def test_user_backend_output_runs_in_unicorn() -> None:
    chain = build_chain("riscv64")
    mapper = PagedMapper()
    # middle's GD TLS access calls __tls_get_addr: any target address satisfies binding.
    rt = SyntheticModule("<rt>", {"__tls_get_addr": 0x6FF00F00})
    lib = relink.load(str(chain["middle"]), memory=mapper, init=False, scope=[rt])
    with lib:
        assert {"map_file", "protect"} <= set(mapper.log)
        base = lib.dependencies[0]
        # The GOT / data pointer went through Region.write (no view): check the bytes.
        ptr = lib.symbol("middle_data_ptr")
        assert ptr is not None
        region = next(r for r in mapper.regions if r.start <= ptr < r.start + r.size)
        assert int.from_bytes(region.read(ptr, 8), "little") == base.symbol("base_data")
        with pytest.raises(UnsupportedError, match="cannot run it"):
            lib.function("middle_mul", I, I, I)
        # Copy the user's pages into a unicorn instance and run what relink produced.
        from relink.memory.unicorn import Emulator

        emu = Emulator("riscv64")
        for r in mapper.regions:
            er = emu.reserve(r.size, address=r.start, fixed=True)
            er.map_anon(r.start, r.size, PROT_READ | PROT_EXEC | 2)
            for page, data in r.pages.items():
                er.write(page, data)
        assert emu.call(lib.symbol("middle_mul"), 1, 2) == 206
        assert emu.call(lib.symbol("middle_apply"), 0, 5) == 25
        assert emu.call(lib.symbol("middle_apply"), 1, 5, signed=True) == -5


def test_buffer_load_relocates_and_never_runs_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from relink.runtime import executor

    def refuse(*_a: object) -> int:
        raise AssertionError("foreign code reached the native executor")

    for meth in ("call_ifunc", "call_init", "call_fini"):
        monkeypatch.setattr(executor.NativeExecutor, meth, refuse)
    chain = build_chain("riscv64")
    # The images call __tls_get_addr: a buffer has no runtime, so the caller names one.
    rt = [SyntheticModule("<rt>", {"__tls_get_addr": 0x6FF00F00})]
    with pytest.raises(relink.errors.UnknownSymbolError, match="__tls_get_addr"):
        relink.load(str(chain["middle"]), arch="riscv64", init=False)
    with relink.load(str(chain["middle"]), arch="riscv64", init=False, scope=rt) as lib:
        assert lib.arch == "riscv64"
        base = lib.dependencies[0]
        data = base.symbol("base_data")
        assert data is not None and data >= 0x10000000
        assert base.variable("base_data", ctypes.c_int32).value == 100
        ptr = lib.variable("middle_data_ptr", ctypes.c_uint64).value
        assert ptr == data
        with pytest.raises(UnsupportedError):
            lib.function("middle_mul", I, I, I)
    # Initializers need target code to run: a buffer has no executor.
    with pytest.raises(InitializerError, match="cannot run target code"):
        relink.load(str(chain["middle"]), arch="riscv64", scope=rt)
    # So do IFUNC resolvers (leaf calls base's IFUNC base_pick).
    with pytest.raises(UnsupportedError, match="IFUNC"):
        relink.load(str(chain["leaf"]), arch="riscv64", init=False, scope=rt)
    # TLSDESC needs a resolver function in the target (aarch64 uses TLSDESC).
    with pytest.raises(UnsupportedError, match="TLSDESC"):
        relink.load(str(build_chain("aarch64")["middle"]), arch="aarch64", init=False)


def test_arch_keyword_checks_the_file() -> None:
    chain = build_chain("aarch64")
    with pytest.raises(ArchMismatchError):
        relink.load(str(chain["base"]), arch="riscv64", init=False)
    with pytest.raises(UnsupportedError, match="unknown architecture"):
        relink.load(str(chain["base"]), arch="pdp11")
    from relink.memory.host import HostMapper

    with pytest.raises(UnsupportedError, match="cannot be loaded into this process"):
        relink.load(str(chain["base"]), arch="aarch64", memory=HostMapper())
    with pytest.raises(ArchMismatchError):
        relink.load(str(chain["base"]))  # a native load of a foreign file
    with pytest.raises(ValueError):
        relink.load(str(chain["base"]), memory=BufferMapper(), mapper=BufferMapper())


@pytest.mark.skipif(not HAVE_UNICORN, reason="unicorn is not installed")
def test_emulator_backend_errors_and_rollback() -> None:
    from relink.memory.unicorn import Emulator

    chain = build_chain("arm")
    emu = Emulator("arm")
    before = len(emu._regions)
    with pytest.raises(relink.errors.UnresolvedDependencyError):
        relink.load(chain["leaf"].read_bytes(), name="libleaf.so", memory=emu)
    assert len(emu._regions) == before  # a failed load leaves nothing mapped
    with pytest.raises(ArchMismatchError):
        relink.load(str(build_chain("aarch64")["base"]), memory=emu)
    with pytest.raises(UnsupportedError, match="loongarch64"):
        Emulator("loongarch64")
    with pytest.raises(UnsupportedError, match="backend runs arm"):
        relink.load(str(chain["leaf"]), arch="aarch64", memory=emu)
    with relink.load(str(chain["leaf"]), arch="arm", memory=emu) as lib:
        assert lib.function("leaf_value", I)() == 207
    region = emu.reserve(0x2000, address=0x50000000, fixed=True)
    with pytest.raises(MappingError):
        emu.reserve(0x1000, address=0x50001000, fixed=True)
    region.release()
    emu.reserve(0x1000, address=0x50001000, fixed=True)


def test_emulator_needs_unicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    from relink.memory import unicorn as backend

    monkeypatch.setitem(sys.modules, "unicorn", None)
    with pytest.raises(UnsupportedError, match=r"relink\[emu\]"):
        backend.Emulator("aarch64")


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(list(argv)) == 0
    return out.getvalue()


@pytest.mark.parametrize("arch", ALL_ISAS)
def test_cli_info_and_deps(arch: str) -> None:
    chain = build_chain(arch)
    spec = spec_named(arch)
    assert spec is not None
    info = json.loads(_cli("info", "--json", str(chain["leaf"])))
    assert info["e_machine"] == spec.e_machine and info["class"] == f"ELF{spec.elf_class}"
    assert info["needed"] == ["libmiddle.so", "libbase.so"]
    names = {r if isinstance(r, str) else json.dumps(r) for r in info["relocations"]}
    assert any("JUMP_SLOT" in n for n in names)
    deps = json.loads(_cli("deps", "--json", str(chain["leaf"])))
    found = {n["name"]: n["path"] for n in deps["nodes"]}
    assert Path(found["libbase.so"]).resolve() == chain["base"].resolve()
    assert Path(found["libmiddle.so"]).resolve() == chain["middle"].resolve()


@pytest.mark.skipif(not HAVE_UNICORN, reason="unicorn is not installed")
@pytest.mark.parametrize("arch", EMULATED)
def test_cli_call_emulate(arch: str) -> None:
    chain = build_chain(arch)
    assert _cli("call", "--emulate", str(chain["leaf"]), "leaf_add", "5", "6").strip() == "22"
    assert _cli("call", "--emulate", str(chain["leaf"]), "leaf_apply", "1", "9").strip() == "-9"


# Relocation classes of the chain per ISA (docs/foreign.md's table says the same).
TLS_CLASSES = {"aarch64": {RelocClass.TLSDESC, RelocClass.TPOFF}}
DEFAULT_TLS = {RelocClass.DTPMOD, RelocClass.DTPOFF, RelocClass.TPOFF}


@pytest.mark.parametrize("arch", ALL_ISAS)
def test_fixture_relocation_coverage(arch: str) -> None:
    spec = spec_named(arch)
    assert spec is not None
    seen: set[RelocClass] = set()
    for path in build_chain(arch).values():
        with ElfFile(str(path)) as elf:
            tables, relr = elf.relocation_tables()
            for t in tables:
                for r_type in t.types:
                    assert r_type in spec.classes, spec.rtype_name(r_type)
                    seen.add(spec.classes[r_type])
            assert not relr
    assert {RelocClass.RELATIVE, RelocClass.JUMP_SLOT} <= seen
    assert seen & {RelocClass.GLOB_DAT, RelocClass.SYMBOLIC}
    assert TLS_CLASSES.get(arch, DEFAULT_TLS) <= seen


@pytest.mark.skipif(not HAVE_UNICORN, reason="unicorn is not installed")
@pytest.mark.parametrize("arch", EMULATED)
def test_relr_chain_runs(arch: str) -> None:
    from relink.memory.unicorn import Emulator

    chain = build_chain(arch, relr=True)
    with ElfFile(str(chain["middle"])) as elf:
        assert elf.relocation_tables()[1], "expected a DT_RELR table"
    with relink.load(str(chain["leaf"]), memory=Emulator(arch)) as lib:
        assert lib.function("leaf_apply", I, I, I)(0, 9) == 81   # RELR-relocated table
        assert lib.function("leaf_apply", I, I, I)(1, 9) == -9
        assert lib.function("leaf_name_len", I)() == 4
        assert lib.function("leaf_value", I)() == 207
