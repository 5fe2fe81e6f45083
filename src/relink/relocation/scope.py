"""Symbol resolution rules: which provider a module's symbol reference binds to.

Relocation layer. Follows the gABI and ld.so as Relink does (design.md §4):
a defined STB_LOCAL / hidden / protected symbol binds to its own module; with
DT_SYMBOLIC the module itself is searched first; otherwise the scope is searched in
order (global scope, then the load group breadth-first, which contains the module
itself), then the process's host scope. A weak undefined symbol that nothing defines
resolves to 0. ``STB_GNU_UNIQUE`` definitions are made canonical through a registry
shared by the whole context. Results are cached per symbol index for one module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from relink.elf.symbols import (
    SHN_UNDEF,
    STB_GNU_UNIQUE,
    STB_LOCAL,
    STB_WEAK,
    STT_GNU_IFUNC,
    STV_DEFAULT,
)
from relink.errors import RelocationError, UnknownSymbolError
from relink.runtime.host import HostLibrary
from relink.state import ModuleState

__all__ = ["Binder", "Binding"]

Binding = tuple[int, int, int, Any]  # (address, size, STT type, provider or None)
ScopeFacts = tuple["tuple[Any, ...] | None", list[int]]  # (plan key, provider biases)


def _tname(mod: ModuleState, r_type: int) -> str:
    return mod.image.spec.rtype_name(r_type)


class Binder:
    """Resolves the symbol references of one module against a scope.

    Args:
        module: the referencing module.
        scope: providers to search, in order (must include `module` where it belongs).
        unique: the context's GNU_UNIQUE registry (name -> binding).
        interpose: name -> address overriding every other definition.
        on_bind: observer called as ``on_bind(module, sym_index, name, binding)`` and
            returning the binding to use (may replace it); None for no observer.
    """

    # No __slots__ (a binder lives for one load): what only a replayed plan sets has a
    # class-level default instead of a store per binder.
    # A replayed plan (sym -> (position, value, size, type)) and, per position, the
    # provider and the base its values are relative to (position -1: unresolved
    # weak, -2: the module itself).
    plan: dict[int, tuple[int, int, int, int]] | None = None
    plan_bases: Sequence[int] = ()
    _provs: Sequence[Any] = ()  # plan position -> provider (made when first needed)
    _plan_key: tuple[Any, ...] | None = None
    _unique_hit = False
    # Bound to another module's IFUNC: the resolver's answer may lie outside that module
    # (another module, the host), so it is no value relative to the provider's bias.
    _ifunc_hit = False

    def __init__(self, module: ModuleState, scope: Sequence[Any], *,
                 unique: dict[str, Binding] | None = None,
                 interpose: dict[str, int] | None = None,
                 on_bind: Callable[[ModuleState, int, str, Binding], Binding] | None = None,
                 scope_facts: ScopeFacts | None = None) -> None:
        self.module = module
        self.scope = list(scope)
        # `scope_facts(scope)` computed by the caller once for every module of a load
        # that shares this scope (else computed here when a plan is looked up).
        self._facts = scope_facts
        self.unique = unique if unique is not None else {}
        self.interpose = interpose
        self.on_bind = on_bind
        self.cache: dict[int, Binding] = {}
        self.used: dict[int, Any] = {}  # id(provider) -> provider actually bound to

    # -- binding plans: resolutions replayed on the next load of the same files --------

    @staticmethod
    def scope_facts(scope: Sequence[Any]) -> ScopeFacts:
        """(plan key, load biases) of a scope: what resolutions through it depend on
        (None when they must not be replayed) and each provider's bias (0: absolute)."""
        parts: list[Any] | None = []
        bases: list[int] = []
        for prov in scope:
            if isinstance(prov, ModuleState):
                parsed = prov.image.parsed
                if parsed is None or not parsed.complete:
                    parts = None
                elif parts is not None:
                    parts.append(parsed)
                bases.append(prov.image.base)
                continue
            if parts is not None:
                if type(prov).__name__ in ("HostLibrary", "ProcessHost"):
                    parts.append(prov)  # process-wide and never unloaded
                else:
                    parts = None  # synthetic modules and unknown providers may change
            bases.append(0)
        return (tuple(parts) if parts is not None else None), bases

    def prime(self) -> None:
        """Fill the cache from a plan recorded by an earlier load with the same scope."""
        parsed = self.module.image.parsed
        # Resolutions through an interposer or an observer are never replayed.
        if parsed is None or not parsed.complete or self.interpose is not None or \
                self.on_bind is not None:
            return
        facts = self._facts
        if facts is None:
            facts = self._facts = Binder.scope_facts(self.scope)
        key = facts[0]  # what the resolutions depend on (None: must not be replayed)
        if key is None:
            return
        self._plan_key = key
        stored = parsed.bind_plans.get(key)
        if stored is None:
            return
        # Entries become bindings on first use (bind), not all up front; a reload that
        # replays a relocation program binds nothing at all.
        self.plan, used_at = stored
        me = self.module
        self.plan_bases = [*facts[1], me.image.base, 0]
        # The scope positions the plan binds to, ascending; map/zip keep the per-provider
        # work out of the bytecode. The module itself is never recorded as used (a file
        # loaded twice could put this module at a position the plan recorded for the
        # other copy: dropped after).
        provs = list(map(self.scope.__getitem__, used_at))
        used = self.used
        used.update(zip(map(id, provs), provs))
        if id(me) in used:
            del used[id(me)]

    def remember(self) -> None:
        """Record this module's resolutions for the next load of the same files."""
        key = self._plan_key
        if key is None or self._unique_hit or self._ifunc_hit:
            return
        parsed = self.module.image.parsed
        if parsed is None or key in parsed.bind_plans:
            return
        positions = {id(p): i for i, p in enumerate(self.scope)}
        plan: dict[int, tuple[int, int, int, int]] = {}
        for sym, (addr, size, stype, prov) in self.cache.items():
            if prov is None:
                if addr:
                    return  # an address from nowhere (cannot happen without interpose)
                plan[sym] = (-1, 0, 0, 0)
                continue
            pos = -2 if prov is self.module else positions.get(id(prov))
            if pos is None:
                return
            value = addr - prov.base if isinstance(prov, ModuleState) else addr
            plan[sym] = (pos, value, size, stype)
        if len(parsed.bind_plans) < 8:
            used_at = sorted({p for p, _, _, _ in plan.values() if p >= 0})
            parsed.bind_plans[key] = (plan, tuple(used_at))

    def bind(self, sym: int, r_type: int, offset: int) -> Binding:
        """The definition symbol `sym` of the module binds to (cached).

        `r_type` and `offset` only feed error messages.
        """
        found = self.cache.get(sym)
        if found is None and self.plan is not None:
            entry = self.plan.get(sym)
            if entry is not None:
                pos, value, size, stype = entry
                provs = self._provs
                if not provs:  # made on the first plan binding (a program needs none)
                    provs = self._provs = [*self.scope, self.module, None]
                found = self.cache[sym] = (value + self.plan_bases[pos], size, stype,
                                           provs[pos])
                return found
        if found is None:
            found = self._resolve(sym, r_type, offset)
            if self.on_bind is not None:
                syms = self.module.image.symbols
                name = syms.names[sym] if syms is not None else ""
                found = self.on_bind(self.module, sym, name, found)
            self.cache[sym] = found
            prov = found[3]
            if prov is not None and prov is not self.module:
                self.used[id(prov)] = prov
        return found

    def _resolve(self, sym: int, r_type: int, offset: int) -> Binding:
        mod = self.module
        syms = mod.image.symbols
        label = mod.image.label
        if syms is None or sym >= syms.count:
            raise RelocationError(
                f"symbol index {sym} is out of range "
                f"({syms.count if syms else 0} symbols)", file=label,
                r_type=r_type, r_type_name=_tname(mod, r_type), offset=offset)
        name = syms.names[sym]
        info = syms.infos[sym]
        bind = info >> 4
        vis = syms.others[sym] & 3
        defined = syms.shndx[sym] != SHN_UNDEF
        if self.interpose is not None and name in self.interpose:
            return self.interpose[name], 0, 2, None
        if defined and (bind == STB_LOCAL or vis != STV_DEFAULT):
            return (mod.address_of_index(sym), syms.sizes[sym], info & 0xF, mod)
        if not defined and vis != STV_DEFAULT:
            raise UnknownSymbolError(file=label, r_type=r_type,
                                     r_type_name=_tname(mod, r_type), symbol=name,
                                     offset=offset, searched=["<hidden reference>"])
        req = syms.versions.requirement(sym)
        version = req[0] if req else None
        exact = req[2] if req else False
        order = self.scope
        if mod.image.dynamic is not None and mod.image.dynamic.symbolic and defined:
            order = [mod, *order]
        for prov in order:
            if version is None and isinstance(prov, ModuleState | HostLibrary):
                found = prov.lookup_reference(name)  # ld.so's rule for unversioned refs
            else:
                found = prov.lookup(name, version, exact)
            if found is not None:
                addr, size, stype = found
                if stype == STT_GNU_IFUNC and not getattr(prov, "is_host", False) and \
                        prov is not mod:
                    # Another module's resolver: that module is relocated and protected.
                    # Our own IFUNCs stay unresolved (type kept): the loop defers them
                    # until this module's code is executable.
                    addr = prov.resolve_ifunc(addr)
                    stype = 2
                    self._ifunc_hit = True
                binding = (addr, size, stype, prov)
                if self._is_unique(prov, name, version):
                    self._unique_hit = True
                    binding = self.unique.setdefault(name, binding)
                return binding
        if bind == STB_WEAK:
            return 0, 0, 0, None
        raise UnknownSymbolError(file=label, r_type=r_type, r_type_name=_tname(mod, r_type),
                                 symbol=name, offset=offset,
                                 searched=[p.name for p in order], version=version)

    @staticmethod
    def _is_unique(prov: Any, name: str, version: str | None) -> bool:
        if getattr(prov, "is_host", True) or not isinstance(prov, ModuleState):
            return False
        syms = prov.image.symbols
        if syms is None:
            return False
        i = syms.find(name, version)
        return i is not None and syms.infos[i] >> 4 == STB_GNU_UNIQUE
