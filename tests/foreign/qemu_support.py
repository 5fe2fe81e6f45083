"""Verification by execution under qemu-user for ISAs unicorn cannot run (LoongArch64).

Test support. relink loads and relocates a foreign chain into a `BufferMapper` (at the
addresses it chooses, with a `ForeignTls` static layout at a chosen thread pointer).
`QemuRunner.run` then writes a *snapshot executable*: a static ELF whose PT_LOAD
segments are exactly the relocated regions, the TLS area and a small static driver
(fixtures/qemu_driver.c) whose table is patched with the thread pointer, each TLS
module's block address and the calls to make. qemu-user runs it; the driver prints the
raw results. What runs is relink's relocated bytes, unchanged.

`QemuExecutor` is an `Executor` on top of it: each IFUNC resolver call is one qemu run
over the current snapshot, so IFUNCs resolve by running target code in the target ISA.
Initializers cannot persist their writes across qemu runs: load with ``init=False`` and
run ``init_funcs`` first in the verifying run (that is the order ld.so uses too).

qemu comes from Debian's qemu-user-static (``apt-get download`` + ``dpkg -x``, done by
.ci/run and, when apt is usable, by `find_qemu` itself) or from PATH.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from relink.elf import ElfFile
from relink.memory.buffer import BufferMapper
from relink.runtime.emulator import ForeignTls
from support.build import cache_dir

PT_LOAD, PT_GNU_STACK = 1, 0x6474E551
ALIGN = 0x10000
MAX_CALLS = 48


def find_qemu(name: str) -> Path | None:
    """``qemu-<name>-static`` from PATH or the unpacked Debian package in the cache."""
    exe = f"qemu-{name}-static"
    on_path = shutil.which(exe)
    if on_path:
        return Path(on_path)
    root = Path(os.environ.get("RELINK_QEMU_ROOT", cache_dir() / "qemu-user-static"))
    found = root / "usr" / "bin" / exe
    if found.exists():
        return found
    if shutil.which("apt-get") and shutil.which("dpkg"):
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            got = subprocess.run(["apt-get", "download", "qemu-user-static"], cwd=tmp,
                                 capture_output=True, check=False, timeout=600)
            debs = list(Path(tmp).glob("qemu-user-static_*.deb"))
            if got.returncode == 0 and debs:
                subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=False,
                               capture_output=True, timeout=600)
    return found if found.exists() else None


def elf_symbol(path: Path, name: str) -> int:
    """st_value of `name` in a static executable's .symtab (ELF64 little-endian)."""
    with ElfFile(str(path)) as elf:
        symtab = elf.section(".symtab")
        strtab = elf.section(".strtab")
        assert symtab is not None and strtab is not None
        syms = bytes(elf.section_data(symtab))
        strs = bytes(elf.section_data(strtab))
    for i in range(0, len(syms), 24):
        st_name, _info, _other, _shndx, value, _size = struct.unpack_from("<IBBHQQ", syms, i)
        end = strs.index(b"\0", st_name)
        if strs[st_name:end].decode() == name:
            return int(value)
    raise KeyError(name)


