"""The public face of a loaded module: symbol lookup, typed access, lifecycle.

Image layer (… -> relocation -> image -> linker). A `Module` wraps the runtime state of
one relink-loaded file (or a host library, or a synthetic module) and gives Python what
``ctypes.CDLL`` gives: ``symbol`` (dlsym), ``function`` (a callable), ``variable`` (a
ctypes object at the symbol's address), ``close`` and context-manager support. Closing
the module a load returned releases what that load mapped (finalizers first,
dependents before dependencies); a module that is only a dependency is released with
the module that loaded it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

from relink.errors import RelinkError, SymbolNotFoundError
from relink.linker import callbacks as _callbacks

__all__ = ["Module", "SyntheticModule"]

C = TypeVar("C")
STT_FUNC, STT_OBJECT, STT_NOTYPE = 2, 1, 0


class _DependencyMaker(Protocol):
    """What builds a facade's `Module.dependencies` on first access (a lease, an entry)."""

    def _dependency_views(self, facade: Module) -> list[Module]: ...


class Module:
    """A loaded module.

    Attributes:
        name: file name (last path component, or the name given for bytes).
        path: the file path, or None for bytes / host / synthetic modules.
        soname: DT_SONAME, or None.
        base: load bias (runtime address = base + link-time address).
        needed: the DT_NEEDED names.
        dependencies: the modules providing `needed`, in order (host ones included).
    """

    # One facade per load and per dependency view, kept while the module is loaded: the
    # containers are made on first use (issue 8, T8: a plain load never needs them).
    __slots__ = ("_state", "_owner", "_functions", "_kept", "_deps", "_deps_of", "__weakref__")

    def __init__(self, state: Any, owner: Any = None) -> None:
        self._state = state
        self._owner = owner
        self._functions: dict[tuple[Any, ...], Any] | None = None  # made by `function`
        self._kept: list[Any] | None = None  # `_keep`, made by its first use
        # Built on first access (most loads never look): `_deps_of._dependency_views(self)`
        # makes the list. The maker object (a lease or an entry) rather than its bound
        # method: a reference instead of a 64-byte method object per load.
        self._deps: list[Module] | None = None
        self._deps_of: _DependencyMaker | None = None

    @property
    def _keep(self) -> list[Any]:
        """Objects that must live as long as this facade (made on first use)."""
        kept = self._kept
        if kept is None:
            kept = self._kept = []
        return kept

    # -- identity -----------------------------------------------------------------

    @property
    def dependencies(self) -> list[Module]:
        """The modules providing `needed`, in order (host ones included)."""
        deps = self._deps
        if deps is None:
            make, self._deps_of = self._deps_of, None
            deps = self._deps = make._dependency_views(self) if make is not None else []
        return deps

    @dependencies.setter
    def dependencies(self, value: list[Module]) -> None:
        self._deps, self._deps_of = list(value), None

    @property
    def name(self) -> str:
        return str(self._state.name)

    @property
    def path(self) -> str | None:
        path = self._state.path
        return str(path) if path is not None else None

    @property
    def soname(self) -> str | None:
        return getattr(self._state, "soname", None)

    @property
    def base(self) -> int:
        return int(getattr(self._state, "base", 0))

    @property
    def needed(self) -> list[str]:
        image = getattr(self._state, "image", None)
        if image is None or image.dynamic is None:
            return []
        return list(image.dynamic.needed)

    @property
    def state(self) -> str:
        """Lifecycle state: mapped, relocated, initialized, failed, finalized, closed."""
        return str(getattr(self._state, "state", "host"))

    @property
    def is_host(self) -> bool:
        """True for a library served by the host's own dynamic linker."""
        return bool(getattr(self._state, "is_host", False))

    @property
    def arch(self) -> str:
        image = getattr(self._state, "image", None)
        return image.spec.name if image is not None else "host"

    @property
    def entry(self) -> int:
        """Runtime address of the ELF entry point."""
        image = getattr(self._state, "image", None)
        return int(image.entry) if image is not None else 0

    @property
    def segments(self) -> list[tuple[int, int, int]]:
        """(address, size, PROT_* flags) of each loaded segment."""
        image = getattr(self._state, "image", None)
        return image.segments() if image is not None else []

    def contains(self, addr: int) -> bool:
        """True if `addr` lies inside one of this module's segments."""
        image = getattr(self._state, "image", None)
        return bool(image is not None and image.contains(addr))

    @property
    def closed(self) -> bool:
        return self.state == "closed"

    # -- symbols ------------------------------------------------------------------

    def symbol(self, name: str, version: str | None = None) -> int | None:
        """Absolute address of `name` (of exactly `version` if given), None when absent.

        Like dlsym/dlvsym: IFUNCs are resolved; the module's own exports only.
        """
        if version is None:
            # The state's cache (a ModuleState's; made by its first miss, dropped by its
            # release): read through the state, so every facade of it sees the one cache.
            try:
                return self._state.symcache[name]  # a hit (misses too)
            except (KeyError, TypeError, AttributeError):  # not asked yet, none (yet)
                pass
        self._check_open()
        state = self._state
        if version is None:
            cached = getattr(state, "cached_symbol", None)
            if cached is not None:  # a ModuleState: it fills the cache
                return cached(name)
        return state.symbol(name, version)

    def __contains__(self, name: str) -> bool:
        return self.symbol(name) is not None

    def _address(self, name: str, version: str | None) -> int:
        addr = self.symbol(name, version)
        if addr is None:
            raise SymbolNotFoundError(name, file=self.path or self.name, version=version)
        return addr

    def function(self, name: str, restype: Any, *argtypes: Any,
                 version: str | None = None) -> Any:
        """A callable ctypes function for `name`: ``restype name(*argtypes)``.

        The result is cached per (name, signature, version) and keeps this module
        alive while it is referenced.

        Raises:
            SymbolNotFoundError: the module does not export `name`.
        """
        key = (name, restype, argtypes, version)
        functions = self._functions
        if functions is None:
            functions = self._functions = {}
        else:
            try:
                return functions[key]
            except KeyError:
                pass
        addr = self._address(name, version)
        foreign = self._foreign_memory()
        if foreign is not None:
            # Never run a foreign image's code on the host: the backend calls it
            # (the emulator backend runs it inside unicorn).
            make = getattr(foreign, "function", None)
            if make is None:
                from relink.errors import UnsupportedError

                raise UnsupportedError(
                    f"{name} is {self.arch} code in {type(foreign).__name__} memory, "
                    "which cannot run it: load it into relink.memory.unicorn.Emulator",
                    file=self.path or self.name)
            fn = make(addr, name, restype, argtypes)
            functions[key] = fn
            return fn
        fn = ctypes.CFUNCTYPE(restype, *argtypes)(addr)
        # Keep the mapping alive as long as the function object.
        setattr(fn, "__name__", name)  # noqa: B010
        setattr(fn, "_relink_module", self)  # noqa: B010
        if _callbacks.active():
            # A Python callback this call reaches may have raised: re-raise it here.
            fn.errcheck = _callbacks.errcheck
        functions[key] = fn
        return fn

    def variable(self, name: str, ctype: type[C], version: str | None = None) -> C:
        """A ctypes object of type `ctype` living at the symbol's address.

        The object does not keep the module alive: do not use it after close().
        For a foreign image it aliases the backend's host buffer (target byte order and
        sizes: use fixed-width ctypes types).
        """
        addr = self._address(name, version)
        foreign = self._foreign_memory()
        if foreign is not None:
            host_view = getattr(foreign, "host_view", None)
            if host_view is None:
                from relink.errors import UnsupportedError

                raise UnsupportedError(f"{name}: {type(foreign).__name__} memory has no "
                                       "host view", file=self.path or self.name)
            return ctype.from_buffer(host_view(addr, ctypes.sizeof(ctype)))  # type: ignore
        return ctype.from_address(addr)  # type: ignore[attr-defined]

    def _foreign_memory(self) -> Any:
        """The memory backend of a non-native image (None for host memory)."""
        image = getattr(self._state, "image", None)
        mapper = getattr(image, "mapper", None)
        return mapper if mapper is not None and not mapper.native else None

    def __getitem__(self, name: str) -> int:
        return self._address(name, None)

    def tls_address(self, name: str, version: str | None = None) -> int:
        """The calling thread's address of thread-local variable `name` (``__thread``).

        Each thread gets its own address (glibc allocates the block on first use, from
        the module's initial image). Raises SymbolNotFoundError or TlsError.
        """
        self._check_open()
        from relink.runtime.tls import tls_address

        return tls_address(self._state, name, version)

    # -- lifecycle ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self.state == "closed":
            raise RelinkError("module is closed", file=self.path or self.name)

    def close(self) -> None:
        """Release the reference (lease) the load that returned this module holds.

        Whatever no other reference keeps reachable (DT_NEEDED edges and symbol
        bindings, see relink.linker.context) is unloaded: finalizers first
        (DT_FINI_ARRAY in reverse, then DT_FINI; dependents before dependencies), then
        every mapping. A plain ``relink.load()`` owns its whole group, so this unloads
        it. On a module that is only a dependency of another load, this does nothing:
        it goes with its owner. Idempotent.
        """
        owner = self._owner
        if owner is not None:
            # A context's lease can skip listing the names of what it unloaded.
            quiet = getattr(owner, "release_quietly", None)
            if quiet is not None:
                quiet()
            else:
                owner.release(self)
        self._functions = None

    def initialize(self) -> None:
        """Run the initializers a load with ``init=False`` left pending (deps first)."""
        init = getattr(self._owner, "initialize", None)
        if init is not None:
            init(self)

    def __enter__(self) -> Module:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" at {self.base:#x}" if self.base else ""
        return f"<relink.Module {self.name}{where} {self.state}>"


