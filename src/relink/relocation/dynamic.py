"""The generic dynamic relocation loop, driven by an `ArchSpec`.

Relocation layer (… -> loader -> relocation -> image). One loop serves every ISA: each
entry's type is mapped to a `RelocClass` by one dict lookup and the class decides the
formula; the ISA only contributes data (word size, RELA or REL, FIELD widths, TLS
layout). Order follows ld.so / Relink: RELR, then ``.rela.dyn``, then ``.rela.plt``;
IFUNC resolvers (IRELATIVE and self-references to IFUNC symbols) run after the rest of
the module is relocated. RELATIVE is handled anywhere in a table, not only in the
DT_RELACOUNT prefix; large all-RELATIVE runs go through numpy when it is installed.

Bounds: before a table is applied, every r_offset is checked to lie in a writable
segment of this module (or any segment with DT_TEXTREL), so a malformed file cannot
make relink write outside the module's own mapping. Nothing unknown is skipped: an
unsupported type raises `UnsupportedRelocationError` naming the file, type and symbol,
unless a fallback hook handles it.
"""

from __future__ import annotations

import ctypes
import struct
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from typing import Any

from relink.arch import ArchSpec, FieldSpec, RelocClass, rtype_name
from relink.elf.relocs import RelocTable
from relink.errors import (
    RelocationError,
    RelocationOverflowError,
    UnknownSymbolError,
    UnsupportedRelocationError,
)
from relink.loader import PF_W, Image
from relink.memory import PROT_READ, PROT_WRITE
from relink.relocation import NUMPY_THRESHOLD, numpy_or_none
from relink.relocation.replay import Program, apply_program, compile_program
from relink.relocation.scope import Binder
from relink.state import ModuleState, lifecycle_lists

__all__ = ["Fallback", "Pre", "RelocationPlan", "TlsHooks", "relocate_module"]

STT_TLS = 6

Fallback = Callable[[ModuleState, RelocTable, int], "int | None"]
# Observer pre-hook: returns the value to write for entry k (handled) or None (built-in).
Pre = Callable[[ModuleState, RelocTable, int], "int | None"]


class TlsHooks:
    """What the loop needs from a TLS runtime (see relink.runtime.tls)."""

    def dtpmod(self, provider: Any) -> int:
        raise NotImplementedError

    def dtpmod_at(self, provider: Any, address: int) -> int:
        """DTPMOD knowing the bound address (host providers need it); default: dtpmod."""
        return self.dtpmod(provider)

    def dtpoff(self, provider: Any, offset: int) -> int:
        raise NotImplementedError

    def tpoff(self, provider: Any, offset: int) -> int:
        raise NotImplementedError

    def tlsdesc(self, module: ModuleState, provider: Any, offset: int) -> tuple[int, int]:
        raise NotImplementedError

    def relocating(self, module: ModuleState, binder: Binder) -> None:
        """Called before `module`'s relocations are applied, with the binder they use."""

    def relocated(self, module: ModuleState) -> None:
        """Called once `module`'s relocations are applied (its PT_TLS image is final)."""


class RelocationPlan:
    """Counts of what one module's relocation did, for `relink info` and tests.

    `replayed` is the relocation program that did all of it (relr aside), when one did:
    the linker's load template (relink.linker.warm) replays that program alone.
    """

    replayed: Program | None = None

    def __init__(self) -> None:
        self._named: dict[str, int] = {}
        self._tables: list[tuple[int, list[int]]] = []

    def add(self, name: str, n: int = 1) -> None:
        self._named[name] = self._named.get(name, 0) + n

    def add_types(self, spec: ArchSpec, types: list[int]) -> None:
        """Count the entries of a processed table (by type, when asked)."""
        self._tables.append((spec.e_machine, types))

    @property
    def by_class(self) -> dict[str, int]:
        """Counts by relocation type name (names resolved only when asked)."""
        out = dict(self._named)
        for machine, types in self._tables:
            for t, n in Counter(types).items():
                name = rtype_name(machine, t)
                out[name] = out.get(name, 0) + n
        return out


