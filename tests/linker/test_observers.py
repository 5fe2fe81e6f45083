"""Observer hooks (relink-study §1.8, §1.16, §4.6 adapted to the Linker)."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import pytest
from linker_helpers import traced

import relink
from relink import LinkContext, Linker, LoadVetoedError, Observer, SyntheticModule
from relink.linker import linker as linker_mod
from relink.observer import (
    BeforeLoadEvent,
    LinkerRelocationEvent,
    RelocatedEvent,
    RelocationEvent,
    SymbolBindingEvent,
)

pytestmark = pytest.mark.needs_cc
INT = ctypes.c_int
ANSWER = ctypes.CFUNCTYPE(INT)(lambda: 41)
ANSWER_ADDR = ctypes.cast(ANSWER, ctypes.c_void_p).value


def load(ctx: LinkContext, path: Path, *observers: Any, **kw: Any) -> relink.Module:
    return Linker(observers=observers, **kw).load(ctx, path)


def test_before_load_sees_every_file_and_can_veto(dependent: Path) -> None:
    seen: list[tuple[str, str | None, int]] = []

    class Watch(Observer):
        def on_before_load(self, event: BeforeLoadEvent) -> None:
            seen.append((event.name, event.needed_by, event.size))
            if event.name == "libprovider.so":
                event.veto("not this one")

    ctx = LinkContext()
    with pytest.raises(LoadVetoedError, match="not this one"):
        load(ctx, dependent, Watch())
    assert seen == [("libdependent.so", None, dependent.stat().st_size),
                    ("libprovider.so", "libdependent.so",
                     (dependent.parent / "libprovider.so").stat().st_size)]
    assert len(ctx) == 0


def test_before_load_can_replace_the_bytes(dependent: Path, provider_alt: Path) -> None:
    class Swap(Observer):
        def on_before_load(self, event: BeforeLoadEvent) -> None:
            if event.name == "libprovider.so":
                event.replace(provider_alt.read_bytes())

    with LinkContext() as ctx:
        mod = load(ctx, dependent, Swap())
        assert mod.function("dependent_value", INT)() == 6
        assert ctx.get("libprovider.so").path is None  # loaded from the given bytes


def test_relocation_order_and_scope_edit(root: Path) -> None:
    order: list[str] = []

    class Order(Observer):
        def on_relocation(self, event: LinkerRelocationEvent) -> None:
            order.append(event.name)
            assert event.scope[0].name == "libroot.so" or event.order < 2

    with LinkContext() as ctx:
        load(ctx, root, Order())
    assert order == ["libprovider.so", "libdependent.so", "libroot.so"]

    class Hide(Observer):  # remove the provider from libdependent's scope
        def on_relocation(self, event: LinkerRelocationEvent) -> None:
            if event.name == "libdependent.so":
                event.scope[:] = [p for p in event.scope if p.name != "libprovider.so"]

    ctx = LinkContext()
    with pytest.raises(relink.UnknownSymbolError, match="provider_value"):
        load(ctx, root, Hide())
    assert len(ctx) == 0


def test_symbol_binding_observed_and_overridden(dependent: Path) -> None:
    bound: list[tuple[str, str | None]] = []

    class Override(Observer):
        def on_symbol_binding(self, event: SymbolBindingEvent) -> None:
            bound.append((event.symbol, event.provider))
            if event.symbol == "provider_value":
                assert event.address is not None
                event.set_address(ANSWER_ADDR)

    with LinkContext() as ctx:
        mod = load(ctx, dependent, Override())
        assert mod.function("dependent_value", INT)() == 42
    assert ("provider_value", "libprovider.so") in bound


def test_pre_hook_redirects_and_handles(dependent: Path) -> None:
    seen: list[tuple[str, str]] = []

    class Pre(Observer):
        def on_relocation_pre(self, event: RelocationEvent) -> None:
            seen.append((event.symbol, event.r_type_name))
            if event.symbol == "provider_value":
                assert event.lookup() is not None  # the normal rules still answer
                event.redirect(ANSWER_ADDR)

    with LinkContext() as ctx:
        mod = load(ctx, dependent, Pre())
        assert mod.function("dependent_value", INT)() == 42
        assert ("provider_value", "R_X86_64_JUMP_SLOT") in seen
        assert not any(name == "R_X86_64_RELATIVE" for _, name in seen)

    class Handle(Observer):
        def on_relocation_pre(self, event: RelocationEvent) -> None:
            if event.symbol == "provider_value":
                event.handle(ANSWER_ADDR)

    with LinkContext() as ctx:
        assert load(ctx, dependent, Handle()).function("dependent_value", INT)() == 42


def test_post_hook_rescues_unknown_symbol(global_lib: Path) -> None:
    rescued: list[str] = []

    class Rescue(Observer):
        def on_relocation_post(self, event: RelocationEvent) -> None:
            rescued.append(event.symbol)
            assert isinstance(event.error, relink.UnknownSymbolError)
            event.handle(ANSWER_ADDR)

    with LinkContext() as ctx:
        mod = load(ctx, global_lib, Rescue())
        assert mod.function("global_value", INT)() == 42
    assert rescued == ["provider_value"]


def test_relocated_hook_edits_initializers(provider: Path) -> None:
    calls: list[str] = []
    host = SyntheticModule("trace-host", {
        "trace": (lambda s: calls.append(s.decode()), None, ctypes.c_char_p)})
    lib = traced("observed", [provider])

    class NoInit(Observer):
        def on_relocated(self, event: RelocatedEvent) -> None:
            if event.name == "libtraced_observed.so":
                assert event.base and event.init_funcs  # the constructor, frame_dummy
                event.init_funcs.clear()

    ctx = LinkContext()
    mod = Linker(observers=[NoInit()]).load(ctx, lib, scope=[host])
    assert calls == [] and mod.state == "initialized"
    mod.close()
    assert calls == ["fini:observed"]


def test_no_observer_installs_nothing(dependent: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    captured: list[tuple[type, dict[str, Any]]] = []
    real = linker_mod.relocate_module

    def spy(state: Any, binder: Any, **kw: Any) -> Any:
        captured.append((type(binder), dict(kw)))
        return real(state, binder, **kw)

    monkeypatch.setattr(linker_mod, "relocate_module", spy)
    with LinkContext() as ctx:
        load(ctx, dependent)
        load(ctx, dependent, Observer())  # only no-op defaults: still nothing installed
    from relink.relocation.scope import Binder

    assert captured and all(t is Binder for t, _ in captured)
    assert all("pre" not in kw and kw["fallback"] is None for _, kw in captured)


def test_binding_made_by_an_observer_retains_its_provider(provider: Path,
                                                          global_lib: Path) -> None:
    class Manual(Observer):
        def on_relocation_pre(self, event: RelocationEvent) -> None:
            if event.symbol == "provider_value":
                address = event.lookup()  # binds through the rules and records it
                assert address is not None
                event.handle(address)

    ctx = LinkContext()
    prov = ctx.load(provider)
    ctx.promote_global(prov)
    glob = load(ctx, global_lib, Manual())
    assert ctx.release(prov) == []  # retained by the recorded binding
    assert glob.function("global_value", INT)() == 2
    assert sorted(ctx.release(glob)) == ["libglobal.so", "libprovider.so"]
