"""Native thread-local storage for relink-loaded modules (every x86_64 TLS model).

Runtime layer, host only; `relink.load()` gives the relocation loop `native_tls()` as
its `TlsHooks` (through a small proxy in relink.linker.linker that imports this module
the first time a module has PT_TLS or a TLS relocation). Each relink module with PT_TLS
gets a glibc carrier object (`tls_carrier.Carrier`, design.md §6), created lazily the
first time a relocation or a lookup needs that module's TLS, and released with the
module (``ModuleState.extras``).

How each relocation class is answered:

* DTPMOD64 -> the carrier's glibc module id; DTPOFF64 -> the offset in the block. Code
  then calls glibc's own ``__tls_get_addr`` (general / local dynamic).
* TPOFF64 (initial exec, GOTTPOFF) -> the block is moved to static TLS (`Carrier.promote`)
  and the thread-pointer offset is returned. When glibc's static surplus is exhausted
  this is a `TlsError` naming ``glibc.rtld.optional_static_tls``.
* TLSDESC (``-mtls-dialect=gnu2``) -> static when the block is (or can be put) in static
  TLS, as glibc prefers; otherwise a dynamic descriptor whose resolver preserves every
  register (`tls_stubs`). ``NativeTls(static_tlsdesc=False)`` always uses the dynamic one.

TLS symbols defined by host libraries (glibc's own, or any dlopened library) resolve
through ``dl_iterate_phdr``: the block that contains the calling thread's address of the
symbol gives glibc's module id and the offset; a block inside the thread's static TLS
area also serves initial-exec references.

The initialization image must be the *relocated* PT_TLS bytes (a ``__thread`` pointer
needs its RELATIVE relocation). A carrier created while its module is still being
relocated starts from the file's bytes with RELR / RELATIVE entries applied; when the
module's relocation finishes (`NativeTls.relocated`) the final bytes are copied in. That
is sound for dynamic blocks, which no thread can have touched yet; a static block is
copied into every thread when it is promoted, so promotion of a block whose image holds
symbol (non-RELATIVE) relocations waits until they are known, and an initial-exec
request before that is refused with a clear error.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import struct
import threading
from typing import TYPE_CHECKING, Any

from relink.arch import RelocClass
from relink.errors import SymbolNotFoundError, TlsError, UnsupportedError
from relink.relocation.dynamic import TlsHooks
from relink.runtime import libc as c
from relink.state import ModuleState

if TYPE_CHECKING:
    from relink.runtime.tls_carrier import Carrier
    from relink.runtime.tls_stubs import TlsdescStubs

__all__ = ["STATIC_TLS_TUNABLE", "HostTlsBlock", "NativeTls", "host_tls_block", "native_tls",
           "tls_address"]

STT_TLS = 6
PT_TLS = 7
_PHDR = struct.Struct("<IIQQQQQQ")


# relink.runtime.tls_carrier / tls_stubs load with the first module that needs a carrier
# or a descriptor stub, not with this module (~1 ms). Hence tls_carrier's constant
# spelled out again (a test checks they agree).
STATIC_TLS_TUNABLE = "glibc.rtld.optional_static_tls"


def _stubs() -> TlsdescStubs:
    """The TLSDESC resolver stubs of this process."""
    from relink.runtime.tls_carrier import tls_get_addr_address
    from relink.runtime.tls_stubs import stubs

    return stubs(tls_get_addr_address())


class HostTlsBlock:
    """A TLS block the host's dynamic linker owns (glibc, or a dlopened library)."""

    __slots__ = ("name", "modid", "start", "size", "tp_offset", "slot")

    def __init__(self, name: str, modid: int, start: int, size: int,
                 tp_offset: int | None) -> None:
        self.name = name
        self.modid = modid
        self.start = start  # the calling thread's block
        self.size = size
        self.tp_offset = tp_offset  # set when the block is in static TLS
        self.slot: tuple[int, int] | None = None  # glibc's (generation, link_map) of modid


_static_size: list[int | None] = []


def _static_tls_size() -> int | None:
    """glibc's static TLS area size (``_dl_get_tls_static_info``), None if unknown; fixed
    at startup, so asked once."""
    if not _static_size:
        addr = c.dlsym(c.RTLD_DEFAULT, b"_dl_get_tls_static_info")
        size: int | None = None
        if addr:
            fn = c.TLS_STATIC_INFO(addr)
            raw, align = ctypes.c_size_t(), ctypes.c_size_t()
            fn(ctypes.byref(raw), ctypes.byref(align))
            size = raw.value
        _static_size.append(size)
    return _static_size[0]


