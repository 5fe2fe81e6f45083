"""Fixtures of the linker tests: C libraries compiled at test time (cached).

Layout (each group is a directory; groups are siblings):
    linker/         libprovider (soname libprovider.so), libdependent -> provider,
                    libroot -> dependent (RUNPATH $ORIGIN), libglobal (no DT_NEEDED),
                    librpath_root (DT_RPATH $ORIGIN/../linker-rpath), librunpath_root
                    (DT_RUNPATH, same dir), librpath_caller, libcounter, libtraced_*,
                    liblibc_user, libbroken (needs a library nobody can find), libnodelete
    linker-rpath/   libleaf (soname libleaf.so), libmiddle -> leaf (no RPATH/RUNPATH)
    linker-alt/     libprovider built with PROVIDER_VALUE=5 (a replacement)
    linker-missing/ libmissing_dep (only linked against; never on a search path)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from linker_helpers import FIXTURES, RUNPATH, shared

from support.build import build_shared, have_cc


@pytest.fixture(scope="session")
def provider() -> Path:
    return shared("provider", soname="libprovider.so", cflags=["-DPROVIDER_VALUE=1"])


@pytest.fixture(scope="session")
def provider_alt() -> Path:
    return shared("provider", soname="libprovider.so", cflags=["-DPROVIDER_VALUE=5"],
                   group="linker-alt")


@pytest.fixture(scope="session")
def dependent(provider: Path) -> Path:
    return shared("dependent", deps=[provider], ldflags=RUNPATH, soname="libdependent.so")


@pytest.fixture(scope="session")
def root(dependent: Path) -> Path:
    return shared("root", deps=[dependent], ldflags=RUNPATH, soname="libroot.so")


@pytest.fixture(scope="session")
def global_lib() -> Path:
    return shared("global", soname="libglobal.so")


@pytest.fixture(scope="session")
def leaf() -> Path:
    return shared("leaf", soname="libleaf.so", group="linker-rpath")


@pytest.fixture(scope="session")
def middle(leaf: Path) -> Path:
    return shared("middle", deps=[leaf], soname="libmiddle.so", group="linker-rpath")


@pytest.fixture(scope="session")
def rpath_root(middle: Path) -> Path:
    return shared("rpath_root", deps=[middle],
                   ldflags=["-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/../linker-rpath"])


@pytest.fixture(scope="session")
def runpath_root(middle: Path) -> Path:
    return shared("runpath_root", "rpath_root", deps=[middle],
                   ldflags=["-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/../linker-rpath"])


@pytest.fixture(scope="session")
def rpath_caller(leaf: Path) -> Path:
    return shared("rpath_caller",
                   ldflags=["-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/../linker-rpath"])


@pytest.fixture(scope="session")
def counter() -> Path:
    return shared("counter", soname="libcounter.so")


@pytest.fixture(scope="session")
def libc_user() -> Path:
    return shared("libc_user", ldflags=["-Wl,-z,now"])


@pytest.fixture(scope="session")
def broken(provider: Path) -> Path:
    missing = shared("missing_dep", soname="libmissing_dep.so", group="linker-missing")
    return shared("broken", deps=[provider, missing], ldflags=RUNPATH)


@pytest.fixture(scope="session")
def nodelete() -> Path:
    return shared("nodelete", ldflags=["-Wl,-z,nodelete"], soname="libnodelete.so")


@pytest.fixture(scope="session")
def zuser() -> Path:
    libz = Path("/usr/lib/x86_64-linux-gnu/libz.so.1")
    if not libz.exists():
        pytest.skip("the system zlib is not installed")
    return shared("zuser", deps=[libz])


@pytest.fixture(scope="session")
def unique_pair() -> tuple[Path, Path]:
    if not have_cc("gcc", lang="c++"):
        pytest.skip("no C++ compiler (g++)")
    text = (FIXTURES / "unique.cpp").read_text()
    return tuple(build_shared(f"unique{i}", {f"unique{i}.cpp": text}, lang="c++",
                              cflags=[f"-DUNIQUE_FN=unique_addr{i}"], group="linker")
                 for i in (1, 2))  # type: ignore[return-value]


@pytest.fixture(scope="session")
def cycle() -> Path:
    """libcyc_a.so needs libcyc_b.so, which needs libcyc_a.so."""
    first = shared("cyc_a", soname="libcyc_a.so", group="linker-cyc0")
    b = shared("cyc_b", deps=[first], soname="libcyc_b.so", group="linker-cyc",
               ldflags=RUNPATH)
    return shared("cyc_a", deps=[b], soname="libcyc_a.so", group="linker-cyc",
                  cflags=["-DWITH_B"], ldflags=RUNPATH)
