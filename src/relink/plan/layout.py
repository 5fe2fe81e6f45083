"""Normalization and layout: validate every request, place what passes left unplaced,
and lay all arenas out in one address range.

Plan layer, between the passes and materialization. `normalize` runs before anything is
mapped; every refusal is a `PlanError` naming the module and the reason (the capability
check of Relink's `normalize()`). Default packing follows Relink's "shared huge pages"
policy: code of every section-region module goes into one shared, 2 MiB-aligned arena
(so hot code of several libraries can share huge pages), read-only data into one shared
arena, RELRO / writable data / TLS into private per-module arenas.

The layout space: arena offsets are relative to one reservation whose start ``A`` is
aligned to the largest arena page size. A section's new link-time address is
``arena offset + placement offset``; at runtime every section-region module has load
bias ``A``, so repaired metadata stays position-independent and the ordinary relocation
loop adds ``A`` exactly as it adds a load bias. The first page is never used, so no
section gets address 0 (0 means "absent" for DT_INIT and friends).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relink.errors import PlanError
from relink.plan.model import (
    HUGE_PAGE,
    PAGE,
    Arena,
    Capability,
    Materialization,
    MemoryClass,
    ModulePlan,
    Placement,
    Plan,
    Section,
    Sharing,
)

__all__ = ["Layout", "PackingPolicy", "normalize"]

PT_TLS = 7


@dataclass(frozen=True)
class PackingPolicy:
    """Where unplaced sections of section-region modules go.

    Attributes:
        code_page_size: page size of the shared code arena (2 MiB = huge-page backed).
        rodata_page_size: page size of the shared read-only data arena.
        share_code / share_rodata: one arena for all modules (True) or one per module.
    """

    code_page_size: int = HUGE_PAGE
    rodata_page_size: int = PAGE
    share_code: bool = True
    share_rodata: bool = True

    @classmethod
    def shared_huge_pages(cls) -> PackingPolicy:
        return cls()

    @classmethod
    def base_pages(cls) -> PackingPolicy:
        return cls(code_page_size=PAGE)


@dataclass
class Layout:
    """The result of `normalize`: arena offsets in the reservation and section addresses.

    Attributes:
        arena_offsets: arena index -> offset of its first byte from the reservation start.
        size: bytes to reserve (from the reservation start; includes the guard page).
        align: required alignment of the reservation start.
        new_addr: id(section) -> new link-time address (= offset from the start).
        regions: the section-region modules, whole: the whole-image ones.
    """

    arena_offsets: dict[int, int] = field(default_factory=dict)
    arena_spans: dict[int, int] = field(default_factory=dict)
    size: int = 0
    align: int = PAGE
    new_addr: dict[int, int] = field(default_factory=dict)
    regions: list[ModulePlan] = field(default_factory=list)
    whole: list[ModulePlan] = field(default_factory=list)


def normalize(plan: Plan, policy: PackingPolicy | None = None) -> Layout:
    """Validate every module's requests, place unplaced sections, lay arenas out."""
    policy = policy or PackingPolicy()
    layout = Layout()
    for mod in plan.modules:
        _validate(mod)
        if mod.effective_materialization is Materialization.SECTION_REGIONS:
            layout.regions.append(mod)
        else:
            layout.whole.append(mod)
    shared: dict[MemoryClass, Arena] = {}
    for mod in layout.regions:
        _place_tls(plan, mod)
        for s in mod.alloc_sections():
            if s.placement is None and s.mem_class is not None:
                s.assign_next(_default_arena(plan, mod, s.mem_class, policy, shared))
    _lay_out(plan, layout)
    return layout


def _validate(mod: ModulePlan) -> None:
    mode = mod.effective_materialization
    if mode is Materialization.SECTION_REGIONS:
        if mod.capability < Capability.REORDERABLE:
            raise PlanError("modules without section-reorder repair support cannot use "
                            f"section regions ({mod.capability_reason})", module=mod.name)
        return
    if mod.capability is Capability.OPAQUE:
        return
    for s in mod.sections:
        if s.placement is not None:
            raise PlanError("modules without section regions cannot assign sections to "
                            "arenas (whole-image materialization was requested)",
                            module=mod.name, section=s.name)
        if s.size != s.orig_size:
            raise PlanError(f"resized to {s.size} bytes (from {s.orig_size}): whole-image "
                            "materialization keeps every section's size",
                            module=mod.name, section=s.name)


