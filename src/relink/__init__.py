"""relink: load, link and rewrite ELF files at runtime, from Python.

The front door. Names are imported lazily so ``import relink`` stays cheap (no ctypes
work, no numpy) until something is used:

    >>> import relink, ctypes
    >>> with relink.load("libz.so.1-path") as z:            # doctest: +SKIP
    ...     z.function("zlibVersion", ctypes.c_char_p)()

Pipeline: input -> elf -> arch -> memory -> loader -> relocation -> image -> linker ->
runtime -> plan (see docs in the README and each subpackage's docstring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relink.errors import (
    ArchMismatchError,
    DependencyError,
    ElfParseError,
    EmulationError,
    ExecutionError,
    InitializerError,
    LinkerError,
    MappingError,
    RelinkError,
    RelocationError,
    RelocationOverflowError,
    SymbolNotFoundError,
    TlsError,
    UnknownSymbolError,
    UnresolvedDependencyError,
    UnsupportedError,
    UnsupportedRelocationError,
)

__version__ = "0.1.0"

__all__ = [
    "ArchMismatchError", "BufferMapper", "DependencyError", "ElfFile", "ElfParseError",
    "HostMapper", "HostPolicy", "InitializerError", "LinkerError", "MappingError", "Module",
    "RelinkError", "RelocationError", "RelocationOverflowError", "SearchPathResolver",
    "SymbolNotFoundError", "SyntheticModule", "TlsError", "UnknownSymbolError",
    "UnresolvedDependencyError", "UnsupportedError", "UnsupportedRelocationError",
    "__version__", "host_module", "load",
    "Linker", "LinkContext", "LinkContextError", "PreparedLoad", "ResolveRequest", "Existing",
    "Unresolved", "Observer", "LoadVetoedError", "default_context", "raise_pending",
    "load_object", "SectionGroup",
    "scan",
    "run_main", "execute", "ExecutionError",
    "Emulator", "EmulationError",
    "loaded_modules", "LoadedModuleInfo",
]

_LAZY = {
    "load": ("relink.api", "load"),
    "loaded_modules": ("relink.runtime.debug", "loaded_modules"),
    "LoadedModuleInfo": ("relink.runtime.debug", "LoadedModuleInfo"),
    "scan": ("relink.plan.scan", "scan"),
    "host_module": ("relink.api", "host_module"),
    "Module": ("relink.module", "Module"),
    "SyntheticModule": ("relink.module", "SyntheticModule"),
    "ElfFile": ("relink.elf", "ElfFile"),
    "HostPolicy": ("relink.runtime.host", "HostPolicy"),
    "HostMapper": ("relink.memory.host", "HostMapper"),
    "BufferMapper": ("relink.memory.buffer", "BufferMapper"),
    "Emulator": ("relink.memory.unicorn", "Emulator"),
    "SearchPathResolver": ("relink.linker.search", "SearchPathResolver"),
    "Linker": ("relink.linker.linker", "Linker"),
    "LinkContext": ("relink.linker.context", "LinkContext"),
    "LinkContextError": ("relink.linker.context", "LinkContextError"),
    "PreparedLoad": ("relink.linker.linker", "PreparedLoad"),
    "ResolveRequest": ("relink.linker.resolvers", "ResolveRequest"),
    "Existing": ("relink.linker.resolvers", "Existing"),
    "Unresolved": ("relink.linker.resolvers", "Unresolved"),
    "Observer": ("relink.observer", "Observer"),
    "LoadVetoedError": ("relink.observer", "LoadVetoedError"),
    "default_context": ("relink.api", "default_context"),
    "raise_pending": ("relink.linker.callbacks", "raise_pending"),
    "load_object": ("relink.object.loader", "load_object"),
    "SectionGroup": ("relink.object.layout", "SectionGroup"),
    "run_main": ("relink.runtime.exec", "run_main"),
    "execute": ("relink.runtime.exec", "execute"),
}

if TYPE_CHECKING:
    from relink.api import default_context, host_module, load
    from relink.elf import ElfFile
    from relink.linker.callbacks import raise_pending
    from relink.linker.context import LinkContext, LinkContextError
    from relink.linker.linker import Linker, PreparedLoad
    from relink.linker.resolvers import Existing, ResolveRequest, Unresolved
    from relink.linker.search import SearchPathResolver
    from relink.memory.buffer import BufferMapper
    from relink.memory.host import HostMapper
    from relink.memory.unicorn import Emulator
    from relink.module import Module, SyntheticModule
    from relink.object.layout import SectionGroup
    from relink.object.loader import load_object
    from relink.observer import LoadVetoedError, Observer
    from relink.runtime.debug import LoadedModuleInfo, loaded_modules
    from relink.runtime.exec import execute, run_main
    from relink.runtime.host import HostPolicy


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'relink' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value
