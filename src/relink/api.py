"""`relink.load()`: the front door, a thin layer over a default `LinkContext`.

Top of the pipeline (input -> elf -> loader -> relocation -> image -> linker). One call
loads a shared object and its DT_NEEDED graph (host-provided libraries through
`HostPolicy`, the rest found by `SearchPathResolver`: DT_RPATH / DT_RUNPATH / $ORIGIN,
ld.so.cache, default directories), relocates dependencies first, and runs initializers;
any failure rolls everything back (relink.linker.linker).

Each call without ``context=`` loads into a fresh `LinkContext` of its own (as the core
API always did, and as Relink's plain loader does): two loads of one file are two
independent copies, and ``close()`` on the root unloads the whole group. Pass
``context=`` to share: loads into one context are deduplicated (by key, SONAME and file
identity, as dlopen does), see each other's promoted globals and are unloaded by
reachability when their leases are released. `default_context()` is a process-wide
context for that purpose.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from relink.elf.source import SourceLike
from relink.errors import UnresolvedDependencyError
from relink.linker.context import LinkContext
from relink.linker.linker import Linker
from relink.linker.search import SearchPathResolver
from relink.memory import Mapper
from relink.module import Module
from relink.relocation.dynamic import Fallback, TlsHooks
from relink.runtime.executor import Executor
from relink.runtime.host import HostPolicy

__all__ = ["default_context", "host_module", "load"]

_default: list[LinkContext] = []
_default_lock = threading.Lock()
_DEFAULT_LINKER: list[Linker] = []


def default_context() -> LinkContext:
    """The process-wide context plain `load()` calls share."""
    if not _default:
        with _default_lock:
            if not _default:
                _default.append(LinkContext("default"))
    return _default[0]


def load(source: SourceLike | Any, *, name: str | None = None, scope: Sequence[Any] = (),
         host: HostPolicy | None = None, resolver: Any = None,
         mapper: Mapper | None = None, executor: Executor | None = None,
         interpose: Mapping[str, Any] | None = None, init: bool = True,
         tls: TlsHooks | None = None, fallback: Fallback | None = None,
         context: LinkContext | None = None, key: str | None = None,
         observers: Sequence[Any] = (), lazy: bool = False, arch: str | None = None,
         memory: Mapper | None = None) -> Module:
    """Load a shared object (and its dependencies) into this process and return it.

    Args:
        source: a path, bytes / bytearray / memoryview, an fd or a binary file; or a
            bare library name (``"libz.so.1"``), searched as dlopen does.
        name: name to give a memory input (its DT_SONAME is used for matching too).
        scope: providers searched before the load group (synthetic modules, other
            loaded modules): the RTLD_GLOBAL-like part of the scope.
        host: which DT_NEEDED names the host serves (default `HostPolicy()`).
        resolver: a `SearchPathResolver` (how DT_NEEDED names are searched) or a custom
            resolver (callable / ``.resolve(request)``, see relink.linker.resolvers).
        mapper: the memory backend (default: this process).
        executor: runs initializers / IFUNC resolvers (default: native).
        interpose: name -> address, Python callable or ``(callable, restype, *argtypes)``
            binding every reference in the group to that implementation. An exception
            raised by a Python implementation is re-raised when the call returns to
            Python (through `Module.function`).
        init: run initializers (False leaves them pending: call ``Module.initialize``).
        tls: the TLS runtime hooks (default: relink's native TLS runtime when present).
        fallback: called for relocation types the loop does not handle.
        context: the `LinkContext` to load into (default: a new one for this load).
        key: the key to register the root under in the context.
        observers: `relink.observer` hooks for this load.
        lazy: bind PLT slots on first call (relink.runtime.lazy) where allowed.
        arch: the ISA the file must be (``"aarch64"``, ``"riscv64"`` …); a foreign ISA
            without `memory` loads into a `BufferMapper` (relocated, never run).
        memory: the memory backend (same as `mapper`): a `BufferMapper`, an
            ``relink.memory.unicorn.Emulator`` (foreign code runs inside it), or any
            `relink.memory.Mapper`.

    Raises:
        RelinkError subclasses; nothing stays mapped after a failure.
    """
    mapper, target = _target(arch, mapper, memory)
    custom_linker = lazy or not (host is None and resolver is None and mapper is None
                                 and executor is None and tls is None and fallback is None
                                 and target is None)
    if context is None:
        label = name or (str(source) if isinstance(source, str) else type(source).__name__)
        # Interned: loads of the same file share the name (the context lives as long as
        # the module; issue 8, T8).
        context = LinkContext(sys.intern(f"load:{label}"))
    linker = _linker(host, resolver, mapper, executor, tls, fallback, lazy, target) \
        if custom_linker else context.linker
    if linker is None:
        if not _DEFAULT_LINKER:
            _DEFAULT_LINKER.append(Linker())  # stateless between loads: shared
        linker = context.linker = _DEFAULT_LINKER[0]
    return linker.load(context, source, key=key, name=name, scope=scope, interpose=interpose,
                       init=init, observers=observers)


def _target(arch: str | None, mapper: Mapper | None,
            memory: Mapper | None) -> tuple[Mapper | None, Any]:
    """Resolve ``arch=`` / ``memory=`` into (mapper, ArchSpec or None)."""
    if memory is not None:
        if mapper is not None and mapper is not memory:
            raise ValueError("pass the memory backend as memory= or mapper=, not both")
        mapper = memory
    if arch is None:
        return mapper, None
    from relink.arch import spec_named
    from relink.errors import UnsupportedError

    spec = spec_named(arch)
    if spec is None:
        raise UnsupportedError(f"unknown architecture {arch!r}")
    if mapper is None and not spec.is_host:
        from relink.memory.buffer import BufferMapper

        mapper = BufferMapper()
    if mapper is not None and mapper.native and not spec.is_host:
        raise UnsupportedError(f"{arch} code cannot be loaded into this process; pass "
                               "memory=Emulator(...) or memory=BufferMapper()")
    backend = getattr(mapper, "spec", None)
    if backend is not None and backend is not spec:
        raise UnsupportedError(f"arch={arch!r} but the memory backend runs "
                               f"{getattr(backend, 'name', backend)} code")
    return mapper, spec


def _linker(host: HostPolicy | None, resolver: Any, mapper: Mapper | None,
            executor: Executor | None, tls: TlsHooks | None, fallback: Fallback | None,
            lazy: bool, arch: Any = None) -> Linker:
    search = resolver if isinstance(resolver, SearchPathResolver) else None
    custom = [resolver] if resolver is not None and search is None else []
    return Linker(resolvers=custom, search=search, host=host, mapper=mapper,
                  executor=executor, tls=tls, fallback=fallback, lazy=lazy, arch=arch)


def host_module(name: str) -> Module:
    """A Module for a library served by the host's dynamic linker (dlopen)."""
    from relink.runtime.host import host_library

    lib = host_library(name, load=True)
    if lib is None:
        raise UnresolvedDependencyError(name, needed_by=None, searched=["host dlopen"])
    return Module(lib)