def _default_arena(plan: Plan, mod: ModulePlan, mem: MemoryClass, policy: PackingPolicy,
                   shared: dict[MemoryClass, Arena]) -> Arena:
    if mem is MemoryClass.CODE and policy.share_code or \
            mem is MemoryClass.RODATA and policy.share_rodata:
        arena = shared.get(mem)
        if arena is None:
            page = policy.code_page_size if mem is MemoryClass.CODE else policy.rodata_page_size
            arena = plan.create_arena(mem, page_size=page, sharing=Sharing.SHARED,
                                      name=f"{mem.value}.shared")
            shared[mem] = arena
        return arena
    page = policy.code_page_size if mem is MemoryClass.CODE else PAGE
    for a in plan.arenas:
        if a.owner == mod.key and a.mem_class is mem and a.name.endswith(".default"):
            return a
    arena = plan.create_arena(mem, page_size=page, name=f"{mem.value}.{mod.key}.default")
    arena.owner = mod.key
    return arena


def _place_tls(plan: Plan, mod: ModulePlan) -> None:
    """Place the TLS sections as one block in a private TLS arena, offsets preserved.

    TLS symbol values and TPOFF/DTPOFF fields are offsets into the PT_TLS block, so the
    block must move as a whole and keep its alignment.
    """
    tls = [s for s in mod.alloc_sections() if s.mem_class is MemoryClass.TLS]
    if not tls:
        return
    ph = next((p for p in mod.phdrs if p.p_type == PT_TLS), None)
    if ph is None:
        raise PlanError("TLS sections without a PT_TLS segment", module=mod.name)
    align = max(ph.p_align, 1)
    arena = next((a for a in plan.arenas if a.name == f"tls.{mod.key}"), None)
    if arena is None:
        arena = Arena(len(plan.arenas), f"tls.{mod.key}", MemoryClass.TLS, PAGE,
                      Sharing.PRIVATE, owner=mod.key)
        plan.arenas.append(arena)
    start = (ph.p_vaddr % align) or align
    for s in tls:
        s.clear_placement()
        if not ph.p_vaddr <= s.addr <= ph.p_vaddr + ph.p_memsz:
            raise PlanError("TLS section outside the PT_TLS block", module=mod.name,
                            section=s.name)
        off = start + s.addr - ph.p_vaddr
        arena.placements.append((s, off))
        s.placement = Placement(arena, off)


def _lay_out(plan: Plan, layout: Layout) -> None:
    cursor = PAGE  # the guard page: no section at address 0
    for arena in plan.arenas:
        if not arena.placements:
            continue
        if arena.sharing is Sharing.PRIVATE and arena.owner is not None and \
                all(m.key != arena.owner for m in layout.regions):
            raise PlanError(f"arena {arena.name} holds sections of a whole-image module")
        align = max([arena.page_size] + [s.align for s, _ in arena.placements])
        cursor = (cursor + align - 1) // align * align
        span = (arena.size + arena.page_size - 1) // arena.page_size * arena.page_size
        layout.arena_offsets[arena.index] = cursor
        layout.arena_spans[arena.index] = max(span, arena.page_size)
        layout.align = max(layout.align, align)
        for s, off in arena.placements:
            layout.new_addr[id(s)] = cursor + off
        cursor += layout.arena_spans[arena.index]
    layout.size = cursor
    for mod in layout.regions:
        for s in mod.alloc_sections():
            if id(s) not in layout.new_addr:
                raise PlanError("allocated section was not placed", module=mod.name,
                                section=s.name)


def section_of(mod: ModulePlan, index: int) -> Section | None:
    return mod.sections[index] if 0 < index < len(mod.sections) else None
