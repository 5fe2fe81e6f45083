"""Reader for glibc's ``/etc/ld.so.cache``.

Part of the *linker* layer of relink (input -> elf -> arch -> memory -> loader
-> relocation -> linker).  The library search (:mod:`relink.linker.search`)
consults this cache after RPATH / LD_LIBRARY_PATH / RUNPATH and before the
default system directories, exactly like ``ld.so`` does.  We parse the file
ourselves (no ``ldconfig`` subprocess).

Supported layouts (see glibc ``sysdeps/generic/dl-cache.h`` and
``elf/dl-cache.c``):

* the "new" format alone (``glibc-ld.so.cache1.1``; what glibc >= 2.32
  writes by default, e.g. Debian 12 / glibc 2.36);
* the old libc5 / glibc 2.0 format (``ld.so-1.7.0``) alone;
* the old format with the new one embedded after its entry table (the
  "compat" layout glibc < 2.32 wrote); the new part wins, like in ``ld.so``.

File layout of the new format (all integers in the byte order given by the
header's ``flags`` byte; strings are NUL terminated and addressed by offsets
relative to the start of the new header)::

    char     magic[17] = "glibc-ld.so.cache"
    char     version[3] = "1.1"
    uint32   nlibs
    uint32   len_strings
    uint8    flags            (bits 0-1: 0 unset, 1 invalid, 2 little, 3 big)
    uint8    padding[3]
    uint32   extension_offset (file offset, 0 = none, glibc 2.33+)
    uint32   unused[3]
    struct { int32 flags; uint32 key, value, osversion; uint64 hwcap; } libs[nlibs]
    char     strings[len_strings]

Every offset and count read from the file is bounds-checked.  A malformed or
truncated cache never raises out of :meth:`LdCache.load` /
:meth:`LdCache.from_bytes`: it yields an empty :class:`LdCache` and a debug
log message.  ``from_bytes(..., strict=True)`` raises :class:`LdCacheError` (a
:class:`relink.errors.LinkerError`) instead, and nothing else.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from relink._log import lazy_logger
from relink.errors import LinkerError

__all__ = [
    "CACHEMAGIC",
    "CACHEMAGIC_NEW",
    "CACHE_EXTENSION_MAGIC",
    "CACHE_VERSION",
    "DEFAULT_LD_SO_CACHE",
    "DL_CACHE_HWCAP_EXTENSION",
    "FLAG_AARCH64_LIB64",
    "FLAG_ARM_LIBHF",
    "FLAG_ARM_LIBSF",
    "FLAG_ELF",
    "FLAG_ELF_LIBC5",
    "FLAG_ELF_LIBC6",
    "FLAG_IA64_LIB64",
    "FLAG_LARCH_FLOAT_ABI_DOUBLE",
    "FLAG_LARCH_FLOAT_ABI_SOFT",
    "FLAG_LIBC4",
    "FLAG_MIPS64_LIBN32",
    "FLAG_MIPS64_LIBN32_NAN2008",
    "FLAG_MIPS64_LIBN64",
    "FLAG_MIPS64_LIBN64_NAN2008",
    "FLAG_MIPS_LIB32_NAN2008",
    "FLAG_POWERPC_LIB64",
    "FLAG_REQUIRED_MASK",
    "FLAG_RISCV_FLOAT_ABI_DOUBLE",
    "FLAG_RISCV_FLOAT_ABI_SOFT",
    "FLAG_S390_LIB64",
    "FLAG_SPARC_LIB64",
    "FLAG_TYPE_MASK",
    "FLAG_X8664_LIB64",
    "FLAG_X8664_LIBX32",
    "LdCache",
    "LdCacheEntry",
    "LdCacheError",
    "describe_flags",
    "host_machine_flags",
]

_log = lazy_logger(__name__)

DEFAULT_LD_SO_CACHE: Final = "/etc/ld.so.cache"

CACHEMAGIC: Final = b"ld.so-1.7.0"
CACHEMAGIC_NEW: Final = b"glibc-ld.so.cache"
CACHE_VERSION: Final = b"1.1"
_MAGIC_VERSION_NEW: Final = CACHEMAGIC_NEW + CACHE_VERSION

# Entry flags (glibc sysdeps/generic/ldconfig.h).
FLAG_TYPE_MASK: Final = 0x00FF
FLAG_LIBC4: Final = 0x0000
FLAG_ELF: Final = 0x0001
FLAG_ELF_LIBC5: Final = 0x0002
FLAG_ELF_LIBC6: Final = 0x0003
FLAG_REQUIRED_MASK: Final = 0xFF00
FLAG_SPARC_LIB64: Final = 0x0100
FLAG_IA64_LIB64: Final = 0x0200
FLAG_X8664_LIB64: Final = 0x0300
FLAG_S390_LIB64: Final = 0x0400
FLAG_POWERPC_LIB64: Final = 0x0500
FLAG_MIPS64_LIBN32: Final = 0x0600
FLAG_MIPS64_LIBN64: Final = 0x0700
FLAG_X8664_LIBX32: Final = 0x0800
FLAG_ARM_LIBHF: Final = 0x0900
FLAG_AARCH64_LIB64: Final = 0x0A00
FLAG_ARM_LIBSF: Final = 0x0B00
FLAG_MIPS_LIB32_NAN2008: Final = 0x0C00
FLAG_MIPS64_LIBN32_NAN2008: Final = 0x0D00
FLAG_MIPS64_LIBN64_NAN2008: Final = 0x0E00
FLAG_RISCV_FLOAT_ABI_SOFT: Final = 0x0F00
FLAG_RISCV_FLOAT_ABI_DOUBLE: Final = 0x1000
FLAG_LARCH_FLOAT_ABI_SOFT: Final = 0x1100
FLAG_LARCH_FLOAT_ABI_DOUBLE: Final = 0x1200

#: Bit in ``hwcap`` meaning "the low 32 bits index the glibc-hwcaps extension".
DL_CACHE_HWCAP_EXTENSION: Final = 1 << 62
_DL_CACHE_HWCAP_ISA_LEVEL_MASK: Final = (1 << 10) - 1

#: ``struct cache_extension.magic`` (``(uint32_t) -358342284``).
CACHE_EXTENSION_MAGIC: Final = 0xEAA42174
_EXT_TAG_GENERATOR: Final = 0
_EXT_TAG_GLIBC_HWCAPS: Final = 1

_OLD_HEADER_SIZE: Final = 16  # magic[11] + pad[1] + uint32 nlibs
_OLD_ENTRY_SIZE: Final = 12  # int32 flags, uint32 key, uint32 value
_NEW_HEADER_SIZE: Final = 48
_NEW_ENTRY_SIZE: Final = 24  # + uint32 osversion, uint64 hwcap
_NEW_ALIGN: Final = 8  # __alignof__ (struct cache_file_new)
_EXT_HEADER_SIZE: Final = 8  # uint32 magic, uint32 count
_EXT_SECTION_SIZE: Final = 16  # uint32 tag, flags, offset, size

#: Refuse to read absurdly large files (real caches are tens of KiB).
_MAX_CACHE_SIZE: Final = 256 * 1024 * 1024

_REQUIRED_NAMES: Final[dict[int, str]] = {
    FLAG_SPARC_LIB64: "64bit",
    FLAG_IA64_LIB64: "IA-64",
    FLAG_X8664_LIB64: "x86-64",
    FLAG_S390_LIB64: "64bit",
    FLAG_POWERPC_LIB64: "64bit",
    FLAG_MIPS64_LIBN32: "N32",
    FLAG_MIPS64_LIBN64: "64bit",
    FLAG_X8664_LIBX32: "x32",
    FLAG_ARM_LIBHF: "hard-float",
    FLAG_AARCH64_LIB64: "AArch64",
    FLAG_ARM_LIBSF: "soft-float",
    FLAG_MIPS_LIB32_NAN2008: "nan2008",
    FLAG_MIPS64_LIBN32_NAN2008: "N32,nan2008",
    FLAG_MIPS64_LIBN64_NAN2008: "64bit,nan2008",
    FLAG_RISCV_FLOAT_ABI_SOFT: "soft-float",
    FLAG_RISCV_FLOAT_ABI_DOUBLE: "double-float",
    FLAG_LARCH_FLOAT_ABI_SOFT: "soft-float",
    FLAG_LARCH_FLOAT_ABI_DOUBLE: "double-float",
}
_TYPE_NAMES: Final[dict[int, str]] = {
    FLAG_LIBC4: "libc4",
    FLAG_ELF: "ELF",
    FLAG_ELF_LIBC5: "libc5",
    FLAG_ELF_LIBC6: "libc6",
}


class LdCacheError(LinkerError):
    """The cache file is malformed (only raised with ``strict=True``)."""


def describe_flags(flags: int) -> str:
    """Render entry flags the way ``ldconfig -p`` does, e.g. ``"libc6,x86-64"``."""
    parts = [_TYPE_NAMES.get(flags & FLAG_TYPE_MASK, "unknown")]
    required = flags & FLAG_REQUIRED_MASK
    if required:
        parts.append(_REQUIRED_NAMES.get(required, str(required)))
    return ",".join(parts)


@lru_cache(maxsize=1)
def host_machine_flags() -> frozenset[int]:
    """Entry flags ``ld.so`` of the running process accepts (``_dl_cache_check_flags``).

    Derived from the machine name and the pointer size of *this* Python
    process (a 32-bit interpreter on a 64-bit kernel gets the 32-bit flags).
    """
    machine = os.uname().machine.lower()  # platform.machine(), without platform
    is64 = sys.maxsize > 2**32
    multiarch = str(getattr(sys.implementation, "_multiarch", "") or "")
    libc6 = FLAG_ELF_LIBC6
    generic = frozenset({FLAG_ELF, FLAG_ELF_LIBC6})
    if machine in ("x86_64", "amd64"):
        if is64:
            return frozenset({FLAG_X8664_LIB64 | libc6})
        if multiarch.endswith("gnux32"):
            return frozenset({FLAG_X8664_LIBX32 | libc6})
        return generic
    if machine in ("aarch64", "arm64") and is64:
        return frozenset({FLAG_AARCH64_LIB64 | libc6})
    if machine.startswith(("arm", "aarch64")):
        abi = FLAG_ARM_LIBSF if multiarch.endswith("gnueabi") else FLAG_ARM_LIBHF
        return frozenset({abi | libc6, libc6})
    if machine.startswith("ppc64") and is64:
        return frozenset({FLAG_POWERPC_LIB64 | libc6})
    if machine == "s390x" and is64:
        return frozenset({FLAG_S390_LIB64 | libc6})
    if machine.startswith("sparc") and is64:
        return frozenset({FLAG_SPARC_LIB64 | libc6})
    if machine.startswith("riscv"):
        return frozenset({FLAG_RISCV_FLOAT_ABI_DOUBLE | libc6})
    if machine.startswith("loongarch"):
        return frozenset({FLAG_LARCH_FLOAT_ABI_DOUBLE | libc6})
    if machine.startswith("mips") and is64:
        return frozenset({FLAG_MIPS64_LIBN64 | libc6, FLAG_MIPS64_LIBN64_NAN2008 | libc6})
    return generic


@dataclass(frozen=True, slots=True)
class LdCacheEntry:
    """One library record of the cache.

    ``key`` is the soname, ``value`` the full path.  ``hwcaps_subdir`` is the
    glibc-hwcaps subdirectory name (e.g. ``"x86-64-v3"``) for entries that
    use the extension mechanism, else ``None``.
    """

    flags: int
    key: str
    value: str
    osversion: int = 0
    hwcap: int = 0
    hwcaps_subdir: str | None = None

    @property
    def soname(self) -> str:
        """Alias of :attr:`key`."""
        return self.key

    @property
    def path(self) -> str:
        """Alias of :attr:`value`."""
        return self.value

    @property
    def uses_hwcaps_extension(self) -> bool:
        """True if ``hwcap`` refers to a glibc-hwcaps subdirectory (glibc 2.33+)."""
        return ((self.hwcap >> 32) & ~_DL_CACHE_HWCAP_ISA_LEVEL_MASK) == (
            DL_CACHE_HWCAP_EXTENSION >> 32
        )

    def describe(self) -> str:
        """``ldconfig -p`` style description of the flags (and hwcaps)."""
        text = describe_flags(self.flags)
        if self.hwcaps_subdir is not None:
            text += f', hwcap: "{self.hwcaps_subdir}"'
        elif self.hwcap:
            text += f", hwcap: {self.hwcap:#018x}"
        return text


_LoadKey = tuple[str, int, int, int, int]


class LdCache:
    """Parsed contents of an ``ld.so.cache`` file.

    Instances returned by :meth:`load` are shared; treat them as read-only.
    """

    __slots__ = ("_by_soname", "entries", "format", "generator", "path")

    _load_lock: Final = threading.Lock()
    _loaded: Final[dict[str, tuple[_LoadKey, LdCache]]] = {}

    def __init__(
        self,
        entries: Iterable[LdCacheEntry] = (),
        *,
        path: str | None = None,
        format: str = "empty",
        generator: str | None = None,
    ) -> None:
        self.entries: list[LdCacheEntry] = list(entries)
        #: File the cache was read from (``None`` for in-memory data).
        self.path = path
        #: ``"new"``, ``"old+new"``, ``"old"`` or ``"empty"``.
        self.format = format
        #: Generator string from the extension section, if present.
        self.generator = generator
        self._by_soname: dict[str, list[LdCacheEntry]] = {}
        for entry in self.entries:
            self._by_soname.setdefault(entry.key, []).append(entry)

    def __repr__(self) -> str:
        return f"LdCache(path={self.path!r}, format={self.format!r}, entries={len(self.entries)})"

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(
        self,
        soname: str,
        *,
        machine_flags: int | Collection[int] | None = None,
        hwcaps: Collection[str] = (),
    ) -> list[str]:
        """Paths recorded for ``soname``, in cache order, without duplicates.

        ``machine_flags`` selects the acceptable entry flags (one value or a
        collection); ``None`` means the running host's
        (:func:`host_machine_flags`).  Entries tied to a glibc-hwcaps
        subdirectory are only returned when that subdirectory name is in
        ``hwcaps`` (we do not probe the CPU's ISA level); ``ld.so`` lists them
        before the baseline entry, and so do we.
        """
        if machine_flags is None:
            accepted: Collection[int] = host_machine_flags()
        elif isinstance(machine_flags, int):
            accepted = (machine_flags,)
        else:
            accepted = machine_flags
        result: list[str] = []
        for entry in self._by_soname.get(soname, ()):
            if entry.flags not in accepted:
                continue
            if entry.uses_hwcaps_extension and entry.hwcaps_subdir not in hwcaps:
                continue
            if entry.value not in result:
                result.append(entry.value)
        return result

    # -- parsing ---------------------------------------------------------

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, *, path: str | None = None, strict: bool = False
    ) -> LdCache:
        """Parse cache contents.

        With ``strict=False`` (default) a malformed cache yields an empty
        :class:`LdCache` and a debug log message; with ``strict=True`` it
        raises :class:`LdCacheError`.
        """
        try:
            fmt, entries, generator = _parse(bytes(data))
        except LdCacheError as exc:
            if strict:
                if path is None:
                    raise
                raise LdCacheError(exc.message, file=path) from None
            _log.debug("ignoring malformed ld.so cache %s: %s", path or "<memory>", exc)
            return cls(path=path)
        return cls(entries, path=path, format=fmt, generator=generator)

    @staticmethod
    def load(path: str = DEFAULT_LD_SO_CACHE) -> LdCache:
        """Read and parse ``path``; never raises.

        Results are memoised per ``(path, st_dev, st_ino, st_size,
        st_mtime_ns)``, so a cache rewritten by ``ldconfig`` (new inode or
        new mtime) is read again.  A missing/unreadable file gives an empty
        cache (not memoised).
        """
        path = os.fspath(path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            _log.debug("cannot open ld.so cache %s: %s", path, exc)
            return LdCache(path=path)
        try:
            st = os.fstat(fd)
            key: _LoadKey = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            with LdCache._load_lock:
                hit = LdCache._loaded.get(path)
            if hit is not None and hit[0] == key:
                return hit[1]
            if not stat.S_ISREG(st.st_mode):
                _log.debug("ld.so cache %s is not a regular file", path)
                return LdCache(path=path)
            if st.st_size > _MAX_CACHE_SIZE:
                _log.debug("ld.so cache %s is too large (%d bytes)", path, st.st_size)
                return LdCache(path=path)
            data = _read_all(fd, st.st_size)
        except OSError as exc:
            _log.debug("cannot read ld.so cache %s: %s", path, exc)
            return LdCache(path=path)
        finally:
            os.close(fd)
        cache = LdCache.from_bytes(data, path=path)
        with LdCache._load_lock:
            LdCache._loaded[path] = (key, cache)
        return cache

    @staticmethod
    def clear_load_cache() -> None:
        """Forget every memoised :meth:`load` result."""
        with LdCache._load_lock:
            LdCache._loaded.clear()


def _read_all(fd: int, size_hint: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, max(size_hint - total, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > _MAX_CACHE_SIZE:
            raise OSError("file grew beyond the size limit while reading")
    return b"".join(chunks)


# -- format parsing (raises LdCacheError only) -----------------------------


def _u32(data: bytes, offset: int, order: str) -> int:
    if offset < 0 or offset + 4 > len(data):
        raise LdCacheError(f"uint32 at {offset:#x} is outside the file")
    value: int = struct.unpack_from(order + "I", data, offset)[0]
    return value


def _cstring(data: bytes, start: int, what: str) -> str:
    """NUL-terminated string at absolute offset ``start``."""
    if start < 0 or start >= len(data):
        raise LdCacheError(f"{what} offset {start:#x} is outside the file")
    end = data.find(b"\0", start)
    if end < 0:
        raise LdCacheError(f"{what} at {start:#x} is not NUL-terminated")
    return os.fsdecode(data[start:end])


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def _parse(data: bytes) -> tuple[str, list[LdCacheEntry], str | None]:
    if data.startswith(_MAGIC_VERSION_NEW):
        entries, generator = _parse_new(data, 0)
        return "new", entries, generator
    if not data.startswith(CACHEMAGIC):
        raise LdCacheError("unknown magic")
    if len(data) < _OLD_HEADER_SIZE:
        raise LdCacheError("truncated old-format header")
    # The old format has no endianness marker: ld.so reads it natively.
    native = "<" if sys.byteorder == "little" else ">"
    nlibs = _u32(data, 12, native)
    if nlibs > (len(data) - _OLD_HEADER_SIZE) // _OLD_ENTRY_SIZE:
        raise LdCacheError(f"old-format nlibs {nlibs} exceeds the file size")
    old_end = _OLD_HEADER_SIZE + nlibs * _OLD_ENTRY_SIZE
    new_start = _align(old_end, _NEW_ALIGN)
    if (
        len(data) >= new_start + _NEW_HEADER_SIZE
        and data[new_start : new_start + len(_MAGIC_VERSION_NEW)] == _MAGIC_VERSION_NEW
    ):
        entries, generator = _parse_new(data, new_start)
        return "old+new", entries, generator
    # Old format only: string offsets are relative to the end of the table.
    entries = []
    for index in range(nlibs):
        pos = _OLD_HEADER_SIZE + index * _OLD_ENTRY_SIZE
        flags, key, value = struct.unpack_from(native + "iII", data, pos)
        entries.append(
            LdCacheEntry(
                flags=flags,
                key=_cstring(data, old_end + key, "key"),
                value=_cstring(data, old_end + value, "value"),
            )
        )
    return "old", entries, None


def _parse_new(data: bytes, base: int) -> tuple[list[LdCacheEntry], str | None]:
    size = len(data)
    if size - base < _NEW_HEADER_SIZE:
        raise LdCacheError("truncated new-format header")
    endian = data[base + 28] & 3
    if endian == 1:
        raise LdCacheError("cache marked as having invalid endianness")
    if endian == 0:
        order = "<" if sys.byteorder == "little" else ">"
    else:
        order = "<" if endian == 2 else ">"
    nlibs = _u32(data, base + 20, order)
    len_strings = _u32(data, base + 24, order)
    extension_offset = _u32(data, base + 32, order)
    if nlibs > (size - base - _NEW_HEADER_SIZE) // _NEW_ENTRY_SIZE:
        raise LdCacheError(f"nlibs {nlibs} exceeds the file size")
    strings_start = base + _NEW_HEADER_SIZE + nlibs * _NEW_ENTRY_SIZE
    if len_strings > size - strings_start:
        raise LdCacheError(f"string table ({len_strings} bytes) exceeds the file size")

    hwcaps_names, generator = _parse_extensions(data, extension_offset, order)

    entries: list[LdCacheEntry] = []
    fmt = order + "iIIIQ"
    for index in range(nlibs):
        pos = base + _NEW_HEADER_SIZE + index * _NEW_ENTRY_SIZE
        flags, key, value, osversion, hwcap = struct.unpack_from(fmt, data, pos)
        entry = LdCacheEntry(
            flags=flags,
            key=_cstring(data, base + key, "key"),
            value=_cstring(data, base + value, "value"),
            osversion=osversion,
            hwcap=hwcap,
        )
        if entry.uses_hwcaps_extension:
            idx = hwcap & 0xFFFFFFFF
            subdir = hwcaps_names[idx] if idx < len(hwcaps_names) else None
            if subdir is not None:
                entry = LdCacheEntry(flags, entry.key, entry.value, osversion, hwcap, subdir)
        entries.append(entry)
    return entries, generator


def _parse_extensions(data: bytes, offset: int, order: str) -> tuple[list[str | None], str | None]:
    """Decode the extension directory leniently.

    A broken extension section does not invalidate the library entries (the
    entries that depend on it simply have no ``hwcaps_subdir``).
    """
    if offset == 0:
        return [], None
    try:
        if offset % 4:
            raise LdCacheError("misaligned extension offset")
        if _u32(data, offset, order) != CACHE_EXTENSION_MAGIC:
            raise LdCacheError("bad extension magic")
        count = _u32(data, offset + 4, order)
        table = offset + _EXT_HEADER_SIZE
        if count > (len(data) - table) // _EXT_SECTION_SIZE:
            raise LdCacheError(f"extension count {count} exceeds the file size")
        hwcaps: list[str | None] = []
        generator: str | None = None
        for index in range(count):
            tag, _flags, sec_off, sec_size = struct.unpack_from(
                order + "IIII", data, table + index * _EXT_SECTION_SIZE
            )
            if sec_off + sec_size > len(data):
                raise LdCacheError(f"extension section {index} exceeds the file size")
            if tag == _EXT_TAG_GENERATOR:
                raw = data[sec_off : sec_off + sec_size].split(b"\0", 1)[0]
                generator = raw.decode("utf-8", "replace")
            elif tag == _EXT_TAG_GLIBC_HWCAPS and sec_size % 4 == 0 and sec_off % 4 == 0:
                hwcaps = []
                for item in range(sec_size // 4):
                    str_index = _u32(data, sec_off + item * 4, order)
                    # Indices are relative to the start of the file.
                    try:
                        hwcaps.append(_cstring(data, str_index, "hwcaps name"))
                    except LdCacheError:
                        hwcaps.append(None)
        return hwcaps, generator
    except LdCacheError as exc:
        _log.debug("ignoring malformed ld.so cache extension section: %s", exc)
        return [], None
