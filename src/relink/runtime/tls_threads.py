"""Every thread's copy of a TLS block, found through glibc's own thread list.

Runtime layer, native x86_64 + glibc 2.35 to 2.42 (used by `relink.runtime.tls_pool`).
A pooled TLS carrier may be lent to a new module only if no thread keeps a copy of the
block written by the carrier's earlier module: glibc allocates a dynamic block per
thread on that thread's first ``__tls_get_addr`` and keeps it while the object stays
loaded. `ThreadWalker.reinit` finds each thread's copy of one carrier's block and
overwrites it with the carrier's (new) initialization image -- tdata copied, tbss zeroed,
what glibc's ``allocate_and_init`` does -- or says that it cannot, and the carrier is not
lent. Without the walker a carrier is lent only in a single-threaded process.

**What it reads.** glibc exports, for libthread_db, GLIBC_PRIVATE descriptors of its
internal structures from libc.so.6 (``nptl_db/structs.def``, ``nptl_db/db_info.c``):
``_thread_db_<type>_<field>`` is ``uint32_t[3]`` = {size in bits, element count, byte
offset}. From them: ``struct pthread``'s ``list``, ``tid`` and ``header.dtv``
(``pthread_dtvp``); ``dtv_t``'s size, ``pointer.val`` and ``counter``; ``_rtld_global``
(``__nptl_rtld_global``) with ``_dl_stack_used``, ``_dl_stack_user`` (the lists of every
thread, ``nptl/allocatestack.c``) and ``_dl_tls_dtv_slotinfo_list`` (each module id's
generation and link_map). Three fields have no descriptor and come from the order of
``struct rtld_global`` (``sysdeps/generic/ldsodefs.h``, the same from 2.34 to 2.42):
``_dl_tls_generation`` is 40 bytes after the slotinfo list pointer, which
``_dl_stack_used`` follows at +56 (checked); ``_dl_stack_cache_lock`` is 48 bytes after
``_dl_stack_user``, the struct's last member (checked against the symbol's size).
``_dl_load_tls_lock`` is the third of three recursive mutexes right before
``_dl_load_adds`` (found by that signature: ``dlpi_adds`` is ``_dl_load_adds``). Any
descriptor missing or of an unexpected size, or any check failing (also: the generation
must equal the highest slot generation, the calling thread must be on a list with its
own tid) leaves the walker unavailable: `walker` returns None.

**Why it is safe** (glibc 2.36 ``elf/dl-tls.c``, ``elf/dl-open.c``, ``elf/dl-close.c``,
``nptl/allocatestack.c``, ``nptl/nptl-stack.c``, ``nptl/pthread_create.c``). The walk
is one machine-code call (below) that holds ``_dl_load_tls_lock`` then
``_dl_stack_cache_lock`` -- glibc's own order (dlopen -> ``_dl_init_static_tls``) -- and
runs no Python (a thread blocked in ``pthread_create`` may hold the GIL):

* The lists only change under ``_dl_stack_cache_lock``, and a ``struct pthread`` is
  unmapped only after leaving them, so the walk reads live descriptors.
* A thread's dynamic blocks are freed only (a) by ``_dl_deallocate_tls`` for a user
  stack, under the lock after leaving the list; (b) for a cached stack, by
  ``__nptl_free_stacks`` (lock held, not on a walked list) or by ``get_cached_stack``,
  which moves the descriptor to ``_dl_stack_used`` under the lock but frees the old
  thread's blocks and clears its DTV after releasing it: such a descriptor still has
  ``tid == 0`` (the kernel cleared it at the old thread's exit, ``CLONE_CHILD_CLEARTID``;
  the new ``clone`` sets it afterwards), and descriptors with ``tid <= 0`` are skipped;
  (c) by the thread itself in ``_dl_update_slotinfo`` -- only for module ids whose slot
  generation is newer than its DTV's, never this carrier's (it stays loaded).
* ``_dl_tls_generation`` only changes under ``_dl_load_tls_lock``, so it is frozen
  during the walk. A thread replaces (reallocs) its DTV only inside
  ``_dl_update_slotinfo``, which ``__tls_get_addr`` enters only when the DTV's
  generation differs from it; the DTV's generation is written last. So the DTV of a
  thread whose generation equals the global one is stable during the walk, and its
  block is written. The calling thread's own copy is written too (nothing runs in it).
* A thread behind (it may be reallocating its DTV right now) is only read, never
  written: if its DTV is older than the carrier (``dtv[0] < slot generation``) it never
  allocated the carrier's block; if it has the block, the carrier is not lent. A read
  racing with that thread's realloc reads the old array: realloc copies the entries
  before freeing it, free() overwrites only its first 16 bytes (the length, which then
  reads as a huge value), and the DTV pointer is read again afterwards (a moved DTV is
  read anew). Only another thread's malloc reusing or re-binning the freed array
  within those few instructions could hide a copy -- stale values in that thread,
  never a wrong write.
* Nobody allocates the carrier's block during the walk: the module that used it is
  closed (its code must not run) and the next one's code runs only after its load.
* A thread created later allocates its copy from the image, replaced before the walk.

Machine code: `SOURCE` compiled by GCC 12.2 (``gcc $FLAGS -c``, then its ``.text``; no
relocations, no data). It gets every address and offset in its argument block.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from typing import TYPE_CHECKING

from relink.runtime import libc as c

if TYPE_CHECKING:
    from relink.runtime.tls_carrier import CarrierObject

__all__ = ["FLAGS", "SOURCE", "ThreadWalker", "slot_entry", "slot_generation",
           "unavailable_reason", "walker"]

SOURCE = r"""
typedef unsigned long u64;
struct walk {
    void *tls_lock;                          /* &GL(dl_load_tls_lock) */
    int (*mutex_lock)(void *);
    int (*mutex_unlock)(void *);
    int *stack_lock;                         /* &GL(dl_stack_cache_lock) */
    void (*lock_wait)(int *);                /* __lll_lock_wait_private */
    void (*lock_wake)(int *);                /* __lll_lock_wake_private */
    void *(*copy)(void *, const void *, u64);   /* memcpy */
    void *(*fill)(void *, int, u64);            /* memset */
    u64 heads[2];                            /* &GL(dl_stack_used), &GL(dl_stack_user) */
    const u64 *generation;                   /* &GL(dl_tls_generation) */
    u64 list_off, tid_off, dtv_off;          /* in struct pthread */
    u64 next_off;                            /* in list_t */
    u64 entry, val_off, counter_off;         /* dtv_t: size, pointer.val, counter */
    u64 self;                                /* the calling thread's struct pthread */
    u64 modid, slot_gen;                     /* the object's module id and its generation */
    const unsigned char *image;
    u64 image_len, block_len;
    u64 reinit;                              /* 0: only look, 1: re-initialise blocks */
    u64 max_threads;
    u64 threads, blocks, self_seen, generation_seen;   /* results */
    u64 found[64];
};
enum { LENDABLE = 0, HELD = 1, BROKEN = 2 };
#define RD(addr) (*(volatile u64 *)(addr))

