"""The built-in hot-code packing pass: hot functions of every module, contiguous.

Plan layer, a pass (a callable over the `Plan`). Given hot function names — a list, or a
profile file — it copies each hot function of every reorderable module into one shared
code arena (2 MiB, huge-page backed by default), in profile order, so the hot path of a
program that calls across many libraries touches a handful of pages (iTLB entries)
instead of one page per function. What BOLT or a linker's ``--symbol-ordering-file`` do
at link time, done at load time, across modules.

How a function moves: it becomes a *fragment* of its code section (`Section.parent`).
Every relocated reference to it (calls through PLT/GOT, symbol values, unwind tables)
is redirected to the hot copy; the original stays in place as a working copy, so a call
that the assembler resolved without a relocation (a static function in the same input
section) still lands on valid code. References *from* the hot copy need relocations,
which holds for code compiled with ``-ffunction-sections``; a direct call or jump from a
hot function to another function's entry with no retained relocation is refused with a
PlanError naming both functions.

Profile file format: one function per line, ``name`` or ``count name`` (``#`` comments;
with counts, hottest first). ``perf report --stdio`` style lines ``12.5% ... name`` are
accepted too: the last field is the name, a leading percentage the weight.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import Any

from relink.errors import PlanError
from relink.plan.model import (
    HUGE_PAGE,
    Capability,
    MemoryClass,
    ModulePlan,
    Plan,
    Section,
    Sharing,
)

__all__ = ["HotPack", "function_symbols", "hot_pack", "read_profile"]

_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
STT_FUNC, SHT_SYMTAB, SHT_RELA = 2, 2, 4


def read_profile(path: str | os.PathLike[str]) -> list[str]:
    """Hot function names from a profile file, hottest first (see the module doc)."""
    rows: list[tuple[float, int, str]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            weight = 0.0
            head = parts[0].rstrip("%")
            if len(parts) > 1:
                try:
                    weight = float(head)
                except ValueError:
                    weight = 0.0
            rows.append((-weight, n, parts[-1]))
    rows.sort()
    seen: dict[str, None] = {}
    for _w, _n, name in rows:
        seen.setdefault(name, None)
    return list(seen)


def function_symbols(mod: ModulePlan) -> dict[str, tuple[int, int, int]]:
    """name -> (address, size, section index) of the defined functions in .symtab."""
    symtab = next((s for s in mod.sections if s.sh_type == SHT_SYMTAB), None)
    if symtab is None or not 0 < symtab.link < len(mod.sections):
        return {}
    strtab = mod.sections[symtab.link].file_bytes()
    out: dict[str, tuple[int, int, int]] = {}
    raw = symtab.file_bytes()
    for name, info, _other, shndx, value, size in _SYM.iter_unpack(
            raw[:len(raw) - len(raw) % _SYM.size]):
        if info & 0xF != STT_FUNC or not 0 < shndx < len(mod.sections):
            continue
        end = strtab.find(b"\0", name)
        if end < 0:
            continue
        out.setdefault(strtab[name:end].decode("utf-8", "replace"), (value, size, shndx))
    return out


class HotPack:
    """The pass object (see `hot_pack`). After running, `packed` lists what moved:
    ``(module key, function, size, offset in the hot arena)``; `missing` the names no
    reorderable module defines."""

    def __init__(self, names: Iterable[str], *, page_size: int = HUGE_PAGE,
                 align: int = 16) -> None:
        self.names = list(dict.fromkeys(names))
        self.page_size = page_size
        self.align = align
        self.packed: list[tuple[str, str, int, int]] = []
        self.missing: list[str] = []

    def __call__(self, plan: Plan) -> None:
        mods = plan.modules_with(Capability.REORDERABLE)
        tables = {m.key: function_symbols(m) for m in mods}
        arena = plan.create_arena(MemoryClass.CODE, page_size=self.page_size,
                                  sharing=Sharing.SHARED, name="code.hot")
        cache: dict[int, _ParentInfo] = {}
        for name in self.names:
            found = False
            for mod in mods:
                sym = tables[mod.key].get(name)
                if sym is None:
                    continue
                found = True
                frag = _fragment(mod, name, *sym, tables[mod.key], self.align, cache)
                off = frag.assign_next(arena)
                self.packed.append((mod.key, name, frag.size, off))
            if not found:
                self.missing.append(name)

    def describe(self) -> dict[str, Any]:
        return {"packed": [{"module": m, "function": f, "size": n, "offset": o}
                           for m, f, n, o in self.packed], "missing": list(self.missing)}


def hot_pack(names: Iterable[str] | str | os.PathLike[str], *,
             page_size: int = HUGE_PAGE, align: int = 16) -> HotPack:
    """A pass packing the named functions contiguously into one shared code arena.

    Args:
        names: function names (hottest first), or the path of a profile file.
        page_size: the hot arena's page size (2 MiB: huge-page backed).
        align: alignment of each function in the arena.
    """
    if isinstance(names, (str, os.PathLike)):
        names = read_profile(names)
    return HotPack(names, page_size=page_size, align=align)


class _ParentInfo:
    """Per code section, computed once: its bytes, retained-relocation places, entries."""

    def __init__(self, mod: ModulePlan, parent: Section,
                 table: dict[str, tuple[int, int, int]]) -> None:
        self.code = parent.data()
        self.places: set[int] = set()
        for s in mod.sections:
            if s.sh_type == SHT_RELA and not s.allocated and s.info == parent.index:
                raw = s.file_bytes()
                self.places.update(r[0] for r in
                                   _RELA.iter_unpack(raw[:len(raw) - len(raw) % 24]))
        self.entries = {a: n for n, (a, _sz, ndx) in table.items() if ndx == parent.index}


def _fragment(mod: ModulePlan, name: str, addr: int, size: int, shndx: int,
              table: dict[str, tuple[int, int, int]], align: int,
              cache: dict[int, _ParentInfo]) -> Section:
    parent = mod.sections[shndx]
    if not size:
        raise PlanError(f"function {name} has no size in .symtab: cannot move it",
                        module=mod.name, section=parent.name)
    if parent.mem_class is not MemoryClass.CODE or parent.parent is not None:
        raise PlanError(f"function {name} is not in a code section", module=mod.name,
                        section=parent.name)
    if not (parent.addr <= addr and addr + size <= parent.addr + parent.orig_size):
        raise PlanError(f"function {name} lies outside its section", module=mod.name,
                        section=parent.name)
    for s in mod.sections:
        if s.parent is parent and s.addr < addr + size and addr < s.addr + s.orig_size:
            raise PlanError(f"function {name} overlaps the fragment {s.name}",
                            module=mod.name, section=parent.name)
    info = cache.get(id(parent))
    if info is None:
        info = cache[id(parent)] = _ParentInfo(mod, parent, table)
    _check_outgoing(mod, name, addr, size, parent, info)
    frag = Section(mod, len(mod.sections), f"{parent.name}.hot.{name}", parent.sh_type,
                   parent.flags, addr, 0, size, max(align, 1), 0, 0, 0, MemoryClass.CODE,
                   parent=parent)
    mod.sections.append(frag)
    return frag


def _check_outgoing(mod: ModulePlan, name: str, addr: int, size: int, parent: Section,
                    info: _ParentInfo) -> None:
    """Refuse a function with a direct branch to another function's entry that carries
    no retained relocation (the hot copy would branch to the wrong place)."""
    places, entries = info.places, info.entries
    code = info.code[addr - parent.addr:addr - parent.addr + size]
    for i in range(len(code)):
        b = code[i]
        if b in (0xE8, 0xE9) and i + 5 <= len(code):
            disp_at, nxt, width = i + 1, i + 5, 4
        elif b == 0x0F and i + 6 <= len(code) and 0x80 <= code[i + 1] <= 0x8F:
            disp_at, nxt, width = i + 2, i + 6, 4
        elif (b == 0xEB or 0x70 <= b <= 0x7F) and i + 2 <= len(code):
            disp_at, nxt, width = i + 1, i + 2, 1
        else:
            continue
        fmt = "<i" if width == 4 else "<b"
        target = addr + nxt + struct.unpack_from(fmt, code, disp_at)[0]
        callee = entries.get(target)
        if callee is not None and callee != name and not addr <= target < addr + size \
                and addr + disp_at not in places:
            raise PlanError(f"function {name} branches to {callee} at offset {i:#x} "
                            "without a relocation (compile with -ffunction-sections to "
                            "move it)", module=mod.name, section=parent.name)
