"""Load-time check of a module's version requirements (DT_VERNEED), as ld.so does it.

Relocation layer, run by the linker for each new module before its relocations. ld.so
(``_dl_check_map_versions``) refuses to load a module when a dependency named in its
DT_VERNEED does not define a required version, even if no symbol of that version is ever
used, and says ``version `V' not found (required by M)``; a requirement flagged
VER_FLG_WEAK, or a dependency without any version definitions (linked against an older
build of it), is accepted. Per-symbol matching then happens in `relocation.scope`
(``SymbolTable.find`` / ``find_reference``). Host-provided dependencies are checked
against their file's DT_VERDEF, read once per file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relink.elf.version import VER_FLG_WEAK
from relink.errors import RelinkError, VersionNotFoundError

__all__ = ["check_version_needs", "defined_versions", "oldest_version"]

_host_cache: dict[str, frozenset[str] | None] = {}
_oldest_cache: dict[str, str | None] = {}


def defined_versions(provider: Any) -> frozenset[str] | None:
    """The version names `provider` defines, or None if it has no version definitions
    (or they cannot be known: synthetic modules, unreadable host files)."""
    image = getattr(provider, "image", None)
    syms = getattr(image, "symbols", None)
    if syms is not None:
        defs = syms.versions.definitions
        return frozenset(d.name for d in defs) if defs else None
    if getattr(provider, "handle", None) is None:
        return None  # a synthetic module, or something without a file
    path = getattr(provider, "path", None)
    if not path:
        return None
    if path in _host_cache:
        return _host_cache[path]
    names: frozenset[str] | None = None
    try:
        from relink.elf import ElfFile

        with ElfFile(path) as elf:
            st = elf.symbols
            defs = st.versions.definitions if st is not None else []
            names = frozenset(d.name for d in defs) if defs else None
    except (OSError, RelinkError):
        names = None
    _host_cache[path] = names  # dict updates are atomic; a race only parses twice
    return names


def oldest_version(path: str) -> str | None:
    """Name of version index 2 of the file at `path` (what ld.so binds an unversioned
    reference to), None if it has none or cannot be read. Cached per path."""
    if path in _oldest_cache:
        return _oldest_cache[path]
    name: str | None = None
    try:
        from relink.elf import ElfFile

        with ElfFile(path) as elf:
            st = elf.symbols
            name = st.versions.def_names.get(2) if st is not None else None
    except (OSError, RelinkError):
        name = None
    _oldest_cache[path] = name
    return name


def check_version_needs(state: Any, providers: Sequence[Any]) -> None:
    """Raise VersionNotFoundError if a DT_VERNEED requirement of `state` is unmet.

    `providers` are the modules serving its DT_NEEDED entries (matched to a verneed's
    file name by DT_NEEDED name or DT_SONAME).
    """
    image = state.image
    syms = image.symbols
    if syms is None or not syms.versions.needs:
        return
    # The verdict depends only on the files involved: remember it per set of providers
    # (their parsed metadata, or the process-wide host library objects).
    parsed = getattr(image, "parsed", None)
    facts = parsed.facts if parsed is not None and parsed.complete else None
    key: tuple[Any, ...] | None = None
    if facts is not None:
        parts: list[Any] = []
        for prov in providers:
            pparsed = getattr(getattr(prov, "image", None), "parsed", None)
            if pparsed is not None and pparsed.complete:
                parts.append(pparsed)
            elif getattr(prov, "is_host", False) and type(prov).__name__ == "HostLibrary":
                parts.append(prov)
            else:
                parts = []
                break
        if parts:
            key = tuple(parts)
            if key in facts.setdefault("verneed_ok", set()):
                return
    _check_version_needs(image, syms, providers)
    if key is not None and facts is not None:
        facts["verneed_ok"].add(key)


def _check_version_needs(image: Any, syms: Any, providers: Sequence[Any]) -> None:
    dyn = image.dynamic
    needed = list(dyn.needed) if dyn is not None else []
    by_name: dict[str, Any] = {}
    for i, prov in enumerate(providers):
        for key in ((needed[i] if i < len(needed) else None),
                    getattr(prov, "soname", None), getattr(prov, "name", None)):
            if key:
                by_name.setdefault(key, prov)
    for need in syms.versions.needs:
        if need.flags & VER_FLG_WEAK:
            continue
        prov = by_name.get(need.file)
        if prov is None:
            continue  # not one of its DT_NEEDED (ld.so asserts this cannot happen)
        names = defined_versions(prov)
        if names is not None and need.name not in names:
            raise VersionNotFoundError(need.name, needed=need.file, required_by=image.label)
