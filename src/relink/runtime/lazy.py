"""Lazy binding (``relink.load(..., lazy=True)``): PLT slots bound on their first call.

Runtime layer, native x86_64 only; imported by the relocation loop only for a module
that is loaded with ``lazy=True`` and is not BIND_NOW (DT_BIND_NOW, DF_BIND_NOW,
DF_1_NOW), so an eager load never imports this module. This is glibc's scheme, driven
from Python (design.md decision 7, relink-study §2.2):

* ``prepare_lazy`` (called by ``relocate_module`` before the tables are applied) writes
  GOT[1] = a cookie naming the module and GOT[2] = the trampoline, as glibc writes the
  link_map and ``_dl_runtime_resolve``; each ``R_X86_64_JUMP_SLOT`` of ``.rela.plt`` is
  only rebased (``slot += base``), so it points back into the module's own PLT entry
  (PLTn+6, the ``push n; jmp PLT0`` half); every other entry stays eager. A slot whose
  link-time value does not point into an executable segment of the module (a linker
  that leaves it 0) is bound eagerly instead: it could never reach the trampoline.
* The first call through slot n runs ``push n; jmp PLT0``; PLT0 pushes GOT[1] and jumps
  to GOT[2]. The trampoline (machine code below) saves every argument register: rax
  (the vector count of variadic calls), rdi, rsi, rdx, rcx, r8, r9, r10 (static chain)
  and the vector state with XSAVE of glibc's STATE_SAVE_MASK (SSE, AVX, MPX, AVX-512:
  xmm/ymm/zmm0-31, opmask k0-7, MXCSR) into a 64-byte aligned area whose size is read
  from CPUID leaf 0xD at start-up; without OS XSAVE support it uses FXSAVE (there is no
  AVX state then). It calls ``resolver(cookie, n)`` — a ctypes callback — restores
  everything, drops the two pushed words and jumps to the bound function, so the call
  continues as if it had been bound all along.
* The resolver binds the symbol through the module's retained ``Binder`` (same scope,
  same rules and cache as eager binding, so each slot resolves independently and the
  providers stay alive as long as the module), writes the slot (one aligned 8-byte
  store: another thread sees the old or the new value, both valid) and returns it.
* A symbol that cannot be resolved at call time cannot raise into C: the resolver
  prints ``relink: lazy binding failed in <file>: ...`` to stderr and returns 0, and
  the trampoline calls ``abort()`` instead of jumping anywhere.
* PT_GNU_RELRO stays applied (GOT[1..2], which ld puts inside it, are written before),
  except on the pages holding lazy slots.

Hazards (the resolver is Python, so the first call of each slot needs the GIL):
the first call must not happen in a signal handler, after a raw ``fork()`` in the child
of a multithreaded process, during interpreter finalization, or on a thread that
another thread waits for while holding the GIL; it costs about 10 µs. Eager binding
(the default) has none of these hazards.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from typing import Any

from relink.arch import RelocClass
from relink.elf.relocs import RelocTable
from relink.errors import RelinkError, UnsupportedError
from relink.loader import PF_W, PF_X
from relink.relocation.scope import Binder
from relink.state import ModuleState

__all__ = ["LazyModule", "lazy_module", "prepare_lazy", "slots"]

# Assembled from (GNU as, AT&T; 0x33333333 = frame size, 0x1111… = resolver,
# 0x2222… = abort(); patched at start-up):
#
#       push %rbx                    # entry: (%rsp)=GOT[1], 8(%rsp)=n, 16(%rsp)=return
#       mov  %rsp, %rbx
#       and  $-64, %rsp
#       sub  $0x33333333, %rsp       # 64 bytes of GPRs + the XSAVE area (64-aligned)
#       mov  %rax, 0(%rsp) ... mov %r10, 56(%rsp)   # rax rcx rdx rsi rdi r8 r9 r10
#       xor  %eax, %eax
#       mov  %rax, 576(%rsp) ... mov %rax, 632(%rsp) # zero the 64-byte XSAVE header
#       mov  $0xee, %eax
#       xor  %edx, %edx
#       xsave 64(%rsp)
#       mov  8(%rbx), %rdi           # cookie
#       mov  16(%rbx), %rsi          # relocation index
#       movabs $0x1111111111111111, %rax
#       call *%rax
#       test %rax, %rax
#       jz   1f
#       mov  %rax, %r11
#       mov  $0xee, %eax
#       xor  %edx, %edx
#       xrstor 64(%rsp)
#       mov  0(%rsp), %rax ... mov 56(%rsp), %r10
#       mov  %rbx, %rsp
#       pop  %rbx
#       add  $16, %rsp               # drop PLT0's push of GOT[1] and PLTn's push of n
#       jmp  *%r11
#   1:  movabs $0x2222222222222222, %rax
#       call *%rax                   # abort(); never returns
#       ud2
_XSAVE_TRAMPOLINE = bytes.fromhex(
    "534889e34883e4c04881ec333333334889042448894c24084889542410488974241848897c2420"
    "4c894424284c894c24304c8954243831c04889842440020000488984244802000048898424500200"
    "004889842458020000488984246002000048898424680200004889842470020000488984247802"
    "0000b8ee00000031d20fae642440488b7b08488b731048b81111111111111111ffd04885c0744149"
    "89c3b8ee00000031d20fae6c2440488b0424488b4c2408488b542410488b742418488b7c24204c8b"
    "4424284c8b4c24304c8b5424384889dc5b4883c41041ffe348b82222222222222222ffd00f0b")
# The same with ``fxsave 64(%rsp)`` / ``fxrstor 64(%rsp)`` (512 bytes, no header, no
# eax/edx mask) and ``sub $576, %rsp``, for CPUs or kernels without XSAVE.
_FXSAVE_TRAMPOLINE = bytes.fromhex(
    "534889e34883e4c04881ec400200004889042448894c24084889542410488974241848897c2420"
    "4c894424284c894c24304c895424380fae442440488b7b08488b731048b81111111111111111ffd0"
    "4885c0743a4989c30fae4c2440488b0424488b4c2408488b542410488b742418488b7c24204c8b44"
    "24284c8b4c24304c8b5424384889dc5b4883c41041ffe348b82222222222222222ffd00f0b")
_RESOLVER_MARK = struct.pack("<Q", 0x1111111111111111)
_ABORT_MARK = struct.pack("<Q", 0x2222222222222222)
_FRAME_MARK = struct.pack("<I", 0x33333333)

_lock = threading.Lock()
_registry: dict[int, LazyModule] = {}
_next_cookie = [0x5245_4C00_0000_0001]  # "REL\0" tag: recognisable in a debugger
_runtime: list[Any] = []  # [code page, resolver callback] — alive for the process


def _patch(code: bytes, mark: bytes, value: bytes) -> bytes:
    at = code.find(mark)
    if at < 0 or code.find(mark, at + 1) >= 0:  # pragma: no cover - constant data
        raise AssertionError("trampoline patch mark not found exactly once")
    return code[:at] + value + code[at + len(mark):]


def trampoline_address() -> int:
    """The trampoline's address (built on first use: probes CPUID, maps one page)."""
    with _lock:
        if not _runtime:
            from relink.runtime import libc
            from relink.runtime.exec_code import code_page, xsave_info

            info = xsave_info()
            callback = libc.LAZY_RESOLVER(_resolve)
            resolver = ctypes.cast(callback, ctypes.c_void_p).value or 0
            abort = ctypes.cast(libc.abort, ctypes.c_void_p).value or 0
            if info.osxsave:
                frame = 64 + ((info.size + 63) & ~63)
                code = _patch(_XSAVE_TRAMPOLINE, _FRAME_MARK, struct.pack("<I", frame))
            else:
                code = _FXSAVE_TRAMPOLINE
            code = _patch(code, _RESOLVER_MARK, struct.pack("<Q", resolver))
            code = _patch(code, _ABORT_MARK, struct.pack("<Q", abort))
            _runtime.extend([code_page(code), callback, info])
        return int(_runtime[0].address)


