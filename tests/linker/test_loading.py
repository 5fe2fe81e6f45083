"""LinkContext + Linker loading scenarios (relink-study §4.5 loading.rs, adapted)."""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

import pytest
from linker_helpers import maps_lines, open_fds, traced

import relink
from relink import Existing, LinkContext, LinkContextError, Linker, SyntheticModule, Unresolved
from relink.errors import UnresolvedDependencyError

pytestmark = pytest.mark.needs_cc
INT = ctypes.c_int


def call(mod: relink.Module, name: str) -> int:
    return int(mod.function(name, INT)())


@pytest.mark.parametrize("from_bytes", [False, True])
def test_loads_chain_breadth_first(root: Path, from_bytes: bool) -> None:
    with LinkContext() as ctx:
        if from_bytes:
            # Bytes have no $ORIGIN: the dependencies come from a fixed directory.
            linker = Linker(search=relink.SearchPathResolver(fixed_dirs=(str(root.parent),)))
            mod = linker.load(ctx, root.read_bytes(), name="libroot.so")
        else:
            mod = ctx.load(root)
        assert call(mod, "root_value") == 3
        names = [m.name for m in ctx.modules()]
        assert names == ["libprovider.so", "libdependent.so", "libroot.so"]  # deps first
        dep = ctx.get("libdependent.so")
        assert dep is not None
        assert [d.name for d in ctx.dependencies(dep)] == ["libprovider.so"]
        assert [d.name for d in mod.dependencies] == ["libdependent.so"]
        assert ctx.how_found("libprovider.so") == "RUNPATH of libdependent.so"
        assert ctx.how_found("libdependent.so") == ("fixed dir" if from_bytes
                                                    else "RUNPATH of libroot.so")


def test_repeated_loads_acquire_the_root(root: Path) -> None:
    ctx = LinkContext()
    first = ctx.load(root)
    second = ctx.load(root)
    assert first.base == second.base and len(ctx) == 3
    assert first.close() is None
    assert len(ctx) == 3 and "libroot.so" in ctx  # second lease still holds it
    second_lease = second._owner
    assert second_lease.release() == ["libroot.so", "libdependent.so", "libprovider.so"]
    assert len(ctx) == 0 and ctx.keys() == []
    second.close()  # idempotent


def test_dedup_by_soname_and_file_identity(leaf: Path, tmp_path: Path) -> None:
    copy = tmp_path / "leaf-implementation.so"
    copy.write_bytes(leaf.read_bytes())
    link = tmp_path / "hardlink.so"
    os.link(leaf, link)
    with LinkContext() as ctx:
        first = ctx.load(copy)
        original = ctx.load(leaf)  # another inode: another module
        assert original.base != first.base
        by_soname = ctx.load("libleaf.so")  # SONAME alias: first registration wins
        assert by_soname.base == first.base
        alias = ctx.load(link)  # same (dev, inode) as `leaf`: the same module
        assert alias.base == original.base
        assert ctx.key_of(str(link)) == ctx.key_of(str(leaf))
        assert len(ctx) == 2
        first.close()
        by_soname.close()
        # The alias falls back to the module that claimed it next.
        again = ctx.load("libleaf.so")
        assert again.base == original.base
        assert len(ctx) == 1


def test_isolation_100_contexts(counter: Path) -> None:
    fds = open_fds()
    contexts = [LinkContext(f"iso-{i}") for i in range(100)]
    mods = []
    try:
        for i, ctx in enumerate(contexts):
            mod = ctx.load(counter if i % 2 else counter.read_bytes(), name="libcounter.so")
            bump = mod.function("bump", INT)
            for _ in range(i):
                bump()
            mods.append(mod)
        assert [call(m, "get") for m in mods] == list(range(100))
        assert len({m.base for m in mods}) == 100
        assert len(maps_lines(str(counter))) >= 50  # the file-backed half
    finally:
        for ctx in contexts:
            ctx.close()
    assert all(m.state == "closed" for m in mods)
    assert maps_lines(str(counter)) == []
    assert open_fds() == fds  # every fd the 50 file loads kept is closed again


def test_unresolved_dependency_names_everything_and_rolls_back(broken: Path,
                                                               provider: Path) -> None:
    ctx = LinkContext()
    fds = open_fds()
    with pytest.raises(UnresolvedDependencyError) as info:
        ctx.load(broken)
    err = info.value
    assert err.needed == "libmissing_dep.so"
    assert err.needed_by == str(broken)
    joined = " ".join(err.searched)
    assert f"{broken.parent}/libmissing_dep.so (RUNPATH of libbroken.so)" in joined
    assert "default dir" in joined and "/usr/lib" in joined
    assert "libmissing_dep.so" in str(err) and str(broken) in str(err)
    # Nothing half-loaded: not in the context, not in memory, no fd left open.
    assert len(ctx) == 0 and ctx.keys() == []
    assert maps_lines(str(broken.parent)) == []
    assert open_fds() == fds


