"""Observers: user hooks into every step of a link (relink-study §1.8, §1.16).

Linker layer. An observer is any object with some of the methods below; `Observer` is a
base class whose methods are all no-ops, so a subclass overrides only what it needs.
Several observers may be attached to a `Linker` (or one load); they are called in the
order given. The linker installs a hook into the relocation loop only when at least one
attached observer *overrides* the corresponding method, so a load without observers
pays nothing for the feature.

Hooks (all receive one mutable event object):

* ``on_before_load(BeforeLoadEvent)`` - before a file is mapped: inspect the header,
  ``replace()`` the bytes, rename, or ``veto()`` the load (any exception aborts it).
* ``on_relocation(LinkerRelocationEvent)`` - before a module is relocated, in the order
  the linker relocates (dependencies first); may edit ``scope``.
* ``on_relocation_pre(RelocationEvent)`` - before built-in handling of each symbol /
  non-RELATIVE relocation; ``handle(value)`` writes the value and skips the built-in
  work, ``redirect(address)`` changes the symbol's address for this relocation.
* ``on_relocation_post(RelocationEvent)`` - only when built-in handling failed (unknown
  symbol, unsupported type); ``handle(value)`` rescues it, else the error is raised.
  For an unknown symbol, ``value`` is the symbol's address (used as S everywhere the
  module references that symbol).
* ``on_symbol_binding(SymbolBindingEvent)`` - each symbol binding; may override the
  address (``set_address``) or force it unresolved (``clear``).
* ``on_relocated(RelocatedEvent)`` - after a module is relocated, before it is
  initialized; may edit ``init_funcs`` / ``fini_funcs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from relink.errors import LinkerError

__all__ = [
    "BeforeLoadEvent",
    "LinkerObserver",
    "LinkerRelocationEvent",
    "LoadObserver",
    "LoadVetoedError",
    "Observer",
    "RelocatedEvent",
    "RelocationEvent",
    "RelocationObserver",
    "SymbolBindingEvent",
]


class LoadVetoedError(LinkerError):
    """An observer refused a load (`BeforeLoadEvent.veto`).

    Attributes:
        reason: what the observer said.
    """

    def __init__(self, reason: str, *, file: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"load vetoed by an observer: {reason}", file=file)


class BeforeLoadEvent:
    """A file about to be mapped.

    Attributes:
        name: the module name (editable; becomes the module's name).
        path: its path, None for bytes.
        needed_by: the name of the module whose DT_NEEDED asked for it (None for a root).
        header: the parsed `ElfHeader`.
        source: the `ElfSource` that will be mapped.
    """

    def __init__(self, name: str, path: str | None, needed_by: str | None, header: Any,
                 source: Any) -> None:
        self.name = name
        self.path = path
        self.needed_by = needed_by
        self.header = header
        self.source = source
        self.replacement: Any = None

    @property
    def size(self) -> int:
        return int(self.source.size)

    def data(self) -> bytes:
        """The whole file's bytes."""
        return bytes(self.source.data)

    def replace(self, data: bytes | bytearray | memoryview) -> None:
        """Load these bytes instead of the file (the module keeps this event's name)."""
        self.replacement = bytes(data)

    def veto(self, reason: str) -> None:
        """Refuse the load: raises `LoadVetoedError` (the whole load rolls back)."""
        raise LoadVetoedError(reason, file=self.path or self.name)


class LinkerRelocationEvent:
    """A module about to be relocated by the linker.

    Attributes:
        module: the `Module` facade.
        order: its position in the relocation order (0 = first relocated).
        scope: providers searched for its symbols, in order (editable list).
    """

    def __init__(self, module: Any, order: int, scope: list[Any]) -> None:
        self.module = module
        self.order = order
        self.scope = scope

    @property
    def name(self) -> str:
        return str(self.module.name)


class RelocationEvent:
    """One relocation, seen before (pre) or after failed (post) built-in handling.

    Attributes:
        module: the `Module` facade of the module being relocated.
        r_type, r_type_name: the relocation type.
        offset: r_offset (link-time address of the place).
        place: runtime address of the place.
        addend: the addend (read from the place for REL).
        symbol: the referenced symbol's name ("" for none).
        scope: the providers the binder searches.
        error: (post only) the error built-in handling raised.
        value: the value to write, once `handle` was called.
    """

    def __init__(self, module: Any, r_type: int, r_type_name: str, offset: int, place: int,
                 addend: int, symbol: str, scope: Sequence[Any], binder: Any, sym: int,
                 error: BaseException | None = None) -> None:
        self.module = module
        self.r_type = r_type
        self.r_type_name = r_type_name
        self.offset = offset
        self.place = place
        self.addend = addend
        self.symbol = symbol
        self.scope = scope
        self.error = error
        self.value: int | None = None
        self.target: int | None = None
        self._binder = binder
        self._sym = sym

    def lookup(self) -> int | None:
        """Resolve the symbol through the normal rules (recording the binding, so the
        provider stays loaded); None when nothing defines it."""
        if not self._sym:
            return None
        try:
            return int(self._binder.bind(self._sym, self.r_type, self.offset)[0])
        except LinkerError:
            raise
        except Exception:
            return None

    def handle(self, value: int) -> None:
        """Write `value` at the place and skip built-in handling."""
        self.value = int(value)

    def redirect(self, address: int) -> None:
        """(pre only) use `address` as the symbol's value S for this relocation."""
        self.target = int(address)


class SymbolBindingEvent:
    """A symbol reference bound to a definition.

    Attributes:
        module: the referencing `Module` facade.
        symbol: the symbol name.
        address: the resolved address (None: resolved to nothing).
        provider: name of the module providing it (None for interposed / weak-zero).
    """

    def __init__(self, module: Any, symbol: str, address: int | None,
                 provider: str | None) -> None:
        self.module = module
        self.symbol = symbol
        self.address = address
        self.provider = provider
        self.changed = False

    def set_address(self, address: int) -> None:
        """Bind the reference to `address` instead."""
        self.address = int(address)
        self.changed = True

    def clear(self) -> None:
        """Treat the reference as resolved to nothing (an error unless it is weak)."""
        self.address = None
        self.changed = True


class RelocatedEvent:
    """A module relocated, not yet initialized.

    Attributes:
        module: its `Module` facade.
        base: its load bias.
        init_funcs: runtime addresses called at initialization, in order (editable).
        fini_funcs: runtime addresses called at finalization, in order (editable).
    """

    def __init__(self, module: Any, state: Any) -> None:
        self.module = module
        self.base = int(state.base)
        self.init_funcs: list[int] = state.init_funcs
        self.fini_funcs: list[int] = state.fini_funcs

    @property
    def name(self) -> str:
        return str(self.module.name)

    @property
    def path(self) -> str | None:
        return self.module.path


@runtime_checkable
class LoadObserver(Protocol):
    """Sees every file before it is mapped."""

    def on_before_load(self, event: BeforeLoadEvent) -> None:
        return None


@runtime_checkable
class RelocationObserver(Protocol):
    """Sees relocations and symbol bindings of every module of a load."""

    def on_relocation_pre(self, event: RelocationEvent) -> None:
        return None

    def on_relocation_post(self, event: RelocationEvent) -> None:
        return None

    def on_symbol_binding(self, event: SymbolBindingEvent) -> None:
        return None

    def on_relocated(self, event: RelocatedEvent) -> None:
        return None


@runtime_checkable
class LinkerObserver(Protocol):
    """Sees the linker's relocation order and may edit each module's scope."""

    def on_relocation(self, event: LinkerRelocationEvent) -> None:
        return None


class Observer(LoadObserver, RelocationObserver, LinkerObserver):
    """Base class with a no-op for every hook: override the ones you need."""


HOOKS = ("on_before_load", "on_relocation", "on_relocation_pre", "on_relocation_post",
         "on_symbol_binding", "on_relocated")


def implemented(observers: Sequence[Any], hook: str) -> list[Any]:
    """Bound methods for `hook` of the observers that really implement it.

    A method inherited unchanged from `Observer` (or one of the protocols) is a no-op
    and is left out, so the linker installs nothing for it.
    """
    out = []
    for obs in observers:
        meth = getattr(type(obs), hook, None)
        if meth is None:
            continue
        if any(getattr(base, hook, None) is meth
               for base in (LoadObserver, RelocationObserver, LinkerObserver)):
            continue
        out.append(getattr(obs, hook))
    return out
