"""Every ctypes prototype relink uses, in one place (unicorn's ctypes hygiene).

Runtime layer, host only. libc is opened once with ``use_errno=True`` and every function
gets explicit ``argtypes``/``restype`` so 64-bit pointers are never truncated to
``c_int``. Other modules import the prototypes from here; none declares its own.

The functions every native load calls (mmap, mprotect, the dl* family) are made at
import; every other prototype (function, structure or callback type) is made the first
time it is used, through the module's ``__getattr__`` (PEP 562), and then kept as an
ordinary module attribute: each costs a ``dlsym`` or a ctypes type at creation, and a
plain load needs few of them.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

__all__ = [
    "MAP_ANONYMOUS", "MAP_FAILED", "MAP_FIXED", "MAP_FIXED_NOREPLACE", "MAP_PRIVATE",
    "PROT_EXEC", "PROT_NONE", "PROT_READ", "PROT_WRITE", "RTLD_DEFAULT", "RTLD_GLOBAL",
    "RTLD_LAZY", "RTLD_LOCAL", "RTLD_NOLOAD", "RTLD_NOW", "argv_pointers", "dlclose",
    "dlerror", "dlinfo", "dlopen", "dlsym", "dlvsym", "environ_pointer", "errno_message",
    "libc", "madvise", "memfd_create", "memoryview_at", "mmap", "mprotect", "munmap",
]

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 0x02, 0x10, 0x20, 0x100000
MAP_FAILED = (1 << 64) - 1 if ctypes.sizeof(ctypes.c_void_p) == 8 else (1 << 32) - 1
RTLD_LAZY, RTLD_NOW, RTLD_NOLOAD, RTLD_GLOBAL, RTLD_LOCAL = 1, 2, 4, 0x100, 0
RTLD_DEFAULT = None

libc = ctypes.CDLL(None, use_errno=True)

_vp, _sz, _int, _uint = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_uint
_ulong, _long, _u64 = ctypes.c_ulong, ctypes.c_long, ctypes.c_uint64


def _function(symbol: str, argtypes: list[Any] | None, restype: Any) -> Any:
    fn = getattr(libc, symbol)
    if argtypes is not None:
        fn.argtypes = argtypes
    fn.restype = restype
    return fn


# Made at import: every native load uses them. The dl* family must exist before any
# dlopen / dlsym fails: resolving dlerror itself (a dlsym) after a failure would clear
# the error it is meant to report.
mmap = _function("mmap", [_vp, _sz, _int, _int, _int, _long], _vp)
munmap = _function("munmap", [_vp, _sz], _int)
mprotect = _function("mprotect", [_vp, _sz, _int], _int)
dlopen = _function("dlopen", [ctypes.c_char_p, _int], _vp)
dlclose = _function("dlclose", [_vp], _int)
dlsym = _function("dlsym", [_vp, ctypes.c_char_p], _vp)
dlvsym = _function("dlvsym", [_vp, ctypes.c_char_p, ctypes.c_char_p], _vp)
dlerror = _function("dlerror", [], ctypes.c_char_p)
dlinfo = _function("dlinfo", [_vp, _int, _vp], _int)

# The others, made on first use: name -> (libc symbol, argtypes or None to leave them
# unset, restype).
_FUNCTIONS: dict[str, tuple[str, list[Any] | None, Any]] = {
    "madvise": ("madvise", [_vp, _sz, _int], _int),
    "memfd_create": ("memfd_create", [ctypes.c_char_p, _uint], _int),  # glibc >= 2.27
    "pthread_self": ("pthread_self", [], _vp),  # == %fs:0 (the TCB) on x86_64 glibc
    "getauxval": ("getauxval", [_ulong], _ulong),
    "fflush": ("fflush", [_vp], _int),
    "abort": ("abort", [], None),
    # variadic: pass every argument as a ctypes c_long / pointer
    "syscall": ("syscall", None, _long),
    # __cxa_finalize(dso_handle): runs the C++ static destructors a relocatable-object
    # unit registered with __cxa_atexit (relink.object defines __dso_handle for each unit).
    "cxa_finalize": ("__cxa_finalize", [_vp], None),
    # dladdr1(addr, Dl_info *, void **extra, RTLD_DL_SYMENT): extra = the ElfW(Sym) *
    "dladdr1": ("dladdr1", [_vp, _vp, _vp, _int], _int),
}


def errno_message(err: int) -> str:
    """``strerror`` text for an errno value."""
    return os.strerror(err) if err else "unknown error"


_memory_view = ctypes.pythonapi.PyMemoryView_FromMemory
_memory_view.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
_memory_view.restype = ctypes.py_object
_PyBUF_WRITE = 0x200


def memoryview_at(address: int, size: int) -> memoryview:
    """A writable byte memoryview of ``[address, address + size)`` (it owns nothing: the
    caller releases it before the memory goes)."""
    view: memoryview = _memory_view(address, size, _PyBUF_WRITE)
    return view


_environ: list[ctypes.c_void_p] = []


def environ_pointer() -> int:
    """The address of the process's current ``environ`` array (char **)."""
    if not _environ:
        # The variable's location is fixed; its value changes (setenv may reallocate).
        _environ.append(ctypes.c_void_p.in_dll(libc, "environ"))
    return _environ[0].value or 0


_argv_keep: list[tuple[int, ctypes.Array[ctypes.c_char_p]]] = []


def argv_pointers() -> tuple[int, int]:
    """(argc, argv) to hand to initializers: built once from ``sys.argv``, kept alive."""
    if not _argv_keep:
        args = [a.encode("utf-8", "surrogateescape") for a in (sys.orig_argv or sys.argv)]
        arr = (ctypes.c_char_p * (len(args) + 1))(*args, None)
        _argv_keep.append((len(args), arr))
    argc, arr = _argv_keep[0]
    return argc, ctypes.addressof(arr)


