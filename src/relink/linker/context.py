"""`LinkContext`: a namespace of loaded modules, their keys, scopes and lifetimes.

Linker layer (the dlmopen namespace analogue, relink-study §1.12, §1.14). A context
records every module the linker committed to it: its keys (the key it was loaded under,
its DT_SONAME, the DT_NEEDED names that resolved to it, its path), its file identity
(device, inode) so another path or a hard link to the same file is the same module, its
direct dependencies (DT_NEEDED edges) and the providers its relocations bound to. Two
contexts never share module state: loading a library into 100 contexts gives 100 copies
of its globals.

Lifetimes: every load returns a root `Module` holding a *lease*. Releasing a lease
(``Module.close()``, ``ctx.release(module)``, or the facade being garbage-collected)
unloads everything that became unreachable, where the roots are modules with a live
lease, pinned modules and NODELETE modules (DF_1_NODELETE, GNU_UNIQUE providers), and the
edges are DT_NEEDED plus bindings made at relocation time. Finalizers run dependents
first, then every mapping is released. ``ctx.close()`` finalizes and releases everything.

The context's global scope (``promote_global``, the RTLD_GLOBAL analogue) is searched
first by every later load; it is read when a module is relocated, so promotions are live.
It does not keep modules alive by itself.
"""

from __future__ import annotations

import atexit
import gc
import itertools
import sys
import weakref
from _thread import RLock as _RLock  # threading.RLock() is a Python call returning it
from collections.abc import Iterator, Mapping, Sequence
from operator import attrgetter
from types import MappingProxyType
from typing import Any

from relink._log import lazy_logger
from relink.errors import LinkerError, RelinkError
from relink.linker.search import ModuleSearchInfo
from relink.module import Module
from relink.state import ModuleState

__all__ = ["Entry", "Lease", "LinkContext", "LinkContextError"]

log = lazy_logger(__name__)
_ids = itertools.count(1)
_MODULE_OF = attrgetter("module")
_NO_UNIQUE: Mapping[str, Any] = MappingProxyType({})  # `LinkContext.unique` of most contexts


class LinkContextError(LinkerError):
    """An invalid context operation (foreign/stale module, changed module, closed context).

    Attributes:
        reason: "context-mismatch", "stale", "module-changed", "key-occupied",
            "existing-key-missing" or "closed".
    """

    def __init__(self, message: str, *, reason: str, file: str | None = None) -> None:
        self.reason = reason
        super().__init__(message, file=file)


