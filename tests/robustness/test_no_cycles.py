"""A load and close leaves no reference cycles behind: everything it allocated is freed
by reference counting the moment the module is closed, not later by the cycle collector
(whose full passes cost milliseconds in a process with many objects)."""

from __future__ import annotations

import collections
import ctypes
import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import relink


@pytest.fixture
def saved_garbage() -> Iterator[Callable[[Callable[[], None]], collections.Counter[str]]]:
    def run(action: Callable[[], None]) -> collections.Counter[str]:
        for _ in range(3):  # warm caches: they are not garbage
            action()
        # Up to three measured actions, the first clean one wins: a cycle a load makes
        # shows every time, while a thread another test left running (xdist runs many
        # tests per process) may drop garbage of its own during one of them.
        found: collections.Counter[str] = collections.Counter()
        for _ in range(3):
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                action()
                gc.collect()
                found = collections.Counter(type(o).__name__ for o in gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
            if not found:
                break
        return found

    yield run


def test_chain_load_call_close(saved_garbage: Callable[..., collections.Counter[str]]
                               ) -> None:
    from relink.demo import build_chain

    leaf = build_chain() / "libleaf.so"

    def action() -> None:
        m = relink.load(leaf)
        assert m.function("leaf_value", ctypes.c_int)() == 3
        m.close()

    assert saved_garbage(action) == collections.Counter()


def test_bytes_and_tls_loads(saved_garbage: Callable[..., collections.Counter[str]],
                             seedlib: Path) -> None:
    data = seedlib.read_bytes()

    def action() -> None:
        relink.load(seedlib).close()
        relink.load(data, name="librb_seed.so").close()

    assert saved_garbage(action) == collections.Counter()
