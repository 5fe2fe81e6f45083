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

# Measured: ~6.0 KB per kept load of libbase.so on CPython 3.11 (7.0 KB before the
# per-load classes were slotted). The bound leaves room for other Python versions.
BYTES_PER_LOAD = 9000


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
