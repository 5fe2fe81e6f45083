"""C++ in relink-loaded libraries: exceptions within and across libraries, static
constructors and destructors, libstdc++ / libgcc_s from the host.

Throwing tests run in a child interpreter: if unwinding broke, std::terminate would abort
the process, and that must fail one test, not the whole session.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cxxhelp import cxx_libs

import relink
from relink.runtime.unwind import eh_frame_address, registered_frames

pytestmark = pytest.mark.needs_cc
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import ctypes, json, os, sys
import relink
I = ctypes.c_int
path, how, base_path = sys.argv[1], sys.argv[2], sys.argv[3]
src = open(path, "rb").read() if how == "bytes" else path
ctx = relink.LinkContext("cxx")
if how == "bytes":  # no $ORIGIN for bytes: the dependency is already in the context
    keep = relink.load(open(base_path, "rb").read(), name="libcxxbase.so", context=ctx)
m = relink.load(src, name=os.path.basename(path), context=ctx)
base = m.dependencies[0]
base.function("base_set_dtor_fd", None, I)(1)
out = {
    "deps": [(d.name, d.is_host) for d in m.dependencies],
    "base_constructed": base.function("base_constructed", I)(),
    "user_constructed": m.function("user_constructed", I)(),
    "throw_catch_inside": base.function("base_throw_catch", I, I)(5),
    "catch_libstdcxx_throw": base.function("base_catch_std", I)(),
    "catch_across": m.function("user_catch_base", I, I)(4),
    "catch_as_std_base": m.function("user_catch_std", I)(),
    "through_base_frames": m.function("user_through_base", I)(),
}
out["again"] = m.function("user_catch_base", I, I)(9)
print(json.dumps(out), flush=True)
"""


def run_child(base: Path, user: Path, how: str) -> tuple[dict[str, object], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(user), how, str(base)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    first, _, rest = res.stdout.partition("\n")
    return json.loads(first), rest


@pytest.mark.parametrize("how", ["path", "bytes"])
def test_exceptions_within_and_across_libraries(how: str) -> None:
    base, user = cxx_libs()
    out, tail = run_child(base, user, how)
    deps = dict(out["deps"])  # type: ignore[arg-type]
    assert deps["libcxxbase.so"] is False           # loaded by relink
    assert deps["libstdc++.so.6"] is True           # served by the host
    assert deps["libgcc_s.so.1"] is True
    assert out["base_constructed"] == 42 + 3        # static ctor ran (vector {1,2,3})
    assert out["user_constructed"] == 5
    assert out["throw_catch_inside"] == 1005        # throw + catch inside one library
    assert out["catch_libstdcxx_throw"] == 7        # std::out_of_range from vector::at
    assert out["catch_across"] == 40                # thrown in base, caught in user
    assert out["catch_as_std_base"] == len("base error 3")
    # thrown in user, unwinds through base_call's frame (its Guard destructor ran once)
    assert out["through_base_frames"] == 100 + len("from user 1")
    assert out["again"] == 90
    # the static destructor ran exactly once, at exit (GNU_UNIQUE makes them NODELETE)
    assert tail.count("cxxbase-global-dtor") == 1


def test_static_destructor_runs_at_close_and_frames_are_deregistered() -> None:
    _base, user = cxx_libs(unique=False)
    r, w = os.pipe()
    try:
        m = relink.load(str(user))
        base = m.dependencies[0]
        base.function("base_set_dtor_fd", None, ctypes.c_int)(w)
        frames = {eh_frame_address(mod._state) for mod in (m, base)}
        assert None not in frames and frames <= set(registered_frames())
        assert base.function("base_constructed", ctypes.c_int)() == 45
        m.close()
        assert m.closed and base.closed
        os.set_blocking(r, False)
        assert os.read(r, 100) == b"cxxbase-global-dtor\n"
        assert not frames & set(registered_frames())
    finally:
        os.close(r)
        os.close(w)


def test_exceptions_in_plain_build_in_process() -> None:
    """The non-NODELETE build, in this process: load, throw across, close, reload."""
    _base, user = cxx_libs(unique=False)
    for _ in range(2):
        with relink.load(str(user)) as m:
            assert m.function("user_catch_base", ctypes.c_int, ctypes.c_int)(6) == 60
            assert m.function("user_through_base", ctypes.c_int)() == 100 + len("from user 1")
