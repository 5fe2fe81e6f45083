"""Self-tests of the test-only ELF writer (tests/support/elfgen*.py).

Two oracles check the writer: binutils ``readelf`` must list what was asked for without a
single warning, and glibc's ``ld.so`` must load the x86_64 images (through ``ctypes``) and
apply their relocations as intended. When both accept an image, tests of ``relink`` can
trust it as input.
"""

from __future__ import annotations

import ctypes
import platform
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from support import elfgen_defs as d
from support.build import build_executable, have_cc
from support.elfgen import (
    DylibWriter,
    ElfView,
    Fixup,
    GeneratedElf,
    SymbolDesc,
    header_boundaries,
    patch_dyn,
    patch_ehdr,
    patch_phdr,
    patch_reloc,
    patch_shdr,
    patch_sym,
    truncate,
)

RET42 = b"\xb8\x2a\x00\x00\x00\xc3"  # mov eax, 42; ret (same bytes on i386)
NATIVE = sys.platform == "linux" and platform.machine() == "x86_64"
native_only = pytest.mark.skipif(not NATIVE, reason="needs an x86_64 Linux host (glibc ld.so)")
needs_readelf = pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf")
RTLD_LAZY = 0x1
RTLD_DI_LINKMAP = 2


def soname(tag: str) -> str:
    """A fresh SONAME: glibc silently reuses an already loaded object with the same one."""
    return f"libgen-{tag}-{uuid.uuid4().hex[:8]}.so"


