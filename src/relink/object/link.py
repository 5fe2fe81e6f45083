"""Symbol resolution for a link unit: several objects and archives linked together.

Resolve stage of `relink.object` (parse -> **link** -> layout -> relocate -> module).
A `LinkUnit` gathers the objects of one `load_object` call and applies the static
linker's rules, as GNU ld does for ``ld -r``-free final links:

* section groups: the first COMDAT group with a given signature wins; the members of
  later copies are discarded and their symbols become references to the winner;
* definitions: a strong (GLOBAL) definition beats a weak one; two strong definitions of
  one name are an error naming both files; COMMON symbols merge (largest size, largest
  alignment) and yield to any real definition;
* archives: while some strong reference is undefined, the first archive member that
  defines it is pulled in (all archives are searched repeatedly, like ``--start-group``),
  so member order and archive order never make a link fail that ld would accept;
* what stays undefined is resolved later by `resolve_external` from (in order) the
  explicit ``symbols`` mapping, the ``scope`` modules, the host process (native loads
  only) and the ``resolve`` hook; a weak reference nobody defines is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relink.errors import LinkerError, UnknownSymbolError
from relink.object.archive import Archive
from relink.object.parse import SHF_EXCLUDE, SHN_COMMON, SHN_UNDEF, ObjectFile

__all__ = ["Definition", "LinkUnit", "resolve_external"]

STB_LOCAL, STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE = 0, 1, 2, 10
STT_SECTION, STT_FILE, STT_TLS, STT_GNU_IFUNC = 3, 4, 6, 10
STV_DEFAULT = 0


@dataclass(slots=True)
class Definition:
    """Where a global name is defined inside the unit: object index and symbol index."""

    obj: int
    sym: int
    weak: bool


@dataclass(eq=False)
class LinkUnit:
    """Objects linked together, with their global symbol table.

    Attributes:
        objects: in link order (archive members appended when pulled).
        discarded: per object, the section indices dropped (COMDAT losers, SHF_EXCLUDE).
        defs: global name -> its winning definition.
        commons: name -> (size, alignment) of COMMON symbols without a real definition.
        undefined: name -> True if some reference to it is strong.
        external: name -> absolute address, filled by `resolve_external`.
        providers: name -> the provider object that supplied it (scope module, host…).
    """

    objects: list[ObjectFile] = field(default_factory=list)
    discarded: list[set[int]] = field(default_factory=list)
    defs: dict[str, Definition] = field(default_factory=dict)
    commons: dict[str, tuple[int, int]] = field(default_factory=dict)
    undefined: dict[str, bool] = field(default_factory=dict)
    external: dict[str, int] = field(default_factory=dict)
    external_types: dict[str, int] = field(default_factory=dict)
    external_sizes: dict[str, int] = field(default_factory=dict)
    providers: dict[str, Any] = field(default_factory=dict)
    signatures: dict[str, str] = field(default_factory=dict)
    wants_got: bool = False  # some object names _GLOBAL_OFFSET_TABLE_
    linker_symbols: dict[str, str] = field(default_factory=dict)  # name -> section or ""

    def add(self, obj: ObjectFile) -> None:
        """Add one object: settle its COMDAT groups, then register its symbols."""
        if self.objects and (obj.header.e_machine != self.objects[0].header.e_machine
                             or obj.header.elf_class != self.objects[0].header.elf_class):
            first = self.objects[0]
            raise LinkerError(f"cannot link {obj.spec.name} object with {first.spec.name} "
                              f"object {first.label}", file=obj.label)
        index = len(self.objects)
        self.objects.append(obj)
        dropped: set[int] = {s.index for s in obj.sections if s.sh_flags & SHF_EXCLUDE}
        for grp in obj.groups:
            dropped.add(grp.index)
            if not grp.comdat:
                continue
            if grp.signature in self.signatures:
                dropped.update(grp.members)
                for m in grp.members:
                    for rs in obj.relocs.get(m, []):
                        dropped.add(rs.index)
            else:
                self.signatures[grp.signature] = obj.label
        for sh in obj.sections:  # pre-group COMDAT: .gnu.linkonce.* sections, by name
            if sh.name.startswith(".gnu.linkonce.") and sh.sh_flags & 2:
                if sh.name in self.signatures and sh.index not in dropped:
                    dropped.add(sh.index)
                    dropped.update(rs.index for rs in obj.relocs.get(sh.index, []))
                else:
                    self.signatures.setdefault(sh.name, obj.label)
        self.discarded.append(dropped)
        for i in range(obj.first_global, len(obj.sym_names)):
            self._register(index, obj, i, dropped)
        # Local symbols never resolve across objects; nothing to register for them.

    def _register(self, index: int, obj: ObjectFile, i: int, dropped: set[int]) -> None:
        name = obj.sym_names[i]
        info = obj.sym_infos[i]
        bind, stype = info >> 4, info & 0xF
        if not name or bind == STB_LOCAL or stype in (STT_SECTION, STT_FILE):
            return
        shndx = obj.sym_shndx[i]
        if shndx == SHN_UNDEF or shndx in dropped:
            strong = bind != STB_WEAK
            self.undefined[name] = self.undefined.get(name, False) or strong
            return
        if shndx == SHN_COMMON:
            size, align = self.commons.get(name, (0, 1))
            self.commons[name] = (max(size, obj.sym_sizes[i]), max(align, obj.sym_values[i]))
            return
        weak = bind == STB_WEAK
        prev = self.defs.get(name)
        if prev is None or (prev.weak and not weak):
            self.defs[name] = Definition(index, i, weak)
        elif not weak and not prev.weak:
            other = self.objects[prev.obj].label
            raise LinkerError(f"multiple definition of '{name}' (first defined in {other})",
                              file=obj.label)

    def pull_archives(self, archives: Sequence[Archive]) -> None:
        """Add archive members that define strong undefined names, until none is left."""
        if not archives:
            return
        progress = True
        while progress:
            progress = False
            for name in [n for n, strong in self.undefined.items() if strong]:
                if name in self.defs:
                    continue
                for ar in archives:
                    member = ar.member_defining(name)
                    if member is not None and member not in self.objects:
                        self.add(member)
                        progress = True
                        break

    def claim_linker_symbols(self, got_symbol: str) -> None:
        """Take the names a linker defines itself out of `undefined`.

        ``_GLOBAL_OFFSET_TABLE_`` (the GOT base), ``__dso_handle`` (what C++ registers
        its static destructors under) and ``__start_X`` / ``__stop_X`` for an allocated
        section ``X`` whose name is a C identifier, as ld provides them.
        """
        names = {s.name for o in self.objects for s in o.sections if s.sh_flags & 2}
        for name in list(self.undefined):
            if name in self.defs or name in self.commons:
                continue
            if name == got_symbol:
                self.wants_got = True
            elif name == "__dso_handle":
                self.linker_symbols[name] = ""
            elif name.startswith(("__start_", "__stop_")):
                sec = name.split("_", 3)[-1]
                if sec not in names or not sec.isidentifier():
                    continue
                self.linker_symbols[name] = sec
            else:
                continue
            del self.undefined[name]

    def finish(self) -> None:
        """Drop names that ended up defined, and COMMONs that a real definition beat."""
        for name in list(self.commons):
            if name in self.defs:
                del self.commons[name]
        for name in list(self.undefined):
            if name in self.defs or name in self.commons:
                del self.undefined[name]


def _lookup_provider(prov: Any, name: str) -> tuple[int, int, int] | None:
    found = prov.lookup(name, None, False)
    if found is None:
        return None
    addr, size, stype = found
    if stype == STT_GNU_IFUNC and not getattr(prov, "is_host", False):
        addr = prov.resolve_ifunc(addr)
        stype = 2
    return addr, stype, size


def resolve_external(unit: LinkUnit, *, symbols: Mapping[str, int] | None,
                     scope: Sequence[Any], hosts: Sequence[Any],
                     resolve: Callable[[str], int | None] | None, label: str) -> None:
    """Give every still-undefined name an address, or raise `UnknownSymbolError`.

    Order: `symbols` (explicit), each `scope` provider, the `hosts` (the process, then
    host libraries such as libstdc++), the `resolve` hook; weak references that nothing
    defines become 0.
    """
    searched = (["symbols"] if symbols else []) + [getattr(p, "name", repr(p)) for p in scope]
    searched += [h.name for h in hosts]
    if resolve is not None:
        searched.append("resolve hook")
    for name, strong in unit.undefined.items():
        if symbols is not None and name in symbols:
            unit.external[name] = int(symbols[name])
            unit.external_sizes[name] = 0
            unit.providers[name] = "symbols"
            continue
        found = None
        for prov in scope:
            found = _lookup_provider(prov, name)
            if found is not None:
                unit.providers[name] = prov
                break
        for host in hosts:
            if found is not None:
                break
            found = _lookup_provider(host, name)
            if found is not None:
                unit.providers[name] = host
        if found is None and resolve is not None:
            addr = resolve(name)
            if addr is not None:
                found = (int(addr), 0, 0)
                unit.providers[name] = "resolve"
        if found is None:
            if strong:
                refs = [o.label for o in unit.objects
                        if name in {o.sym_names[i] for i in range(o.first_global,
                                                                  len(o.sym_names))}]
                raise UnknownSymbolError(file=refs[0] if refs else label,
                                         r_type_name="object symbol", symbol=name,
                                         searched=searched)
            found = (0, 0, 0)
        unit.external[name] = found[0]
        unit.external_types[name] = found[1]
        unit.external_sizes[name] = found[2]
