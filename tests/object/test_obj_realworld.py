"""Real static archives from Debian's -dev packages, linked by relink and exercised.

zlib (compress, checked by Python's zlib), bzip2 (round trip), SQLite (SQL runs through
the statically linked library) and gcc's own libgcc.a: only the members the named
functions need are pulled in (``undefined=``, like ``ld -u``).
"""

from __future__ import annotations

import bz2
import ctypes
import subprocess
import zlib
from pathlib import Path

import pytest

import relink

LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
ULONG_P = ctypes.POINTER(ctypes.c_ulong)


def _archive(name: str, package: str) -> Path:
    path = LIBDIR / name
    if not path.exists():
        pytest.skip(f"{path} is missing (apt-get install {package})")
    return path


@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_zlib_from_static_archive(as_bytes: bool) -> None:
    path = _archive("libz.a", "zlib1g-dev")
    src = path.read_bytes() if as_bytes else path
    with relink.load_object(src, undefined=["compress2", "zlibVersion"]) as z:
        assert z.function("zlibVersion", ctypes.c_char_p)().startswith(b"1.")
        data = b"relink links objects at runtime " * 200
        out = ctypes.create_string_buffer(len(data))
        n = ctypes.c_ulong(len(data))
        rc = z.function("compress2", ctypes.c_int, ctypes.c_char_p, ULONG_P,
                        ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int)(
            out, ctypes.byref(n), data, len(data), 9)
        assert rc == 0 and zlib.decompress(out.raw[:n.value]) == data
        assert z.symbol("gzopen") is None  # gzlib.o was not needed, so not pulled in


def test_bzip2_round_trip() -> None:
    path = _archive("libbz2.a", "libbz2-dev")
    with relink.load_object(path, undefined=["BZ2_bzBuffToBuffCompress",
                                             "BZ2_bzBuffToBuffDecompress"]) as b:
        data = bytes(range(256)) * 64
        out = ctypes.create_string_buffer(len(data) * 2)
        n = ctypes.c_uint(len(out))
        assert b.function("BZ2_bzBuffToBuffCompress", ctypes.c_int, ctypes.c_char_p,
                          ctypes.POINTER(ctypes.c_uint), ctypes.c_char_p, ctypes.c_uint,
                          ctypes.c_int, ctypes.c_int, ctypes.c_int)(
            out, ctypes.byref(n), data, len(data), 9, 0, 0) == 0
        assert bz2.decompress(out.raw[:n.value]) == data


def test_sqlite_runs_sql_from_static_archive() -> None:
    path = _archive("libsqlite3.a", "libsqlite3-dev")
    m = relink.load_object(path, undefined=["sqlite3_open", "sqlite3_exec", "sqlite3_close",
                                            "sqlite3_libversion"])
    assert m.function("sqlite3_libversion", ctypes.c_char_p)().startswith(b"3.")
    db = ctypes.c_void_p()
    assert m.function("sqlite3_open", ctypes.c_int, ctypes.c_char_p,
                      ctypes.POINTER(ctypes.c_void_p))(b":memory:", ctypes.byref(db)) == 0
    rows: list[list[bytes]] = []
    cb_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                            ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p))
    cb = cb_t(lambda _u, n, vals, _c: rows.append([vals[i] for i in range(n)]) or 0)
    exec_ = m.function("sqlite3_exec", ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, cb_t,
                       ctypes.c_void_p, ctypes.c_void_p)
    sql = (b"create table t(x, y); insert into t values (1, 'a'), (2, 'b'), (39, 'c');"
           b"select sum(x), group_concat(y, '') from t;")
    assert exec_(db, sql, cb, None, None) == 0
    assert rows == [[b"42", b"abc"]]
    assert m.function("sqlite3_close", ctypes.c_int, ctypes.c_void_p)(db) == 0
    m.close()


def test_libgcc_helpers() -> None:
    res = subprocess.run(["gcc", "-print-libgcc-file-name"], capture_output=True, text=True,
                         check=False)
    path = Path(res.stdout.strip())
    if res.returncode or not path.exists():
        pytest.skip("gcc's libgcc.a not found")
    with relink.load_object(path, undefined=["__popcountdi2", "__bswapdi2"]) as g:
        # libgcc's helpers are STV_HIDDEN: linked, but not exported (as from a DSO)
        assert g.symbol("__popcountdi2") is None
        popcount = g._state.local_symbol("__popcountdi2")
        bswap = g._state.local_symbol("__bswapdi2")
        assert popcount and bswap
        assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64)(popcount)(0xFF00FF) == 16
        assert ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(bswap)(
            0x0102030405060708) == 0x0807060504030201
