"""Runtime state of one loaded module, separate from its parsed metadata.

Sits between the loader (which produces the mapped `Image`) and the public `Module`
facade. A `ModuleState` is what symbol resolution sees as a provider (`lookup`), what
the lifecycle runs (init/fini lists, state machine) and what owns the memory. Keeping it
apart from `Module` lets a finalizer own the state without keeping the facade alive.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol

try:  # the C lock itself: threading.RLock is a Python wrapper around it (a call per load)
    from _thread import RLock as _RLock
except ImportError:  # pragma: no cover - every CPython has it
    from threading import RLock as _RLock

from relink._log import lazy_logger
from relink.elf.symbols import SHN_ABS, STT_GNU_IFUNC
from relink.errors import InitializerError, RelocationError
from relink.loader import Image
from relink.runtime import track as _debug_track
from relink.runtime import untrack as _debug_untrack
from relink.runtime.executor import Executor

__all__ = ["ModuleState", "Provider", "State", "lifecycle_lists", "run_finalizers",
           "run_release_hooks"]

log = lazy_logger(__name__)


_DEREGISTER: list[Callable[[int], None]] = []  # [unwind.deregister_frames], once imported


def _deregister_frames() -> list[Callable[[int], None]]:
    """[relink.runtime.unwind.deregister_frames], imported by the first release that has
    frames (their registration imported the module)."""
    from relink.runtime.unwind import deregister_frames

    _DEREGISTER.append(deregister_frames)
    return _DEREGISTER


def run_finalizers(executor: Executor | None, funcs: list[int], name: str) -> None:
    """Call each finalizer in order; one that fails is logged, the rest still run."""
    if executor is None:
        return
    for func in funcs:
        try:
            executor.call_fini(func)
        except Exception:  # pragma: no cover - ctypes does not raise here
            log.exception("finalizer %#x of %s failed", func, name)


def run_release_hooks(extras: list[Callable[[], None]], name: str) -> None:
    """Pop and run each release hook, last added first; a failing one is logged."""
    while extras:
        hook = extras.pop()
        try:
            hook()
        except Exception:
            log.exception("releasing a resource of %s failed", name)


class State:
    """Lifecycle states (Relink's ModuleState machine)."""

    MAPPED = "mapped"
    RELOCATED = "relocated"
    INITIALIZING = "initializing"
    INITIALIZED = "initialized"
    FAILED = "failed"
    FINALIZED = "finalized"
    CLOSED = "closed"


# The states the lifecycle methods test and set, as module constants: one global load
# each instead of a global and an attribute (they run once per module and load).
_RELOCATED, _INITIALIZING = State.RELOCATED, State.INITIALIZING
_INITIALIZED = State.INITIALIZED
_FAILED, _FINALIZED, _CLOSED = State.FAILED, State.FINALIZED, State.CLOSED
# The state tests of the lifecycle methods (module constants: no tuple built per call).
_INIT_DONE = (State.INITIALIZED, State.INITIALIZING)  # initialize(): nothing to do
_INIT_REFUSED = (State.FAILED, State.FINALIZED, State.CLOSED)  # initialize(): an error
_FINALIZABLE = (State.INITIALIZED, State.FAILED)  # finalize() runs the finalizers


class Provider(Protocol):
    """Anything that can provide symbol definitions to a relocation."""

    name: str

    def lookup(self, name: str, version: str | None,
               exact: bool = False) -> tuple[int, int, int] | None:
        """(absolute address, size, STT_* type) of `name`, or None."""
        ...


class ModuleState:
    """The runtime side of a relink-loaded module.

    Attributes:
        image: the mapped image.
        deps: providers of the module's DT_NEEDED entries, in DT_NEEDED order.
        scope: the lookup scope its relocations used (retained: keeps providers alive).
        state: a `State` value.
        init_funcs / fini_funcs: runtime addresses, in the order they will be called.
        extras: per-subsystem resources (TLS blocks, trampolines…) with release hooks.
        frames: runtime address of the ``.eh_frame`` registered with the host unwinder
            (relink.runtime.unwind), deregistered by `release`; 0 when none is.
    """

    # Slots: one state per loaded module, kept as long as it is loaded (issue 8, T8).
    # The release hooks list is made by the first hook (`extras`): most modules have none
    # but their ``.eh_frame`` registration, which is a plain address (`frames`) rather
    # than a hook object in a list (~130 bytes per load less).
    __slots__ = ("image", "executor", "name", "soname", "identity", "deps", "scope", "state",
                 "init_funcs", "fini_funcs", "_extras", "frames", "lock", "_ifunc",
                 "symcache", "tls_runtime", "tls_record", "lazy", "__weakref__")

    is_host = False

    def __init__(self, image: Image, executor: Executor | None) -> None:
        self.image = image
        self.executor = executor
        self.name = image.source.name  # Image.name, without the property call
        dyn = image.dynamic
        self.soname = dyn.soname if dyn is not None else None
        self.identity = image.source.identity
        self.deps: Sequence[Any] = ()  # set by relink.plan (the linker keeps Entry.deps)
        self.scope: list[Any] = []
        self.state = State.MAPPED
        self.init_funcs: list[int] = []
        self.fini_funcs: list[int] = []
        self._extras: list[Callable[[], None]] | None = None  # made by `extras`
        self.frames = 0
        self.lock = _RLock()
        self._ifunc: dict[int, int] | None = None  # made by the first IFUNC resolution
        # Module.symbol's cache, misses too; made by the first miss (`cached_symbol`):
        # modules that are never asked for a symbol by name keep no dict (issue 8, T8).
        self.symcache: dict[str, int | None] | None = None
        self.tls_runtime: Any = None  # set by relink.runtime.tls for modules with PT_TLS
        self.tls_record: Any = None  # relink.runtime.tls's per-module record
        self.lazy: Any = None  # relink.runtime.lazy's PLT state, for lazily bound modules
        _debug_track(self, False)  # relink.loaded_modules() / gdb see it until released

    @property
    def extras(self) -> list[Callable[[], None]]:
        """Release hooks of per-subsystem resources, run last added first by `release`
        (the list is made by the first use)."""
        extras = self._extras
        if extras is None:
            extras = self._extras = []
        return extras

    @property
    def base(self) -> int:
        return self.image.base

    @property
    def path(self) -> str | None:
        return self.image.source.path

    # -- symbol provision -------------------------------------------------------------

    def address_of_index(self, i: int) -> int:
        """Absolute address of symbol `i`'s definition (IFUNCs not resolved)."""
        syms = self.image.symbols
        assert syms is not None
        value = syms.values[i]
        return value if syms.shndx[i] == SHN_ABS else self.image.base + value

    def lookup(self, name: str, version: str | None,
               exact: bool = False) -> tuple[int, int, int] | None:
        syms = self.image.symbols
        if syms is None:
            return None
        i = syms.find(name, version, exact)
        if i is None:
            return None
        return self.address_of_index(i), syms.sizes[i], syms.infos[i] & 0xF

    def lookup_reference(self, name: str) -> tuple[int, int, int] | None:
        """`lookup` for an unversioned relocation reference (ld.so's choice of version)."""
        syms = self.image.symbols
        i = syms.find_reference(name) if syms is not None else None
        if i is None or syms is None:
            return None
        return self.address_of_index(i), syms.sizes[i], syms.infos[i] & 0xF

    def resolve_ifunc(self, resolver: int) -> int:
        """Call (once) the IFUNC resolver at `resolver` through the executor."""
        cache = self._ifunc
        if cache is None:
            cache = self._ifunc = {}
        addr = cache.get(resolver)
        if addr is None:
            if self.executor is None:
                from relink.errors import UnsupportedError

                raise UnsupportedError(
                    "calling an IFUNC resolver needs to run target code, and this load has "
                    "no executor for it (foreign image without an emulator backend)",
                    file=self.image.label)
            addr = cache[resolver] = self.executor.call_ifunc(resolver)
        return addr

    def cacheable(self, name: str) -> bool:
        """Whether `symbol(name)` may be cached: not for thread-local variables."""
        found = self.lookup(name, None)
        return found is None or found[2] != 6  # STT_TLS: a per-thread address

    def symbol(self, name: str, version: str | None = None) -> int | None:
        """What ``dlsym``/``dlvsym`` would return: IFUNCs resolved, TLS via the runtime."""
        found = self.lookup(name, version, exact=version is not None)
        if found is None:
            return None
        addr, _size, stype = found
        if stype == STT_GNU_IFUNC:
            return self.resolve_ifunc(addr)
        if stype == 6:  # STT_TLS
            return self._tls_symbol(name, version)
        return addr

    def cached_symbol(self, name: str) -> int | None:
        """``symbol(name)``, remembered in `symcache` when `cacheable` (misses too):
        `Module.symbol`'s miss path, with one lookup instead of two."""
        cache = self.symcache
        if cache is None:  # two threads may both make one: a lost entry is looked up again
            cache = self.symcache = {}
        found = self.lookup(name, None)
        if found is None:
            cache[name] = None
            return None
        addr, _size, stype = found
        if stype == STT_GNU_IFUNC:
            addr = self.resolve_ifunc(addr)
        elif stype == 6:  # STT_TLS: a per-thread address, never cached
            return self._tls_symbol(name, None)
        cache[name] = addr
        return addr

    def _tls_symbol(self, name: str, version: str | None) -> int:
        tls = getattr(self, "tls_runtime", None)
        if tls is None:
            from relink.errors import TlsError

            raise TlsError(f"'{name}' is a thread-local variable: use "
                           "Module.tls_address() (needs the TLS runtime)",
                           file=self.image.label)
        return int(tls.symbol_address(self, name, version))

    # -- lifecycle ----------------------------------------------------------------------

    def initialize(self, argc: int, argv: int, envp: int) -> None:
        """Run DT_INIT then DT_INIT_ARRAY (once; a re-entrant call sees it as done)."""
        with self.lock:
            state = self.state
            if state is not _RELOCATED:  # the usual state (the linker's) needs no test
                if state in _INIT_DONE:
                    return
                if state in _INIT_REFUSED:
                    raise InitializerError(f"cannot initialize a module in state {state}",
                                           file=self.image.label)
            self.state = _INITIALIZING
            funcs = self.init_funcs
            try:
                if funcs:
                    executor = self.executor
                    if executor is None:
                        raise InitializerError(
                            "module has initializers but this load cannot run target code "
                            "(no executor); use an emulator backend or defer_init",
                            file=self.image.label)
                    call_init = executor.call_init
                    for func in funcs:
                        call_init(func, argc, argv, envp)
            except BaseException:
                self.state = _FAILED
                raise
            self.state = _INITIALIZED

    def finalize(self) -> None:
        """Run DT_FINI_ARRAY in reverse then DT_FINI (only if initialized or failed)."""
        with self.lock:
            if self.state not in _FINALIZABLE:
                return
            self.state = _FINALIZED
            # run_finalizers, inline (once per module and close)
            executor = self.executor
            if executor is None:
                return
            call_fini = executor.call_fini
            for func in self.fini_funcs:
                try:
                    call_fini(func)
                except Exception:  # pragma: no cover - ctypes does not raise here
                    log.exception("finalizer %#x of %s failed", func, self.name)

    def release(self) -> None:
        """Release every resource: subsystem extras (reverse order), then the mapping."""
        with self.lock:
            if self.state == _CLOSED:
                return
            self.state = _CLOSED
            self.symcache = None
            # The scope lists this very module: drop the references so the state (and
            # its image) is freed by reference counting, not left to the cycle collector.
            self.scope = []
            self.deps = []
            frames = self.frames
            if frames:  # registered last by the load: deregistered first
                self.frames = 0
                try:
                    (_DEREGISTER or _deregister_frames())[0](frames)
                except Exception:  # pragma: no cover - ctypes does not raise here
                    log.exception("deregistering the .eh_frame of %s failed", self.name)
            extras = self._extras
            while extras:  # run_release_hooks, inline: last added first
                hook = extras.pop()
                try:
                    hook()
                except Exception:
                    log.exception("releasing a resource of %s failed", self.name)
            _debug_untrack(self)  # after the other releases (the registry lists it till then)
            image = self.image
            image.release()
            source = image.source
            if source.fd is not None:  # usually closed already, once mapped (detach_fd)
                source.close()

    def __repr__(self) -> str:
        return f"<ModuleState {self.name} at {self.image.base:#x} {self.state}>"


# -- init / fini lists ------------------------------------------------------------------
# Read from the relocated DT_INIT_ARRAY / DT_FINI_ARRAY by relocate_module. Where the
# arrays are is link-time data, checked against the segments once per file and cached
# with the parsed metadata (a `_Lifecycle`); each load only unpacks them - with one
# unpack when both arrays share a segment, as the linker lays them out (.init_array is
# followed by .fini_array).

def lifecycle_lists(state: ModuleState, view: memoryview, delta: int) -> None:
    """Fill init (DT_INIT, DT_INIT_ARRAY) and fini (DT_FINI_ARRAY reversed, DT_FINI)."""
    image = state.image
    parsed = image.parsed
    layout: _Lifecycle | None = parsed.facts.get("lifecycle") \
        if parsed is not None and parsed.complete else None  # type: ignore[assignment]
    if layout is None:
        if image.dynamic is None:
            return
        layout = _lifecycle_layout(image)
        if parsed is not None and parsed.complete:
            parsed.facts["lifecycle"] = layout
    init_rel, fini_rel, start, unpack, init_part, fini_part, ones = layout
    if unpack is None:
        init: tuple[int, ...] = ()
        fini: tuple[int, ...] = ()
    else:
        words = unpack(view, start + delta)
        init, fini = words[init_part], words[fini_part]
        # 0 and -1 entries are placeholders that glibc skips too; they are rare, so the
        # arrays are filtered only when one is there (`in` scans in C; a hit in the
        # words between the two arrays only costs the filtering).
        if 0 in words or ones in words:
            init = tuple(f for f in init if f and f != ones)
            fini = tuple(f for f in fini if f and f != ones)
    if init_rel:
        state.init_funcs = [image.base + init_rel, *init]
    elif init:
        state.init_funcs = list(init)
    if fini_rel:
        state.fini_funcs = [*fini, image.base + fini_rel]
    elif fini:
        state.fini_funcs = list(fini)


# (DT_INIT, DT_FINI: 0 when absent; the vaddr and whole-range unpacker of the words that
# hold the arrays, or None without arrays; the slices of DT_INIT_ARRAY and of
# DT_FINI_ARRAY, reversed, in those words; the all-ones word)
_Lifecycle = tuple[int, int, int, Callable[[memoryview, int], tuple[int, ...]] | None,
                   slice, slice, int]
_NOTHING = slice(0, 0)
_JOIN_GAP = 64  # bytes between the two arrays read along rather than by a second unpack


def _lifecycle_layout(image: Image) -> _Lifecycle:
    """`_Lifecycle` of a file: link-time data, computed once per file (the arrays'
    sizes and their bounds against the segments are checked here)."""
    dyn = image.dynamic
    assert dyn is not None
    word = image.spec.word_size
    letter = "Q" if word == 8 else "I"
    ones = (1 << (8 * word)) - 1
    arrays: list[tuple[int, int] | None] = []
    for vaddr, size, what in ((dyn.init_array, dyn.init_arraysz, "DT_INIT_ARRAY"),
                              (dyn.fini_array, dyn.fini_arraysz, "DT_FINI_ARRAY")):
        if not vaddr or not size:
            arrays.append(None)
            continue
        image.view.get(vaddr, size, what)  # bounds check against the segments
        if size % word:
            raise RelocationError(f"{what} size {size} is not a multiple of the word "
                                  "size", file=image.label)
        arrays.append((vaddr, size))
    ini, fin = arrays
    if ini is None and fin is None:
        return dyn.init, dyn.fini, 0, None, _NOTHING, _NOTHING, ones
    if ini is not None and fin is not None:
        lo, hi = min(ini[0], fin[0]), max(ini[0] + ini[1], fin[0] + fin[1])
        gap = hi - lo - ini[1] - fin[1]
        # One read over both only inside one segment (the view also spans the gaps
        # between segments, which may not be mapped readable), nearly adjacent and
        # word-aligned relative to each other.
        if 0 <= gap <= _JOIN_GAP and (fin[0] - ini[0]) % word == 0 \
                and image.view.contains(lo, hi - lo) \
                and _segment_of(image, ini[0]) == _segment_of(image, fin[0]):
            a = (ini[0] - lo) // word
            c = (fin[0] - lo) // word
            n_fin = fin[1] // word
            unpack = struct.Struct(f"<{(hi - lo) // word}{letter}").unpack_from
            return (dyn.init, dyn.fini, lo, unpack, slice(a, a + ini[1] // word),
                    _reversed(c, c + n_fin), ones)
    # One array, or two that are apart: each read on its own (rare).
    n_ini = ini[1] // word if ini else 0
    n_fin = fin[1] // word if fin else 0
    first = ini or fin
    assert first is not None
    return (dyn.init, dyn.fini, first[0], _Apart(ini, fin, f"<{{}}{letter}"),
            slice(0, n_ini), _reversed(n_ini, n_ini + n_fin) if n_fin else _NOTHING, ones)


class _Apart:
    """The words of two arrays that are not read in one unpack, concatenated (init
    first); called with the view index of the first present array."""

    __slots__ = ("parts", "origin")

    def __init__(self, ini: tuple[int, int] | None, fin: tuple[int, int] | None,
                 fmt: str) -> None:
        word = 8 if fmt.endswith("Q") else 4
        self.parts = [(vaddr, struct.Struct(fmt.format(size // word)).unpack_from)
                      for vaddr, size in (a for a in (ini, fin) if a is not None)]
        self.origin = self.parts[0][0]

    def __call__(self, view: memoryview, at: int) -> tuple[int, ...]:
        delta = at - self.origin
        out: tuple[int, ...] = ()
        for vaddr, unpack in self.parts:
            out += unpack(view, vaddr + delta)
        return out


def _reversed(start: int, stop: int) -> slice:
    """The slice of ``words[start:stop]`` in reverse order."""
    return slice(stop - 1, start - 1 if start else None, -1)


def _segment_of(image: Image, vaddr: int) -> int:
    """Index of the PT_LOAD segment holding `vaddr` (-1: none)."""
    for i, ph in enumerate(image.loads):
        if ph.p_vaddr <= vaddr < ph.p_vaddr + ph.p_memsz:
            return i
    return -1
