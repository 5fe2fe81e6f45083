"""`relink.scan()`: resolve a whole dependency graph and every section, mapping nothing.

Plan layer. Each module is read with `relink.elf.ElfFile` (headers, PT_DYNAMIC strings,
section table): no memory is mapped and no code from the files runs, so scanning is safe
on untrusted files. DT_NEEDED names are resolved breadth-first exactly as `relink.load`
does — names the host serves (`HostPolicy`: the glibc family, libraries already loaded)
are recorded as host dependencies *without* dlopening anything, the others are found
through `SearchPathResolver` (DT_RPATH inherited up the loader chain, DT_RUNPATH,
ld.so.cache, default directories) with wrong-machine candidates skipped — and modules are
deduplicated by file identity and by DT_SONAME.

A missing or unusable section table (``e_shnum == 0``, a bad ``e_shstrndx``, a table
past the end of the file, sections outside their segments) does not fail the scan: the
module is downgraded to `Capability.OPAQUE` with the reason recorded.
"""

from __future__ import annotations

import os
from typing import Any

from relink.arch import host_spec
from relink.elf import ElfFile
from relink.elf.header import SectionHeader, section_names
from relink.elf.source import ElfSource, SourceLike, open_source
from relink.errors import ElfParseError, RelinkError, UnresolvedDependencyError, UnsupportedError
from relink.linker.search import ModuleSearchInfo, SearchPathResolver
from relink.plan.model import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_TLS,
    SHF_WRITE,
    Capability,
    MemoryClass,
    ModulePlan,
    Plan,
    Section,
)
from relink.runtime.host import HostPolicy

__all__ = ["scan"]

ET_EXEC, ET_DYN = 2, 3
EM_X86_64 = 62
SHT_SYMTAB, SHT_RELA, SHT_REL = 2, 4, 9
SHN_XINDEX = 0xFFFF
PT_LOAD, PT_GNU_RELRO = 1, 0x6474E552
_DF_1_NODEFLIB = 0x800


def scan(root: SourceLike, *, name: str | None = None, host: HostPolicy | None = None,
         resolver: SearchPathResolver | None = None, missing_ok: bool = False) -> Plan:
    """Scan `root` and its DT_NEEDED graph into a `Plan` (nothing is mapped or run).

    Args:
        root: a path, bytes, fd or binary file (as for `relink.load`).
        name: the name of a memory input.
        host: which DT_NEEDED names the host serves (default `HostPolicy()` for files of
            the host's ISA, `HostPolicy.none()` for foreign ones).
        resolver: how the others are found (default `SearchPathResolver()`).
        missing_ok: record unresolvable DT_NEEDED names in ``plan.missing`` instead of
            raising (what ``relink plan`` does, so it can show them).

    Raises:
        ElfParseError: the root (or a dependency) is not a loadable ELF file.
        UnsupportedError: the root is a relocatable object or a core file.
        UnresolvedDependencyError: a dependency cannot be found (unless `missing_ok`).
    """
    resolver = resolver if resolver is not None else SearchPathResolver()
    root_src = open_source(root, name=name)
    plan = Plan(modules=[], options={"resolver": resolver})
    opened: dict[str, ElfSource] = {}
    try:
        root_mod = _module(root_src, plan, None)
        if host is None:
            # The host's libraries can only serve an image of the host's own ISA.
            spec = host_spec()
            native = spec is not None and spec.e_machine == root_mod.header.e_machine \
                and spec.elf_class == root_mod.header.elf_class
            host = HostPolicy() if native else HostPolicy.none()
        plan.options["host"] = host
        _resolve(plan, root_mod, host, resolver, opened, missing_ok)
    except BaseException:
        plan.close()
        raise
    finally:
        for src in opened.values():
            src.close()
    return plan


def host_serves(policy: HostPolicy, needed: str) -> bool:
    """Would `policy` serve `needed` from the host? Decided without loading anything."""
    return policy.serves(needed)


def _module(src: ElfSource, plan: Plan, parent: str | None) -> ModulePlan:
    """Parse `src` into a ModulePlan; on failure `src` is closed (it is ours now), or a
    malformed file would leak its fd (found by the issue 9 fuzzer)."""
    try:
        return _parse_module(src, plan, parent)
    except BaseException:
        src.close()
        raise