class _HostBlocks(threading.local):
    """The calling thread's host TLS blocks as of one host load generation.

    ``dl_iterate_phdr`` reports each object's block *of the calling thread*
    (``dlpi_tls_data``), and only once that thread allocated it; blocks move only when
    objects are loaded or unloaded (glibc's ``dlpi_adds`` / ``dlpi_subs``, the host
    generation) or the thread exits. So the list is kept per thread and per generation,
    and walked again on a miss (a block allocated since). After a load or unload, a
    cached block is still answered if glibc's slot for its module id holds the same
    (generation, link_map) as at the walk (`tls_threads.slot_entry`): then the same
    object still has the id and this thread's block for it has not moved.
    """

    generation: tuple[int, int] | None = None
    blocks: tuple[HostTlsBlock, ...] = ()


_host_blocks = _HostBlocks()


def _walk_host_blocks() -> tuple[HostTlsBlock, ...]:
    """Every TLS block the calling thread has allocated, from ``dl_iterate_phdr``."""
    from relink.runtime.tls_threads import slot_entry

    found: list[HostTlsBlock] = []

    def visit(info_p: Any, _size: int, _data: Any) -> int:
        info = info_p.contents
        if not info.dlpi_tls_modid or not info.dlpi_tls_data:
            return 0
        for i in range(info.dlpi_phnum):
            ph = _PHDR.unpack(ctypes.string_at(info.dlpi_phdr + i * _PHDR.size, _PHDR.size))
            if ph[0] == PT_TLS:
                name = (info.dlpi_name or b"").decode(errors="replace") or "<main>"
                block = HostTlsBlock(name, int(info.dlpi_tls_modid),
                                     int(info.dlpi_tls_data), ph[6], None)
                # Read while glibc holds its list lock: the object is listed, so its id
                # is its own (or, while it is being closed, cleared: map NULL).
                slot = slot_entry(block.modid)
                block.slot = slot if slot is not None and slot[1] else None
                found.append(block)
                break
        return 0

    # No garbage collection inside the callback: a finalizer that unloads a module
    # (dlclose) would change the list glibc is walking.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        c.dl_iterate_phdr(c.DL_ITERATE_PHDR_CALLBACK(visit), None)
    finally:
        if was_enabled:
            gc.enable()
    tp = int(c.pthread_self() or 0)
    static = _static_tls_size()
    for block in found:
        if static is not None and tp - static <= block.start < tp:
            block.tp_offset = block.start - tp
    return tuple(found)


def _lookup(blocks: tuple[HostTlsBlock, ...], addr: int) -> HostTlsBlock | None:
    for block in blocks:
        if block.start <= addr < block.start + max(block.size, 1):
            return block
    return None


def _slot_entry(modid: int) -> tuple[int, int] | None:
    from relink.runtime.tls_threads import slot_entry

    return slot_entry(modid)


def host_tls_block(addr: int) -> HostTlsBlock | None:
    """The host-owned TLS block holding the calling thread's address `addr`, or None.

    Cached per thread and per host load generation (see `_HostBlocks`): a load that
    binds several host TLS symbols walks the host's objects once, not per symbol, and
    after the host loaded or unloaded something a cached block whose module id is
    unchanged is answered without a walk.
    """
    from relink.runtime.host import _generation

    cache = _host_blocks
    gen = _generation()  # read before the walk: a load during it forces another
    if cache.generation is not None:
        hit = _lookup(cache.blocks, addr)
        if hit is not None and (cache.generation == gen or (
                hit.slot is not None and _slot_entry(hit.modid) == hit.slot)):
            return hit
    blocks = _walk_host_blocks()
    cache.generation, cache.blocks = gen, blocks
    return _lookup(blocks, addr)


def _is_program(state: ModuleState) -> bool:
    """ET_EXEC, or a PIE (DF_1_PIE): code that uses local-exec TLS for its own block."""
    dyn = state.image.dynamic
    return state.image.header.e_type == 2 or bool(dyn is not None
                                                  and dyn.flags_1 & 0x08000000)


