"""W^X audit (issue 9 §6): the audit itself is tested here — it passes on real loads,
catches a page made W+X or a RELRO page left writable, and only warns when the file
itself asks for a writable and executable segment. The autouse fixture in
tests/conftest.py applies it to every load of the whole suite.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import relink
from relink.memory.buffer import BufferMapper
from relink.runtime import libc
from support import elfgen_defs as d
from support.elfgen import DylibWriter, patch_phdr

from . import wx_audit
from .conftest import BUFFER_HOST


def _image(mod: relink.Module) -> Any:
    return mod._state.image


@pytest.fixture
def loaded(seedlib: Path) -> Iterator[relink.Module]:
    mod = relink.load(seedlib, context=relink.LinkContext("wx"))
    yield mod
    mod.close()


def test_clean_load_passes_and_is_tracked(loaded: relink.Module) -> None:
    image = _image(loaded)
    assert image in set(wx_audit._live), "the protect hook did not see this load"
    assert wx_audit.audit_image(image) == []
    # The fixture's library really has executable and read-only-after-relocation pages.
    perms = {p for s, e, p in wx_audit._overlaps(wx_audit.maps(), image.region.start,
                                                 image.region.start + image.region.size)}
    assert any("x" in p for p in perms) and image.relro is not None


def _protect(addr: int, size: int, prot: int) -> None:
    assert libc.mprotect(addr, size, prot) == 0, ctypes.get_errno()


def test_a_writable_executable_page_is_reported(loaded: relink.Module) -> None:
    image = _image(loaded)
    text = next(ph for ph in image.loads if ph.p_flags & 1)
    page = (image.base + text.p_vaddr) & ~(image.page_size - 1)
    _protect(page, image.page_size, libc.PROT_READ | libc.PROT_WRITE | libc.PROT_EXEC)
    try:
        problems = wx_audit.audit_image(image)
    finally:
        _protect(page, image.page_size, libc.PROT_READ | libc.PROT_EXEC)
    assert problems and "W and X" in problems[0]
    assert wx_audit.audit_image(image) == []


def test_a_writable_relro_page_is_reported(loaded: relink.Module) -> None:
    image = _image(loaded)
    relro = image.relro
    page = (image.base + relro.p_vaddr) & ~(image.page_size - 1)
    end = (image.base + relro.p_vaddr + relro.p_memsz) & ~(image.page_size - 1)
    assert end > page, "fixture's RELRO covers no whole page"
    _protect(page, image.page_size, libc.PROT_READ | libc.PROT_WRITE)
    try:
        problems = wx_audit.audit_image(image)
    finally:
        _protect(page, image.page_size, libc.PROT_READ)
    assert problems and "RELRO" in problems[0]


def test_file_demanding_wx_is_allowed_with_a_warning(caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    w = DylibWriter(soname="librwx.so")
    w.add_function("f", b"\xb8\x07\x00\x00\x00\xc3")
    w.add_object("x", bytes(8))
    img = w.build()
    rw = [i for i, p in enumerate(img.phdrs)
          if p["p_type"] == d.PT_LOAD and p["p_flags"] & d.PF_W][0]
    data = patch_phdr(img.data, rw, p_flags=d.PF_R | d.PF_W | d.PF_X)
    with caplog.at_level(logging.WARNING):
        mod = relink.load(data, name="librwx.so", context=relink.LinkContext("rwx"))
    try:
        assert any("writable and executable" in r.getMessage() and r.name == "relink.loader"
                   for r in caplog.records), "relink did not warn about a W+X segment"
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="relink.audit"):
            assert wx_audit.audit_image(_image(mod)) == []
        assert any(r.name == "relink.audit" for r in caplog.records)
    finally:
        mod.close()


def test_buffer_images_have_no_host_pages_to_audit(seedlib: Path) -> None:
    with relink.load(seedlib, mapper=BufferMapper(), host=BUFFER_HOST, init=False) as mod:
        image = _image(mod)
        assert image not in set(wx_audit._live)
        assert wx_audit.audit_image(image) == []


def test_relocatable_object_units_are_audited_too() -> None:
    from support.build import build_object

    from .conftest import FIXTURES

    obj = build_object("rb_wx_obj", (FIXTURES / "seedobj.c").read_text(),
                       cflags=["-O1", "-fPIC"], group="robustness")
    value = ctypes.c_int(5)
    func = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x * 2)
    mod = relink.load_object(obj, symbols={"external_value": value,
                                           "external_func": func})
    try:
        assert mod.function("obj_entry", ctypes.c_int, ctypes.c_int)(1) == 2 + 5 + 2
        st = mod._state
        assert st in set(wx_audit._live_objects), "the object hooks did not see this load"
        assert wx_audit.audit_object(st) == []
        text = next((a, n) for a, n, _i, final, _g in st.segments if final & libc.PROT_EXEC)
        page = text[0] & ~0xFFF
        _protect(page, 0x1000, libc.PROT_READ | libc.PROT_WRITE | libc.PROT_EXEC)
        try:
            problems = wx_audit.audit_object(st)
        finally:
            _protect(page, 0x1000, libc.PROT_READ | libc.PROT_EXEC)
        assert problems and "W and X" in problems[0]
    finally:
        mod.close()
