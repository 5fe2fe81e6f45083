"""Materialize a plan: map, repair, relocate and initialize — `Plan.load()`.

Plan layer, the end of the scan-first path. Design choice: the materializer builds
`loader.Image`s directly and hands them to the ordinary relocation loop
(`relocation.dynamic.relocate_module` with a `Binder`), instead of writing a rewritten ELF
file per module and loading that. Cross-module arenas (hot code of several libraries
packed into one 2 MiB page) cannot be expressed as one ELF image per module, and building
the `Image` keeps whole-image modules file-backed (mmap of the real file, overrides
written on top) instead of copying them.

- Whole-image modules: `loader.map_image` as `relink.load` does, then each overridden
  section's bytes are written at ``base + sh_addr`` (sizes already checked).
- Section-region modules: one reservation holds every arena (start aligned to the
  largest arena page size); arenas are mapped read-write (2 MiB ones with huge pages,
  see plan/hugepages.py), each section's *repaired* bytes (plan/repair.py, computed before
  anything is mapped) are copied to ``A + new address``, and an `Image` with load bias
  ``A`` and one synthetic PT_LOAD per section is built over it, so symbol lookup, bounds
  checks and relocation work unchanged. After all modules are relocated each arena gets
  its class's protection (code r-x, read-only data and RELRO r--, data rw-).

Linking mirrors `relink.load`: scope = user scope, the load group breadth-first, then the
process; relocation dependencies first; initializers dependencies first; any failure
releases everything (finalizers of what ran, every mapping) before the error propagates.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from relink.arch import host_spec, spec_for
from relink.elf.dynamic import parse_dynamic
from relink.elf.header import ProgramHeader
from relink.elf.source import ElfSource, open_source
from relink.elf.symbols import SymbolTable
from relink.elf.view import AddressView
from relink.errors import (
    ArchMismatchError,
    PlanError,
    RelinkError,
    UnresolvedDependencyError,
    UnsupportedError,
)
from relink.loader import Image, map_image
from relink.memory import PROT_EXEC, PROT_READ, PROT_WRITE, Mapper, Region
from relink.module import Module, SyntheticModule
from relink.plan.hugepages import HUGE_MODES, map_arena, smaps_huge_kb
from relink.plan.layout import Layout, PackingPolicy, normalize
from relink.plan.model import (
    HUGE_PAGE,
    SHF_EXECINSTR,
    SHF_WRITE,
    MemoryClass,
    ModulePlan,
    Plan,
)
from relink.plan.repair import ModuleRepair
from relink.relocation.dynamic import Fallback, TlsHooks, relocate_module
from relink.relocation.scope import Binder, Binding
from relink.runtime.executor import Executor, NativeExecutor
from relink.runtime.host import PROCESS
from relink.state import ModuleState, State

__all__ = ["load_plan"]

log = logging.getLogger(__name__)

PT_LOAD, PT_DYNAMIC, PT_TLS, PT_GNU_EH_FRAME = 1, 2, 7, 0x6474E550
PF_X, PF_W, PF_R = 1, 2, 4
_CLASS_PROT = {MemoryClass.CODE: PROT_READ | PROT_EXEC, MemoryClass.RODATA: PROT_READ,
               MemoryClass.RELRO: PROT_READ, MemoryClass.DATA: PROT_READ | PROT_WRITE,
               MemoryClass.TLS: PROT_READ}


class _SharedRegion:
    """The one reservation behind every arena; released when the last module lets go."""

    def __init__(self, region: Region) -> None:
        self.region = region
        self.users = 0

    def lease(self) -> _RegionLease:
        self.users += 1
        return _RegionLease(self)

    def drop(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.region.release()


class _RegionLease:
    """A module's handle on the shared reservation (the `Region` protocol, delegated)."""

    def __init__(self, shared: _SharedRegion) -> None:
        self._shared = shared
        self._region = shared.region
        self.start = self._region.start
        self.size = self._region.size
        self._released = False

    def map_file(self, addr: int, size: int, fd: int, offset: int, prot: int) -> None:
        self._region.map_file(addr, size, fd, offset, prot)

    def map_anon(self, addr: int, size: int, prot: int) -> None:
        self._region.map_anon(addr, size, prot)

    def protect(self, addr: int, size: int, prot: int) -> None:
        self._region.protect(addr, size, prot)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        self._region.write(addr, data)

    def read(self, addr: int, size: int) -> bytes:
        return self._region.read(addr, size)

    def view(self) -> memoryview | None:
        return self._region.view()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._shared.drop()


