"""Architecture specs: per-ISA data that drives the one generic relocation loop.

Arch layer of the pipeline. An `ArchSpec` maps relocation type numbers to generic
classes (`RelocClass`: RELATIVE, GLOB_DAT, JUMP_SLOT, COPY, TLS…) as musl and Relink do,
so `relocation/dynamic.py` does one dict lookup per entry and never branches on the
architecture. Specs are registered by ``(e_machine, ELF class)`` because RISC-V 32 and 64
share one machine number. Every spec module imports on any host; nothing here touches
the host CPU.
"""

from __future__ import annotations

import os
import struct
from enum import IntEnum

from relink._record import FrozenRecord

__all__ = ["ArchSpec", "FieldSpec", "RelocClass", "host_spec", "register", "rtype_name",
           "spec_for", "spec_named", "specs"]


class RelocClass(IntEnum):
    """Generic classes of dynamic relocations (musl's REL_* classes)."""

    NONE = 0
    RELATIVE = 1      # B + A
    SYMBOLIC = 2      # S + A, word-sized
    GLOB_DAT = 3      # S (+ A on RELA ISAs)
    JUMP_SLOT = 4     # S (+ A on RELA ISAs)
    IRELATIVE = 5     # resolver(B + A)()
    COPY = 6          # memcpy(P, S, size)
    DTPMOD = 7        # TLS module id
    DTPOFF = 8        # offset in the TLS block (S + A - dtv offset)
    TPOFF = 9         # offset from the thread pointer (static TLS)
    TLSDESC = 10      # TLS descriptor (function + argument)
    FIELD = 11        # a sized field (text relocations): see ArchSpec.fields


class FieldSpec(FrozenRecord):
    """A sized, possibly PC-relative field: value = S + A (- P when pcrel)."""

    __slots__ = ("width", "pcrel", "signed")
    width: int        # bytes
    pcrel: bool
    signed: bool      # overflow check as signed (True) or unsigned (False)

    def __init__(self, width: int, pcrel: bool, signed: bool) -> None:
        self._set(width, pcrel, signed)


class ArchSpec(FrozenRecord):
    """Everything the generic loader needs to know about one ISA and ELF class.

    Attributes:
        name: short name (``"x86_64"``, ``"aarch64"``, ``"riscv64"`` …).
        e_machine, elf_class: the registry key.
        is_rela: the ISA's dynamic relocations carry explicit addends.
        classes: relocation type number -> RelocClass.
        fields: for FIELD-class types, their width/pc-relative/signedness.
        tls_variant: 1 (TLS block after the TCB: arm, aarch64, riscv, loongarch) or 2
            (before the thread pointer: x86, x86_64).
        tls_dtv_offset: value subtracted in DTPOFF (0x800 on RISC-V).
        zig_target: the ``zig cc -target`` triple used to build test fixtures.
        unicorn: (arch, mode) names of the unicorn constants, or None.
    """

    __slots__ = ("name", "e_machine", "elf_class", "is_rela", "classes", "fields",
                 "tls_variant", "tls_dtv_offset", "zig_target", "unicorn")
    name: str
    e_machine: int
    elf_class: int
    is_rela: bool
    classes: dict[int, RelocClass]
    fields: dict[int, FieldSpec]
    tls_variant: int
    tls_dtv_offset: int
    zig_target: str
    unicorn: tuple[str, str] | None

    def __init__(self, name: str, e_machine: int, elf_class: int, is_rela: bool,
                 classes: dict[int, RelocClass], fields: dict[int, FieldSpec] | None = None,
                 tls_variant: int = 2, tls_dtv_offset: int = 0, zig_target: str = "",
                 unicorn: tuple[str, str] | None = None) -> None:
        self._set(name, e_machine, elf_class, is_rela, classes,
                  {} if fields is None else fields, tls_variant, tls_dtv_offset, zig_target,
                  unicorn)

    @property
    def word_size(self) -> int:
        return self.elf_class // 8

    @property
    def is_host(self) -> bool:
        """True when images of this spec can run in this process."""
        return self is host_spec()

    def rtype_name(self, r_type: int) -> str:
        return rtype_name(self.e_machine, r_type)


_REGISTRY: dict[tuple[int, int], ArchSpec] = {}
_BY_NAME: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    """Add a spec to the registry (keyed by (e_machine, elf_class) and by name)."""
    _REGISTRY[(spec.e_machine, spec.elf_class)] = spec
    _BY_NAME[spec.name] = spec
    return spec


_FOREIGN_LOADED: list[bool] = []


def _load_builtin(*, foreign: bool = True) -> None:
    # x86_64 is the host's spec and cheap to import; the other ISAs' modules (and the
    # relocation-name tables they use) load only when a foreign file or name asks.
    if not _REGISTRY:
        from relink.arch import x86_64  # noqa: F401
    if foreign and not _FOREIGN_LOADED:
        _FOREIGN_LOADED.append(True)
        try:
            from relink.arch import foreign as _foreign  # noqa: F401
        except ImportError:
            pass


def spec_for(e_machine: int, elf_class: int) -> ArchSpec | None:
    """The registered spec for a machine and class, or None."""
    _load_builtin(foreign=False)
    spec = _REGISTRY.get((e_machine, elf_class))
    if spec is None and not _FOREIGN_LOADED:
        _load_builtin()
        spec = _REGISTRY.get((e_machine, elf_class))
    return spec


def spec_named(name: str) -> ArchSpec | None:
    """The registered spec called `name` (``"x86_64"``, ``"aarch64"`` …), or None."""
    _load_builtin(foreign=False)
    spec = _BY_NAME.get(name)
    if spec is None and not _FOREIGN_LOADED:
        _load_builtin()
        spec = _BY_NAME.get(name)
    return spec


def specs() -> list[ArchSpec]:
    """All registered specs."""
    _load_builtin()
    return list(_REGISTRY.values())


_HOST: list[ArchSpec | None] = []


def host_spec() -> ArchSpec | None:
    """The spec of the machine this Python runs on (None if relink has none for it)."""
    if not _HOST:
        machine = os.uname().machine.lower()  # platform.machine(), without platform
        bits = 8 * struct.calcsize("P")
        name = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64",
                "arm64": "aarch64", "riscv64": "riscv64", "loongarch64": "loongarch64",
                "i686": "x86", "i386": "x86"}.get(machine, machine)
        if name == "x86_64" and bits == 32:
            name = "x86"
        _HOST.append(spec_named(name))
    return _HOST[0]


def rtype_name(e_machine: int, r_type: int) -> str:
    """The ABI name of a relocation type (``R_X86_64_GLOB_DAT``), never raising."""
    try:
        from relink.arch.rtypes import rtype_name as _name
    except ImportError:  # pragma: no cover - the tables are part of the package
        return f"relocation type {r_type}"
    return _name(e_machine, r_type)
