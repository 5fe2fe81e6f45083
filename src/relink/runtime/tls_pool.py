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

So an object is lent only when every thread's copy can be made fresh. The image inside
the object is replaced by the new module's (zero-padded) first: a thread that allocates
its copy from then on copies it. Then either the calling thread is the process's only
thread (glibc's ``__nptl_nthreads``, else ``/proc/self/task``) and its own copy, if
``dlinfo(RTLD_DI_TLS_DATA)`` says it has one, is overwritten with the new image and zeroed
tbss; or `relink.runtime.tls_threads` walks glibc's list of threads under glibc's locks
and does the same for every thread's copy, refusing when a thread that may be resizing
its DTV at that moment holds one (see there for why this is safe). Without the walker
(another libc, an unverified glibc version, a failed check) other threads mean a fresh
carrier, as without the pool, and other Python threads mean closing instead of pooling.

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
from typing import TYPE_CHECKING, Literal

from relink.runtime import libc as c

if TYPE_CHECKING:
    from relink.runtime.tls_carrier import CarrierObject
    from relink.runtime.tls_threads import ThreadWalker

__all__ = ["POOL_MAX", "give", "pooled", "refresh", "single_threaded", "take", "trim"]

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


def take(image: bytes, memsz: int, align: int, vaddr_mod: int, *,
         final: bool = True) -> CarrierObject | None:
    """A pooled object re-initialised for a block (`image`, `memsz`, `align`), or None.

    Caller must ensure: the module never needs its block in static TLS (see module doc).
    `final` False says the image may still change (`refresh` then rewrites the copies):
    with other threads alive such a block is not lent, since the walk that would have
    to rewrite their copies again might be refused.
    """
    if not _pool or (not single_threaded() and _walker() is False):
        return None  # (other threads, and no way to reach their copies)
    filesz = len(image)
    fits = [obj for obj in tuple(_pool) if _fits(obj, filesz, memsz, align, vaddr_mod)]
    if len(fits) > 1:
        fits.sort(key=_memsz)
    for obj in fits:
        try:
            _pool.remove(obj)
        except ValueError:  # another thread took it meanwhile
            continue
        # Order matters: the image first (threads that allocate a copy from now on copy
        # it), then every existing copy.
        obj.set_image(image)
        if _refresh_copies(obj, final):
            return obj
        _pool.append(obj)  # a thread holds a copy we may not write: try the next one
    return None


def _memsz(obj: CarrierObject) -> int:
    return obj.memsz


def _refresh_copies(obj: CarrierObject, final: bool = True) -> bool:
    """Make every thread's existing copy of `obj`'s block its image + zeroed tbss; False
    when that cannot be done safely (then the object must not be lent)."""
    if single_threaded():
        block = obj.thread_block()
        if block:
            n = obj.filesz
            ctypes.memmove(block, obj.image_addr, n)
            if obj.memsz > n:
                ctypes.memset(block + n, 0, obj.memsz - n)
        return True
    walker = _walker()
    return final and walker is not False and walker.reinit(obj)


def refresh(obj: CarrierObject) -> bool:
    """After a lent object's image changed: rewrite every thread's copy (as `take`
    does); False if some copy could not be rewritten."""
    return _refresh_copies(obj)


def give(obj: CarrierObject) -> None:
    """Keep a released dynamic object for a later module, or close it.

    Pooling is always sound (`take` decides at lending time); without the thread walker
    a process running other Python threads closes it as before, since `take` would
    refuse it anyway.
    """
    if (_exiting or obj.static_offset is not None or not obj.obj.handle
            or len(_pool) >= POOL_MAX
            or (threading.active_count() != 1 and _walker() is False)):
        obj.close()
        return
    if not _registered:
        _registered.append(True)
        atexit.register(_at_exit)
    _pool.append(obj)


_walkers: list[ThreadWalker | Literal[False]] = []


def _walker() -> ThreadWalker | Literal[False]:
    """`tls_threads.walker()`, False when unavailable (asked once; tls_threads may still
    disable the walker it returned, which then refuses every walk)."""
    if not _walkers:
        from relink.runtime import tls_threads

        _walkers.append(tls_threads.walker() or False)
    return _walkers[0]


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
