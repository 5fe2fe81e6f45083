"""A small pool of released TLS carriers, lent to the next module whose block fits.

Runtime layer, native x86_64 + glibc only (used by `relink.runtime.tls`). Obtaining a
carrier costs a memfd, a write, a ``dlopen`` and a ``dlclose`` on every load + close of
a module with PT_TLS (about 50 µs, most of the per-load TLS cost). A closed module's
carrier can serve the next module instead, *if* every thread that the next module's code
may run in sees a freshly initialised block. What glibc does with a block that stays
loaded decides when that holds:

* A dynamic block is allocated lazily, per thread, at that thread's first
  ``__tls_get_addr`` for the module id, by copying the object's initialization image
  (``l_tls_initimage``, inside the carrier's own mapping) and zeroing the rest. A thread
  that already allocated it keeps its (stale) copy: glibc only drops it after a
  ``dlclose`` (generation change). An exited thread's copy is never seen again: glibc
  frees it with the thread's stack and clears the DTV of a cached stack before a new
  thread uses it.
* A static block lives in every thread's static TLS area; glibc copies the image into it
  once (at promotion, or at thread creation). Static blocks are never pooled here: the
  surplus is small and only a ``dlclose`` of the last-allocated block gives space back.

So an object is lent only when the calling thread is the process's only thread
(glibc's ``__nptl_nthreads``, else ``/proc/self/task``). The image inside the object is
first replaced by the new module's (zero-padded); then the thread count is checked; then
the calling thread's copy, if ``dlinfo(RTLD_DI_TLS_DATA)`` says it has one, is
overwritten with the new image and zeroed tbss. No other thread exists to hold a stale
copy, and any thread created later allocates its copy from the new image. With more
than one thread, loads get a fresh carrier (and, with other Python threads running,
closes ``dlclose`` theirs), exactly as without the pool.

A lent object may already be "forced dynamic" in glibc (its earlier module's code
used ``__tls_get_addr``), so glibc could no longer move it to static TLS. `NativeTls`
therefore lends only to modules that can never need that: no DF_STATIC_TLS, no
TPOFF / TLSDESC relocation, and no exported TLS symbol another module could reference
with initial-exec code. The pool holds at most `POOL_MAX` objects (one mapping and one
memfd each), takes only carriers of modules whose relocation completed (a load that
fails before that closes its carrier, so it leaves nothing behind), and is emptied at
interpreter exit and by `trim`.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import threading
from typing import TYPE_CHECKING

from relink.runtime import libc as c

if TYPE_CHECKING:
    from relink.runtime.tls_carrier import CarrierObject

__all__ = ["POOL_MAX", "give", "pooled", "single_threaded", "take", "trim"]

POOL_MAX = 8
_WASTE = 256  # a lent block may exceed the request by this much (or by 2x)
_pool: list[CarrierObject] = []  # appended / removed atomically: no lock (GC finalizers)
_exiting: list[bool] = []
_registered: list[bool] = []


def _thread_counter() -> ctypes.c_uint | None:
    """glibc's own count of running threads (``__nptl_nthreads``), None if unavailable.

    A GLIBC_PRIVATE variable that libthread_db reads (``_thread_db___nptl_nthreads``):
    pthread_create increments it before the clone, a thread decrements it on exit after
    its last user code (TLS destructors included), a fork child resets it to 1.
    """
    addr = c.dlsym(c.RTLD_DEFAULT, b"__nptl_nthreads")
    return ctypes.c_uint.from_address(addr) if addr else None


_counter: list[ctypes.c_uint | None] = []


def single_threaded() -> bool:
    """True when the calling thread is the only thread of the process (native ones too)."""
    if not _counter:
        _counter.append(_thread_counter())
    counter = _counter[0]
    if counter is not None:
        return counter.value == 1  # one memory read, against ~10 µs for /proc
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _fits(obj: CarrierObject, filesz: int, memsz: int, align: int, vaddr_mod: int) -> bool:
    return (obj.static_offset is None and obj.filesz >= filesz and obj.memsz >= memsz
            and obj.memsz <= max(2 * memsz, memsz + _WASTE) and obj.align >= align
            and (obj.vaddr_mod - vaddr_mod) % align == 0)


def take(image: bytes, memsz: int, align: int, vaddr_mod: int) -> CarrierObject | None:
    """A pooled object re-initialised for a block (`image`, `memsz`, `align`), or None.

    Caller must ensure: the module never needs its block in static TLS (see module doc).
    """
    if not _pool:
        return None
    best: CarrierObject | None = None
    for obj in tuple(_pool):
        if _fits(obj, len(image), memsz, align, vaddr_mod) and (best is None
                                                                or obj.memsz < best.memsz):
            best = obj
    if best is None:
        return None
    try:
        _pool.remove(best)
    except ValueError:  # another thread took it meanwhile
        return None
    # Order matters: the image first (threads created from now on copy it), then the
    # proof that no other thread holds a copy, then the calling thread's own copy.
    best.set_image(image)
    if not single_threaded():
        _pool.append(best)
        return None
    block = best.thread_block()
    if block:
        ctypes.memmove(block, image, len(image))
        if best.memsz > len(image):
            ctypes.memset(block + len(image), 0, best.memsz - len(image))
    return best


def give(obj: CarrierObject) -> None:
    """Keep a released dynamic object for a later module, or close it.

    A process running other Python threads closes it as before (those threads would
    make `take` refuse it anyway); native threads are only seen by `take`.
    """
    if (_exiting or obj.static_offset is not None or not obj.obj.handle
            or len(_pool) >= POOL_MAX or threading.active_count() != 1):
        obj.close()
        return
    if not _registered:
        _registered.append(True)
        atexit.register(_at_exit)
    _pool.append(obj)


def trim(keep: int = 0) -> int:
    """Close pooled objects until at most `keep` remain; returns how many were closed."""
    closed = 0
    while len(_pool) > keep:
        try:
            obj = _pool.pop(0)
        except IndexError:
            break
        obj.close()
        closed += 1
    return closed


def pooled() -> list[str]:
    """The ``/proc/self/fd/N`` paths of the pooled objects (for tests and diagnostics)."""
    return [obj.obj.path for obj in tuple(_pool)]


def _at_exit() -> None:
    _exiting.append(True)
    trim(0)
