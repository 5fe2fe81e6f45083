"""The scan-first plan: modules, sections, arenas and placements, before anything is mapped.

Plan layer (the last stage of the pipeline: … -> linker -> runtime -> plan). `scan`
(plan/scan.py) fills a `Plan` from the files alone; passes (plain Python callables taking
the plan) then edit it through the methods here — override a section's bytes, resize it,
create arenas and place sections in them, choose each module's materialization — and
`Plan.load()` (plan/materialize.py) validates, lays out, maps, repairs and relocates.

Every request is checked against the module's `Capability` when it is made *and* again
when the plan is normalized, so a request the module cannot honour fails with a
`PlanError` naming the module, the section and the reason before any memory is mapped.
Addresses in section metadata are the file's link-time addresses (``vaddr``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relink.errors import PlanError

if TYPE_CHECKING:
    from relink.elf import ElfFile
    from relink.elf.header import ElfHeader, ProgramHeader
    from relink.module import Module

__all__ = [
    "Arena", "Capability", "HUGE_PAGE", "Materialization", "MemoryClass", "ModulePlan",
    "PAGE", "Placement", "Plan", "Section", "Sharing",
]

PAGE = 4096
HUGE_PAGE = 2 << 20
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_TLS = 0x1, 0x2, 0x4, 0x400
SHT_NOBITS = 8


class MemoryClass(enum.Enum):
    """What an allocated section holds, which decides the protection of its arena.

    RELRO sections (inside PT_GNU_RELRO: .got, .dynamic, .init_array, .data.rel.ro…) are
    written by relocation and made read-only afterwards, as ld.so does.
    """

    CODE = "code"
    RODATA = "rodata"
    RELRO = "relro"
    DATA = "data"
    TLS = "tls"


class Capability(enum.IntEnum):
    """What a module allows a pass to do (ordered: each level includes the one below)."""

    OPAQUE = 0        # no usable section table: whole-image mapping only, no section edits
    SECTION_DATA = 1  # sections readable and overridable in place (sizes kept)
    REORDERABLE = 2   # x86_64 ET_DYN linked with --emit-relocs: sections can move


class Materialization(enum.Enum):
    """How a module becomes memory.

    WHOLE_IMAGE: the normal PT_LOAD mapping; section overrides are written back at their
        original addresses (sizes must match).
    SECTION_REGIONS: every allocated section is copied into arenas and the module is
        repaired for its new addresses (needs `Capability.REORDERABLE`).
    """

    WHOLE_IMAGE = "whole-image"
    SECTION_REGIONS = "section-regions"


class Sharing(enum.Enum):
    """PRIVATE arenas hold one module's sections; SHARED ones accept any module's."""

    PRIVATE = "private"
    SHARED = "shared"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a section goes: `offset` bytes into `arena`."""

    arena: Arena
    offset: int


