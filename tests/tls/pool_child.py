"""Scenarios of test_tls_pool.py that need a process with exactly one thread.

Run: ``python pool_child.py <scenario> <library>...`` with this tree's ``src`` on
PYTHONPATH. Each scenario asserts and prints ``ok``. A pytest-xdist worker may run
helper threads of its own, and relink lends a pooled TLS carrier only while the
process has a single thread, so these run in a fresh interpreter.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import relink
from relink.runtime import tls_pool
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


def live(lib: str) -> None:
    """A live second thread that used the block: no carrier is lent (the thread's stale
    copy could not be re-initialised), and both threads see the initial image."""
    relink.load(lib).close()
    pooled = tls_pool.pooled()
    assert len(pooled) == 1
    go, done = threading.Event(), threading.Event()
    seen: list[Any] = []
    box: dict[str, Any] = {}

    def worker() -> None:
        while True:
            go.wait()
            go.clear()
            if "stop" in box:
                return
            seen.append(image(box["f"]))
            dirty(box["f"], 42)
            done.set()

    t = threading.Thread(target=worker)
    t.start()
    for _ in range(2):
        m = relink.load(lib)
        box["f"] = f = api(m)
        assert not carrier(m).reused and tls_pool.pooled() == pooled
        assert image(f) == (5, b"init", 1)
        dirty(f, 99)
        go.set()
        assert done.wait(30)
        done.clear()
        m.close()  # another Python thread runs: closed, not pooled
        assert tls_pool.pooled() == pooled
    assert seen == [(5, b"init", 1)] * 2
    box["stop"] = True
    go.set()
    t.join()


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


def at_exit(lib: str) -> None:
    """The pool is emptied at interpreter exit (checked by a handler that runs later)."""
    def check() -> None:
        print("pooled at exit:", len(tls_pool.pooled()))

    atexit.register(check)  # registered first, so it runs after the pool's own handler
    relink.load(lib).close()
    assert len(tls_pool.pooled()) == 1


SCENARIOS: dict[str, Callable[..., None]] = {
    "reuse": lambda a, b: reuse(a, b, 6, b"other"),
    "live": live,
    "bounded": bounded,
    "patch": patch,
    "at_exit": at_exit,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
    print("ok")
