"""Every ctypes prototype relink uses, in one place (unicorn's ctypes hygiene).

Runtime layer, host only. libc is opened once with ``use_errno=True`` and every function
gets explicit ``argtypes``/``restype`` so 64-bit pointers are never truncated to
``c_int``. Other modules import the prototypes from here; none declares its own.
"""

from __future__ import annotations

import ctypes
import os
import sys

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

mmap = libc.mmap
mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                 ctypes.c_long]
mmap.restype = ctypes.c_void_p

munmap = libc.munmap
munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
munmap.restype = ctypes.c_int

mprotect = libc.mprotect
mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
mprotect.restype = ctypes.c_int

madvise = libc.madvise
madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
madvise.restype = ctypes.c_int

dlopen = libc.dlopen
dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
dlopen.restype = ctypes.c_void_p

dlclose = libc.dlclose
dlclose.argtypes = [ctypes.c_void_p]
dlclose.restype = ctypes.c_int

dlsym = libc.dlsym
dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
dlsym.restype = ctypes.c_void_p

dlvsym = libc.dlvsym
dlvsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
dlvsym.restype = ctypes.c_void_p

dlerror = libc.dlerror
dlerror.argtypes = []
dlerror.restype = ctypes.c_char_p

dlinfo = libc.dlinfo
dlinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
dlinfo.restype = ctypes.c_int

memfd_create = libc.memfd_create  # glibc >= 2.27
memfd_create.argtypes = [ctypes.c_char_p, ctypes.c_uint]
memfd_create.restype = ctypes.c_int


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

pthread_self = libc.pthread_self
pthread_self.argtypes = []
pthread_self.restype = ctypes.c_void_p  # == %fs:0 (the TCB) on x86_64 glibc


class DlPhdrInfo(ctypes.Structure):
    """``struct dl_phdr_info`` (glibc <link.h>), up to the TLS fields."""

    _fields_ = [("dlpi_addr", ctypes.c_size_t), ("dlpi_name", ctypes.c_char_p),
                ("dlpi_phdr", ctypes.c_void_p), ("dlpi_phnum", ctypes.c_uint16),
                ("dlpi_adds", ctypes.c_ulonglong), ("dlpi_subs", ctypes.c_ulonglong),
                ("dlpi_tls_modid", ctypes.c_size_t), ("dlpi_tls_data", ctypes.c_void_p)]


DL_ITERATE_PHDR_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(DlPhdrInfo),
                                            ctypes.c_size_t, ctypes.c_void_p)
dl_iterate_phdr = libc.dl_iterate_phdr
dl_iterate_phdr.argtypes = [DL_ITERATE_PHDR_CALLBACK, ctypes.c_void_p]
dl_iterate_phdr.restype = ctypes.c_int


class TlsIndex(ctypes.Structure):
    """``tls_index`` as ``__tls_get_addr`` takes it: {module id, offset in the block}."""

    _fields_ = [("ti_module", ctypes.c_size_t), ("ti_offset", ctypes.c_size_t)]


TLS_GET_ADDR = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(TlsIndex))
CPUID = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                         ctypes.POINTER(ctypes.c_uint32 * 4))
REGISTER_FRAME = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # __(de)register_frame(begin)
# glibc's _dl_get_tls_static_info(size_t *size, size_t *align) (GLIBC_PRIVATE)
TLS_STATIC_INFO = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_size_t),
                                   ctypes.POINTER(ctypes.c_size_t))
__all__ += ["TLS_STATIC_INFO"]
__all__ += ["CPUID", "DL_ITERATE_PHDR_CALLBACK", "DlPhdrInfo", "REGISTER_FRAME",
            "RTLD_DI_LINKMAP", "RTLD_DI_TLS_DATA", "RTLD_DI_TLS_MODID", "TLS_GET_ADDR",
            "TlsIndex", "dl_iterate_phdr", "pthread_self"]


# -- lazy binding and executables (relink.runtime.lazy / exec / exec_code) -------------

getauxval = libc.getauxval
getauxval.argtypes = [ctypes.c_ulong]
getauxval.restype = ctypes.c_ulong

fflush = libc.fflush
fflush.argtypes = [ctypes.c_void_p]
fflush.restype = ctypes.c_int

abort = libc.abort
abort.argtypes = []
abort.restype = None

syscall = libc.syscall  # variadic: pass every argument as a ctypes c_long / pointer
syscall.restype = ctypes.c_long

LAZY_RESOLVER = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64)
XGETBV = ctypes.CFUNCTYPE(ctypes.c_uint64)
FORK_ENTER = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p)  # pid or -errno
MAIN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
# call_main(main, argc, argv, envp) -> main's int, bit 32 set when the program exited
CALL_MAIN = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_long,
                             ctypes.c_void_p, ctypes.c_void_p)
__all__ += ["CALL_MAIN", "FORK_ENTER", "LAZY_RESOLVER", "MAIN", "XGETBV", "abort", "fflush",
            "getauxval", "syscall"]

# __cxa_finalize(dso_handle): runs the C++ static destructors a relocatable-object unit
# registered with __cxa_atexit (relink.object defines __dso_handle for each unit).
cxa_finalize = libc.__cxa_finalize
cxa_finalize.argtypes = [ctypes.c_void_p]
cxa_finalize.restype = None
__all__ += ["cxa_finalize"]
