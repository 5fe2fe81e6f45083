"""Fixtures of the executable tests: one program built as PIE, ET_EXEC, static and
static-pie, plus COPY-relocation programs (compiled at test time, cached)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.build import build_executable, build_shared

FIXTURES = Path(__file__).parent / "fixtures"
KINDS = ("pie", "exec", "static", "static-pie")


def src(name: str) -> str:
    return (FIXTURES / name).read_text()


def program(kind: str) -> Path:
    return build_executable(f"prog-{kind}", {"prog.c": src("prog.c")}, group="exec",
                            pie=kind in ("pie", "static-pie"),
                            static=kind.startswith("static"), cflags=["-O1"])


@pytest.fixture(scope="session", params=KINDS)
def any_program(request: pytest.FixtureRequest) -> Path:
    return program(request.param)


@pytest.fixture(scope="session")
def pie() -> Path:
    return program("pie")


@pytest.fixture(scope="session")
def static_pie() -> Path:
    return program("static-pie")


@pytest.fixture(scope="session")
def exec_program() -> Path:
    return program("exec")


@pytest.fixture(scope="session")
def getopt_program() -> Path:
    return build_executable("getopt-exec", {"getopt.c": src("getopt.c")}, group="exec",
                            pie=False)


@pytest.fixture(scope="session")
def copy_program() -> Path:
    lib = build_shared("copyprov", {"copyprov.c": src("copyprov.c")}, group="exec",
                       soname="libcopyprov.so")
    return build_executable("copyuse", {"copyuse.c": src("copyuse.c")}, group="exec",
                            pie=False, deps=[lib], ldflags=["-Wl,-rpath,$ORIGIN"])
