"""The loader's parse cache (src/relink/loader.py) must notice a rewritten file.

Parsed metadata is cached per file identity and stamp (dev, inode, size, mtime_ns,
ctime_ns), and per content for memory inputs. These tests rewrite a library *in place* --
same path, same inode, same size -- with a different build and check that the next load
runs the new code (symbols, exports and relocations of the new file), from a path, an fd
and a mutated bytearray. The last test is the change a (size, mtime) key could not see:
mtime restored by hand (the ctime part catches it: utime cannot set ctime).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

import relink
from support.build import build_shared, have_cc

pytestmark = pytest.mark.skipif(not have_cc(), reason="needs gcc")

# The two builds differ in exactly what the cache holds: symbol values (the functions
# swap places), an exported name (same length), and a RELATIVE relocation's addend.
# Stale metadata would show: version() would run helper's code, via_table() would read
# the wrong slot and only_in_v2 would be missing.
SOURCE = r"""
#if VALUE == 1
#define IDX 1
#define ONLY only_in_v1
#else
#define IDX 2
#define ONLY only_in_v2
#endif
static int table[4] = {VALUE * 10, VALUE * 10 + 1, VALUE * 10 + 2, VALUE * 10 + 3};
int *entry = &table[IDX];
#if VALUE == 1
int version(void) { return VALUE; }
int helper(void) { return 100 + VALUE; }
#else
int helper(void) { return 100 + VALUE; }
int version(void) { return VALUE; }
#endif
int ONLY(void) { return 7; }
int via_table(void) { return *entry; }
"""
V1 = (1, 11, "only_in_v1")
V2 = (2, 22, "only_in_v2")


def build(value: int) -> bytes:
    path = build_shared(f"cachever{value}", SOURCE, cflags=[f"-DVALUE={value}"],
                        soname="libcachever.so", group="bench")
    return path.read_bytes()


@pytest.fixture(scope="module")
def builds() -> tuple[bytes, bytes]:
    v1, v2 = build(1), build(2)
    # Same size, so only the mtime part of the stamp can tell the builds apart...
    assert len(v1) == len(v2) and v1 != v2
    # ...and the metadata really differs (else a stale cache would go unnoticed).
    with relink.ElfFile(v1) as e1, relink.ElfFile(v2) as e2:
        s1, s2 = e1.symbols, e2.symbols
        assert s1 is not None and s2 is not None
        assert s1.values[s1.exports["version"]] != s2.values[s2.exports["version"]]
    return v1, v2


def rewrite_in_place(path: Path, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def versions(source: object) -> tuple[int, int, str]:
    with relink.load(source, name="libcachever.so") as m:
        only = next(n for n in ("only_in_v1", "only_in_v2") if m.symbol(n) is not None)
        return (m.function("version", ctypes.c_int)(),
                m.function("via_table", ctypes.c_int)(), only)


def test_rewritten_file_is_reread(tmp_path: Path, builds: tuple[bytes, bytes]) -> None:
    v1, v2 = builds
    lib = tmp_path / "libcachever.so"
    lib.write_bytes(v1)
    before = os.stat(lib)
    assert versions(lib) == V1
    assert versions(lib) == V1  # the second load is served by the cache
    rewrite_in_place(lib, v2)
    after = os.stat(lib)
    assert (after.st_dev, after.st_ino, after.st_size) == \
        (before.st_dev, before.st_ino, before.st_size)
    if after.st_mtime_ns == before.st_mtime_ns:  # coarse clock: make the change visible
        os.utime(lib, ns=(after.st_atime_ns, before.st_mtime_ns + 1))
    assert versions(lib) == V2
    rewrite_in_place(lib, v1)
    os.utime(lib, ns=(after.st_atime_ns, before.st_mtime_ns + 2))
    assert versions(str(lib)) == V1


def test_rewritten_file_through_an_fd(tmp_path: Path, builds: tuple[bytes, bytes]) -> None:
    v1, v2 = builds
    lib = tmp_path / "libcachever.so"
    lib.write_bytes(v1)
    with open(lib, "rb") as f:
        assert versions(f) == V1
    stamp = os.stat(lib).st_mtime_ns
    rewrite_in_place(lib, v2)
    os.utime(lib, ns=(stamp + 5, stamp + 5))
    with open(lib, "rb") as f:
        assert versions(f) == V2


def test_mutated_bytearray_is_reparsed(builds: tuple[bytes, bytes]) -> None:
    v1, v2 = builds
    buf = bytearray(v1)
    assert versions(buf) == V1
    assert versions(buf) == V1
    buf[:] = v2  # same object, same length, new content
    assert versions(buf) == V2
    assert versions(memoryview(buf)) == V2
    assert versions(bytes(v1)) == V1


def test_rewrite_with_restored_mtime(tmp_path: Path, builds: tuple[bytes, bytes]) -> None:
    v1, v2 = builds
    lib = tmp_path / "libcachever.so"
    lib.write_bytes(v1)
    st = os.stat(lib)
    assert versions(lib) == V1
    rewrite_in_place(lib, v2)
    os.utime(lib, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert versions(lib) == V2