class SyntheticModule:
    """A module made of Python-given symbols, usable in any load's scope.

    Args:
        name: the module name (appears in error messages and scopes).
        symbols: name -> an address (int), a ctypes function object, or a
            ``(callable, restype, *argtypes)`` tuple that relink wraps in a
            ``CFUNCTYPE`` and keeps alive as long as this module.

    Example:
        ``SyntheticModule("__host", {"getenv": (lambda n: None, c_char_p, c_char_p)})``
    """

    is_host = True

    def __init__(self, name: str, symbols: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.path: str | None = None
        self.soname: str | None = None
        self.identity = ("synthetic", id(self))
        self.state = "synthetic"
        self._addrs: dict[str, int] = {}
        self._keep: dict[str, Any] = {}
        for key, value in (symbols or {}).items():
            self.insert(key, value)

    def insert(self, name: str, value: Any) -> int:
        """Define (or replace) `name`; returns its address."""
        if isinstance(value, bool):
            raise TypeError(f"symbol {name!r}: a bool is not an address")
        if isinstance(value, int):
            addr = value
        elif isinstance(value, tuple):
            func, restype, *argtypes = value
            cfunc = _callbacks.wrap_callable(func, restype, tuple(argtypes), name=name)
            self._keep[name] = cfunc
            addr = ctypes.cast(cfunc, ctypes.c_void_p).value or 0
        elif isinstance(value, ctypes._CFuncPtr):  # type: ignore[attr-defined]
            self._keep[name] = value
            addr = ctypes.cast(value, ctypes.c_void_p).value or 0
        elif isinstance(value, ctypes._SimpleCData | ctypes.Structure | ctypes.Array):
            self._keep[name] = value
            addr = ctypes.addressof(value)
        elif callable(value):  # integer-register signature inferred from its parameters
            cfunc = _callbacks.wrap_callable(value, name=name)
            self._keep[name] = cfunc
            addr = ctypes.cast(cfunc, ctypes.c_void_p).value or 0
        else:
            raise TypeError(f"symbol {name!r}: expected an address, a ctypes function or "
                            f"object, or (callable, restype, *argtypes), got "
                            f"{type(value).__name__}")
        self._addrs[name] = addr
        return addr

    def __contains__(self, name: str) -> bool:
        return name in self._addrs

    def __iter__(self) -> Iterator[str]:
        return iter(self._addrs)

    def lookup(self, name: str, version: str | None,
               exact: bool = False) -> tuple[int, int, int] | None:
        addr = self._addrs.get(name)
        if addr is None:
            return None
        keep = self._keep.get(name)
        size = ctypes.sizeof(keep) if keep is not None and not callable(keep) else 0
        return addr, size, STT_NOTYPE

    def symbol(self, name: str, version: str | None = None) -> int | None:
        return self._addrs.get(name)

    def resolve_ifunc(self, addr: int) -> int:
        return addr

    def __repr__(self) -> str:
        return f"<relink.SyntheticModule {self.name} ({len(self._addrs)} symbols)>"


SymbolsLike = Mapping[str, int | Callable[..., Any] | tuple[Any, ...]]
