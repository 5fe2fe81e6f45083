"""Executors: the one gate through which relink runs code from a loaded file.

Runtime layer. Initializers, finalizers and IFUNC resolvers are called through an
`Executor`. `NativeExecutor` calls them in this process with ctypes and is only used for
images of the host ISA in host memory; a foreign image gets the executor its backend
provides (the emulator backend runs them inside the emulator) or none, in which case
any step that needs to run target code fails with a clear `UnsupportedError`. Nothing
from a foreign file is ever executed on the host.
"""

from __future__ import annotations

import ctypes
from typing import Protocol, runtime_checkable

__all__ = ["Executor", "NativeExecutor"]

_IFUNC = ctypes.CFUNCTYPE(ctypes.c_void_p)
_INIT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_VOID = ctypes.CFUNCTYPE(None)


@runtime_checkable
class Executor(Protocol):
    """Runs target code on behalf of the loader."""

    def call_ifunc(self, resolver: int) -> int:
        """Call an IFUNC resolver at `resolver` and return the implementation address."""
        ...

    def call_init(self, func: int, argc: int, argv: int, envp: int) -> None:
        """Call an initializer ``func(argc, argv, envp)``."""
        ...

    def call_fini(self, func: int) -> None:
        """Call a finalizer ``func()``."""
        ...


class NativeExecutor:
    """Calls target code directly in this process (host ISA and host memory only)."""

    def call_ifunc(self, resolver: int) -> int:
        return _IFUNC(resolver)() or 0

    def call_init(self, func: int, argc: int, argv: int, envp: int) -> None:
        _INIT(func)(argc, argv, envp)

    def call_fini(self, func: int) -> None:
        _VOID(func)()
