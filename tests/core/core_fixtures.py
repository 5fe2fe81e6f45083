"""Helpers of the core tests: build fixtures/*.c into shared objects (cached)."""

from __future__ import annotations

from pathlib import Path

from support.build import build_shared

FIXTURES = Path(__file__).parent / "fixtures"


def src(name: str) -> str:
    return (FIXTURES / name).read_text()


def shared(name: str, file: str | None = None, **kw: object) -> Path:
    """Build fixtures/<file or name>.c into lib<name>.so in the 'core' group."""
    return build_shared(name, {f"{name}.c": src(file or f"{name}.c")}, group="core",
                        **kw)  # type: ignore[arg-type]


