"""Fixtures of the C++ tests: two C++ libraries compiled at test time (cached)."""

from __future__ import annotations

from pathlib import Path

from support.build import build_shared

FIXTURES = Path(__file__).parent / "fixtures"


def src(name: str) -> str:
    return (FIXTURES / name).read_text()


def cxx_libs(unique: bool = True) -> tuple[Path, Path]:
    """(libcxxbase, libcxxuser); ``unique=False`` builds with -fno-gnu-unique, so the
    libraries are not NODELETE and close() really unloads them."""
    tag = "" if unique else "_plain"
    flags = ["-O2"] if unique else ["-O2", "-fno-gnu-unique"]
    base = build_shared(f"cxxbase{tag}", {"cxxbase.cpp": src("cxxbase.cpp")}, group="cxx",
                        lang="c++", cflags=flags, soname=f"libcxxbase{tag}.so")
    user = build_shared(f"cxxuser{tag}", {"cxxuser.cpp": src("cxxuser.cpp")}, group="cxx",
                        lang="c++", cflags=flags, deps=[base], soname=f"libcxxuser{tag}.so",
                        ldflags=["-Wl,-rpath,$ORIGIN"])
    return base, user
