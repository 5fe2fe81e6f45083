"""Section layout for a link unit: permission groups, merged constants, GOT and PLT.

Layout stage of `relink.object` (parse -> link -> **layout** -> relocate -> module).
Every allocated input section goes into a `SectionGroup` — a run of pages with one
protection while relocating (`init_prot`) and one after initializers ran
(`final_prot`) — following Relink's ``SectionGroups`` (relink-study §2.3 step 4):

=========  ==========  ===========  ===========================================
group      init_prot   final_prot   default members
=========  ==========  ===========  ===========================================
text       R-X         R-X          SHF_EXECINSTR sections, synthesized PLT stubs
rodata     R--         R--          read-only data, merged constants and strings
relro      RW-         R--          .data.rel.ro, .init/.fini_array, .ctors/.dtors,
                                    the synthesized GOT ("read-only after init")
data       RW-         RW-          writable data, .bss, COMMON symbols
init_text  R-X         (released)   .init.text* (scratch: unmapped after init)
init_data  RW-         (released)   .init.data*, .init.rodata*
=========  ==========  ===========  ===========================================

Groups are page-aligned and never writable and executable at once (a group asking for
W+X is refused); the memory is RW while section bytes are copied and relocated. A
``layout`` hook may move any section to another group (built-in or user-defined) or skip
it. Mergeable sections (SHF_MERGE) with the same flags and entry size are pooled
and deduplicated (strings by content, constants by entry), with an offset map so
relocations land on the kept copy. GOT slots and PLT stubs are counted here from the
relocation recipes (`needs`), one slot per target symbol, one stub per call target that
may be out of direct-branch range (every target outside the unit, every IFUNC).
Offsets computed here are relative to the start of the image; the loader adds the base.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relink.errors import UnsupportedError
from relink.memory import PROT_EXEC, PROT_READ, PROT_WRITE
from relink.object.link import STT_GNU_IFUNC, LinkUnit
from relink.object.parse import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_MERGE,
    SHF_STRINGS,
    SHF_TLS,
    SHF_WRITE,
    SHN_UNDEF,
    SHT_NOBITS,
)

__all__ = ["DEFAULT_GROUPS", "Layout", "MergeMap", "Placed", "SectionGroup", "SectionInfo",
           "plan_layout"]

R, W, X = PROT_READ, PROT_WRITE, PROT_EXEC


@dataclass(frozen=True, slots=True)
class SectionGroup:
    """A permission group: page-aligned memory with one protection before and after init.

    Attributes:
        lifetime: ``"core"`` (lives as long as the module) or ``"init"`` (released
            after the initializers ran; its symbols are not exported).
    """

    name: str
    init_prot: int
    final_prot: int
    order: int
    lifetime: str = "core"

    def __post_init__(self) -> None:
        for prot in (self.init_prot, self.final_prot):
            if prot & W and prot & X:
                raise UnsupportedError(f"section group '{self.name}' asks for writable and "
                                       "executable memory, which relink never maps")
        if self.lifetime not in ("core", "init"):
            raise ValueError(f"lifetime must be 'core' or 'init', not {self.lifetime!r}")


DEFAULT_GROUPS: dict[str, SectionGroup] = {g.name: g for g in (
    SectionGroup("text", R | X, R | X, 0),
    SectionGroup("rodata", R, R, 1),
    SectionGroup("relro", R | W, R, 2),
    SectionGroup("data", R | W, R | W, 3),
    SectionGroup("init_text", R | X, R | X, 10, "init"),
    SectionGroup("init_data", R | W, R | W, 11, "init"),
)}

_RELRO_PREFIXES = (".data.rel.ro", ".init_array", ".fini_array", ".preinit_array", ".ctors",
                   ".dtors")


@dataclass(frozen=True, slots=True)
class SectionInfo:
    """What a ``layout`` hook sees about one allocated input section."""

    object: str
    index: int
    name: str
    size: int
    flags: int
    align: int
    default_group: str


@dataclass(eq=False, slots=True)
class Placed:
    """One output piece of the image: an input section or a synthesized one."""

    name: str
    group: str
    size: int
    align: int
    nobits: bool
    obj: int = -1
    index: int = -1
    offset: int = 0          # from the image start
    data: bytes | None = None  # synthesized contents (merged pools)


class MergeMap:
    """Maps offsets inside one input SHF_MERGE section to offsets in its pool."""

    __slots__ = ("starts", "ends", "outs", "pool")

    def __init__(self, pool: Placed) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.outs: list[int] = []
        self.pool = pool

    def map(self, off: int) -> int | None:
        """Pool-relative offset of input offset `off`, or None when it is in no piece."""
        j = bisect_right(self.starts, off) - 1
        if j < 0 or off > self.ends[j]:
            return None
        return self.outs[j] + off - self.starts[j]


@dataclass(eq=False)
class Layout:
    """Where everything of a link unit goes, relative to the image start.

    Attributes:
        placed: every output piece, in address order.
        sections: (object index, section index) -> its Placed piece.
        merged: (object index, section index) -> MergeMap, for SHF_MERGE inputs.
        got: slot key -> offset of the GOT slot; plt: target key -> offset of its stub.
        segments: (offset, size, group) page runs, in address order.
        size: the image size (page multiple).
    """

    groups: dict[str, SectionGroup]
    placed: list[Placed] = field(default_factory=list)
    sections: dict[tuple[int, int], Placed] = field(default_factory=dict)
    merged: dict[tuple[int, int], MergeMap] = field(default_factory=dict)
    got: dict[Any, int] = field(default_factory=dict)
    plt: dict[Any, int] = field(default_factory=dict)
    targets: dict[Any, tuple[int, int]] = field(default_factory=dict)
    ifuncs: set[Any] = field(default_factory=set)
    got_piece: Placed | None = None
    plt_piece: Placed | None = None
    commons: dict[str, Placed] = field(default_factory=dict)
    segments: list[tuple[int, int, str]] = field(default_factory=list)
    size: int = 0
    skipped: list[tuple[int, int]] = field(default_factory=list)
    tls: list[Placed] = field(default_factory=list)  # offsets are within the TLS block
    tls_size: int = 0
    tls_filesz: int = 0
    tls_align: int = 1
    eh_frame: Placed | None = None  # first piece of the unit's .eh_frame chain
    linker: dict[str, int] = field(default_factory=dict)  # linker-defined symbol offsets


def _default_group(name: str, flags: int) -> str:
    if name.startswith(".init.text") and flags & SHF_EXECINSTR:
        return "init_text"
    if name.startswith((".init.data", ".init.rodata")):
        return "init_data"
    if flags & SHF_EXECINSTR:
        return "text"
    if flags & SHF_WRITE:
        return "relro" if name.startswith(_RELRO_PREFIXES) else "data"
    return "rodata"


def symbol_key(unit: LinkUnit, oi: int, si: int) -> Any:
    """The identity of what symbol `si` of object `oi` refers to (for GOT/PLT sharing)."""
    obj = unit.objects[oi]
    if obj.sym_infos[si] >> 4 != 0 and obj.sym_names[si]:
        return obj.sym_names[si]
    return (oi, si)


def plan_layout(unit: LinkUnit, arch: Any, *, groups: Mapping[str, SectionGroup] | None,
                hook: Callable[[SectionInfo], str | None] | None, page: int,
                merge: bool = True) -> Layout:
    """Assign every kept allocated section (and GOT, PLT, COMMON, pools) an offset."""
    all_groups = dict(DEFAULT_GROUPS)
    all_groups.update(groups or {})
    lay = Layout(all_groups)
    pieces: dict[str, list[Placed]] = {g: [] for g in all_groups}
    pools: dict[tuple[str, int, int, str], list[tuple[int, int]]] = {}
    tls: list[Placed] = []
    eh_frames: list[Placed] = []
    for oi, obj in enumerate(unit.objects):
        dropped = unit.discarded[oi]
        for sh in obj.sections:
            if not sh.sh_flags & SHF_ALLOC or sh.index in dropped:
                continue
            if sh.sh_flags & SHF_TLS:
                tls.append(Placed(sh.name, "tls", sh.sh_size, max(sh.sh_addralign, 1),
                                  sh.sh_type == SHT_NOBITS, oi, sh.index))
                continue
            group = _default_group(sh.name, sh.sh_flags)
            if hook is not None:
                choice = hook(SectionInfo(obj.label, sh.index, sh.name, sh.sh_size,
                                          sh.sh_flags, sh.sh_addralign, group))
                if choice == "skip":
                    lay.skipped.append((oi, sh.index))
                    continue
                if choice is not None:
                    if choice not in all_groups:
                        raise ValueError(f"layout hook chose unknown group {choice!r} "
                                         f"for {sh.name}")
                    group = choice
            if (merge and sh.sh_flags & SHF_MERGE and sh.sh_entsize
                    and sh.sh_type != SHT_NOBITS
                    and sh.sh_size % sh.sh_entsize == 0):
                # Pooled across names, as ld pools every input of one output section
                # (-fdata-sections names them .rodata.<fn>.str1.1).
                kind = "str" if sh.sh_flags & SHF_STRINGS else "cst"
                key = (f".rodata.{kind}{sh.sh_entsize}", sh.sh_flags, sh.sh_entsize, group)
                pools.setdefault(key, []).append((oi, sh.index))
                continue
            p = Placed(sh.name, group, sh.sh_size, max(sh.sh_addralign, 1),
                       sh.sh_type == SHT_NOBITS, oi, sh.index)
            lay.sections[(oi, sh.index)] = p
            if sh.name == ".eh_frame" and sh.sh_size % p.align == 0:
                eh_frames.append(p)  # kept together: one CIE/FDE chain for the unwinder
                continue
            pieces[group].append(p)
    for (name, flags, entsize, group), members in pools.items():
        pieces[group].append(_merge_pool(unit, lay, name, flags, entsize, group, members))
    for name, (size, align) in unit.commons.items():
        p = Placed(f"COMMON:{name}", "data", size, max(align, 1), True)
        pieces["data"].append(p)
        lay.commons[name] = p
    if eh_frames:
        group = eh_frames[0].group
        pieces[group] += eh_frames
        pieces[group].append(Placed(".eh_frame.end", group, 4, 4, False, data=bytes(4)))
        lay.eh_frame = eh_frames[0]
    _plan_tls(lay, tls)
    _plan_got_plt(unit, arch, lay, pieces)
    dso = None
    if "__dso_handle" in unit.linker_symbols:
        dso = Placed("__dso_handle", "data", 8, 8, True)
        pieces["data"].append(dso)
    bounds = set(unit.linker_symbols.values()) - {""}
    for items in pieces.values():  # ld keeps same-named sections contiguous for __start_
        for sec in bounds:
            same = [p for p in items if p.name == sec]
            if same:
                at = items.index(same[0])
                rest = [p for p in items if p.name != sec]
                items[:] = rest[:at] + same + rest[at:]
    offset = 0
    for gname in sorted(pieces, key=lambda g: (all_groups[g].lifetime == "init",
                                               all_groups[g].order, g)):
        items = pieces[gname]
        if not items:
            continue
        start = offset = (offset + page - 1) & ~(page - 1)
        for p in items:
            offset = (offset + p.align - 1) & ~(p.align - 1)
            p.offset = offset
            offset += p.size
            lay.placed.append(p)
        end = max((offset + page - 1) & ~(page - 1), start + page)
        lay.segments.append((start, end - start, gname))
        offset = end
    lay.size = max(offset, page)
    if dso is not None:
        lay.linker["__dso_handle"] = dso.offset
    for name, sec in unit.linker_symbols.items():
        same = [p for p in lay.placed if p.name == sec]
        if same:
            lay.linker[name] = same[0].offset if name.startswith("__start_") else \
                same[-1].offset + same[-1].size
    return lay


def _plan_tls(lay: Layout, tls: list[Placed]) -> None:
    """One TLS block: initialized sections (.tdata) first, then zeroed ones (.tbss)."""
    off = 0
    for p in sorted(tls, key=lambda p: p.nobits):
        off = (off + p.align - 1) & ~(p.align - 1)
        p.offset = off
        off += p.size
        if not p.nobits:
            lay.tls_filesz = off
        lay.tls_align = max(lay.tls_align, p.align)
        lay.sections[(p.obj, p.index)] = p
        lay.tls.append(p)
    lay.tls_size = off


def _merge_pool(unit: LinkUnit, lay: Layout, name: str, flags: int, entsize: int,
                group: str, members: list[tuple[int, int]]) -> Placed:
    align = max(max(unit.objects[oi].sections[si].sh_addralign, 1) for oi, si in members)
    pool = Placed(name, group, 0, align, False)
    out = bytearray()
    seen: dict[bytes, int] = {}
    strings = bool(flags & SHF_STRINGS)
    term = bytes(entsize)
    for oi, si in members:
        obj = unit.objects[oi]
        piece_align = max(obj.sections[si].sh_addralign, 1)
        data = obj.data(si)
        mm = MergeMap(pool)
        pos = 0
        while pos < len(data):
            if strings:
                end = pos
                while end + entsize <= len(data) and data[end:end + entsize] != term:
                    end += entsize
                end = min(end + entsize, len(data))
            else:
                end = pos + entsize
            chunk = bytes(data[pos:end])
            at = seen.get(chunk)
            if at is None:
                pad = (-len(out)) % piece_align if strings and piece_align > entsize else 0
                out += bytes(pad)
                at = seen[chunk] = len(out)
                out += chunk
            mm.starts.append(pos)
            mm.ends.append(end)
            mm.outs.append(at)
            pos = end
        lay.merged[(oi, si)] = mm
    pool.data = bytes(out)
    pool.size = len(out)
    return pool


def _plan_got_plt(unit: LinkUnit, arch: Any, lay: Layout,
                  pieces: dict[str, list[Placed]]) -> None:
    recipes = arch.recipes
    got_keys: dict[Any, int] = {}  # key -> number of word slots
    plt_keys: dict[Any, int] = {}
    total = sum(p.size for items in pieces.values() for p in items)
    far_unit = total > arch.branch_range // 2
    for oi, obj in enumerate(unit.objects):
        dropped = unit.discarded[oi]
        for target, rsecs in obj.relocs.items():
            if target in dropped or (oi, target) not in lay.sections:
                continue
            for rs in rsecs:
                if rs.index in dropped:
                    continue
                for t, s in zip(rs.types, rs.syms):
                    recipe = recipes.get(t)
                    if recipe is None or not s:
                        continue
                    key = symbol_key(unit, oi, s)
                    lay.targets.setdefault(key, (oi, s))
                    if _is_ifunc(unit, oi, s):
                        # Every reference to a local IFUNC goes through its stub (the
                        # canonical address); its slot gets the resolver's answer.
                        lay.ifuncs.add(key)
                        plt_keys.setdefault(key, len(plt_keys))
                    if recipe.needs == "got":
                        _slots(got_keys, key, 1)
                    elif recipe.needs == "plt" and (far_unit or _is_outside(unit, oi, s)):
                        plt_keys.setdefault(key, len(plt_keys))
                    elif recipe.formula in _TLS_SLOTS:
                        kind, n = _TLS_SLOTS[recipe.formula]
                        _slots(got_keys, (kind,) if kind == "ld" else (kind, key), n)
    word = arch.word_size
    if got_keys or plt_keys or arch.always_got(unit):
        n = sum(got_keys.values()) + len(plt_keys)
        lay.got_piece = Placed(".got", "relro", max(n, 1) * word, 16, True)
        pieces["relro"].insert(0, lay.got_piece)
        at = 0
        for key, count in got_keys.items():
            lay.got[key] = at
            at += count * word
        for key in plt_keys:
            lay.got[("plt", key)] = at
            at += word
    if plt_keys:
        lay.plt_piece = Placed(".plt", "text", len(plt_keys) * arch.stub_size, 16, True)
        pieces["text"].append(lay.plt_piece)
        for key, i in plt_keys.items():
            lay.plt[key] = i * arch.stub_size


_TLS_SLOTS = {"tls-gd": ("gd", 2), "tls-ld": ("ld", 2), "tls-ie": ("ie", 1),
              "tls-desc": ("desc", 2)}


def _slots(keys: dict[Any, int], key: Any, count: int) -> None:
    keys.setdefault(key, count)


def _is_ifunc(unit: LinkUnit, oi: int, si: int) -> bool:
    obj = unit.objects[oi]
    if obj.sym_shndx[si] != SHN_UNDEF:
        return obj.sym_infos[si] & 0xF == STT_GNU_IFUNC
    d = unit.defs.get(obj.sym_names[si])
    if d is None:
        return False
    return unit.objects[d.obj].sym_infos[d.sym] & 0xF == STT_GNU_IFUNC


def _is_outside(unit: LinkUnit, oi: int, si: int) -> bool:
    """True when symbol `si` of object `oi` is not defined inside the unit."""
    obj = unit.objects[oi]
    shndx = obj.sym_shndx[si]
    if obj.sym_infos[si] >> 4 == 0:
        return shndx == SHN_UNDEF
    name = obj.sym_names[si]
    return name not in unit.defs and name not in unit.commons
