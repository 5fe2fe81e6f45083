"""Load templates: a repeated load replayed from the decisions of the previous one.

Linker layer, between `Linker.load` and the stages of `PreparedLoad`. Loading the same
root again (a plugin reloaded, a test harness loading a fresh copy per test) makes the
same decisions every time: the same dependency resolutions, the same load group and
scope, the same binding plans and relocation programs, the same initialization order.
Every layer below already caches what it can per file (parsed metadata, mapping recipes,
relocation programs), but each one still computes the key of its cache on every load.
A `Template` records the whole load's outcome once, and the next load of the same root
checks only what those decisions depend on:

* each dependency name is resolved again by `default_resolve` - the host policy's
  verdict and the search (remembered resolutions are re-checked by it: a library
  appearing in an earlier directory wins) - and must give the same host library, or
  the same path, found the same way (`how_found`), naming the same file;
* the process scope is searched (`Linker.process_scope`) as it was;
* each file must have the recorded identity (device, inode) and stamp (size, mtime_ns,
  ctime_ns), and map to the very `ParsedMetadata` object the template's relocation
  programs were compiled from.

Then the modules are mapped, relocated by their programs alone (`replay_module`) -
or, for a module whose relocations a program cannot express (TLS, COPY, IRELATIVE, own
IFUNC), by the generic loop with a binder replaying its binding plan -, protected,
published and initialized by the usual code, without graph walk, version checks or
resolution bookkeeping. Anything different makes the load take the normal stages
(which record a new template); a failure rolls back like any load.

Only plain loads are recorded or replayed: an absolute path into an empty context, a
native linker without custom resolvers, observers or lazy binding, no per-load key,
scope, interposition or observers, no GNU_UNIQUE binding, no dependency found by a
relative path (its $ORIGIN and aliases depend on the working directory) - see
`relink.linker.prepare.template_root` and `record`. This module is imported by the first
load that can be recorded (the second plain load of a root), not by a process that
loads each root once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relink.linker.context import Entry
from relink.loader import map_image
from relink.relocation.dynamic import relocate_module, replay_module
from relink.relocation.scope import Binder
from relink.state import ModuleState, State

if TYPE_CHECKING:
    from relink.elf.source import ElfSource
    from relink.linker.linker import PreparedLoad
    from relink.relocation.replay import Program

__all__ = ["MAX_TEMPLATES", "Stale", "Template", "record", "replay"]

MAX_TEMPLATES = 64  # per linker; a full table is cleared (roots loaded once pay nothing)


class Stale(Exception):
    """A template's check failed after modules were mapped: roll back, load normally."""


class _Module:
    """One entry of a recorded load (a file the load mapped, or a host library)."""

    __slots__ = ("key", "aliases", "how", "loader", "nodelete", "search", "deps",
                 "bound", "keep", "path", "identity", "stamp", "parsed", "program", "host")

    def __init__(self, e: Entry, index: dict[int, int], program: Program | None) -> None:
        self.key = e.key
        self.aliases = e.aliases  # after publish: every name the load gave it
        self.how = e.how
        self.loader = index[e.loader.id] if e.loader is not None else -1
        self.nodelete = e.nodelete
        self.search = e.search
        self.deps = tuple(index[d.id] for d in e.deps)
        self.bound = tuple(index[b.id] for b in e.bound)
        self.keep = e.keep
        self.program = program
        st = e.module
        if e.owned:
            src = st.image.source
            self.path: str | None = src.path
            self.identity = src.identity
            self.stamp = src.stamp
            self.parsed = st.image.parsed
            self.host = None
        else:
            self.path = self.identity = self.stamp = self.parsed = None
            self.host = st


