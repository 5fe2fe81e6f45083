"""Kernel-module-style objects (``.ko``): metadata, and relocation into a buffer.

A ``.ko`` is a relocatable object with kernel conventions: ``.modinfo`` (NUL-separated
``key=value`` strings: license, vermagic, depends, name…), ``__versions`` (the CRC of
every kernel symbol it was built against: ``struct modversion_info {unsigned long crc;
char name[56];}``), ``.gnu.linkonce.this_module`` (its ``struct module``, whose init and
exit pointers are relocations against ``init_module`` / ``cleanup_module``), and code
built with ``-mcmodel=kernel`` (sign-extended 32-bit absolute relocations against
addresses in the top 2 GiB). `load_kmod` relocates one into a `BufferMapper` at a
kernel-like address without executing anything — what a module-signing, inspection or
emulation tool needs — with unresolved kernel symbols supplied by a mapping (for
example `kallsyms`) or a hook. `.init.text` goes to the scratch group, as the kernel
frees it after init.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relink.elf.source import SourceLike, open_source
from relink.memory.buffer import BufferMapper
from relink.module import Module
from relink.object.parse import ObjectFile, parse_object

__all__ = ["KMOD_BASE", "KernelModuleInfo", "kallsyms", "kmod_info", "load_kmod"]

KMOD_BASE = 0xFFFFFFFFC0000000  # where x86_64 Linux puts modules (MODULES_VADDR)


@dataclass
class KernelModuleInfo:
    """What a ``.ko`` declares about itself.

    Attributes:
        modinfo: ``(key, value)`` pairs in file order (keys may repeat: alias, parm…).
        versions: ``(crc, symbol)`` pairs from ``__versions``.
        has_this_module: whether it carries ``.gnu.linkonce.this_module``.
        init / exit: names of the init and exit functions it defines, if any.
    """

    modinfo: list[tuple[str, str]] = field(default_factory=list)
    versions: list[tuple[int, str]] = field(default_factory=list)
    has_this_module: bool = False
    init: str | None = None
    exit: str | None = None

    def get(self, key: str) -> str | None:
        """The first value of `key` in ``.modinfo`` (``license``, ``vermagic`` …)."""
        return next((v for k, v in self.modinfo if k == key), None)

    @property
    def name(self) -> str | None:
        return self.get("name")

    @property
    def depends(self) -> list[str]:
        dep = self.get("depends")
        return [d for d in dep.split(",") if d] if dep else []


def _info(obj: ObjectFile) -> KernelModuleInfo:
    info = KernelModuleInfo(modinfo=obj.modinfo())
    sec = next((s for s in obj.sections if s.name == "__versions"), None)
    if sec is not None:
        data = obj.data(sec.index)
        for off in range(0, len(data) - 63, 64):
            (crc,) = struct.unpack_from("<Q", data, off)
            raw = data[off + 8:off + 64]
            info.versions.append((crc, raw.split(b"\0", 1)[0].decode("utf-8", "replace")))
    info.has_this_module = any(s.name == ".gnu.linkonce.this_module" for s in obj.sections)
    names = set(obj.sym_names)
    info.init = "init_module" if "init_module" in names else None
    info.exit = "cleanup_module" if "cleanup_module" in names else None
    return info


def kmod_info(source: SourceLike) -> KernelModuleInfo:
    """Read a ``.ko``'s metadata (nothing is mapped or relocated)."""
    src = open_source(source)
    try:
        return _info(parse_object(src))
    finally:
        src.close()


def kallsyms(path: str = "/proc/kallsyms") -> dict[str, int]:
    """Kernel symbol addresses from a kallsyms file (zeros when the kernel hides them)."""
    out: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.setdefault(parts[2], int(parts[0], 16))
    return out


def load_kmod(source: SourceLike, *, symbols: Mapping[str, int] | None = None,
              resolve: Callable[[str], int | None] | None = None,
              address: int = KMOD_BASE, mapper: Any = None, **kwargs: Any) -> Module:
    """Relocate a ``.ko`` into a buffer at `address` (nothing runs).

    Args:
        symbols: kernel symbol -> address (e.g. `kallsyms`).
        resolve: hook asked for names `symbols` lacks.
        address: where the module is relocated for (default: the x86_64 module area).
        mapper: the backend (default: a new `BufferMapper`).
        kwargs: passed on to `relink.load_object` (layout, groups, exports …).

    The returned Module's state carries ``kmod`` (a `KernelModuleInfo`) and
    ``modinfo``; ``module.symbol("init_module")`` is the relocated init function.
    """
    from relink.object.loader import load_object

    mapper = mapper if mapper is not None else BufferMapper(base=address)
    mod = load_object(source, mapper=mapper, symbols=dict(symbols or {}), resolve=resolve,
                      host=False, init=False, address=address, **kwargs)
    src = open_source(source) if not isinstance(source, (list, tuple)) else None
    if src is not None:
        try:
            mod._state.kmod = _info(parse_object(src))
        finally:
            src.close()
    return mod