static u64 scan(struct walk *w, u64 gen)
{
    u64 n = 0, blocks = 0;
    for (int l = 0; l < 2; l++) {
        u64 head = w->heads[l];
        for (u64 node = RD(head + w->next_off); node != head; node = RD(node + w->next_off)) {
            if (!node || ++n > w->max_threads)
                return BROKEN;
            u64 pd = node - w->list_off;
            int self = pd == w->self;
            w->self_seen |= self;
            if (!self && *(volatile int *)(pd + w->tid_off) <= 0)
                continue;                /* not started yet, or exited */
            for (int tries = 0;; tries++) {
                u64 dtv = RD(pd + w->dtv_off);
                if (!dtv)
                    break;
                u64 tgen = RD(dtv + w->counter_off);
                if (tgen < w->slot_gen)
                    break;               /* never saw this object: no block */
                u64 len = RD(dtv - w->entry + w->counter_off);
                u64 val = w->modid <= len ? RD(dtv + w->modid * w->entry + w->val_off) : 0;
                if (RD(pd + w->dtv_off) != dtv) {
                    if (tries < 4)
                        continue;        /* the thread moved its DTV meanwhile */
                    return HELD;
                }
                if (!val || val == (u64)-1)
                    break;               /* not allocated */
                if (!self && tgen != gen)
                    return HELD;         /* may be resizing its DTV right now */
                if (blocks == sizeof w->found / sizeof w->found[0])
                    return HELD;
                w->found[blocks++] = val;
                break;
            }
        }
    }
    w->threads = n;
    w->blocks = blocks;
    return w->self_seen ? LENDABLE : BROKEN;
}

