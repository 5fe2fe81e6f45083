"""The host's load/unload counters and object names (runtime/host.py): the machine-code
callbacks used on x86_64 must read what glibc reports through Python callbacks, and
notice a library the host dlopens and dlcloses."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from relink.runtime import host
from relink.runtime import libc as c
from support.build import build_shared, have_cc


def _python_counters() -> tuple[int, int]:
    got: list[tuple[int, int]] = []

    def first(info, size, data):  # type: ignore[no-untyped-def]
        got.append((info.contents.dlpi_adds, info.contents.dlpi_subs))
        return 1

    c.dl_iterate_phdr(c.DL_ITERATE_PHDR_CALLBACK(first), None)
    return got[0]


@pytest.mark.skipif(not have_cc(), reason="needs gcc")
def test_native_counters_match_glibc(tmp_path: Path) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the machine-code callback is x86_64 only")
    assert host._native_callback() is not None
    before = host._generation()
    assert before == _python_counters()
    lib = build_shared("hostcounter", "int hc(void) { return 1; }", group="linker")
    handle = ctypes.CDLL(str(lib))._handle
    loaded = host._generation()
    assert loaded == _python_counters() and loaded[0] == before[0] + 1
    assert "libhostcounter.so" in host.loaded_names()
    assert host.host_has_loaded("libhostcounter.so")
    assert not host.host_has_loaded("hostcounter.so")  # whole file names only
    c.dlclose(handle)
    after = host._generation()
    assert after == _python_counters() and after[1] == loaded[1] + 1
    assert "libhostcounter.so" not in host.loaded_names()
    assert not host.host_has_loaded("libhostcounter.so")


def test_native_and_python_walks_see_the_same_names(monkeypatch: pytest.MonkeyPatch) -> None:
    native = host.loaded_names()
    monkeypatch.setattr(host, "_native_counters", [None])  # the Python callbacks
    monkeypatch.setattr(host, "_snapshot", [(-1, -1), b"", None])
    assert host.loaded_names() == native and "libc.so.6" in native