# -- TLS, unwinding and debugging support (relink.runtime.tls / unwind / debug) ---------

RTLD_DI_LINKMAP, RTLD_DI_TLS_MODID, RTLD_DI_TLS_DATA = 2, 9, 10


def _dl_phdr_info() -> type[ctypes.Structure]:
    class DlPhdrInfo(ctypes.Structure):
        """``struct dl_phdr_info`` (glibc <link.h>), up to the TLS fields."""

        _fields_ = [("dlpi_addr", _sz), ("dlpi_name", ctypes.c_char_p),
                    ("dlpi_phdr", _vp), ("dlpi_phnum", ctypes.c_uint16),
                    ("dlpi_adds", ctypes.c_ulonglong), ("dlpi_subs", ctypes.c_ulonglong),
                    ("dlpi_tls_modid", _sz), ("dlpi_tls_data", _vp)]

    DlPhdrInfo.__qualname__ = "DlPhdrInfo"
    return DlPhdrInfo


def _tls_index() -> type[ctypes.Structure]:
    class TlsIndex(ctypes.Structure):
        """``tls_index`` as ``__tls_get_addr`` takes it: {module id, offset in the block}."""

        _fields_ = [("ti_module", _sz), ("ti_offset", _sz)]

    TlsIndex.__qualname__ = "TlsIndex"
    return TlsIndex


def _dl_iterate_phdr() -> Any:
    fn = libc.dl_iterate_phdr
    fn.argtypes = [_get("DL_ITERATE_PHDR_CALLBACK"), _vp]
    fn.restype = _int
    return fn


# name -> factory of a structure, callback type or function with callback arguments
_MADE: dict[str, Callable[[], Any]] = {
    "DlPhdrInfo": _dl_phdr_info,
    "TlsIndex": _tls_index,
    "DL_ITERATE_PHDR_CALLBACK": lambda: ctypes.CFUNCTYPE(
        _int, ctypes.POINTER(_get("DlPhdrInfo")), _sz, _vp),
    "dl_iterate_phdr": _dl_iterate_phdr,
    "TLS_GET_ADDR": lambda: ctypes.CFUNCTYPE(_vp, ctypes.POINTER(_get("TlsIndex"))),
    "CPUID": lambda: ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                                      ctypes.POINTER(ctypes.c_uint32 * 4)),
    "REGISTER_FRAME": lambda: ctypes.CFUNCTYPE(None, _vp),  # __(de)register_frame(begin)
    # glibc's _dl_get_tls_static_info(size_t *size, size_t *align) (GLIBC_PRIVATE)
    "TLS_STATIC_INFO": lambda: ctypes.CFUNCTYPE(None, ctypes.POINTER(_sz),
                                                ctypes.POINTER(_sz)),
    # relink.runtime.tls_threads' machine code: status = walk(argument block)
    "TLS_WALK": lambda: ctypes.CFUNCTYPE(_u64, _vp),
    # -- lazy binding and executables (relink.runtime.lazy / exec / exec_code)
    "LAZY_RESOLVER": lambda: ctypes.CFUNCTYPE(_u64, _u64, _u64),
    "XGETBV": lambda: ctypes.CFUNCTYPE(_u64),
    "FORK_ENTER": lambda: ctypes.CFUNCTYPE(_long, _vp),  # pid or -errno
    "MAIN": lambda: ctypes.CFUNCTYPE(_int, _int, _vp, _vp),
    # call_main(main, argc, argv, envp) -> main's int, bit 32 set when the program exited
    "CALL_MAIN": lambda: ctypes.CFUNCTYPE(_u64, _vp, _long, _vp, _vp),
}

__all__ += ["CALL_MAIN", "CPUID", "DL_ITERATE_PHDR_CALLBACK", "DlPhdrInfo", "FORK_ENTER",
            "LAZY_RESOLVER", "MAIN", "REGISTER_FRAME", "RTLD_DI_LINKMAP", "RTLD_DI_TLS_DATA",
            "RTLD_DI_TLS_MODID", "TLS_GET_ADDR", "TLS_STATIC_INFO", "TLS_WALK", "TlsIndex",
            "XGETBV", "abort", "cxa_finalize", "dl_iterate_phdr", "dladdr1", "fflush",
            "getauxval", "pthread_self", "syscall"]


def _get(name: str) -> Any:
    """Prototype `name`, made now unless it already exists."""
    value = globals().get(name)
    return __getattr__(name) if value is None else value


def __getattr__(name: str) -> Any:
    """Make prototype `name` on first use and keep it as a module attribute."""
    spec = _FUNCTIONS.get(name)
    if spec is not None:
        value = _function(*spec)
    else:
        make = _MADE.get(name)
        if make is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = make()
    # Two threads may race here: the first stored object wins, so a structure type and
    # the callback types built on it stay one family.
    return globals().setdefault(name, value)


if TYPE_CHECKING:  # what __getattr__ provides, for type checkers
    madvise: Any
    memfd_create: Any
    pthread_self: Any
    getauxval: Any
    fflush: Any
    abort: Any
    syscall: Any
    cxa_finalize: Any
    dladdr1: Any
    DlPhdrInfo: Any
    TlsIndex: Any
    DL_ITERATE_PHDR_CALLBACK: Any
    dl_iterate_phdr: Any
    TLS_GET_ADDR: Any
    CPUID: Any
    REGISTER_FRAME: Any
    TLS_STATIC_INFO: Any
    TLS_WALK: Any
    LAZY_RESOLVER: Any
    XGETBV: Any
    FORK_ENTER: Any
    MAIN: Any
    CALL_MAIN: Any
