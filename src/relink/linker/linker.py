"""`Linker`: load a root and its DT_NEEDED graph into a `LinkContext`, in stages.

Linker layer (… -> relocation -> image -> linker). A load is a transaction with four
stages (relink-study §1.14):

1. **prepare** - resolve the DT_NEEDED graph breadth-first and map every new module; no
   target code runs and the context is not modified. Each name is matched against what
   the context (and this load) already holds - by key, SONAME alias and file identity
   (device, inode) - then offered to the custom resolvers, then to the host policy and
   the search path.
2. **relocate** - new modules are relocated dependencies first, each against
   ``context global scope -> extra scope -> load group (breadth-first, root first) ->
   process``, read at that moment (promotions are live). Observers may edit each scope.
3. **publish** - commit the modules, keys and aliases to the context; rejected if a
   module this load bound to was unloaded or replaced meanwhile.
4. **initialize** - run initializers, dependencies first.

Any failure rolls back everything the load did: finalizers of what was initialized run,
every mapping and fd is released, nothing stays in the context. `Linker.load` runs the
four stages; `Linker.prepare` returns a `PreparedLoad` to drive them one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from relink.arch import host_spec
from relink.linker import callbacks
from relink.linker.context import Entry, LinkContext, LinkContextError
from relink.linker.prepare import GraphBuilder, scope_tail, search_info, template_root
from relink.linker.resolvers import (
    Acceptor,
)
from relink.linker.search import SearchPathResolver
from relink.memory import Mapper
from relink.module import Module, SyntheticModule
from relink.relocation.dynamic import Fallback, TlsHooks, relocate_module
from relink.relocation.scope import Binder
from relink.relocation.versioncheck import check_version_needs
from relink.runtime.executor import Executor, NativeExecutor
from relink.runtime.host import HostPolicy
from relink.state import ModuleState, State

if TYPE_CHECKING:
    from relink.linker.hooks import RelocationHooks

__all__ = ["Linker", "PreparedLoad", "run_initializers", "search_info"]


def make_hooks(observers: Sequence[Any], facade: Any,
               user_fallback: Callable[..., int | None] | None) -> RelocationHooks:
    """relink.linker.hooks.make_hooks, imported by the first load with observers."""
    from relink.linker import hooks

    return hooks.make_hooks(observers, facade, user_fallback)


def _init_args() -> tuple[int, int, int]:
    libc = _libc[0] if _libc else _import_libc()
    argc, argv = libc.argv_pointers()
    return argc, argv, libc.environ_pointer()


_libc: list[Any] = []  # relink.runtime.libc, imported on the first native initializer


def _import_libc() -> Any:
    from relink.runtime import libc

    _libc.append(libc)
    return libc


def run_initializers(entries: Sequence[Entry]) -> None:
    """Initialize modules in the given (dependencies-first) order; a Python callback's
    exception recorded meanwhile is raised here."""
    if not entries:
        return
    args = _init_args()
    active = callbacks._active  # `callbacks.active()`, read after every initializer
    for e in entries:
        st = e.module
        if isinstance(st, ModuleState) and st.state == State.RELOCATED:
            # A foreign image gets no host argv/envp: its executor supplies its own.
            st.initialize(*(args if st.image.mapper.native else (0, 0, 0)))
            if active[0]:
                callbacks.raise_pending()


_POLICIES: dict[bool, HostPolicy] = {}


def _default_policy(native: bool) -> HostPolicy:
    """The default host policy (shared by every linker that does not pass one, so its
    per-name verdicts are decided once per process, not once per linker)."""
    policy = _POLICIES.get(native)
    if policy is None:
        policy = _POLICIES[native] = HostPolicy() if native else HostPolicy.none()
    return policy


def _register_frames() -> Callable[[Any], bool]:
    """relink.runtime.unwind.register_frames (imported once, on the first native load)."""
    global _REGISTER_FRAMES
    if _REGISTER_FRAMES is None:
        from relink.runtime.unwind import register_frames

        _REGISTER_FRAMES = register_frames
    return _REGISTER_FRAMES


_REGISTER_FRAMES: Callable[[Any], bool] | None = None


class _NativeTls(TlsHooks):
    """`relink.runtime.tls.native_tls()`, imported the first time a module needs it: a
    load without PT_TLS or TLS relocations never imports the TLS runtime."""

    @staticmethod
    def _runtime() -> Any:
        from relink.runtime.tls import native_tls

        return native_tls()

    def dtpmod(self, provider: Any) -> int:
        return int(self._runtime().dtpmod(provider))

    def dtpmod_at(self, provider: Any, address: int) -> int:
        return int(self._runtime().dtpmod_at(provider, address))

    def dtpoff(self, provider: Any, offset: int) -> int:
        return int(self._runtime().dtpoff(provider, offset))

    def tpoff(self, provider: Any, offset: int) -> int:
        return int(self._runtime().tpoff(provider, offset))

    def tlsdesc(self, module: ModuleState, provider: Any, offset: int) -> tuple[int, int]:
        func, arg = self._runtime().tlsdesc(module, provider, offset)
        return func, arg

    def relocating(self, module: ModuleState, binder: Binder) -> None:
        self._runtime().relocating(module, binder)

    def relocated(self, module: ModuleState) -> None:
        self._runtime().relocated(module)

    def __getattr__(self, name: str) -> Any:  # optional hooks (tlsdesc_undefweak)
        return getattr(self._runtime(), name)


_DEFAULT_TLS = _NativeTls()


def _default_tls() -> TlsHooks | None:
    return _DEFAULT_TLS


class Linker:
    """How loads are done: resolvers, host policy, memory backend, observers.

    Args:
        resolvers: custom resolvers (callables or ``.resolve(request)`` objects), asked in
            order before the default resolution (see `relink.linker.resolvers`).
        search: the `SearchPathResolver` configuration (default: ld.so's order).
        host: which libraries the host's dynamic linker serves (default `HostPolicy()`;
            `HostPolicy.none()` makes relink load everything itself).
        mapper: memory backend (default: this process).
        executor: runs initializers and IFUNC resolvers (default: native when possible).
        tls: TLS runtime hooks (default: relink's native TLS runtime when present).
        fallback: handler for relocation types the loop does not know.
        observers: objects implementing some `relink.observer` hooks.
        process_scope: search the whole process (``dlsym(RTLD_DEFAULT)``) last.
        lazy: leave PLT slots to lazy binding (relink.runtime.lazy) where allowed.
        arch: the `ArchSpec` every file must be (default: the host's for native memory,
            the backend's ``spec`` for a foreign one, else the root's).

    With a non-native memory backend the host serves nothing and the process scope is
    not searched unless `host` / `process_scope` say otherwise: host addresses mean
    nothing inside a foreign image.
    """

    def __init__(self, *, resolvers: Sequence[Any] = (), search: SearchPathResolver | None = None,
                 host: HostPolicy | None = None, mapper: Mapper | None = None,
                 executor: Executor | None = None, tls: TlsHooks | None = None,
                 fallback: Fallback | None = None, observers: Sequence[Any] = (),
                 process_scope: bool | None = None, lazy: bool = False,
                 arch: Any = None) -> None:
        if mapper is None:
            from relink.memory.host import HostMapper

            mapper = HostMapper()
        self.mapper = mapper
        self.executor = executor if executor is not None or not mapper.native \
            else NativeExecutor()
        self.tls = tls if tls is not None or not mapper.native else _default_tls()
        if not mapper.native:
            # A foreign backend (emulator, buffer) may bring its own runtime: an executor
            # for init/IFUNC code, a TLS policy, runtime symbol providers, a target ISA.
            if self.executor is None:
                self.executor = getattr(mapper, "executor", None)
            if self.tls is None:
                self.tls = getattr(mapper, "tls", None)
        self.arch: Any = arch if arch is not None else \
            (getattr(mapper, "spec", None) if not mapper.native else None)
        self.resolvers = list(resolvers)
        self.search = search if search is not None else SearchPathResolver()
        # The host's libraries can never serve a foreign image.
        self.host = host if host is not None else _default_policy(mapper.native)
        self.fallback = fallback
        self.observers = list(observers)
        self.process_scope = mapper.native if process_scope is None else process_scope
        self.lazy = lazy
        # Root path -> the decisions of its last plain load (relink.linker.warm).
        self._templates: dict[str, Any] = {}

    def prepare(self, ctx: LinkContext, source: Any, **options: Any) -> PreparedLoad:
        """Stage 1: resolve and map (see `load` for the options). Nothing is committed."""
        load = PreparedLoad(self, ctx, **options)
        try:
            load._prepare(source)
        except BaseException:
            load.rollback()
            raise
        return load

    def load(self, ctx: LinkContext, source: Any, *, key: str | None = None,
             name: str | None = None, caller: Any = None, scope: Sequence[Any] = (),
             interpose: Mapping[str, Any] | None = None, init: bool = True,
             observers: Sequence[Any] = ()) -> Module:
        """Load `source` and its dependencies into `ctx`; return the root with a lease.

        Args:
            source: a path, bytes, fd or file; a key of `ctx` (or a bare library name,
                searched like dlopen does); or a prebuilt module (`Module`,
                `SyntheticModule`, any provider) to register.
            key: the key to register the root under (default: its path or name).
            name: name of a memory input.
            caller: a module of `ctx` whose RPATH / RUNPATH chain is used to find a bare
                root name (dlopen from that module).
            scope: extra providers searched after the global scope, before the group.
            interpose: name -> address / callable / (callable, restype, *argtypes):
                every reference of the new modules to that name binds to it.
            init: run initializers (False: call ``Module.initialize()`` later).
            observers: observers for this load only (after the linker's).
        """
        with ctx.op():
            load = PreparedLoad(self, ctx, key=key, name=name, caller=caller, scope=scope,
                                interpose=interpose, observers=observers)
            path = template_root(load, source)
            template = self._templates.get(path) if path is not None else None
            try:  # the four stages; any failure rolls all of them back
                if template is not None:  # stages 1-2 from the last load of this root
                    warm = _warm()
                    try:
                        replayed = warm.replay(load, template)
                    except warm.Stale:
                        load.rollback()
                        load = PreparedLoad(self, ctx, key=key, name=name, caller=caller,
                                            scope=scope, interpose=interpose,
                                            observers=observers)
                        replayed = False
                    if not replayed:
                        template = None
                if template is None:
                    load._prepare(source)
                    load.relocate()
                root = load._publish()  # inside this op: no nested one
                if init:
                    load.initialize()
                else:
                    assert load.lease is not None
                    load.lease.pending_init = load.init_order()
            except BaseException:
                load.rollback()
                raise
            for e in load.new:  # mapped and relocated: the files' fds are not needed
                if e.owned:  # a `ModuleState` the load mapped (prepare.GraphBuilder)
                    e.module.image.source.detach_fd()
            if path is not None and template is None and init and load.replayed:
                warm = _warm()
                made = warm.record(load, path)
                if made is not None:
                    templates = self._templates
                    if len(templates) >= warm.MAX_TEMPLATES and path not in templates:
                        templates.clear()
                    templates[path] = made
            return root


def _warm() -> Any:
    """relink.linker.warm, imported by the first load that can use or make a template."""
    from relink.linker import warm

    return warm


class PreparedLoad(GraphBuilder):
    """One load in progress (stages: prepared -> relocated -> published -> initialized)."""

    def __init__(self, linker: Linker, ctx: LinkContext, *, key: str | None = None,
                 name: str | None = None, caller: Any = None, scope: Sequence[Any] = (),
                 interpose: Mapping[str, Any] | None = None,
                 observers: Sequence[Any] = ()) -> None:
        ctx._check_open()
        self.linker = linker
        self.ctx = ctx
        self.key = key
        self.name = name
        self.caller = ctx.entry_of(caller) if caller is not None else None
        self.observers = [*linker.observers, *observers]
        self.stage = "new"
        self.root: Entry | None = None
        self.new: list[Entry] = []            # mapped by this load, BFS order
        self.touched: dict[int, Entry] = {}  # entries of the context this load uses
        self.names: dict[str, Entry] = {}     # keys / aliases staged by this load
        self.idents: dict[Any, Entry] = {}    # file identity -> entry mapped by this load
        self.unique = dict(ctx.unique)
        self.keepers: dict[int, Any] = {}     # provider id -> object to keep alive
        self.extra: list[Any] = [self._provider(p) for p in scope]
        self.interpose_map: dict[str, int] | None = None
        if interpose:
            holder = SyntheticModule("<interpose>", interpose)
            self.keepers[id(holder)] = holder
            self.interpose_map = {n: holder.symbol(n) or 0 for n in holder}
        self.lease: Any = None
        self.spec = linker.arch or (host_spec() if linker.mapper.native else None)
        self.acceptor: Acceptor | None = None
        self._init_order: list[Entry] | None = None  # fixed once prepared
        self._init_new: list[Entry] = []      # the entries of `new` in it, same order
        self.staged: dict[int, Entry] = {}    # id(module) -> entry of `new`
        self.resolutions: list[Any] = []      # (needed, owner, chain, Found) per search
        # entry id -> the program that relocated it all (None: the generic loop did some),
        # for every module whose binding plan was replayed
        self.replayed: dict[int, Any] = {}

    def _provider(self, p: Any) -> Any:
        if isinstance(p, Module):
            self.keepers[id(p._state)] = p
            return p._state
        if not hasattr(p, "lookup"):
            raise TypeError(f"scope entry {p!r} is not a module or symbol provider")
        return p

    # -- stage 2: relocate -------------------------------------------------------------

    def init_order(self) -> list[Entry]:
        """Modules of this load needing initialization, dependencies first."""
        if self._init_order is not None and self.stage not in ("new", "preparing"):
            return self._init_order
        out: list[Entry] = []
        # Without an entry of the context in the graph (nothing `touched`), every entry
        # of it is new (see `_group`).
        new = set(self.new) if self.touched else None
        root = self.root
        assert root is not None
        seen = {root}
        # Post-order (every dependency before its user), without recursion: `path` holds
        # the entries being visited, `todo` the iterator over each one's deps.
        path, todo = [root], [iter(root.deps)]
        while todo:
            for d in todo[-1]:
                if d not in seen:
                    seen.add(d)
                    path.append(d)
                    todo.append(iter(d.deps))
                    break
            else:
                todo.pop()
                e = path.pop()
                st = e.module
                if isinstance(st, ModuleState) and (
                        new is None or e in new or st.state == State.RELOCATED):
                    out.append(e)
        if self.stage not in ("new", "preparing"):
            self._init_order = out
            self._init_new = out if new is None else [e for e in out if e in new]
        return out

    def _group(self) -> list[Any]:
        """The load group: breadth-first from the root over DT_NEEDED edges."""
        assert self.root is not None
        if not self.touched:
            # No entry of the context is in the graph: every entry of it was made by this
            # load, when first seen by `_prepare`'s breadth-first walk (the host and
            # adopted ones, with no deps, included), so `new` is that walk's order.
            return [e.module for e in self.new]
        queue = [self.root]
        seen = set(queue)
        for e in queue:  # grows while iterated: breadth-first
            for d in e.deps:
                if d not in seen:
                    seen.add(d)
                    queue.append(d)
        return [e.module for e in queue]

    def relocate(self) -> None:
        """Stage 2: relocate every new module, dependencies first."""
        if self.stage != "prepared":
            raise LinkContextError(f"cannot relocate a load in stage {self.stage}",
                                   reason="stage")
        self.stage = "relocating"
        group = self._group()
        tail = scope_tail(self.linker)
        observers = self.observers
        if observers:  # relink.observer is imported by the first load that has observers
            from relink.observer import LinkerRelocationEvent, RelocatedEvent, implemented
        order_hooks = implemented(observers, "on_relocation") if observers else []
        relocated_hooks = implemented(observers, "on_relocated") if observers else []
        linker = self.linker
        native = linker.mapper.native
        self.init_order()
        todo = [e for e in self._init_new if e.owned]
        register_frames = _register_frames() if native else None
        # The global scope is read per module (promotions are live); without observers
        # nothing runs between two modules' relocation that could promote, so read once.
        base_scope = [*self.ctx.global_scope(), *self.extra, *group, *tail]
        base_facts = Binder.scope_facts(base_scope) if not observers else None
        kw: dict[str, Any] = {"unique": self.unique, "interpose": self.interpose_map}
        base_kw = {**kw, "scope_facts": base_facts} if base_facts is not None else kw
        for i, e in enumerate(todo):
            st = e.module
            scope = [*self.ctx.global_scope(), *self.extra, *group, *tail] if observers \
                else base_scope
            hooks = None
            if observers:
                facade = e.view()
                if order_hooks:
                    ev = LinkerRelocationEvent(facade, i, scope)
                    for hook in order_hooks:
                        hook(ev)
                    scope = list(ev.scope)
                hooks = make_hooks(observers, facade, linker.fallback)
            skw = base_kw if scope is base_scope else kw
            binder = hooks.make_binder(st, scope, **skw) if hooks else Binder(st, scope, **skw)
            check_version_needs(st, [d.module for d in e.deps])  # ld.so's verneed check
            if hooks:
                relocate_module(st, binder, tls=linker.tls, fallback=hooks.fallback,
                                **_extra_args(linker.lazy, hooks.pre))
            else:
                rp = relocate_module(st, binder, tls=linker.tls, fallback=linker.fallback,
                                     lazy=linker.lazy)
                if binder.plan is not None:  # a reload: what a load template can reuse
                    self.replayed[e.id] = rp.replayed
            st.scope = scope
            st.state = State.RELOCATED
            if relocated_hooks:
                rev = RelocatedEvent(e.view(), st)
                for hook in relocated_hooks:
                    hook(rev)
                st.init_funcs, st.fini_funcs = list(rev.init_funcs), list(rev.fini_funcs)
            st.image.finish_protection()
            if register_frames is not None:  # C++ exceptions must unwind through it
                register_frames(st)
            used: Iterable[Any] = binder.used.values()
            if linker.lazy:
                # Lazy slots bind on first call, after this: keep every candidate alive.
                used = list(used)
                used += [p for p in scope if p is not st and p not in used]
            self._record_bindings(e, used)
        self.stage = "relocated"

    def _record_bindings(self, e: Entry, used: Iterable[Any]) -> None:
        """Record the providers `e`'s relocations bound to: entries (of the context or
        of this load) become edges that keep them loaded, other objects are kept."""
        by_module, staged = self.ctx._by_module, self.staged
        bound: dict[Entry, None] = {}
        keep: list[Any] = []
        for prov in used:
            pid = id(prov)
            dep = staged.get(pid)  # (a module is staged or published, never both)
            if dep is None:
                dep = by_module.get(pid)
                if dep is None:
                    keep.append(self.keepers.get(pid, prov))
                    continue
                # Published before this load: must still be at publish.
                self.touched[dep.id] = dep
            bound[dep] = None
        if self.interpose_map:
            keep.extend(self.keepers.values())
        if bound:
            e.bound = tuple(dict.fromkeys((*e.bound, *bound))) if e.bound else tuple(bound)
        if keep:
            e.keep = (*e.keep, *keep)

    # -- stage 3: publish --------------------------------------------------------------

    def publish(self) -> Module:
        """Stage 3: commit to the context; returns the root with a lease."""
        with self.ctx.op():
            return self._publish()

    def _publish(self) -> Module:
        """`publish`, for a caller holding ``ctx.op()`` (`Linker.load`)."""
        ctx = self.ctx
        if self.stage != "relocated":
            raise LinkContextError(f"cannot publish a load in stage {self.stage}",
                                   reason="stage")
        ctx._check_open()
        for e in self.touched.values():
            if not e.alive or ctx._by_module.get(id(e.module)) is not e:
                raise LinkContextError(
                    f"{e.name} was unloaded or replaced since this load was prepared",
                    reason="module-changed")
        assert self.root is not None
        root = self.root
        if root in self.new and ctx._by_key.get(root.key) not in (None, root):
            raise LinkContextError(f"key {root.key!r} now names another module",
                                   reason="module-changed")
        ctx._register(self._publish_order(), self.idents)
        by_key = ctx._by_key
        names = self.names
        # Usually every staged name is a key or alias `_register` just published: then
        # the loop below would do nothing.
        for name, e in names.items() if names.keys() - by_key.keys() else ():
            if name not in by_key and e.alive:
                by_key[name] = e
                if name != e.key and name not in e.aliases:
                    e.aliases += (name,)
        if self.unique and not isinstance(ctx.unique, dict):
            ctx.unique = {}  # the first GNU_UNIQUE binding of this context
        for name, binding in self.unique.items():
            ctx.unique.setdefault(name, binding)  # type: ignore[attr-defined]
            prov = ctx._by_module.get(id(binding[3]))
            if prov is not None:
                prov.nodelete = True
        facade = ctx._lease(root)
        self.lease = facade._owner
        self.stage = "published"
        return facade

    def _publish_order(self) -> list[Entry]:
        self.init_order()
        order = self._init_new
        if len(order) == len(self.new):  # every new entry is initialized (the usual case)
            return order
        ordered = set(order)
        return [e for e in self.new if e not in ordered] + order

    # -- stage 4: initialize -----------------------------------------------------------

    def initialize(self) -> None:
        """Stage 4: run initializers, dependencies first."""
        if self.stage != "published":
            raise LinkContextError(f"cannot initialize a load in stage {self.stage}",
                                   reason="stage")
        run_initializers(self.init_order())
        self.stage = "initialized"

    # -- rollback ---------------------------------------------------------------------

    def rollback(self) -> None:
        """Undo the load: finalize what was initialized, release every mapping and fd,
        remove everything it added to the context. Idempotent."""
        if self.stage == "rolled back":
            return
        ctx = self.ctx
        with ctx.op():
            if self.acceptor is not None:
                self.acceptor.close()
            new_ids = {e.id for e in self.new}
            published = [e for e in ctx._order if e.id in new_ids]
            users = [u.name for u in ctx._order if u.id not in new_ids and any(
                d.id in new_ids for d in (*u.deps, *u.bound))]
            if published and users:
                raise LinkContextError(
                    f"cannot roll back: {', '.join(sorted(set(users)))} now depend on "
                    "modules of this load", reason="in-use")
            if self.lease is not None and not self.lease.released:
                self.lease.released = True
                self.lease.entry.leases -= 1
            if published:
                ctx._detach(published)
            order = self.init_order() if self.root is not None else []
            ordered = [e for e in order if e.id in new_ids]
            ordered += [e for e in self.new if e not in ordered]
            for e in ordered:
                e.alive = False
            ctx._unload(ordered)
            if self.lease is not None:
                ctx._collect()
            self.stage = "rolled back"


def _extra_args(lazy: bool, pre: Callable[..., Any] | None) -> dict[str, Any]:
    """Optional relocate_module arguments, passed only when used (older loops lack them)."""
    kw: dict[str, Any] = {}
    if lazy:
        kw["lazy"] = True
    if pre is not None:
        kw["pre"] = pre
    return kw