def save_method() -> str:
    """``"xsave"`` or ``"fxsave"``, and the bytes saved: for docs and diagnostics."""
    trampoline_address()
    info = _runtime[2]
    return f"xsave ({info.size} bytes)" if info.osxsave else "fxsave (512 bytes)"


class LazyModule:
    """The lazy-binding state of one module: its pending slots and its binder.

    Attributes:
        state: the module.
        binder: the Binder that eager relocation used (retains the scope).
        cookie: the value in GOT[1].
        entries: relocation index -> (r_offset, symbol index, addend, type) of every
            lazily bound JUMP_SLOT.
        bound: relocation index -> the address the slot was bound to.
    """

    def __init__(self, state: ModuleState, binder: Binder) -> None:
        self.state = state
        self.binder = binder
        self.cookie = 0
        self.entries: dict[int, tuple[int, int, int, int]] = {}
        self.bound: dict[int, int] = {}
        self.lock = threading.RLock()  # RLock: an IFUNC resolver may re-enter

    def symbol_name(self, sym: int) -> str:
        syms = self.state.image.symbols
        return syms.names[sym] if syms is not None and sym < syms.count else f"#{sym}"

    def resolve(self, index: int) -> int:
        """Bind relocation `index` (idempotent); raises RelinkError when impossible."""
        image = self.state.image
        entry = self.entries.get(index)
        if entry is None:
            raise RelinkError(f"relocation index {index} is not a lazily "
                              "bound JUMP_SLOT of this module", file=image.label)
        off, sym, addend, r_type = entry
        with self.lock:
            done = self.bound.get(index)
            if done is not None:
                return done
            if self.state.state == "closed":
                raise RelinkError("the module is closed", file=image.label)
            addr = self.binder.bind(sym, r_type, off)[0]
            if not addr:
                raise RelinkError(f"'{self.symbol_name(sym)}' is a weak "
                                  "undefined symbol that nothing defines: calling it "
                                  "would jump to address 0", file=image.label)
            target = (addr + addend) & 0xFFFFFFFFFFFFFFFF
            ctypes.c_uint64.from_address(image.base + off).value = target
            self.bound[index] = target
            return target