def _windows(image: Image, all_segments: bool) -> list[tuple[int, int]]:
    return [(ph.p_vaddr, ph.p_vaddr + ph.p_memsz) for ph in image.loads
            if all_segments or ph.p_flags & PF_W]


def _check_offsets(image: Image, table_name: str, offsets: list[int], width: int,
                   windows: list[tuple[int, int]], types: list[int] | None = None,
                   widths: dict[int, int] | None = None) -> None:
    """Raise unless every ``[off, off + width)`` lies inside one of `windows`.

    `widths` overrides the width per relocation type (narrow FIELD types, two-word
    TLSDESC, 0 for NONE, whose offset is never written).
    """
    if not offsets:
        return
    top = max(width, *widths.values()) if widths else width
    lo, hi = min(offsets), max(offsets) + top
    for start, end in windows:
        if start <= lo and hi <= end:
            return
    starts = [w[0] for w in windows]
    for i, off in enumerate(offsets):
        size = widths.get(types[i], width) if widths and types else width
        if size == 0:
            continue
        j = bisect_right(starts, off) - 1
        if j < 0 or off + size > windows[j][1]:
            name = image.spec.rtype_name(types[i]) if types else "RELR"
            raise RelocationError(
                "relocation target is outside every writable segment of the module",
                file=image.label, r_type_name=name, offset=off,
                detail=f"entry {i} of {table_name}")


def relocate_module(state: ModuleState, binder: Binder, *, tls: TlsHooks | None = None,
                    fallback: Fallback | None = None, lazy: bool = False,
                    pre: Pre | None = None) -> RelocationPlan:
    """Apply every dynamic relocation of `state`'s image (eager binding).

    With `lazy` (and unless the module is BIND_NOW), ``.rela.plt`` JUMP_SLOTs are left
    to relink.runtime.lazy, which binds each on its first call.

    Caller must ensure: the image is mapped and writable where its relocations point
    (the loader leaves it so), and the providers in `binder`'s scope are relocated.
    """
    image = state.image
    dyn = image.dynamic
    plan = RelocationPlan()
    if dyn is None:
        return plan
    spec = image.spec
    parsed = image.parsed
    # A reload finds the decoded tables (and the targets' verdict) with the metadata.
    cached = parsed.tables if parsed is not None else None
    tables, relr = cached if cached is not None else image.relocation_tables()
    binder.prime()
    textrel = dyn.textrel
    word = spec.word_size
    if parsed is None or not parsed.complete or \
            not parsed.facts.get("relocation_targets_checked"):
        _check_targets(image, tables, relr, textrel)
    region = image.region
    view = region.view()
    mirror = None
    if view is None:
        # A backend without host-addressable memory: relocate a copy, write it back.
        mirror = bytearray(region.size)
        for ph in image.loads:
            at = image.base + ph.p_vaddr
            mirror[at - region.start:at - region.start + ph.p_memsz] = region.read(at,
                                                                                   ph.p_memsz)
        view = memoryview(mirror)
    unprotected: list[tuple[int, int, int]] | tuple[()] = ()
    if textrel:
        unprotected = [(s, n, p) for s, n, p in image.protections if not p & PROT_WRITE]
        for s, n, p in unprotected:
            region.protect(s, n, p | PROT_WRITE | PROT_READ)
    # The TLS runtime tracks only modules with their own PT_TLS (their carrier's image
    # is computed from this relocation); others reach it through the loop's TLS classes.
    tls_owner = tls is not None and image.tls is not None
    if tls_owner:
        tls.relocating(state, binder)  # type: ignore[union-attr]
    try:
        deferred: list[tuple[int, int]] = []
        delta = image.base - region.start  # view index = vaddr + delta
        if relr:
            _apply_relr(view, relr, delta, image.base, word)
            plan.add("RELATIVE", len(relr))
        lazy_plt = lazy and dyn.jmprel and not dyn.bind_now
        if lazy_plt:
            from relink.runtime.lazy import prepare_lazy

            tables, n_lazy = prepare_lazy(state, binder, tables, view, delta)
            plan.add("JUMP_SLOT (lazy)", n_lazy)
        program = _program(state, tables, binder) if binder.plan is not None \
            and pre is None and not lazy_plt else None
        if program is not None:  # a reload with the same scope: replay, no binding
            apply_program(program, view, delta, binder.plan_bases, word)
            plan.add_types(spec, program.types)
            tables = program.rest  # what the program cannot express: the loop
            if not tables and not textrel and mirror is None and not tls_owner:
                plan.replayed = program
        for table in tables:
            if pre is not None:
                table = _pre_pass(state, table, pre, view, delta)
            _apply_table(state, table, binder, view, delta, deferred, plan, tls, fallback)
    finally:
        for s, n, p in unprotected:
            region.protect(s, n, p)
    if mirror is not None:
        for ph in image.loads:
            if textrel or ph.p_flags & PF_W:
                at = image.base + ph.p_vaddr
                region.write(at, mirror[at - region.start:at - region.start + ph.p_memsz])
    if deferred:
        # IFUNC resolvers run only once the module's code has its final protection
        # (a bytes-loaded image is not executable before), and before RELRO.
        image.protect_segments()
        fmt = "<Q" if word == 8 else "<I"
        mask = (1 << (8 * word)) - 1
        for idx, resolver in deferred:
            value = struct.pack(fmt, state.resolve_ifunc(resolver) & mask)
            if mirror is None:
                view[idx:idx + word] = value
            else:
                region.write(region.start + idx, value)
    if binder.plan is None:  # else replayed from a recorded plan: nothing new to record
        binder.remember()
    lifecycle_lists(state, view, delta)
    if tls_owner:
        tls.relocated(state)  # type: ignore[union-attr]
    return plan