class Entry:
    """One module of a context (internal bookkeeping).

    Attributes:
        module: the provider: a `ModuleState`, `HostLibrary`, `SyntheticModule`, or a
            state borrowed from another context.
        key: canonical key; `aliases` more keys resolving to it.
        deps: providers of its DT_NEEDED entries, in order (entries of this context).
        bound: entries its relocations bound symbols to (no repeats).
        keep: objects outside the context it must keep alive (foreign providers).
        owned: the context maps / unmaps it (False for host, foreign and borrowed).
        how: how it was found ("RUNPATH of x", "host-provided"…), for `deps` output.
        loader: the entry that first needed it (the RPATH inheritance chain).

    `aliases`, `deps`, `keep` and `bound` are immutable values, replaced (never mutated)
    when they change: most entries never get any (a host library has no deps, most
    modules no foreign provider to keep), so an entry starts with shared empty ones.
    """

    # Slots, no __weakref__ (nothing refers to an entry weakly): every load keeps one per
    # module of its graph, host libraries included (issue 8, T8).
    __slots__ = ("id", "module", "key", "aliases", "deps", "bound", "keep",
                 "leases", "pinned", "nodelete", "owned", "search", "loader", "how",
                 "alive", "facade")

    def __init__(self, module: Any, key: str, *, owned: bool, how: str = "",
                 search: ModuleSearchInfo | None = None, loader: Entry | None = None,
                 nodelete: bool | None = None) -> None:
        self.id = next(_ids)
        self.module = module
        self.key = key
        self.aliases: tuple[str, ...] = ()
        self.deps: Sequence[Entry] = ()
        self.bound: tuple[Entry, ...] = ()
        self.keep: tuple[Any, ...] = ()
        self.leases = 0
        self.pinned = False
        if nodelete is None:  # the caller did not look at the module's dynamic section
            dyn = getattr(getattr(module, "image", None), "dynamic", None)
            nodelete = bool(dyn is not None and dyn.nodelete)
        self.nodelete = nodelete
        self.owned = owned
        self.search = search
        self.loader = loader
        self.how = how
        self.alive = True
        self.facade: Module | None = None

    @property
    def name(self) -> str:
        return str(getattr(self.module, "name", self.key))

    def view(self) -> Module:
        """The lease-less facade (closing it does nothing)."""
        facade = self.facade
        if facade is None:
            mod = self.module
            if isinstance(mod, Module):
                facade = mod
            else:
                facade = Module(mod)
                facade._deps_of = self
            self.facade = facade
        return facade

    def _dependency_views(self, facade: Module) -> list[Module]:
        return [d.view() for d in self.deps]

    def chain(self) -> list[ModuleSearchInfo]:
        """Search info of the modules that loaded this one, nearest first."""
        out: list[ModuleSearchInfo] = []
        e = self.loader
        while e is not None:  # ends: a loader is always an older entry (set once, in __init__)
            if e.search is not None:
                out.append(e.search)
            e = e.loader
        return out

    def __repr__(self) -> str:
        return f"<Entry {self.key} ({self.name})>"


_facades: dict[Lease, Lease] = {}  # every lease not yet released (insertion order)
_exit_state = [False, False]  # [exit hook registered, interpreter exiting]


def _facade_collected(lease: Lease) -> None:
    """Weak-reference callback: the root facade died with its lease still held."""
    if _facades.pop(lease, None) is not None and not _exit_state[1]:
        lease._collected()


def _release_at_exit() -> None:
    """Release every lease whose facade is still alive, newest first (the garbage
    collector is off meanwhile, as in ``weakref.finalize``'s exit hook); no facade
    death releases anything afterwards."""
    reenable = gc.isenabled()
    gc.disable()
    try:
        while _facades:
            lease = _facades.pop(next(reversed(_facades)))
            try:
                lease._collected()
            except Exception:
                sys.excepthook(*sys.exc_info())
    finally:
        _exit_state[1] = True
        if reenable:
            gc.enable()


