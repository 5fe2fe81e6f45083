"""Glue between observers and the relocation loop (installed only when used).

Linker layer. Turns the observer methods of `relink.observer` into the three low-level
hooks the relocation layer offers: the `Binder`'s ``on_bind`` callback and its
unknown-symbol path (a `Binder` subclass), and the loop's ``pre`` and ``fallback``
callbacks. `make_hooks` returns None for each hook no observer implements, so the
relocation loop runs exactly as without observers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from relink.arch import RelocClass
from relink.elf.relocs import RelocTable
from relink.elf.symbols import STB_WEAK
from relink.errors import UnknownSymbolError, UnsupportedError, UnsupportedRelocationError
from relink.observer import RelocationEvent, SymbolBindingEvent, implemented
from relink.relocation.scope import Binder, Binding
from relink.state import ModuleState

__all__ = ["ObservedBinder", "RelocationHooks", "make_hooks"]

Hook = Callable[[Any], None]


def _symname(state: ModuleState, sym: int) -> str:
    syms = state.image.symbols
    if sym and syms is not None and sym < syms.count:
        return str(syms.names[sym])
    return ""


def _addend(state: ModuleState, table: RelocTable, k: int) -> int:
    if table.addends is not None:
        return int(table.addends[k])
    image = state.image
    word = image.spec.word_size
    raw = image.region.read(image.base + table.offsets[k], word)
    return int(struct.unpack("<Q" if word == 8 else "<I", raw)[0])


class ObservedBinder(Binder):
    """A `Binder` that lets ``on_relocation_post`` observers rescue unknown symbols."""

    __slots__ = ("post", "facade")

    def __init__(self, module: ModuleState, scope: Sequence[Any], *, post: list[Hook],
                 facade: Any, **kw: Any) -> None:
        super().__init__(module, scope, **kw)
        self.post = post
        self.facade = facade

    def _resolve(self, sym: int, r_type: int, offset: int) -> Binding:
        try:
            return super()._resolve(sym, r_type, offset)
        except UnknownSymbolError as exc:
            name = self.module.image.spec.rtype_name(r_type) if isinstance(r_type, int) \
                else str(r_type)
            ev = RelocationEvent(self.facade, r_type if isinstance(r_type, int) else 0, name,
                                 offset,
                                 self.module.base + offset, 0, _symname(self.module, sym),
                                 self.scope, self, 0, error=exc)
            for hook in self.post:
                hook(ev)
                if ev.value is not None:
                    return ev.value, 0, 2, None
            raise


class RelocationHooks:
    """The hooks for one module: binder factory, ``pre`` and ``fallback`` callables."""

    def __init__(self, observers: Sequence[Any], facade: Any,
                 user_fallback: Callable[..., int | None] | None) -> None:
        self.facade = facade
        self.pre_hooks = implemented(observers, "on_relocation_pre")
        self.post_hooks = implemented(observers, "on_relocation_post")
        self.bind_hooks = implemented(observers, "on_symbol_binding")
        self.user_fallback = user_fallback
        self.binder: Binder | None = None

    def make_binder(self, module: ModuleState, scope: Sequence[Any], **kw: Any) -> Binder:
        if self.bind_hooks:
            kw["on_bind"] = self._on_bind
        if self.post_hooks:
            b: Binder = ObservedBinder(module, scope, post=self.post_hooks, facade=self.facade,
                                       **kw)
        else:
            b = Binder(module, scope, **kw)
        self.binder = b
        return b

    @property
    def pre(self) -> Callable[[ModuleState, RelocTable, int], int | None] | None:
        return self._pre if self.pre_hooks else None

    @property
    def fallback(self) -> Callable[[ModuleState, RelocTable, int], int | None] | None:
        if self.post_hooks:
            return self._fallback
        return self.user_fallback

    def _on_bind(self, module: ModuleState, sym: int, name: str, binding: Binding) -> Binding:
        prov = binding[3]
        ev = SymbolBindingEvent(self.facade, name,
                                binding[0] if (prov is not None or binding[0]) else None,
                                getattr(prov, "name", None))
        for hook in self.bind_hooks:
            hook(ev)
        if not ev.changed:
            return binding
        if ev.address is None:
            syms = module.image.symbols
            if syms is not None and syms.infos[sym] >> 4 == STB_WEAK:
                return 0, 0, 0, None
            raise UnknownSymbolError(file=module.image.label, symbol=name,
                                     searched=["<cleared by an observer>"])
        return ev.address, binding[1], binding[2], None

    def _event(self, state: ModuleState, table: RelocTable, k: int,
               error: BaseException | None = None) -> RelocationEvent:
        t = table.types[k]
        off = table.offsets[k]
        sym = table.syms[k]
        binder = self.binder
        return RelocationEvent(self.facade, t, state.image.spec.rtype_name(t), off,
                               state.base + off, _addend(state, table, k),
                               _symname(state, sym), binder.scope if binder else [],
                               binder, sym, error=error)

    def _pre(self, state: ModuleState, table: RelocTable, k: int) -> int | None:
        ev = self._event(state, table, k)
        for hook in self.pre_hooks:
            hook(ev)
            if ev.value is not None or ev.target is not None:
                break
        if ev.value is not None:
            return ev.value
        if ev.target is None:
            return None
        spec = state.image.spec
        c = spec.classes.get(ev.r_type)
        if c in (RelocClass.GLOB_DAT, RelocClass.JUMP_SLOT):
            return ev.target + (ev.addend if table.addends is not None else 0)
        if c is RelocClass.SYMBOLIC:
            return ev.target + ev.addend
        raise UnsupportedError(f"redirect() applies to word-sized symbol relocations "
                               f"(GLOB_DAT, JUMP_SLOT, absolute), not {ev.r_type_name}: "
                               "use handle(value)", file=state.image.label)

    def _fallback(self, state: ModuleState, table: RelocTable, k: int) -> int | None:
        if self.user_fallback is not None:
            value = self.user_fallback(state, table, k)
            if value is not None:
                return value
        t = table.types[k]
        err = UnsupportedRelocationError(file=state.image.label, r_type=t,
                                         r_type_name=state.image.spec.rtype_name(t),
                                         symbol=_symname(state, table.syms[k]) or None,
                                         offset=table.offsets[k])
        ev = self._event(state, table, k, error=err)
        for hook in self.post_hooks:
            hook(ev)
            if ev.value is not None:
                return ev.value
        return None


def make_hooks(observers: Sequence[Any], facade: Any,
               user_fallback: Callable[..., int | None] | None) -> RelocationHooks:
    return RelocationHooks(observers, facade, user_fallback)
