"""glibc TLS "carrier" objects: tiny ELF files that make glibc own a module's TLS block.

Runtime layer, native x86_64 + glibc only (design.md §6, feasibility.md §4). relink does
not allocate thread-local storage itself: for each relink-loaded module with PT_TLS it
writes a minimal shared object holding only that TLS segment (initialization image,
size, alignment) to a memfd and ``dlopen``s it from ``/proc/self/fd/N``. glibc then gives
it a module id, allocates a block per thread lazily (initialized from the image, freed
at thread exit) and serves ``__tls_get_addr`` for it at native speed. The relink module's
DTPMOD / DTPOFF relocations point at the carrier's module id.

Initial-exec TLS (TPOFF) needs the block in the static TLS area at a fixed offset from
the thread pointer. glibc only places a block there when a relocation demands it, so
relink dlopens a second, throw-away "promoter" object: it names the carrier in DT_NEEDED
(matched by its ``/proc/self/fd/N`` path) and carries one ``R_X86_64_TPOFF64`` against
the carrier's exported TLS symbol. glibc moves the carrier's block to static TLS,
initializes it in every existing thread, and writes the (negative) thread-pointer offset
into the promoter's data word, which relink reads before closing the promoter.

The memfd stays open as long as the carrier is loaded: glibc matches loaded objects by
path, so a reused ``/proc/self/fd/N`` would silently return an older carrier.

A `Carrier` is one module's lease of a `CarrierObject` (the dlopened object). Releasing
it either closes the object or, for modules `relink.runtime.tls` admits, hands it to
`relink.runtime.tls_pool`, which may lend it, re-initialised, to a later module. The
object bytes are cached per (image, size, alignment), so repeated loads of one module
do not rebuild them.
"""

from __future__ import annotations

import ctypes
import os
import struct

from relink.errors import TlsError
from relink.runtime import libc as c
from relink.runtime import tls_pool

__all__ = ["STATIC_TLS_TUNABLE", "Carrier", "CarrierObject", "build_tls_object"]

STATIC_TLS_TUNABLE = "glibc.rtld.optional_static_tls"
_SYMBOL = b"__relink_tls_block"
_MAX_TLS_ALIGN = 1 << 20  # larger PT_TLS alignments / sizes are refused as malformed
_MAX_TLS_SIZE = 1 << 30
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SYM = struct.Struct("<IBBHQQ")
_DYN = struct.Struct("<qQ")
_RELA = struct.Struct("<QQq")
PT_LOAD, PT_DYNAMIC, PT_TLS, PT_GNU_STACK = 1, 2, 7, 0x6474E551
PF_W, PF_R = 2, 4
DT_NULL, DT_NEEDED, DT_HASH, DT_STRTAB, DT_SYMTAB = 0, 1, 4, 5, 6
DT_RELA, DT_RELASZ, DT_RELAENT, DT_STRSZ, DT_SYMENT = 7, 8, 9, 10, 11
STT_TLS, STB_GLOBAL = 6, 1
R_X86_64_TPOFF64 = 18
EM_X86_64 = 62
MFD_CLOEXEC = 1


