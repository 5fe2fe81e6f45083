"""Shared pytest configuration: fixtures compiled at test time live in tests/support."""

from __future__ import annotations

import pytest

from support.build import have_cc


@pytest.fixture(autouse=True)
def _wx_audit() -> object:
    """W^X audit (issue 9): every load in the suite is checked against /proc/self/maps.

    No page of a relink-loaded module may be writable and executable unless the file asks
    for it (a warning is logged then), and RELRO pages must be read-only — checked when a
    load finishes its protections and again, for modules still mapped, after the test.
    See tests/robustness/wx_audit.py.
    """
    from robustness import wx_audit

    wx_audit.install()
    wx_audit.take()
    yield
    wx_audit.recheck_live()
    problems = wx_audit.take()
    if problems:
        pytest.fail("W^X audit: " + "; ".join(problems[:5]), pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if have_cc("gcc"):
        return
    skip = pytest.mark.skip(reason="no C compiler (gcc) on this machine")
    for item in items:
        if "needs_cc" in item.keywords:
            item.add_marker(skip)
