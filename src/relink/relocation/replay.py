"""Relocation programs: a module's dynamic relocations compiled against a binding plan.

Relocation layer, used by relocation/dynamic.py. When a file is loaded again with a scope
of the same files, its symbol resolutions come from a binding plan (relocation/scope.py):
symbol -> (scope position, value relative to that provider's load bias). Every RELATIVE
and symbol entry then writes ``bias[slot] + constant``, where the constant is link-time
data (symbol value + addend, or the RELATIVE addend) and only the biases change from one
load to the next. The program holds those (place, slot, constant) triples for all the
module's RELA tables; it is built once per (file, plan) and applied with one struct.pack
and one slice copy per run of consecutive places, or with numpy from
`PROGRAM_NUMPY_THRESHOLD` entries: no symbol binding and no class dispatch per
entry. Entries of any other kind (TLS, COPY, IRELATIVE, text fields, the module's own
IFUNCs) stay with the generic loop as the program's residual tables; a module with REL
tables (addends read from the places at load time) gets no program.
"""

from __future__ import annotations

import struct
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import add, and_
from typing import Any

from relink.arch import RelocClass
from relink.elf.relocs import RelocTable
from relink.relocation import NUMPY_THRESHOLD, numpy_or_none

__all__ = ["Program", "apply_program", "compile_program"]

# From this many entries numpy wins (measured: ~8 us fixed, then almost nothing per
# entry, against ~0.25 us per entry in Python) -- once numpy is imported. Importing it
# costs ~100 ms and starts OpenBLAS's threads (which end the TLS carrier pool's reuse,
# runtime/tls_pool.py), so below the generic loop's NUMPY_THRESHOLD a program imports it
# only once it has been replayed PROGRAM_NUMPY_AFTER times (a file reloaded that often
# repays the import).
PROGRAM_NUMPY_THRESHOLD = 48
PROGRAM_NUMPY_AFTER = 32
_SELF, _NOWHERE = -2, -1  # plan positions: the module itself, an unresolved weak symbol
STT_GNU_IFUNC = 10
# Runs an iterator to its end, keeping nothing (the map() loops below run in C).
_consume: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend


class Program:
    """(place, slot, constant) per entry: write ``biases[slot] + constant`` at place.

    Entries are kept in *run* order: runs group entries whose places are consecutive
    words (a GOT, a pointer table). Applying a program packs every value with one
    ``struct.pack`` and copies each run's bytes into the image with one slice
    assignment, all driven by C-level iteration (``map``): the Python bytecode per load
    does not grow with the number of entries or runs.
    """

    __slots__ = ("offsets", "slots", "consts", "types", "rest", "_slots_run", "_consts_run",
                 "_fmt", "_runs", "_packed", "_placed", "_arrays", "_uses")

    def __init__(self, offsets: list[int], slots: list[int], consts: list[int],
                 word: int = 8) -> None:
        self.offsets = offsets
        self.slots = slots
        self.consts = consts
        order, bounds = _runs(offsets, word)
        # Slots and constants in run order; one struct format packs them all.
        self._slots_run = [slots[i] for i in order]
        self._consts_run = [consts[i] for i in order]
        self._fmt = f"<{len(order)}{'Q' if word == 8 else 'I'}"
        # Per run: its first place and its bytes in the packed values.
        self._runs = [(offsets[order[a]], a * word, b * word) for a, b in bounds]
        self._packed = [slice(a, b) for _, a, b in self._runs]
        # (delta, the runs' slices of the image view): places are link-time addresses,
        # the view is indexed by link-time address + delta, which is the same on every
        # load of a file (the span's link-time start), so this is computed once.
        self._placed: tuple[int, list[slice]] | None = None
        self.types: list[int] = []  # relocation types the program covers (for counts)
        self.rest: list[RelocTable] = []  # entries left to the generic loop
        self._arrays: Any = None
        self._uses = 0  # applications so far (see apply_program)

    def __len__(self) -> int:
        return len(self.offsets)


