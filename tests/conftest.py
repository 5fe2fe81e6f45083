"""Shared pytest configuration: fixtures compiled at test time live in tests/support."""

from __future__ import annotations

import pytest

from support.build import have_cc


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if have_cc("gcc"):
        return
    skip = pytest.mark.skip(reason="no C compiler (gcc) on this machine")
    for item in items:
        if "needs_cc" in item.keywords:
            item.add_marker(skip)
