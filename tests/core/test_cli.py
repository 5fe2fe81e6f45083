"""The command line: relink info / call / demo, and error reporting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from relink.cli import main

pytestmark = pytest.mark.needs_cc


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_text_and_json(capsys: pytest.CaptureFixture[str], chain: Path) -> None:
    code, out, _ = run(capsys, "info", str(chain.parent / "libmiddle.so"))
    assert code == 0
    assert "ET_DYN" in out and "x86_64" in out and "libbase.so" in out
    assert "RUNPATH:  $ORIGIN" in out and "R_X86_64_" in out and "DT_INIT_ARRAY" in out
    code, out, _ = run(capsys, "info", "--json", str(chain.parent / "libmiddle.so"))
    data = json.loads(out)
    assert data["needed"] == ["libbase.so"] and data["soname"] == "libmiddle.so"
    assert data["runpath"] == "$ORIGIN" and sum(data["relocations"].values()) > 0
    assert any(s["type"] == "PT_GNU_RELRO" for s in data["segments"])


def test_info_system_libc_versions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", "--json", "/usr/lib/x86_64-linux-gnu/libc.so.6")
    data = json.loads(out)
    assert data["relocations"]["RELR (relative)"] > 100
    assert "GLIBC_2.34" in {v["name"] for v in data["version_definitions"]}
    assert data["tls"]["memsz"] > 0


def test_call(capsys: pytest.CaptureFixture[str], chain: Path, provider: Path) -> None:
    code, out, _ = run(capsys, "call", str(chain), "leaf_value")
    assert (code, out.strip()) == (0, "3")
    code, out, _ = run(capsys, "call", str(provider), "external_fn", "5")
    assert (code, out.strip()) == (0, "22")
    code, out, _ = run(capsys, "call", "/usr/lib/x86_64-linux-gnu/libz.so.1", "zlibVersion",
                       "--returns", "str")
    assert code == 0 and out.strip().startswith("'1.")
    code, out, _ = run(capsys, "call", "/usr/lib/x86_64-linux-gnu/libz.so.1", "crc32",
                       "0", "str:hello", "5", "-r", "ulong")
    import zlib

    assert int(out) == zlib.crc32(b"hello")


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             chain: Path) -> None:
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an elf file at all")
    code, out, err = run(capsys, "info", str(junk))
    assert code == 1 and err.count("\n") == 1 and "bad magic" in err
    code, out, err = run(capsys, "call", str(chain), "missing_function")
    assert code == 1 and "missing_function" in err
    code, out, err = run(capsys, "info", str(tmp_path / "absent.so"))
    assert code == 1 and "No such file" in err


def test_python_dash_m_and_demo() -> None:
    proc = subprocess.run([sys.executable, "-m", "relink", "demo", "--rounds", "5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "leaf_value() = 3" in proc.stdout and "ratio" in proc.stdout
    assert "ctypes.CDLL" in proc.stdout
    assert "from bytes: leaf_value() = 3" in proc.stdout


def test_deps_loads_no_host_library(tmp_path: Path) -> None:
    """`relink deps` decides host-provided libraries without dlopening them."""
    from support.build import build_shared

    cxx = ('#include <string>\n#include <stdexcept>\n'
           'extern "C" int f(int n) { std::string s(n, \'x\');\n'
           '  if (n < 0) throw std::runtime_error("n"); return (int)s.size(); }\n')
    lib = build_shared("cxxuser", {"cxxuser.cpp": cxx}, group="core-cxx", lang="c++")
    code = ("import sys; from relink.cli import main; rc = main(['deps', sys.argv[1]]); "
            "maps = open('/proc/self/maps').read(); "
            "print('LOADED' if 'libstdc++' in maps else 'NOT-LOADED', rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(lib)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "libstdc++.so.6" in proc.stdout  # the edge is reported ...
    assert proc.stdout.strip().endswith("NOT-LOADED 0")  # ... without loading it
