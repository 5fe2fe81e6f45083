"""`relink.load()`: load a shared object and its dependencies, relocate, initialize.

The front door over the pipeline (input -> elf -> loader -> relocation -> image). One
call is one load group: the root is mapped, its DT_NEEDED graph is resolved breadth-
first (host-provided libraries through `HostPolicy`, the rest found through
DT_RPATH / DT_RUNPATH / $ORIGIN, ld.so.cache and the default directories by
`SearchPathResolver`), every module is relocated dependencies first against the scope
``user scope -> load group (BFS) -> process host``, protections are finalized, and
initializers run dependencies first. Any failure rolls the whole group back: finalizers
of what was initialized run, every mapping and fd is released, and the error is raised.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from relink.elf.header import parse_header
from relink.elf.source import ElfSource, SourceLike, open_source
from relink.errors import MappingError, RelinkError, UnresolvedDependencyError
from relink.linker.search import ModuleSearchInfo, SearchPathResolver
from relink.loader import map_image
from relink.memory import Mapper
from relink.module import Module, SyntheticModule
from relink.relocation.dynamic import Fallback, TlsHooks, relocate_module
from relink.relocation.scope import Binder, Binding
from relink.runtime.executor import Executor, NativeExecutor
from relink.runtime.host import PROCESS, HostPolicy
from relink.state import ModuleState, State

__all__ = ["LoadGroup", "load"]

log = logging.getLogger(__name__)
_DF_1_NODEFLIB = 0x800
_loaded: weakref.WeakSet[LoadGroup] = weakref.WeakSet()
_loaded_lock = threading.Lock()


class LoadGroup:
    """Everything one `load()` mapped, owned together and released together.

    Attributes:
        states: relink-loaded modules in breadth-first order (root first).
        init_order: the order initializers ran (dependencies first).
    """

    def __init__(self) -> None:
        self.states: list[ModuleState] = []
        self.init_order: list[ModuleState] = []
        self.closed = False
        self.lock = threading.Lock()

    @property
    def root(self) -> ModuleState | None:
        return self.states[0] if self.states else None

    def release(self, module: Module) -> None:
        """`Module.close()` lands here: closing the root releases the group."""
        if module._state is self.root:
            self.close()

    def close(self) -> None:
        """Run finalizers (dependents first) and release every mapping. Idempotent."""
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


def loaded_groups() -> list[LoadGroup]:
    """Every load group still open in this process."""
    with _loaded_lock:
        return [g for g in _loaded if not g.closed]


def _accept_for(expected_machine: int, expected_class: int,
                opened: dict[str, ElfSource]) -> Any:
    def accept(path: str) -> bool:
        try:
            src = open_source(path)
        except (MappingError, OSError):
            return False
        except RelinkError:
            return False
        try:
            eh = parse_header(src)
        except RelinkError:
            src.close()
            return False
        if eh.e_machine != expected_machine or eh.elf_class != expected_class:
            src.close()  # wrong machine or class: skipped, as ld.so does
            return False
        opened[path] = src
        return True

    return accept


def _search_info(st: ModuleState) -> ModuleSearchInfo:
    dyn = st.image.dynamic
    return ModuleSearchInfo.from_dynamic(
        st.name, st.path, rpath=dyn.rpath if dyn else None,
        runpath=dyn.runpath if dyn else None,
        nodeflib=bool(dyn and dyn.flags_1 & _DF_1_NODEFLIB))


def _interpose_table(interpose: Mapping[str, Any] | None,
                     keep: list[Any]) -> dict[str, int] | None:
    if not interpose:
        return None
    holder = SyntheticModule("<interpose>", interpose)
    keep.append(holder)
    return {name: holder.symbol(name) or 0 for name in holder}


def load(source: SourceLike, *, name: str | None = None, scope: Sequence[Any] = (),
         host: HostPolicy | None = None, resolver: SearchPathResolver | None = None,
         mapper: Mapper | None = None, executor: Executor | None = None,
         interpose: Mapping[str, Any] | None = None, init: bool = True,
         tls: TlsHooks | None = None, fallback: Fallback | None = None) -> Module:
    """Load a shared object (and its dependencies) into this process and return it.

    Args:
        source: a path, bytes / bytearray / memoryview, an fd or a binary file.
        name: name to give a memory input (its DT_SONAME is used for matching too).
        scope: modules searched before the load group (synthetic modules, other loaded
            modules): the RTLD_GLOBAL-like part of the scope.
        host: which DT_NEEDED names the host serves (default `HostPolicy()`).
        resolver: how other DT_NEEDED names are found (default `SearchPathResolver()`).
        mapper: the memory backend (default: this process).
        executor: runs initializers / IFUNC resolvers (default: native).
        interpose: name -> address or ``(callable, restype, *argtypes)`` binding every
            reference in the group to that implementation.
        init: run initializers (False leaves them pending: call ``Module.initialize``).
        tls: the TLS runtime hooks (default: relink's native TLS runtime when present).
        fallback: called for relocation types the loop does not handle.

    Raises:
        RelinkError subclasses; nothing stays mapped after a failure.
    """
    if mapper is None:
        from relink.memory.host import HostMapper

        mapper = HostMapper()
    if executor is None and mapper.native:
        executor = NativeExecutor()
    if tls is None and mapper.native:
        tls = _default_tls()
    host = host if host is not None else HostPolicy()
    resolver = resolver if resolver is not None else SearchPathResolver()
    group = LoadGroup()
    keep: list[Any] = []
    opened: dict[str, ElfSource] = {}
    try:
        src = open_source(source, name=name)
        root = ModuleState(map_image(src, mapper=mapper), executor)
        group.states.append(root)
        providers = _resolve_graph(group, root, host, resolver, mapper, executor, opened)
        interpose_map = _interpose_table(interpose, keep)
        unique: dict[str, Binding] = {}
        order = _dependency_order(root, providers)
        user_scope = [s._state if isinstance(s, Module) else s for s in scope]
        scope_list = [*user_scope, *_bfs_providers(group, providers), PROCESS]
        for st in order:
            binder = Binder(st, scope_list, unique=unique, interpose=interpose_map)
            relocate_module(st, binder, tls=tls, fallback=fallback)
            st.scope = scope_list
            st.state = State.RELOCATED
            st.image.finish_protection()
        group.init_order = order
        if init:
            argc, argv, envp = _init_args()
            for st in order:
                st.initialize(argc, argv, envp)
    except BaseException:
        group.close()
        for s in opened.values():
            s.close()
        raise
    for s in opened.values():
        s.close()
    module = _facades(group, root, providers, keep)
    with _loaded_lock:
        _loaded.add(group)
    return module


def _default_tls() -> TlsHooks | None:
    try:
        from relink.runtime.tls import native_tls
    except ImportError:
        return None
    return native_tls()


def _init_args() -> tuple[int, int, int]:
    from relink.runtime.libc import argv_pointers, environ_pointer

    argc, argv = argv_pointers()
    return argc, argv, environ_pointer()


def _resolve_graph(group: LoadGroup, root: ModuleState, host: HostPolicy,
                   resolver: SearchPathResolver, mapper: Mapper, executor: Executor | None,
                   opened: dict[str, ElfSource]) -> dict[int, list[Any]]:
    """Breadth-first DT_NEEDED resolution; returns id(state) -> providers of its needs."""
    by_name: dict[str, Any] = {}
    by_identity: dict[Any, ModuleState] = {root.identity: root}
    for key in (root.name, root.soname):
        if key:
            by_name[key] = root
    parents: dict[int, ModuleState | None] = {id(root): None}
    providers: dict[int, list[Any]] = {}
    eh = root.image.header
    queue = [root]
    while queue:
        st = queue.pop(0)
        dyn = st.image.dynamic
        needs: list[Any] = []
        for needed in (dyn.needed if dyn else []):
            prov = by_name.get(needed)
            if prov is None:
                prov = host.provides(needed) if "/" not in needed else None
            if prov is None:
                chain = []
                p = parents.get(id(st))
                while p is not None:
                    chain.append(_search_info(p))
                    p = parents.get(id(p))
                accept = _accept_for(eh.e_machine, eh.elf_class, opened)
                path, tried = resolver.resolve(needed, _search_info(st), chain, accept=accept)
                if path is None:
                    raise UnresolvedDependencyError(needed, needed_by=st.image.label,
                                                    searched=[str(c) for c in tried])
                dep_src = opened.pop(path)
                existing = by_identity.get(dep_src.identity)
                if existing is not None:
                    dep_src.close()
                    prov = existing
                else:
                    prov = ModuleState(map_image(dep_src, mapper=mapper,
                                                 expect=root.image.spec), executor)
                    group.states.append(prov)
                    by_identity[prov.identity] = prov
                    parents[id(prov)] = st
                    queue.append(prov)
                    if prov.soname:
                        by_name.setdefault(prov.soname, prov)
            by_name.setdefault(needed, prov)
            needs.append(prov)
        providers[id(st)] = needs
        st.deps = needs
    return providers


def _bfs_providers(group: LoadGroup, providers: dict[int, list[Any]]) -> list[Any]:
    """The load group in breadth-first order, host libraries where they first appear."""
    out: list[Any] = []
    seen: set[int] = set()
    queue: list[Any] = [group.states[0]]
    while queue:
        p = queue.pop(0)
        if id(p) in seen:
            continue
        seen.add(id(p))
        out.append(p)
        queue.extend(providers.get(id(p), []))
    return out


def _dependency_order(root: ModuleState, providers: dict[int, list[Any]]) -> list[ModuleState]:
    """Relink-loaded modules, dependencies before dependents (post-order DFS)."""
    order: list[ModuleState] = []
    state: dict[int, int] = {}

    def visit(st: ModuleState) -> None:
        stack = [(st, iter(providers.get(id(st), [])))]
        state[id(st)] = 1
        while stack:
            node, it = stack[-1]
            for dep in it:
                if isinstance(dep, ModuleState) and id(dep) not in state:
                    state[id(dep)] = 1
                    stack.append((dep, iter(providers.get(id(dep), []))))
                    break
            else:
                stack.pop()
                order.append(node)

    visit(root)
    return order


def _facades(group: LoadGroup, root: ModuleState, providers: dict[int, list[Any]],
             keep: list[Any]) -> Module:
    facades: dict[int, Module] = {}

    def facade(p: Any) -> Module:
        m = facades.get(id(p))
        if m is None:
            m = Module(p, group if p is root else None)
            facades[id(p)] = m
        return m

    root_mod = facade(root)
    for st in group.states:
        mod = facade(st)
        mod.dependencies = [facade(p) for p in providers.get(id(st), [])]
    # Dependencies keep the root (and so the group) alive while anyone holds them.
    for m in facades.values():
        if m is not root_mod:
            m._keep.append(root_mod)
    root_mod._keep.append(keep)
    weakref.finalize(root_mod, group.close)
    return root_mod


def host_module(name: str) -> Module:
    """A Module for a library served by the host's dynamic linker (dlopen)."""
    from relink.runtime.host import host_library

    lib = host_library(name, load=True)
    if lib is None:
        raise UnresolvedDependencyError(name, needed_by=None, searched=["host dlopen"])
    return Module(lib)