class _TlsRecord:
    """Per-module TLS bookkeeping, stored on the ModuleState itself (no global table).

    No lock is held while carriers are built: a garbage-collector finalizer running
    inside a locked section (relink's leases release contexts from finalizers) could
    otherwise wait for a thread that waits for that lock.
    """

    __slots__ = ("carrier", "pending", "relocated", "binder", "keep")

    def __init__(self) -> None:
        self.carrier: Carrier | None = None
        self.pending = False  # image may still change (symbol relocations in .tdata)
        self.relocated = False
        self.binder: Any = None  # the Binder of the module while it is being relocated
        self.keep: list[Any] | None = None  # dynamic TLSDESC arguments it points to


_install = threading.Lock()  # guards only the check-and-set of a record (or its carrier)


def _record(state: ModuleState) -> _TlsRecord:
    """The TLS record of `state` (created on first use)."""
    rec: _TlsRecord | None = state.tls_record
    if rec is None:
        # Allocated outside the lock (a GC finalizer may run on an allocation); the
        # check-and-set allocates nothing.
        new = _TlsRecord()
        with _install:
            rec = state.tls_record
            if rec is None:
                rec = state.tls_record = new
    return rec


def _release(car: Carrier, rec: _TlsRecord, poolable: bool) -> None:
    """Release hook of a module's carrier: pooled only after a complete relocation (a
    failed load leaves nothing behind) and only for modules `_dynamic_only` admits."""
    car.release(pool=poolable and rec.relocated)


_STATIC_CLASSES = (RelocClass.TPOFF, RelocClass.TLSDESC)
_dynamic_cache: dict[int, tuple[Any, Any, bool]] = {}
_DYNAMIC_CACHE = 32


def _dynamic_only(image: Any) -> bool:
    """True if no code can ever ask for this module's block in static TLS.

    That is: no DF_STATIC_TLS, no TPOFF / TLSDESC relocation of its own, and no defined
    non-local STT_TLS symbol (the only way another module's initial-exec or TLSDESC code
    could reach the block). Only such modules may be lent a pooled carrier, which glibc
    may already serve as dynamic TLS for good. Cached per parsed file.
    """
    dyn = image.dynamic
    if dyn is None or dyn.static_tls:
        return False
    tables = image.relocation_tables()  # decoded once per file, cached with it
    syms = image.symbols
    hit = _dynamic_cache.get(id(tables))
    if hit is not None and hit[0] is tables and hit[1] is syms:
        return bool(hit[2])
    classes = image.spec.classes
    ok = not any(classes.get(t) in _STATIC_CLASSES
                 for table in tables[0] for t in set(table.types))
    if ok and syms is not None:
        ok = not any((info & 0xF) == STT_TLS and info >> 4 != 0 and shndx != 0
                     for info, shndx in zip(syms.infos, syms.shndx))
    if len(_dynamic_cache) >= _DYNAMIC_CACHE:
        _dynamic_cache.pop(next(iter(_dynamic_cache)), None)
    _dynamic_cache[id(tables)] = (tables, syms, ok)
    return ok


