"""Linker oracle: relink's relocated bytes vs a real linker's at the same addresses.

Test-only. `relink_and_link` loads objects with relink into a `BufferMapper` at a fixed
base (no code runs), then writes a linker script that puts every input section relink
loaded (and the GOT) at exactly the address relink chose, links the same objects with
the real linker (GNU ld for x86_64, ld.lld for aarch64 and riscv64, relaxation off,
string merging off on both sides), defining the external symbols at the same addresses
with ``--defsym``. `compare` then returns every section whose bytes differ.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import relink
from relink.memory.buffer import BufferMapper

SKIP = {".eh_frame", ".note.GNU-stack", ".comment"}


def have_linker(linker: str) -> bool:
    return shutil.which(linker) is not None


def load_in_buffer(objs: Sequence[Path], externals: Mapping[str, int],
                   base: int = 0x400000) -> tuple[relink.Module, BufferMapper]:
    mapper = BufferMapper(base=base)
    mod = relink.load_object(list(objs), mapper=mapper, symbols=dict(externals), host=False,
                             merge=False, address=base, relax=False,
                             layout=lambda info: "skip" if info.name in SKIP else None)
    return mod, mapper


def link_like(mod: relink.Module, objs: Sequence[Path], externals: Mapping[str, int],
              out: Path, linker: str, extra: Sequence[str] = (), got_bias: int = 0) -> Path:
    """Link `objs` with `linker`, every section at the address relink gave it."""
    st: Any = mod._state
    lines = ["SECTIONS {"]
    commons = False
    names = {str(Path(o).resolve()): Path(o).name for o in objs}
    for i, s in enumerate(st.sections):
        if s.object == "<relink>":
            if s.name == ".got":
                lines.append(f"  .got {s.address - got_bias:#x} : {{ *(.got) }}")
            elif s.name.startswith("COMMON:") and not commons:
                commons = True  # (fixtures have one COMMON symbol at most)
                lines.append(f"  .common {s.address:#x} : {{ *(COMMON) }}")
            continue
        fname = names.get(str(Path(s.object).resolve()), Path(s.object).name)
        lines.append(f"  .o{i} {s.address:#x} : {{ KEEP(*{fname}({s.name})) }}")
    lines.append("  /DISCARD/ : { *(.eh_frame) *(.comment) *(.note.GNU-stack) }")
    lines.append("}")
    script = out.with_suffix(".ld")
    script.write_text("\n".join(lines) + "\n")
    argv = [linker, "-o", str(out), "-T", str(script), "--no-relax", "-e", "0",
            "-z", "norelro", *extra, *(f"--defsym={k}={v:#x}" for k, v in externals.items()),
            *(str(o) for o in objs)]
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode:
        raise AssertionError(f"{' '.join(argv)}\n{res.stderr}")
    return out


def _segments(elf: bytes) -> list[tuple[int, int, int]]:
    out = []
    if elf[4] == 1:  # ELF32
        (phoff,) = struct.unpack_from("<I", elf, 28)
        phentsize, phnum = struct.unpack_from("<HH", elf, 42)
        for i in range(phnum):
            p_type, off, vaddr, _pa, filesz, _mem, _fl, _al = struct.unpack_from(
                "<IIIIIIII", elf, phoff + i * phentsize)
            if p_type == 1:
                out.append((vaddr, off, filesz))
        return out
    (phoff,) = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    for i in range(phnum):
        p_type, _fl, off, vaddr, _pa, filesz, _mem, _al = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize)
        if p_type == 1:
            out.append((vaddr, off, filesz))
    return out


def read_linked(elf: bytes, addr: int, size: int) -> bytes:
    for vaddr, off, filesz in _segments(elf):
        if vaddr <= addr and addr + size <= vaddr + filesz:
            return elf[off + addr - vaddr:off + addr - vaddr + size]
    raise AssertionError(f"{addr:#x}+{size:#x} is not in the linked file")


def compare(mod: relink.Module, mapper: BufferMapper, linked: Path) -> list[str]:
    """Names of sections whose relocated bytes differ (with the first differing offset)."""
    st: Any = mod._state
    elf = linked.read_bytes()
    region = mapper.regions[0]
    bad = []
    for s in st.sections:
        if s.object == "<relink>" or not s.size or s.name.startswith(".bss") or \
                s.name.startswith(".tbss"):
            continue
        mine = region.read(s.address, s.size)
        theirs = read_linked(elf, s.address, s.size)
        if mine != theirs:
            at = next(i for i in range(s.size) if mine[i] != theirs[i])
            bad.append(f"{Path(s.object).name}:{s.name}+{at:#x} "
                       f"relink={mine[at:at + 8].hex()} linker={theirs[at:at + 8].hex()}")
    return bad


def got_slots(mod: relink.Module, mapper: BufferMapper) -> bytes:
    got = mod._state.section(".got")
    return b"" if got is None else mapper.regions[0].read(got.address, got.size)


def section_range(elf: bytes, name: str) -> tuple[int, int] | None:
    """(address, size) of output section `name` of a linked file, or None."""
    if elf[4] == 1:  # ELF32
        (shoff,) = struct.unpack_from("<I", elf, 32)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 46)
        fmt = "<IIIIIIIIII"
    else:
        (shoff,) = struct.unpack_from("<Q", elf, 40)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 58)
        fmt = "<IIQQQQIIQQ"
    rows = [struct.unpack_from(fmt, elf, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = rows[shstrndx][4]
    for row in rows:
        end = elf.index(b"\0", strtab_off + row[0])
        if elf[strtab_off + row[0]:end].decode() == name:
            return row[3], row[5]
    return None
