"""Library search-path logic of ``ld.so``, as data and pure functions.

Part of the *linker* layer of relink (input -> elf -> arch -> memory -> loader
-> relocation -> linker).  Given a ``DT_NEEDED`` (or ``dlopen``) name, the
module that asked for it and the chain of modules that loaded that module,
:class:`SearchPathResolver` computes the ordered list of candidate paths that
glibc's ``_dl_map_object`` would try, each tagged with a short human-readable
reason.  Nothing here opens a library: :meth:`SearchPathResolver.resolve`
delegates every check (existence, ELF class / machine match) to a caller
supplied ``accept`` callable.  The only file this module reads is
``/etc/ld.so.cache`` (through :mod:`relink.linker.ldcache`), and only when
the cache is enabled and not injected.

Search order for a name without ``/`` (glibc ``elf/dl-load.c``):

1. ``DT_RPATH`` of the requesting module, then of each module up its loader
   chain (each expanded with *its own* ``$ORIGIN``) -- skipped entirely when
   the requesting module has a ``DT_RUNPATH`` (even an empty one).  A module
   in the chain that has ``DT_RUNPATH`` contributes no ``DT_RPATH`` (glibc
   drops ``DT_RPATH`` when both are present).
2. ``LD_LIBRARY_PATH`` (opt-in here; ``:`` or ``;`` separated; ``$ORIGIN`` is
   the executable's directory).
3. ``DT_RUNPATH`` of the requesting module only (never inherited).
4. relink's *fixed* directories.  This step does not exist in ``ld.so``; we
   put it after everything the binaries and the environment ask for and
   before the system-wide sources (cache, default dirs), so a fixed directory
   can supply a library the system lacks, or shadow a system copy, without
   overriding an explicit RPATH/RUNPATH/LD_LIBRARY_PATH.
5. ``ld.so.cache`` entries for the name (filtered to the host's ELF flavour).
6. The default system directories.

When the requesting module is marked ``DF_1_NODEFLIB``, step 6 is skipped and
cache hits located in (or below) a default directory are dropped.  A name
containing ``/`` is used as is (after dynamic string token expansion with the
requester's ``$ORIGIN``) and is the only candidate.  Duplicate paths are
removed, keeping the first occurrence and its reason.

Not modelled: glibc-hwcaps / legacy hwcap subdirectories that ``ld.so`` also
probes below each directory, and secure-mode (setuid) restrictions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from relink._record import FrozenRecord
from relink.linker.tokens import (
    HOST_DEFAULT,
    LD_SO_CACHE_PATH,
    TokenValue,
    default_system_dirs,
    expand_tokens,
    host_lib_token,
    host_multiarch_triplet,
    host_platform,
    join_dir,
    normalize_dir,
    split_search_list,
)

if TYPE_CHECKING:
    from relink.linker.ldcache import LdCache

__all__ = [
    "HOST_DEFAULT",
    "Candidate",
    "ModuleSearchInfo",
    "SearchPathResolver",
    "TokenValue",
    "default_system_dirs",
    "expand_tokens",
    "host_lib_token",
    "host_multiarch_triplet",
    "host_platform",
    "normalize_dir",
    "split_search_list",
]


class Candidate(FrozenRecord):
    """One path to try, with why it is on the list (e.g. ``"RUNPATH of libfoo.so"``)."""

    __slots__ = ("path", "reason")
    path: str
    reason: str

    def __init__(self, path: str, reason: str) -> None:
        self._set(path, reason)

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


def _as_tuple(values: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        return (values,)
    return tuple(values)


class ModuleSearchInfo(FrozenRecord):
    """What the search needs to know about a loaded (or loading) module.

    ``rpath`` / ``runpath`` hold the raw, unexpanded ``DT_RPATH`` /
    ``DT_RUNPATH`` strings (each may be ``:``-separated; a single string is
    accepted too).  ``has_runpath`` records the *presence* of ``DT_RUNPATH``:
    an empty one still suppresses the ``DT_RPATH`` search.  It is forced to
    ``True`` when ``runpath`` is non-empty.  ``origin`` is the module's
    directory (``$ORIGIN``), ``None`` if unknown.  ``nodeflib`` mirrors
    ``DF_1_NODEFLIB``.
    """

    __slots__ = ("name", "origin", "rpath", "runpath", "has_runpath", "nodeflib")
    name: str
    origin: str | None
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    has_runpath: bool
    nodeflib: bool

    def __init__(self, name: str, origin: str | None, rpath: str | Iterable[str] = (),
                 runpath: str | Iterable[str] = (), has_runpath: bool = False,
                 nodeflib: bool = False) -> None:
        rpath, runpath = _as_tuple(rpath), _as_tuple(runpath)
        self._set(name, origin, rpath, runpath, has_runpath or bool(runpath), nodeflib)

    @classmethod
    def from_dynamic(
        cls,
        name: str,
        file_path: str | None,
        *,
        rpath: str | None = None,
        runpath: str | None = None,
        nodeflib: bool = False,
    ) -> ModuleSearchInfo:
        """Build from a module's file path and its ``DT_RPATH``/``DT_RUNPATH``.

        ``None`` means the tag is absent; ``""`` means present but empty.
        """
        origin = os.path.dirname(os.path.abspath(file_path)) if file_path else None
        return cls(
            name=name,
            origin=origin,
            rpath=() if rpath is None else (rpath,),
            runpath=() if runpath is None else (runpath,),
            has_runpath=runpath is not None,
            nodeflib=nodeflib,
        )


# -- the resolver -------------------------------------------------------------


@lru_cache(maxsize=512)
def _search_dirs_memo(resolver: SearchPathResolver, owner: ModuleSearchInfo | None,
                      chain: tuple[ModuleSearchInfo, ...]) -> tuple[tuple[str, str], ...]:
    """`SearchPathResolver.search_dirs`, memoized: a pure function of the resolver's
    configuration and the modules' search info (files are checked later, by `accept`)."""
    return tuple(resolver.search_dirs(owner, chain))


