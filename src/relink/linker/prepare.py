"""Stage 1 of a load: resolve the DT_NEEDED graph breadth-first and map new modules.

Linker layer. `GraphBuilder` is the part of `PreparedLoad` (relink.linker.linker) that
finds each dependency - already in the context or this load (key, SONAME alias, file
identity), from a custom resolver, from the host policy or through the search path -
and maps what is new, after the ``on_before_load`` observers had their say. Nothing
runs and the context is not modified; keys and identities are only staged.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from relink.elf.header import parse_header
from relink.elf.source import ElfSource, open_source
from relink.errors import RelinkError, UnresolvedDependencyError
from relink.linker.context import Entry, LinkContext, LinkContextError
from relink.linker.resolvers import (
    Acceptor,
    Found,
    ResolveRequest,
    call_resolver,
    classify,
    default_resolve,
)
from relink.linker.search import ModuleSearchInfo
from relink.loader import map_image
from relink.module import Module, SyntheticModule
from relink.runtime.host import PROCESS
from relink.state import ModuleState

__all__ = ["GraphBuilder", "search_info"]

_DF_1_NODEFLIB = 0x800


def search_info(st: ModuleState) -> ModuleSearchInfo:
    """The search facts (RPATH, RUNPATH, $ORIGIN, NODEFLIB) of a mapped module."""
    dyn = st.image.dynamic
    path = st.path
    if path is not None and not path.startswith("/"):
        path = os.path.abspath(path)  # relative to the cwd of now, not of the cache
    return _search_info(st.name, path, dyn.rpath if dyn else None,
                        dyn.runpath if dyn else None,
                        bool(dyn and dyn.flags_1 & _DF_1_NODEFLIB))


@lru_cache(maxsize=1024)
def _search_info(name: str, path: str | None, rpath: str | None, runpath: str | None,
                 nodeflib: bool) -> ModuleSearchInfo:
    # Pure (abspath of the same string, immutable result), and paid on every load.
    return ModuleSearchInfo.from_dynamic(name, path, rpath=rpath, runpath=runpath,
                                         nodeflib=nodeflib)


def scope_tail(linker: Any) -> list[Any]:
    """What every scope of a load ends with: the process (``dlsym(RTLD_DEFAULT)``), or a
    foreign backend's runtime providers."""
    return [PROCESS] if linker.process_scope and linker.mapper.native else \
        list(getattr(linker.mapper, "providers", ()))


def template_root(load: Any, source: Any) -> str | None:
    """The root path when this load may be recorded or replayed from a load template
    (relink.linker.warm), else None: a plain load of an absolute path into an empty
    context by a native linker without custom resolvers, observers or lazy binding."""
    if type(source) is not str:
        if not isinstance(source, os.PathLike):
            return None
        source = os.fspath(source)
        if type(source) is not str:
            return None
    linker = load.linker
    ctx = load.ctx
    if (source[:1] != "/" or load.key is not None or load.name is not None
            or load.caller is not None or load.extra or load.interpose_map is not None
            or load.observers or linker.resolvers or linker.lazy
            or not linker.mapper.native or ctx._order or ctx.globals or ctx.unique):
        return None
    return source


def _is_source(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike, bytes, bytearray, memoryview, int, ElfSource)) \
        or hasattr(obj, "read") or hasattr(obj, "fileno")