def test_failed_initializer_rolls_back_and_runs_fini(provider: Path) -> None:
    calls: list[str] = []

    def fail_init() -> None:
        raise RuntimeError("initializer failed")

    dep = traced("dep", [provider])
    root = traced("failing", [dep], fail=True)
    host = SyntheticModule("trace-host", {
        "trace": (lambda s: calls.append(s.decode()), None, ctypes.c_char_p),
        "fail_init": (fail_init, None),
    })
    ctx = LinkContext()
    fds = open_fds()
    with pytest.raises(RuntimeError, match="initializer failed"):
        ctx.load(root, scope=[host])
    # deps initialized first; the failed module and its dependency are finalized
    # (dependents first) and unmapped.
    assert calls == ["init:dep", "init:failing", "fini:failing", "fini:dep"]
    assert len(ctx) == 0
    assert maps_lines(str(root)) == [] and maps_lines(str(dep)) == []
    assert open_fds() == fds


def test_init_and_fini_order(provider: Path) -> None:
    calls: list[str] = []
    host = SyntheticModule("trace-host", {
        "trace": (lambda s: calls.append(s.decode()), None, ctypes.c_char_p)})
    dep = traced("phased_dep", [provider])
    root = traced("phased_root", [dep])
    ctx = LinkContext()
    mod = ctx.load(root, scope=[host], init=False)
    assert calls == [] and mod.state == "relocated"
    mod.initialize()
    assert calls == ["init:phased_dep", "init:phased_root"]
    assert mod.state == "initialized"
    assert mod.close() is None
    assert calls[2:] == ["fini:phased_root", "fini:phased_dep"]


def test_staged_load(root: Path) -> None:
    ctx = LinkContext()
    linker = Linker()
    prepared = linker.prepare(ctx, root)
    assert "libroot.so" not in ctx
    prepared.relocate()
    assert "libroot.so" not in ctx and len(ctx) == 0
    mod = prepared.publish()
    assert "libroot.so" in ctx and mod.state == "relocated"
    prepared.initialize()
    assert mod.state == "initialized" and call(mod, "root_value") == 3
    prepared.rollback()  # a published load can still be undone as a whole
    assert len(ctx) == 0 and maps_lines(str(root.parent / "libroot.so")) == []


def test_publish_rejects_changed_dependency(dependent: Path, provider: Path) -> None:
    ctx = LinkContext()
    dep = ctx.load(provider)
    prepared = Linker().prepare(ctx, dependent)  # binds to the committed provider
    prepared.relocate()
    dep.close()  # provider unloaded (and could be reloaded) meanwhile
    with pytest.raises(LinkContextError) as info:
        prepared.publish()
    assert info.value.reason == "module-changed"
    prepared.rollback()
    assert len(ctx) == 0


def test_global_scope_binds_and_retains_provider(provider: Path, global_lib: Path) -> None:
    ctx = LinkContext()
    with pytest.raises(relink.UnknownSymbolError, match="provider_value"):
        ctx.load(global_lib)
    prov = ctx.load(provider)
    ctx.promote_global(prov)
    glob = ctx.load(global_lib)
    assert call(glob, "global_value") == 2
    assert [m.name for m in ctx.bindings(glob)] == ["libprovider.so"]
    assert ctx.release(prov) == []  # still bound by libglobal.so
    assert ctx.release(glob) == ["libglobal.so", "libprovider.so"]
    assert len(ctx) == 0


def test_unused_global_is_not_retained(provider: Path, counter: Path) -> None:
    ctx = LinkContext()
    prov = ctx.load(provider)
    ctx.promote_global(prov)
    other = ctx.load(counter)
    assert ctx.release(prov) == ["libprovider.so"]
    assert ctx.global_scope() == []
    other.close()


def test_relocation_reads_current_globals(provider: Path, global_lib: Path) -> None:
    ctx = LinkContext()
    prepared = Linker().prepare(ctx, global_lib)
    prov = ctx.load(provider)
    ctx.promote_global(prov)  # after prepare, before relocate: live
    prepared.relocate()
    glob = prepared.publish()
    prepared.initialize()
    assert call(glob, "global_value") == 2
    assert ctx.release(prov) == []
    assert sorted(ctx.release(glob)) == ["libglobal.so", "libprovider.so"]


def test_nodelete_stays_until_context_closes(nodelete: Path) -> None:
    ctx = LinkContext()
    mod = ctx.load(nodelete)
    assert mod.close() is None and len(ctx) == 1
    ctx.pin(ctx.get("libnodelete.so"))
    ctx.close()
    assert maps_lines(str(nodelete)) == []


