"""Linkers given no host policy share one default `HostPolicy` (its per-name verdicts are
decided once per process), so a policy is read-only once made: changing one linker's
policy must not be possible, nor leak into every other load."""

from __future__ import annotations

import pytest

import relink
from relink.runtime.host import HostPolicy


def test_default_policy_is_shared_and_read_only() -> None:
    a, b = relink.Linker(), relink.Linker()
    assert a.host is b.host
    with pytest.raises(AttributeError):
        a.host.exclude = ("libz*",)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.host.serve_loaded = False  # type: ignore[misc]
    assert a.host.exclude == () and a.host.serve_loaded


def test_an_explicit_policy_stays_the_linkers_own() -> None:
    mine = HostPolicy(exclude=("libz.so.*",))
    linker = relink.Linker(host=mine)
    assert linker.host is mine and relink.Linker().host is not mine
    assert mine.provides("libz.so.1") is None  # excluded: relink loads it itself
