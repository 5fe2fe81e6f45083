"""The numpy path of the relocation loop, for big RELA tables and RELR lists.

Relocation layer, used by relocation/dynamic.py (numpy is optional and imported on first
use, never by ``import relink``). From `NUMPY_THRESHOLD` entries per table, RELATIVE and
symbol-binding entries are gathered and scattered as arrays: each distinct symbol is
bound once through the `Binder` (or, on a reload, its address comes straight from the
replayed binding plan as one array), and the base-independent columns are cached on the
parsed table. Special classes (TLS, COPY, IRELATIVE, text fields) stay with the loop.
"""

from __future__ import annotations

from typing import Any

from relink.arch import RelocClass
from relink.elf.relocs import RelocTable
from relink.relocation import NUMPY_THRESHOLD, numpy_or_none
from relink.relocation.scope import Binder
from relink.state import ModuleState

__all__ = ["NUMPY_THRESHOLD", "bulk_apply", "numpy_or_none"]


def _table_arrays(table: RelocTable, classes: dict[int, RelocClass], word: int) -> Any:
    """The base-independent numpy form of a big RELA table (cached on the table)."""
    cached = table.arrays
    if cached is not None:
        return cached
    np = numpy_or_none()
    offs = np.asarray(table.offsets, dtype=np.int64)
    types = np.asarray(table.types, dtype=np.int64)
    syms = np.asarray(table.syms, dtype=np.int64)
    addends = np.asarray(table.addends, dtype=np.int64)
    lut = np.full(int(types.max()) + 1 if len(types) else 1, -1, dtype=np.int64)
    for t, c in classes.items():
        if t < len(lut):
            lut[t] = int(c)
    cls = lut[types]
    is_rel = cls == int(RelocClass.RELATIVE)
    is_sym = np.isin(cls, [int(RelocClass.GLOB_DAT), int(RelocClass.JUMP_SLOT),
                           int(RelocClass.SYMBOLIC)]) & (syms != 0)
    aligned = not (offs % word).any()
    sym_idx = np.nonzero(is_sym)[0]
    usyms, first, inverse = np.unique(syms[sym_idx], return_index=True, return_inverse=True)
    arrays = {
        "aligned": aligned,
        "rel_word": offs[is_rel] // word, "rel_off": offs[is_rel],
        "rel_add": addends[is_rel],
        "sym_word": offs[sym_idx] // word, "sym_off": offs[sym_idx], "sym_idx": sym_idx,
        "sym_add": addends[sym_idx].astype(np.uint64),
        "usyms": usyms.tolist(), "utypes": types[sym_idx][first].tolist(),
        "uoffs": offs[sym_idx][first].tolist(), "inverse": inverse,
        "rest": np.nonzero(~(is_rel | is_sym))[0].tolist(),
        "n_rel": int(is_rel.sum()),
    }
    table.arrays = arrays
    return arrays


def _plan_addresses(binder: Binder, arr: dict[str, Any]) -> Any:
    """The addresses of the table's distinct symbols straight from a replayed binding
    plan, as one array (positions and values cached per plan); None without a plan
    that covers them all, or when one is the module's own IFUNC."""
    plan = binder.plan
    if plan is None:
        return None
    np = numpy_or_none()
    key = f"plan:{id(plan)}"
    cols = arr.get(key)
    if cols is None:
        entries = [plan.get(s) for s in arr["usyms"]]
        if any(e is None or e[3] == 10 for e in entries):
            return None
        cols = (np.asarray([e[0] for e in entries], dtype=np.int64),  # type: ignore[index]
                np.asarray([e[1] for e in entries], dtype=np.int64))  # type: ignore[index]
        arr[key] = cols  # the plan lives as long as the parsed table: same lifetime
    pos, values = cols
    bases = np.asarray(binder.plan_bases, dtype=np.int64)
    return (values + bases[pos]).astype(np.uint64)


def bulk_apply(state: ModuleState, table: RelocTable, binder: Binder, view: memoryview,
                delta: int, word: int) -> RelocTable | None:
    """Apply the RELATIVE and symbol-binding entries of a big RELA table with numpy.

    Each distinct symbol is bound once (through the binder, so observers, binding plans
    and errors behave as in the loop); values are gathered and scattered as arrays.
    Returns the entries left for the loop (special classes), or None when the table
    does not suit the bulk path (misaligned places, or a module binding its own IFUNCs).
    """
    np = numpy_or_none()
    arr = _table_arrays(table, state.image.spec.classes, word)
    if not arr["aligned"] or delta % word:
        return None
    dt = np.uint64 if word == 8 else np.uint32
    addrs: Any = _plan_addresses(binder, arr)
    if addrs is None:
        bind = binder.bind
        addrs = []
        for sym, t, off in zip(arr["usyms"], arr["utypes"], arr["uoffs"]):
            b = bind(sym, t, off)
            if b[2] == 10:  # our own IFUNC: the loop defers it until code can run
                return None
            addrs.append(b[0])
    raw = np.frombuffer(view, dtype=np.uint8)
    words = raw[: len(raw) - len(raw) % word].view(dt)
    shift = delta // word
    base = state.image.base
    if arr["n_rel"]:
        words[arr["rel_word"] + shift] = (arr["rel_add"] + base).astype(dt)
    if len(addrs):
        values = np.asarray(addrs, dtype=np.uint64)[arr["inverse"]] + arr["sym_add"]
        words[arr["sym_word"] + shift] = values.astype(dt)
    rest = arr["rest"]
    assert table.addends is not None
    return RelocTable(table.name, [table.offsets[j] for j in rest],
                      [table.types[j] for j in rest], [table.syms[j] for j in rest],
                      [table.addends[j] for j in rest])