def test_pin_keeps_module(counter: Path) -> None:
    ctx = LinkContext()
    mod = ctx.load(counter)
    ctx.pin(mod)
    assert ctx.release(mod) == []
    assert call(ctx.get("libcounter.so"), "bump") == 1
    ctx.close()
    assert mod.state == "closed"


def test_custom_resolvers(dependent: Path, provider: Path, provider_alt: Path) -> None:
    requests = []

    def to_alt(request: relink.ResolveRequest) -> object:
        requests.append((request.needed, request.owner.name, request.is_root,
                         request.search.name, request.default()))
        return str(provider_alt) if request.needed == "libprovider.so" else None

    ctx = LinkContext(linker=Linker(resolvers=[to_alt]))
    mod = ctx.load(dependent)
    assert call(mod, "dependent_value") == 6  # alt provider returns 5
    needed, owner, is_root, search_name, default = requests[-1]
    assert (needed, owner, is_root, search_name) == ("libprovider.so", "libdependent.so",
                                                     False, "libdependent.so")
    assert default == str(provider)  # what the default search would have found
    assert ctx.how_found("libprovider.so") == "custom resolver"
    ctx.close()


def test_resolver_bytes_synthetic_existing_unresolved(dependent: Path, provider: Path) -> None:
    class Table:
        def __init__(self, answer: object) -> None:
            self.answer = answer

        def resolve(self, request: relink.ResolveRequest) -> object:
            return self.answer if request.needed == "libprovider.so" else None

    with LinkContext(linker=Linker(resolvers=[Table(provider.read_bytes())])) as ctx:
        assert call(ctx.load(dependent), "dependent_value") == 2
    fn = ctypes.CFUNCTYPE(INT)(lambda: 41)
    with LinkContext(linker=Linker(resolvers=[Table({"provider_value": fn})])) as ctx:
        mod = ctx.load(dependent)
        assert call(mod, "dependent_value") == 42
        assert isinstance(ctx.dependencies(mod)[0]._state, SyntheticModule)
    with LinkContext(linker=Linker(resolvers=[Table(Existing("libprovider.so"))])) as ctx:
        with pytest.raises(LinkContextError) as info:
            ctx.load(dependent)
        assert info.value.reason == "existing-key-missing"
        held = ctx.load(provider)  # (dropping the facade would release its lease)
        assert call(ctx.load(dependent), "dependent_value") == 2
        assert held.name == "libprovider.so"
    with LinkContext(linker=Linker(resolvers=[Table(Unresolved("blocked"))])) as ctx:
        with pytest.raises(UnresolvedDependencyError, match="blocked"):
            ctx.load(dependent)
        assert len(ctx) == 0


def test_existing_root_records_request_key(provider: Path) -> None:
    def alias(request: relink.ResolveRequest) -> object:
        return Existing("canonical") if request.needed == "alias" else None

    ctx = LinkContext(linker=Linker(resolvers=[alias]))
    first = ctx.load(provider, key="canonical")
    second = ctx.load("alias")
    assert second.base == first.base
    assert ctx.key_of("alias") == "canonical"
    ctx.close()


def test_synthetic_root_module() -> None:
    ctx = LinkContext()
    syn = SyntheticModule("synthetic-root", {"synthetic_value": (lambda: 42, INT)})
    first = ctx.load(syn)
    assert first.function("synthetic_value", INT)() == 42
    second = ctx.load(syn)
    assert second._state is first._state
    assert ctx.release(first) == []
    assert ctx.release(second) == ["synthetic-root"]


def test_load_from_module_rpath(rpath_caller: Path, leaf: Path) -> None:
    ctx = LinkContext()
    caller = ctx.load(rpath_caller)
    with pytest.raises(UnresolvedDependencyError):
        ctx.load("libleaf.so")  # no caller: the caller's RPATH does not apply
    mod = ctx.load("libleaf.so", caller=caller)
    assert call(mod, "rpath_leaf") == 1 and mod.path == str(leaf.resolve()).replace(
        str(leaf.resolve().parent), str(rpath_caller.parent) + "/../linker-rpath")
    ctx.close()


def test_contexts_do_not_mix(provider: Path) -> None:
    a, b = LinkContext(), LinkContext()
    mod = a.load(provider)
    with pytest.raises(LinkContextError):
        b.promote_global(mod)
    with pytest.raises(LinkContextError):
        b.release(mod)
    a.close()
    with pytest.raises(LinkContextError):
        a.load(provider)


def test_relink_load_keeps_its_behaviour(root: Path) -> None:
    a = relink.load(root)
    b = relink.load(root)
    assert a.base != b.base  # independent loads, as before
    a.close()
    assert call(b, "root_value") == 3
    b.close()
    ctx = relink.default_context()
    c = relink.load(root, context=ctx)
    d = relink.load(root, context=ctx)
    assert c.base == d.base
    c.close()
    d.close()
    assert len(ctx) == 0


