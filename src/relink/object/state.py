"""Runtime state of a loaded link unit (one or more objects), and what owns it.

Image layer of `relink.object`. `ObjectState` is what `relink.Module` wraps for objects:
it offers the provider interface the rest of relink uses (`name`, `path`, `soname`,
`base`, `state`, `lookup`, `symbol`, `resolve_ifunc`), the lifecycle (initializers,
finalizers, read-only-after-init protection, release of init-lifetime groups) and the
section map (`sections`). `ObjectOwner` is the owner a Module closes through, as
`relink.api.LoadGroup` is for shared objects.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relink.errors import InitializerError, TlsError, UnsupportedError
from relink.memory import PROT_NONE, Region
from relink.runtime import track as _debug_track
from relink.runtime.executor import Executor
from relink.state import run_finalizers, run_release_hooks

__all__ = ["ObjectImage", "ObjectOwner", "ObjectState", "PlacedSection"]

log = logging.getLogger(__name__)
STT_GNU_IFUNC = 10
STT_TLS = 6
MADV_DONTNEED = 4


@dataclass(frozen=True, slots=True)
class PlacedSection:
    """A section as loaded: where it went and which permission group holds it."""

    object: str
    name: str
    address: int
    size: int
    group: str


class ObjectImage:
    """The minimal image view `relink.Module` reads (arch, entry, segments, contains)."""

    dynamic = None
    entry = 0

    def __init__(self, spec: Any, region: Region, segments: list[tuple[int, int, int]],
                 mapper: Any = None) -> None:
        self.spec = spec
        self.region = region
        self.mapper = mapper  # Module uses it to call into foreign (emulated) code
        self._segments = segments

    def segments(self) -> list[tuple[int, int, int]]:
        return list(self._segments)

    def contains(self, addr: int) -> bool:
        return any(a <= addr < a + n for a, n, _p in self._segments)


class ObjectState:
    """A relocated link unit of relocatable objects.

    Attributes:
        exports: name -> (address, size, STT type) of what the unit exports.
        sections: every loaded section (`PlacedSection`), in address order.
        init_funcs / fini_funcs: runtime addresses, in call order.
        counts: relocation recipe name -> number applied.
        scope: the providers relocation bound against (kept alive with the module).
    """

    is_host = False

    def __init__(self, name: str, path: str | None, spec: Any, region: Region,
                 executor: Executor | None, label: str) -> None:
        self.name = name
        self.path = path
        self.soname: str | None = None
        self.label = label
        self.identity = ("object", id(self))
        self.spec = spec
        self.region = region
        self.executor = executor
        self.state = "mapped"
        self.exports: dict[str, tuple[int, int, int]] = {}
        self.local_symbols: dict[str, int] = {}
        self.sections: list[PlacedSection] = []
        self.init_funcs: list[int] = []
        self.fini_funcs: list[int] = []
        self.counts: dict[str, int] = {}
        self.unaligned = 0  # RISC-V ALIGN paddings left in code (see the relocator)
        self.scope: list[Any] = []
        self.modinfo: list[tuple[str, str]] = []
        self.segments: list[tuple[int, int, int, int, str]] = []  # addr, size, init, final
        self.init_segments: list[tuple[int, int]] = []
        self.init_exports: list[str] = []  # exports living in init-lifetime groups
        self.image = ObjectImage(spec, region, [])
        self.tls: Any = None  # ObjectTls when the unit has thread-local storage
        self.dso_handle = 0  # address of the unit's __dso_handle, when it has one
        self.extras: list[Callable[[], None]] = []  # release hooks (TLS carrier …)
        self.lock = threading.RLock()
        self._ifunc: dict[int, int] = {}
        _debug_track(self)  # relink.loaded_modules() / gdb see it until released

    @property
    def base(self) -> int:
        return self.region.start

    @property
    def in_process(self) -> bool:
        """True when the unit lives in this process's memory and may run here."""
        if not self.spec.is_host:
            return False
        from relink.memory.host import HostRegion

        return isinstance(self.region, HostRegion)

    # -- provider interface ---------------------------------------------------------------

    def lookup(self, name: str, version: str | None,
               exact: bool = False) -> tuple[int, int, int] | None:
        """(address, size, type) of an exported symbol; objects carry no versions."""
        if version is not None and exact:
            return None
        return self.exports.get(name)

    def symbol(self, name: str, version: str | None = None) -> int | None:
        """Address of an export; for a ``__thread`` variable, the calling thread's copy."""
        found = self.lookup(name, version, exact=version is not None)
        if found is None:
            return None
        if found[2] == STT_TLS:
            if self.tls is None:
                raise TlsError(f"'{name}' is thread-local and this load has no TLS runtime",
                               file=self.label)
            return int(self.tls.address(found[0]))
        return found[0]

    def local_symbol(self, name: str) -> int | None:
        """Address of a file-local (static) symbol by name, when the name is unique."""
        return self.local_symbols.get(name)

    def resolve_ifunc(self, resolver: int) -> int:
        addr = self._ifunc.get(resolver)
        if addr is None:
            if self.executor is None:
                raise UnsupportedError("calling an IFUNC resolver needs to run target code "
                                       "and this load has no executor", file=self.label)
            addr = self.executor.call_ifunc(resolver)
            self._ifunc[resolver] = addr
        return addr

    def section(self, name: str) -> PlacedSection | None:
        """The first loaded section called `name`."""
        return next((s for s in self.sections if s.name == name), None)

    # -- lifecycle ----------------------------------------------------------------------

    def initialize(self, argc: int, argv: int, envp: int) -> None:
        """Run the initializers once, then apply final protections, release init memory."""
        with self.lock:
            if self.state in ("initialized", "initializing"):
                return
            if self.state != "relocated":
                raise InitializerError(f"cannot initialize an object in state {self.state}",
                                       file=self.label)
            self.state = "initializing"
            try:
                if self.init_funcs:
                    if self.executor is None:
                        raise InitializerError(
                            "the objects have initializers but this load cannot run target "
                            "code (no executor)", file=self.label)
                    for func in self.init_funcs:
                        self.executor.call_init(func, argc, argv, envp)
            except BaseException:
                self.state = "failed"
                raise
            self.state = "initialized"
            self.finish_protection()

    def finish_protection(self) -> None:
        """Final protections (read-only-after-init), then drop init-lifetime groups."""
        for addr, size, init_prot, final_prot, _group in self.segments:
            if final_prot != init_prot:
                self.region.protect(addr, size, final_prot)
        for name in self.init_exports:
            self.exports.pop(name, None)  # their memory goes away now
        self.init_exports = []
        for addr, size in self.init_segments:
            self.region.protect(addr, size, PROT_NONE)
            if self.in_process:
                from relink.runtime import libc  # give the pages back to the kernel

                libc.madvise(addr, size, MADV_DONTNEED)
        self.init_segments = []

    def finalize(self) -> None:
        with self.lock:
            if self.state not in ("initialized", "failed"):
                return
            self.state = "finalized"
            if self.executor is None:
                return
            run_finalizers(self.executor, self.fini_funcs, self.name)
            if self.dso_handle and self.spec.is_host:
                # C++ static destructors were registered with __cxa_atexit under this
                # unit's __dso_handle: run them now, before the code is unmapped.
                from relink.runtime import libc

                libc.cxa_finalize(self.dso_handle)

    def release(self) -> None:
        with self.lock:
            if self.state == "closed":
                return
            self.state = "closed"
            run_release_hooks(self.extras, self.name)
            self.region.release()

    def __repr__(self) -> str:
        return f"<ObjectState {self.name} at {self.base:#x} {self.state}>"


class ObjectOwner:
    """Owns one `load_object` result: `Module.close()` lands in `release`."""

    def __init__(self, state: ObjectState) -> None:
        self.state = state
        self.closed = False
        self.lock = threading.Lock()

    def release(self, module: Any) -> None:
        self.close()

    def initialize(self, module: Any) -> None:
        """`Module.initialize()` of a load made with ``init=False``."""
        argc = argv = envp = 0
        if self.state.in_process:
            from relink.runtime.libc import argv_pointers, environ_pointer

            argc, argv = argv_pointers()
            envp = environ_pointer()
        self.state.initialize(argc, argv, envp)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.state.finalize()
        finally:
            self.state.release()