class GraphBuilder:
    """Resolution and mapping for `PreparedLoad` (its attributes are set there)."""

    linker: Any
    ctx: LinkContext
    key: str | None
    name: str | None
    caller: Entry | None
    observers: list[Any]
    stage: str
    root: Entry | None
    new: list[Entry]
    staged: dict[int, Entry]
    touched: dict[int, Entry]
    resolutions: list[tuple[str, Entry, tuple[Any, ...], Found]]
    names: dict[str, Entry]
    idents: dict[Any, Entry]
    spec: Any
    acceptor: Acceptor | None

    def _known(self, name: str) -> Entry | None:
        e = self.names.get(name)
        if e is None:
            e = self.ctx._by_key.get(name)
            if e is not None:
                self.touched[e.id] = e
        return e

    def _acceptor(self) -> Acceptor:
        if self.acceptor is None:
            spec = self.spec
            self.acceptor = Acceptor(spec.e_machine if spec else None,
                                     spec.elf_class if spec else None)
        elif self.acceptor.machine is None and self.spec is not None:
            # The target became known with the root: skip other machines from now on.
            self.acceptor.machine = self.spec.e_machine
            self.acceptor.elf_class = self.spec.elf_class
        return self.acceptor

    def _prepare(self, source: Any) -> None:
        self.stage = "preparing"
        root = self._root(source)
        self.root = root
        names, by_key = self.names, self.ctx._by_key
        queue = [root] if root.owned and root in self.new else []
        for e in queue:  # grows while iterated: breadth-first
            dyn = e.module.image.dynamic
            if dyn is None or not dyn.needed:
                continue
            deps: list[Entry] = []
            e.deps = deps  # filled in place: a failure midway leaves the edges found
            for needed in dyn.needed:
                dep = names.get(needed)  # `_known`, inlined: once per DT_NEEDED entry
                if dep is None:
                    dep = by_key.get(needed)
                    if dep is not None:
                        self.touched[dep.id] = dep
                    else:
                        dep = self._dependency(needed, e)
                        # Mapped just now for `e` (not found again by identity): walk it.
                        if dep.loader is e and dep.owned and dep is not root \
                                and dep not in queue and dep in self.new:
                            queue.append(dep)
                    names.setdefault(needed, dep)
                deps.append(dep)
        if self.acceptor is not None:
            self.acceptor.close()
        self.stage = "prepared"

    def _root(self, source: Any) -> Entry:
        if not _is_source(source):
            return self._adopt(source, self.key or getattr(source, "name", None) or "<module>",
                               "root", None)
        if isinstance(source, str) and self.key is None and self._known(source) is not None:
            e = self._known(source)
            assert e is not None
            return e
        if self.key is not None and self._known(self.key) is not None:
            e = self._known(self.key)
            assert e is not None
            return e
        key = self.key or (os.fspath(source) if isinstance(source, (str, os.PathLike))
                           else None)
        found: Found | None = None
        if isinstance(source, str):
            found = self._custom(source, None, is_root=True) if self.linker.resolvers else None
            if found is None and "/" not in source and not os.path.exists(source):
                owner = self.caller
                found = default_resolve(source, owner.search if owner else None,
                                        owner.chain() if owner else [],
                                        search=self.linker.search, host=None,
                                        acceptor=self._acceptor())
        if found is not None:
            e = self._materialize(found, key or source, None, root=True)
            self.names.setdefault(key or source, e)  # the requested key names the root
            return e
        src = open_source(source, name=self.name)
        return self._from_source(src, key, None, "root", root=True)

    def _custom(self, needed: str, owner: Entry | None, *, is_root: bool) -> Found | None:
        if not self.linker.resolvers:
            return None
        search = owner.search if owner else (self.caller.search if self.caller else None)
        chain = owner.chain() if owner else []

        def default() -> Found | None:
            return default_resolve(needed, search, chain, search=self.linker.search,
                                   host=None, acceptor=self._acceptor())

        req = ResolveRequest(needed, owner.view() if owner else None, search, chain, self.ctx,
                             is_root, default)
        for resolver in self.linker.resolvers:
            found = classify(call_resolver(resolver, req), needed)
            if found is not None:
                return found
        return None

    def _dependency(self, needed: str, owner: Entry) -> Entry:
        found = self._custom(needed, owner, is_root=False) if self.linker.resolvers else None
        if found is None:
            chain = owner.chain()
            found = default_resolve(needed, owner.search, chain,
                                    search=self.linker.search, host=self.linker.host,
                                    acceptor=self._acceptor())
            # The decision, for a load template (relink.linker.warm) to check again.
            self.resolutions.append((needed, owner, tuple(chain), found))
        return self._materialize(found, needed, owner)

    def _materialize(self, found: Found, needed: str, owner: Entry | None, *,
                     root: bool = False) -> Entry:
        kind = found.kind
        if kind == "path":  # the usual case first
            src = found.source if found.source is not None else open_source(found.value)
            return self._from_source(src, needed if root else None, owner, found.how,
                                     root=root)
        if kind == "host":  # a `HostLibrary`: no image, so no DF_1_NODELETE
            return self._adopt(found.value, needed, found.how, owner, nodelete=False)
        if kind == "missing":
            label = owner.module.image.label if owner is not None else None
            raise UnresolvedDependencyError(needed, needed_by=label,
                                            searched=[str(c) for c in found.tried]
                                            or [found.how])
        if kind == "existing":
            e = self._known(found.value)
            if e is None:
                raise LinkContextError(f"resolver for {needed!r} returned Existing("
                                       f"{found.value!r}) but the context has no such key",
                                       reason="existing-key-missing",
                                       file=owner.module.image.label if owner else None)
            return e
        if kind == "module":
            return self._adopt(found.value, needed, found.how, owner)
        if kind == "bytes":
            src = open_source(found.value, name=needed.rsplit("/", 1)[-1])
        else:  # an unknown kind: treated as a path, as before
            src = found.source if found.source is not None else open_source(found.value)
        return self._from_source(src, needed if root else None, owner, found.how, root=root)

    def _adopt(self, obj: Any, key: str, how: str, owner: Entry | None, *,
               nodelete: bool | None = None) -> Entry:
        target = obj._state if isinstance(obj, Module) else obj
        e = self.ctx._by_module.get(id(target))
        if e is not None:
            self.touched[e.id] = e
            return e
        e = self.staged.get(id(target))
        if e is not None:  # adopted by this load already
            return e
        e = Entry(target, key, owned=False, how=how, loader=owner, nodelete=nodelete)
        if isinstance(obj, Module):
            e.keep = (obj,)
        if isinstance(target, SyntheticModule):
            e.facade = Module(target)
        self.new.append(e)
        self.staged[id(target)] = e
        self.names.setdefault(key, e)
        return e

    def _from_source(self, src: ElfSource, key: str | None, owner: Entry | None, how: str,
                     *, root: bool = False) -> Entry:
        ident = src.identity
        same = self.idents.get(ident) or self.ctx._by_identity.get(ident)
        if same is not None:
            src.close()
            if same.alive and same not in self.new:
                self.touched[same.id] = same
            if key:
                self.names.setdefault(key, same)
            return same
        try:
            if self.observers:
                src = self._before_load(src, owner)
            image = map_image(src, mapper=self.linker.mapper, expect=self.spec)
        except BaseException as exc:
            src.close()
            if owner is not None and isinstance(exc, RelinkError):
                exc.add_note(f"relink: {src.label} is needed by {owner.module.image.label} "
                             f"(found through {how})")
            raise
        st = ModuleState(image, self.linker.executor)
        if self.spec is None:
            self.spec = image.spec
        path = src.path  # st.path: `search_info(st)`, inlined (paid on every load)
        if key is None:
            key = path or (src.name if src.name != "<memory>" else f"<memory#{ident.a}>")
        full = path if path is None or path[:1] == "/" else os.path.abspath(path)
        dyn = image.dynamic
        if dyn is None:
            e = Entry(st, key, owned=True, how=how, loader=owner, nodelete=False,
                      search=_search_info(st.name, full, None, None, False))
        else:
            e = Entry(st, key, owned=True, how=how, loader=owner, nodelete=dyn.nodelete,
                      search=_search_info(st.name, full, dyn.rpath, dyn.runpath,
                                          bool(dyn.flags_1 & _DF_1_NODEFLIB)))
        self.new.append(e)
        self.staged[id(st)] = e
        if ident.kind == "file":
            self.idents[ident] = e
        names = self.names
        names.setdefault(key, e)
        soname = st.soname
        if soname and soname != key:
            e.aliases = (soname,)
            names.setdefault(soname, e)
        if path and full and full != key:
            e.aliases += (full,)
            names.setdefault(full, e)
        return e

    def _before_load(self, src: ElfSource, owner: Entry | None) -> ElfSource:
        if not self.observers:
            return src
        # relink.observer is imported by the first load that has observers.
        from relink.observer import BeforeLoadEvent, implemented

        hooks = implemented(self.observers, "on_before_load")
        if not hooks:
            return src
        ev = BeforeLoadEvent(src.name, src.path, owner.name if owner else None,
                             parse_header(src), src)
        for hook in hooks:
            hook(ev)
        if ev.replacement is not None:
            src.close()
            src = open_source(ev.replacement, name=ev.name)
        elif ev.name != src.name:
            src.name = ev.name
        return src

