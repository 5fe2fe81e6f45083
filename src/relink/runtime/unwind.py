"""Exception unwinding through relink-loaded code: ``.eh_frame`` registration.

Runtime layer, native only; the linker calls `register_frames` for each native module
after relocation (before initializers, which may throw and catch internally).

The unwinder that C++ exceptions (and ``backtrace``, ``pthread_cancel``…) use lives in
``libgcc_s`` and finds a PC's frame description through ``_dl_find_object`` /
``dl_iterate_phdr``, which only know objects glibc loaded: a throw inside a relink module
would end in ``std::terminate``. libgcc also keeps a list of explicitly registered
``.eh_frame`` sections, consulted first: `register_frames` locates the module's
``.eh_frame`` through PT_GNU_EH_FRAME (the ``eh_frame_ptr`` field of ``.eh_frame_hdr``),
checks that the CIE/FDE chain ends with the zero terminator libgcc's walk relies on,
and hands it to ``__register_frame``; ``__deregister_frame`` runs when the module is
released (before its memory goes away). ``libgcc_s`` and ``libstdc++`` themselves come
from the host (`HostPolicy`), so there is one unwinder and one type_info world.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

from relink._log import lazy_logger
from relink.errors import RelinkError
from relink.runtime import libc as c

__all__ = ["deregister_frames", "eh_frame_address", "register_frames", "registered_frames"]

log = lazy_logger(__name__)

DW_EH_PE_omit = 0xFF
_FORMATS = {0x01: ("<H", 2), 0x02: ("<H", 2), 0x03: ("<I", 4), 0x04: ("<Q", 8),
            0x09: ("<h", 2), 0x0A: ("<h", 2), 0x0B: ("<i", 4), 0x0C: ("<q", 8),
            0x00: ("<Q", 8)}
_MAX_WALK = 1 << 28

_registered: dict[int, Any] = {}  # eh_frame address -> module's ElfSource
_UNKNOWN = object()  # facts without "eh_frame_offset": the first load of the file
_functions: list[Any] = []  # [__register_frame, __deregister_frame], made by _libgcc


def _read(addr: int, n: int) -> bytes:
    return ctypes.string_at(addr, n)


def _readable(image: Any, addr: int, size: int) -> bool:
    """True if ``[addr, addr + size)`` lies in one segment that stays readable (PF_R):
    reading a PROT_NONE / execute-only page from Python would kill the interpreter
    (found by the issue 9 native fuzzer: PT_GNU_EH_FRAME in a segment without PF_R)."""
    v = addr - image.base
    return any(ph.p_flags & 4 and ph.p_vaddr <= v and v + size <= ph.p_vaddr + ph.p_memsz
               for ph in image.loads)


def eh_frame_address(state: Any) -> int | None:
    """Runtime address of the module's ``.eh_frame`` (from PT_GNU_EH_FRAME), or None."""
    image = state.image
    hdr = image.eh_frame_hdr
    if hdr is None:
        return None
    size = next((ph.p_memsz for ph in image.phdrs if ph.p_type == 0x6474E550), 0)
    if size < 8 or not _readable(image, hdr, size):
        raise RelinkError("PT_GNU_EH_FRAME lies outside the loaded, readable segments",
                          file=image.label)
    version, ptr_enc = _read(hdr, 2)
    if version != 1 or ptr_enc == DW_EH_PE_omit:
        return None
    fmt = _FORMATS.get(ptr_enc & 0x0F)
    if fmt is None or ptr_enc & 0x70 not in (0x00, 0x10):  # absptr or pcrel only
        raise RelinkError(f".eh_frame_hdr uses unsupported pointer encoding {ptr_enc:#x}",
                          file=image.label)
    field = hdr + 4
    value = struct.unpack(fmt[0], _read(field, fmt[1]))[0]
    if ptr_enc & 0x70 == 0x10:  # DW_EH_PE_pcrel
        value += field
    elif image.header.e_type == 3:  # absolute, but relative to the link address
        value += image.base
    return int(value) & (2**64 - 1)