class NativeTls(TlsHooks):
    """The TLS runtime of native loads: glibc carriers, host TLS, TLSDESC stubs.

    Args:
        static_tlsdesc: resolve TLSDESC to static TLS when the block fits there (glibc's
            choice, the fastest); False always uses the dynamic resolver.
    """

    def __init__(self, *, static_tlsdesc: bool = True) -> None:
        self.static_tlsdesc = static_tlsdesc

    # -- carriers -----------------------------------------------------------------------

    def carrier(self, state: ModuleState) -> Carrier:
        """The carrier of `state`'s PT_TLS (created on first use)."""
        rec = _record(state)
        car = rec.carrier
        if car is not None:
            if not car.loaded:
                raise TlsError("the module's TLS was released (module closed)",
                               file=state.image.label)
            return car
        tls = state.image.tls
        if tls is None:
            raise TlsError("a TLS reference binds to this module, but it has no PT_TLS "
                           "segment", file=state.image.label)
        image, pending = self._initial_image(state, rec)
        from relink.runtime import tls_pool
        from relink.runtime.tls_carrier import Carrier

        align = max(tls.p_align, 1)
        poolable = _dynamic_only(state.image)
        lent = tls_pool.take(image, tls.p_memsz, align, tls.p_vaddr, final=not pending) \
            if poolable else None
        new = Carrier(state.image.label, image, tls.p_memsz, align, tls.p_vaddr,
                      reuse=lent)
        with _install:
            won = rec.carrier is None
            if won:
                rec.carrier, rec.pending = new, pending
        if not won:  # another thread built one first: use it
            new.release()
            return self.carrier(state)
        state.tls_runtime = self  # ModuleState.symbol() delegates STT_TLS
        state.extras.append(functools.partial(_release, new, rec, poolable))
        return new

    def _initial_image(self, state: ModuleState, rec: _TlsRecord) -> tuple[bytes, bool]:
        """The PT_TLS image as relocation leaves it, and whether that is not known yet."""
        image = state.image
        tls = image.tls
        assert tls is not None
        start, size = tls.p_vaddr, tls.p_filesz
        if not size:
            return b"", False
        if rec.relocated or state.state != "mapped":
            return image.region.read(image.base + start, size), False
        data = bytearray(image.source.read(tls.p_offset, size))
        dyn = image.dynamic
        if dyn is None:
            return bytes(data), False
        spec = image.spec
        tables, relr = image.relocation_tables()  # decoded once, cached with the file
        pending = False
        binder = rec.binder
        for off in relr:
            if start <= off < start + size:
                i = off - start
                val = struct.unpack_from("<Q", data, i)[0] + image.base
                struct.pack_into("<Q", data, i, val & (2**64 - 1))
        for t in tables:
            for k, off in enumerate(t.offsets):
                if not start <= off < start + size:
                    continue
                cls = spec.classes.get(t.types[k])
                addend = t.addends[k] if t.addends is not None else None
                if addend is None or off + 8 > start + size:
                    pending = True
                elif cls is RelocClass.RELATIVE:
                    struct.pack_into("<Q", data, off - start, (image.base + addend) % 2**64)
                elif cls in (RelocClass.SYMBOLIC, RelocClass.GLOB_DAT) and binder is not None:
                    # bind now, as the loop will (the binder caches the result)
                    sym = t.syms[k]
                    s = binder.bind(sym, t.types[k], off)[0] if sym else 0
                    struct.pack_into("<Q", data, off - start, (s + addend) % 2**64)
                elif cls is not RelocClass.NONE:
                    pending = True
        return bytes(data), pending

    def relocating(self, module: ModuleState, binder: Any) -> None:
        """Remember the binder, so an early carrier can compute its relocated image."""
        _record(module).binder = binder  # a module <-> binder cycle the GC collects

    def relocated(self, module: ModuleState) -> None:
        """The module's relocations are done: make its carrier's image the final bytes."""
        rec = _record(module)
        rec.relocated, rec.binder = True, None
        if module.image.tls is not None and module.image.tls.p_memsz and _is_program(module):
            raise TlsError(
                "this program has its own thread-local variables, which its code reaches "
                "with local-exec accesses at offsets from the thread pointer fixed at link "
                "time; in this process those offsets belong to the host program's TLS, so "
                "it cannot run here: use relink.execute() to run it in its own process",
                file=module.image.label)
        if module.image.tls is not None:
            module.tls_runtime = self
        car = rec.carrier
        rec.pending = False
        if car is None or not car.image_size:
            return
        tls = module.image.tls
        assert tls is not None
        final = module.image.region.read(module.image.base + tls.p_vaddr, tls.p_filesz)
        if final != car.image():
            if car.static_offset is not None:  # refused in _promote; kept as a guard
                raise TlsError("internal error: static TLS image changed after "
                               "promotion", file=module.image.label)
            car.patch_image(final)

    def _promote(self, state: ModuleState) -> int:
        car = self.carrier(state)
        if car.static_offset is None and _record(state).pending:
            raise UnsupportedError(
                "initial-exec / static TLSDESC access to a TLS block whose initial image "
                "holds symbol relocations, requested before the module finished "
                "relocating: the block cannot be placed in static TLS with its final "
                "bytes", file=state.image.label)
        return car.promote()

    # -- TlsHooks -----------------------------------------------------------------------

    def _host_block(self, provider: Any, addr: int) -> HostTlsBlock:
        block = host_tls_block(addr)
        if block is None:
            raise TlsError(f"TLS symbol bound to host library {provider.name} at {addr:#x}, "
                           "but no host TLS block contains that address")
        return block

    def dtpmod(self, provider: Any) -> int:
        if isinstance(provider, ModuleState):
            return self.carrier(provider).modid
        raise TlsError(f"a module-id (DTPMOD) relocation without a symbol cannot refer to "
                       f"{getattr(provider, 'name', provider)!r}")

    def dtpmod_at(self, provider: Any, address: int) -> int:
        if isinstance(provider, ModuleState):
            return self.carrier(provider).modid
        return self._host_block(provider, address).modid

    def dtpoff(self, provider: Any, offset: int) -> int:
        if isinstance(provider, ModuleState):
            return offset
        return offset - self._host_block(provider, offset).start

    def tpoff(self, provider: Any, offset: int) -> int:
        if isinstance(provider, ModuleState):
            return self._promote(provider) + offset
        block = self._host_block(provider, offset)
        if block.tp_offset is None:
            raise TlsError(f"initial-exec TLS reference to a variable of {block.name}, "
                           "whose block the host placed in dynamic TLS (glibc would refuse "
                           "this too)", tunable=STATIC_TLS_TUNABLE)
        return block.tp_offset + offset - block.start

    def tlsdesc(self, module: ModuleState, provider: Any, offset: int) -> tuple[int, int]:
        st = _stubs()
        if isinstance(provider, ModuleState):
            car = self.carrier(provider)
            if car.static_offset is None and self.static_tlsdesc \
                    and not _record(provider).pending:
                try:
                    car.promote()
                except TlsError:
                    pass  # no static room left: glibc falls back to dynamic too
            if car.static_offset is not None:
                return st.static, (car.static_offset + offset) % 2**64
            return self._dynamic_desc(module, st.dynamic, car.modid, offset)
        block = self._host_block(provider, offset)
        if block.tp_offset is not None:
            return st.static, (block.tp_offset + offset - block.start) % 2**64
        return self._dynamic_desc(module, st.dynamic, block.modid, offset - block.start)

    def tlsdesc_undefweak(self, addend: int) -> tuple[int, int]:
        """TLSDESC against an undefined weak symbol: ``&var`` evaluates to `addend`."""
        return _stubs().undefweak, addend % 2**64

    def _dynamic_desc(self, module: ModuleState, func: int, modid: int,
                      offset: int) -> tuple[int, int]:
        index = c.TlsIndex(modid, offset)
        rec = _record(module)  # relocation of one module runs in one thread
        if rec.keep is None:
            rec.keep = []
            module.extras.append(rec.keep.clear)
        rec.keep.append(index)  # the descriptor points here while the module is loaded
        return func, ctypes.addressof(index)

    # -- lookups ------------------------------------------------------------------------

    def symbol_address(self, state: ModuleState, name: str, version: str | None) -> int:
        """The calling thread's address of TLS variable `name` defined by `state`."""
        syms = state.image.symbols
        i = syms.find(name, version, exact=version is not None) if syms is not None else None
        if i is None or syms is None:
            raise SymbolNotFoundError(name, file=state.image.label, version=version)
        if syms.infos[i] & 0xF != STT_TLS:
            raise TlsError(f"'{name}' is not a thread-local variable", file=state.image.label)
        return self.carrier(state).address(syms.values[i])


_native: list[NativeTls] = []
_native_lock = threading.Lock()


def native_tls() -> NativeTls:
    """The process-wide TLS runtime used by native loads."""
    if not _native:
        inst = NativeTls()  # built outside the lock (see _TlsRecord)
        with _native_lock:
            if not _native:
                _native.append(inst)
    return _native[0]


def tls_address(state: Any, name: str, version: str | None = None) -> int:
    """The calling thread's address of TLS variable `name` of a module's state.

    Relink modules go through their TLS runtime; host libraries through ``dlsym``
    (which glibc answers per thread for STT_TLS symbols).
    """
    if isinstance(state, ModuleState):
        if state.image.tls is None:
            raise TlsError("the module has no thread-local storage (no PT_TLS)",
                           file=state.image.label)
        if not state.image.mapper.native:
            raise UnsupportedError("thread-local variables of a foreign or virtual image "
                                   "have no address in this process", file=state.image.label)
        runtime = getattr(state, "tls_runtime", None) or native_tls()
        return int(runtime.symbol_address(state, name, version))
    addr = state.symbol(name, version)
    if not addr:
        raise SymbolNotFoundError(name, file=getattr(state, "name", None), version=version)
    return int(addr)
