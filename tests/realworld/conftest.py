"""pytest fixtures of tests/realworld (helpers live in realhelp.py)."""

from __future__ import annotations

from realhelp import how  # noqa: F401 (re-exported as fixtures)
