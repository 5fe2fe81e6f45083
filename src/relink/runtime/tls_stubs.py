"""Machine-code TLSDESC resolvers for x86_64 (``-mtls-dialect=gnu2`` code).

Runtime layer, native x86_64 only. A TLSDESC relocation fills a two-word descriptor
{function, argument}; compiled code does ``lea rax, [desc]; call [rax]`` and adds the
returned value to ``%fs:0``. The TLSDESC ABI lets the function clobber only ``rax`` and
the flags, so the resolvers here are hand-written machine code in one executable page
(created once per process, never freed: descriptors in any module may point at it):

``static``  ``mov rax, [rax+8]; ret`` — the argument *is* the thread-pointer offset (the
            block is in static TLS).
``dynamic`` the argument points to a ``tls_index {module id, offset}``; the stub saves
            every caller-saved general register and the whole extended register state
            (``xsave64`` of every XCR0 component: x87, SSE, AVX, AVX-512, …), calls glibc's
            ``__tls_get_addr`` and returns ``address - %fs:0``. glibc's own stub skips the
            vector state, which ``__tls_get_addr``'s malloc can clobber (glibc BZ #31372).

Assembly of the dynamic stub (GNU as, Intel syntax; the bytes below are its encoding)::

    push rbp; mov rbp, rsp
    push rcx; push rdx; push rsi; push rdi; push r8; push r9; push r10; push r11
    mov rsi, [rax+8]                 ; tls_index *
    sub rsp, [rip+xsave_size]; and rsp, -64
    xor eax, eax; mov [rsp+512+8*k], rax (k = 0..7)   ; zero the XSAVE header
    mov eax, -1; mov edx, -1; xsave64 [rsp]   ; xsavec64 [rsp] where the CPU has it
    mov rdi, rsi; call [rip+tga]
    mov rcx, rax; mov eax, -1; mov edx, -1; xrstor64 [rsp]; mov rax, rcx
    sub rax, fs:0
    lea rsp, [rbp-64]; pop r11 … pop rcx; pop rbp; ret
    tga: .quad __tls_get_addr        (offset 0xb0)
    xsave_size: .quad N              (offset 0xb8)
"""

from __future__ import annotations

import ctypes
import struct
import threading

from relink.errors import MappingError, UnsupportedError
from relink.runtime import libc as c

__all__ = ["TlsdescStubs", "stubs"]

_DYNAMIC = bytes.fromhex(
    "554889e5515256574150415141524153488b7008482b259d0000004883e4c031"
    "c048898424000200004889842408020000488984241002000048898424180200"
    "0048898424200200004889842428020000488984243002000048898424380200"
    "00b8ffffffffbaffffffff480fae24244889f7ff15370000004889c1b8ffffff"
    "ffbaffffffff480fae2c244889c864482b042500000000488d65c0415b415a41"
    "5941585f5e5a595dc3")
_TGA_AT, _XSAVE_SIZE_AT = 0xB0, 0xB8
_XSAVE_AT, _XSAVEC = 0x6B, bytes.fromhex("480fc72424")  # xsave64 [rsp] -> xsavec64 [rsp]
# cpuid(leaf, subleaf, uint32_t out[4]): push rbx; mov eax, edi; mov ecx, esi;
# mov r8, rdx; cpuid; mov [r8], eax; mov [r8+4], ebx; mov [r8+8], ecx; mov [r8+12], edx;
# pop rbx; ret
_CPUID = bytes.fromhex("5389f889f14989d00fa241890041895804418948084189500c5bc3")
_CPUID_AT = 0xC0
_STATIC = bytes.fromhex("488b4008c3")  # mov rax, [rax+8]; ret
_STATIC_AT = 0xE0
# undefined weak: mov rax, [rax+8]; sub rax, fs:0; ret  (address = the addend)
_UNDEFWEAK = bytes.fromhex("488b400864482b042500000000c3")
_UNDEFWEAK_AT = 0xE8
_PAGE = 4096


