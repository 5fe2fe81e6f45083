"""Helpers for relink.object tests: C sources in fixtures/, compiled at test time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from support.build import build_archive, build_object, build_shared, have_cc

FIXTURES = Path(__file__).parent / "fixtures"


def source(name: str) -> str:
    return (FIXTURES / name).read_text()


def obj(name: str, flags: Sequence[str] = ("-O2",), *, cc: str = "gcc",
        target: str | None = None, lang: str = "c", text: str | None = None) -> Path:
    """Compile fixtures/<name> (or `text`) to an object with `flags` (cached)."""
    stem = Path(name).stem
    tag = "_".join(f.strip("-").replace("=", "").replace(",", "") for f in flags) or "plain"
    src = text if text is not None else source(name)
    suffix = Path(name).suffix or (".cpp" if lang == "c++" else ".c")
    return build_object(f"{stem}-{tag}"[:120], {f"{stem}{suffix}": src}, cflags=list(flags),
                        cc=cc, target=target, lang=lang, group="object")


def archive(name: str, objects: Sequence[Path]) -> Path:
    return build_archive(name, objects, group="object")


def shared(name: str, src: str) -> Path:
    return build_shared(name, src, group="object", soname=f"lib{name}.so")


needs_gcc = pytest.mark.skipif(not have_cc("gcc"), reason="no gcc")
