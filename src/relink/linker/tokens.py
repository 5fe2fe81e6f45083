"""Search-path strings as ``ld.so`` sees them: host facts and token expansion.

Part of the *linker* layer, used by relink.linker.search: the host's multiarch triplet,
``$PLATFORM`` and ``$LIB`` values and default directories, expansion of ``$ORIGIN`` /
``$LIB`` / ``$PLATFORM`` (braced or not) in DT_RPATH / DT_RUNPATH / DT_NEEDED strings,
splitting of search lists and lexical normalisation of directories. Pure functions of
their arguments and of the running host; nothing here touches the file system.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import lru_cache
from typing import Final, TypeAlias

__all__ = [
    "HOST_DEFAULT",
    "TokenValue",
    "default_system_dirs",
    "expand_tokens",
    "host_lib_token",
    "host_multiarch_triplet",
    "host_platform",
    "join_dir",
    "normalize_dir",
    "split_search_list",
]


class _HostDefault:
    """The type of `HOST_DEFAULT`: one instance, compared by identity. A plain class,
    not an enum.Enum (creating one costs a first load ~0.15 ms)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<_HostDefault.HOST_DEFAULT: 'host default'>"  # the enum's repr, as before

    def __reduce__(self) -> str:
        return "HOST_DEFAULT"  # pickle and copy give back the module's own instance


#: Sentinel: "use the value ``ld.so`` on this host would use".
HOST_DEFAULT: Final = _HostDefault()

#: A ``$LIB`` / ``$PLATFORM`` value: a string, ``None`` (unset) or :data:`HOST_DEFAULT`.
TokenValue: TypeAlias = "str | _HostDefault | None"

# ldcache.DEFAULTLD_SO_CACHE_PATH, spelled out: relink.linker.ldcache is imported only when a
# search reaches the cache step (a load whose libraries are all found by RUNPATH / RPATH
# or served by the host never does).
LD_SO_CACHE_PATH: Final = "/etc/ld.so.cache"

# -- host facts -------------------------------------------------------------

_TRIPLETS: Final[dict[tuple[str, bool], str]] = {
    ("x86_64", True): "x86_64-linux-gnu",
    ("amd64", True): "x86_64-linux-gnu",
    ("x86_64", False): "i386-linux-gnu",
    ("i386", False): "i386-linux-gnu",
    ("i486", False): "i386-linux-gnu",
    ("i586", False): "i386-linux-gnu",
    ("i686", False): "i386-linux-gnu",
    ("aarch64", True): "aarch64-linux-gnu",
    ("arm64", True): "aarch64-linux-gnu",
    ("aarch64", False): "arm-linux-gnueabihf",
    ("armv7l", False): "arm-linux-gnueabihf",
    ("armv8l", False): "arm-linux-gnueabihf",
    ("armv6l", False): "arm-linux-gnueabihf",
    ("ppc64le", True): "powerpc64le-linux-gnu",
    ("ppc64", True): "powerpc64-linux-gnu",
    ("ppc", False): "powerpc-linux-gnu",
    ("s390x", True): "s390x-linux-gnu",
    ("riscv64", True): "riscv64-linux-gnu",
    ("loongarch64", True): "loongarch64-linux-gnu",
    ("mips64", True): "mips64el-linux-gnuabi64",
    ("sparc64", True): "sparc64-linux-gnu",
}


def _machine() -> str:
    # platform.machine() is os.uname().machine on POSIX; importing platform costs ~2.5 ms
    # of a first load.
    return os.uname().machine


def _is64() -> bool:
    return sys.maxsize > 2**32


@lru_cache(maxsize=1)
def host_multiarch_triplet() -> str:
    """Debian multiarch triplet of this process, e.g. ``"x86_64-linux-gnu"``.

    Taken from the interpreter's build (``sys.implementation._multiarch``)
    when available, else derived from the machine name and pointer size.
    """
    multiarch = getattr(sys.implementation, "_multiarch", None)
    if isinstance(multiarch, str) and multiarch:
        return multiarch
    machine = _machine().lower()
    return _TRIPLETS.get((machine, _is64()), f"{machine}-linux-gnu")


@lru_cache(maxsize=1)
def host_platform() -> str:
    """Default ``$PLATFORM`` value: the machine name (``AT_PLATFORM``-like).

    glibc may report a more specific value on some CPUs (e.g. ``"haswell"``
    on recent Intel x86-64 with glibc <= 2.36); pass ``platform=`` explicitly
    when that matters.
    """
    machine = _machine()
    if machine in ("x86_64", "amd64") and not _is64():
        return "i686"
    return machine or "unknown"