class _PlanGroup:
    """Everything one plan load mapped, released together (the root Module's owner)."""

    def __init__(self) -> None:
        self.states: list[ModuleState] = []
        self.init_order: list[ModuleState] = []
        self.closed = False
        self.lock = threading.Lock()

    def release(self, module: Module) -> None:
        if self.states and module._state is self.states[0]:
            self.close()

    def initialize(self, module: Module | None = None) -> None:
        """Run pending initializers (a load with ``init=False``), dependencies first."""
        from relink.runtime.libc import argv_pointers, environ_pointer

        argc, argv = argv_pointers()
        envp = environ_pointer()
        for st in self.init_order:
            if st.state == State.RELOCATED:
                st.initialize(argc, argv, envp)

    def close(self) -> None:
        """Finalizers (dependents first), then every mapping. Idempotent."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for st in reversed(self.init_order):
            try:
                st.finalize()
            except Exception:
                log.exception("finalizing %s failed", st.name)
        for st in reversed(self.states):
            try:
                st.release()
            except RelinkError:
                log.exception("releasing %s failed", st.name)


def load_plan(plan: Plan, *, mapper: Mapper | None = None, executor: Executor | None = None,
              scope: Sequence[Any] = (), interpose: Mapping[str, Any] | None = None,
              init: bool = True, tls: TlsHooks | None = None, fallback: Fallback | None = None,
              policy: PackingPolicy | None = None, hugepages: str = "auto") -> Module:
    """Validate, lay out, repair, map, relocate and initialize `plan`; return the root.

    Args:
        plan: a scanned plan (passes already run).
        mapper, executor, scope, interpose, init, tls, fallback: as for `relink.load`.
        policy: where unplaced sections go (default `PackingPolicy.shared_huge_pages()`).
        hugepages: for 2 MiB arenas: ``auto`` | ``thp`` | ``hugetlb`` | ``off``
            (see plan/hugepages.py); each arena's ``huge`` dict reports what was granted.

    Raises:
        PlanError: a request the capability cannot honour, or an unrepairable module —
            raised before anything is mapped. Other RelinkErrors as for `relink.load`.
    """
    if hugepages not in HUGE_MODES:
        raise ValueError(f"huge page mode must be one of {HUGE_MODES}, not {hugepages!r}")
    if plan.closed:
        raise PlanError("this plan was closed")
    for key in plan.missing:
        raise UnresolvedDependencyError(key, needed_by=plan.root.elf.label,
                                        searched=["see relink.scan(missing_ok=False)"])
    layout = normalize(plan, policy)
    repaired = {m.key: ModuleRepair(m, layout.new_addr).run() for m in layout.regions}
    if mapper is None:
        from relink.memory.host import HostMapper

        mapper = HostMapper()
    if executor is None:
        # A foreign backend (emulator, buffer) may bring its own executor and TLS runtime.
        executor = NativeExecutor() if mapper.native else getattr(mapper, "executor", None)
    if tls is None:
        tls = _default_tls() if mapper.native else getattr(mapper, "tls", None)
    spec = spec_for(plan.root.header.e_machine, plan.root.header.elf_class)
    if spec is None:
        raise UnsupportedError(f"no architecture spec for {plan.root.header.machine_name}",
                               file=plan.root.elf.label)
    want = host_spec() if mapper.native else (getattr(mapper, "spec", None) or spec)
    if want is None:
        raise UnsupportedError("relink has no architecture spec for this host",
                               file=plan.root.elf.label)
    if want is not spec:
        raise ArchMismatchError(
            f"file is {spec.name} but this load targets {want.name}"
            + ("; load it into a BufferMapper or an emulator backend instead"
               if mapper.native else ""),
            file=plan.root.elf.label, expected=want.name, actual=spec.name)
    group = _PlanGroup()
    states: dict[str, ModuleState] = {}
    sources: list[ElfSource] = []
    shared: _SharedRegion | None = None
    keep: list[Any] = []
    try:
        if layout.regions:
            shared, base = _map_arenas(plan, layout, mapper, repaired, hugepages)
        for mod in plan.modules:
            src = _reopen(mod)
            sources.append(src)
            if mod in layout.regions:
                assert shared is not None
                image = _region_image(mod, src, layout, shared, base, mapper)
            else:
                image = map_image(src, mapper=mapper, expect=spec)
                _write_overrides(mod, image)
            st = ModuleState(image, executor)
            states[mod.key] = st
            group.states.append(st)
        sources.clear()
        module = _link(plan, states, group, scope, interpose, init, tls, fallback, keep,
                       layout, shared)
    except BaseException:
        group.close()
        for s in sources:
            s.close()
        if shared is not None and shared.users == 0:
            shared.region.release()
        raise
    return module


def _default_tls() -> TlsHooks | None:
    try:
        from relink.runtime.tls import native_tls
    except ImportError:
        return None
    return native_tls()


def _reopen(mod: ModulePlan) -> ElfSource:
    """A fresh source for mapping: the file must be the one that was scanned."""
    old = mod.elf.source
    if old.path is None:
        return open_source(bytes(old.data), name=old.name)
    src = open_source(old.path)
    if src.identity != old.identity or src.stamp != old.stamp:
        src.close()
        raise PlanError("the file changed since it was scanned", module=mod.name,
                        file=old.path)
    return src


def _map_arenas(plan: Plan, layout: Layout, mapper: Mapper,
                repaired: dict[str, dict[int, bytearray]],
                hugepages: str) -> tuple[_SharedRegion, int]:
    for arena in plan.arenas:  # a plan may be loaded again: forget the last addresses
        arena.address = None
        arena.huge = {}
    align = layout.align
    region = mapper.reserve(layout.size + align)
    shared = _SharedRegion(region)
    try:
        base = (region.start + align - 1) // align * align
        for arena in plan.arenas:
            off = layout.arena_offsets.get(arena.index)
            if off is None:
                continue
            addr, span = base + off, layout.arena_spans[arena.index]
            rw = PROT_READ | PROT_WRITE
            if arena.page_size >= HUGE_PAGE:
                arena.huge = map_arena(region, addr, span, rw, hugepages, mapper.native)
            else:
                region.map_anon(addr, span, rw)
            arena.address = addr
        for mod in layout.regions:
            bufs = repaired[mod.key]
            for s in mod.alloc_sections():
                data = bufs[s.index]
                if data and not s.nobits:
                    region.write(base + layout.new_addr[id(s)], data)
        # Code and read-only data are final before relocation (which never writes them:
        # TEXTREL modules are refused), so IFUNC resolvers can run and no page is W+X.
        for arena in plan.arenas:
            if arena.address is not None and arena.mem_class in (MemoryClass.CODE,
                                                                 MemoryClass.RODATA):
                region.protect(arena.address, layout.arena_spans[arena.index],
                               _CLASS_PROT[arena.mem_class])
    except BaseException:
        region.release()
        raise
    return shared, base


def _region_image(mod: ModulePlan, src: ElfSource, layout: Layout, shared: _SharedRegion,
                  base: int, mapper: Mapper) -> Image:
    eh = mod.header
    spec = spec_for(eh.e_machine, eh.elf_class)
    assert spec is not None
    new = {s.index: layout.new_addr[id(s)] for s in mod.alloc_sections()}
    phdrs: list[ProgramHeader] = []
    for s in mod.alloc_sections():
        if s.size == 0 or s.nobits and s.mem_class is MemoryClass.TLS:
            continue
        flags = PF_R | (PF_W if s.flags & SHF_WRITE else 0) | \
            (PF_X if s.flags & SHF_EXECINSTR else 0)
        phdrs.append(ProgramHeader(PT_LOAD, flags, 0, new[s.index], new[s.index],
                                   0 if s.nobits else s.size, s.size, mapper.page_size))
    phdrs.sort(key=lambda p: p.p_vaddr)
    dyn_sec = next((s for s in mod.alloc_sections() if s.sh_type == 6), None)
    if dyn_sec is not None:
        phdrs.append(ProgramHeader(PT_DYNAMIC, PF_R | PF_W, 0, new[dyn_sec.index],
                                   new[dyn_sec.index], dyn_sec.size, dyn_sec.size, 8))
    tls = None
    old_tls = next((p for p in mod.phdrs if p.p_type == PT_TLS), None)
    if old_tls is not None:
        first = min((s for s in mod.alloc_sections() if s.mem_class is MemoryClass.TLS),
                    key=lambda s: s.addr)
        start = new[first.index] - (first.addr - old_tls.p_vaddr)
        tls = old_tls.replace(p_offset=0, p_vaddr=start, p_paddr=start)
        phdrs.append(tls)
    hdr = mod.find(".eh_frame_hdr")
    eh_frame_hdr = None
    if hdr is not None and hdr.index in new and hdr.size:
        eh_frame_hdr = base + new[hdr.index]
        phdrs.append(ProgramHeader(PT_GNU_EH_FRAME, PF_R, 0, new[hdr.index], new[hdr.index],
                                   hdr.size, hdr.size, 4))
    entry = eh.e_entry
    if entry:
        entry = ModuleRepair(mod, layout.new_addr).remap(entry, "e_entry")
    region = shared.lease()
    try:
        view = region.view()
        if view is None:
            raise UnsupportedError("section regions need a mapper whose regions expose a "
                                   "memoryview", file=mod.elf.label)
        aview = AddressView.for_image(view, region.start - base, phdrs, mod.elf.label)
        dynamic = symbols = None
        if dyn_sec is not None:
            dynamic = parse_dynamic(aview, new[dyn_sec.index], dyn_sec.size, eh.elf_class)
            if dynamic.symtab:
                symbols = SymbolTable(aview, dynamic, eh.elf_class)
        loads = [p for p in phdrs if p.p_type == PT_LOAD]
        return Image(source=src, header=eh.replace(e_entry=entry),
                     phdrs=phdrs, loads=loads, spec=spec, mapper=mapper, region=region,
                     base=base, span_vaddr=region.start - base, view=aview,
                     dynamic=dynamic, symbols=symbols, tls=tls, relro=None,
                     eh_frame_hdr=eh_frame_hdr, page_size=mapper.page_size, protections=[])
    except BaseException:
        region.release()
        raise


def _write_overrides(mod: ModulePlan, image: Image) -> None:
    """Write overridden section bytes of a whole-image module at their own addresses."""
    page = image.page_size
    for s in mod.sections:
        if not s.overridden or not s.allocated:
            continue
        data = s.data()
        addr = image.base + s.addr
        lo = addr & ~(page - 1)
        hi = (addr + len(data) + page - 1) & ~(page - 1)
        prot = next((p for st, n, p in image.protections if st <= lo and hi <= st + n), None)
        if prot is not None and not prot & PROT_WRITE:
            # Writable but never executable at the same time (W^X), then restored.
            image.region.protect(lo, hi - lo, PROT_READ | PROT_WRITE)
        image.region.write(addr, data)
        if prot is not None and not prot & PROT_WRITE:
            image.region.protect(lo, hi - lo, prot)


def _link(plan: Plan, states: dict[str, ModuleState], group: Any, scope: Sequence[Any],
          interpose: Mapping[str, Any] | None, init: bool, tls: TlsHooks | None,
          fallback: Fallback | None, keep: list[Any], layout: Layout,
          shared: _SharedRegion | None) -> Module:
    host = plan.options.get("host")
    providers: dict[str, list[Any]] = {}
    for mod in plan.modules:
        provs: list[Any] = []
        for dep in mod.deps:
            if dep.startswith("host:"):
                name = dep[5:]
                lib = host.provides(name) if host is not None else None
                if lib is None:
                    raise UnresolvedDependencyError(name, needed_by=mod.elf.label,
                                                    searched=["host dlopen"])
                provs.append(lib)
            else:
                provs.append(states[dep])
        providers[mod.key] = provs
        states[mod.key].deps = provs
    order = _dependency_order(plan)
    bfs: list[Any] = []
    seen: set[int] = set()
    for mod in plan.modules:  # plan.modules is breadth-first; host libs where first needed
        for p in [states[mod.key], *providers[mod.key]]:
            if id(p) not in seen:
                seen.add(id(p))
                bfs.append(p)
    mapper = states[plan.root.key].image.mapper
    tail = [PROCESS] if mapper.native else list(getattr(mapper, "providers", ()))
    extra = []
    for p in scope:
        if isinstance(p, Module):
            keep.append(p)
            extra.append(p._state)
        elif hasattr(p, "lookup"):
            extra.append(p)
        else:
            raise TypeError(f"scope entry {p!r} is not a module or symbol provider")
    scope_list = [*extra, *bfs, *tail]
    interpose_map = None
    if interpose:
        holder = SyntheticModule("<interpose>", interpose)
        keep.append(holder)
        interpose_map = {name: holder.symbol(name) or 0 for name in holder}
    unique: dict[str, Binding] = {}
    for key in order:
        st = states[key]
        relocate_module(st, Binder(st, scope_list, unique=unique, interpose=interpose_map),
                        tls=tls, fallback=fallback)
        st.scope = scope_list
        st.state = State.RELOCATED
        if shared is not None:  # this module's RELRO is done: read-only now, as ld.so does
            for arena in plan.arenas:
                if arena.owner == key and arena.mem_class in (MemoryClass.RELRO,
                                                              MemoryClass.TLS) \
                        and arena.address is not None:
                    shared.region.protect(arena.address, layout.arena_spans[arena.index],
                                          _CLASS_PROT[arena.mem_class])
        st.image.finish_protection()
        if st.image.mapper.native:  # C++ exceptions must unwind through it (repaired)
            from relink.runtime.unwind import register_frames

            register_frames(st)
    if shared is not None:
        for arena in plan.arenas:
            off = layout.arena_offsets.get(arena.index)
            if off is not None and arena.address is not None:
                if arena.mem_class not in (MemoryClass.CODE, MemoryClass.RODATA):
                    shared.region.protect(arena.address, layout.arena_spans[arena.index],
                                          _CLASS_PROT[arena.mem_class])
                if arena.page_size >= HUGE_PAGE and arena.huge:
                    arena.huge["smaps_kb"] = smaps_huge_kb(arena.address,
                                                           layout.arena_spans[arena.index])
    group.init_order = [states[k] for k in order]
    if init:
        group.initialize()
    return _facades(plan, states, providers, group, keep)


def _dependency_order(plan: Plan) -> list[str]:
    """Module keys, dependencies before dependents (iterative post-order DFS)."""
    deps = {m.key: [d for d in m.deps if ":" not in d or d.split(":", 1)[0] not in
                    ("host", "missing")] for m in plan.modules}
    order: list[str] = []
    state: set[str] = {plan.root.key}
    stack = [(plan.root.key, iter(deps[plan.root.key]))]
    while stack:
        node, it = stack[-1]
        for d in it:
            if d in deps and d not in state:
                state.add(d)
                stack.append((d, iter(deps[d])))
                break
        else:
            stack.pop()
            order.append(node)
    return order


def _facades(plan: Plan, states: dict[str, ModuleState], providers: dict[str, list[Any]],
             group: Any, keep: list[Any]) -> Module:
    facades: dict[int, Module] = {}
    root_state = states[plan.root.key]

    def facade(p: Any) -> Module:
        m = facades.get(id(p))
        if m is None:
            m = Module(p, group if p is root_state else None)
            facades[id(p)] = m
        return m

    root = facade(root_state)
    for mod in plan.modules:
        facade(states[mod.key]).dependencies = [facade(p) for p in providers[mod.key]]
    for m in facades.values():
        if m is not root:
            m._keep.append(root)
    root._keep.append(keep)
    weakref.finalize(root, group.close)
    return root
