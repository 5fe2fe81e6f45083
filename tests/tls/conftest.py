"""pytest fixtures of tests/tls (helpers live in tlshelp.py)."""

from __future__ import annotations

from tlshelp import model  # noqa: F401 (re-exported as fixtures)
