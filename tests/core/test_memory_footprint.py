"""Python memory a loaded module keeps (issue 8, target T8).

Every plain `relink.load` keeps a context, an entry, a lease, a module state, an image
and a facade for as long as the module stays loaded; RSS per small library is compared
with dlopen's in benchmarks/memory.py. Checked structurally here: the per-load classes
are slotted (no instance ``__dict__``), and the Python bytes kept per loaded copy
(tracemalloc, which counts allocations, not timings or RSS) stay under a generous
bound, so an accidental per-load container or closure shows up as a failure.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

import relink
from relink.linker.context import Entry, Lease, LinkContext
from relink.loader import Image
from relink.state import ModuleState

pytestmark = pytest.mark.needs_cc

# Measured: ~4.0 KB per kept load of libbase.so on CPython 3.11 (7.0 KB before the
# per-load classes were slotted, 4.8 KB before the containers below were made on first
# use or shared). The bound leaves room for other Python versions.
BYTES_PER_LOAD = 6500


def test_per_load_objects_have_no_instance_dict(chain: Path) -> None:
    with relink.load(chain.parent / "libbase.so") as m:
        st = m._state
        lease = m._owner
        ctx = lease.ctx
        objects = [st, st.image, lease, ctx, ctx.entry_of(m), st.image.region,
                   st.image.source, st.image.view, m]
        assert [type(o) for o in objects[:4]] == [ModuleState, Image, Lease, LinkContext]
        assert isinstance(objects[4], Entry)
        for obj in objects:
            assert not hasattr(obj, "__dict__"), type(obj).__name__


def test_python_bytes_kept_per_load(chain: Path) -> None:
    base = chain.parent / "libbase.so"
    for _ in range(5):  # warm: parse cache, mapping recipe, host symbols, imports
        relink.load(base).close()
    n = 40
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        mods = [relink.load(base) for _ in range(n)]
        gc.collect()
        per_load = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    for m in mods:
        m.close()
    assert per_load < BYTES_PER_LOAD, f"{per_load:.0f} bytes of Python objects per load"


def test_plain_load_keeps_no_unused_containers(chain: Path) -> None:
    """What a plain load never uses is not made: each of these is a container (or an
    object) per loaded module kept for as long as it stays loaded."""
    with relink.load(chain.parent / "libbase.so") as m:
        st = m._state
        lease = m._owner
        ctx = lease.ctx
        assert m._kept is None  # Module._keep: made by its first use
        assert st._extras is None and st.frames  # the .eh_frame is a plain address
        assert st.symcache is None  # made by the first symbol lookup
        assert ctx.globals == ()
        assert ctx._by_identity is ctx._by_module  # one dict for both kinds of keys
        assert isinstance(lease, Lease) and lease() is m  # the lease is the weak reference
        assert m._deps_of is lease
        assert not hasattr(ctx.entry_of(m), "__weakref__")


def test_lazy_containers_behave_as_before(chain: Path) -> None:
    base = chain.parent / "libbase.so"
    m = relink.load(base)
    st = m._state
    deps = relink.load(chain).dependencies  # built through the lease, on first access
    assert deps and deps[0].name == "libmiddle.so"
    root = deps[0]._keep[0]  # each dependency view keeps the root facade (its lease)
    assert root.state == "initialized" and root.dependencies is deps
    ctx = root._owner.ctx
    del root, deps
    gc.collect()
    assert len(ctx) == 0  # the collected root facade released its lease
    addr = m.symbol("base_value")
    assert addr and st.symcache == {"base_value": addr}
    view = m._owner.ctx.entry_of(m).view()
    assert view.symbol("base_value") == addr and view.symbol("nope") is None
    assert st.symcache == {"base_value": addr, "nope": None}  # one cache for every facade
    hooks: list[str] = []
    st.extras.append(lambda: hooks.append("released"))
    m._keep.append(object())
    frames = st.frames
    from relink.runtime.unwind import registered_frames

    assert frames in registered_frames()
    m.close()
    m.close()  # idempotent
    assert hooks == ["released"] and st.symcache is None and not st.frames
    assert frames not in registered_frames()
    with pytest.raises(relink.RelinkError):
        m.symbol("base_value")
    with pytest.raises(relink.RelinkError):
        view.symbol("base_value")
