"""Compression libraries: zlib, liblzma, libzstd, libbz2 — checked against Python's own
codecs (the oracle) in both directions."""

from __future__ import annotations

import bz2
import ctypes
import lzma
import zlib
from ctypes import (
    POINTER,
    byref,
    c_char_p,
    c_int,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_ulong,
    c_void_p,
)

from realhelp import fn, load_system

DATA = b"relink loads real libraries. " * 400 + bytes(range(256)) * 8


def test_zlib(how: str) -> None:
    with load_system("libz.so.1", how) as z:
        assert fn(z, "zlibVersion", c_char_p)().startswith(b"1.")
        compress2 = fn(z, "compress2", c_int, c_char_p, POINTER(c_ulong), c_char_p, c_ulong,
                       c_int)
        uncompress = fn(z, "uncompress", c_int, c_char_p, POINTER(c_ulong), c_char_p,
                        c_ulong)
        bound = fn(z, "compressBound", c_ulong, c_ulong)(len(DATA))
        out = ctypes.create_string_buffer(bound)
        n = c_ulong(bound)
        assert compress2(out, byref(n), DATA, len(DATA), 9) == 0
        packed = out.raw[:n.value]
        assert len(packed) < len(DATA) // 10
        assert zlib.decompress(packed) == DATA
        theirs = zlib.compress(DATA, 6)
        back = ctypes.create_string_buffer(len(DATA))
        m = c_ulong(len(DATA))
        assert uncompress(back, byref(m), theirs, len(theirs)) == 0
        assert back.raw[:m.value] == DATA
        crc32 = fn(z, "crc32", c_ulong, c_ulong, c_char_p, c_uint)
        adler32 = fn(z, "adler32", c_ulong, c_ulong, c_char_p, c_uint)
        assert crc32(0, DATA, len(DATA)) == zlib.crc32(DATA)
        assert adler32(1, DATA, len(DATA)) == zlib.adler32(DATA)
        # corrupt input is reported (Z_DATA_ERROR), not a crash
        bad = bytearray(theirs)
        bad[10] ^= 0xFF
        m = c_ulong(len(DATA))
        assert uncompress(back, byref(m), bytes(bad), len(bad)) == -3


def test_lzma(how: str) -> None:
    with load_system("liblzma.so.5", how) as x:
        assert fn(x, "lzma_version_string", c_char_p)().startswith(b"5.")
        encode = fn(x, "lzma_easy_buffer_encode", c_int, c_uint32, c_int, c_void_p, c_char_p,
                    c_size_t, c_char_p, POINTER(c_size_t), c_size_t)
        out = ctypes.create_string_buffer(len(DATA) + 1024)
        pos = c_size_t(0)
        assert encode(6, 4, None, DATA, len(DATA), out, byref(pos), len(out)) == 0  # CRC64
        assert lzma.decompress(out.raw[:pos.value]) == DATA
        decode = fn(x, "lzma_stream_buffer_decode", c_int, POINTER(c_uint64), c_uint32,
                    c_void_p, c_char_p, POINTER(c_size_t), c_size_t, c_char_p,
                    POINTER(c_size_t), c_size_t)
        theirs = lzma.compress(DATA, preset=3)
        back = ctypes.create_string_buffer(len(DATA))
        limit, in_pos, out_pos = c_uint64(1 << 30), c_size_t(0), c_size_t(0)
        assert decode(byref(limit), 0, None, theirs, byref(in_pos), len(theirs), back,
                      byref(out_pos), len(back)) == 0
        assert back.raw[:out_pos.value] == DATA and in_pos.value == len(theirs)


def test_zstd(how: str) -> None:
    with load_system("libzstd.so.1", how) as zs:
        bound = fn(zs, "ZSTD_compressBound", c_size_t, c_size_t)(len(DATA))
        compress = fn(zs, "ZSTD_compress", c_size_t, c_char_p, c_size_t, c_char_p, c_size_t,
                      c_int)
        decompress = fn(zs, "ZSTD_decompress", c_size_t, c_char_p, c_size_t, c_char_p,
                        c_size_t)
        is_error = fn(zs, "ZSTD_isError", c_uint, c_size_t)
        size = fn(zs, "ZSTD_getFrameContentSize", c_uint64, c_char_p, c_size_t)
        out = ctypes.create_string_buffer(bound)
        n = compress(out, bound, DATA, len(DATA), 19)
        assert not is_error(n) and n < len(DATA) // 10
        frame = out.raw[:n]
        assert frame[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
        assert size(frame, n) == len(DATA)
        back = ctypes.create_string_buffer(len(DATA))
        assert decompress(back, len(DATA), frame, n) == len(DATA)
        assert back.raw == DATA
        assert is_error(decompress(back, len(DATA), frame[:-5], n - 5))


def test_bzip2(how: str) -> None:
    with load_system("libbz2.so.1.0", how) as b:
        compress = fn(b, "BZ2_bzBuffToBuffCompress", c_int, c_char_p, POINTER(c_uint),
                      c_char_p, c_uint, c_int, c_int, c_int)
        decompress = fn(b, "BZ2_bzBuffToBuffDecompress", c_int, c_char_p, POINTER(c_uint),
                        c_char_p, c_uint, c_int, c_int)
        out = ctypes.create_string_buffer(len(DATA) + 1024)
        n = c_uint(len(out))
        assert compress(out, byref(n), DATA, len(DATA), 9, 0, 0) == 0
        assert bz2.decompress(out.raw[:n.value]) == DATA
        theirs = bz2.compress(DATA)
        back = ctypes.create_string_buffer(len(DATA))
        m = c_uint(len(DATA))
        assert decompress(back, byref(m), theirs, len(theirs), 0, 0) == 0
        assert back.raw[:m.value] == DATA
