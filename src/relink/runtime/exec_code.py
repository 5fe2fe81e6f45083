"""Machine-code pages: small hand-written x86_64 stubs placed in executable memory.

Runtime layer, host only (x86_64). The lazy-binding trampoline (runtime/lazy.py), the
fork-and-enter stub of `relink.execute` (runtime/exec.py) and the CPU feature probes
below are machine code that Python cannot express. Each stub is assembled with GNU
``as`` at development time; its bytes are embedded here next to the assembly source
(in the docstring or comment of the constant), so the build needs no assembler. A stub
is copied into a fresh anonymous page obtained through `relink.memory.host` and the page
is then made read+execute (W^X: it is never writable and executable at once).

The probes answer what the trampoline must save: whether the OS enabled XSAVE
(CPUID.1:ECX.OSXSAVE), which state components are enabled (XCR0 through XGETBV) and
where each component lives in the standard XSAVE layout (CPUID leaf 0xD).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any

from relink.errors import UnsupportedError
from relink.memory import PROT_EXEC, PROT_READ, PROT_WRITE

__all__ = ["CodePage", "XsaveInfo", "code_page", "cpuid", "xsave_info"]


class CodePage:
    """An executable page holding one stub; lives for the rest of the process.

    Attributes:
        address: the address of the stub's first byte.
        size: its length in bytes.
    """

    __slots__ = ("address", "size", "_region")

    def __init__(self, code: bytes) -> None:
        from relink.arch import host_spec
        from relink.memory.host import HostMapper

        spec = host_spec()
        if spec is None or spec.name != "x86_64":
            raise UnsupportedError("relink's machine-code stubs exist for x86_64 hosts only "
                                   f"(this host is {spec.name if spec else 'unknown'})")
        mapper = HostMapper()
        size = (len(code) + mapper.page_size - 1) & ~(mapper.page_size - 1)
        region = mapper.reserve(size)
        try:
            region.map_anon(region.start, size, PROT_READ | PROT_WRITE)
            region.write(region.start, code)
            region.protect(region.start, size, PROT_READ | PROT_EXEC)
        except BaseException:
            region.release()
            raise
        self._region = region
        self.address = region.start
        self.size = len(code)


def code_page(code: bytes) -> CodePage:
    """Place `code` in a new read+execute page and return it."""
    return CodePage(code)


# Assembled from (GNU as, AT&T syntax):
#
#   cpuid_helper:            # void cpuid_helper(uint32 leaf, uint32 sub, uint32 out[4])
#       push %rbx
#       mov  %rdx, %r8
#       mov  %edi, %eax
#       mov  %esi, %ecx
#       cpuid
#       mov  %eax, 0(%r8)
#       mov  %ebx, 4(%r8)
#       mov  %ecx, 8(%r8)
#       mov  %edx, 12(%r8)
#       pop  %rbx
#       ret
#   xgetbv_helper:           # uint64 xgetbv_helper(void): XCR0
#       xor  %ecx, %ecx
#       xgetbv
#       shl  $32, %rdx
#       or   %rdx, %rax
#       ret
_PROBES = bytes.fromhex(
    "534989d089f889f10fa241890041895804418948084189500c5bc3"
    "31c90f01d048c1e2204809d0c3")
_XGETBV_AT = 27

_probe_lock = threading.Lock()
_probe: list[object] = []


def _probe_functions() -> tuple[Any, Any]:
    with _probe_lock:
        if not _probe:
            from relink.runtime import libc

            page = code_page(_PROBES)
            cpuid_fn = libc.CPUID(page.address)
            xgetbv_fn = libc.XGETBV(page.address + _XGETBV_AT)
            _probe.extend([page, cpuid_fn, xgetbv_fn])
    return _probe[1], _probe[2]


def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """(eax, ebx, ecx, edx) of the CPUID instruction for `leaf` / `subleaf`."""
    fn, _ = _probe_functions()
    out = (ctypes.c_uint32 * 4)()
    fn(leaf, subleaf, out)
    return out[0], out[1], out[2], out[3]


@dataclass(frozen=True)
class XsaveInfo:
    """What the lazy trampoline needs to save the vector state.

    Attributes:
        osxsave: the OS enabled XSAVE (else only FXSAVE is usable: SSE state only, and
            then no AVX state exists either).
        xcr0: the enabled state components (0 without OSXSAVE).
        size: bytes of the standard-format XSAVE area that saving ``mask & xcr0`` needs.
        mask: the components the trampoline saves (glibc's STATE_SAVE_MASK: SSE, AVX,
            MPX bound registers, AVX-512 opmask / ZMM_Hi256 / Hi16_ZMM).
    """

    osxsave: bool
    xcr0: int
    size: int
    mask: int


SAVE_MASK = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7)
_xsave: list[XsaveInfo] = []


def xsave_info() -> XsaveInfo:
    """Probe (once) the XSAVE support and the area size for `SAVE_MASK`."""
    if _xsave:
        return _xsave[0]
    _eax, _ebx, ecx, _edx = cpuid(1)
    osxsave = bool(ecx & (1 << 27))
    if not osxsave:
        info = XsaveInfo(False, 0, 512, 0)
    else:
        _, xgetbv = _probe_functions()
        xcr0 = int(xgetbv())
        size = 512 + 64  # legacy area + XSAVE header
        for comp in range(2, 8):
            if SAVE_MASK & xcr0 & (1 << comp):
                csize, offset, _c, _d = cpuid(0xD, comp)
                size = max(size, offset + csize)
        info = XsaveInfo(True, xcr0, size, SAVE_MASK)
    _xsave.append(info)
    return info