u64 relink_tls_walk(struct walk *w)
{
    if (w->mutex_lock(w->tls_lock) != 0)
        return BROKEN;
    int expected = 0;
    if (!__atomic_compare_exchange_n(w->stack_lock, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
        w->lock_wait(w->stack_lock);
    u64 gen = *(volatile const u64 *)w->generation;
    w->generation_seen = gen;
    w->self_seen = 0;
    u64 status = scan(w, gen);
    if (status == LENDABLE && w->reinit) {
        for (u64 i = 0; i < w->blocks; i++) {
            unsigned char *dst = (unsigned char *)w->found[i];
            w->copy(dst, w->image, w->image_len);
            w->fill(dst + w->image_len, 0, w->block_len - w->image_len);
        }
    }
    if (__atomic_exchange_n(w->stack_lock, 0, __ATOMIC_RELEASE) > 1)
        w->lock_wake(w->stack_lock);
    w->mutex_unlock(w->tls_lock);
    return status;
}
"""
FLAGS = ("-O2 -fPIC -ffreestanding -fno-builtin -fno-stack-protector -fcf-protection=none "
         "-fno-jump-tables -fno-asynchronous-unwind-tables -mgeneral-regs-only "
         "-fno-tree-loop-distribute-patterns")
_CODE = bytes.fromhex(
    "41574989ff4156415541545553bb020000004883ec38488b3f41ff570885c00f858c010000498b5718b9"
    "01000000f00fb10a0f8584020000498b4750498b5f7048c704240000000031d24c8b3031c049c787e000"
    "0000000000004d89b7e8000000"
    "4c897424104989de498b6c07404a8d4c3500488b394839fd0f84a20100004885ff0f84f8000000498bb7"
    "c800000048894424284c89f14989f64883c2014939d60f82d90000004d8b87900000004989fb4d2b5f58"
    "31c04d39c30f94c0490987e00000004d39c37411498b47604c01d88b0085c00f8e8e0000004d8b4f684d"
    "01d9498b014885c0747f48896c24084d8b9788000000be050000004c895c24184d8bafa00000004c8944"
    "24204d8d0402498b184c39eb72454d8b47784d89d34531e44d29c34901c3498b2b4d8b9f980000004c39"
    "dd72114d0fafc34d0387800000004901c04d8b204d8b014939c0747983ee01743c498b014885c075af48"
    "8b6c24080f1f80000000004801cf488b3f4839fd0f84a20000004885ff0f851affffffbb02000000eb0e"
    "660f1f840000000000bb01000000498b571831c0870283f8017e08498b7f1841ff5728498b3f41ff5710"
    "4883c4384889d85b5d415c415d415e415fc30f1f440000498d4424ff488b6c24084c8b5c24184c8b4424"
    "204883f8fd0f8782ffffff4d39c3400f95c648395c24100f95c04084c67596488b04244883f840748c4d"
    "89a4c7f00000004883c00148890424e94fffffff488b4424284989ce4883f8087411b808000000e938fe"
    "ffff0f1f8000000000488b04244983bfe000000000498997d0000000498987d80000000f8428ffffff49"
    "83bfc000000000745348833c2400744c31ed0f1f440000498b9ceff0000000498b97b00000004883c501"
    "498bb7a80000004889df41ff5730498b87b0000000498b97b800000031f64829c2488d3c0341ff573849"
    "3bafd800000072bb31dbe9d9feffff498b7f1841ff5720e96ffdffff")

# The argument block: one uint64 per field of `struct walk`, in order.
(_TLS_LOCK, _MUTEX_LOCK, _MUTEX_UNLOCK, _STACK_LOCK, _LOCK_WAIT, _LOCK_WAKE, _COPY, _FILL,
 _HEAD_USED, _HEAD_USER, _GENERATION, _LIST_OFF, _TID_OFF, _DTV_OFF, _NEXT_OFF, _ENTRY,
 _VAL_OFF, _COUNTER_OFF, _SELF, _MODID, _SLOT_GEN, _IMAGE, _IMAGE_LEN, _BLOCK_LEN, _REINIT,
 _MAX_THREADS, _THREADS, _BLOCKS, _SELF_SEEN, _GENERATION_SEEN, _FOUND) = range(31)
_ARGS = ctypes.c_uint64 * (_FOUND + 64)
LENDABLE, HELD, BROKEN = 0, 1, 2
_VERIFIED = ((2, 35), (2, 42))  # glibc versions whose layout and rules were checked
_MAX_THREADS = 1 << 16


class Unavailable(Exception):
    """Why the walker cannot be used in this process (see `unavailable_reason`)."""


def _u64(addr: int) -> int:
    return ctypes.c_uint64.from_address(addr).value


def _descriptor(name: str, bits: int | None = None) -> tuple[int, int, int]:
    """(size in bits, count, offset) of libthread_db descriptor ``_thread_db_<name>``."""
    addr = c.dlsym(c.RTLD_DEFAULT, f"_thread_db_{name}".encode())
    if not addr:
        raise Unavailable(f"glibc exports no _thread_db_{name}")
    desc = struct.unpack("<3I", ctypes.string_at(addr, 12))
    if bits is not None and desc[0] != bits:
        raise Unavailable(f"_thread_db_{name} describes {desc[0]} bits, not {bits}")
    return desc


def _symbol(name: str) -> int:
    addr = c.dlsym(c.RTLD_DEFAULT, name.encode())
    if not addr:
        raise Unavailable(f"no {name} in this process")
    return int(addr)


def _find_slot_table() -> tuple[int, int]:
    """(``&_rtld_global``, offset of ``_dl_tls_dtv_slotinfo_list`` in it), from the
    descriptors, after checking the slotinfo structures' layout."""
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise Unavailable("not a 64-bit process")
    for field in ("len", "next"):
        if _descriptor(f"dtv_slotinfo_list_{field}", 64)[2] != (0 if field == "len" else 8):
            raise Unavailable("unexpected struct dtv_slotinfo_list layout")
    if (_descriptor("dtv_slotinfo_list_slotinfo", 128)[2] != 16
            or _descriptor("dtv_slotinfo_gen", 64)[2] != 0
            or _descriptor("dtv_slotinfo_map", 64)[2] != 8):
        raise Unavailable("unexpected struct dtv_slotinfo layout")
    _descriptor("__nptl_rtld_global", 64)
    rtld = _u64(_symbol("__nptl_rtld_global"))
    return rtld, _descriptor("rtld_global__dl_tls_dtv_slotinfo_list", 64)[2]


_slot_tables: list[tuple[int, int] | None] = []


def _slot_table() -> tuple[int, int]:
    if not _slot_tables:
        try:
            _slot_tables.append(_find_slot_table())
        except Unavailable:
            _slot_tables.append(None)
            raise
    table = _slot_tables[0]
    if table is None:
        raise Unavailable("glibc's TLS slot table was not found")
    return table


def slot_entry(modid: int) -> tuple[int, int] | None:
    """(generation, link_map) glibc records for module id `modid`, None where unknown.

    The generation changes whenever the id is given to another object (elf/dl-open.c,
    elf/dl-close.c), so an unchanged pair means the same object still has the id and
    every thread's block for it is still where it was. Needs only the descriptors (not
    the walker); a read without lock, sound for an object that stays loaded.
    """
    try:
        rtld, off = _slot_table()
    except Unavailable:
        return None
    slot = _slotinfo(rtld, off, modid)
    return (_u64(slot), _u64(slot + 8)) if slot else None


def _slotinfo(rtld: int, slotinfo_off: int, modid: int) -> int:
    """Address of ``dtv_slotinfo`` entry `modid` ({gen, map}), 0 past the list's end."""
    node = _u64(rtld + slotinfo_off)
    base = 0
    while node:
        length = _u64(node)
        if modid < base + length:
            return node + 16 + 16 * (modid - base)
        base += length
        node = _u64(node + 8)
    return 0


class ThreadWalker:
    """The located glibc structures and the machine code that walks them."""

    broken = False  # set when a walk found the lists inconsistent: it refuses from then on

    def __init__(self) -> None:
        if os.uname().machine not in ("x86_64", "amd64") or ctypes.sizeof(ctypes.c_void_p) != 8:
            raise Unavailable("not x86_64")
        try:
            name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # type: ignore[union-attr]
            ver = tuple(int(p) for p in version.split(".")[:2])
        except (AttributeError, ValueError, OSError) as exc:
            raise Unavailable("not glibc") from exc
        if name != "glibc" or not _VERIFIED[0] <= ver <= _VERIFIED[1]:
            raise Unavailable(f"{name} {version} is not a verified glibc version")
        # struct pthread, list_t, dtv_t (nptl/descr.h, include/list_t.h, dl-dtv.h)
        self.list_off = _descriptor("pthread_list", 128)[2]
        self.tid_off = _descriptor("pthread_tid", 32)[2]
        self.dtv_off = _descriptor("pthread_dtvp", 64)[2]
        self.next_off = _descriptor("list_t_next", 64)[2]
        self.entry = _descriptor("dtv_dtv", 128)[0] // 8
        self.val_off = _descriptor("dtv_t_pointer_val", 64)[2]
        self.counter_off = _descriptor("dtv_t_counter", 64)[2]
        # struct rtld_global
        self.rtld, self.slotinfo_off = _slot_table()
        used = _descriptor("rtld_global__dl_stack_used", 128)[2]
        user = _descriptor("rtld_global__dl_stack_user", 128)[2]
        if used != self.slotinfo_off + 56 or user != used + 16:
            raise Unavailable("struct rtld_global's layout differs from glibc 2.34-2.42's")
        self.generation = self.rtld + self.slotinfo_off + 40
        self.max_modid = self.rtld + self.slotinfo_off - 8
        self.heads = (self.rtld + used, self.rtld + user)
        self.stack_lock = self.rtld + user + 48
        self.tls_lock = self._find_tls_lock(used)
        self._check_rtld()
        self.functions = [_symbol(n) for n in ("pthread_mutex_lock", "pthread_mutex_unlock")]
        self.functions += [_symbol(n) for n in ("__lll_lock_wait_private",
                                                "__lll_lock_wake_private", "memcpy", "memset")]
        self.code = self._map_code()
        self._fn = c.TLS_WALK(self.code)
        self._template = bytes(_ARGS(*self._constants()))
        me = int(c.pthread_self() or 0)
        if ctypes.c_int.from_address(me + self.tid_off).value != threading.get_native_id():
            raise Unavailable("struct pthread's tid is not where _thread_db_pthread_tid says")
        # No module can have a slot generation of 2**63: every thread is skipped, and the
        # walk succeeds only if it met the calling thread.
        if self._call(0, 1 << 63, 0, 0, 0, False)[0] != LENDABLE:
            raise Unavailable("the calling thread is not on glibc's thread lists")

    def _find_tls_lock(self, limit: int) -> int:
        """``&GL(dl_load_tls_lock)``: recursive mutexes (kind 1 at offset 16) at -120,
        -80, -40 of the ``unsigned long long`` that equals ``dlpi_adds``."""
        from relink.runtime.host import _generation

        for _ in range(3):  # a concurrent dlopen may move the counter: retry
            adds = _generation()[0]
            raw = memoryview(ctypes.string_at(self.rtld, limit & ~7))
            words, ints = raw.cast("Q"), raw.cast("i")
            hits = [8 * i for i in range(15, len(words)) if words[i] == adds
                    and ints[2 * i - 6] == ints[2 * i - 16] == ints[2 * i - 26] == 1]
            if len(hits) == 1:
                return self.rtld + hits[0] - 40
        raise Unavailable("_dl_load_tls_lock not found in struct rtld_global")

    def _check_rtld(self) -> None:
        """The derived fields hold what they should (else the layout guess is wrong)."""
        # _dl_stack_cache_lock is struct rtld_global's last field (an int, padded to 8)
        info, sym = (ctypes.c_void_p * 4)(), ctypes.c_void_p()
        if not c.dladdr1(self.rtld, info, ctypes.byref(sym), 1) or not sym.value \
                or _u64(sym.value + 16) != self.stack_lock + 8 - self.rtld:
            raise Unavailable("_dl_stack_cache_lock is not struct rtld_global's last field")
        if ctypes.c_int.from_address(self.stack_lock).value not in (0, 1, 2):
            raise Unavailable("_dl_stack_cache_lock holds no lock value")
        # Every generation bump (elf/dl-open.c, elf/dl-close.c) stores the new value in
        # some slot (a new module's, or a removed one's), so it is the highest slot
        # generation (removed slots past _dl_tls_max_dtv_idx included).
        for _ in range(3):  # a concurrent dlopen / dlclose may interleave: retry
            gen, top = _u64(self.generation), _u64(self.max_modid)
            node, count, highest = _u64(self.rtld + self.slotinfo_off), 0, 0
            while node and count <= 1 << 20:
                length = _u64(node)
                raw = memoryview(ctypes.string_at(node + 16, 16 * length)).cast("Q")
                highest = max(highest, *raw[::2]) if length else highest
                count += length
                node = _u64(node + 8)
            if 0 < top < count and gen == highest:
                return
        raise Unavailable("_dl_tls_generation / _dl_tls_max_dtv_idx not where expected")

    def _map_code(self) -> int:
        page = c.mmap(None, 4096, c.PROT_READ | c.PROT_WRITE,
                      c.MAP_PRIVATE | c.MAP_ANONYMOUS, -1, 0)
        if not page or page == c.MAP_FAILED:
            raise Unavailable("no page for the walker's code")
        ctypes.memmove(page, _CODE, len(_CODE))
        if c.mprotect(page, 4096, c.PROT_READ | c.PROT_EXEC) != 0:
            c.munmap(page, 4096)
            raise Unavailable("cannot make the walker's code executable")
        return int(page)  # never unmapped: another thread may be inside it

    def _call(self, modid: int, slot_gen: int, image: int, image_len: int, block_len: int,
              reinit: bool) -> tuple[int, int, int]:
        """(status, threads seen, blocks found) of one walk."""
        args = _ARGS.from_buffer_copy(self._template)
        args[_SELF] = int(c.pthread_self() or 0)
        args[_MODID], args[_SLOT_GEN] = modid, slot_gen
        args[_IMAGE], args[_IMAGE_LEN], args[_BLOCK_LEN] = image, image_len, block_len
        args[_REINIT] = int(reinit)
        status = int(self._fn(ctypes.addressof(args)))
        return status, int(args[_THREADS]), int(args[_BLOCKS])

    def _constants(self) -> list[int]:
        """The argument block's fields that never change (per-walk ones are 0)."""
        lock, unlock, wait, wake, copy, fill = self.functions
        return [self.tls_lock, lock, unlock, self.stack_lock, wait, wake, copy, fill,
                *self.heads, self.generation, self.list_off, self.tid_off, self.dtv_off,
                self.next_off, self.entry, self.val_off, self.counter_off,
                0, 0, 0, 0, 0, 0, 0, _MAX_THREADS]

    def reinit(self, obj: CarrierObject) -> bool:
        """Overwrite every thread's copy of `obj`'s block with its image (tdata, zeroed
        tbss); False when a thread may hold a copy that cannot be written safely."""
        if self.broken:
            return False
        gen = obj.slot_gen
        if gen is None:
            gen = obj.slot_gen = slot_generation(obj.modid, obj.obj.link_map())
            if gen is None:
                return False
        status, _threads, _blocks = self._call(obj.modid, gen, obj.image_addr, obj.filesz,
                                               obj.memsz, True)
        if status == BROKEN:
            self.broken = True
            _disable("a walk did not find the calling thread (or found a broken list)")
        return status == LENDABLE


def slot_generation(modid: int, link_map: int) -> int | None:
    """The generation glibc recorded for `modid` (stable while its object stays loaded),
    None if the slot does not hold `link_map` (then nothing about it is trusted)."""
    entry = slot_entry(modid) if walker() is not None else None
    return entry[0] if entry is not None and entry[1] == link_map else None


_walker: list[ThreadWalker | None] = []
_reason: list[str] = []
_lock = threading.Lock()


def _disable(reason: str) -> None:
    _reason[:] = [reason]
    _walker[:] = [None]


def walker() -> ThreadWalker | None:
    """The process's walker (located on first use), None where it cannot be used."""
    if _walker:
        return _walker[0]
    try:
        made: ThreadWalker | None = ThreadWalker()
    except Unavailable as exc:
        made = None
        _reason[:] = [str(exc)]
    with _lock:
        if not _walker:
            _walker.append(made)
    return _walker[0]


def unavailable_reason() -> str | None:
    """Why `walker` returns None (None while it is available or not yet tried)."""
    return _reason[0] if _reason and walker() is None else None
