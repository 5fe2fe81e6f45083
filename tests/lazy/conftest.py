"""Fixtures of the lazy-binding tests: a provider and consumers built -z lazy / -z now."""

from __future__ import annotations

from pathlib import Path

import pytest
from lazy_support import VECTOR_FLAGS

from support.build import build_shared

FIXTURES = Path(__file__).parent / "fixtures"


def src(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.fixture(scope="session")
def provider() -> Path:
    return build_shared("lazyprov", {"provider.c": src("provider.c")}, group="lazy",
                        soname="liblazyprov.so", cflags=["-O2", *VECTOR_FLAGS])


def _consumer(name: str, provider: Path, mode: str) -> Path:
    return build_shared(name, {"consumer.c": src("consumer.c")}, group="lazy",
                        soname=f"lib{name}.so", deps=[provider],
                        cflags=["-O2", *VECTOR_FLAGS],
                        ldflags=[f"-Wl,-z,{mode}", "-Wl,-z,relro", "-Wl,-rpath,$ORIGIN"])


@pytest.fixture(scope="session")
def consumer(provider: Path) -> Path:
    """Linked -z lazy -z relro: JUMP_SLOTs in .got.plt, outside PT_GNU_RELRO."""
    return _consumer("lazycons", provider, "lazy")


@pytest.fixture(scope="session")
def consumer_now(provider: Path) -> Path:
    """Linked -z now: DF_BIND_NOW, so even a lazy load binds it eagerly."""
    return _consumer("lazynow", provider, "now")


@pytest.fixture(scope="session")
def broken() -> Path:
    return build_shared("lazybroken", {"broken.c": src("broken.c")}, group="lazy",
                        ldflags=["-Wl,-z,lazy"])