class Template:
    """The decisions of one load of `root` (see the module docstring)."""

    __slots__ = ("root", "modules", "edges", "order", "process_scope", "_root_check",
                 "_checks", "_builds", "_relocs")

    def __init__(self, root: str, modules: tuple[_Module, ...],
                 edges: tuple[tuple[str, int, Any, tuple[Any, ...], int, str | None, str],
                              ...],
                 order: tuple[int, ...], process_scope: bool) -> None:
        self.root = root
        self.modules = modules  # in the load's breadth-first order (`PreparedLoad.new`)
        # (needed, owner index, owner search info, its loader chain, target index, the
        # path found (None: host), how it was found), in the order the load resolved them
        # (an owner always before its edges). The path is the edge's own: the same file
        # may be reached under several names (a symlink, a hard link, a path).
        self.edges = edges
        self.order = order  # relocation and initialization order (dependencies first)
        self.process_scope = process_scope  # the scope's tail (`scope_tail`) depends on it
        # The same facts as flat tuples, in the order `replay` reads them (unpacking a
        # tuple costs one instruction, reading an attribute one per field).
        self._root_check = (modules[0].identity, modules[0].stamp)
        self._checks = tuple((needed, search, chain, target, modules[target].host, path,
                              how, (modules[target].identity, modules[target].stamp))
                             for needed, _, search, chain, target, path, how in edges)
        self._builds = tuple((m.host, m.key, m.aliases, m.how, m.loader, m.nodelete,
                              m.search, m.parsed) for m in modules)
        self._relocs = tuple((i, modules[i].program, modules[i].deps, modules[i].bound,
                              modules[i].keep) for i in order)


def record(load: PreparedLoad, root: str) -> Template | None:
    """A template of a load that just completed (stages relocated and published), or
    None when something in it must be decided again by every load."""
    if load.unique or load.touched or load.root is not load.new[0] or load.root.how != "root":
        return None
    by_entry = load.replayed
    order = load._init_order
    if order is None:
        return None
    index = {e.id: i for i, e in enumerate(load.new)}
    modules: list[_Module] = []
    for e in load.new:
        if e.owned:
            st = e.module
            program = by_entry.get(e.id)  # None: relocated by the generic loop
            image = st.image
            if (e.id not in by_entry or image.parsed is None or not image.parsed.complete
                    or image.source.identity.kind != "file"
                    or st.state != State.INITIALIZED):
                return None
        elif type(e.module).__name__ != "HostLibrary" or e.how != "host-provided":
            return None
        else:
            program = None
        modules.append(_Module(e, index, program))
    edges = []
    for needed, owner, chain, found in load.resolutions:
        target = load.names.get(needed)
        if target is None or found.kind not in ("path", "host"):
            return None
        path = None
        if found.kind == "path":
            path = found.value
            if path[:1] != "/":  # relative to the working directory, which may change
                return None
        edges.append((needed, index[owner.id], owner.search, chain, index[target.id], path,
                      found.how))
    return Template(root, tuple(modules), tuple(edges), tuple(index[e.id] for e in order),
                    bool(load.linker.process_scope))


def replay(load: PreparedLoad, t: Template) -> bool:
    """Stages 1 and 2 of `load` from template `t`: True when done (stage "relocated"),
    False when a check failed before anything was mapped (nothing left behind).

    Raises:
        Stale: a check failed after mapping began (the caller rolls `load` back).
    """
    from relink.elf.source import open_source
    from relink.linker.resolvers import default_resolve

    sources: list[ElfSource | None] = [None] * len(t.modules)
    linker = load.linker
    search_config, host = linker.search, linker.host
    if bool(linker.process_scope) is not t.process_scope:
        return _abandon(load, sources, template=t)
    try:
        root = sources[0] = open_source(t.root)
        if (root.identity, root.stamp) != t._root_check:
            return _abandon(load, sources, template=t)
        acceptor = load._acceptor()
        for needed, search, chain, target, lib, path, how, check in t._checks:
            found = default_resolve(needed, search, chain, search=search_config, host=host,
                                    acceptor=acceptor)
            if lib is not None:
                if found.value is not lib:  # (a path or missing Found has another value)
                    return _abandon(load, sources, found.source, t)
                continue
            src = found.source
            if found.kind != "path" or found.value != path or found.how != how \
                    or src is None or (src.identity, src.stamp) != check:
                return _abandon(load, sources, src, t)
            if sources[target] is None:
                sources[target] = src
            else:  # another name for a file this load has (matched by identity)
                src.close()
    except BaseException:
        _abandon(load, sources)
        raise
    acceptor.close()  # (as `_prepare` ends: nothing opened stays open)
    _build(load, t, sources)
    _relocate(load, t)
    return True


