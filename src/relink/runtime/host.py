"""The host process as a symbol provider (design.md §5).

Runtime layer, host only. The glibc family (``libc.so.6``, ``libm.so.6``, ``ld-linux*``…)
and whatever the process has already loaded are never mapped a second time: a DT_NEEDED
entry the `HostPolicy` accepts becomes a `HostLibrary`, whose symbols come from the
system's dlsym/dlvsym on that library's handle. Lookups are cached per library, misses
included (weak ``__gmon_start__`` / ``_ITM_*`` miss on every load). `ProcessHost` is the
process-wide scope (``dlsym(RTLD_DEFAULT)``), searched after every relink module so a
library linked without its DT_NEEDED still finds libc, as dlopen's global scope would.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterable
from typing import Any

from relink.runtime import libc as c

__all__ = ["DEFAULT_HOST_FAMILY", "HostLibrary", "HostPolicy", "ProcessHost", "host_library"]

DEFAULT_HOST_FAMILY: tuple[str, ...] = (
    "libc.so.*", "libm.so.*", "libpthread.so.*", "libdl.so.*", "librt.so.*", "libutil.so.*",
    "libresolv.so.*", "libanl.so.*", "libnsl.so.*", "libBrokenLocale.so.*", "libmvec.so.*",
    "libc_malloc_debug.so.*", "libmemusage.so", "ld-linux*.so*", "ld64.so.*",
    "linux-vdso.so.*", "libgcc_s.so.*", "libstdc++.so.*",
)
STT_NOTYPE = 0


def _match(name: str, pattern: str) -> bool:
    """``fnmatch.fnmatchcase(name, pattern)``.

    Patterns whose only wildcard is ``*`` (every default pattern) are matched by hand:
    fnmatch compiles each pattern to a regular expression on first use, which cost a
    first load in a fresh process ~5 ms for the default family.
    """
    if "?" in pattern or "[" in pattern:
        import fnmatch

        return fnmatch.fnmatchcase(name, pattern)
    parts = pattern.split("*")
    if len(parts) == 1:
        return name == pattern
    head, tail = parts[0], parts[-1]
    end = len(name) - len(tail)
    if end < len(head) or not name.startswith(head) or not name.endswith(tail):
        return False
    pos = len(head)
    for part in parts[1:-1]:  # leftmost matches: right for patterns of literals and '*'
        pos = name.find(part, pos, end)
        if pos < 0:
            return False
        pos += len(part)
    return True


class HostLibrary:
    """A library provided by the host's own dynamic linker (dlopen/dlsym/dlvsym).

    Attributes:
        name: the DT_NEEDED name it was asked for.
        handle: the dlopen handle (kept open for the life of the process).
    """

    is_host = True

    def __init__(self, name: str, handle: int) -> None:
        self.name = name
        self.soname = name
        self.handle = handle
        self.identity = ("host", name)
        self._cache: dict[tuple[str, str | None], int] = {}
        self._lock = threading.Lock()

    @property
    def path(self) -> str | None:
        """The file the host loaded for this library (its link_map's l_name).

        Not RTLD_DI_ORIGIN: glibc strcpy()s a NULL l_origin for ld.so's own link_map,
        which crashed the interpreter (found by the issue 9 safety tests).
        """
        lm = ctypes.c_void_p()
        if c.dlinfo(self.handle, 2, ctypes.byref(lm)) != 0 or not lm.value:  # RTLD_DI_LINKMAP
            return None
        # struct link_map { ElfW(Addr) l_addr; char *l_name; ... }
        name = ctypes.c_char_p.from_address(lm.value + ctypes.sizeof(ctypes.c_void_p)).value
        return name.decode("utf-8", "surrogateescape") if name else None

    def address_of(self, name: str, version: str | None = None) -> int:
        """Address of `name` (0 when absent), cached including misses."""
        key = (name, version)
        addr = self._cache.get(key)
        if addr is None:
            raw = name.encode("utf-8", "surrogateescape")
            if version is None:
                addr = c.dlsym(self.handle, raw) or 0
            else:
                # Names come from the file (surrogateescape-decoded): encode them back
                # losslessly instead of raising UnicodeEncodeError on non-UTF-8 bytes.
                addr = c.dlvsym(self.handle, raw,
                                version.encode("utf-8", "surrogateescape")) or 0
            self._cache[key] = addr
        return addr

    def lookup(self, name: str, version: str | None,
               exact: bool = False) -> tuple[int, int, int] | None:
        """(address, size, type) of a definition, or None. dlsym resolves IFUNCs itself.

        A versioned lookup is dlvsym alone: it applies ld.so's own check_match (an
        unversioned definition matches too), so falling back to dlsym would bind another
        version where ld.so reports "undefined symbol: foo, version V".
        """
        addr = self.address_of(name, version)
        return (addr, 0, STT_NOTYPE) if addr else None

    def lookup_reference(self, name: str) -> tuple[int, int, int] | None:
        """`lookup` for an *unversioned* relocation reference, as ld.so binds it: the
        definition of version index 2 (the library's oldest version) when there is one,
        else the default (dlsym)."""
        oldest = self.__dict__.get("_oldest_version", False)
        if oldest is False:  # computed once per library (reads its DT_VERDEF)
            from relink.relocation.versioncheck import oldest_version

            path = self.path if self.handle else None
            oldest = oldest_version(path) if path else None
            self._oldest_version = oldest
        if oldest is not None:
            addr = self.address_of(name, oldest)
            if addr:
                return addr, 0, STT_NOTYPE
        return self.lookup(name, None)

    def __repr__(self) -> str:
        return f"<HostLibrary {self.name}>"


class ProcessHost(HostLibrary):
    """The process's global scope: ``dlsym(RTLD_DEFAULT, …)``."""

    def __init__(self) -> None:
        # A handle of 0 (NULL) is RTLD_DEFAULT for dlsym/dlvsym: the inherited
        # address_of then searches the process's global scope.
        super().__init__("<process>", 0)
        self.identity = ("host", "<process>")

    @property
    def path(self) -> str | None:
        return None


class HostPolicy:
    """Which DT_NEEDED names the host serves instead of relink loading them.

    Args:
        family: fnmatch patterns of sonames always served by the host (default: the
            glibc family plus libgcc_s and libstdc++, which must exist once per process).
        serve_loaded: also serve any library the process has already loaded
            (``dlopen(name, RTLD_NOLOAD)`` succeeds).
        exclude: patterns never served by the host (relink loads them), checked first.
    """

    # Read-only once made: it caches its verdicts per name, and linkers that were given
    # no policy share one default instance.
    __slots__ = ("_family", "_serve_loaded", "_exclude", "_verdicts")

    def __init__(self, family: Iterable[str] = DEFAULT_HOST_FAMILY, *,
                 serve_loaded: bool = True, exclude: Iterable[str] = ()) -> None:
        self._family = tuple(family)
        self._serve_loaded = serve_loaded
        self._exclude = tuple(exclude)
        self._verdicts: dict[str, int] = {}

    @property
    def family(self) -> tuple[str, ...]:
        return self._family

    @property
    def serve_loaded(self) -> bool:
        return self._serve_loaded

    @property
    def exclude(self) -> tuple[str, ...]:
        return self._exclude

    def serves(self, name: str) -> bool:
        """Would the host serve `name`? Decided without loading anything (for tools
        that must not run code: ``relink deps``, `relink.scan`)."""
        if "/" in name:
            return False
        if any(_match(name, p) for p in self.exclude):
            return False
        if any(_match(name, p) for p in self.family):
            return True
        # RTLD_NOLOAD answers whether the process already has it; nothing runs.
        return self.serve_loaded and host_library(name, load=False) is not None

    def provides(self, name: str) -> HostLibrary | None:
        """The HostLibrary serving `name`, or None if relink must load it itself."""
        verdict = self._verdicts.get(name)
        if verdict is None:
            base = name.rsplit("/", 1)[-1]
            if any(_match(base, p) for p in self.exclude):
                verdict = 0
            elif any(_match(base, p) for p in self.family):
                verdict = 1
            else:
                verdict = 2 if self.serve_loaded else 0
            self._verdicts[name] = verdict
        if not verdict:
            return None
        lib = _libraries.get(name)  # what host_library would return first
        if lib is not None:
            return lib
        if verdict == 1:
            return host_library(name, load=True)
        # Ask the host only about names it has loaded: a dlopen(RTLD_NOLOAD) miss
        # searches the file system (~35 us); the snapshot costs ~1 us when unchanged.
        if host_has_loaded(name.rsplit("/", 1)[-1]):
            return host_library(name, load=False)
        return None

    @classmethod
    def none(cls) -> HostPolicy:
        """A policy under which the host serves nothing (everything is loaded by relink)."""
        return cls((), serve_loaded=False)


_libraries: dict[str, HostLibrary | None] = {}
_libraries_lock = threading.Lock()
PROCESS = ProcessHost()


_snapshot: list[object] = [(-1, -1), b"", None]  # generation, names blob, name set


_counters: list[tuple[int, int]] = [(0, 0)]
_counters_lock = threading.RLock()  # re-entrant: a GC finalizer may load or unload


def _first_counters(info: Any, size: int, data: int | None) -> int:
    _counters[0] = (info.contents.dlpi_adds, info.contents.dlpi_subs)
    return 1  # stop after the first object: only the counters are wanted


# Built once: a CFUNCTYPE per call would cost more than the walk it makes.
_FIRST_COUNTERS = c.DL_ITERATE_PHDR_CALLBACK(_first_counters)


# x86_64: a 22-byte callback in machine code reads the counters without entering Python
# (~1 us instead of ~5 on every dependency the host might serve):
#   mov rax,[rdi+32]; mov [rdx],rax; mov rax,[rdi+40]; mov [rdx+8],rax; mov eax,1; ret
# (dlpi_adds and dlpi_subs sit at offsets 32 and 40 of dl_phdr_info on x86_64.)
_COUNTERS_CODE = bytes.fromhex("488b47204889024" "88b4728488942" "08b801000000c3")
# A second one copies every object's dlpi_name, NUL-terminated, into a buffer described
# by {cur, end, overflow} -- inside the walk, under glibc's lock, so no name can be
# freed meanwhile -- and stops the walk (returns 1) when the buffer is full:
#       mov rax,[rdi+8]; test rax,rax; jz done; mov rcx,[rdx]; mov r8,[rdx+8]
#   l:  cmp rcx,r8; jae full; mov r9b,[rax]; mov [rcx],r9b; inc rcx; inc rax
#       test r9b,r9b; jnz l; mov [rdx],rcx
#   done: xor eax,eax; ret
#   full: mov qword [rdx+16],1; mov eax,1; ret
_NAMES_CODE = bytes.fromhex("488b47084885c07420488b0a4c8b42084c39c17317448a08448809"
                            "48ffc148ffc04584c975ea48890a31c0c3"
                            "48c7421001000000b801000000c3")
_NAMES_CAPACITY = 1 << 16  # bytes of names
_native_counters: list[Any] = []


def _native_callback() -> Any:
    """(counters callback, its buffer, names callback, its buffer, the names walk's
    state, the counters buffer's address) in machine code, or None where unavailable
    (not x86_64, or no executable page)."""
    if not _native_counters:
        callback: Any = None
        if os.uname().machine in ("x86_64", "amd64") and ctypes.sizeof(ctypes.c_void_p) == 8 \
                and c.DlPhdrInfo.dlpi_adds.offset == 32 and c.DlPhdrInfo.dlpi_subs.offset == 40 \
                and c.DlPhdrInfo.dlpi_name.offset == 8:
            page = c.mmap(None, 4096, c.PROT_READ | c.PROT_WRITE,
                          c.MAP_PRIVATE | c.MAP_ANONYMOUS, -1, 0)
            if page and page != c.MAP_FAILED:
                ctypes.memmove(page, _COUNTERS_CODE, len(_COUNTERS_CODE))
                ctypes.memmove(page + 64, _NAMES_CODE, len(_NAMES_CODE))
                if c.mprotect(page, 4096, c.PROT_READ | c.PROT_EXEC) == 0:
                    # Never unmapped: glibc may call it until the process exits.
                    names = ctypes.create_string_buffer(_NAMES_CAPACITY)
                    out = (ctypes.c_uint64 * 2)()
                    callback = (c.DL_ITERATE_PHDR_CALLBACK(page), out,
                                c.DL_ITERATE_PHDR_CALLBACK(page + 64), names,
                                (ctypes.c_uint64 * 3)(), ctypes.addressof(out))
        _native_counters.append(callback)
    return _native_counters[0]


def _native_blob(native: Any) -> bytes | None:
    """Every object's dlpi_name, NUL-separated, through the machine-code walk (None if
    the buffer was too small)."""
    _, _, fn, buf, state, _ = native
    start = ctypes.addressof(buf)
    state[0], state[1], state[2] = start, start + _NAMES_CAPACITY, 0
    c.dl_iterate_phdr(fn, ctypes.addressof(state))
    return None if state[2] else ctypes.string_at(start, state[0] - start)


def _generation() -> tuple[int, int]:
    native = _native_counters[0] if _native_counters else _native_callback()
    with _counters_lock:
        if native is not None:
            out = native[1]
            c.dl_iterate_phdr(native[0], native[5])  # native[5]: out's address
            return out[0], out[1]
        c.dl_iterate_phdr(_FIRST_COUNTERS, None)
        return _counters[0]


def _names_blob() -> bytes:
    """``\\0name\\0name…\\0`` of every object the host's dynamic linker has loaded;
    re-read only when glibc's load/unload counters (dlpi_adds / dlpi_subs) change."""
    gen = _generation()
    if gen != _snapshot[0]:
        blob = None
        native = _native_counters[0] if _native_counters else None
        if native is not None:
            with _counters_lock:
                blob = _native_blob(native)
        if blob is None:
            names: list[bytes] = []

            def collect(info: Any, size: int, data: int | None) -> int:
                raw = info.contents.dlpi_name
                if raw:
                    names.append(raw + b"\0")
                return 0

            c.dl_iterate_phdr(c.DL_ITERATE_PHDR_CALLBACK(collect), None)
            blob = b"".join(names)
        _snapshot[:] = [gen, b"\0" + blob, None]
    return _snapshot[1]  # type: ignore[return-value]  # always bytes


def host_has_loaded(base: str) -> bool:
    """Whether the host has an object whose file name (last path component) is `base`:
    one substring search, no per-object work."""
    blob = _names_blob()
    patterns = _patterns.get(base)
    if patterns is None:  # the same few DT_NEEDED names are asked about on every load
        if len(_patterns) >= 1024:
            _patterns.clear()
        raw = base.encode("utf-8", "surrogateescape")
        patterns = _patterns[base] = (b"/" + raw + b"\0", b"\0" + raw + b"\0")
    return patterns[0] in blob or patterns[1] in blob


_patterns: dict[str, tuple[bytes, bytes]] = {}  # base name -> what to search the blob for


def loaded_names() -> frozenset[str]:
    """Base names of every object the host's dynamic linker has loaded (cached)."""
    blob = _names_blob()
    snap = _snapshot
    names = snap[2]
    if names is None or snap[1] is not blob:
        names = frozenset(n.decode("utf-8", "surrogateescape").rsplit("/", 1)[-1]
                          for n in blob.split(b"\0") if n)
        if snap[1] is blob:
            snap[2] = names
    assert isinstance(names, frozenset)
    return names


def host_library(name: str, *, load: bool) -> HostLibrary | None:
    """The process-wide HostLibrary for `name`.

    With `load`, the host dlopens it if needed (RTLD_NOW | RTLD_LOCAL); otherwise it is
    returned only if the process already has it. Results are cached (a NOLOAD miss is
    not, since the process may load the library later).
    """
    lib = _libraries.get(name)
    if lib is not None:
        return lib
    with _libraries_lock:
        lib = _libraries.get(name)
        if lib is not None:
            return lib
        raw = name.encode("utf-8", "surrogateescape")
        handle = c.dlopen(raw, c.RTLD_NOW | c.RTLD_NOLOAD)
        if not handle and load:
            handle = c.dlopen(raw, c.RTLD_NOW | c.RTLD_LOCAL)
        if not handle:
            c.dlerror()
            return None
        lib = HostLibrary(name, handle)
        _libraries[name] = lib
        return lib