# Candidate reasons of the steps whose answers depend on more than the search
# configuration and the modules' search facts (the ld.so.cache file, the default dirs).
DIRECT, FROM_CACHE, FROM_DEFAULT = "direct path", "ld.so.cache", "default dir"

_first_memo: dict[tuple[int, int, tuple[int, ...], str],
                  tuple[object, object, object, tuple[Candidate, ...], frozenset[str]]] = {}


def _first_candidates(resolver: SearchPathResolver, owner: ModuleSearchInfo | None,
                      chain: tuple[ModuleSearchInfo, ...],
                      name: str) -> tuple[tuple[Candidate, ...], frozenset[str]]:
    """Steps 1-4 (RPATH, LD_LIBRARY_PATH, RUNPATH, fixed dirs) for `name`, de-duplicated,
    and their normalised paths. Memoized by the identity of the (immutable) arguments,
    checked on a hit: hashing the dataclasses would cost more than the answer saves."""
    key = (id(resolver), id(owner), tuple(map(id, chain)), name)
    hit = _first_memo.get(key)
    if hit is not None and hit[0] is resolver and hit[1] is owner and hit[2] == chain:
        return hit[3], hit[4]
    seen: set[str] = set()
    out: list[Candidate] = []
    for directory, reason in _search_dirs_memo(resolver, owner, chain):
        path = join_dir(directory, name)
        norm = normalize_dir(path)
        if norm not in seen:
            seen.add(norm)
            out.append(Candidate(path, reason))
    if len(_first_memo) > 1024:
        _first_memo.clear()
    result = tuple(out), frozenset(seen)
    _first_memo[key] = (resolver, owner, chain, *result)
    return result


class _Collector:
    def __init__(self) -> None:
        self.items: list[Candidate] = []
        self._seen: set[str] = set()

    def add(self, path: str, reason: str) -> None:
        key = normalize_dir(path)
        if key not in self._seen:
            self._seen.add(key)
            self.items.append(Candidate(path, reason))


def _under_any(path: str, dirs: Iterable[str]) -> bool:
    """True if ``path`` lies in (or below) one of ``dirs`` (glibc's prefix test)."""
    norm = normalize_dir(path)
    return any(norm.startswith(d.rstrip("/") + "/") for d in dirs)


def _dedup_dirs(dirs: Iterable[str]) -> tuple[str, ...]:
    result: list[str] = []
    for directory in dirs:
        norm = normalize_dir(directory)
        if norm not in result:
            result.append(norm)
    return tuple(result)


