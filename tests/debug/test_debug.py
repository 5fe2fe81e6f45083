"""relink.loaded_modules() and the gdb extension (relink-symbols)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import relink
from relink.runtime import debug
from support.build import build_shared

pytestmark = pytest.mark.needs_cc
ROOT = Path(__file__).resolve().parents[2]
CRASH = (Path(__file__).parent / "fixtures" / "crash.c").read_text()


def crash_lib() -> Path:
    return build_shared("crash", {"crash.c": CRASH}, group="debug", cflags=["-g", "-O0"],
                        soname="libcrash.so")


def test_loaded_modules_lists_path_base_segments() -> None:
    lib = crash_lib()
    before = {(i.name, i.base) for i in relink.loaded_modules()}
    with relink.load(str(lib)) as m, relink.load(lib.read_bytes(), name="mem.so") as mem:
        new = [i for i in relink.loaded_modules() if (i.name, i.base) not in before]
        by_name = {i.name: i for i in new}
        assert set(by_name) == {"libcrash.so", "mem.so"}
        info = by_name["libcrash.so"]
        assert info.path == str(lib) and by_name["mem.so"].path is None
        assert info.base == m.base and by_name["mem.so"].base == mem.base
        assert info.segments == m.segments
        assert info.kind == "shared" and info.native and info.arch == "x86_64"
        assert info.state == "initialized"
        # the address of a function lies in an executable segment of its module
        add = m.symbol("add")
        assert add is not None
        assert any(a <= add < a + n and p & 4 for a, n, p in info.segments)
    assert {(i.name, i.base) for i in relink.loaded_modules()} == before


def test_gdb_commands_use_the_load_bias(tmp_path: Path) -> None:
    lib = crash_lib()
    with relink.load(str(lib)) as m, relink.load(lib.read_bytes(), name="mem.so") as mem:
        cmds = debug.gdb_commands(str(tmp_path))
        assert f"add-symbol-file {lib} -o {m.base:#x}" in cmds
        dumped = [c for c in cmds if c.endswith(f"-o {mem.base:#x}")]
        assert len(dumped) == 1
        dumped_file = dumped[0].split()[1]
        assert Path(dumped_file).read_bytes() == lib.read_bytes()


SCRIPT = r"""
import ctypes, sys, relink
m = relink.load(open(sys.argv[1], "rb").read(), name="libcrash.so")  # from bytes
m.function("add", ctypes.c_int, ctypes.c_int, ctypes.c_int)(1, 2)
m.function("crash_now", ctypes.c_int)()
"""


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed (.ci/run)")
def test_gdb_sees_symbols_of_a_bytes_loaded_library(tmp_path: Path) -> None:
    lib = crash_lib()
    env = dict(os.environ, RELINK_GDB="1", PYTHONPATH=str(ROOT / "src"),
               TMPDIR=str(tmp_path))
    cmd = ["gdb", "-nx", "-batch", "-iex", "set debuginfod enabled off",
           "-ex", f"source {debug.gdb_script_path()}", "-ex", "run",
           "-ex", "relink-modules", "-ex", "relink-symbols", "-ex", "bt 3",
           "-ex", "info symbol $pc", "-ex", "kill",
           "--args", sys.executable, "-c", SCRIPT, str(lib)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert "SIGSEGV" in out, out[-3000:]
    assert "relink: added symbols of 1 module(s)" in out, out[-3000:]
    assert "libcrash.so" in out and "<memory>" in out
    assert "crash_here" in out and "crash_now" in out, out[-3000:]
    assert "crash.c:6" in out, out[-3000:]  # line information from the DWARF too
    manifests = list(tmp_path.glob("relink-gdb-*/manifest.json"))
    assert len(manifests) == 1
    body = json.loads(manifests[0].read_text())
    assert [m["name"] for m in body["modules"]] == ["libcrash.so"]


def test_manifest_follows_loads_and_unloads(tmp_path: Path) -> None:
    lib = crash_lib()
    path = debug.enable_gdb(str(tmp_path))
    try:
        with relink.load(str(lib)) as m:
            body = json.loads(Path(path).read_text())
            assert any(x["base"] == m.base for x in body["modules"])
        body = json.loads(Path(path).read_text())
        assert not any(x["name"] == "libcrash.so" for x in body["modules"])
    finally:
        debug._gdb.clear()


def test_relocatable_object_sections_for_gdb(tmp_path: Path) -> None:
    from support.build import build_object

    obj = build_object("dbgobj", {"dbgobj.c": "int counter = 3;\n"
                                  "int twice(int x) { return 2 * x + counter; }\n"},
                       group="debug", cflags=["-g", "-O0", "-fPIC"])
    with relink.load_object(str(obj)) as m:
        info = next(i for i in relink.loaded_modules() if i.path == str(obj))
        assert info.kind == "object"
        secs = dict(info.sections)
        assert m.symbol("twice") == secs[".text"]  # the only function, at .text's start
        cmd = next(c for c in debug.gdb_commands(str(tmp_path)) if str(obj) in c)
        assert cmd.startswith(f"add-symbol-file {obj} {secs['.text']:#x}")
        assert f"-s .data {secs['.data']:#x}" in cmd
