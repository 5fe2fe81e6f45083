"""Scenarios of test_tls_pool.py that need a process of their own.

Run: ``python pool_child.py <scenario> <library>...`` with this tree's ``src`` on
PYTHONPATH. Each scenario asserts and prints ``ok``. The pool is process-wide state, a
pytest-xdist worker runs helper threads of its own, and some scenarios need a process
with exactly one thread (or one without relink's thread walker), so these run in a
fresh interpreter.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import relink
from relink.runtime import tls_pool, tls_threads
from relink.runtime.tls import native_tls
from relink.runtime.tls_carrier import Carrier


def api(m: relink.Module) -> dict[str, Any]:
    return {
        "get_counter": m.function("get_counter", ctypes.c_int),
        "set_counter": m.function("set_counter", None, ctypes.c_int),
        "counter_addr": m.function("counter_addr", ctypes.c_void_p),
        "get_ptr": m.function("get_ptr", ctypes.c_char_p),
        "set_ptr": m.function("set_ptr", None, ctypes.c_char_p),
        "zeroed_is_zero": m.function("zeroed_is_zero", ctypes.c_int),
        "fill_zeroed": m.function("fill_zeroed", None, ctypes.c_ubyte),
    }


def image(f: dict[str, Any]) -> tuple[int, bytes, int]:
    return f["get_counter"](), f["get_ptr"](), f["zeroed_is_zero"]()


def dirty(f: dict[str, Any], v: int) -> None:
    f["set_counter"](v)
    f["set_ptr"](b"stale")
    f["fill_zeroed"](v & 0xFF or 1)


def in_thread(fn: Callable[[], Any]) -> Any:
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    return box[0]


def settle() -> None:
    """Wait until joined threads have really exited (Python's join returns a moment
    before the native thread finishes and glibc counts it out)."""
    deadline = time.monotonic() + 10
    while not tls_pool.single_threaded() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert tls_pool.single_threaded()


def carrier(m: relink.Module) -> Carrier:
    return native_tls().carrier(m._state)  # type: ignore[attr-defined]


def reuse(first: str, second: str, init2: int, msg2: bytes) -> None:
    """Dirty the block in the main thread and in a thread that exits, close, load again:
    the pooled carrier is lent and every thread sees the initial image."""
    m = relink.load(first)
    f = api(m)
    assert image(f) == (5, b"init", 1)
    dirty(f, 99)
    assert in_thread(lambda: (dirty(f, 42), image(f))[1]) == (42, b"stale", 0)
    assert image(f) == (99, b"stale", 0)
    path = carrier(m).path
    m.close()
    assert tls_pool.pooled() == [path]
    for lib, want in ((first, (5, b"init", 1)), (second, (init2, msg2, 1))):
        settle()
        m = relink.load(lib)
        f = api(m)
        car = carrier(m)
        assert car.reused and car.path == path, "the pooled carrier was not lent"
        assert tls_pool.pooled() == []
        assert image(f) == want  # the main thread's stale copy was re-initialised
        assert in_thread(functools.partial(image, f)) == want  # a new thread copies the new image
        dirty(f, 77)
        assert in_thread(functools.partial(image, f)) == want  # and still has its own block
        m.close()
        assert tls_pool.pooled() == [path]


class Worker:
    """A Python thread that stays alive and runs what it is given."""

    def __init__(self) -> None:
        self.jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self.results: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            self.results.put(job())

    def run(self, job: Callable[[], Any]) -> Any:
        self.jobs.put(job)
        return self.results.get(timeout=60)

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join()


class Native:
    """A native thread Python does not know about (fixtures/nativethread.c)."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        lib.native_start.restype = ctypes.c_void_p
        lib.native_call.restype = ctypes.c_long
        lib.native_call.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
        lib.native_stop.argtypes = [ctypes.c_void_p]
        self.lib, self.handle = lib, lib.native_start()
        assert self.handle
        self.stale = ctypes.create_string_buffer(b"stale")

    def call(self, m: relink.Module, name: str, arg: int = 0) -> int:
        return int(self.lib.native_call(self.handle, m.symbol(name), arg))

    def image(self, m: relink.Module) -> tuple[int, bytes, int]:
        counter = ctypes.c_int(self.call(m, "get_counter") & 0xFFFFFFFF).value
        return (counter, ctypes.string_at(self.call(m, "get_ptr")),
                self.call(m, "zeroed_is_zero") & 0xFFFFFFFF)

    def dirty(self, m: relink.Module, v: int) -> None:
        self.call(m, "set_counter", v)
        self.call(m, "set_ptr", ctypes.addressof(self.stale))
        self.call(m, "fill_zeroed", v & 0xFF or 1)

    def stop(self) -> None:
        self.lib.native_stop(self.handle)


