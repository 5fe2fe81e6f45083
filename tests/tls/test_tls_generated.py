"""relink-study §4.3 on exact generated ELF (tests/support/elfgen), and malformed TLS.

The provider defines TLS ``first = AA BB CC DD`` and ``second = 11 22 33 44``; the
consumer holds DTPMOD/DTPOFF pairs for both in ``.got`` plus helpers returning
``__tls_get_addr(&pair)``. Both come from bytes, with unique sonames.
"""

from __future__ import annotations

import ctypes
import threading
import uuid

import pytest

import relink
from relink.runtime.tls import native_tls
from support.elfgen import DylibWriter


def _soname(tag: str) -> str:
    return f"libgen{tag}-{uuid.uuid4().hex[:8]}.so"


def scenario() -> tuple[bytes, str, bytes, list[int]]:
    prov_name = _soname("tlsprov")
    p = DylibWriter(soname=prov_name)
    p.set_tls(b"\xaa\xbb\xcc\xdd\x11\x22\x33\x44", 8, align=16)
    p.add_tls_symbol("first", 0, 4)
    p.add_tls_symbol("second", 4, 4)
    provider = p.build()
    u = DylibWriter(soname=_soname("tlsuser"), needed=[prov_name])
    u.add_undefined("first", type="tls")
    u.add_undefined("second", type="tls")
    u.add_tls_getter("first_helper", "first")
    u.add_tls_getter("second_helper", "second")
    user = u.build()
    return provider.data, prov_name, user.data, user.reloc_addrs


def test_generated_pairs_and_four_threads() -> None:
    prov_bytes, prov_name, user_bytes, relocs = scenario()
    ctx = relink.LinkContext("tls-generated")
    with relink.load(prov_bytes, name=prov_name, context=ctx) as prov, \
            relink.load(user_bytes, name="libgentlsuser.so", context=ctx) as user:
        assert user.dependencies[0].base == prov.base  # bound to the relink provider
        # relocation::applies_dynamic_relocations: DTPMOD = module id, DTPOFF = offset
        modid = native_tls().carrier(prov._state).modid
        words = [ctypes.c_uint64.from_address(user.base + r).value for r in relocs[-4:]]
        assert words == [modid, 0, modid, 4]
        first = user.function("first_helper", ctypes.c_void_p)
        second = user.function("second_helper", ctypes.c_void_p)
        barrier = threading.Barrier(4)
        seen: dict[int, tuple[int, int, int, int]] = {}

        def worker(i: int) -> None:
            a = ctypes.c_uint32.from_address(first())
            b = ctypes.c_uint32.from_address(second())
            initial = (a.value, b.value)
            barrier.wait()
            a.value, b.value = i + 0x100, i + 0x200
            barrier.wait()
            seen[i] = (*initial, ctypes.c_uint32.from_address(first()).value,
                       ctypes.c_uint32.from_address(second()).value)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == {i: (0xDDCCBBAA, 0x44332211, i + 0x100, i + 0x200) for i in range(4)}
        assert prov.tls_address("first") == first()


def test_tls_alignment_not_a_power_of_two_is_a_clear_error() -> None:
    w = DylibWriter(soname=_soname("badalign"))
    w.set_tls(b"\x01\x02\x03\x04", 4, align=16)
    w.add_tls_symbol("v", 0, 4)
    w.add_tls_getter("get_v", "v")
    built = w.build()
    img = bytearray(built.data)
    tls = next(ph for ph in built.phdrs if ph["p_type"] == 7)
    # patch p_align of PT_TLS (program header table from e_phoff)
    phoff = int.from_bytes(img[0x20:0x28], "little")
    for i in range(int.from_bytes(img[0x38:0x3A], "little")):
        at = phoff + i * 56
        if int.from_bytes(img[at:at + 4], "little") == 7:
            img[at + 48:at + 56] = (24).to_bytes(8, "little")
    assert tls["p_align"] == 16
    with pytest.raises(relink.RelinkError, match="alignment 24") as info:
        relink.load(bytes(img), name="libbadalign.so")
    assert info.value.file is not None


def test_dtpmod_against_a_module_without_tls() -> None:
    prov_name = _soname("notls")
    p = DylibWriter(soname=prov_name)
    p.add_object("first", 7)  # an ordinary (non-TLS) object
    prov = p.build()
    u = DylibWriter(soname=_soname("wrong"), needed=[prov_name])
    u.add_undefined("first", type="tls")
    u.add_tls_getter("first_helper", "first")
    ctx = relink.LinkContext("tls-wrong")
    with relink.load(prov.data, name=prov_name, context=ctx):
        with pytest.raises(relink.TlsError, match="no PT_TLS"):
            relink.load(u.build().data, name="libwrong.so", context=ctx)
