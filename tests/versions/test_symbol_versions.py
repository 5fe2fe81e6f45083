"""Versioned binding: relocations honour the referencing symbol's verneed requirement
against the providers' verdef, exactly as ld.so does. ld.so itself is the oracle: the
same files are dlopened (ctypes.CDLL) in a child process and must give the same answer."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest
from versionhelp import consumer, dropped_version_pair, provider, unversioned_host_pair

import relink
from relink.errors import UnknownSymbolError, VersionNotFoundError

pytestmark = pytest.mark.needs_cc

ORACLE = r"""
import ctypes, sys
try:
    lib = ctypes.CDLL(sys.argv[1])
except OSError as e:
    print("error:", e)
else:
    print(getattr(lib, sys.argv[2])())
"""


def ld_so(path: Path, func: str = "call_foo") -> str:
    res = subprocess.run([sys.executable, "-c", ORACLE, str(path), func],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def call(path: Path, func: str = "call_foo") -> int:
    with relink.load(str(path)) as m:
        return int(m.function(func, ctypes.c_int)())


def test_default_version_reference() -> None:
    lib = consumer("use_default", "use_default.c")
    assert call(lib) == 2 and ld_so(lib) == "2"           # foo@@VER_2
    assert call(lib, "call_bar") == 10 and ld_so(lib, "call_bar") == "10"


def test_non_default_version_reference() -> None:
    lib = consumer("use_old", "use_old.c")
    assert call(lib) == 1 and ld_so(lib) == "1"           # foo@VER_1 (hidden)


def test_unversioned_reference_binds_like_ld_so() -> None:
    """A consumer linked before the provider had versions: ld.so binds the version with
    index 2 (the oldest, foo@VER_1), not the default one."""
    lib = consumer("use_unversioned", "use_default.c", against="plain")
    expected = ld_so(lib)
    assert expected == "1"
    assert call(lib) == 1


def test_missing_version_fails_the_load_like_ld_so() -> None:
    lib = consumer("use_v3", "use_default.c", against="ver3")
    assert "version `VER_3' not found" in ld_so(lib)
    with pytest.raises(VersionNotFoundError) as info:  # at load time, before relocation
        relink.load(str(lib))
    assert (info.value.version, info.value.needed) == ("VER_3", "libver.so")
    assert "version `VER_3' not found" in str(info.value)


def test_dlvsym_semantics_of_module_symbol() -> None:
    with relink.load(str(provider("ver"))) as m:
        v1, v2 = m.symbol("foo", "VER_1"), m.symbol("foo", "VER_2")
        assert v1 and v2 and v1 != v2
        assert m.symbol("foo") == v2                       # dlsym: the default version
        assert m.function("foo", ctypes.c_int, version="VER_1")() == 1
        assert m.symbol("foo", "VER_9") is None
        assert m.symbol("bar", "VER_1") == m.symbol("bar")


def test_host_symbol_at_a_non_default_version() -> None:
    from support.build import build_shared

    src = (Path(__file__).parent / "fixtures" / "use_host.c").read_text()
    lib = build_shared("use_host", {"use_host.c": src}, group="versions")
    libc = ctypes.CDLL("libc.so.6")
    dlvsym = libc.dlvsym
    dlvsym.restype = ctypes.c_void_p
    dlvsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    old = dlvsym(libc._handle, b"memcpy", b"GLIBC_2.2.5")
    new = dlvsym(libc._handle, b"memcpy", b"GLIBC_2.14")
    assert old and new and old != new
    with relink.load(str(lib)) as m:
        assert m.function("old_memcpy", ctypes.c_void_p)() == old


def test_reference_to_a_dropped_symbol_version_is_an_error() -> None:
    """libverh.so still defines VER_1 (the load-time check passes) but not foo@VER_1:
    ld.so refuses to bind foo@@VER_2 instead, and so does relink."""
    user, _dropped = dropped_version_pair()
    assert "undefined symbol: foo, version VER_1" in ld_so(user)
    with pytest.raises(UnknownSymbolError) as info:
        relink.load(str(user))
    assert info.value.symbol == "foo" and info.value.version == "VER_1"


def test_dropped_symbol_version_in_a_host_library() -> None:
    """The same with the provider served by the host (dlvsym, no fallback to dlsym)."""
    user, dropped = dropped_version_pair()
    host = ctypes.CDLL(str(dropped))  # now the host serves libverh.so (serve_loaded)
    assert host.foo() == 2
    with pytest.raises(UnknownSymbolError) as info:
        relink.load(str(user))
    assert info.value.version == "VER_1"


def test_unversioned_reference_to_a_host_library() -> None:
    """ld.so's index-2 rule holds when the versioned provider is served by the host."""
    user, full = unversioned_host_pair()
    assert ld_so(user) == "1"
    host = ctypes.CDLL(str(full))
    assert host.foo() == 2  # dlsym: the default version
    with relink.load(str(user)) as m:
        assert m.dependencies[0].is_host
        assert m.function("call_foo", ctypes.c_int)() == 1
        assert m.function("call_bar", ctypes.c_int)() == 10
