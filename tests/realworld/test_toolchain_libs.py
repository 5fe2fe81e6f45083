"""Toolchain / C library companions loaded by relink instead of the host: libatomic
(every 16-byte atomic is an IFUNC) and glibc's libresolv (RELR relocations, initial-exec
references to glibc's own thread-locals ``errno`` / ``__resp`` / ``__h_errno``)."""

from __future__ import annotations

import base64
import ctypes
import errno
from ctypes import c_bool, c_char_p, c_int, c_size_t, c_uint64, c_void_p

from realhelp import fn, load_system, system_library

from relink.elf import ElfFile


class U128(ctypes.Structure):  # returned in rax:rdx like unsigned __int128
    _fields_ = [("lo", c_uint64), ("hi", c_uint64)]


def test_libatomic_ifuncs(how: str) -> None:
    with ElfFile(str(system_library("libatomic.so.1"))) as elf:
        syms = elf.symbols
        assert syms is not None
        i = syms.find("__atomic_compare_exchange_16")
        assert i is not None and syms.infos[i] & 0xF == 10  # STT_GNU_IFUNC
    with load_system("libatomic.so.1", how) as m:
        cell = (c_uint64 * 2)(5, 7)
        load = fn(m, "__atomic_load_16", U128, c_void_p, c_int)
        r = load(cell, 5)
        assert (r.lo, r.hi) == (5, 7)
        cas = fn(m, "__atomic_compare_exchange_16", c_bool, c_void_p, c_void_p, c_uint64,
                 c_uint64, c_int, c_int)
        expected = (c_uint64 * 2)(5, 7)
        assert cas(cell, expected, 11, 13, 5, 5) is True and list(cell) == [11, 13]
        expected = (c_uint64 * 2)(1, 2)
        assert cas(cell, expected, 0, 0, 5, 5) is False
        assert list(expected) == [11, 13]  # the failed CAS reports the current value
        add = fn(m, "__atomic_fetch_add_16", U128, c_void_p, c_uint64, c_uint64, c_int)
        old = add(cell, 2**64 - 11, 0, 5)  # carries into the high half
        assert (old.lo, old.hi) == (11, 13) and list(cell) == [0, 14]


def test_libresolv_relr_and_glibc_tls(how: str) -> None:
    path = system_library("libresolv.so.2")
    with ElfFile(str(path)) as elf:
        dyn = elf.dynamic
        assert dyn is not None and dyn.relr  # the file really uses RELR
    libc = ctypes.CDLL(None)
    libc.__errno_location.restype = ctypes.POINTER(c_int)
    with load_system("libresolv.so.2", how) as r:
        b64_ntop = fn(r, "__b64_ntop", c_int, c_char_p, c_size_t, c_char_p, c_size_t)
        b64_pton = fn(r, "__b64_pton", c_int, c_char_p, c_char_p, c_size_t)
        data = bytes(range(200))
        out = ctypes.create_string_buffer(400)
        n = b64_ntop(data, len(data), out, len(out))
        assert out.raw[:n] == base64.b64encode(data)
        back = ctypes.create_string_buffer(300)
        assert b64_pton(out.raw[:n], back, len(back)) == len(data)
        assert back.raw[:len(data)] == data
        pton = fn(r, "inet_net_pton", c_int, c_int, c_char_p, c_void_p, c_size_t)
        addr = ctypes.create_string_buffer(4)
        assert pton(2, b"192.168.1.0/24", addr, 4) == 24  # AF_INET
        assert addr.raw == bytes([192, 168, 1, 0])
        # errno is written through a TPOFF64 into glibc's static TLS: libc must see it
        libc.__errno_location().contents.value = 0
        assert pton(2, b"not an address", addr, 4) == -1
        assert libc.__errno_location().contents.value == errno.ENOENT
        same = fn(r, "ns_samedomain", c_int, c_char_p, c_char_p)
        assert same(b"www.example.com", b"example.com") == 1
        assert same(b"www.example.org", b"example.com") == 0