def _abandon(load: PreparedLoad, sources: list[ElfSource | None],
             extra: ElfSource | None = None, template: Template | None = None) -> bool:
    if template is not None:
        _forget(load, template)  # outdated: the normal stages may record another
    for src in sources:
        if src is not None:
            src.close()
    if extra is not None:
        extra.close()
    if load.acceptor is not None:
        load.acceptor.close()
        load.acceptor = None
    return False


def _forget(load: PreparedLoad, t: Template) -> None:
    """Drop `t` from its linker's table (unless another template replaced it meanwhile)."""
    templates = load.linker._templates
    if templates.get(t.root) is t:
        templates.pop(t.root, None)


def _build(load: PreparedLoad, t: Template, sources: list[ElfSource | None]) -> None:
    """Map the files and make the entries, as `_prepare` would have."""
    mapper, executor = load.linker.mapper, load.linker.executor
    spec = load.spec
    entries: list[Entry] = []
    new, staged, idents = load.new, load.staged, load.idents
    load.stage = "preparing"
    try:
        for i, (lib, key, aliases, how, loader, nodelete, search, parsed) in \
                enumerate(t._builds):
            if lib is not None:
                e = Entry(lib, key, owned=False, how=how,
                          loader=entries[loader] if loader >= 0 else None, nodelete=False)
            else:
                src = sources[i]
                assert src is not None
                image = map_image(src, mapper=mapper, expect=spec)
                sources[i] = None  # the image's now (its fd is detached after the load)
                e = Entry(ModuleState(image, executor), key, owned=True, how=how,
                          loader=entries[loader] if loader >= 0 else None,
                          nodelete=nodelete, search=search)
                idents[src.identity] = e
            e.aliases = aliases
            entries.append(e)
            new.append(e)  # (from here a failure rolls it back with the others)
            staged[id(e.module)] = e
            if lib is None and image.parsed is not parsed:
                # Its metadata were evicted and parsed again: the template's programs
                # belong to the old objects and can never apply again.
                _forget(load, t)
                raise Stale(key)
    finally:
        for src in sources:
            if src is not None:
                src.close()
    load.root = entries[0]
    load.stage = "prepared"


def _relocate(load: PreparedLoad, t: Template) -> None:
    """Stage 2 by the recorded programs: scope, biases, protection, frames, bindings."""
    from relink.linker.linker import _register_frames
    from relink.linker.prepare import scope_tail

    new = load.new
    load.stage = "relocating"
    scope = [*(e.module for e in new), *scope_tail(load.linker)]
    bases = [p.image.base if isinstance(p, ModuleState) else 0 for p in scope]
    register_frames = _register_frames()
    linker = load.linker
    facts = None
    relocated = State.RELOCATED
    order = []
    for i, program, deps, bound, keep in t._relocs:
        e = new[i]
        order.append(e)
        st = e.module
        if deps:
            e.deps = tuple(map(new.__getitem__, deps))
        if program is not None:
            replay_module(st, program, [*bases, st.image.base, 0])
        else:  # TLS, COPY, IFUNC...: the generic loop, the binder replaying its plan
            if facts is None:
                facts = Binder.scope_facts(scope)
            relocate_module(st, Binder(st, scope, unique=load.unique, scope_facts=facts),
                            tls=linker.tls, fallback=linker.fallback)
        st.scope = scope
        st.state = relocated
        st.image.finish_protection()
        register_frames(st)
        if bound:
            e.bound = tuple(map(new.__getitem__, bound))
        if keep:
            e.keep = keep
    load._init_order = load._init_new = order
    load.stage = "relocated"
