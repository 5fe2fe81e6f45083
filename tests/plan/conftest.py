"""Fixtures for the scan-first planning tests: C libraries compiled at test time.

Mirrors Relink's tests/linker fixtures (provider / dependent / root built with
``--emit-relocs`` and ``-rpath $ORIGIN``; ``plain`` without retained relocations).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from plan_support import HERE

from support.build import build_shared, have_cc

EMIT = ["-Wl,--emit-relocs", "-Wl,-rpath,$ORIGIN"]


def _src(name: str) -> str:
    return (HERE / name).read_text()


@pytest.fixture(scope="session")
def libs() -> dict[str, Path]:
    if not have_cc("gcc"):
        pytest.skip("no C compiler (gcc)")
    provider = build_shared("provider", _src("provider.c"), cflags=["-O2"], ldflags=EMIT,
                            soname="libprovider.so", group="plan")
    dependent = build_shared("dependent", _src("dependent.c"), cflags=["-O2"], ldflags=EMIT,
                             deps=[provider], group="plan")
    root = build_shared("root", _src("root.c"), cflags=["-O2"], ldflags=EMIT,
                        deps=[dependent], group="plan")
    plain = build_shared("plain", _src("provider.c"), cflags=["-O2"], group="plan")
    rich = build_shared("rich", _src("rich.c"), cflags=["-O2", "-ffunction-sections"],
                        ldflags=EMIT, group="plan")
    norel = build_shared("norel", _src("norel.c"), cflags=["-O2"], ldflags=EMIT,
                         group="plan")
    throwing = build_shared("throwing", {"throwing.cc": _src("throwing.cc")}, lang="c++",
                            cflags=["-O2", "-ffunction-sections"], ldflags=EMIT, group="plan")
    return {"throwing": throwing, "norel": norel, "provider": provider,
            "dependent": dependent, "root": root, "plain": plain, "rich": rich}