@dataclass(eq=False)
class Arena:
    """A run of memory of one class, page size and sharing, laid out by the plan.

    Attributes:
        name: shown by ``relink plan`` (``code.shared.2M``, ``data.libfoo.so``…).
        owner: the module key of a PRIVATE arena (None while unused / for SHARED).
        placements: (section, offset) in placement order.
        address: runtime address once materialized.
        huge: what the kernel granted for this arena once materialized (see hugepages).
    """

    index: int
    name: str
    mem_class: MemoryClass
    page_size: int = PAGE
    sharing: Sharing = Sharing.PRIVATE
    owner: str | None = None
    placements: list[tuple[Section, int]] = field(default_factory=list)
    address: int | None = None
    huge: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Bytes used (end of the last placed section), not rounded to pages."""
        return max((off + s.size for s, off in self.placements), default=0)

    def next_offset(self, align: int) -> int:
        a = max(align, 1)
        return (self.size + a - 1) // a * a

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "class": self.mem_class.value,
                "page_size": self.page_size, "sharing": self.sharing.value,
                "size": self.size, "address": self.address,
                "sections": [{"module": s.module.key, "section": s.name, "offset": off,
                              "size": s.size} for s, off in self.placements],
                **({"huge": dict(self.huge)} if self.huge else {})}


@dataclass(eq=False)
class Section:
    """One section of one module: metadata from the file plus the plan's edits.

    ``size`` is the current size (after `resize`); ``orig_size`` the file's. Bytes are the
    file's until a pass writes them (`set_data`); `data()` always returns the current
    bytes. Only allocated sections (SHF_ALLOC) have a `mem_class` and can be placed.
    """

    module: ModulePlan
    index: int
    name: str
    sh_type: int
    flags: int
    addr: int
    offset: int
    orig_size: int
    align: int
    entsize: int
    link: int
    info: int
    mem_class: MemoryClass | None
    size: int = -1
    placement: Placement | None = None
    _data: bytearray | None = None
    parent: Section | None = None  # for function fragments split out of a code section

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = self.orig_size

    @property
    def key(self) -> str:
        return f"{self.module.key}:{self.name or '#' + str(self.index)}"

    @property
    def allocated(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    @property
    def nobits(self) -> bool:
        return self.sh_type == SHT_NOBITS

    @property
    def overridden(self) -> bool:
        return self._data is not None

    def file_bytes(self) -> bytes:
        """The section's bytes in the file (zeros for SHT_NOBITS)."""
        if self.nobits:
            return bytes(self.orig_size)
        if self.parent is not None:
            start = self.addr - self.parent.addr
            return self.parent.data()[start:start + self.orig_size]
        return bytes(self.module.elf.section_data(self.module.elf.sections[self.index]))

    def data(self) -> bytes:
        """The current bytes: the override if one was set, else the file's (resized)."""
        if self._data is not None:
            return bytes(self._data)
        raw = self.file_bytes()
        if self.size != len(raw):
            raw = raw[:self.size] + bytes(max(0, self.size - len(raw)))
        return raw

    def set_data(self, data: bytes | bytearray | memoryview) -> None:
        """Override the section's bytes (same length as the current size; resize first)."""
        self.module.require(Capability.SECTION_DATA, "override section bytes", self)
        if not self.allocated:
            raise PlanError("only allocated (SHF_ALLOC) sections are mapped; overriding "
                            "this one would have no effect", module=self.module.name,
                            section=self.name)
        buf = bytearray(data)
        if len(buf) != self.size:
            raise PlanError(f"override is {len(buf)} bytes but the section is {self.size} "
                            "(call resize() first; resizing needs section regions)",
                            module=self.module.name, section=self.name)
        self._data = buf

    def resize(self, size: int) -> None:
        """Change the section's size (forces section-region materialization).

        Growing pads with zeros; shrinking truncates. Code and tables that refer past the
        new end are the pass's responsibility.
        """
        if size < 0:
            raise PlanError(f"negative size {size}", module=self.module.name,
                            section=self.name)
        self.module.require(Capability.REORDERABLE, "resize sections", self)
        if self.mem_class is MemoryClass.TLS:
            raise PlanError("TLS sections cannot be resized (the PT_TLS block layout is "
                            "fixed by the code's offsets)", module=self.module.name,
                            section=self.name)
        current = self.data()
        self.size = size
        self._data = bytearray(current[:size] + bytes(max(0, size - len(current))))
        self.module.materialization = Materialization.SECTION_REGIONS
        if self.placement is not None and self.placement.arena.placements:
            self._check_overlap(self.placement.arena, self.placement.offset)

    # -- placement --------------------------------------------------------------------

    def assign(self, arena: Arena, offset: int) -> None:
        """Place this section at `offset` in `arena` (forces section regions).

        Raises PlanError when the module cannot move sections, the memory class differs,
        the arena is another module's private arena, the offset breaks the section's
        alignment, or the range overlaps a section already placed there.
        """
        self.module.require(Capability.REORDERABLE, "assign sections to arenas", self)
        if self.mem_class is None:
            raise PlanError("only allocated sections can be placed", module=self.module.name,
                            section=self.name)
        if arena.mem_class is not self.mem_class:
            raise PlanError(f"a {self.mem_class.value} section cannot go into the "
                            f"{arena.mem_class.value} arena {arena.name}",
                            module=self.module.name, section=self.name)
        if arena.sharing is Sharing.PRIVATE and arena.owner not in (None, self.module.key):
            raise PlanError(f"arena {arena.name} is private to {arena.owner}",
                            module=self.module.name, section=self.name)
        if offset < 0 or offset % max(self.align, 1):
            raise PlanError(f"offset {offset:#x} breaks the section's alignment "
                            f"{self.align}", module=self.module.name, section=self.name)
        self.clear_placement()
        self._check_overlap(arena, offset)
        if arena.sharing is Sharing.PRIVATE:
            arena.owner = self.module.key
        arena.placements.append((self, offset))
        self.placement = Placement(arena, offset)
        self.module.materialization = Materialization.SECTION_REGIONS

    def assign_next(self, arena: Arena) -> int:
        """Place this section at the next aligned offset of `arena`; returns the offset."""
        self.clear_placement()
        offset = arena.next_offset(self.align)
        self.assign(arena, offset)
        return offset

    def clear_placement(self) -> None:
        if self.placement is not None:
            arena = self.placement.arena
            arena.placements = [(s, o) for s, o in arena.placements if s is not self]
            self.placement = None

    def _check_overlap(self, arena: Arena, offset: int) -> None:
        end = offset + self.size
        for other, o in arena.placements:
            if other is not self and other.size and self.size and o < end and \
                    offset < o + other.size:
                raise PlanError(f"[{offset:#x}, {end:#x}) overlaps {other.key} in arena "
                                f"{arena.name}", module=self.module.name, section=self.name)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index, "name": self.name, "type": self.sh_type,
            "flags": self.flags, "addr": self.addr, "size": self.size,
            "align": self.align,
            "class": self.mem_class.value if self.mem_class else None,
        }
        if self.size != self.orig_size:
            out["orig_size"] = self.orig_size
        if self.overridden:
            out["overridden"] = True
        if self.placement is not None:
            out["arena"] = self.placement.arena.index
            out["offset"] = self.placement.offset
        return out