def replay_module(state: ModuleState, program: Program, biases: list[int]) -> None:
    """Relocate `state` by `program` alone: what `relocate_module` did for the same file
    and the same scope files when the program left nothing to the generic loop (its
    ``replayed``), without the binder. `biases` as the binder's ``plan_bases``.

    Caller must ensure: `program` is that program (relink.linker.warm checks the files'
    identities and parsed metadata), the image is mapped writable where it writes.
    """
    image = state.image
    relr = image.relocation_tables()[1]  # (cached with the file's metadata)
    region = image.region
    view = region.view()
    assert view is not None  # host memory (a template is made only for native loads)
    delta = image.base - region.start
    word = image.spec.word_size
    if relr:
        _apply_relr(view, relr, delta, image.base, word)
    apply_program(program, view, delta, biases, word)
    lifecycle_lists(state, view, delta)


def _check_targets(image: Image, tables: list[RelocTable], relr: list[int],
                   textrel: bool) -> None:
    """Raise unless every relocation writes inside a writable segment (any segment with
    DT_TEXTREL); the verdict is recorded for later loads of a cached file."""
    spec = image.spec
    word = spec.word_size
    windows = _windows(image, textrel)
    # Each entry is checked with the width it writes: a word, a FIELD's width, two
    # words for TLSDESC (a one-byte check would let a word straddle a segment's end).
    widths = {t: fs.width for t, fs in spec.fields.items()}
    for t, cls in spec.classes.items():
        if cls is RelocClass.TLSDESC:
            widths[t] = 2 * word
        elif cls is RelocClass.NONE:
            widths[t] = 0
        elif cls is RelocClass.COPY:
            widths[t] = 1  # the symbol's size is checked by _copy
    for table in tables:
        _check_offsets(image, table.name, table.offsets, word, windows, table.types,
                       widths)
    _check_offsets(image, ".relr.dyn", relr, word, windows)
    parsed = image.parsed
    if parsed is not None and parsed.complete:
        # Offsets and segments are link-time values: the verdict holds for every later
        # load of the same (unchanged) file.
        parsed.facts["relocation_targets_checked"] = True


