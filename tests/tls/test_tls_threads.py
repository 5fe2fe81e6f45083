"""runtime/tls_threads.py: glibc's thread list, located from libthread_db's descriptors.

The pool scenarios (test_tls_pool.py) show what the walker is for; these check that it
is available where it should be, that its machine code is the C source it documents,
and that it trusts a module id's slot only when the slot holds the expected object.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from relink.runtime import tls_threads
from relink.runtime.tls_carrier import Carrier


def glibc_version() -> tuple[int, int] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return None
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None


def test_available_on_verified_glibc() -> None:
    version = glibc_version()
    if version is None or os.uname().machine != "x86_64":
        pytest.skip("needs x86_64 glibc")
    walker = tls_threads.walker()
    if not tls_threads._VERIFIED[0] <= version <= tls_threads._VERIFIED[1]:
        assert walker is None and "version" in (tls_threads.unavailable_reason() or "")
        return
    assert walker is not None, tls_threads.unavailable_reason()
    assert tls_threads.unavailable_reason() is None
    # the lock found by signature is a recursive mutex (kind 1)
    assert ctypes.c_int.from_address(walker.tls_lock + 16).value == 1


def test_walk_sees_every_thread() -> None:
    walker = tls_threads.walker()
    if walker is None:
        pytest.skip(tls_threads.unavailable_reason() or "no walker")
    before = walker._call(0, 1 << 63, 0, 0, 0, False)
    started, done = threading.Barrier(4), threading.Event()
    threads = [threading.Thread(target=lambda: (started.wait(30), done.wait(30)))
               for _ in range(3)]
    for t in threads:
        t.start()
    started.wait(30)
    during = walker._call(0, 1 << 63, 0, 0, 0, False)
    done.set()
    for t in threads:
        t.join()
    assert before[0] == during[0] == tls_threads.LENDABLE
    assert during[1] >= before[1] + 3


@pytest.mark.needs_cc
def test_machine_code_is_the_documented_source(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc")
    version = subprocess.run([gcc, "-dumpfullversion"], capture_output=True,
                             text=True).stdout.strip()
    if version != "12.2.0":
        pytest.skip(f"the bytes were made by GCC 12.2.0, this is {version}")
    (tmp_path / "walk.c").write_text(tls_threads.SOURCE)
    subprocess.run([gcc, *tls_threads.FLAGS.split(), "-c", "walk.c", "-o", "walk.o"],
                   cwd=tmp_path, check=True)
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.text", "walk.o", "walk.bin"],
                   cwd=tmp_path, check=True)
    relocs = subprocess.run(["readelf", "-r", "walk.o"], cwd=tmp_path, capture_output=True,
                            text=True).stdout
    assert "R_X86_64" not in relocs
    assert (tmp_path / "walk.bin").read_bytes() == tls_threads._CODE


def test_slot_generation_needs_the_right_link_map() -> None:
    if tls_threads.walker() is None:
        pytest.skip(tls_threads.unavailable_reason() or "no walker")
    car = Carrier("slot", b"\x01" * 8, 16, 8, 0)
    try:
        obj = car._obj
        lm = obj.obj.link_map()
        gen = tls_threads.slot_generation(obj.modid, lm)
        walker = tls_threads.walker()
        assert walker is not None and gen is not None
        assert 0 < gen <= tls_threads._u64(walker.generation)
        assert tls_threads.slot_generation(obj.modid, lm + 8) is None
        assert tls_threads.slot_generation(1 << 30, lm) is None
    finally:
        car.release()
