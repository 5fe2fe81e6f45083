"""Tests for relink.linker.ldcache: synthetic caches, the real /etc/ld.so.cache, truncation."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
import struct
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from relink.linker.ldcache import (
    CACHE_EXTENSION_MAGIC,
    DL_CACHE_HWCAP_EXTENSION,
    FLAG_AARCH64_LIB64,
    FLAG_ELF_LIBC6,
    FLAG_X8664_LIB64,
    LdCache,
    LdCacheEntry,
    LdCacheError,
    describe_flags,
    host_machine_flags,
)

REAL_CACHE = "/etc/ld.so.cache"
X86_64 = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64
AARCH64 = FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64


# -- a small encoder (mirrors glibc's elf/cache.c layout) ------------------------------------


@dataclass
class Rec:
    flags: int
    key: str
    value: str
    osversion: int = 0
    hwcap: int = 0


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def encode_new(
    recs: Sequence[Rec],
    *,
    order: str = "<",
    generator: str | None = None,
    hwcaps: Sequence[str] = (),
    file_base: int = 0,
) -> bytes:
    """Encode a ``glibc-ld.so.cache1.1`` blob that will live at ``file_base`` in the file."""
    header_size, entry_size = 48, 24
    strings = bytearray()
    offsets: dict[str, int] = {}
    strings_start = header_size + len(recs) * entry_size  # relative to the new header

    def intern(text: str) -> int:
        if text not in offsets:
            offsets[text] = strings_start + len(strings)
            strings.extend(os.fsencode(text) + b"\0")
        return offsets[text]

    entries = bytearray()
    for rec in recs:
        key, value = intern(rec.key), intern(rec.value)
        entries += struct.pack(order + "iIIIQ", rec.flags, key, value, rec.osversion, rec.hwcap)
    hwcap_indices = [intern(name) + file_base for name in hwcaps]  # file-relative indices
    extension_offset = 0
    ext = bytearray()
    if generator is not None or hwcaps:
        extension_offset = _align(file_base + strings_start + len(strings), 4)
        sections: list[tuple[int, bytes]] = []
        if generator is not None:
            sections.append((0, generator.encode()))
        if hwcaps:
            sections.append((1, struct.pack(order + f"{len(hwcaps)}I", *hwcap_indices)))
        data_off = extension_offset + 8 + 16 * len(sections)
        table = bytearray(struct.pack(order + "II", CACHE_EXTENSION_MAGIC, len(sections)))
        payload = bytearray()
        for tag, section in sections:
            start = _align(data_off + len(payload), 4)
            payload += b"\0" * (start - data_off - len(payload))
            table += struct.pack(order + "IIII", tag, 0, start, len(section))
            payload += section
        ext = table + payload
    endian_flag = 2 if order == "<" else 3
    header = b"glibc-ld.so.cache" + b"1.1"
    header += struct.pack(
        order + "IIB3xI12x", len(recs), len(strings), endian_flag, extension_offset
    )
    assert len(header) == header_size
    blob = bytearray(header + entries + strings)
    if ext:
        blob += b"\0" * (extension_offset - file_base - len(blob))
        blob += ext
    return bytes(blob)


def encode_old(recs: Sequence[Rec], *, embed_new: bool = False) -> bytes:
    """Encode the ``ld.so-1.7.0`` format, optionally followed by the new one (compat)."""
    nlibs = len(recs)
    table_end = 16 + 12 * nlibs
    new_start = _align(table_end, 8)
    new_blob = encode_new(recs, file_base=new_start) if embed_new else b""
    # Old string indices are relative to table_end; with the new part embedded,
    # its strings sit behind it, so reuse them (as glibc does) via the new blob.
    strings = bytearray()
    offsets: dict[str, int] = {}
    base = (new_start - table_end) + len(new_blob)

    def intern(text: str) -> int:
        if text not in offsets:
            offsets[text] = base + len(strings)
            strings.extend(os.fsencode(text) + b"\0")
        return offsets[text]

    table = bytearray(b"ld.so-1.7.0" + b"\0" + struct.pack("<I", nlibs))
    for rec in recs:
        table += struct.pack("<iII", rec.flags, intern(rec.key), intern(rec.value))
    pad = b"\0" * (new_start - table_end)
    return bytes(table + pad + new_blob + strings)


SAMPLE = [
    Rec(X86_64, "libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1"),
    Rec(AARCH64, "libz.so.1", "/lib/aarch64-linux-gnu/libz.so.1"),
    Rec(X86_64, "libfoo.so.2", "/opt/foo/lib/libfoo.so.2", osversion=0x030200),
    Rec(X86_64, "libfoo.so.2", "/usr/lib/x86_64-linux-gnu/libfoo.so.2"),
    Rec(1, "libold.so", "/lib/libold.so"),
    Rec(X86_64, "libnonascii.so", "/opt/\udcff/libnonascii.so"),
]


def _as_tuples(entries: Sequence[LdCacheEntry]) -> list[tuple[int, str, str, int, int]]:
    return [(e.flags, e.key, e.value, e.osversion, e.hwcap) for e in entries]


def _expected(recs: Sequence[Rec], *, old: bool = False) -> list[tuple[int, str, str, int, int]]:
    return [
        (r.flags, r.key, r.value, 0 if old else r.osversion, 0 if old else r.hwcap) for r in recs
    ]


# -- synthetic round trips -----------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
def test_new_format_round_trip(order: str) -> None:
    cache = LdCache.from_bytes(encode_new(SAMPLE, order=order), strict=True)
    assert cache.format == "new"
    assert _as_tuples(cache.entries) == _expected(SAMPLE)
    assert cache.lookup("libz.so.1", machine_flags=X86_64) == ["/lib/x86_64-linux-gnu/libz.so.1"]
    assert cache.lookup("libz.so.1", machine_flags=AARCH64) == ["/lib/aarch64-linux-gnu/libz.so.1"]
    assert cache.lookup("libz.so.1", machine_flags={X86_64, AARCH64}) == [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/aarch64-linux-gnu/libz.so.1",
    ]
    assert cache.lookup("libfoo.so.2", machine_flags=X86_64) == [
        "/opt/foo/lib/libfoo.so.2",
        "/usr/lib/x86_64-linux-gnu/libfoo.so.2",
    ]
    assert cache.lookup("libold.so", machine_flags=X86_64) == []
    assert cache.lookup("libold.so", machine_flags={1, 3}) == ["/lib/libold.so"]
    assert cache.lookup("libnonascii.so", machine_flags=X86_64) == ["/opt/\udcff/libnonascii.so"]
    assert cache.lookup("libmissing.so", machine_flags=X86_64) == []


def test_old_format_round_trip() -> None:
    cache = LdCache.from_bytes(encode_old(SAMPLE), strict=True)
    assert cache.format == "old"
    assert _as_tuples(cache.entries) == _expected(SAMPLE, old=True)


def test_old_format_with_embedded_new_round_trip() -> None:
    cache = LdCache.from_bytes(encode_old(SAMPLE, embed_new=True), strict=True)
    assert cache.format == "old+new"
    assert _as_tuples(cache.entries) == _expected(SAMPLE)


def test_empty_cache_round_trip() -> None:
    cache = LdCache.from_bytes(encode_new([]), strict=True)
    assert cache.format == "new"
    assert cache.entries == []


def test_extension_section_generator_and_hwcaps() -> None:
    recs = [
        Rec(
            X86_64,
            "libm.so.6",
            "/usr/lib/glibc-hwcaps/x86-64-v3/libm.so.6",
            hwcap=DL_CACHE_HWCAP_EXTENSION | 1,
        ),
        Rec(
            X86_64,
            "libm.so.6",
            "/usr/lib/glibc-hwcaps/x86-64-v2/libm.so.6",
            hwcap=DL_CACHE_HWCAP_EXTENSION | 0,
        ),
        Rec(X86_64, "libm.so.6", "/usr/lib/libm.so.6"),
    ]
    data = encode_new(recs, generator="ldconfig (test) 9.99", hwcaps=["x86-64-v2", "x86-64-v3"])
    cache = LdCache.from_bytes(data, strict=True)
    assert cache.generator == "ldconfig (test) 9.99"
    assert [e.hwcaps_subdir for e in cache.entries] == ["x86-64-v3", "x86-64-v2", None]
    assert cache.entries[0].describe() == 'libc6,x86-64, hwcap: "x86-64-v3"'
    assert cache.lookup("libm.so.6", machine_flags=X86_64) == ["/usr/lib/libm.so.6"]
    assert cache.lookup("libm.so.6", machine_flags=X86_64, hwcaps={"x86-64-v2"}) == [
        "/usr/lib/glibc-hwcaps/x86-64-v2/libm.so.6",
        "/usr/lib/libm.so.6",
    ]


def test_broken_extension_does_not_break_entries() -> None:
    data = bytearray(encode_new(SAMPLE, generator="gen"))
    ext_offset = struct.unpack_from("<I", data, 32)[0]
    struct.pack_into("<I", data, ext_offset, 0x12345678)  # bad extension magic
    cache = LdCache.from_bytes(bytes(data), strict=True)
    assert _as_tuples(cache.entries) == _expected(SAMPLE)
    assert cache.generator is None
    struct.pack_into("<I", data, 32, 0xFFFFFFF0)  # extension offset beyond the file
    assert _as_tuples(LdCache.from_bytes(bytes(data), strict=True).entries) == _expected(SAMPLE)


def _corrupt(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: _corrupt(d, 20, "<I", 0xFFFFFFFF), id="huge-nlibs"),
        pytest.param(lambda d: _corrupt(d, 24, "<I", 0xFFFFFFFF), id="huge-len-strings"),
        pytest.param(lambda d: _corrupt(d, 28, "<B", 1), id="endian-invalid"),
        pytest.param(lambda d: _corrupt(d, 48 + 4, "<I", 0xFFFFFF00), id="key-out-of-range"),
        pytest.param(lambda d: _corrupt(d, 48 + 8, "<I", len(d) + 5), id="value-out-of-range"),
        pytest.param(lambda d: d[:-1] + b"x", id="last-string-unterminated"),
        pytest.param(lambda d: b"glibc-ld.so.cache1.0" + d[20:], id="bad-version"),
        pytest.param(lambda d: b"", id="empty-file"),
        pytest.param(lambda d: b"ld.so-1.7.0", id="old-magic-only"),
        pytest.param(lambda d: b"ld.so-1.7.0\0" + b"\xff\xff\xff\x7f", id="old-huge-nlibs"),
    ],
)
def test_malformed_cache_is_empty_and_logged(
    mutate: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    data = mutate(encode_new(SAMPLE))
    with caplog.at_level(logging.DEBUG, logger="relink.linker.ldcache"):
        cache = LdCache.from_bytes(data)
    assert cache.entries == []
    assert cache.lookup("libz.so.1") == []
    assert any("ld.so cache" in rec.getMessage() for rec in caplog.records)
    with pytest.raises(LdCacheError):
        LdCache.from_bytes(data, strict=True)


def test_random_corruption_never_raises() -> None:
    good = encode_new(SAMPLE, generator="gen", hwcaps=["x86-64-v3"])
    rng = random.Random(1234)
    for _ in range(500):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        LdCache.from_bytes(bytes(data))  # must not raise
        with contextlib.suppress(LdCacheError):
            LdCache.from_bytes(bytes(data), strict=True)


# -- load(): file handling and memoisation ---------------------------------------------------


def test_load_missing_file_is_empty(tmp_path: Path) -> None:
    cache = LdCache.load(str(tmp_path / "nope.cache"))
    assert cache.entries == []
    assert LdCache.load(str(tmp_path)).entries == []  # a directory


def test_load_is_memoised_and_rereads_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "ld.so.cache"
    path.write_bytes(encode_new(SAMPLE[:1]))
    first = LdCache.load(str(path))
    assert LdCache.load(str(path)) is first
    assert [e.key for e in first.entries] == ["libz.so.1"]

    # Same size, different content: only the mtime tells them apart.
    path.write_bytes(encode_new([Rec(X86_64, "libq.so.1", "/lib/x86_64-linux-gnu/libq.so.1")]))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = LdCache.load(str(path))
    assert second is not first
    assert [e.key for e in second.entries] == ["libq.so.1"]

    # Replaced by rename (what ldconfig does): new inode.
    tmp = tmp_path / "ld.so.cache~"
    tmp.write_bytes(encode_new(SAMPLE))
    os.replace(tmp, path)
    third = LdCache.load(str(path))
    assert _as_tuples(third.entries) == _expected(SAMPLE)


# -- the real system cache -----------------------------------------------------------------

needs_real_cache = pytest.mark.skipif(
    not os.path.isfile(REAL_CACHE), reason="no /etc/ld.so.cache on this system"
)


def _ldconfig() -> str | None:
    for candidate in (shutil.which("ldconfig"), "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


_LINE = re.compile(rb"^\t(.+?) \((.*)\) => (.*)$")


def _ldconfig_p() -> list[tuple[str, str, str]]:
    exe = _ldconfig()
    if exe is None:
        pytest.skip("ldconfig not available")
    out = subprocess.run([exe, "-p"], capture_output=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        match = _LINE.match(line)
        if match:
            soname, desc, path = (os.fsdecode(group) for group in match.groups())
            rows.append((soname, desc, path))
    return rows


@needs_real_cache
def test_real_cache_libc() -> None:
    cache = LdCache.load(REAL_CACHE)
    assert cache.entries
    paths = cache.lookup("libc.so.6")
    assert paths, "libc.so.6 not found in the real ld.so.cache"
    assert os.path.basename(paths[0]) == "libc.so.6"
    assert os.path.exists(paths[0])


@needs_real_cache
def test_real_cache_libz_if_present() -> None:
    cache = LdCache.load(REAL_CACHE)
    paths = cache.lookup("libz.so.1")
    if not paths:
        assert all(e.key != "libz.so.1" for e in cache.entries)
        pytest.skip("libz.so.1 not installed")
    assert os.path.basename(paths[0]) == "libz.so.1"
    assert os.path.exists(paths[0])


@needs_real_cache
def test_real_cache_matches_ldconfig_p() -> None:
    rows = _ldconfig_p()
    cache = LdCache.load(REAL_CACHE)
    # Same records, same order.
    assert [(e.key, e.value) for e in cache.entries] == [(s, p) for s, _, p in rows]
    host_labels = {describe_flags(flags) for flags in host_machine_flags()}
    checked = 0
    for (soname, desc, path), entry in zip(rows, cache.entries, strict=True):
        label = desc.split(", hwcap:")[0].split(", OS ABI:")[0]
        if entry.osversion == 0 and label.startswith("libc6"):
            assert entry.describe() == desc
        if label in host_labels:
            hwcaps = {entry.hwcaps_subdir} if entry.hwcaps_subdir else set()
            assert path in cache.lookup(soname, hwcaps=hwcaps), (soname, path)
            checked += 1
    assert checked > 0


@needs_real_cache
def test_real_cache_truncation_never_raises(tmp_path: Path) -> None:
    data = Path(REAL_CACHE).read_bytes()
    full = LdCache.from_bytes(data, strict=True)
    size = len(data)
    offsets = sorted(
        {0, 1, 11, 19, 20, 47, 48, 49, size - 1} | {size * k // 13 for k in range(1, 12)}
    )
    assert len(offsets) >= 20
    for n in offsets[:20]:
        truncated = data[:n]
        cache = LdCache.from_bytes(truncated)  # must not raise
        assert cache.entries == full.entries[: len(cache.entries)]
        assert cache.entries == [] or len(cache.entries) == len(full.entries)
        path = tmp_path / f"cut-{n}"
        path.write_bytes(truncated)
        assert LdCache.load(str(path)).entries == cache.entries
