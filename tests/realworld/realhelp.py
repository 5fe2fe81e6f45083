"""Real distribution libraries (Debian packages, installed by .ci/run) loaded by relink.

Every test loads the library itself with relink (never dlopen): the root module's path is
the system file and ``is_host`` is False; only the glibc family, libstdc++ and libgcc_s
(and libraries the process had already loaded, as dlopen would share them) come from the
host.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

import relink

LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
            "/usr/lib")


def system_library(soname: str) -> Path:
    """The installed file for `soname`, or skip (the package is listed in .ci/run)."""
    for d in LIB_DIRS:
        p = Path(d) / soname
        if p.exists():
            return p.resolve()
    pytest.skip(f"{soname} is not installed (.ci/run installs it from Debian's packages)")


def load_system(soname: str, how: str = "path") -> relink.Module:
    path = system_library(soname)
    if how == "bytes":
        m = relink.load(path.read_bytes(), name=soname)
    else:
        m = relink.load(str(path))
    assert not m.is_host
    return m


@pytest.fixture(params=["path", "bytes"])
def how(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fn(m: relink.Module, name: str, restype: object, *argtypes: object) -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    return m.function(name, restype, *argtypes)
