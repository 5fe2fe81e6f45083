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


def dropped_version_pair() -> tuple[Path, Path]:
    """(consumer of foo@VER_1, the libverh.so it finds at run time, which defines VER_1 but
    has foo only at VER_2). A distinct soname: the host test dlopens that provider."""
    full = build_shared("verh", {"ver.c": _src("ver.c"), "ver.map": _src("ver.map")},
                        group="versions_h_full", soname="libverh.so",
                        ldflags=["-Wl,--version-script=ver.map"])
    dropped = build_shared("verh", {"ver2only.c": _src("ver2only.c"),
                                    "ver2only.map": _src("ver2only.map")},
                           group="versions_h2", soname="libverh.so",
                           ldflags=["-Wl,--version-script=ver2only.map"])
    user = build_shared("use_old_h", {"use_old.c": _src("use_old.c")},
                        group="versions_h_full", deps=[full], soname="libuse_old_h.so",
                        ldflags=[f"-Wl,-rpath,{dropped.parent}"])
    return user, dropped


def unversioned_host_pair() -> tuple[Path, Path]:
    """(consumer linked against an unversioned libhostver.so, the versioned libhostver.so
    it finds at run time); the host test dlopens the latter first."""
    full = build_shared("hostver", {"ver.c": _src("ver.c"), "ver.map": _src("ver.map")},
                        group="versions_hv_full", soname="libhostver.so",
                        ldflags=["-Wl,--version-script=ver.map"])
    plain = build_shared("hostver", {"plain.c": _src("plain.c")}, group="versions_hv_plain",
                         soname="libhostver.so")
    user = build_shared("use_hv", {"use_default.c": _src("use_default.c")},
                        group="versions_hv_plain", deps=[plain], soname="libuse_hv.so",
                        ldflags=[f"-Wl,-rpath,{full.parent}"])
    return user, full
