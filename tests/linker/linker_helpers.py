"""Helpers shared by the linker tests (fixture builders, /proc inspection)."""

from __future__ import annotations

import os
from pathlib import Path

from support.build import build_shared

FIXTURES = Path(__file__).parent / "fixtures"
RUNPATH = ["-Wl,-rpath,$ORIGIN", "-Wl,--enable-new-dtags"]


def shared(name: str, file: str | None = None, group: str = "linker", **kw: object) -> Path:
    """Build fixtures/<file or name>.c into lib<name>.so in `group` (cached)."""
    text = (FIXTURES / f"{file or name}.c").read_text()
    return build_shared(name, {f"{name}.c": text}, group=group, **kw)  # type: ignore[arg-type]


def traced(name: str, deps: list[Path], fail: bool = False) -> Path:
    """libtraced_<name>.so: constructor/destructor call trace("init:<name>") etc."""
    # --no-as-needed: the DT_NEEDED on `deps` must stay although no symbol is used.
    flags = [f'-DNAME="{name}"', "-Wl,--no-as-needed"] + (["-DFAIL"] if fail else [])
    return shared(f"traced_{name}", "traced", deps=deps, cflags=flags,
                  ldflags=RUNPATH,
                   soname=f"libtraced_{name}.so")


def maps_lines(needle: str) -> list[str]:
    """Lines of /proc/self/maps mentioning `needle`."""
    with open("/proc/self/maps") as f:
        return [line for line in f if needle in line]


def open_fds() -> dict[int, str]:
    """fd -> target of every open fd of this process."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out