def _terminated(state: Any, start: int) -> bool:
    """True if the CIE/FDE chain from `start` ends with a zero length inside the image.

    The walk reads the segment holding `start` through the image's own view (bounds
    are the segment's), and its verdict is a property of the file: it is cached with
    the parsed metadata, so loading the same file again does not walk it.
    """
    image = state.image
    vaddr = start - image.base
    parsed = getattr(image, "parsed", None)
    facts = parsed.facts if parsed is not None and parsed.complete else None
    key = f"eh_frame_terminated@{vaddr:#x}"
    if facts is not None and key in facts:
        return bool(facts[key])
    if not _readable(image, start, 4):
        return False
    try:
        data = image.view.until(vaddr, ".eh_frame")
    except RelinkError:
        return False
    end = len(data)
    pos = 0
    unpack = struct.unpack_from
    verdict = False
    for _ in range(_MAX_WALK):
        if pos + 4 > end:
            break
        length = unpack("<I", data, pos)[0]
        if length == 0:
            verdict = True
            break
        if length == 0xFFFFFFFF:  # 64-bit DWARF length
            if pos + 12 > end:
                break
            length = unpack("<Q", data, pos + 4)[0] + 8
        pos += 4 + length
    if facts is not None:
        facts[key] = verdict
    return verdict


def _libgcc() -> tuple[Any, Any]:
    if not _functions:
        from relink.runtime.host import host_library

        lib = host_library("libgcc_s.so.1", load=True)
        reg = lib.address_of("__register_frame") if lib is not None else 0
        dereg = lib.address_of("__deregister_frame") if lib is not None else 0
        if not reg or not dereg:
            raise RelinkError("the host has no libgcc_s with __register_frame: C++ "
                              "exceptions cannot unwind through relink-loaded code")
        _functions.extend([c.REGISTER_FRAME(reg), c.REGISTER_FRAME(dereg)])
    return _functions[0], _functions[1]


def _locate(state: Any) -> int | None:
    """The runtime address of a registrable ``.eh_frame``, or None (absent, empty, or
    not terminated inside the image — the last one logged)."""
    start = eh_frame_address(state)
    if start is None:
        return None
    if not _terminated(state, start):
        log.warning("%s: .eh_frame has no zero terminator inside the image; exceptions "
                    "will not unwind through it", state.image.label)
        return None
    if struct.unpack("<I", _read(start, 4))[0] == 0:
        return None  # an empty .eh_frame
    return start


def register_frames(state: Any) -> bool:
    """Register `state`'s ``.eh_frame`` with the host unwinder; False if it has none.

    The address is recorded in ``state.frames``: the state's release deregisters it
    (`deregister_frames`; a plain address, not a hook object per module). Where the
    ``.eh_frame`` is, relative to the load base, is a property of the file: it is cached
    with the file's parsed metadata, so a repeated load pays only the registration.
    """
    image = state.image
    parsed = getattr(image, "parsed", None)
    facts = parsed.facts if parsed is not None and parsed.complete else None
    offset = facts.get("eh_frame_offset", _UNKNOWN) if facts is not None else _UNKNOWN
    if offset is None:
        return False
    if offset is _UNKNOWN:
        found = _locate(state)
        if facts is not None:
            facts["eh_frame_offset"] = None if found is None else found - image.base
        if found is None:
            return False
        start: int = found
    else:
        start = image.base + offset
    (_functions or _libgcc())[0](start)  # libgcc locks its own object list
    _registered[start] = image.source  # its label, made when someone lists them
    state.frames = start
    return True


def deregister_frames(start: int) -> None:
    """Deregister the ``.eh_frame`` at `start` (once; a second call does nothing)."""
    if _registered.pop(start, None) is not None:
        _functions[1](start)  # made by the registration (`_libgcc`)


def registered_frames() -> dict[int, str]:
    """Every ``.eh_frame`` relink registered: address -> module label."""
    return {start: source.label for start, source in list(_registered.items())}
