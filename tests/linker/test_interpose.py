"""Interposition from Python: bind a library's libc calls to Python implementations."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import pytest

import relink

pytestmark = pytest.mark.needs_cc
LIBC = ctypes.CDLL(None)
LIBC.malloc.restype = ctypes.c_void_p
LIBC.malloc.argtypes = [ctypes.c_size_t]
LIBC.fopen.restype = ctypes.c_void_p
LIBC.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]


@pytest.mark.parametrize("from_bytes", [False, True])
def test_count_malloc_calls(libc_user: Path, from_bytes: bool) -> None:
    sizes: list[int] = []

    def counting_malloc(n: int) -> int:
        sizes.append(n)
        return LIBC.malloc(n)

    src = libc_user.read_bytes() if from_bytes else libc_user
    with relink.load(src, interpose={
            "malloc": (counting_malloc, ctypes.c_void_p, ctypes.c_size_t)}) as lib:
        make = lib.function("make", ctypes.c_void_p, ctypes.c_size_t)
        drop = lib.function("drop", None, ctypes.c_void_p)
        for n in (16, 32, 48):
            p = make(n)
            assert p
            drop(p)  # free is libc's own: the block came from libc's malloc
    assert sizes == [16, 32, 48]


def test_fixed_time_and_fopen_spy(libc_user: Path, tmp_path: Path) -> None:
    opened: list[bytes] = []

    def spy_fopen(path: bytes, mode: bytes) -> int:
        opened.append(path)
        return LIBC.fopen(path, mode) or 0

    data = tmp_path / "data.bin"
    data.write_bytes(b"Z!")
    with relink.load(libc_user, interpose={
            "time": lambda tloc: 1234,  # bare callable: integer-register signature
            "fopen": (spy_fopen, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)}) as lib:
        assert lib.function("now", ctypes.c_long)() == 1234
        first = lib.function("first_byte", ctypes.c_int, ctypes.c_char_p)
        assert first(str(data).encode()) == ord("Z")
        assert first(b"/nonexistent/x") == -1
    assert opened == [str(data).encode(), b"/nonexistent/x"]


def test_interposed_address(libc_user: Path) -> None:
    fixed = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p)(lambda t: 99)
    addr = ctypes.cast(fixed, ctypes.c_void_p).value
    with relink.load(libc_user, interpose={"time": addr}) as lib:
        assert lib.function("now", ctypes.c_long)() == 99


def test_exception_in_python_implementation_is_reraised(libc_user: Path) -> None:
    calls = []

    def broken_time(tloc: int) -> int:
        calls.append(tloc)
        if len(calls) == 1:
            raise ValueError("clock is broken")
        return 7

    with relink.load(libc_user, interpose={"time": broken_time}) as lib:
        now = lib.function("now", ctypes.c_long)
        with pytest.raises(ValueError, match="clock is broken") as info:
            now()
        assert info.traceback[-1].name == "broken_time"  # the original traceback
        assert relink.raise_pending() is None  # delivered once, then cleared
        assert now() == 7
    assert len(calls) == 2


def test_exceptions_are_per_thread(libc_user: Path) -> None:
    def maybe_raise(tloc: int) -> int:
        if threading.current_thread().name == "raiser":
            raise KeyError("from the raiser thread")
        return 5

    results: dict[str, object] = {}
    with relink.load(libc_user, interpose={"time": maybe_raise}) as lib:
        now = lib.function("now", ctypes.c_long)

        def run() -> None:
            try:
                results[threading.current_thread().name] = now()
            except KeyError as exc:
                results[threading.current_thread().name] = exc

        threads = [threading.Thread(target=run, name=n) for n in ("raiser", "quiet")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert isinstance(results["raiser"], KeyError) and results["quiet"] == 5


def test_bad_interpose_value_is_a_clear_error(libc_user: Path) -> None:
    with pytest.raises(TypeError, match="time"):
        relink.load(libc_user, interpose={"time": 1.5})
    with pytest.raises(TypeError, match=r"\*args"):
        relink.load(libc_user, interpose={"time": lambda *a: 0})