class TlsdescStubs:
    """The process's TLSDESC resolver page.

    Attributes:
        static: address of the static-TLS resolver.
        dynamic: address of the dynamic (``__tls_get_addr``) resolver.
        undefweak: address of the resolver for undefined weak symbols (ld.so's
            ``_dl_tlsdesc_undefweak``: the variable's address is the addend).
        xsave_size: bytes the dynamic resolver reserves for the extended state.
        compacted: True when it saves with XSAVEC (only the components in use).
    """

    def __init__(self, tls_get_addr: int) -> None:
        addr = c.mmap(None, _PAGE, c.PROT_READ | c.PROT_WRITE,
                      c.MAP_PRIVATE | c.MAP_ANONYMOUS, -1, 0)
        if addr in (None, c.MAP_FAILED):
            raise MappingError("cannot map the TLSDESC stub page", op="mmap",
                               errno=ctypes.get_errno())
        page = bytearray(b"\xcc" * _PAGE)  # int3 everywhere the stubs do not reach
        page[0:len(_DYNAMIC)] = _DYNAMIC
        page[_CPUID_AT:_CPUID_AT + len(_CPUID)] = _CPUID
        page[_STATIC_AT:_STATIC_AT + len(_STATIC)] = _STATIC
        page[_UNDEFWEAK_AT:_UNDEFWEAK_AT + len(_UNDEFWEAK)] = _UNDEFWEAK
        struct.pack_into("<QQ", page, _TGA_AT, tls_get_addr, 0)
        ctypes.memmove(addr, bytes(page), _PAGE)
        self._protect(addr, c.PROT_READ | c.PROT_EXEC)
        self.base = int(addr)
        self.static = self.base + _STATIC_AT
        self.dynamic = self.base + 0
        self.undefweak = self.base + _UNDEFWEAK_AT
        self._cpuid = c.CPUID(self.base + _CPUID_AT)
        self.xsave_size = self._xsave_size()
        # XSAVEC (CPUID.(0xD,1):EAX bit 1) writes only the components in use, in the
        # compacted form XRSTOR reads back: far cheaper when AVX-512 state is idle.
        self.compacted = bool(self.cpuid(0xD, 1)[0] & 2)
        self._protect(self.base, c.PROT_READ | c.PROT_WRITE)
        code = (ctypes.c_char * _PAGE).from_address(self.base)
        struct.pack_into("<Q", code, _XSAVE_SIZE_AT, self.xsave_size)
        if self.compacted:
            ctypes.memmove(self.base + _XSAVE_AT, _XSAVEC, len(_XSAVEC))
        self._protect(self.base, c.PROT_READ | c.PROT_EXEC)

    @staticmethod
    def _protect(addr: int, prot: int) -> None:
        if c.mprotect(addr, _PAGE, prot) != 0:
            raise MappingError("cannot protect the TLSDESC stub page", op="mprotect",
                               errno=ctypes.get_errno(), address=addr)

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """(eax, ebx, ecx, edx) of CPUID(leaf, subleaf)."""
        out = (ctypes.c_uint32 * 4)()
        self._cpuid(leaf, subleaf, ctypes.byref(out))
        return out[0], out[1], out[2], out[3]

    def _xsave_size(self) -> int:
        """Size of the XSAVE area for the components the OS enabled (CPUID 0xD.0 EBX)."""
        max_leaf = self.cpuid(0)[0]
        osxsave = bool(self.cpuid(1)[2] & (1 << 27))
        if max_leaf < 0xD or not osxsave:
            raise UnsupportedError(
                "dynamic TLSDESC needs XSAVE (CPUID.1:ECX.OSXSAVE) to preserve the vector "
                "registers, and this CPU/OS does not enable it")
        size = self.cpuid(0xD, 0)[1]
        # header must fit (576 bytes) and the area is reserved 64-byte aligned
        return (max(size, 576) + 63) & ~63


_stubs: list[TlsdescStubs] = []
_lock = threading.Lock()


def stubs(tls_get_addr: int) -> TlsdescStubs:
    """The process-wide stub page (created on first use)."""
    if not _stubs:
        page = TlsdescStubs(tls_get_addr)  # built outside the lock (GC finalizers)
        with _lock:
            if not _stubs:
                _stubs.append(page)
    return _stubs[0]
