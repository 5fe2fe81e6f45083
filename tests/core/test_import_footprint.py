"""What a first load in a fresh process imports (issue 8, target T2).

A plain native load of a small chain must not pull in heavy standard-library modules
or the parts of relink it does not use (foreign ISAs, TLS carriers, observers' hooks,
the ld.so cache reader, CLI, planning, objects). Checked structurally, in a child
process started with ``-S`` (no site hooks that preload modules), so a slip shows up as
a module name, not as a timing. Timings live in benchmarks/first_load.py.
"""

from __future__ import annotations

import ctypes
import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import relink
from relink._record import FrozenRecord, Record
from relink.runtime.host import DEFAULT_HOST_FAMILY, _match

pytestmark = pytest.mark.needs_cc

# Standard-library modules the load path used to import (or could easily start to).
HEAVY = {
    "argparse", "ast", "copy", "dataclasses", "dis", "fnmatch", "inspect", "json",
    "linecache", "logging", "mmap", "numpy", "pathlib", "platform", "shutil", "string",
    "subprocess", "tempfile", "textwrap", "tokenize", "traceback", "urllib", "zipfile",
}
# relink modules a plain native load of the chain (no TLS, no observers, small
# relocation tables, every library found through RUNPATH or served by the host) has no
# use for.
UNUSED = {
    "relink.arch.foreign", "relink.arch.rtypes", "relink.cli", "relink.elf.constants",
    "relink.elf.notes", "relink.linker.hooks", "relink.linker.ldcache", "relink.object",
    "relink.observer", "relink.plan", "relink.relocation.bulk", "relink.runtime.debug",
    "relink.runtime.lazy", "relink.runtime.tls", "relink.runtime.tls_carrier",
    "relink.runtime.tls_stubs",
}
# The chain load imports 39 relink modules today; a new module on the load path should
# be a decision, so this bound fails when it grows.
MAX_RELINK_MODULES = 39

_CHILD = """
import sys
import relink
after_import = sorted(m for m in sys.modules if m.startswith("relink"))
m = relink.load(sys.argv[1])
modules = sorted(sys.modules)
listed = [info.name for info in relink.loaded_modules()]  # imports relink.runtime.debug
m.close()
import json
print(json.dumps({"modules": modules, "after_import": after_import, "listed": listed}))
"""