class SearchPathResolver(FrozenRecord):
    """Search configuration plus the candidate computation.

    * ``fixed_dirs``: relink's extra directories (normalised, de-duplicated),
      searched after ``DT_RUNPATH`` and before ``ld.so.cache``.
    * ``use_ld_library_path``: opt-in.  ``ld_library_path`` gives the value
      explicitly; when it is ``None`` the environment's ``LD_LIBRARY_PATH``
      is read once, at construction.
    * ``use_ld_cache``: consult ``ld_cache`` (or, when ``None``,
      ``LdCache.load(ld_cache_path)`` lazily) with ``machine_flags``
      (``None`` = host).
    * ``use_default_dirs``: search ``default_dirs`` (``None`` = host's
      :func:`default_system_dirs`).
    * ``lib`` / ``platform``: ``$LIB`` / ``$PLATFORM`` values.
    * ``executable_origin``: ``$ORIGIN`` for ``LD_LIBRARY_PATH`` (``None`` =
      origin of the last module of the loader chain, else of the owner).
    """

    __slots__ = ("fixed_dirs", "use_ld_library_path", "ld_library_path", "use_ld_cache",
                 "ld_cache", "ld_cache_path", "machine_flags", "use_default_dirs",
                 "default_dirs", "lib", "platform", "executable_origin")
    fixed_dirs: tuple[str, ...]
    use_ld_library_path: bool
    ld_library_path: str | None
    use_ld_cache: bool
    ld_cache: LdCache | None
    ld_cache_path: str
    machine_flags: frozenset[int] | None
    use_default_dirs: bool
    default_dirs: tuple[str, ...] | None
    lib: TokenValue
    platform: TokenValue
    executable_origin: str | None

    def __init__(self, fixed_dirs: str | Iterable[str] = (), use_ld_library_path: bool = False,
                 ld_library_path: str | None = None, use_ld_cache: bool = True,
                 ld_cache: LdCache | None = None, ld_cache_path: str = LD_SO_CACHE_PATH,
                 machine_flags: Iterable[int] | None = None, use_default_dirs: bool = True,
                 default_dirs: str | Iterable[str] | None = None,
                 lib: TokenValue = HOST_DEFAULT, platform: TokenValue = HOST_DEFAULT,
                 executable_origin: str | None = None) -> None:
        if use_ld_library_path and ld_library_path is None:
            ld_library_path = os.environ.get("LD_LIBRARY_PATH", "")
        self._set(_dedup_dirs(_as_tuple(fixed_dirs)), use_ld_library_path, ld_library_path,
                  use_ld_cache, ld_cache, ld_cache_path,
                  None if machine_flags is None else frozenset(machine_flags),
                  use_default_dirs,
                  None if default_dirs is None else _dedup_dirs(_as_tuple(default_dirs)),
                  lib, platform, executable_origin)

    def _fields(self) -> tuple[object, ...]:
        # An injected cache object is not part of the configuration's identity (it
        # was ``field(compare=False)``): equal configurations share memoized searches.
        return tuple([getattr(self, name) for name in self.__slots__ if name != "ld_cache"])

    # -- helpers ----------------------------------------------------------

    def effective_default_dirs(self) -> tuple[str, ...]:
        """The default directories this resolver searches (even if disabled)."""
        if self.default_dirs is not None:
            return self.default_dirs
        return default_system_dirs()

    def _cache(self) -> LdCache:
        if self.ld_cache is not None:
            return self.ld_cache
        from relink.linker.ldcache import LdCache

        return LdCache.load(self.ld_cache_path)

    def _expand_list(self, raw: Iterable[str], origin: str | None, seps: str = ":") -> list[str]:
        dirs: list[str] = []
        for value in raw:
            for element in split_search_list(value, separators=seps):
                expanded = expand_tokens(
                    element, origin=origin, lib=self.lib, platform=self.platform
                )
                if expanded:
                    dirs.append(expanded)
        return dirs

    def search_dirs(
        self, owner: ModuleSearchInfo | None, loader_chain: Sequence[ModuleSearchInfo]
    ) -> list[tuple[str, str]]:
        """``(directory, reason)`` pairs for steps 1-4 (before the cache)."""
        dirs: list[tuple[str, str]] = []
        if owner is None or not owner.has_runpath:
            chain: list[ModuleSearchInfo] = [] if owner is None else [owner]
            chain += [module for module in loader_chain if module is not owner]
            for module in chain:
                if module.has_runpath:
                    continue  # glibc ignores DT_RPATH when DT_RUNPATH is present
                suffix = "" if module is owner else " (inherited)"
                for directory in self._expand_list(module.rpath, module.origin):
                    dirs.append((directory, f"RPATH of {module.name}{suffix}"))
        if self.use_ld_library_path and self.ld_library_path:
            origin = self.executable_origin
            if origin is None:
                if loader_chain:
                    origin = loader_chain[-1].origin
                elif owner is not None:
                    origin = owner.origin
            for directory in self._expand_list((self.ld_library_path,), origin, ":;"):
                dirs.append((directory, "LD_LIBRARY_PATH"))
        if owner is not None and owner.has_runpath:
            for directory in self._expand_list(owner.runpath, owner.origin):
                dirs.append((directory, f"RUNPATH of {owner.name}"))
        for directory in self.fixed_dirs:
            dirs.append((directory, "fixed dir"))
        return dirs

    # -- public API ---------------------------------------------------------

    def candidates(
        self,
        needed: str,
        owner: ModuleSearchInfo | None,
        loader_chain: Sequence[ModuleSearchInfo] = (),
    ) -> list[Candidate]:
        """Ordered, de-duplicated candidate paths for ``needed``.

        ``owner`` is the module whose ``DT_NEEDED`` (or ``dlopen`` call) names
        ``needed``; ``loader_chain`` lists the modules above it, nearest first
        (the module that loaded ``owner``, its loader, ... and finally the
        main executable).  Returns ``[]`` if ``needed`` is empty or its token
        expansion fails.
        """
        return list(self._iter_candidates(needed, owner, tuple(loader_chain)))

    def _iter_candidates(
        self,
        needed: str,
        owner: ModuleSearchInfo | None,
        loader_chain: tuple[ModuleSearchInfo, ...],
    ) -> Iterator[Candidate]:
        """:meth:`candidates`, lazily: `resolve` stops at the first accepted path, so
        the cache and default-dir steps are computed only when earlier ones miss."""
        if not needed:
            return
        origin = owner.origin if owner is not None else None
        name = expand_tokens(needed, origin=origin, lib=self.lib, platform=self.platform)
        if not name:
            return
        if "/" in name:
            yield Candidate(name, DIRECT)
            return
        first, seen_first = _first_candidates(self, owner, loader_chain, name)
        yield from first
        seen = set(seen_first)

        def fresh(path: str) -> bool:
            key = normalize_dir(path)
            if key in seen:
                return False
            seen.add(key)
            return True

        nodeflib = owner is not None and owner.nodeflib
        defaults = self.effective_default_dirs()
        if self.use_ld_cache:
            for path in self._cache().lookup(name, machine_flags=self.machine_flags):
                if nodeflib and _under_any(path, defaults):
                    continue
                if fresh(path):
                    yield Candidate(path, FROM_CACHE)
        if self.use_default_dirs and not nodeflib:
            for directory in defaults:
                path = join_dir(directory, name)
                if fresh(path):
                    yield Candidate(path, FROM_DEFAULT)

    def resolve(
        self,
        needed: str,
        owner: ModuleSearchInfo | None,
        loader_chain: Sequence[ModuleSearchInfo] = (),
        *,
        accept: Callable[[str], bool],
    ) -> tuple[str | None, list[Candidate]]:
        """Walk :meth:`candidates`, returning the first path ``accept`` approves.

        ``accept(path)`` must check existence and that the file is an ELF
        object of the right class/machine (wrong-machine files are skipped,
        as ``ld.so`` does).  Returns ``(path or None, candidates tried)``; on
        failure the list holds every candidate, for the error message.
        """
        tried: list[Candidate] = []
        for candidate in self._iter_candidates(needed, owner, tuple(loader_chain)):
            tried.append(candidate)
            if accept(candidate.path):
                return candidate.path, tried
        return None, tried
