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

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from relink.elf.dynamic import DT_NULL, DT_STRSZ, DT_STRTAB, DT_SYMTAB, DT_VERDEF
from relink.elf.version import VER_FLG_WEAK
from relink.errors import ElfParseError, RelinkError, VersionNotFoundError

if TYPE_CHECKING:
    from relink.elf.header import ProgramHeader
    from relink.elf.source import ElfSource

__all__ = ["check_version_needs", "defined_versions", "oldest_version"]

_PT_LOAD, _PT_DYNAMIC = 1, 2
_DYN = {32: struct.Struct("<iI"), 64: struct.Struct("<qQ")}  # (d_tag, d_val), as elf.dynamic
_VERDEF = struct.Struct("<HHHHIII")  # Elf{32,64}_Verdef, as elf.version
_VERDAUX = struct.Struct("<II")
_MAX_VERDEFS = 65535
_VERDEF_WINDOW = 16384  # bytes of DT_VERDEF read at once (libc's chain is ~1.4 KiB)
# Per host file path: (names it defines or None, name of version index 2 or None).
_host_cache: dict[str, tuple[frozenset[str] | None, str | None]] = {}


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
    return _host_versions(path)[0]


def oldest_version(path: str) -> str | None:
    """Name of version index 2 of the file at `path` (what ld.so binds an unversioned
    reference to), None if it has none or cannot be read. Cached per path."""
    return _host_versions(path)[1]


def _host_versions(path: str) -> tuple[frozenset[str] | None, str | None]:
    """(defined version names or None, name of index 2 or None) of a host file, cached.

    Reads the file's DT_VERDEF only: not its symbol table (libc's has ~3,000 entries),
    nor the whole file -- just the segments holding the dynamic section, the string
    table and the definitions.
    """
    got = _host_cache.get(path)
    if got is not None:
        return got
    try:
        defs = _read_host_versions(path)
    except (OSError, RelinkError):
        defs = None
    if defs is None:
        got = (None, None)
    else:
        got = (frozenset(name for _ndx, name in defs) if defs else None,
               next((name for ndx, name in defs if ndx == 2), None))
    _host_cache[path] = got  # dict updates are atomic; a race only parses twice
    return got


def _read_host_versions(path: str) -> list[tuple[int, str]] | None:
    """(index, name) of each version the file at `path` defines, in DT_VERDEF order
    (None without a dynamic symbol table)."""
    from relink.elf.dynamic import parse_dynamic
    from relink.elf.header import parse_header, parse_program_headers
    from relink.elf.source import open_source
    from relink.elf.version import parse_versions
    from relink.elf.view import AddressView

    src = open_source(path)
    try:
        hdr = parse_header(src)
        phdrs = parse_program_headers(src, hdr)
        dyn_ph = next((ph for ph in phdrs if ph.p_type == _PT_DYNAMIC), None)
        if dyn_ph is None:
            return None
        loads = [ph for ph in phdrs if ph.p_type == _PT_LOAD and ph.p_filesz
                 and ph.p_offset < src.size]
        # Which segments to read: those holding the dynamic section and the tables its
        # DT_STRTAB / DT_VERDEF entries point at (read raw here; parse_dynamic below
        # validates them as for any file).
        layout = _DYN[hdr.elf_class]
        size = min(dyn_ph.p_filesz, max(src.size - dyn_ph.p_offset, 0))
        raw = src.read(dyn_ph.p_offset, size - size % layout.size)
        tags: dict[int, int] = {}
        for tag, value in layout.iter_unpack(raw):
            if tag == DT_NULL:
                break
            tags[tag] = value
        if tags.get(DT_SYMTAB, 0):
            if DT_VERDEF not in tags:
                return []
            fast = _verdef_names(src, loads, tags)
            if fast is not None:
                return fast
        # Anything unusual (a table outside its segment, a bad offset): the full parse,
        # which validates every table and says what is wrong.
        wanted = [dyn_ph.p_vaddr, tags.get(DT_STRTAB, 0), tags.get(DT_VERDEF, 0)]
        parts, ranges, at = [], [], 0
        for ph in loads:
            n = min(ph.p_filesz, src.size - ph.p_offset)
            if any(ph.p_vaddr <= v < ph.p_vaddr + n for v in wanted):
                parts.append(src.read(ph.p_offset, n))
                ranges.append((ph.p_vaddr, ph.p_vaddr + n, at))
                at += n
        view = AddressView(memoryview(b"".join(parts)), ranges, src.label)
        try:
            dyn = parse_dynamic(view, dyn_ph.p_vaddr, dyn_ph.p_memsz, hdr.elf_class)
            info = parse_versions(view, dyn, 0) if dyn.symtab else None
        except ElfParseError:
            # A table reaching into a segment not read above: parse the whole file.
            view = AddressView.for_file(src.data, phdrs, src.label)
            dyn = parse_dynamic(view, dyn_ph.p_vaddr, dyn_ph.p_memsz, hdr.elf_class)
            info = parse_versions(view, dyn, 0) if dyn.symtab else None
        return None if info is None else [(d.index, d.name) for d in info.definitions]
    finally:
        src.close()


def _verdef_names(src: ElfSource, loads: list[ProgramHeader],
                  tags: dict[int, int]) -> list[tuple[int, str]] | None:
    """The DT_VERDEF chain read straight from the file: (vd_ndx, first name) per
    definition, as `parse_versions` reports them. Only the string table and the
    definitions are read (not the segments holding them: libc's first is ~150 KiB).
    None when anything is out of bounds or malformed: the caller then runs the full
    parse."""

    def read(vaddr: int, size: int) -> bytes | None:
        """`size` bytes at `vaddr` (fewer if its segment ends first), None if outside."""
        for ph in loads:
            end = ph.p_vaddr + min(ph.p_filesz, src.size - ph.p_offset)
            if ph.p_vaddr <= vaddr < end:
                return src.read(ph.p_offset + vaddr - ph.p_vaddr, min(size, end - vaddr))
        return None

    strsz = tags.get(DT_STRSZ, 0)
    strings = read(tags.get(DT_STRTAB, 0), strsz)
    data = read(tags[DT_VERDEF], _VERDEF_WINDOW)
    if strings is None or data is None or len(strings) != strsz:
        return None
    out: list[tuple[int, str]] = []
    pos = 0
    unpack = _VERDEF.unpack_from
    try:
        for _ in range(_MAX_VERDEFS):
            version, _flags, ndx, cnt, _hash, aux, nxt = unpack(data, pos)
            if version != 1:
                return None
            aux_at = pos + aux
            for k in range(cnt):  # every name is checked, as the full parse does
                name_at, aux_next = _VERDAUX.unpack_from(data, aux_at)
                end = strings.find(b"\0", name_at) if name_at < strsz else -1
                if end < 0 or end - name_at >= 4096:  # read_cstr's limit
                    return None
                if k == 0:
                    out.append((ndx, strings[name_at:end].decode("utf-8", "surrogateescape")))
                if not aux_next:
                    break
                aux_at += aux_next
            if not nxt:
                return out
            pos += nxt
    except struct.error:  # past the window read: the full parse decides
        return None
    return None


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
            ok = facts.get("verneed_ok")
            if ok is not None and key in ok:
                return
    _check_version_needs(image, syms, providers)
    if key is not None and facts is not None:
        facts.setdefault("verneed_ok", set()).add(key)


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