def _program(state: ModuleState, tables: list[RelocTable], binder: Binder) -> Program | None:
    """The relocation program of a module whose binding plan was replayed (cached with
    the plan), or None: no plan, or an entry the generic loop must handle."""
    key, stored = binder._plan_key, binder.plan
    parsed = state.image.parsed
    if key is None or stored is None or parsed is None:
        return None
    programs = parsed.programs
    program = programs.get(key, programs)  # itself: not compiled yet (None: unsuitable)
    if program is not programs:
        return program  # type: ignore[return-value]
    spec = state.image.spec
    program = compile_program(tables, spec.classes, stored, spec.word_size)
    programs[key] = program
    return program


def _apply_relr(view: memoryview, relr: list[int], delta: int, base: int, word: int) -> None:
    if len(relr) >= NUMPY_THRESHOLD and numpy_or_none() is not None:
        np = numpy_or_none()
        dt = np.uint64 if word == 8 else np.uint32
        arr = np.frombuffer(view, dtype=np.uint8)
        idx = np.asarray(relr, dtype=np.int64) + delta
        if not (idx % word).any():
            words = arr[: len(arr) - len(arr) % word].view(dt)
            words[idx // word] += dt(base)
            return
    fmt = "<Q" if word == 8 else "<I"
    mask = (1 << (8 * word)) - 1
    unpack, pack = struct.unpack_from, struct.pack_into
    for off in relr:
        i = off + delta
        pack(fmt, view, i, (unpack(fmt, view, i)[0] + base) & mask)


def _apply_table(state: ModuleState, table: RelocTable, binder: Binder, view: memoryview,
                 delta: int, deferred: list[tuple[int, int]], plan: RelocationPlan,
                 tls: TlsHooks | None, fallback: Fallback | None) -> None:
    image = state.image
    spec: ArchSpec = image.spec
    classes = spec.classes
    word = spec.word_size
    base = image.base
    fmt = "<Q" if word == 8 else "<I"
    mask = (1 << (8 * word)) - 1
    pack, unpack = struct.pack_into, struct.unpack_from
    rela = table.addends is not None
    offsets, types, syms = table.offsets, table.types, table.syms
    n = len(offsets)
    addends = table.addends if rela else None
    all_types = types
    if rela and n >= NUMPY_THRESHOLD and numpy_or_none() is not None:
        from relink.relocation.bulk import bulk_apply  # the numpy path, for big tables

        rest = bulk_apply(state, table, binder, view, delta, word)
        if rest is not None:
            # _special / fallback index the table by k: give them the remaining entries
            table = rest
            offsets, types, syms, addends = rest.offsets, rest.types, rest.syms, rest.addends
            n = len(offsets)
    bind = binder.bind
    RELATIVE, GLOB_DAT, JUMP_SLOT = RelocClass.RELATIVE, RelocClass.GLOB_DAT, \
        RelocClass.JUMP_SLOT
    SYMBOLIC, NONE = RelocClass.SYMBOLIC, RelocClass.NONE
    STT_GNU_IFUNC = 10
    for k in range(n):
        off = offsets[k]
        t = types[k]
        c = classes.get(t)
        if c is NONE:  # never read or written (its offset is not bounds-checked)
            continue
        i = off + delta
        if addends is not None:
            a = addends[k]
        else:
            a = unpack(fmt, view, i)[0]
        if c is RELATIVE:
            val = base + a
        elif c is GLOB_DAT or c is JUMP_SLOT or c is SYMBOLIC:
            sym = syms[k]
            if sym:
                b = bind(sym, t, off)
                val = b[0]
                if b[2] == STT_GNU_IFUNC:  # our own IFUNC: resolve once code can run
                    deferred.append((i, val))
                    continue
            else:
                val = 0
            if rela or c is SYMBOLIC:
                val += a
        else:
            special = _special(state, table, k, c, t, a, binder, view, i, deferred, tls,
                               fallback)
            if special is None:
                continue
            pack(fmt, view, i, special & mask)
            continue
        pack(fmt, view, i, val & mask)
    # Counted lazily from the types (a Counter only when someone asks): no per-entry cost.
    plan.add_types(spec, all_types)


def _pre_pass(state: ModuleState, table: RelocTable, pre: Pre, view: memoryview,
              delta: int) -> RelocTable:
    """Offer each non-RELATIVE, non-NONE entry to the observer pre-hook (linker layer);
    write the values it handles and return the table of the entries it left alone."""
    classes = state.image.spec.classes
    word = state.image.spec.word_size
    fmt = "<Q" if word == 8 else "<I"
    mask = (1 << (8 * word)) - 1
    keep: list[int] = []
    for k, t in enumerate(table.types):
        c = classes.get(t)
        if c is not RelocClass.RELATIVE and c is not RelocClass.NONE:
            val = pre(state, table, k)
            if val is not None:
                struct.pack_into(fmt, view, table.offsets[k] + delta, val & mask)
                continue
        keep.append(k)
    if len(keep) == len(table.types):
        return table
    addends = table.addends
    return RelocTable(name=table.name, offsets=[table.offsets[k] for k in keep],
                      types=[table.types[k] for k in keep],
                      syms=[table.syms[k] for k in keep],
                      addends=None if addends is None else [addends[k] for k in keep])


def _special(state: ModuleState, table: RelocTable, k: int, c: RelocClass | None, t: int,
             a: int, binder: Binder, view: memoryview, i: int,
             deferred: list[tuple[int, int]], tls: TlsHooks | None,
             fallback: Fallback | None) -> int | None:
    """The less common classes: IRELATIVE, COPY, FIELD, TLS; unknown -> fallback/error."""
    image = state.image
    spec = image.spec
    off = table.offsets[k]
    sym = table.syms[k]
    # The type's name only for messages: rtype_name imports the name tables (issue 8 T2).
    if c is RelocClass.IRELATIVE:
        deferred.append((i, image.base + a))
        return None
    if c is RelocClass.FIELD:
        fs: FieldSpec = spec.fields[t]
        s = binder.bind(sym, t, off)[0] if sym else 0
        val = s + a - ((image.base + off) if fs.pcrel else 0)
        bits = fs.width * 8
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fs.signed else \
            (0, (1 << bits) - 1)
        if not lo <= val <= hi:
            raise RelocationOverflowError(file=image.label, r_type=t,
                                          r_type_name=spec.rtype_name(t),
                                          symbol=_symname(state, sym), offset=off, value=val,
                                          bits=bits, signed=fs.signed)
        struct.pack_into({4: "<I", 8: "<Q"}[fs.width], view, i, val & ((1 << bits) - 1))
        return None
    if c is RelocClass.COPY:
        _copy(state, binder, sym, t, off, view, i)
        return None
    if c in (RelocClass.DTPMOD, RelocClass.DTPOFF, RelocClass.TPOFF, RelocClass.TLSDESC):
        if tls is None:
            raise UnsupportedRelocationError(
                file=image.label, r_type=t, r_type_name=spec.rtype_name(t),
                symbol=_symname(state, sym), offset=off,
                detail="thread-local storage relocations need the TLS runtime, which this "
                "load does not have")
        if sym:
            addr, _size, stype, prov = binder.bind(sym, t, off)
            if prov is None and not addr:  # an undefined weak TLS symbol, as ld.so does:
                if c is not RelocClass.TLSDESC:
                    return None  # DTPMOD / DTPOFF / TPOFF slots are left untouched
                undefweak = getattr(tls, "tlsdesc_undefweak", None)
                if undefweak is not None:  # a descriptor whose address is the addend
                    func, arg = undefweak(a)
                    fmt = "<Q" if spec.word_size == 8 else "<I"
                    struct.pack_into(fmt, view, i, func)
                    struct.pack_into(fmt, view, i + spec.word_size, arg)
                    return None
            if prov is None:
                raise UnknownSymbolError(file=image.label, r_type=t, r_type_name=spec.rtype_name(t),
                                         symbol=_symname(state, sym), offset=off)
            offset = (addr - prov.base if stype == STT_TLS and not getattr(prov, "is_host",
                                                                          False) else addr)
        else:
            prov, offset = state, 0
        if c is RelocClass.DTPMOD:
            return tls.dtpmod_at(prov, offset + a)
        if c is RelocClass.DTPOFF:
            return tls.dtpoff(prov, offset + a) - spec.tls_dtv_offset
        if c is RelocClass.TPOFF:
            return tls.tpoff(prov, offset + a)
        if table.addends is None:
            # REL TLS descriptors (i386) keep their addend in the second word.
            a = struct.unpack_from("<Q" if spec.word_size == 8 else "<I", view,
                                   i + spec.word_size)[0]
        func, arg = tls.tlsdesc(state, prov, offset + a)
        word = spec.word_size
        fmt = "<Q" if word == 8 else "<I"
        wmask = (1 << (8 * word)) - 1  # a variant-II argument is a negative offset
        struct.pack_into(fmt, view, i, func & wmask)
        struct.pack_into(fmt, view, i + word, arg & wmask)
        return None
    if fallback is not None:
        handled = fallback(state, table, k)
        if handled is not None:
            return handled
    raise UnsupportedRelocationError(file=image.label, r_type=t, r_type_name=spec.rtype_name(t),
                                     symbol=_symname(state, sym), offset=off)


def _symname(state: ModuleState, sym: int) -> str | None:
    syms = state.image.symbols
    if sym and syms is not None and sym < syms.count:
        return syms.names[sym]
    return None


def _copy(state: ModuleState, binder: Binder, sym: int, r_type: int, off: int,
          view: memoryview, i: int) -> None:
    """R_*_COPY: copy the definition's bytes, skipping providers of the same file."""
    image = state.image
    name = image.spec.rtype_name(r_type)  # messages only; COPY is rare (executables)
    syms = image.symbols
    if syms is None or not sym or sym >= syms.count:
        raise RelocationError("COPY relocation without a valid symbol", file=image.label,
                              r_type_name=name, offset=off)
    sname = syms.names[sym]
    size = syms.sizes[sym]
    # The place was checked for one word only: the whole copy must fit a writable
    # segment too, or a lying st_size would write past it (issue 9).
    if not any(s <= off and off + size <= e for s, e in _windows(image, False)):
        raise RelocationError(f"COPY of {size} bytes (st_size) does not fit a writable "
                              "segment of the module", file=image.label, r_type_name=name,
                              symbol=sname, offset=off)
    req = syms.versions.requirement(sym)
    version = req[0] if req else None
    for prov in binder.scope:
        if getattr(prov, "identity", None) == state.identity:
            continue
        found = prov.lookup(sname, version)
        if found is None:
            continue
        addr = found[0]
        if found[1] and found[1] != size:
            size = min(size, found[1])
        if isinstance(prov, ModuleState):
            data = prov.image.region.read(addr, size)
        elif hasattr(prov, "read"):
            data = prov.read(addr, size)
        elif not image.mapper.native:
            # Host memory never backs a foreign image's definitions.
            raise RelocationError(f"COPY of '{sname}' from {prov.name}, which is not in "
                                  "the target's address space", file=image.label,
                                  r_type_name=name, offset=off)
        else:
            _check_host_readable(image.label, name, sname, off, addr, size)
            data = ctypes.string_at(addr, size)
        view[i:i + size] = data
        binder.used[id(prov)] = prov
        return
    raise UnknownSymbolError(file=image.label, r_type_name=name, symbol=sname, offset=off,
                             searched=[p.name for p in binder.scope
                                       if getattr(p, "identity", None) != state.identity])


def _check_host_readable(label: str, r_type_name: str, sname: str, off: int, addr: int,
                         size: int) -> None:
    """A host definition's size is unknown (dlsym gives none): before copying st_size
    bytes from it, make sure they lie in one readable mapping, so a lying st_size is an
    error rather than a read of unmapped memory."""
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split(None, 2)[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= addr < hi:
                if "r" in perms and addr + size <= hi:
                    return
                break
    raise RelocationError(f"COPY of {size} bytes from the host definition at {addr:#x} "
                          "runs past its readable mapping (st_size is wrong)", file=label,
                          r_type_name=r_type_name, symbol=sname, offset=off)