def _parse_module(src: ElfSource, plan: Plan, parent: str | None) -> ModulePlan:
    elf = ElfFile(src)
    eh = elf.header
    if eh.e_type not in (ET_DYN, ET_EXEC):
        elf.close()
        if eh.e_type == 1:
            raise UnsupportedError("this is a relocatable object (ET_REL): scan-first "
                                   "planning covers shared objects and executables",
                                   file=src.label)
        raise ElfParseError(f"cannot plan an ELF file of type {eh.type_name}",
                            file=src.label, what="ELF header")
    dyn = elf.dynamic
    key = src.name
    taken = {m.key for m in plan.modules}
    n = 2
    while key in taken:
        key, n = f"{src.name}#{n}", n + 1
    mod = ModulePlan(key=key, elf=elf, needed=list(dyn.needed) if dyn else [],
                     soname=dyn.soname if dyn else None, rpath=dyn.rpath if dyn else None,
                     runpath=dyn.runpath if dyn else None, interp=elf.interp,
                     capability=Capability.OPAQUE, capability_reason="", parent=parent)
    _sections(mod)
    plan.modules.append(mod)
    return mod


def _sections(mod: ModulePlan) -> None:
    """Fill the section list and the capability (downgrading to OPAQUE on bad tables)."""
    elf, eh = mod.elf, mod.header
    if eh.e_shoff == 0 or eh.e_shnum == 0:
        mod.capability_reason = "no section header table"
        return
    try:
        shdrs = elf.sections
        shstrndx = eh.e_shstrndx
        if shstrndx == SHN_XINDEX and shdrs:
            shstrndx = shdrs[0].sh_link
        if not 0 < shstrndx < len(shdrs):
            raise ElfParseError(f"e_shstrndx {eh.e_shstrndx:#x} is not a valid section "
                                "index", file=elf.label, what="section headers")
        if shstrndx != eh.e_shstrndx:
            names = section_names(elf.source, shdrs[shstrndx])
            shdrs = [SectionHeader(s.index, s.sh_name, s.sh_type, s.sh_flags, s.sh_addr,
                                   s.sh_offset, s.sh_size, s.sh_link, s.sh_info,
                                   s.sh_addralign, s.sh_entsize, names(s.sh_name, elf.label))
                     for s in shdrs]
        relro = next((ph for ph in mod.phdrs if ph.p_type == PT_GNU_RELRO), None)
        sections = [_section(mod, sh, relro) for sh in shdrs]
        _check_sections(mod, sections)
    except ElfParseError as exc:
        mod.capability_reason = f"unusable section table: {exc.message}"
        return
    mod.sections = sections
    mod.capability = Capability.SECTION_DATA
    mod.capability_reason = _reorder_reason(mod, shdrs)
    if not mod.capability_reason:
        mod.capability = Capability.REORDERABLE
        mod.capability_reason = "x86_64 shared object with retained relocations"


def _section(mod: ModulePlan, sh: SectionHeader, relro: Any) -> Section:
    mem: MemoryClass | None = None
    if sh.sh_flags & SHF_ALLOC and sh.index:
        if sh.sh_flags & SHF_TLS:
            mem = MemoryClass.TLS
        elif sh.sh_flags & SHF_EXECINSTR:
            mem = MemoryClass.CODE
        elif not sh.sh_flags & SHF_WRITE:
            mem = MemoryClass.RODATA
        elif relro is not None and relro.p_vaddr <= sh.sh_addr and \
                sh.sh_addr + sh.sh_size <= relro.p_vaddr + relro.p_memsz:
            mem = MemoryClass.RELRO
        else:
            mem = MemoryClass.DATA
    return Section(mod, sh.index, sh.name, sh.sh_type, sh.sh_flags, sh.sh_addr, sh.sh_offset,
                   sh.sh_size, sh.sh_addralign, sh.sh_entsize, sh.sh_link, sh.sh_info, mem)


def _check_sections(mod: ModulePlan, sections: list[Section]) -> None:
    """Every allocated section must lie inside one PT_LOAD, in memory and in the file."""
    loads = [ph for ph in mod.phdrs if ph.p_type == PT_LOAD]
    size = mod.elf.source.size
    for s in sections:
        if s.align and s.align & (s.align - 1):
            raise ElfParseError(f"section {s.name}: sh_addralign {s.align} is not a power "
                                "of two", file=mod.elf.label, what="section headers")
        if not s.nobits and s.sh_type and s.offset + s.orig_size > size:
            raise ElfParseError(f"section {s.name} lies past the end of the file",
                                file=mod.elf.label, what="section headers")
        if s.mem_class is None or s.orig_size == 0:
            continue
        ph = next((p for p in loads if p.p_vaddr <= s.addr
                   and s.addr + s.orig_size <= p.p_vaddr + p.p_memsz), None)
        if ph is None and s.mem_class is not MemoryClass.TLS:
            raise ElfParseError(f"section {s.name} at {s.addr:#x} is outside every PT_LOAD "
                                "segment", file=mod.elf.label, what="section headers")
        if ph is not None and not s.nobits and \
                s.offset - ph.p_offset != s.addr - ph.p_vaddr:
            raise ElfParseError(f"section {s.name}: file offset and address disagree with "
                                "its segment", file=mod.elf.label, what="section headers")