def _fresh_python(code: str, *args: str) -> str:
    """Run `code` in a fresh interpreter (no site, this checkout's relink); its stdout."""
    src = str(Path(relink.__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-S", "-c", code, *args], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=src))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _child_modules(leaf: Path) -> dict[str, list[str]]:
    result: dict[str, list[str]] = json.loads(_fresh_python(_CHILD, str(leaf)))
    return result


@pytest.fixture(scope="module")
def footprint(chain: Path) -> dict[str, list[str]]:
    return _child_modules(chain)


def test_first_load_imports_no_heavy_stdlib_module(footprint: dict[str, list[str]]) -> None:
    loaded = {m.split(".")[0] for m in footprint["modules"]}
    assert not HEAVY & loaded, sorted(HEAVY & loaded)


def test_first_load_imports_only_the_relink_modules_it_uses(
        footprint: dict[str, list[str]]) -> None:
    ours = [m for m in footprint["modules"] if m.startswith("relink")]
    unused = {m for m in ours if any(m == u or m.startswith(u + ".") for u in UNUSED)}
    assert not unused, sorted(unused)
    assert len(ours) <= MAX_RELINK_MODULES, ours


def test_import_relink_alone_stays_small(footprint: dict[str, list[str]]) -> None:
    assert footprint["after_import"] == ["relink", "relink.errors"]


def test_modules_loaded_before_the_listing_is_imported_are_listed(
        footprint: dict[str, list[str]]) -> None:
    # The registry lives in relink.runtime; relink.runtime.debug comes with the query.
    assert footprint["listed"] == ["libleaf.so", "libmiddle.so", "libbase.so"]


def test_libc_prototypes_made_on_first_use_are_one_family() -> None:
    from relink.runtime import libc

    for name in libc.__all__:
        assert getattr(libc, name) is getattr(libc, name), name
    assert libc.dl_iterate_phdr.argtypes[0] is libc.DL_ITERATE_PHDR_CALLBACK
    assert libc.DL_ITERATE_PHDR_CALLBACK._argtypes_[0]._type_ is libc.DlPhdrInfo
    assert libc.TLS_GET_ADDR._argtypes_[0]._type_ is libc.TlsIndex
    assert libc.mmap.restype is ctypes.c_void_p and len(libc.mmap.argtypes) == 6
    with pytest.raises(AttributeError):
        libc.no_such_prototype  # noqa: B018


def test_dlerror_reports_the_first_failure_of_a_fresh_process() -> None:
    # Resolving dlerror lazily (a dlsym) after a failed dlopen would clear the message.
    code = ("from relink.runtime import libc as c\n"
            "assert not c.dlopen(b'/nonexistent/libnothing.so', c.RTLD_NOW)\n"
            "assert b'libnothing' in c.dlerror()\n")
    _fresh_python(code)


def test_default_tls_runtime_is_imported_by_the_first_module_that_needs_it() -> None:
    code = ("import sys, relink\n"
            "from relink.linker.linker import Linker\n"
            "Linker()\n"
            "assert 'relink.runtime.tls' not in sys.modules\n"
            "assert callable(Linker().tls.tlsdesc_undefweak)\n"
            "assert 'relink.runtime.tls' in sys.modules\n")
    _fresh_python(code)


@pytest.mark.parametrize("name", [
    "libc.so.6", "libm.so.6", "ld-linux-x86-64.so.2", "ld-linux.so.2", "libmemusage.so",
    "libmemusage.so.1", "libstdc++.so.6", "libz.so.1", "libc.so", "linux-vdso.so.1", "",
])
def test_host_family_matching_agrees_with_fnmatch(name: str) -> None:
    for pattern in (*DEFAULT_HOST_FAMILY, "*", "**", "a*b*a", "*.so", "lib?.so.*",
                    "lib[cm].so.*", "libc.so.6", ""):
        assert _match(name, pattern) == fnmatch.fnmatchcase(name, pattern), pattern


def test_star_patterns_agree_with_fnmatch_exhaustively() -> None:
    words = ["", "a", "b", "ab", "ba", "aa", "aba", "abba", "baab", "aabb", "ababa"]
    patterns = ["*", "a*", "*a", "a*a", "*a*", "a*b*a", "ab*ba", "a**b", "*ab*ab*", "b*"]
    for word in words:
        for pattern in patterns:
            assert _match(word, pattern) == fnmatch.fnmatchcase(word, pattern), \
                (word, pattern)


class _Point(FrozenRecord):
    __slots__ = ("x", "y")
    x: int
    y: int

    def __init__(self, x: int, y: int = 0) -> None:
        self._set(x, y)


class _Box(Record):
    __slots__ = ("items",)

    def __init__(self, items: list[int]) -> None:
        self.items = items


def test_records_behave_like_the_dataclasses_they_replace() -> None:
    p = _Point(1, 2)
    assert p == _Point(1, 2) and p != _Point(2, 1) and hash(p) == hash(_Point(1, 2))
    assert repr(p) == "_Point(x=1, y=2)"
    assert p.replace(y=5) == _Point(1, 5) and p.y == 2
    with pytest.raises(AttributeError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.replace(z=1)
    box = _Box([1])
    assert box == _Box([1]) and box != _Box([2])
    with pytest.raises(TypeError):
        hash(box)  # mutable records are unhashable, as eq=True dataclasses


def test_constants_spelled_out_to_avoid_imports_agree() -> None:
    from relink.linker import ldcache, tokens
    from relink.runtime import tls, tls_carrier

    assert tokens.LD_SO_CACHE_PATH == ldcache.DEFAULT_LD_SO_CACHE
    assert tls.STATIC_TLS_TUNABLE == tls_carrier.STATIC_TLS_TUNABLE