@dataclass(eq=False)
class ModulePlan:
    """One module of the dependency graph, as scanned.

    Attributes:
        key: unique name in the plan (the file name; ``name#2`` on a clash).
        deps: for each DT_NEEDED in order, the providing module's key or ``host:<name>``
            (``missing:<name>`` when scanning with ``missing_ok``).
        capability / capability_reason: what passes may do, and why not more.
        materialization: the requested mode, or None for the default (section regions
            iff reorderable and something was placed/resized, else whole image).
    """

    key: str
    elf: ElfFile
    needed: list[str]
    soname: str | None
    rpath: str | None
    runpath: str | None
    interp: str | None
    capability: Capability
    capability_reason: str
    sections: list[Section] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    materialization: Materialization | None = None
    parent: str | None = None

    @property
    def name(self) -> str:
        return self.elf.source.name

    @property
    def path(self) -> str | None:
        return self.elf.source.path

    @property
    def header(self) -> ElfHeader:
        return self.elf.header

    @property
    def phdrs(self) -> list[ProgramHeader]:
        return self.elf.phdrs

    def require(self, level: Capability, what: str, section: Section | None = None) -> None:
        if self.capability < level:
            raise PlanError(f"cannot {what}: module is {self.capability.name.lower()} "
                            f"({self.capability_reason}); needs "
                            f"{level.name.lower()}", module=self.name,
                            section=section.name if section else None)

    def section(self, name: str) -> Section:
        """The section called `name` (the first one if several share it)."""
        for s in self.sections:
            if s.name == name:
                return s
        raise PlanError(f"no section named {name!r}"
                        + ("" if self.sections else " (module has no usable section table)"),
                        module=self.name)

    def find(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def alloc_sections(self) -> list[Section]:
        return [s for s in self.sections if s.mem_class is not None]

    def set_materialization(self, mode: Materialization) -> None:
        """Request a materialization mode. A request the capability cannot honour is kept
        and fails when the plan is validated (before anything is mapped)."""
        self.materialization = mode

    @property
    def effective_materialization(self) -> Materialization:
        if self.materialization is not None:
            return self.materialization
        if self.capability is Capability.REORDERABLE:
            return Materialization.SECTION_REGIONS
        return Materialization.WHOLE_IMAGE

    def describe(self) -> dict[str, Any]:
        eh = self.header
        return {
            "key": self.key, "name": self.name, "path": self.path,
            "type": eh.type_name, "machine": eh.machine_name, "class": f"ELF{eh.elf_class}",
            "soname": self.soname, "needed": list(self.needed), "deps": list(self.deps),
            "rpath": self.rpath, "runpath": self.runpath, "interp": self.interp,
            "capability": self.capability.name.lower(),
            "capability_reason": self.capability_reason,
            "materialization": self.effective_materialization.value,
            "sections": [s.describe() for s in self.sections if s.index],
        }


Pass = Callable[["Plan"], Any]


@dataclass(eq=False)
class Plan:
    """The whole dependency graph of one root, scanned; see the module docstring.

    Attributes:
        modules: relink-loaded modules in breadth-first order, root first.
        host: DT_NEEDED names the host process serves (glibc family, already loaded).
        arenas: every arena created so far (by passes or by normalization).
        options: the scan options (host policy, resolver) reused by `load`.
    """

    modules: list[ModulePlan]
    host: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    arenas: list[Arena] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    closed: bool = False

    @property
    def root(self) -> ModulePlan:
        return self.modules[0]

    def module(self, key: str) -> ModulePlan:
        """The module with key, file name or soname `key`."""
        for m in self.modules:
            if key in (m.key, m.name, m.soname, m.path):
                return m
        raise PlanError(f"no module {key!r} in the plan (modules: "
                        f"{', '.join(m.key for m in self.modules)})")

    def __iter__(self) -> Iterator[ModulePlan]:
        return iter(self.modules)

    def sections(self) -> Iterator[Section]:
        for m in self.modules:
            yield from m.sections

    def modules_with(self, level: Capability) -> list[ModulePlan]:
        """Modules whose capability is at least `level` (what a pass may touch)."""
        return [m for m in self.modules if m.capability >= level]

    def create_arena(self, mem_class: MemoryClass, *, page_size: int = PAGE,
                     sharing: Sharing = Sharing.PRIVATE, name: str | None = None) -> Arena:
        """A new, empty arena. Page size must be a power of two >= 4 KiB (2 MiB arenas
        are aligned to 2 MiB and advised/mapped as huge pages)."""
        if page_size < PAGE or page_size & (page_size - 1):
            raise PlanError(f"page size {page_size:#x} is not a power of two >= 4 KiB")
        if mem_class is MemoryClass.TLS:
            raise PlanError("TLS sections keep their PT_TLS block; they are placed by the "
                            "plan itself, not into user arenas")
        index = len(self.arenas)
        label = name or (f"{mem_class.value}.{sharing.value}."
                         f"{'2M' if page_size == HUGE_PAGE else str(page_size // 1024) + 'K'}"
                         f".{index}")
        arena = Arena(index, label, mem_class, page_size, sharing)
        self.arenas.append(arena)
        return arena

    def run(self, *passes: Pass) -> Plan:
        """Run passes (callables taking the plan) in order; returns the plan."""
        for p in passes:
            p(self)
        return self

    def describe(self) -> dict[str, Any]:
        return {"root": self.root.key, "modules": [m.describe() for m in self.modules],
                "host": list(self.host), "missing": list(self.missing),
                "arenas": [a.describe() for a in self.arenas if a.placements]}

    def load(self, **kwargs: Any) -> Module:
        """Validate, lay out, map, repair and relocate; returns the root `Module`.

        Keyword arguments are those of `relink.plan.materialize.load_plan`.
        """
        from relink.plan.materialize import load_plan

        return load_plan(self, **kwargs)

    def close(self) -> None:
        """Close the files the scan opened (a loaded plan's modules keep their own)."""
        if not self.closed:
            self.closed = True
            for m in self.modules:
                m.elf.close()

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_placed(arenas: Iterable[Arena]) -> Iterator[tuple[Arena, Section, int]]:
    for a in arenas:
        for s, off in a.placements:
            yield a, s, off
