"""C++ distribution libraries: GMP's C++ interface (libgmpxx) and jsoncpp, through small
C shims compiled at test time. The shims, libgmpxx / libgmp and libjsoncpp are all loaded
by relink; libstdc++ and libgcc_s come from the host. Exceptions thrown inside those
libraries are caught by the shims. The work runs in a child interpreter so that a broken
unwinder (std::terminate) fails these tests only."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from realhelp import system_library

from support.build import build_shared

pytestmark = pytest.mark.needs_cc
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"


def child(script: str, *args: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, "-c", script, *args], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.splitlines()[-1])  # type: ignore[no-any-return]


GMP = r"""
import ctypes, json, sys, relink
from ctypes import c_char_p, c_int, c_size_t, c_uint
m = relink.load(sys.argv[1])
buf = ctypes.create_string_buffer(4096)
fact = m.function("factorial", c_int, c_uint, c_char_p, c_size_t)
square = m.function("square_of", c_int, c_char_p, c_char_p, c_size_t)
out = {"deps": [(d.name, d.is_host) for d in m.dependencies]}
n = fact(60, buf, len(buf)); out["fact60"] = buf.value.decode()
n = square(b"123456789012345678901234567890", buf, len(buf)); out["square"] = buf.value.decode()
out["bad_input"] = square(b"xyz", buf, len(buf))
out["bad_literal"] = m.function("bad_literal", c_int)()
gmpxx = next(d for d in m.dependencies if d.name.startswith("libgmpxx"))
out["gmpxx_deps"] = [(d.name, d.is_host) for d in gmpxx.dependencies]
print(json.dumps(out))
"""


def test_gmpxx() -> None:
    gmpxx = system_library("libgmpxx.so.4")
    if not Path("/usr/include/gmpxx.h").exists():
        pytest.skip("gmpxx.h missing (.ci/run installs libgmp-dev)")
    shim = build_shared("gmpshim", {"gmpshim.cpp": (FIXTURES / "gmpshim.cpp").read_text()},
                        group="realworld", lang="c++", cflags=["-O2"],
                        deps=[gmpxx, system_library("libgmp.so.10")])
    out = child(GMP, str(shim))
    deps = dict(out["deps"])  # type: ignore[arg-type]
    assert deps["libgmpxx.so.4"] is False and deps["libstdc++.so.6"] is True
    assert dict(out["gmpxx_deps"])["libgmp.so.10"] is False  # type: ignore[arg-type]
    assert out["fact60"] == str(math.factorial(60))
    assert out["square"] == format(123456789012345678901234567890 ** 2, "x")
    assert out["bad_input"] == -2
    assert out["bad_literal"] == 1


JSONCPP = r"""
import ctypes, json, sys, relink
from ctypes import c_char_p, c_int, c_size_t
m = relink.load(sys.argv[1])
buf = ctypes.create_string_buffer(4096)
out = {"deps": [(d.name, d.is_host) for d in m.dependencies]}
out["sum"] = m.function("json_sum", c_int, c_char_p)(b'{"values": [1, 2, 3, 40]}')
out["sum_bad"] = m.function("json_sum", c_int, c_char_p)(b'{"values": [1, 2,')
out["type_error"] = m.function("json_type_error", c_int, c_char_p)(b'{"name": "x"}')
out["parse_error"] = m.function("json_parse_error", c_int, c_char_p)(b'{"a": ]')
n = m.function("json_write", c_int, c_char_p, c_size_t)(buf, len(buf))
out["written"] = buf.value.decode()
print(json.dumps(out))
"""


def test_jsoncpp() -> None:
    lib = system_library("libjsoncpp.so.25")
    if not Path("/usr/include/jsoncpp/json/json.h").exists():
        pytest.skip("jsoncpp headers missing (.ci/run installs libjsoncpp-dev)")
    shim = build_shared("jsonshim", {"jsonshim.cpp": (FIXTURES / "jsonshim.cpp").read_text()},
                        group="realworld", lang="c++",
                        cflags=["-O2", "-I/usr/include/jsoncpp"], deps=[lib])
    out = child(JSONCPP, str(shim))
    deps = dict(out["deps"])  # type: ignore[arg-type]
    assert deps["libjsoncpp.so.25"] is False and deps["libstdc++.so.6"] is True
    assert out["sum"] == 46
    assert out["sum_bad"] == -1
    assert out["type_error"] == 1    # Json::LogicError thrown in libjsoncpp, caught here
    assert out["parse_error"] == 1   # Json::RuntimeError from operator>>
    assert json.loads(str(out["written"])) == {"name": "relink", "list": [1, 2.5], "ok": True}