def _runs(offsets: list[int], word: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Entries grouped into runs of consecutive words: (entry indices in run order,
    (start, end) of each run in that order). Runs of one entry in table order if two
    entries write the same place: then order matters."""
    order = sorted(range(len(offsets)), key=offsets.__getitem__)
    if len({offsets[i] for i in order}) != len(order):
        order = list(range(len(offsets)))
        return order, [(i, i + 1) for i in range(len(order))]
    bounds: list[tuple[int, int]] = []
    for at, i in enumerate(order):
        if bounds and offsets[i] == offsets[order[at - 1]] + word:
            bounds[-1] = (bounds[-1][0], at + 1)
        else:
            bounds.append((at, at + 1))
    return order, bounds


def compile_program(tables: list[RelocTable], classes: dict[int, RelocClass],
                    plan: dict[int, tuple[int, int, int, int]],
                    word: int = 8) -> Program | None:
    """The program for `tables` under binding `plan`, or None (REL tables: their addends
    are read from the places at load time).

    Entries the program cannot express -- TLS, COPY, IRELATIVE, text fields, symbols the
    plan lacks or that are the module's own IFUNCs -- are kept, in table order, as the
    program's `rest`: tables for the generic loop, applied after the program (which is
    only allowed when no rest entry writes a place the program writes).
    """
    RELATIVE, NONE = RelocClass.RELATIVE, RelocClass.NONE
    symbolic = (RelocClass.GLOB_DAT, RelocClass.JUMP_SLOT, RelocClass.SYMBOLIC)
    offsets: list[int] = []
    slots: list[int] = []
    consts: list[int] = []
    types: list[int] = []
    rest: list[RelocTable] = []
    for table in tables:
        addends = table.addends
        if addends is None:
            return None  # REL: the addend is in the place, read at load time
        left: list[int] = []
        for i, (off, t, sym, a) in enumerate(zip(table.offsets, table.types, table.syms,
                                                 addends)):
            c = classes.get(t)
            if c is RELATIVE:
                slot, k = _SELF, a
            elif c in symbolic:
                if not sym:
                    slot, k = _NOWHERE, a
                else:
                    entry = plan.get(sym)
                    if entry is None or entry[3] == STT_GNU_IFUNC:
                        left.append(i)  # not recorded, or its own IFUNC (runs later)
                        continue
                    slot, k = entry[0], entry[1] + a
            elif c is NONE:
                types.append(t)
                continue
            else:
                left.append(i)
                continue
            offsets.append(off)
            slots.append(slot)
            consts.append(k)
            types.append(t)
        if left:
            rest.append(RelocTable(table.name, [table.offsets[i] for i in left],
                                   [table.types[i] for i in left],
                                   [table.syms[i] for i in left], [addends[i] for i in left]))
    if rest and not {o for r in rest for o in r.offsets}.isdisjoint(offsets):
        return None  # a place written twice: only the loop keeps the order
    program = Program(offsets, slots, consts, word)
    program.types, program.rest = types, rest
    return program


def apply_program(program: Program, view: memoryview, delta: int, biases: Sequence[int],
                  word: int) -> None:
    """Write every entry of `program` into `view` (index = link-time address + delta).

    `biases` is indexed by plan position (the binder's ``plan_bases``: the scope's
    providers, then the module itself at -2 and 0 at -1).
    """
    n = len(program.offsets)
    program._uses += 1
    if n >= PROGRAM_NUMPY_THRESHOLD and not delta % word and (
            n >= NUMPY_THRESHOLD or program._uses > PROGRAM_NUMPY_AFTER
            or "numpy" in sys.modules) and numpy_or_none() is not None:
        if _apply_numpy(program, view, delta, biases, word):
            return
    placed = program._placed
    if placed is None or placed[0] != delta:
        placed = program._placed = (delta, [slice(off + delta, off + delta + b - a)
                                            for off, a, b in program._runs])
    # biases[slot] + constant for every entry, wrapped to a word, packed at once; then
    # one slice copy per run. map() keeps all of it out of the bytecode loop.
    packed = memoryview(struct.pack(program._fmt, *map(
        and_, map(add, map(biases.__getitem__, program._slots_run), program._consts_run),
        repeat((1 << (8 * word)) - 1))))
    _consume(map(view.__setitem__, placed[1], map(packed.__getitem__, program._packed)))


def _apply_numpy(program: Program, view: memoryview, delta: int, biases: Sequence[int],
                 word: int) -> bool:
    np = numpy_or_none()
    arrays = program._arrays
    if arrays is None:
        offs = np.asarray(program.offsets, dtype=np.int64)
        if (offs % word).any():
            program._arrays = False
            return False
        # Constants modulo 2**64 as int64: the sum wraps like the unsigned word it becomes.
        consts = [(k + (1 << 63)) % (1 << 64) - (1 << 63) for k in program.consts]
        arrays = program._arrays = (offs // word, np.asarray(program.slots, dtype=np.int64),
                                    np.asarray(consts, dtype=np.int64))
    elif arrays is False:
        return False
    places, slots, consts = arrays
    dt = np.uint64 if word == 8 else np.uint32
    raw = np.frombuffer(view, dtype=np.uint8)
    words = raw[: len(raw) - len(raw) % word].view(dt)
    values = np.asarray(biases, dtype=np.int64)[slots] + consts
    words[places + delta // word] = values.astype(dt)
    return True
