"""sqlite3: an in-memory database created, filled and queried through the C API."""

from __future__ import annotations

import ctypes
from ctypes import CFUNCTYPE, POINTER, byref, c_char_p, c_double, c_int, c_int64, c_void_p

from realhelp import fn, load_system

SQLITE_OK, SQLITE_ROW, SQLITE_DONE = 0, 100, 101
TRANSIENT = c_void_p(-1)
ROWS = [(1, "alpha", 1.5), (2, "beta", 2.25), (3, "gamma", -4.0), (4, "δέλτα", 10.0)]


def test_sqlite_in_memory(how: str) -> None:
    with load_system("libsqlite3.so.0", how) as lib:
        assert fn(lib, "sqlite3_libversion", c_char_p)().startswith(b"3.")
        assert fn(lib, "sqlite3_threadsafe", c_int)() in (1, 2)
        open_ = fn(lib, "sqlite3_open", c_int, c_char_p, POINTER(c_void_p))
        close = fn(lib, "sqlite3_close", c_int, c_void_p)
        errmsg = fn(lib, "sqlite3_errmsg", c_char_p, c_void_p)
        free = fn(lib, "sqlite3_free", None, c_void_p)
        callback_t = CFUNCTYPE(c_int, c_void_p, c_int, POINTER(c_char_p), POINTER(c_char_p))
        exec_ = fn(lib, "sqlite3_exec", c_int, c_void_p, c_char_p, callback_t, c_void_p,
                   POINTER(c_void_p))
        prepare = fn(lib, "sqlite3_prepare_v2", c_int, c_void_p, c_char_p, c_int,
                     POINTER(c_void_p), c_void_p)
        step = fn(lib, "sqlite3_step", c_int, c_void_p)
        finalize = fn(lib, "sqlite3_finalize", c_int, c_void_p)
        reset = fn(lib, "sqlite3_reset", c_int, c_void_p)
        bind_int = fn(lib, "sqlite3_bind_int64", c_int, c_void_p, c_int, c_int64)
        bind_text = fn(lib, "sqlite3_bind_text", c_int, c_void_p, c_int, c_char_p, c_int,
                       c_void_p)
        bind_double = fn(lib, "sqlite3_bind_double", c_int, c_void_p, c_int, c_double)
        col_int = fn(lib, "sqlite3_column_int64", c_int64, c_void_p, c_int)
        col_text = fn(lib, "sqlite3_column_text", c_char_p, c_void_p, c_int)
        col_double = fn(lib, "sqlite3_column_double", c_double, c_void_p, c_int)

        db = c_void_p()
        assert open_(b":memory:", byref(db)) == SQLITE_OK
        err = c_void_p()
        no_cb = callback_t()
        assert exec_(db, b"CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                         b"score REAL)", no_cb, None, byref(err)) == SQLITE_OK
        stmt = c_void_p()
        assert prepare(db, b"INSERT INTO t VALUES(?, ?, ?)", -1, byref(stmt), None) == 0
        for rid, name, score in ROWS:
            assert bind_int(stmt, 1, rid) == SQLITE_OK
            assert bind_text(stmt, 2, name.encode(), -1, TRANSIENT) == SQLITE_OK
            assert bind_double(stmt, 3, score) == SQLITE_OK
            assert step(stmt) == SQLITE_DONE
            assert reset(stmt) == SQLITE_OK
        assert finalize(stmt) == SQLITE_OK

        assert prepare(db, b"SELECT id, name, score FROM t ORDER BY id", -1, byref(stmt),
                       None) == SQLITE_OK
        rows = []
        while (rc := step(stmt)) == SQLITE_ROW:
            rows.append((col_int(stmt, 0), col_text(stmt, 1).decode(), col_double(stmt, 2)))
        assert rc == SQLITE_DONE
        finalize(stmt)
        assert rows == ROWS

        seen: list[tuple[bytes | None, ...]] = []

        @callback_t
        def collect(_arg: int, n: int, values: object, _names: object) -> int:
            seen.append(tuple(values[i] for i in range(n)))  # type: ignore[index]
            return 0

        assert exec_(db, b"SELECT count(*), sum(score), group_concat(upper(name), ',') "
                         b"FROM t WHERE score > 0", collect, None, byref(err)) == SQLITE_OK
        # (sqlite's built-in upper() folds ASCII only)
        assert seen == [(b"3", b"13.75", "ALPHA,BETA,δέλτα".encode())]
        # a constraint violation is an error with sqlite's own message
        rc = exec_(db, b"INSERT INTO t VALUES(1, 'dup', 0)", no_cb, None, byref(err))
        assert rc != SQLITE_OK
        assert b"UNIQUE constraint failed" in ctypes.string_at(err.value)
        free(err)
        assert b"UNIQUE" in errmsg(db)
        assert close(db) == SQLITE_OK
