"""Who provides a dependency: resolver requests, results and the default resolution.

Linker layer. For each DT_NEEDED name the linker (after checking what its context
already holds) asks the user's resolvers in order, then the default resolution:

1. the host policy (`HostPolicy`): the glibc family and libraries the process already
   has are served by the system's dynamic linker, never mapped twice;
2. the search path (`SearchPathResolver`): DT_RPATH (inherited), LD_LIBRARY_PATH
   (opt-in), DT_RUNPATH, fixed dirs, /etc/ld.so.cache, default dirs. A candidate of
   another machine or class is skipped, as ld.so does.

A custom resolver is any callable ``resolver(request) -> result`` or any object with a
``resolve(request)`` method (other than a `SearchPathResolver`, which configures step 2).
The result may be:

* a path (``str`` / ``os.PathLike``) or ``bytes`` -> that file is loaded;
* ``Existing("key")`` -> a module the context already holds under that key;
* a `Module`, a `SyntheticModule`, a host library or any symbol provider -> used as is
  (a prebuilt module; its own dependencies are its business);
* a ``Mapping`` of names to addresses / callables -> a synthetic module of that name;
* ``None`` -> "not mine": the next resolver (and finally the default) is asked;
* ``Unresolved("why")`` -> stop: the dependency is not found.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from relink._record import FrozenRecord, Record
from relink.elf.header import parse_header
from relink.elf.source import ElfSource, open_source
from relink.errors import RelinkError
from relink.linker.search import (
    FROM_CACHE,
    FROM_DEFAULT,
    Candidate,
    ModuleSearchInfo,
    SearchPathResolver,
)
from relink.loader import cached_header
from relink.runtime.host import HostPolicy

__all__ = ["Acceptor", "Existing", "Found", "ResolveRequest", "Unresolved", "default_resolve"]


class Existing(FrozenRecord):
    """Resolver result: the module the context already holds under `key`."""

    __slots__ = ("key",)
    key: str

    def __init__(self, key: str) -> None:
        self._set(key)


class Unresolved(FrozenRecord):
    """Resolver result: the dependency cannot be provided (stops the search)."""

    __slots__ = ("reason",)
    reason: str

    def __init__(self, reason: str = "a resolver said so") -> None:
        self._set(reason)


class Found(Record):
    """A resolved dependency, normalized (internal).

    Attributes:
        kind: "path", "bytes", "existing", "module" or "host".
        value: the path, the bytes, the key, or the provider object.
        how: why it was chosen ("RUNPATH of libx.so", "ld.so.cache", "host-provided"…).
        tried: the candidates tried before it (all of them when not found).
        source: an `ElfSource` already opened (and header-checked) for "path".
    """

    __slots__ = ("kind", "value", "how", "tried", "source")

    def __init__(self, kind: str, value: Any, how: str, tried: list[Candidate] | None = None,
                 source: ElfSource | None = None) -> None:
        self.kind = kind
        self.value = value
        self.how = how
        self.tried: list[Candidate] = [] if tried is None else tried
        self.source = source


class ResolveRequest:
    """What a resolver is asked.

    Attributes:
        needed: the DT_NEEDED name (or the key given for a root).
        owner: the `Module` whose DT_NEEDED names it (None for a root).
        search: the owner's `ModuleSearchInfo` (its RPATH/RUNPATH/$ORIGIN), or None.
        chain: search info of the modules that loaded the owner, nearest first.
        context: the `LinkContext` being loaded into.
        is_root: True when resolving the root of a load.
    """

    def __init__(self, needed: str, owner: Any, search: ModuleSearchInfo | None,
                 chain: Sequence[ModuleSearchInfo], context: Any, is_root: bool,
                 default: Callable[[], Found | None]) -> None:
        self.needed = needed
        self.owner = owner
        self.search = search
        self.chain = tuple(chain)
        self.context = context
        self.is_root = is_root
        self._default = default

    def default(self) -> str | None:
        """The path the default search (without the host policy) would load, or None."""
        found = self._default()
        if found is None or found.kind != "path":
            return None
        return str(found.value)

    def __repr__(self) -> str:
        owner = getattr(self.owner, "name", None)
        return f"<ResolveRequest {self.needed!r} needed by {owner or '<root>'}>"


class Acceptor:
    """``accept(path)`` for `SearchPathResolver.resolve`: opens a candidate, checks it is
    an ELF file of the wanted machine and class, and keeps it open for the loader.

    Attributes:
        skipped: (path, why) of candidates that exist but were rejected.
    """

    def __init__(self, machine: int | None, elf_class: int | None) -> None:
        self.machine = machine
        self.elf_class = elf_class
        self.opened: dict[str, ElfSource] = {}
        self.skipped: list[tuple[str, str]] = []

    def __call__(self, path: str) -> bool:
        try:
            src = open_source(path)
        except (RelinkError, OSError):
            return False  # missing or unreadable: the next candidate
        try:
            # An unchanged file seen before: its header is known (no read needed).
            eh = cached_header(src) or parse_header(src)
        except RelinkError as exc:
            src.close()
            self.skipped.append((path, f"not a loadable ELF file ({exc.message})"))
            return False
        if self.machine is not None and (eh.e_machine != self.machine
                                         or eh.elf_class != self.elf_class):
            src.close()
            self.skipped.append((path, f"wrong machine/class ({eh.machine_name}, "
                                       f"ELF{eh.elf_class})"))
            return False
        self.opened[path] = src
        return True

    def take(self, path: str) -> ElfSource:
        return self.opened.pop(path)

    def close(self) -> None:
        for src in self.opened.values():
            src.close()
        self.opened.clear()


def default_resolve(needed: str, owner: ModuleSearchInfo | None,
                    chain: Sequence[ModuleSearchInfo], *, search: SearchPathResolver,
                    host: HostPolicy | None, acceptor: Acceptor) -> Found:
    """Host policy, then the search path. Returns a `Found` of kind "host" or "path",
    or of kind "missing" (value None) whose `tried` lists every candidate."""
    if host is not None and "/" not in needed:
        lib = host.provides(needed)
        if lib is not None:
            return Found("host", lib, "host-provided")
    chain = tuple(chain)
    key = (id(search), id(owner), tuple(map(id, chain)), needed)
    hit = _resolved.get(key)
    if hit is not None and hit[0] is search and hit[1] is owner and hit[2] == chain:
        found = _replay(hit[3], acceptor)
        if found is not None:
            return found
    path, tried = search.resolve(needed, owner, chain, accept=acceptor)
    if path is not None and not any(c.reason in _LATE for c in tried):
        # Found before the ld.so.cache step: the same candidates, in the same order,
        # for as long as the search configuration and the modules' facts are these.
        if len(_resolved) >= 1024:
            _resolved.clear()
        _resolved[key] = (search, owner, chain, tuple(tried))
    if path is None:
        extra = [Candidate(p, f"skipped: {why}") for p, why in acceptor.skipped]
        acceptor.skipped.clear()
        return Found("missing", None, "not found", tried + extra)
    acceptor.skipped.clear()
    return Found("path", path, tried[-1].reason, tried, acceptor.take(path))


_LATE = frozenset((FROM_CACHE, FROM_DEFAULT))
_resolved: dict[tuple[Any, ...], tuple[Any, Any, Any, tuple[Candidate, ...]]] = {}


def _replay(tried: tuple[Candidate, ...], acceptor: Acceptor) -> Found | None:
    """A resolution found before among the configuration's own directories, checked
    again: every earlier candidate must still be refused and the winner accepted (that
    is what the full search would conclude). None: the file system changed, search."""
    *before, winner = tried
    for c in before:
        if acceptor(c.path):  # a file appeared there: the full search decides
            acceptor.take(c.path).close()
            acceptor.skipped.clear()
            return None
    ok = acceptor(winner.path)
    acceptor.skipped.clear()
    if not ok:
        return None
    return Found("path", winner.path, winner.reason, list(tried), acceptor.take(winner.path))


def classify(result: Any, needed: str) -> Found | None:
    """Normalize a custom resolver's return value (see the module docstring)."""
    from collections.abc import Mapping

    from relink.module import Module, SyntheticModule

    if result is None:
        return None
    if isinstance(result, Unresolved):
        return Found("missing", None, f"custom resolver: {result.reason}")
    if isinstance(result, Existing):
        return Found("existing", result.key, "custom resolver (existing key)")
    if isinstance(result, (str, os.PathLike)):
        return Found("path", os.fspath(result), "custom resolver")
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Found("bytes", bytes(result), "custom resolver (bytes)")
    if isinstance(result, Mapping):
        return Found("module", SyntheticModule(needed, result), "custom resolver (synthetic)")
    if isinstance(result, Module) or hasattr(result, "lookup"):
        return Found("module", result, "custom resolver (module)")
    raise TypeError(f"resolver for {needed!r} returned {type(result).__name__}: expected a "
                    "path, bytes, Existing(key), a module, a mapping, None or Unresolved")


def call_resolver(resolver: Any, request: ResolveRequest) -> Any:
    """Call a resolver given as a callable or as an object with ``resolve(request)``."""
    method = getattr(resolver, "resolve", None)
    if method is not None and not isinstance(resolver, SearchPathResolver):
        return method(request)
    if callable(resolver):
        return resolver(request)
    raise TypeError(f"{resolver!r} is not a resolver (callable or .resolve(request))")