class Lease(weakref.ref):
    """A reference on a module of a context; `Module.close()` of a load's root lands here.

    The lease is also the weak reference through which the death of its root facade
    releases it (what ``weakref.finalize`` did, without its per-object Python
    bookkeeping: an `_Info` record, an index, a registry keyed by the finalizer, ~70
    interpreter opcodes and a few hundred bytes per load; and one object instead of a
    lease plus a reference to the facade: issue 8, T8). While it is held, `_facades`
    keeps it alive (a reference the collector finds only inside the garbage it collects
    would not call back); `_release_at_exit` releases what is still held when the
    interpreter exits, newest first, as ``weakref.finalize``'s exit hook did. Compared
    and hashed by identity, not as a reference to the facade.

    Attributes:
        entry: the leased entry.
        pending_init: entries of the load still to initialize (``init=False``).
    """

    __slots__ = ("ctx", "entry", "released", "pending_init")
    __hash__ = object.__hash__
    __eq__ = object.__eq__

    def __new__(cls, facade: Module, ctx: LinkContext, entry: Entry) -> Lease:
        return super().__new__(cls, facade, _facade_collected)

    def __init__(self, facade: Module, ctx: LinkContext, entry: Entry) -> None:
        # (weakref.ref's own __init__ only checks its arguments: __new__ made the reference)
        self.ctx = ctx
        self.entry = entry
        self.released = False
        self.pending_init: Sequence[Entry] = ()  # replaced, never mutated

    @property
    def finalizer(self) -> Lease | None:
        """This lease while the death of its facade would release it, else None."""
        return self if self in _facades else None

    def _dependency_views(self, facade: Module) -> list[Module]:
        """`facade.dependencies` of the root facade, built on first access: facades of
        the dependency graph for this lease, each keeping the root facade (and so the
        lease) alive while the user holds it, as a dlopen handle would."""
        reachable = LinkContext._walk(self.entry)
        views: dict[int, Module] = {self.entry.id: facade}
        for x in reachable[1:]:
            m = Module(x.module)
            m._keep.append(facade)
            views[x.id] = m
        for x in reachable[1:]:
            views[x.id].dependencies = [views[d.id] for d in x.deps]
        return [views[d.id] for d in self.entry.deps]

    def release(self, module: Any = None) -> list[str]:
        """Drop the lease; unload what became unreachable. Idempotent. Returns the names
        of the modules unloaded, in unload order."""
        return [e.name for e in reversed(self.release_quietly())]

    def release_quietly(self) -> list[Entry]:
        """`release` for `Module.close`, which discards the names: the entries unloaded,
        dependencies first."""
        _facades.pop(self, None)  # released now: nothing to do when the facade dies
        return self.ctx._release(self)

    def _collected(self) -> None:
        """The root facade was garbage-collected. The collector may run in the middle of
        an operation of this very context (same thread): then the release waits until
        that operation ends, so it never sees the context half-changed."""
        ctx = self.ctx
        # Inside an operation of this thread: some operation is under way and this
        # thread holds the lock, so that operation is this thread's.
        if ctx._busy and ctx.lock._is_owned():  # type: ignore[attr-defined]  # C RLock
            ctx._pending.append(self)
            return
        # Never block in a finalizer: the collector may run while this thread holds another
        # lock (the TLS runtime's, say) that the context's current owner waits for — a
        # lock-order deadlock (issue 9 stress test). The owner applies it when its op ends.
        if not ctx.lock.acquire(blocking=False):
            ctx._pending.append(self)
            return
        try:
            ctx._release(self)
        finally:
            ctx.lock.release()

    def initialize(self, module: Any = None) -> None:
        """Run the pending initializers of the load that made this lease (deps first)."""
        self.ctx._initialize_pending(self)


