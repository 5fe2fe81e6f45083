"""Symbol versioning tables: DT_VERSYM, DT_VERDEF and DT_VERNEED.

Elf layer. Tables are followed through their ``vd_next`` / ``vn_next`` links (not their
counts, which tools get wrong), with a hard cap and bounds checks, so a loop or a
dangling offset is an `ElfParseError`.
"""

from __future__ import annotations

import struct

from relink._record import FrozenRecord, Record
from relink.elf.dynamic import DynamicInfo, read_cstr
from relink.elf.view import AddressView
from relink.errors import ElfParseError

__all__ = ["VersionDef", "VersionInfo", "VersionNeed", "parse_versions"]

VER_FLG_BASE, VER_FLG_WEAK = 0x1, 0x2
_VERDEF = struct.Struct("<HHHHIII")
_VERDAUX = struct.Struct("<II")
_VERNEED = struct.Struct("<HHIII")
_VERNAUX = struct.Struct("<IHHII")
_MAX_ENTRIES = 65535


class VersionDef(FrozenRecord):
    """One version definition: index, flags, name and its parents' names."""

    __slots__ = ("index", "flags", "name", "parents")
    index: int
    flags: int
    name: str
    parents: tuple[str, ...]

    def __init__(self, index: int, flags: int, name: str, parents: tuple[str, ...] = ()) -> None:
        self._set(index, flags, name, parents)


class VersionNeed(FrozenRecord):
    """One version requirement: the file that must provide it, its name and index."""

    __slots__ = ("file", "name", "index", "flags")
    file: str
    name: str
    index: int
    flags: int

    def __init__(self, file: str, name: str, index: int, flags: int) -> None:
        self._set(file, name, index, flags)


class VersionInfo(Record):
    """Parsed version tables of one module.

    Attributes:
        versym: per-symbol version index (bit 15 = hidden), or None if no DT_VERSYM.
        definitions: every VersionDef, in table order.
        needs: every VersionNeed, in table order.
        def_names: version index -> name, for definitions.
        need_names: version index -> (name, file), for requirements.
    """

    __slots__ = ("versym", "definitions", "needs", "def_names", "need_names")

    def __init__(self, versym: list[int] | None = None,
                 definitions: list[VersionDef] | None = None,
                 needs: list[VersionNeed] | None = None, def_names: dict[int, str] | None = None,
                 need_names: dict[int, tuple[str, str]] | None = None) -> None:
        self.versym = versym
        self.definitions = [] if definitions is None else definitions
        self.needs = [] if needs is None else needs
        self.def_names = {} if def_names is None else def_names
        self.need_names = {} if need_names is None else need_names

    def requirement(self, sym_index: int) -> tuple[str, str, bool] | None:
        """The (version, file, hidden) a reference by symbol `sym_index` requires."""
        if self.versym is None or sym_index >= len(self.versym):
            return None
        ver = self.versym[sym_index]
        ndx = ver & 0x7FFF
        if ndx < 2:
            return None
        need = self.need_names.get(ndx)
        if need is not None:
            return need[0], need[1], bool(ver & 0x8000)
        name = self.def_names.get(ndx)
        if name is not None:  # a self-reference to one of our own versions
            return name, "", bool(ver & 0x8000)
        return None


def parse_versions(view: AddressView, dyn: DynamicInfo, nsyms: int) -> VersionInfo:
    """Decode the version tables named by `dyn` (empty `VersionInfo` if there are none)."""
    info = VersionInfo()
    label = view.label
    if dyn.versym and nsyms:
        info.versym = view.get(dyn.versym, nsyms * 2, "version symbol table").cast(
            "H").tolist()
    strings = dyn.strings
    if (dyn.verdef or dyn.verneed) and strings is None:
        raise ElfParseError("version tables without a string table", file=label,
                            what="version tables")
    if dyn.verdef:
        assert strings is not None
        what = "version definitions"
        addr = dyn.verdef
        for _ in range(_MAX_ENTRIES):
            (vd_version, flags, ndx, cnt, _hash, aux, nxt) = _VERDEF.unpack(
                view.get(addr, _VERDEF.size, what))
            if vd_version != 1:
                raise ElfParseError(f"unsupported vd_version {vd_version}", file=label,
                                    what=what, offset=addr)
            names = []
            aux_addr = addr + aux
            for _ in range(min(cnt, _MAX_ENTRIES)):
                vda_name, vda_next = _VERDAUX.unpack(view.get(aux_addr, _VERDAUX.size, what))
                names.append(read_cstr(strings, vda_name, label, what))
                if not vda_next:
                    break
                aux_addr += vda_next
            if names:
                info.definitions.append(VersionDef(ndx, flags, names[0], tuple(names[1:])))
                info.def_names[ndx] = names[0]
            if not nxt:
                break
            addr += nxt
        else:
            raise ElfParseError("version definition chain does not end", file=label, what=what)
    if dyn.verneed:
        assert strings is not None
        what = "version requirements"
        addr = dyn.verneed
        for _ in range(_MAX_ENTRIES):
            vn_version, cnt, vn_file, aux, nxt = _VERNEED.unpack(
                view.get(addr, _VERNEED.size, what))
            if vn_version != 1:
                raise ElfParseError(f"unsupported vn_version {vn_version}", file=label,
                                    what=what, offset=addr)
            file = read_cstr(strings, vn_file, label, what)
            aux_addr = addr + aux
            for _ in range(min(cnt, _MAX_ENTRIES)):
                _h, flags, other, vna_name, vna_next = _VERNAUX.unpack(
                    view.get(aux_addr, _VERNAUX.size, what))
                name = read_cstr(strings, vna_name, label, what)
                info.needs.append(VersionNeed(file, name, other, flags))
                info.need_names[other] = (name, file)
                if not vna_next:
                    break
                aux_addr += vna_next
            if not nxt:
                break
            addr += nxt
        else:
            raise ElfParseError("version requirement chain does not end", file=label,
                                what=what)
    return info