def memfd_mappings() -> set[str]:
    with open("/proc/self/maps") as f:
        return {line.split(None, 5)[-1].strip() for line in f if "relink-tls" in line}


def threads(first: str, second: str, native: str) -> None:
    """Other threads alive -- a Python thread and a native one -- that dirtied the block:
    the pooled carrier is still lent, and every thread, old or new, sees the initial
    image of the module it is lent to."""
    assert tls_threads.walker() is not None, tls_threads.unavailable_reason()
    py, nat = Worker(), Native(native)
    m = relink.load(first)
    f = api(m)
    assert image(f) == (5, b"init", 1)
    dirty(f, 99)
    assert py.run(lambda: (dirty(f, 42), image(f))[1]) == (42, b"stale", 0)
    nat.dirty(m, 43)
    assert nat.image(m) == (43, b"stale", 0)
    path = carrier(m).path
    maps = memfd_mappings()
    m.close()
    assert threading.active_count() == 2 and not tls_pool.single_threaded()
    assert tls_pool.pooled() == [path], "pooled although another Python thread runs"
    for lib, want in ((second, (6, b"other", 1)), (first, (5, b"init", 1))) * 2:
        m = relink.load(lib)
        f = api(m)
        car = carrier(m)
        assert car.reused and car.path == path, "the pooled carrier was not lent"
        assert memfd_mappings() == maps  # no new carrier object
        assert image(f) == want  # this thread's stale copy was re-initialised
        assert py.run(functools.partial(image, f)) == want  # the Python thread's too
        assert nat.image(m) == want  # and the native thread's
        assert in_thread(functools.partial(image, f)) == want  # a new thread copies it
        dirty(f, 77)
        py.run(functools.partial(dirty, f, 78))
        nat.dirty(m, 79)
        m.close()
        assert tls_pool.pooled() == [path]
    nat.stop()
    py.stop()


def held(first: str, second: str) -> None:
    """A thread holds a copy and its DTV is older than glibc's generation (it might be
    resizing it): that carrier is not lent. Once the thread is current, it is."""
    assert tls_threads.walker() is not None, tls_threads.unavailable_reason()
    py = Worker()
    m = relink.load(first)
    f = api(m)
    py.run(functools.partial(dirty, f, 42))
    path = carrier(m).path
    bump = Carrier("bump", b"\x01", 8, 8, 0)  # a dlopen of a TLS object: generation + 1
    m.close()
    assert tls_pool.pooled() == [path]
    m = relink.load(second)
    f = api(m)
    assert not carrier(m).reused and path in tls_pool.pooled()
    assert image(f) == (6, b"other", 1)
    # Using this module (its carrier is the newest TLS object) brings the worker's DTV
    # to glibc's current generation (glibc 2.36 updates it as far as the module used).
    assert py.run(functools.partial(image, f)) == (6, b"other", 1)
    m.close()
    m = relink.load(first)  # the worker's stale copy in `path` is rewritten now
    f = api(m)
    assert carrier(m).reused and carrier(m).path == path
    assert image(f) == (5, b"init", 1)
    assert py.run(functools.partial(image, f)) == (5, b"init", 1)
    m.close()
    bump.release()
    py.stop()


def stress(first: str, second: str, native: str) -> None:
    """Loads and closes while other threads are created and exit (stack cache reuse,
    fresh DTVs) and TLS objects are dlopened and dlclosed (generation changes, DTV
    resizes): every carrier, lent or not, shows every thread the initial image."""
    assert tls_threads.walker() is not None, tls_threads.unavailable_reason()
    stop = threading.Event()

    def churn_threads() -> None:
        while not stop.is_set():
            t = threading.Thread(target=lambda: None)
            t.start()
            t.join()

    def churn_generation() -> None:
        while not stop.wait(0.01):  # not all the time: most loads should still be lent
            Carrier("churn", b"\x01" * 8, 16, 8, 0).release()

    churners = [threading.Thread(target=churn_threads),
                threading.Thread(target=churn_generation)]
    for t in churners:
        t.start()
    py, nat = Worker(), Native(native)
    reused = 0
    rounds = 300
    try:
        for i in range(rounds):
            lib, want = ((first, (5, b"init", 1)), (second, (6, b"other", 1)))[i % 2]
            m = relink.load(lib)
            f = api(m)
            reused += carrier(m).reused
            assert image(f) == want
            assert py.run(functools.partial(image, f)) == want
            assert nat.image(m) == want
            dirty(f, 90)
            py.run(functools.partial(dirty, f, 91))
            nat.dirty(m, 92)
            m.close()
    finally:
        stop.set()
        for t in churners:
            t.join()
        nat.stop()
        py.stop()
    print("reused", reused, "of", rounds)  # the churn makes threads' DTVs lag: varies


