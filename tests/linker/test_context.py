"""LinkContext unit cases (relink-study §4.7 context.rs, adapted)."""

from __future__ import annotations

import ctypes
import gc
import threading
from pathlib import Path

import pytest
from linker_helpers import maps_lines, traced

from relink import LinkContext, LinkContextError, SyntheticModule

pytestmark = pytest.mark.needs_cc
INT = ctypes.c_int


def test_insert_alias_and_key_occupied(provider: Path) -> None:
    ctx = LinkContext()
    syn = SyntheticModule("synthetic", {"x": 1})
    held = ctx.insert("synthetic-key", syn)
    assert ctx.get("synthetic-key")._state is syn
    with pytest.raises(LinkContextError) as info:
        ctx.insert("synthetic-key", SyntheticModule("other"))
    assert info.value.reason == "key-occupied"
    same = ctx.insert("second-key", syn)  # the same module under another key: an alias
    assert ctx.key_of("second-key") == "synthetic-key"
    lib = ctx.load(provider)
    with pytest.raises(LinkContextError):
        ctx.add_alias(lib, "synthetic-key")
    ctx.add_alias(lib, "my-provider")
    assert ctx.get("my-provider").base == lib.base
    assert ctx.release(held) == []
    assert ctx.release(same) == ["synthetic"]
    lib.close()
    assert len(ctx) == 0


def test_dependency_facade_keeps_the_load(root: Path) -> None:
    ctx = LinkContext()
    mod = ctx.load(root)
    provider = mod.dependencies[0].dependencies[0]
    del mod
    gc.collect()
    assert provider.function("provider_value", INT)() == 1  # still loaded
    assert len(ctx) == 3
    del provider
    gc.collect()
    assert len(ctx) == 0 and maps_lines(str(root)) == []


def test_close_finalizes_dependents_first(provider: Path) -> None:
    calls: list[str] = []
    host = SyntheticModule("trace-host", {
        "trace": (lambda s: calls.append(s.decode()), None, ctypes.c_char_p)})
    dep = traced("ctx_dep", [provider])
    top = traced("ctx_top", [dep])
    ctx = LinkContext()
    a = ctx.load(top, scope=[host])
    b = ctx.load(dep, scope=[host])  # already loaded: a second lease, no second init
    assert calls == ["init:ctx_dep", "init:ctx_top"] and a.base != b.base
    ctx.close()
    assert calls[2:] == ["fini:ctx_top", "fini:ctx_dep"]
    assert a.state == "closed" and b.state == "closed"
    ctx.close()  # idempotent
    a.close()  # releasing a lease of a closed context is harmless


def test_concurrent_loads_share_one_module(counter: Path) -> None:
    ctx = LinkContext()
    results: list[int] = []
    lock = threading.Lock()
    mods = []

    def worker() -> None:
        m = ctx.load(counter)
        with lock:
            mods.append(m)
            results.append(m.base)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(ctx) == 1
    for m in mods[:-1]:
        assert ctx.release(m) == []
    assert ctx.release(mods[-1]) == ["libcounter.so"]


def test_stale_module_after_unload(counter: Path) -> None:
    ctx = LinkContext()
    first = ctx.load(counter)
    view = ctx.get("libcounter.so")
    first.close()
    with pytest.raises(LinkContextError) as info:
        ctx.promote_global(view)
    assert info.value.reason in ("stale", "context-mismatch")
    again = ctx.load(counter)
    assert again.function("get", INT)() == 0  # a fresh copy: globals re-initialized
    again.close()


def test_garbage_collected_lease_waits_for_the_running_load(counter: Path,
                                                             dependent: Path) -> None:
    from relink import Linker, Observer

    ctx = LinkContext()
    holder = {"mod": ctx.load(counter)}
    seen: list[int] = []

    class DropDuringLoad(Observer):
        def on_relocation(self, event: object) -> None:
            if "mod" in holder:
                del holder["mod"]  # last reference: the facade is collected now
                gc.collect()
                seen.append(len(ctx))  # ...but the context is not changed mid-load

    mod = Linker(observers=[DropDuringLoad()]).load(ctx, dependent)
    assert seen == [1]
    assert "libcounter.so" not in ctx  # released as soon as the load finished
    assert mod.function("dependent_value", INT)() == 2
    mod.close()
    assert len(ctx) == 0