def test_gnu_unique_is_one_per_context(unique_pair: tuple[Path, Path]) -> None:
    ptr = ctypes.POINTER(INT)
    first, second = unique_pair
    ctx = LinkContext()
    a = ctx.load(first)
    b = ctx.load(second)
    addr_a = ctypes.cast(a.function("unique_addr1", ptr)(), ctypes.c_void_p).value
    addr_b = ctypes.cast(b.function("unique_addr2", ptr)(), ctypes.c_void_p).value
    assert addr_a == addr_b and a.contains(addr_a)  # the first definition is canonical
    assert ctx.release(a) == []  # its provider is NODELETE now
    other = LinkContext()
    c = other.load(second)
    addr_c = ctypes.cast(c.function("unique_addr2", ptr)(), ctypes.c_void_p).value
    assert addr_c != addr_a and c.contains(addr_c)  # another context, another copy
    other.close()
    ctx.close()


def test_resolver_module_is_committed_and_initialized(dependent: Path, provider: Path) -> None:
    prebuilt = relink.load(provider, init=False)  # another context, not initialized
    assert prebuilt.state == "relocated"

    def give(request: relink.ResolveRequest) -> object:
        return prebuilt if request.needed == "libprovider.so" else None

    ctx = LinkContext(linker=Linker(resolvers=[give]))
    mod = ctx.load(dependent)
    assert prebuilt.state == "initialized"  # initialized with the load, deps first
    assert ctx.get("libprovider.so").base == prebuilt.base
    assert call(mod, "dependent_value") == 2
    assert ctx.how_found("libprovider.so") == "custom resolver (module)"
    assert ctx.release(mod) == ["libdependent.so", "libprovider.so"]
    assert prebuilt.state == "initialized"  # owned by its own context: not unloaded
    prebuilt.close()
    assert prebuilt.state == "closed"


def test_rollback_of_a_reload_releases_only_its_lease(root: Path) -> None:
    ctx = LinkContext()
    held = ctx.load(root)
    prepared = Linker().prepare(ctx, root)  # the root is already there: acquired
    prepared.relocate()
    again = prepared.publish()
    assert again.base == held.base
    prepared.rollback()
    assert len(ctx) == 3 and call(held, "root_value") == 3
    assert held._owner.release() == ["libroot.so", "libdependent.so", "libprovider.so"]


def test_lazy_load_retains_global_candidates(provider: Path, global_lib: Path) -> None:
    ctx = LinkContext()
    prov = ctx.load(provider)
    ctx.promote_global(prov)
    glob = Linker(lazy=True).load(ctx, global_lib)  # provider_value binds on first call
    assert ctx.release(prov) == []  # retained: a lazy slot may still bind to it
    assert call(glob, "global_value") == 2
    assert sorted(ctx.release(glob)) == ["libglobal.so", "libprovider.so"]


def test_dependency_cycle(cycle: Path) -> None:
    ctx = LinkContext()
    mod = ctx.load(cycle)
    assert call(mod, "a_total") == 3
    b = ctx.get("libcyc_b.so")
    assert [d.name for d in ctx.dependencies(b)] == ["libcyc_a.so"]
    assert [m.name for m in ctx.modules()] == ["libcyc_b.so", "libcyc_a.so"]
    assert ctx.release(mod) == ["libcyc_a.so", "libcyc_b.so"]


def test_rollback_refuses_when_later_loads_use_the_modules(provider: Path,
                                                            dependent: Path) -> None:
    ctx = LinkContext()
    prepared = Linker().prepare(ctx, provider)
    prepared.relocate()
    prov = prepared.publish()
    prepared.initialize()
    dep = ctx.load(dependent)  # binds to the published provider
    with pytest.raises(LinkContextError) as info:
        prepared.rollback()
    assert info.value.reason == "in-use" and "libdependent.so" in str(info.value)
    assert call(dep, "dependent_value") == 2
    dep.close()
    prepared.rollback()
    assert len(ctx) == 0 and prov.state == "closed"


def test_malformed_dependency_fails_cleanly(dependent: Path, provider: Path,
                                            tmp_path: Path) -> None:
    shutil.copy(dependent, tmp_path / "libdependent.so")
    data = provider.read_bytes()
    (tmp_path / "libprovider.so").write_bytes(data[:200])  # header intact, rest cut off
    ctx = LinkContext()
    fds = open_fds()
    with pytest.raises(relink.RelinkError) as info:
        ctx.load(tmp_path / "libdependent.so")
    assert "libprovider.so" in str(info.value)
    assert not isinstance(info.value, UnresolvedDependencyError)
    assert any("needed by" in n and "libdependent.so" in n and "RUNPATH" in n
               for n in info.value.__notes__)
    assert len(ctx) == 0 and maps_lines(str(tmp_path)) == [] and open_fds() == fds