@lru_cache(maxsize=1)
def host_lib_token() -> str:
    """Default ``$LIB`` value, guessed from where the host's libc lives.

    Debian-style multiarch systems give ``"lib/<triplet>"``, lib64 systems
    (Fedora, SUSE) ``"lib64"``, others ``"lib"``.
    """
    triplet = host_multiarch_triplet()
    for prefix in ("/lib", "/usr/lib"):
        if os.path.exists(f"{prefix}/{triplet}/libc.so.6"):
            return f"lib/{triplet}"
    for candidate in ("/usr/lib64/libc.so.6", "/lib64/libc.so.6"):
        if _is64() and os.path.exists(candidate):
            real = os.path.realpath(candidate)
            if os.path.basename(os.path.dirname(real)) == "lib64":
                return "lib64"
    return "lib"


def default_system_dirs(triplet: str | None = None, *, is64: bool | None = None) -> tuple[str, ...]:
    """Default library directories, most specific first.

    ``/lib/<triplet>``, ``/usr/lib/<triplet>``, then (64-bit only)
    ``/lib64``, ``/usr/lib64``, then ``/lib``, ``/usr/lib``.
    """
    triplet = triplet if triplet is not None else host_multiarch_triplet()
    wide = _is64() if is64 is None else is64
    dirs = [f"/lib/{triplet}", f"/usr/lib/{triplet}"]
    if wide:
        dirs += ["/lib64", "/usr/lib64"]
    dirs += ["/lib", "/usr/lib"]
    return tuple(dirs)


# -- pure string helpers ----------------------------------------------------

_TOKENS: Final = ("ORIGIN", "PLATFORM", "LIB")


def _ident_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _match_token(text: str, pos: int) -> tuple[str, int] | None:
    """Match a DST name at ``text[pos:]`` (just after ``$``), like glibc's ``is_dst``.

    Returns ``(name, length consumed)`` or ``None``.
    """
    curly = text.startswith("{", pos)
    start = pos + 1 if curly else pos
    for name in _TOKENS:
        if not text.startswith(name, start):
            continue
        end = start + len(name)
        if curly:
            if text.startswith("}", end):
                return name, end + 1 - pos
            continue
        if end < len(text) and _ident_char(text[end]):
            continue
        return name, end - pos
    return None


def _resolve_value(value: TokenValue, default: Callable[[], str]) -> str | None:
    if isinstance(value, _HostDefault):  # HOST_DEFAULT, the only instance
        return default()
    if isinstance(value, str):
        return value or None
    return None


def expand_tokens(
    path: str,
    *,
    origin: str | None,
    lib: TokenValue = HOST_DEFAULT,
    platform: TokenValue = HOST_DEFAULT,
) -> str | None:
    """Expand ``$ORIGIN``, ``$LIB``, ``$PLATFORM`` (and the ``${...}`` forms).

    ``lib`` / ``platform`` default to the host's values
    (:func:`host_lib_token`, :func:`host_platform`).  A recognised token whose
    value is unknown (``None`` or empty, e.g. ``origin=None``) discards the
    whole path: the result is ``None``.  A ``$`` not followed by a recognised
    token name -- ``$ORIGIN_SUFFIX``, ``$FOO``, ``${ORIGIN`` -- is kept
    literally, as glibc does.
    """
    if "$" not in path:
        return path
    values = {
        "ORIGIN": origin or None,
        "LIB": _resolve_value(lib, host_lib_token),
        "PLATFORM": _resolve_value(platform, host_platform),
    }
    out: list[str] = []
    pos = 0
    while True:
        dollar = path.find("$", pos)
        if dollar < 0:
            out.append(path[pos:])
            return "".join(out)
        out.append(path[pos:dollar])
        match = _match_token(path, dollar + 1)
        if match is None:
            out.append("$")
            pos = dollar + 1
            continue
        name, length = match
        value = values[name]
        if value is None:
            return None
        out.append(value)
        pos = dollar + 1 + length


def split_search_list(value: str, *, separators: str = ":") -> list[str]:
    """Split a search list; an empty element means the current directory ``"."``.

    ``":/fallback"`` gives ``[".", "/fallback"]``.  An entirely empty value
    gives ``[]`` (glibc ignores an empty ``DT_RPATH`` / ``DT_RUNPATH``).
    ``LD_LIBRARY_PATH`` uses ``separators=":;"``.
    """
    if value == "":
        return []
    parts = [value]
    for sep in separators:
        parts = [piece for part in parts for piece in part.split(sep)]
    return [part if part else "." for part in parts]


def normalize_dir(path: str) -> str:
    """Lexically normalise a directory for de-duplication.

    Collapses repeated ``/``, drops ``.`` components and trailing slashes
    (``"/usr/lib/"`` == ``"/usr//lib"`` == ``"/usr/lib"``).  ``..`` is kept:
    resolving it lexically could be wrong in the presence of symlinks.
    """
    if not path:
        return "."
    absolute = path.startswith("/")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    joined = "/".join(parts)
    if absolute:
        return "/" + joined
    return joined or "."


def join_dir(directory: str, name: str) -> str:
    directory = normalize_dir(directory)
    if directory == "/":
        return "/" + name
    return f"{directory}/{name}"


# -- data ---------------------------------------------------------------------
