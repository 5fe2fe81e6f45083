"""Fixtures of the TLS tests: one TLS module per x86_64 TLS model, compiled at test time."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.build import build_shared

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = {
    "gd": ["-ftls-model=global-dynamic"],
    "ld": ["-ftls-model=local-dynamic"],
    "ie": ["-ftls-model=initial-exec"],
    "desc": ["-mtls-dialect=gnu2"],
}


def src(name: str) -> str:
    return (FIXTURES / name).read_text()


def tls_module(model: str) -> Path:
    """libtlsmod_<model>.so: fixtures/tlsmod.c built with that model's flags."""
    return build_shared(f"tlsmod_{model}", {"tlsmod.c": src("tlsmod.c")}, group="tls",
                        cflags=["-O2", *MODELS[model]], soname=f"libtlsmod_{model}.so")


def tls_user(model: str, provider: Path, tag: str) -> Path:
    """libtlsuser_<tag>.so: reads `counter` of `provider` with `model`'s code."""
    return build_shared(f"tlsuser_{tag}", {"tlsuser.c": src("tlsuser.c")}, group="tls",
                        cflags=["-O2", *MODELS[model]], deps=[provider],
                        soname=f"libtlsuser_{tag}.so", ldflags=["-Wl,-rpath,$ORIGIN"])


@pytest.fixture(scope="session", params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> str:
    return str(request.param)
