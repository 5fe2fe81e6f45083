"""Session fixtures of the foreign-ISA tests (helpers live in foreign_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from foreign_support import ALL_ISAS, EMULATED, HAVE_UNICORN, build_chain


@pytest.fixture(scope="session", params=ALL_ISAS)
def any_chain(request: pytest.FixtureRequest) -> tuple[str, dict[str, Path]]:
    return request.param, build_chain(request.param)


@pytest.fixture(scope="session", params=EMULATED)
def emu_chain(request: pytest.FixtureRequest) -> tuple[str, dict[str, Path]]:
    if not HAVE_UNICORN:
        pytest.skip("the unicorn package is not installed (pip install 'relink[emu]')")
    return request.param, build_chain(request.param)
