"""Pooled TLS carriers (runtime/tls_pool.py): a closed module's carrier lent to the next.

A carrier is lent after its image and every thread's existing copy of the block are
re-initialised (the calling thread's alone in a single-threaded process, every thread's
through runtime/tls_threads.py otherwise); so every thread must see the new module's
initial image (tdata values, zeroed tbss), never values a thread wrote through the
earlier module. Scenarios that depend on the process's threads or on the pool's state
run in a fresh interpreter (pool_child.py), the rest here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tlshelp import src, tls_module

import relink
from relink.errors import UnknownSymbolError
from relink.runtime import tls_pool
from relink.runtime.tls import _dynamic_only, native_tls
from support.build import build_shared

pytestmark = pytest.mark.needs_cc

CHILD = Path(__file__).with_name("pool_child.py")
SRC = Path(relink.__file__).resolve().parents[1]  # this tree's src, for the child


def private(tag: str = "", *cflags: str, ldflags: tuple[str, ...] = ()) -> Path:
    return build_shared(f"tlspriv{tag}", {"tlspriv.c": src("tlspriv.c")}, group="tls",
                        cflags=["-O2", *cflags], ldflags=list(ldflags),
                        soname=f"libtlspriv{tag}.so")


def child(scenario: str, *libs: Path) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(CHILD.parent)]))
    out = subprocess.run([sys.executable, str(CHILD), scenario, *map(str, libs)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout.splitlines()
    return out.stdout


def test_lent_carrier_shows_every_thread_the_initial_image() -> None:
    other = private("2", "-DPRIV_INIT=6", '-DPRIV_MSG="other"')
    child("reuse", private(), other)


def native_thread_lib() -> Path:
    return build_shared("nativethread", {"nativethread.c": src("nativethread.c")},
                        group="tls", cflags=["-O2", "-pthread"], ldflags=["-pthread"])


def test_lent_with_other_threads_alive_every_thread_sees_the_initial_image() -> None:
    other = private("2", "-DPRIV_INIT=6", '-DPRIV_MSG="other"')
    child("threads", private(), other, native_thread_lib())


def test_copy_of_a_thread_behind_glibcs_generation_blocks_lending() -> None:
    other = private("2", "-DPRIV_INIT=6", '-DPRIV_MSG="other"')
    child("held", private(), other)


def test_lending_while_threads_come_and_go_and_objects_load() -> None:
    other = private("2", "-DPRIV_INIT=6", '-DPRIV_MSG="other"')
    child("stress", private(), other, native_thread_lib())


def test_without_the_walker_a_live_thread_means_no_lending() -> None:
    child("live_fallback", private())


def test_image_patched_after_lending_reaches_other_threads_copies() -> None:
    child("patch_threads")


def test_pool_is_bounded_and_trimmed() -> None:
    child("bounded", private())


def test_image_patched_after_lending_reaches_the_thread_copy() -> None:
    child("patch")


def test_pool_is_emptied_at_exit() -> None:
    assert "pooled at exit: 0" in child("at_exit", private())


def test_only_modules_that_never_need_static_tls_are_pooled() -> None:
    for lib, expected in ((private(), True), (tls_module("gd"), False),
                          (tls_module("ld"), False), (tls_module("ie"), False),
                          (tls_module("desc"), False)):
        with relink.load(str(lib)) as m:
            assert _dynamic_only(m._state.image) is expected, lib.name  # type: ignore[attr-defined]
            path = native_tls().carrier(m._state).path  # type: ignore[attr-defined]
        if not expected:
            assert path not in tls_pool.pooled()


def test_failed_load_pools_nothing() -> None:
    lib = private("missing", "-DPRIV_MISSING", ldflags=("-Wl,-z,now",))
    with pytest.raises(UnknownSymbolError):
        relink.load(str(lib))  # the pool may lend it one; it is closed, not given back
    before = tls_pool.pooled()
    for _ in range(3):
        with pytest.raises(UnknownSymbolError):
            relink.load(str(lib))
        assert set(tls_pool.pooled()) <= set(before)
