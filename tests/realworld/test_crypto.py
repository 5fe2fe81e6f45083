"""Cryptography: OpenSSL's libcrypto and libsodium, checked against hashlib / hmac."""

from __future__ import annotations

import ctypes
import hashlib
import hmac
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_uint, c_ulonglong, c_void_p

from realhelp import fn, load_system

MSG = b"The quick brown fox jumps over the lazy dog" * 37


def test_libcrypto(how: str) -> None:
    with load_system("libcrypto.so.3", how) as c:
        assert fn(c, "OpenSSL_version", c_char_p, c_int)(0).startswith(b"OpenSSL 3")
        md = ctypes.create_string_buffer(64)
        fn(c, "SHA256", c_void_p, c_char_p, c_size_t, c_char_p)(MSG, len(MSG), md)
        assert md.raw[:32] == hashlib.sha256(MSG).digest()
        by_name = fn(c, "EVP_get_digestbyname", c_void_p, c_char_p)
        digest = fn(c, "EVP_Digest", c_int, c_char_p, c_size_t, c_char_p, POINTER(c_uint),
                    c_void_p, c_void_p)
        for name in ("sha512", "sha3-256", "blake2b512", "md5"):
            n = c_uint(0)
            assert digest(MSG, len(MSG), md, byref(n), by_name(name.encode()), None) == 1
            assert md.raw[:n.value] == hashlib.new(name.replace("-", "_")
                                                   .replace("blake2b512", "blake2b"),
                                                   MSG).digest()
        key = b"secret key"
        mac = fn(c, "HMAC", c_void_p, c_void_p, c_char_p, c_int, c_char_p, c_size_t,
                 c_char_p, POINTER(c_uint))
        n = c_uint(0)
        assert mac(fn(c, "EVP_sha256", c_void_p)(), key, len(key), MSG, len(MSG), md,
                   byref(n))
        assert md.raw[:n.value] == hmac.new(key, MSG, "sha256").digest()
        # PBKDF2 (many iterations of the library's own HMAC)
        out = ctypes.create_string_buffer(32)
        pbkdf2 = fn(c, "PKCS5_PBKDF2_HMAC", c_int, c_char_p, c_int, c_char_p, c_int, c_int,
                    c_void_p, c_int, c_char_p)
        assert pbkdf2(b"pw", 2, b"salt", 4, 1000, fn(c, "EVP_sha256", c_void_p)(), 32, out)
        assert out.raw == hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 1000)


def test_libsodium(how: str) -> None:
    with load_system("libsodium.so.23", how) as s:
        assert fn(s, "sodium_init", c_int)() in (0, 1)
        out = ctypes.create_string_buffer(64)
        generichash = fn(s, "crypto_generichash", c_int, c_char_p, c_size_t, c_char_p,
                         c_ulonglong, c_char_p, c_size_t)
        assert generichash(out, 32, MSG, len(MSG), None, 0) == 0
        assert out.raw[:32] == hashlib.blake2b(MSG, digest_size=32).digest()
        assert generichash(out, 64, MSG, len(MSG), b"k" * 32, 32) == 0
        assert out.raw == hashlib.blake2b(MSG, key=b"k" * 32).digest()
        sha512 = fn(s, "crypto_hash_sha512", c_int, c_char_p, c_char_p, c_ulonglong)
        assert sha512(out, MSG, len(MSG)) == 0
        assert out.raw == hashlib.sha512(MSG).digest()
        # authenticated encryption round trip, and tampering detected
        key = ctypes.create_string_buffer(32)
        nonce = ctypes.create_string_buffer(24)
        fn(s, "randombytes_buf", None, c_void_p, c_size_t)(key, 32)
        fn(s, "randombytes_buf", None, c_void_p, c_size_t)(nonce, 24)
        assert key.raw != bytes(32)
        seal = fn(s, "crypto_secretbox_easy", c_int, c_char_p, c_char_p, c_ulonglong,
                  c_char_p, c_char_p)
        open_ = fn(s, "crypto_secretbox_open_easy", c_int, c_char_p, c_char_p, c_ulonglong,
                   c_char_p, c_char_p)
        box = ctypes.create_string_buffer(len(MSG) + 16)
        assert seal(box, MSG, len(MSG), nonce, key) == 0
        plain = ctypes.create_string_buffer(len(MSG))
        assert open_(plain, box.raw, len(box.raw), nonce, key) == 0
        assert plain.raw == MSG
        tampered = bytearray(box.raw)
        tampered[5] ^= 1
        assert open_(plain, bytes(tampered), len(tampered), nonce, key) == -1