def live_fallback(lib: str) -> None:
    """Without the thread walker: a live second thread that used the block means no
    lending (its stale copy could not be re-initialised), and both threads see the
    initial image."""
    tls_threads._walker[:] = [None]
    relink.load(lib).close()
    pooled = tls_pool.pooled()
    assert len(pooled) == 1
    py = Worker()
    seen: list[Any] = []
    for _ in range(2):
        m = relink.load(lib)
        f = api(m)
        assert not carrier(m).reused and tls_pool.pooled() == pooled
        assert image(f) == (5, b"init", 1)
        dirty(f, 99)
        seen.append(py.run(lambda f=f: (image(f), dirty(f, 42))[0]))
        m.close()  # another Python thread runs: closed, not pooled
        assert tls_pool.pooled() == pooled
    assert seen == [(5, b"init", 1)] * 2
    py.stop()


def bounded(lib: str) -> None:
    """Twelve carriers at once, then closed: the pool keeps POOL_MAX, trim empties it."""
    ctxs = [relink.LinkContext(f"pool{i}") for i in range(tls_pool.POOL_MAX + 4)]
    mods = [ctx.load(lib) for ctx in ctxs]
    paths = {carrier(m).path for m in mods}
    assert len(paths) == len(mods)
    for m in mods:
        m.close()
    pooled = tls_pool.pooled()
    assert len(pooled) == tls_pool.POOL_MAX and set(pooled) <= paths
    assert tls_pool.trim(2) == tls_pool.POOL_MAX - 2 and len(tls_pool.pooled()) == 2
    assert tls_pool.trim() == 2 and tls_pool.pooled() == []
    # the trimmed objects are really gone from glibc's list of loaded objects
    loaded = set()

    def visit(info_p: Any, _size: int, _data: Any) -> int:
        name = info_p.contents.dlpi_name
        if name:
            loaded.add(name.decode())
        return 0

    from relink.runtime import libc

    libc.dl_iterate_phdr(libc.DL_ITERATE_PHDR_CALLBACK(visit), None)
    assert not loaded & paths


def patch() -> None:
    """A lent carrier whose image changes after lending rewrites the thread's copy."""
    first = Carrier("first", b"\x01" * 8, 24, 8, 0)
    block = first.address(0)  # allocates the main thread's block
    ctypes.memmove(block, b"\xee" * 24, 24)
    first.release(pool=True)
    obj = tls_pool.take(b"\x02" * 4, 16, 8, 0)
    assert obj is not None
    second = Carrier("second", b"\x02" * 4, 16, 8, 0, reuse=obj)
    assert second.address(0) == block
    assert ctypes.string_at(block, 24) == b"\x02" * 4 + bytes(20)
    second.patch_image(b"\x03" * 4)
    assert ctypes.string_at(block, 24) == b"\x03" * 4 + bytes(20)
    assert in_thread(lambda: ctypes.string_at(second.address(0), 16)) == b"\x03" * 4 + bytes(12)
    second.release()
    assert tls_pool.pooled() == []


def patch_threads() -> None:
    """With another thread alive: its copy is rewritten when the image changes after
    lending; an image that may still change is not lent at all."""
    py = Worker()
    first = Carrier("first", b"\x01" * 8, 24, 8, 0)
    block = py.run(lambda: first.address(0))
    ctypes.memmove(block, b"\xdd" * 24, 24)
    first.release(pool=True)
    assert tls_pool.take(b"\x02" * 4, 16, 8, 0, final=False) is None
    obj = tls_pool.take(b"\x02" * 4, 16, 8, 0)
    assert obj is not None
    assert ctypes.string_at(block, 24) == b"\x02" * 4 + bytes(20)
    second = Carrier("second", b"\x02" * 4, 16, 8, 0, reuse=obj)
    second.patch_image(b"\x03" * 4)
    assert ctypes.string_at(block, 24) == b"\x03" * 4 + bytes(20)
    assert py.run(lambda: second.address(0)) == block
    second.release()
    py.stop()


def at_exit(lib: str) -> None:
    """The pool is emptied at interpreter exit (checked by a handler that runs later)."""
    def check() -> None:
        print("pooled at exit:", len(tls_pool.pooled()))

    atexit.register(check)  # registered first, so it runs after the pool's own handler
    relink.load(lib).close()
    assert len(tls_pool.pooled()) == 1


SCENARIOS: dict[str, Callable[..., None]] = {
    "reuse": lambda a, b: reuse(a, b, 6, b"other"),
    "threads": threads,
    "held": held,
    "stress": stress,
    "live_fallback": live_fallback,
    "bounded": bounded,
    "patch": patch,
    "patch_threads": patch_threads,
    "at_exit": at_exit,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
    print("ok")
