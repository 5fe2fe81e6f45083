"""The version check's direct DT_VERDEF reader agrees with the full ELF parse.

`relink.relocation.versioncheck` reads a host library's version definitions straight
from the file (string table and definitions only); anything unusual falls back to the
full parse (`relink.elf.version.parse_versions`). Both must give the same answer.
"""

from __future__ import annotations

import glob
import os

import pytest

from relink.elf.dynamic import parse_dynamic
from relink.elf.header import parse_header, parse_program_headers
from relink.elf.source import open_source
from relink.elf.version import parse_versions
from relink.elf.view import AddressView
from relink.relocation import versioncheck


def _full_parse(path: str) -> list[tuple[int, str]] | None:
    src = open_source(path)
    try:
        hdr = parse_header(src)
        phdrs = parse_program_headers(src, hdr)
        view = AddressView.for_file(src.data, phdrs, src.label)
        dyn_ph = next(ph for ph in phdrs if ph.p_type == 2)
        dyn = parse_dynamic(view, dyn_ph.p_vaddr, dyn_ph.p_memsz, hdr.elf_class)
        if not dyn.symtab:
            return None
        return [(d.index, d.name) for d in parse_versions(view, dyn, 0).definitions]
    finally:
        src.close()


def _host_libraries() -> list[str]:
    found = []
    for pattern in ("libc.so.6", "libm.so.6", "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1"):
        for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"):
            hits = glob.glob(os.path.join(d, pattern))
            if hits:
                found.append(os.path.realpath(hits[0]))
                break
    return found


@pytest.mark.parametrize("path", _host_libraries())
def test_direct_reader_agrees_with_the_full_parse(path: str) -> None:
    want = _full_parse(path)
    assert versioncheck._read_host_versions(path) == want


@pytest.mark.parametrize("path", _host_libraries()[:1])
def test_a_chain_past_the_window_falls_back_to_the_full_parse(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = versioncheck._verdef_names

    def spy(*args: object) -> object:
        got = real(*args)  # type: ignore[arg-type]
        calls.append(got)
        return got

    monkeypatch.setattr(versioncheck, "_VERDEF_WINDOW", 8)  # less than one Elf_Verdef
    monkeypatch.setattr(versioncheck, "_verdef_names", spy)
    assert versioncheck._read_host_versions(path) == _full_parse(path)
    assert calls == [None]