class QemuRunner:
    """Runs relocated images under qemu-user through a snapshot executable."""

    def __init__(self, qemu: Path, driver: Path) -> None:
        self.qemu = qemu
        self.driver = driver
        self.table = elf_symbol(driver, "relink_table")
        with ElfFile(str(driver)) as elf:
            self.machine = elf.header.e_machine
            self.flags = struct.unpack_from("<I", bytes(elf.source.data), 48)[0]
            self.entry = elf.header.e_entry
            data = bytes(elf.source.data)
            self.segments = [(ph.p_vaddr, data[ph.p_offset:ph.p_offset + ph.p_filesz],
                              ph.p_memsz, ph.p_flags) for ph in elf.phdrs
                             if ph.p_type == PT_LOAD]
        self.runs = 0

    def run(self, regions: list[tuple[int, bytes]], tp: int, blocks: dict[int, int],
            calls: list[tuple[int, int, int]]) -> list[int]:
        """Make `calls` ((function, arg0, arg1) each); returns the raw 64-bit results."""
        if len(calls) > MAX_CALLS:
            raise ValueError("too many calls for one run")
        table = [tp, len(calls)] + [blocks.get(i, 0) for i in range(16)]
        for func, a0, a1 in calls:
            table += [func, 2, a0 & (2**64 - 1), a1 & (2**64 - 1)]
        packed = struct.pack(f"<{len(table)}Q", *table)
        segs = []
        for vaddr, data, memsz, flags in self.segments:
            if vaddr <= self.table < vaddr + len(data):
                at = self.table - vaddr
                data = data[:at] + packed + data[at + len(packed):]
            segs.append((vaddr, data, memsz, flags))
        segs += [(start, data, len(data), 7) for start, data in regions]
        with tempfile.TemporaryDirectory() as tmp:
            exe = Path(tmp, "snapshot")
            exe.write_bytes(self._elf(segs))
            exe.chmod(0o755)
            res = subprocess.run([str(self.qemu), str(exe)], capture_output=True,
                                 timeout=120, check=False)
        self.runs += 1
        if res.returncode != 0 or len(res.stdout) != 8 * len(calls):
            raise RuntimeError(f"qemu run failed (status {res.returncode}): "
                               f"{res.stderr.decode(errors='replace')[-500:]}")
        return list(struct.unpack(f"<{len(calls)}Q", res.stdout))

    def _elf(self, segs: list[tuple[int, bytes, int, int]]) -> bytes:
        phnum = len(segs) + 1
        cursor = 64 + 56 * phnum
        phdrs, body = [], []
        for vaddr, data, memsz, flags in segs:
            off = ((cursor + ALIGN - 1) & ~(ALIGN - 1)) + vaddr % ALIGN
            body.append((off, data))
            cursor = off + len(data)
            phdrs.append(struct.pack("<IIQQQQQQ", PT_LOAD, flags, off, vaddr, vaddr,
                                     len(data), memsz, ALIGN))
        phdrs.append(struct.pack("<IIQQQQQQ", PT_GNU_STACK, 6, 0, 0, 0, 0, 0, 16))
        ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
        ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, self.machine, 1, self.entry, 64, 0,
                                   self.flags, 64, 56, phnum, 64, 0, 0)
        out = bytearray(cursor)
        out[:64] = ehdr
        out[64:64 + 56 * phnum] = b"".join(phdrs)
        for off, data in body:
            out[off:off + len(data)] = data
        return bytes(out)


def snapshot(mapper: BufferMapper, tls: ForeignTls) -> tuple[list[tuple[int, bytes]], int,
                                                             dict[int, int]]:
    """The regions, thread pointer and module-id -> block address of a buffer load."""
    regions = [(r.start, bytes(r.data)) for r in mapper.regions if not r.released]
    tp = tls.thread_pointer
    assert tp is not None
    blocks = {mid: tp + blk.tpoff for mid, blk in tls.by_id.items()}
    if tls.blocks:
        start, area = tls.initial_image()
        pad = start % 0x1000
        regions.append((start - pad, bytes(pad) + area))
    return regions, tp, blocks


class QemuExecutor:
    """An `Executor` running IFUNC resolvers under qemu over the current snapshot."""

    def __init__(self, runner: QemuRunner, mapper: BufferMapper, tls: ForeignTls) -> None:
        self.runner, self.mapper, self.tls = runner, mapper, tls

    def call_ifunc(self, resolver: int) -> int:
        regions, tp, blocks = snapshot(self.mapper, self.tls)
        return self.runner.run(regions, tp, blocks, [(resolver, 0, 0)])[0]

    def call_init(self, func: int, argc: int, argv: int, envp: int) -> None:
        raise NotImplementedError("initializers run in the verifying qemu run (init=False)")

    def call_fini(self, func: int) -> None:
        raise NotImplementedError("finalizers are not run under qemu")