def _resolve(cookie: int, index: int) -> int:
    """The ctypes callback the trampoline calls. Never raises: 0 means abort."""
    try:
        lm = _registry.get(cookie)
        if lm is None:
            raise RelinkError(f"unknown module cookie {cookie:#x} "
                              "(called through a GOT of a module that was unloaded?)")
        return lm.resolve(index)
    except BaseException as exc:  # noqa: BLE001 - nothing may propagate into C
        try:
            os.write(2, f"relink: lazy binding failed: {exc}; aborting\n".encode(
                "utf-8", "replace"))
        except BaseException:  # noqa: BLE001,S110 - stderr may be gone; abort anyway
            pass
        return 0


def _unregister(cookie: int) -> None:
    with _lock:
        _registry.pop(cookie, None)


def prepare_lazy(state: ModuleState, binder: Binder, tables: list[RelocTable],
                 view: memoryview, delta: int) -> tuple[list[RelocTable], int]:
    """Set up lazy binding for `state`; return (tables left to apply eagerly, n lazy).

    Writes GOT[1]/GOT[2], rebases every lazily bound JUMP_SLOT and registers the
    module; the JUMP_SLOTs it takes are removed from the returned tables.
    """
    image = state.image
    spec = image.spec
    if spec.name != "x86_64" or not spec.is_host:
        raise UnsupportedError(f"lazy binding is implemented for x86_64 hosts only, not "
                               f"{spec.name}", file=image.label)
    if not image.mapper.native:
        raise UnsupportedError("lazy binding needs the image in this process's memory",
                               file=image.label)
    dyn = image.dynamic
    if dyn is None or not dyn.pltgot or not dyn.jmprel:
        return tables, 0
    plt = next((t for t in tables if t.name in (".rela.plt", ".rel.plt")), None)
    if plt is None or plt.addends is None:
        return tables, 0
    got = dyn.pltgot
    writable = [(ph.p_vaddr, ph.p_vaddr + ph.p_memsz) for ph in image.loads
                if ph.p_flags & PF_W]
    if not any(s <= got and got + 24 <= e for s, e in writable):
        raise RelinkError("DT_PLTGOT does not point into a writable segment",
                          file=image.label)
    code = [(ph.p_vaddr, ph.p_vaddr + ph.p_memsz) for ph in image.loads
            if ph.p_flags & PF_X]
    lm = LazyModule(state, binder)
    unpack, pack = struct.unpack_from, struct.pack_into
    keep: list[int] = []
    for k, (off, t, sym) in enumerate(zip(plt.offsets, plt.types, plt.syms)):
        if spec.classes.get(t) is not RelocClass.JUMP_SLOT or not sym:
            keep.append(k)
            continue
        link = unpack("<Q", view, off + delta)[0]
        if not any(s <= link < e for s, e in code):
            keep.append(k)  # no PLT entry to come back to: bind it eagerly
            continue
        pack("<Q", view, off + delta, (link + image.base) & 0xFFFFFFFFFFFFFFFF)
        lm.entries[k] = (off, sym, plt.addends[k], t)
    if not lm.entries:
        return tables, 0
    tramp = trampoline_address()
    with _lock:
        lm.cookie = _next_cookie[0]
        _next_cookie[0] += 1
        _registry[lm.cookie] = lm
    pack("<QQ", view, got + 8 + delta, lm.cookie, tramp)
    cookie = lm.cookie
    state.extras.append(lambda: _unregister(cookie))
    state.lazy = lm
    # RELRO must not cover a pending slot (Image.protect_relro honours keep_writable).
    offs = [e[0] for e in lm.entries.values()]  # GOT[1..2] may go read-only: written
    image.keep_writable.append((image.base + min(offs), max(offs) + 8 - min(offs)))
    rest = RelocTable(plt.name, [plt.offsets[k] for k in keep], [plt.types[k] for k in keep],
                      [plt.syms[k] for k in keep], [plt.addends[k] for k in keep])
    return [rest if t is plt else t for t in tables], len(lm.entries)


def lazy_module(module: Any) -> LazyModule | None:
    """The LazyModule of a `Module` / `ModuleState`, or None if it is bound eagerly."""
    state = getattr(module, "_state", module)
    return getattr(state, "lazy", None)


def slots(module: Any) -> dict[str, tuple[int, int | None]]:
    """symbol -> (slot address, bound address or None while pending) for a lazy module.

    Empty for an eagerly bound module. Reads no memory: the state is relink's record.
    """
    lm = lazy_module(module)
    if lm is None:
        return {}
    base = lm.state.image.base
    return {lm.symbol_name(sym): (base + off, lm.bound.get(k))
            for k, (off, sym, _a, _t) in lm.entries.items()}