class _Op:
    """``with ctx.op():`` — the context's lock plus the bookkeeping `Lease._collected`
    reads. A plain class, not a generator-based context manager: every load and close
    enters it several times."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: LinkContext) -> None:
        self.ctx = ctx

    def __enter__(self) -> None:
        ctx = self.ctx
        ctx.lock.acquire()
        ctx._busy += 1

    def __exit__(self, *exc: object) -> None:
        ctx = self.ctx
        ctx._busy -= 1
        ctx.lock.release()
        while ctx._pending and not ctx._busy:
            ctx._release(ctx._pending.pop(0))


class LinkContext:
    """An independent namespace of loaded modules (dlmopen's namespace, without its limit).

    Args:
        name: a label for messages.
        linker: the `Linker` used by `load` (default: a `Linker()` with default settings).

    Example:
        >>> ctx = relink.LinkContext()                               # doctest: +SKIP
        >>> lib = ctx.load("/path/libfoo.so")                         # doctest: +SKIP
        >>> ctx.promote_global(lib); ctx.close()                      # doctest: +SKIP
    """

    # Slots: every plain `relink.load` makes a context of its own (issue 8, T8).
    __slots__ = ("id", "name", "linker", "lock", "closed", "_busy", "_pending",
                 "globals", "unique", "_by_key", "_by_identity", "_by_module", "_order",
                 "__weakref__")

    def __init__(self, name: str | None = None, *, linker: Any = None) -> None:
        self.id = next(_ids)
        self.name = name or f"context-{self.id}"
        self.linker = linker
        self.lock = _RLock()
        self.closed = False
        self._busy = 0  # operations under way (they hold `lock`: one thread's)
        self._pending: list[Lease] = []  # leases collected during an operation
        # Replaced, never mutated: most contexts (every plain load's) never promote one.
        self.globals: tuple[Entry, ...] = ()
        # GNU_UNIQUE name -> binding; an empty shared mapping until a load binds one
        # (made by `PreparedLoad._publish`).
        self.unique: Mapping[str, Any] = _NO_UNIQUE
        self._by_key: dict[str, Entry] = {}
        # File identity -> entry (`_by_identity`) and id(module) -> entry (`_by_module`) in
        # one dict under both names: identities are tuples, the others ints, so the keys
        # never collide, and a plain load's context keeps one small dict instead of two
        # (~220 bytes per load; issue 8, T8).
        index: dict[Any, Entry] = {}
        self._by_identity: dict[Any, Entry] = index
        self._by_module: dict[int, Entry] = index
        self._order: list[Entry] = []  # publication order: dependencies first

    def op(self) -> _Op:
        """Hold the context for one operation (re-entrant); releases of leases whose
        facades were garbage-collected meanwhile are applied when it ends."""
        return _Op(self)  # made per operation: kept on the context it would be a cycle

    # -- loading --------------------------------------------------------------------

    def load(self, source: Any, **options: Any) -> Module:
        """Load `source` and its dependencies into this context (see `Linker.load`)."""
        linker = self.linker
        if linker is None:
            from relink.linker.linker import Linker

            linker = self.linker = Linker()
        return linker.load(self, source, **options)

    # -- queries --------------------------------------------------------------------

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.modules())

    def get(self, key: str) -> Module | None:
        """The module known under `key` (a lease-less view), or None."""
        e = self._by_key.get(key)
        return e.view() if e is not None else None

    def keys(self) -> list[str]:
        return list(self._by_key)

    def key_of(self, module: Any) -> str:
        """The canonical key of a module of this context."""
        return self.entry_of(module).key

    def modules(self) -> list[Module]:
        """Every module, in load order (dependencies first)."""
        return [e.view() for e in self._order]

    def dependencies(self, module: Any) -> list[Module]:
        """Providers of the module's DT_NEEDED entries, in order."""
        return [d.view() for d in self.entry_of(module).deps]

    def bindings(self, module: Any) -> list[Module]:
        """Modules its relocations bound symbols to (they stay loaded while it does)."""
        return [d.view() for d in self.entry_of(module).bound]

    def how_found(self, module: Any) -> str:
        """Why the module was chosen when first needed ("RUNPATH of x", "ld.so.cache"…)."""
        return self.entry_of(module).how

    def entry_of(self, module: Any) -> Entry:
        if isinstance(module, Entry):
            e: Entry | None = module
        else:
            if isinstance(module, str):
                e = self._by_key.get(module)
            else:
                target = module._state if isinstance(module, Module) else module
                e = self._by_module.get(id(target))
        if e is None or not e.alive:
            raise LinkContextError(f"{module!r} is not a module of {self.name}",
                                   reason="context-mismatch")
        if self._by_module.get(id(e.module)) is not e:
            raise LinkContextError(f"{e.name} belongs to another context or was unloaded",
                                   reason="stale")
        return e

    # -- registration ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise LinkContextError(f"{self.name} is closed", reason="closed")

    def _register(self, entries: Sequence[Entry],
                  identities: Mapping[Any, Entry] | None = None) -> None:
        """Commit entries, in order (the linker's publish step), and `identities`: the
        file identity of each entry the context maps (owned), which a later load uses to
        recognize another path or a hard link to the same file."""
        self._order += entries
        if identities:  # (before the module ids: the dict is shared, see __init__)
            by_identity = self._by_identity
            if not by_identity:  # nothing to keep: first come, as setdefault
                by_identity.update(identities)
            else:
                for ident, e in identities.items():
                    by_identity.setdefault(ident, e)
        # id(e.module) -> e for each entry, in C (no bytecode per entry)
        self._by_module.update(zip(map(id, map(_MODULE_OF, entries)), entries))
        by_key = self._by_key
        for e in entries:
            by_key.setdefault(e.key, e)
            for key in e.aliases:
                by_key.setdefault(key, e)

    def add_alias(self, module: Any, key: str) -> None:
        """Make `key` resolve to `module` (a key naming another module is an error)."""
        with self.op():
            e = self.entry_of(module)
            other = self._by_key.get(key)
            if other is not None and other is not e:
                raise LinkContextError(f"key {key!r} already names {other.name}",
                                       reason="key-occupied")
            if other is None:
                e.aliases += (key,)
                self._by_key[key] = e

    def insert(self, key: str, module: Any, deps: tuple[Any, ...] = ()) -> Module:
        """Register a prebuilt module (synthetic, host, or from another load) under `key`
        and return it with a lease. Its `deps` (modules of this context) keep loaded."""
        from relink.module import SyntheticModule

        with self.op():
            self._check_open()
            if key in self._by_key:
                raise LinkContextError(f"key {key!r} already names "
                                       f"{self._by_key[key].name}", reason="key-occupied")
            target = module._state if isinstance(module, Module) else module
            e = self._by_module.get(id(target))
            if e is None:
                e = Entry(target, key, owned=False, how="inserted")
                if isinstance(module, Module):
                    e.keep = (module,)
                e.deps = [self.entry_of(d) for d in deps]
                self._register((e,))
            else:
                e.aliases += (key,)
                self._by_key[key] = e
            if isinstance(target, SyntheticModule):
                e.facade = Module(target)
            return self._lease(e)

    def _lease(self, e: Entry) -> Module:
        facade = Module(e.module)
        # The facade keeps the context alive through its lease (`lease.ctx`).
        lease = facade._owner = facade._deps_of = Lease(facade, self, e)
        e.leases += 1
        _facades[lease] = lease
        if not _exit_state[0]:  # registered with the first lease, as weakref.finalize's
            _exit_state[0] = True
            atexit.register(_release_at_exit)
        return facade

    @staticmethod
    def _walk(e: Entry) -> list[Entry]:
        """`e` and every entry reachable over DT_NEEDED edges, breadth-first."""
        out: list[Entry] = []
        seen, queue = {e.id}, [e]
        while queue:
            x = queue.pop(0)
            out.append(x)
            for d in x.deps:
                if d.id not in seen:
                    seen.add(d.id)
                    queue.append(d)
        return out

    def acquire(self, module: Any) -> Module:
        """A new reference (lease) on a module of this context, as a new root facade."""
        with self.op():
            self._check_open()
            return self._lease(self.entry_of(module))

    def pin(self, module: Any) -> None:
        """Keep `module` loaded until the context closes (RTLD_NODELETE)."""
        with self.op():
            self.entry_of(module).pinned = True

    # -- scopes -----------------------------------------------------------------------

    def promote_global(self, module: Any) -> None:
        """Add the module and its direct dependencies to the global scope (RTLD_GLOBAL).

        Every later relocation in this context searches the global scope first.
        """
        with self.op():
            e = self.entry_of(module)
            for x in (e, *e.deps):
                if x not in self.globals:
                    self.globals += (x,)

    def demote_global(self, module: Any) -> None:
        """Remove the module from the global scope (already-bound references stay)."""
        with self.op():
            e = self.entry_of(module)
            self.globals = tuple(g for g in self.globals if g is not e)

    def global_scope(self) -> list[Any]:
        """The providers of the global scope, in order."""
        return [g.module for g in self.globals if g.alive]

    # -- unloading --------------------------------------------------------------------

    def release(self, module: Any) -> list[str]:
        """Release the lease a root facade holds (as `Module.close`); returns the names of
        the modules unloaded, in unload order."""
        lease = getattr(module, "_owner", None)
        if not isinstance(lease, Lease) or lease.ctx is not self:
            raise LinkContextError(f"{module!r} holds no lease of {self.name}",
                                   reason="context-mismatch")
        return lease.release()

    def _release(self, lease: Lease) -> list[Entry]:
        """Drop `lease` (once) and unload what became unreachable; returns the entries
        unloaded, dependencies first."""
        with self.op():
            if lease.released:
                return []
            lease.released = True
            e = lease.entry
            if not e.alive or self.closed:
                return []
            e.leases -= 1
            return self._collect()

    def _reachable(self) -> set[int]:
        stack = [e for e in self._order if e.leases > 0 or e.pinned or e.nodelete]
        seen: set[int] = set()
        while stack:
            e = stack.pop()
            if e.id in seen:
                continue
            seen.add(e.id)
            stack.extend(e.deps)
            stack.extend(e.bound)
        return seen

    def _collect(self) -> list[Entry]:
        """Unload every entry no root reaches; returns them, dependencies first."""
        live = self._reachable()
        # Nothing reachable (no lease, pin or NODELETE left): everything goes.
        dead = [e for e in self._order if e.id not in live] if live else list(self._order)
        if not dead:
            return dead
        self._detach(dead)
        self._unload(dead)
        return dead

    def _detach(self, dead: list[Entry]) -> None:
        if len(dead) == len(self._order):  # everything goes (a plain load's close)
            self._order, self.globals = [], ()
            self._by_key.clear()
            self._by_identity.clear()  # (and `_by_module`: the same dict)
            for e in dead:
                e.alive = False
            if self.unique:
                gone = {id(e.module) for e in dead}
                for name in [n for n, b in self.unique.items() if id(b[3]) in gone]:
                    del self.unique[name]  # type: ignore[attr-defined]
            return
        ids = {e.id for e in dead}
        self._order = [e for e in self._order if e.id not in ids]
        if self.globals:
            self.globals = tuple(g for g in self.globals if g.id not in ids)
        # (`_by_identity` is also `_by_module`: the module ids of `dead` go with it)
        for table in (self._by_key, self._by_identity):
            for k in [k for k, v in table.items() if v.id in ids]:
                del table[k]
        for e in dead:
            e.alive = False
        gone = {id(e.module) for e in dead}
        for name in [n for n, b in self.unique.items() if id(b[3]) in gone]:
            del self.unique[name]  # type: ignore[attr-defined]  # no longer mapped
        # An alias of an unloaded module falls back to another module that claimed it.
        for e in self._order:
            for key in (e.key, *e.aliases):
                self._by_key.setdefault(key, e)

    @staticmethod
    def _unload(dead: list[Entry]) -> None:
        """Finalize dependents first, then release every mapping (dead is deps-first)."""
        mapped = [m for e in reversed(dead) if e.owned and isinstance(m := e.module, ModuleState)]
        for st in mapped:
            try:
                st.finalize()
            except Exception:
                log.exception("finalizing %s failed", st.name)
        for st in mapped:
            try:
                st.release()
            except RelinkError:
                log.exception("releasing %s failed", st.name)
        for e in dead:
            e.deps = ()
            e.bound = ()
            e.keep = ()

    def _initialize_pending(self, lease: Lease) -> None:
        from relink.linker.linker import run_initializers

        with self.op():
            pending, lease.pending_init = lease.pending_init, []
            run_initializers([e for e in pending if e.alive])

    def close(self) -> None:
        """Finalize (dependents first) and release every module. Idempotent."""
        with self.op():
            if self.closed:
                return
            self.closed = True
            dead = list(self._order)
            self._detach(dead)
            self._unload(dead)

    def __enter__(self) -> LinkContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<relink.LinkContext {self.name} ({len(self._order)} modules)>"