def _reorder_reason(mod: ModulePlan, shdrs: list[SectionHeader]) -> str:
    """Why the module is not reorderable ("" when it is)."""
    eh = mod.header
    if eh.e_machine != EM_X86_64 or eh.elf_class != 64:
        return f"section repair is implemented for x86_64 only (this is {eh.machine_name})"
    if eh.e_type != ET_DYN:
        return "executables load at their link address; only shared objects can move"
    if not any(s.sh_type == SHT_SYMTAB for s in shdrs):
        return "no .symtab (stripped)"
    retained = [s for s in shdrs if s.sh_type in (SHT_RELA, SHT_REL) and
                not s.sh_flags & SHF_ALLOC and 0 < s.sh_info < len(shdrs)
                and 0 < s.sh_link < len(shdrs) and shdrs[s.sh_link].sh_type == SHT_SYMTAB]
    if not retained:
        return "no retained relocations (not linked with --emit-relocs)"
    return ""


def _search_info(mod: ModulePlan) -> ModuleSearchInfo:
    dyn = mod.elf.dynamic
    return ModuleSearchInfo.from_dynamic(
        mod.name, mod.path, rpath=mod.rpath, runpath=mod.runpath,
        nodeflib=bool(dyn and dyn.flags_1 & _DF_1_NODEFLIB))


def _resolve(plan: Plan, root: ModulePlan, host: HostPolicy, resolver: SearchPathResolver,
             opened: dict[str, ElfSource], missing_ok: bool) -> None:
    """Breadth-first DT_NEEDED resolution, as `relink.load` does it (see module doc)."""
    eh = root.header
    by_name: dict[str, str] = {}
    by_identity: dict[Any, str] = {root.elf.source.identity: root.key}
    for k in (root.name, root.soname):
        if k:
            by_name[k] = root.key
    mods = {root.key: root}
    queue = [root]

    def accept(path: str) -> bool:
        try:
            src = open_source(path)
        except (RelinkError, OSError):
            return False
        try:
            ceh = ElfFile(src).header
        except RelinkError:
            src.close()
            return False
        if ceh.e_machine != eh.e_machine or ceh.elf_class != eh.elf_class:
            src.close()
            return False
        opened[path] = src
        return True

    while queue:
        mod = queue.pop(0)
        for needed in mod.needed:
            key = by_name.get(needed)
            if key is None and host_serves(host, needed):
                if needed not in plan.host:
                    plan.host.append(needed)
                mod.deps.append(f"host:{needed}")
                continue
            if key is None:
                chain = []
                p = mod.parent
                while p is not None:
                    chain.append(_search_info(mods[p]))
                    p = mods[p].parent
                path, tried = resolver.resolve(needed, _search_info(mod), chain, accept=accept)
                for c in [c for c in opened if c != path]:
                    opened.pop(c).close()
                if path is None:
                    if missing_ok:
                        plan.missing.append(needed)
                        mod.deps.append(f"missing:{needed}")
                        mod.search.append(f"{needed}: not found")
                        continue
                    raise UnresolvedDependencyError(needed, needed_by=mod.elf.label,
                                                    searched=[str(c) for c in tried])
                src = opened.pop(path)
                existing = by_identity.get(src.identity)
                if existing is not None:
                    src.close()
                    key = existing
                else:
                    dep = _module(src, plan, mod.key)
                    if dep.header.e_type != ET_DYN:
                        raise UnsupportedError(f"dependency '{needed}' resolved to an "
                                               f"executable ({os.path.basename(path)})",
                                               file=mod.elf.label)
                    mods[dep.key] = dep
                    by_identity[src.identity] = dep.key
                    key = dep.key
                    mod.search.append(f"{needed}: {tried[-1]}")
                    queue.append(dep)
                    if dep.soname:
                        by_name.setdefault(dep.soname, dep.key)
            by_name.setdefault(needed, key)
            mod.deps.append(key)
