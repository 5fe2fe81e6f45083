"""Kernel-module-style objects relocated into a buffer, and the CLI for objects/archives."""

from __future__ import annotations

import ctypes
import json
import struct
import subprocess
from pathlib import Path

import pytest
from objsupport import archive, needs_gcc, obj

import relink
from relink.cli import main
from relink.errors import UnknownSymbolError
from relink.object.kmod import KMOD_BASE, kmod_info, load_kmod

pytestmark = [needs_gcc]
KFLAGS = ["-O2", "-mcmodel=kernel", "-fno-pic", "-mno-red-zone", "-ffreestanding",
          "-fno-asynchronous-unwind-tables", "-fno-stack-protector"]
KERNEL = {"_printk": 0xFFFFFFFF81000000, "jiffies": 0xFFFFFFFF82000000}


@pytest.fixture(scope="module")
def ko(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hello.ko: the object passed through ``ld -r``, as kbuild makes one."""
    out = tmp_path_factory.mktemp("kmod") / "hello.ko"
    subprocess.run(["ld", "-r", "-o", str(out), str(obj("kmod_hello.c", KFLAGS))], check=True)
    return out


def test_kmod_metadata(ko: Path) -> None:
    info = kmod_info(ko)
    assert info.get("license") == "GPL" and info.name == "hello"
    assert info.get("vermagic", ) and "6.1.0-relink" in (info.get("vermagic") or "")
    assert info.depends == []
    assert info.versions == [(0x12345678, "_printk"), (0x9ABCDEF0, "jiffies")]
    assert info.has_this_module and info.init == "init_module" and info.exit == "cleanup_module"


def test_kmod_relocated_into_buffer(ko: Path) -> None:
    mod = load_kmod(ko, symbols=KERNEL)
    assert mod.state == "relocated" and mod.base == KMOD_BASE
    st = mod._state
    region = st.region
    init, cleanup = mod.symbol("init_module"), mod.symbol("cleanup_module")
    assert init is not None and cleanup is not None
    assert st.section(".init.text").group == "init_text"  # scratch after init
    this = mod.symbol("__this_module")
    assert this is not None
    assert struct.unpack("<QQ", region.read(this + 56, 16)) == (init, cleanup)
    entry = mod.symbol("__ksymtab_hello_value")
    assert entry is not None
    value_off = struct.unpack("<i", region.read(entry, 4))[0]
    assert entry + value_off == mod.symbol("hello_value")
    # -mcmodel=kernel: the format string's address is a sign-extended 32-bit immediate
    # (R_X86_64_32S, top 2 GiB) and jiffies is reached PC-relative (R_X86_64_PC32)
    code = region.read(init, 64)
    i = code.index(b"\x48\xc7\xc7")  # mov $imm32, %rdi
    imm = struct.unpack_from("<i", code, i + 3)[0] % 2**64
    assert region.read(imm, 9) == b"hello %d\n"
    j = code.index(b"\x03\x35")  # add disp32(%rip), %esi
    assert init + j + 6 + struct.unpack_from("<i", code, j + 2)[0] == KERNEL["jiffies"]
    assert st.counts.get("32S") and st.counts.get("PC32")
    assert st.kmod.name == "hello"
    assert dict(st.modinfo)["license"] == "GPL"


def test_kmod_unresolved_symbols_hook(ko: Path) -> None:
    with pytest.raises(UnknownSymbolError) as exc:
        load_kmod(ko, symbols={"_printk": KERNEL["_printk"]})
    assert exc.value.symbol == "jiffies"
    asked: list[str] = []

    def hook(name: str) -> int | None:
        asked.append(name)
        return KERNEL.get(name)

    mod = load_kmod(ko, resolve=hook)
    assert sorted(asked) == ["_printk", "jiffies"]
    assert mod.state == "relocated"


def test_cli_info_object_archive_and_kmod(ko: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(ko)]) == 0
    out = capsys.readouterr().out
    assert "license" in out and "GPL" in out and "init_module" in out
    assert main(["info", "--json", str(ko)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["type"] == "ET_REL" and d["modinfo"]["name"] == "hello"
    assert d["kernel_module"]["versions"] == 2
    lib = archive("cliar", [obj("ar_one.c"), obj("ar_two.c")])
    assert main(["info", str(lib)]) == 0
    out = capsys.readouterr().out
    assert "2 members" in out and "defines: ar_helper, ar_two" in out
    assert main(["info", "--json", str(lib)]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "archive"


def test_cli_call_object_and_archive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", str(obj("calc_b.c", ["-O2", "-fcommon"])), "b_scale", "14"]) == 0
    assert capsys.readouterr().out.strip() == "42"
    lib = archive("cliar2", [obj("ar_poison.c"), obj("ar_one.c"), obj("ar_two.c")])
    assert main(["call", str(lib), "ar_one"]) == 0  # only the members it needs
    assert capsys.readouterr().out.strip() == "1005"
    assert main(["call", str(lib), "ar_poison"]) == 1  # its member cannot link
    assert "this_symbol_does_not_exist_anywhere" in capsys.readouterr().err


def test_module_from_object_in_scope_of_shared_load(tmp_path: Path) -> None:
    """An object's exports serve a shared object's undefined symbols (scope=)."""
    from support.build import build_shared

    user = build_shared("objuser", "extern int b_value; int b_scale(int);\n"
                        "int use_b(int x) { return b_scale(x) + b_value; }\n",
                        group="object", ldflags=["-Wl,-z,now"])
    with relink.load_object(obj("calc_b.c", ["-O2", "-fcommon"])) as b:
        with relink.load(user, scope=[b._state]) as so:
            assert so.function("use_b", ctypes.c_int, ctypes.c_int)(2) == 6 + 7