def _align(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


def build_tls_object(*, image: bytes = b"", memsz: int = 0, align: int = 1,
                     vaddr_mod: int = 0, needed: str | None = None,
                     label: str | None = None) -> bytes:
    """The bytes of a carrier (``needed`` None) or of a promoter (``needed`` = carrier path).

    A carrier has a PT_TLS segment (`image`, `memsz`, `align`, its file offset congruent to
    `vaddr_mod` modulo `align` so variables keep their alignment) and exports one
    STT_TLS symbol at offset 0. A promoter imports that symbol and holds one TPOFF64
    relocation against it, into a data word at the vaddr `promoter_word` returns.
    """
    if align < 1 or align & (align - 1):
        raise TlsError(f"PT_TLS alignment {align} is not a power of two", file=label)
    if align > _MAX_TLS_ALIGN or memsz > _MAX_TLS_SIZE:
        # A lying header must not become a huge carrier (OverflowError / MemoryError,
        # found by the issue 9 native fuzzer) or an absurd request to glibc.
        raise TlsError(f"PT_TLS alignment {align:#x} / size {memsz:#x} is absurd (limits "
                       f"{_MAX_TLS_ALIGN:#x} / {_MAX_TLS_SIZE:#x})", file=label)
    if memsz < len(image):
        raise TlsError(f"PT_TLS memsz {memsz} is smaller than its filesz {len(image)}",
                       file=label)
    carrier = needed is None
    phnum = 4 if carrier else 3
    strtab = b"\0" + _SYMBOL + b"\0"
    need_off = len(strtab)
    if needed is not None:
        strtab += needed.encode("utf-8", "surrogateescape") + b"\0"
    symtab_off = _align(_EHDR.size + phnum * _PHDR.size, 8)
    # index 0: null; index 1: the TLS symbol (defined in a carrier, imported by a promoter)
    sym = _SYM.pack(1, (STB_GLOBAL << 4) | STT_TLS, 0, 1 if carrier else 0, 0, 0)
    syms = bytes(_SYM.size) + sym
    hash_off = symtab_off + len(syms)
    hashtab = struct.pack("<5I", 1, 2, 1, 0, 0)  # nbucket=1, nchain=2, bucket[0]=1
    str_off = hash_off + len(hashtab)
    rela_off = _align(str_off + len(strtab), 8)
    word_off = rela_off + _RELA.size
    dyn_off = word_off + 8 if not carrier else rela_off
    dyn = [(DT_HASH, hash_off), (DT_STRTAB, str_off), (DT_SYMTAB, symtab_off),
           (DT_STRSZ, len(strtab)), (DT_SYMENT, _SYM.size)]
    if not carrier:
        dyn = [(DT_NEEDED, need_off), *dyn, (DT_RELA, rela_off), (DT_RELASZ, _RELA.size),
               (DT_RELAENT, _RELA.size)]
    dyn.append((DT_NULL, 0))
    dynamic = b"".join(_DYN.pack(t, v) for t, v in dyn)
    end = dyn_off + len(dynamic)
    tls_off = end
    if carrier:
        tls_off = _align(end, align) + (vaddr_mod % align)
        end = tls_off + len(image)
    out = bytearray(end)
    phdrs = [_PHDR.pack(PT_LOAD, PF_R | PF_W, 0, 0, 0, end, end, 0x1000),
             _PHDR.pack(PT_DYNAMIC, PF_R | PF_W, dyn_off, dyn_off, dyn_off, len(dynamic),
                        len(dynamic), 8)]
    if carrier:
        phdrs.append(_PHDR.pack(PT_TLS, PF_R, tls_off, tls_off, tls_off, len(image), memsz,
                                align))
    phdrs.append(_PHDR.pack(PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 0, 0, 16))
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    out[0:_EHDR.size] = _EHDR.pack(ident, 3, EM_X86_64, 1, 0, _EHDR.size, 0, 0, _EHDR.size,
                                   _PHDR.size, phnum, 64, 0, 0)
    out[_EHDR.size:_EHDR.size + phnum * _PHDR.size] = b"".join(phdrs)
    out[symtab_off:symtab_off + len(syms)] = syms
    out[hash_off:hash_off + len(hashtab)] = hashtab
    out[str_off:str_off + len(strtab)] = strtab
    if not carrier:
        out[rela_off:rela_off + _RELA.size] = _RELA.pack(word_off, (1 << 32) | R_X86_64_TPOFF64,
                                                         0)
    out[dyn_off:dyn_off + len(dynamic)] = dynamic
    if carrier:
        out[tls_off:tls_off + len(image)] = image
    return bytes(out)


_blobs: dict[tuple[bytes, int, int, int], tuple[bytes, int]] = {}
_BLOB_CACHE = 32  # entries; images larger than _BLOB_IMAGE are never cached
_BLOB_IMAGE = 4096


def _carrier_blob(image: bytes, memsz: int, align: int, vaddr_mod: int,
                  label: str) -> tuple[bytes, int]:
    """A carrier's bytes and its PT_TLS file offset (cached: a module reloaded over and
    over asks for the same object every time)."""
    key = (image, memsz, align, vaddr_mod)
    hit = _blobs.get(key)
    if hit is not None:
        return hit
    blob = build_tls_object(image=image, memsz=memsz, align=align, vaddr_mod=vaddr_mod,
                            label=label)
    tls_off = next(ph[3] for ph in (_PHDR.unpack_from(blob, _EHDR.size + i * _PHDR.size)
                                    for i in range(4)) if ph[0] == PT_TLS)
    if len(image) <= _BLOB_IMAGE:
        if len(_blobs) >= _BLOB_CACHE:
            _blobs.pop(next(iter(_blobs)), None)
        _blobs[key] = (blob, tls_off)
    return blob, tls_off


def promoter_word(blob: bytes) -> int:
    """Link-time address of a promoter's TPOFF64 target (read back from its RELA entry)."""
    for i in range(_EHDR.unpack_from(blob)[10]):
        p_type, _f, off, *_ = _PHDR.unpack_from(blob, _EHDR.size + i * _PHDR.size)
        if p_type == PT_DYNAMIC:
            while True:
                tag, val = _DYN.unpack_from(blob, off)
                if tag == DT_RELA:
                    return int(_RELA.unpack_from(blob, val)[0])
                if tag == DT_NULL:
                    break
                off += _DYN.size
    raise TlsError("internal error: promoter object without a relocation")


class _MemfdObject:
    """An ELF written to a memfd and dlopened from /proc/self/fd/N (fd kept open)."""

    def __init__(self, blob: bytes, label: str) -> None:
        if c.memfd_create is None:
            raise TlsError("this libc has no memfd_create: relink's TLS carriers need it")
        fd = c.memfd_create(f"relink-tls:{label}"[:240].encode("utf-8", "surrogateescape"),
                            MFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise TlsError(f"memfd_create failed: {c.errno_message(err)}", file=label)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            self.path = f"/proc/self/fd/{fd}"
            handle = c.dlopen(self.path.encode(), c.RTLD_NOW | c.RTLD_LOCAL)
            if not handle:
                raise _dl_failure(label, "dlopen of its TLS carrier")
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.handle = handle

    def link_map(self) -> int:
        """The object's ``struct link_map`` (glibc's, as dlinfo(RTLD_DI_LINKMAP) gives it)."""
        lm = ctypes.c_void_p()
        if c.dlinfo(self.handle, c.RTLD_DI_LINKMAP, ctypes.byref(lm)) != 0 or not lm.value:
            raise _dl_failure(self.path, "dlinfo(RTLD_DI_LINKMAP)")
        return lm.value

    def link_map_addr(self) -> int:
        """``l_addr`` of the object (the first field of glibc's public struct link_map)."""
        return ctypes.c_size_t.from_address(self.link_map()).value

    def close(self) -> None:
        if self.handle:
            if c.dlclose(self.handle) != 0:
                c.dlerror()
            self.handle = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _dl_failure(label: str, what: str) -> TlsError:
    raw = c.dlerror()
    msg = raw.decode(errors="replace") if raw else "unknown error"
    if "static TLS" in msg:
        return TlsError(
            f"{what} failed: {msg}. glibc's static TLS surplus is exhausted (initial-exec "
            f"TLS blocks must live there); start Python with GLIBC_TUNABLES="
            f"{STATIC_TLS_TUNABLE}=<bytes> to enlarge it", file=label,
            tunable=STATIC_TLS_TUNABLE)
    return TlsError(f"{what} failed: {msg}", file=label)


_dlinfo = c.dlinfo


class CarrierObject:
    """One dlopened carrier object: a glibc module id and its TLS block.

    `Carrier` leases one to a module; `tls_pool` may lend a released one to the next
    module whose block fits (see there for when that is sound).

    Attributes:
        modid: glibc's TLS module id.
        image_addr / filesz: glibc's initialization image of the block (in the object).
        memsz / align / vaddr_mod: the block's size, alignment and first-byte offset.
        static_offset: thread-pointer offset once the block is in static TLS, else None.
        forced_dynamic: True once a dynamic address was asked for (see `Carrier`).
        slot_gen: glibc's generation of the module id (read by `tls_threads` when the
            pool first needs it; it does not change while the object is loaded).
    """

    __slots__ = ("obj", "modid", "image_addr", "filesz", "memsz", "align", "vaddr_mod",
                 "static_offset", "forced_dynamic", "slot_gen")

    def __init__(self, label: str, image: bytes, memsz: int, align: int,
                 vaddr_mod: int) -> None:
        blob, tls_off = _carrier_blob(image, memsz, align, vaddr_mod, label)
        self.obj = _MemfdObject(blob, label)
        try:
            modid = ctypes.c_size_t()
            if c.dlinfo(self.obj.handle, c.RTLD_DI_TLS_MODID, ctypes.byref(modid)) != 0 \
                    or not modid.value:
                raise _dl_failure(label, "dlinfo(RTLD_DI_TLS_MODID) on its TLS carrier")
            self.modid = modid.value
            self.image_addr = self.obj.link_map_addr() + tls_off
        except BaseException:
            self.obj.close()
            raise
        self.filesz = len(image)
        self.memsz = memsz
        self.align = align
        self.vaddr_mod = vaddr_mod
        self.static_offset: int | None = None
        self.forced_dynamic = False
        self.slot_gen: int | None = None

    def thread_block(self) -> int:
        """The calling thread's block, or 0 when this thread has not allocated it.

        Never allocates (``dlinfo(RTLD_DI_TLS_DATA)`` is glibc's ``_dl_tls_get_addr_soft``:
        NULL when the thread's DTV does not know this module id's current generation or
        its slot is unallocated).
        """
        if self.static_offset is not None:
            return int(c.pthread_self() or 0) + self.static_offset
        data = ctypes.c_void_p()
        if _dlinfo(self.obj.handle, c.RTLD_DI_TLS_DATA, ctypes.byref(data)) != 0:
            c.dlerror()
            return 0
        return data.value or 0

    def set_image(self, image: bytes) -> None:
        """Make `image` (zero-padded to the object's filesz) the initialization image."""
        n = len(image)
        if n:
            ctypes.memmove(self.image_addr, image, n)
        if self.filesz > n:
            ctypes.memset(self.image_addr + n, 0, self.filesz - n)

    def close(self) -> None:
        """dlclose (glibc frees the module id and every thread's block), close the memfd."""
        self.obj.close()


class Carrier:
    """glibc's view of one relink module's TLS segment (a lease of a `CarrierObject`).

    Attributes:
        label: the relink module it carries (for messages).
        modid: glibc's TLS module id (what DTPMOD relocations get).
        memsz: the size of the block.
        reused: True when the object came from `tls_pool` (a closed module's carrier,
            re-initialised for this one).
        static_offset: thread-pointer offset of the block once it is in static TLS
            (negative on x86_64), else None.
        forced_dynamic: True once Python asked glibc for a dynamic address; glibc then
            refuses to move the block to static TLS.
    """

    def __init__(self, label: str, image: bytes, memsz: int, align: int,
                 vaddr_mod: int, *, reuse: CarrierObject | None = None) -> None:
        self.label = label
        self.memsz = memsz
        self.image_size = len(image)
        self.reused = reuse is not None
        self._obj = reuse if reuse is not None else CarrierObject(label, image, memsz,
                                                                  align, vaddr_mod)
        self._live = True
        self.modid = self._obj.modid
        self.image_addr = self._obj.image_addr

    @property
    def static_offset(self) -> int | None:
        return self._obj.static_offset

    @property
    def forced_dynamic(self) -> bool:
        return self._obj.forced_dynamic

    @property
    def path(self) -> str:
        return self._obj.obj.path

    @property
    def loaded(self) -> bool:
        return self._live and bool(self._obj.obj.handle)

    def _check(self) -> CarrierObject:
        if not self._live:
            raise TlsError("the module's TLS was released (module closed)", file=self.label)
        return self._obj

    def image(self) -> bytes:
        """The initialization image glibc copies into each thread's block."""
        return ctypes.string_at(self.image_addr, self.image_size)

    def patch_image(self, data: bytes) -> None:
        """Replace the initialization image (only sound before any thread used the block).

        A reused object's block may already be allocated in threads (their copies were
        re-initialised with the earlier image when it was lent): those copies are
        rewritten by `tls_pool.refresh`, and if that is refused this is an error rather
        than stale data (`tls_pool.take` lends a block whose image may still change only
        to a single-threaded process, where the rewrite cannot be refused).
        """
        obj = self._check()
        if len(data) != self.image_size:
            raise TlsError("internal error: TLS image size changed", file=self.label)
        ctypes.memmove(self.image_addr, data, len(data))
        if self.reused and not tls_pool.refresh(obj):
            raise TlsError("internal error: a lent TLS block's image changed after lending "
                           "and another thread's copy could not be rewritten",
                           file=self.label)

    def promote(self) -> int:
        """Move the block to static TLS (once) and return its thread-pointer offset."""
        # No lock: two racing promoters get the same offset (glibc moves a block once),
        # and holding a lock across dlopen invites GC-finalizer deadlocks.
        obj = self._check()
        if obj.static_offset is not None:
            return obj.static_offset
        if obj.forced_dynamic:
            raise TlsError(
                "initial-exec TLS access to a block glibc already serves as dynamic TLS "
                "(a thread used it before this load); glibc cannot move it to static "
                "TLS", file=self.label, tunable=None)
        blob = build_tls_object(needed=self.path)
        promoter = _MemfdObject(blob, f"{self.label} (static TLS)")
        try:
            word = promoter.link_map_addr() + promoter_word(blob)
            offset = ctypes.c_int64.from_address(word).value
        finally:
            promoter.close()
        obj.static_offset = offset
        return offset

    def address(self, offset: int) -> int:
        """The calling thread's address of byte `offset` of the block."""
        obj = self._check()
        if obj.static_offset is not None:
            return int(c.pthread_self() or 0) + obj.static_offset + offset
        obj.forced_dynamic = True
        return tls_get_addr(self.modid, offset)

    def release(self, *, pool: bool = False) -> None:
        """End the lease: dlclose the object (glibc frees its module id and blocks) and
        close the memfd, or with `pool` hand it to `tls_pool` for a later module."""
        if not self._live:
            return
        self._live = False
        if pool:
            tls_pool.give(self._obj)
        else:
            self._obj.close()


_tga: list[ctypes._CFuncPtr] = []  # type: ignore[name-defined]


def tls_get_addr_address() -> int:
    """The address of glibc's own ``__tls_get_addr``."""
    addr = c.dlsym(c.RTLD_DEFAULT, b"__tls_get_addr")
    if not addr:
        raise TlsError("the host C library has no __tls_get_addr (relink's native TLS "
                       "needs glibc)")
    return int(addr)


def tls_get_addr(modid: int, offset: int) -> int:
    """Call glibc's ``__tls_get_addr({modid, offset})`` for the calling thread."""
    if not _tga:
        _tga.append(c.TLS_GET_ADDR(tls_get_addr_address()))
    index = c.TlsIndex(modid, offset)
    return int(_tga[0](ctypes.byref(index)) or 0)
