"""Fixtures of the symbol-versioning tests, compiled at test time (cached)."""

from __future__ import annotations

from pathlib import Path

from support.build import build_shared, group_dir

FIXTURES = Path(__file__).parent / "fixtures"


def _src(name: str) -> str:
    return (FIXTURES / name).read_text()


def provider(kind: str = "ver") -> Path:
    """libver.so: "ver" (foo@VER_1, foo@@VER_2), "ver3" (+ foo@@VER_3) or "plain"."""
    group = {"ver": "versions", "ver3": "versions_v3", "plain": "versions_plain"}[kind]
    files = {f"{kind}.c": _src(f"{kind}.c")}
    ldflags = []
    if kind != "plain":
        files[f"{kind}.map"] = _src(f"{kind}.map")
        ldflags = [f"-Wl,--version-script={kind}.map"]
    return build_shared("ver", files, group=group, soname="libver.so", ldflags=ldflags)


def consumer(name: str, source: str, against: str = "ver") -> Path:
    """lib<name>.so linked against provider(`against`), finding the VER_1/VER_2 libver.so
    of the "versions" group at run time (RUNPATH)."""
    prov = provider(against)
    runtime_dir = group_dir("versions")
    provider("ver")  # the one every consumer finds at run time
    group = {"ver": "versions", "ver3": "versions_v3", "plain": "versions_plain"}[against]
    return build_shared(name, {f"{source}": _src(source)}, group=group, deps=[prov],
                        soname=f"lib{name}.so", ldflags=[f"-Wl,-rpath,{runtime_dir}"])
