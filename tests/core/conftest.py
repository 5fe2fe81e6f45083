"""Fixtures of the core tests: small C libraries compiled at test time (cached)."""

from __future__ import annotations

from pathlib import Path

import pytest
from core_fixtures import shared

from support.build import build_shared


@pytest.fixture(scope="session")
def provider() -> Path:
    return shared("provider", soname="libprovider.so")


@pytest.fixture(scope="session")
def consumer(provider: Path) -> Path:
    return shared("consumer", deps=[provider], ldflags=["-Wl,-z,now", "-Wl,-rpath,$ORIGIN"])


@pytest.fixture(scope="session")
def defining() -> Path:
    return shared("defining", ldflags=["-Wl,-z,now"])


@pytest.fixture(scope="session")
def symbolic() -> Path:
    return shared("symbolic", "defining.c", ldflags=["-Wl,-z,now", "-Wl,-Bsymbolic"])


@pytest.fixture(scope="session")
def chain() -> Path:
    """The demo chain: returns the path of libleaf.so (deps beside it, $ORIGIN runpath)."""
    from relink.demo import CHAIN_SOURCES

    base = build_shared("base", {"base.c": CHAIN_SOURCES["base"]}, group="chain",
                        soname="libbase.so")
    middle = build_shared("middle", {"middle.c": CHAIN_SOURCES["middle"]}, group="chain",
                          soname="libmiddle.so", deps=[base], ldflags=["-Wl,-rpath,$ORIGIN"])
    return build_shared("leaf", {"leaf.c": CHAIN_SOURCES["leaf"]}, group="chain",
                        soname="libleaf.so", deps=[middle, base],
                        ldflags=["-Wl,-rpath,$ORIGIN"])