def readelf(img: GeneratedElf | bytes, tmp_path: Path, *args: str) -> str:
    """Run ``readelf -W <args>`` (default ``-a``) and insist on silence on stderr."""
    path = tmp_path / f"img-{uuid.uuid4().hex[:8]}.so"
    path.write_bytes(img.data if isinstance(img, GeneratedElf) else img)
    res = subprocess.run(
        ["readelf", "-W", *(args or ("-a",)), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr and "Error" not in res.stderr, res.stderr
    assert res.stderr == ""
    return res.stdout


class _LinkMap(ctypes.Structure):
    _fields_ = [("l_addr", ctypes.c_size_t), ("l_name", ctypes.c_char_p)]


def load(img: GeneratedElf, tmp_path: Path, *, lazy: bool = False) -> tuple[ctypes.CDLL, int]:
    """Load with glibc (``RTLD_LAZY`` when asked; ctypes itself forces ``RTLD_NOW``) and
    return the library and its load bias."""
    path = img.write(tmp_path / f"{uuid.uuid4().hex[:8]}.so")
    libc = ctypes.CDLL(None)
    handle = None
    if lazy:
        libc.dlopen.restype = ctypes.c_void_p
        libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
        handle = libc.dlopen(str(path).encode(), RTLD_LAZY)
        assert handle, "dlopen failed"
    lib = ctypes.CDLL(str(path), handle=handle)
    lm = ctypes.POINTER(_LinkMap)()
    libc.dlinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    assert libc.dlinfo(ctypes.c_void_p(lib._handle), RTLD_DI_LINKMAP, ctypes.byref(lm)) == 0
    return lib, lm.contents.l_addr


def word(addr: int) -> int:
    """The 64-bit word at a runtime address."""
    return ctypes.c_uint64.from_address(addr).value


def func(lib: ctypes.CDLL, name: str, restype: type = ctypes.c_int) -> Callable[[], Any]:
    """A callable for an exported function taking no arguments."""
    fn = getattr(lib, name)
    fn.restype = restype
    return cast(Callable[[], Any], fn)


# --- x86_64, checked by readelf and ld.so ----------------------------------------------------
@needs_readelf
@native_only
def test_basic_image_loads_and_relocates(tmp_path: Path) -> None:
    w = DylibWriter(soname=soname("basic"))
    w.add_function("answer", RET42)
    target = w.add_object("target", b"\x11" * 16)
    rel = w.add_reloc("RELATIVE", rel_to="target", addend=4)
    glob = w.add_reloc("GLOB_DAT", "answer")
    abs64 = w.add_reloc("R64", "target", addend=8)
    img = w.build()

    out = readelf(img, tmp_path)
    assert re.search(r"FUNC +GLOBAL +DEFAULT +\d+ answer$", out, re.M)
    assert re.search(r"OBJECT +GLOBAL +DEFAULT +\d+ target$", out, re.M)
    assert "R_X86_64_RELATIVE" in out and "R_X86_64_GLOB_DAT" in out and "R_X86_64_64" in out
    assert re.search(r"\(RELACOUNT\) +1$", out, re.M)
    assert target.size == 16 and img.reloc_table_index[glob] == ("dyn", 1)

    lib, base = load(img, tmp_path)
    assert func(lib, "answer")() == 42
    assert word(base + img.reloc_addrs[rel]) == base + img.symbols["target"] + 4
    assert word(base + img.reloc_addrs[glob]) == base + img.symbols["answer"]
    assert word(base + img.reloc_addrs[abs64]) == base + img.symbols["target"] + 8
    assert ctypes.cast(lib.answer, ctypes.c_void_p).value == base + img.symbols["answer"]


@needs_readelf
@native_only
@pytest.mark.parametrize(
    ("sysv", "gnu", "buckets"),
    [(True, False, None), (False, True, None), (True, True, 1), (False, True, 3)],
)
def test_hash_tables_find_every_symbol(
    tmp_path: Path, sysv: bool, gnu: bool, buckets: int | None
) -> None:
    w = DylibWriter(
        soname=soname("hash"),
        sysv_hash=sysv,
        gnu_hash=gnu,
        sysv_buckets=buckets,
        gnu_buckets=buckets,
    )
    for i in range(40):
        w.add_function(f"f{i}", b"\xb8" + i.to_bytes(4, "little") + b"\xc3")
    w.add_undefined("some_undefined_thing")  # undefined symbols stay out of the GNU table
    img = w.build()
    out = readelf(img, tmp_path, "-a", "--dyn-syms", "-D")
    assert all(f" f{i}" in out for i in range(40))
    lib, _ = load(img, tmp_path)
    assert [func(lib, f"f{i}")() for i in range(40)] == list(range(40))
    with pytest.raises(AttributeError):
        lib.f40  # noqa: B018


@needs_readelf
@native_only
def test_symbol_versions(tmp_path: Path) -> None:
    name = soname("ver")
    w = DylibWriter(soname=name, needed=["libc.so.6"])
    w.add_function("foo", b"\xb8\x01\x00\x00\x00\xc3", version="V1", version_hidden=True)
    w.add_function("foo", b"\xb8\x02\x00\x00\x00\xc3", version="V2")
    w.add_function("plain", RET42)
    w.add_undefined("strlen", type="func", version="GLIBC_2.2.5")
    slot = w.add_reloc("GLOB_DAT", "strlen@GLIBC_2.2.5")
    auto = w.add_reloc("R64", "strcmp@GLIBC_2.2.5")  # declared implicitly, versioned
    img = w.build()
    out = readelf(img, tmp_path)
    assert "foo@V1" in out and "foo@@V2" in out and "strlen@GLIBC_2.2.5" in out
    assert "strcmp@GLIBC_2.2.5" in out
    assert "Name: V1" in out and "File: libc.so.6" in out
    assert img.symbols["foo"] == img.symbols["foo@@V2"] != img.symbols["foo@V1"]

    lib, base = load(img, tmp_path)
    assert func(lib, "foo")() == 2  # dlsym picks the default version
    libc = ctypes.CDLL(None)
    libc.dlvsym.restype = ctypes.c_void_p
    libc.dlvsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    v1 = libc.dlvsym(ctypes.c_void_p(lib._handle), b"foo", b"V1")
    assert ctypes.CFUNCTYPE(ctypes.c_int)(v1)() == 1
    assert word(base + img.reloc_addrs[slot]) == ctypes.cast(libc.strlen, ctypes.c_void_p).value
    assert word(base + img.reloc_addrs[auto]) == ctypes.cast(libc.strcmp, ctypes.c_void_p).value


@needs_readelf
@native_only
@pytest.mark.skipif(not have_cc(), reason="needs gcc")
def test_binutils_ld_links_against_generated_versions(tmp_path: Path) -> None:
    w = DylibWriter(soname="libgenver.so")
    w.add_function("foo", b"\xb8\x01\x00\x00\x00\xc3", version="V1", version_hidden=True)
    w.add_function("foo", b"\xb8\x02\x00\x00\x00\xc3", version="V2")
    lib = w.build().write(tmp_path / "libgenver.so")
    exe = build_executable(
        "use_genver",
        "int foo(void);\nint main(void) { return foo(); }\n",
        deps=[lib],
        ldflags=["-Wl,-rpath," + str(tmp_path)],
    )
    assert (
        "foo@V2"
        in subprocess.run(
            ["readelf", "-W", "--dyn-syms", str(exe)], capture_output=True, text=True, check=True
        ).stdout
    )
    assert subprocess.run([str(exe)], check=False).returncode == 2


@needs_readelf
@native_only
def test_lazy_plt_stub_binds_on_first_call(tmp_path: Path) -> None:
    w = DylibWriter(soname=soname("lazy"), bind_now=False)
    w.add_function("answer", RET42)
    w.add_plt_caller("call_answer", "answer")
    img = w.build()
    out = readelf(img, tmp_path)
    assert "R_X86_64_JUMP_SLOT" in out and "(PLTGOT)" in out and "BIND_NOW" not in out
    lib, base = load(img, tmp_path, lazy=True)
    slot = base + img.reloc_addrs[0]
    assert word(slot) == base + img.plt_addrs["answer"] + 6  # still points into the stub
    assert func(lib, "call_answer")() == 42
    assert word(slot) == base + img.symbols["answer"]


@needs_readelf
@native_only
def test_tls_getter_and_dtpmod(tmp_path: Path) -> None:
    w = DylibWriter(soname=soname("tls"))
    w.set_tls(b"\xaa\xbb\xcc\xdd", 16)
    w.add_tls_symbol("first", 0, 4)
    w.add_tls_symbol("zeroed", 16, 16)
    w.add_tls_getter("get_first", "first")
    w.add_tls_getter("get_zeroed", "zeroed")
    img = w.build()
    out = readelf(img, tmp_path)
    assert re.search(r"^ +TLS +0x\S+ 0x\S+ 0x\S+ 0x000004 0x000020 R +0x10$", out, re.M)
    assert "R_X86_64_DTPMOD64" in out and "R_X86_64_DTPOFF64" in out
    lib, base = load(img, tmp_path)
    assert ctypes.string_at(func(lib, "get_first", ctypes.c_void_p)(), 4) == b"\xaa\xbb\xcc\xdd"
    assert ctypes.string_at(func(lib, "get_zeroed", ctypes.c_void_p)(), 16) == bytes(16)
    assert word(base + img.reloc_addrs[0]) >= 1  # module id


@needs_readelf
@native_only
def test_relr_table(tmp_path: Path) -> None:
    w = DylibWriter(soname=soname("relr"))
    w.require_glibc_relr_marker()
    w.add_function("answer", RET42)
    idx = [w.add_relr(rel_to="answer", addend=i) for i in range(70)]  # address + bitmaps
    w.add_data(64)
    idx.append(w.add_relr(rel_to=".data", addend=3))
    img = w.build()
    out = readelf(img, tmp_path)
    assert "(RELR)" in out and "71 offsets" in out and "GLIBC_ABI_DT_RELR" in out
    words = ElfView(img).data[img.layout[".relr.dyn"][1] :][: img.layout[".relr.dyn"][2]]
    assert len(words) == 3 * 8  # one address entry and two bitmaps cover 70 words
    lib, base = load(img, tmp_path)
    for i in idx[:70]:
        assert word(base + img.relr_addrs[i]) == base + img.symbols["answer"] + i
    assert word(base + img.relr_addrs[idx[70]]) == base + img.layout[".data"][0] + 3


def test_relr_encoding_round_trip() -> None:
    for wsize in (4, 8):
        addrs = sorted({0x1000 + wsize * k for k in (0, 1, 2, 40, 62, 63, 64, 200, 201, 1000)})
        assert d.decode_relr(d.encode_relr(addrs, wsize), wsize) == addrs
    with pytest.raises(ValueError):
        d.encode_relr([3], 8)


@needs_readelf
@native_only
def test_init_array_ifunc_irelative_and_relro(tmp_path: Path) -> None:
    w = DylibWriter(soname=soname("init"), relro=True)
    flag = w.add_object("flag", 8)
    # mov dword [rip + flag], 0x1234 ; ret   (disp32 is followed by imm32: P + 8 ends it)
    w.add_function(
        "init",
        b"\xc7\x05" + bytes(4) + (0x1234).to_bytes(4, "little") + b"\xc3",
        fixups=[Fixup(2, "flag", "pc32", -4 - 4)],
        bind="local",
    )
    w.add_init_array("init")
    w.add_function("impl", b"\xb8\x07\x00\x00\x00\xc3", bind="local")
    w.add_ifunc("pick", "impl")
    irel = w.add_reloc("IRELATIVE", rel_to="pick")
    w.add_got()
    img = w.build()
    out = readelf(img, tmp_path)
    assert "GNU_RELRO" in out and "(INIT_ARRAY)" in out and "IFUNC" in out
    assert "R_X86_64_IRELATIVE" in out and "UNIX - GNU" in out
    lib, base = load(img, tmp_path)
    assert ctypes.c_uint32.from_address(base + img.symbols["flag"]).value == 0x1234
    assert flag.size == 8 and func(lib, "pick")() == 7
    assert word(base + img.reloc_addrs[irel]) == base + img.symbols["impl"]
    dyn = base + img.layout[".dynamic"][0]
    maps = Path("/proc/self/maps").read_text().splitlines()
    perms = next(
        ln.split()[1]
        for ln in maps
        if int(ln.split("-")[0], 16) <= dyn < int(ln.split()[0].split("-")[1], 16)
    )
    assert perms.startswith("r--")  # RELRO was applied


@needs_readelf
@native_only
def test_dynamic_tags_symtab_and_no_section_headers(tmp_path: Path) -> None:
    w = DylibWriter(
        soname=soname("tags"),
        needed=["libm.so.6"],
        runpath="$ORIGIN/x",
        symbolic=True,
        symtab=True,
        flags_1=d.DF_1_NODELETE,
    )
    w.add_function("answer", RET42)
    w.add_symbol(SymbolDesc("private_helper", 0, bind="local", dynamic=False))
    w.add_dynamic(d.DT_DEBUG, 0)
    img = w.build()
    out = readelf(img, tmp_path)
    for text in (
        "Shared library: [libm.so.6]",
        "Library runpath: [$ORIGIN/x]",
        "(SYMBOLIC)",
        "SYMBOLIC BIND_NOW",
        "NOW NODELETE",
        "(DEBUG)",
        "'.symtab'",
    ):
        assert text in out
    assert "private_helper" in out.split("'.symtab'")[1]
    assert "private_helper" not in out.split("'.symtab'")[0]

    w2 = DylibWriter(soname=soname("nosh"), section_headers=False, rpath="/nowhere")
    w2.add_function("answer", RET42)
    bare = w2.build()
    out = readelf(bare, tmp_path)
    assert "There are no sections in this file." in out and "Library rpath: [/nowhere]" in out
    assert ElfView(bare).ehdr["e_shnum"] == 0
    lib, _ = load(bare, tmp_path)
    assert func(lib, "answer")() == 42
    # helpers still find tables through the dynamic section, for either hash table
    for sysv in (True, False):
        w3 = DylibWriter(section_headers=False, sysv_hash=sysv)
        w3.add_function("answer", RET42)
        w3.add_function("other", RET42)
        patched = patch_sym(w3.build(), "other", st_value=0x1234)
        assert ElfView(patched).symbols()[1] == 3


# --- ELF32 -----------------------------------------------------------------------------------
@needs_readelf
def test_i386_image_is_well_formed(tmp_path: Path) -> None:
    w = DylibWriter(
        soname="libgen32.so",
        machine=d.EM_386,
        elf_class=32,
        needed=["libc.so.6"],
        bind_now=False,
        relro=True,
        symtab=True,
    )
    w.add_function("answer", RET42, version="V1", version_hidden=True)
    w.add_function("answer", RET42, version="V2")
    w.add_object("table", b"\x01\x02\x03\x04")
    w.add_undefined("strlen", type="func", version="GLIBC_2.0")
    r32 = w.add_reloc("ABS", "table", addend=5)
    rel = w.add_reloc("RELATIVE", rel_to="table", addend=2)
    w.add_reloc("JUMP_SLOT", "strlen", table="plt")
    relr = w.add_relr(rel_to="answer@@V2")
    w.set_tls(b"\x01\x02", 8, align=4)
    w.add_tls_symbol("tv", 0, 2)
    w.add_reloc("DTPMOD", "tv")
    w.add_init_array("answer")
    img = w.build()
    out = readelf(img, tmp_path)
    for text in (
        "ELF32",
        "Intel 80386",
        "R_386_32",
        "R_386_RELATIVE",
        "R_386_JUMP_SLOT",
        "R_386_TLS_DTPMOD32",
        "(RELCOUNT)",
        "(RELR)",
        "answer@V1",
        "answer@@V2",
        "strlen@GLIBC_2.0",
        "GNU_RELRO",
        "TLS",
        "'.rel.dyn'",
        "'.rel.plt'",
    ):
        assert text in out
    # REL: the implicit addend is stored in the place
    assert img.read_word(img.reloc_addrs[r32]) == 5
    assert img.read_word(img.reloc_addrs[rel]) == img.symbols["table"] + 2
    assert img.read_word(img.relr_addrs[relr]) == img.symbols["answer"]
    assert img.read_word(img.layout[".init_array"][0]) == img.symbols["answer@@V2"]
    view = ElfView(img)
    assert view.elf_class == 32 and view.dyn(d.DT_PLTREL) == d.DT_REL
    assert patch_reloc(img, 0, r_type=d.R_386.PC32) != img.data
    with pytest.raises(ValueError):
        patch_reloc(img, 0, addend=1)


# --- malformation helpers --------------------------------------------------------------------
def _small() -> GeneratedElf:
    w = DylibWriter(soname=soname("mal"))
    w.add_function("answer", RET42)
    w.add_reloc("GLOB_DAT", "answer")
    w.add_reloc("RELATIVE", rel_to="answer")
    return w.build()


def test_header_boundaries_cover_every_table() -> None:
    img = _small()
    marks = list(header_boundaries(img))
    assert marks == sorted(set(marks)) and marks[0] == 0 and marks[-1] == len(img.data)
    view = ElfView(img)
    eh = view.ehdr
    assert {64, eh["e_phoff"] + eh["e_phnum"] * 56, eh["e_shoff"]} <= set(marks)
    for _vaddr, off, size in img.layout.values():
        assert off in marks and off + size in marks
    for pos, _, _ in view.dynamic:
        assert pos in marks
    for n in marks:
        assert truncate(img, n) == img.data[:n]


@needs_readelf
def test_patch_helpers(tmp_path: Path) -> None:
    img = _small()
    bad = patch_ehdr(img, e_machine=d.EM_386, ei_osabi=9, e_shstrndx=0)
    view = ElfView(bad)
    assert view.ehdr["e_machine"] == 3 and bad[7] == 9 and view.ehdr["e_shstrndx"] == 0
    assert bad[:4] == img.data[:4] and len(bad) == len(img.data)
    assert ElfView(patch_ehdr(img, e_ident=b"\x7fELF\x02\x01\x01")).data[7] == 0
    assert patch_ehdr(img, ei_mag=b"\x7fELG")[:4] == b"\x7fELG"

    ph = ElfView(patch_phdr(img, 0, p_align=3, p_filesz=1)).phdrs[0][1]
    assert (ph["p_align"], ph["p_filesz"]) == (3, 1)
    found = ElfView(patch_shdr(img, ".dynsym", sh_entsize=7)).section(".dynsym")
    assert found is not None and found[1]["sh_entsize"] == 7

    strsz = patch_dyn(img, d.DT_STRSZ, 1 << 40)
    assert ElfView(strsz).dyn(d.DT_STRSZ) == 1 << 40
    nulled = ElfView(patch_dyn(img, d.DT_SONAME, new_tag=d.DT_NULL))
    assert nulled.dyn(d.DT_SONAME) is None
    with pytest.raises(KeyError):
        patch_dyn(img, d.DT_RPATH, 1)

    sym = patch_sym(img, "answer", bind="weak", visibility="hidden", st_size=99)
    out = readelf(sym, tmp_path, "--dyn-syms")
    assert re.search(r"99 FUNC +WEAK +HIDDEN +\d+ answer", out)
    with pytest.raises(KeyError):
        patch_sym(img, "missing")

    rel = patch_reloc(img, 0, sym=0, r_type=d.R_X86_64.NONE, addend=-1)
    out = readelf(rel, tmp_path, "-r")
    assert "R_X86_64_NONE" in out and "R_X86_64_GLOB_DAT" not in out
    moved = patch_reloc(img, 1, offset=0xDEAD0)
    assert "00000000000dead0" in readelf(moved, tmp_path, "-r")
    with pytest.raises(IndexError):
        patch_reloc(img, 2)


@native_only
def test_system_loader_rejects_malformed_variants(tmp_path: Path) -> None:
    img = _small()
    variants = {
        "class": patch_ehdr(img, ei_class=d.ELFCLASS32),
        "machine": patch_ehdr(img, e_machine=d.EM_386),
        "phentsize": patch_ehdr(img, e_phentsize=12),
        "truncated": truncate(img, 40),
        "not_dyn": patch_ehdr(img, e_type=d.ET_REL),
    }
    for name, data in variants.items():
        path = tmp_path / soname(name)
        path.write_bytes(data)
        with pytest.raises(OSError):
            ctypes.CDLL(str(path))
    path = tmp_path / soname("ok")
    path.write_bytes(img.data)
    assert func(ctypes.CDLL(str(path)), "answer")() == 42
