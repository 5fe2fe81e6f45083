"""`relink.load_object()`: link relocatable objects and archives into memory and call them.

The front door of `relink.object` (parse -> link -> layout -> relocate -> module). One
call is one link unit: every given object, plus the archive members it needs, is
linked as ``ld`` would link them (COMDAT, COMMON, strong/weak, archive extraction), the
undefined rest is bound to the explicit ``symbols``, the ``scope`` modules, the host
process and the ``resolve`` hook; sections are laid out in permission groups, relocated
eagerly, protected, and initializers run. The result is a `relink.Module`.

Placement: when code reaches outside the unit with 32-bit fields that no stub can fix
(x86_64 ``PC32`` to another module's data, as ``-fPIE`` code does for extern
variables; ``32``/``32S`` absolute addresses of non-PIC code), the image is placed where
those fields fit — within ±2 GiB of the external targets, or in the low 2 GiB — before
relocating; calls never constrain placement because out-of-reach calls go through
stubs. Any failure releases what was mapped.
"""

from __future__ import annotations

import importlib
import os
import struct
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from relink.arch import ArchSpec, host_spec
from relink.elf.source import SourceLike, open_source
from relink.errors import ArchMismatchError, RelinkError, UnsupportedError
from relink.memory import PROT_READ, PROT_WRITE, Mapper, Region
from relink.module import Module, SyntheticModule
from relink.object.archive import Archive, is_archive
from relink.object.layout import Layout, SectionGroup, SectionInfo, plan_layout
from relink.object.link import LinkUnit, resolve_external
from relink.object.parse import ObjectFile, parse_object
from relink.object.relocator import ObjectRelocation, Relocator
from relink.object.state import ObjectOwner, ObjectState, PlacedSection
from relink.object.tls import ObjectTls
from relink.relocation.fields import ObjectArch
from relink.runtime.executor import Executor, NativeExecutor

__all__ = ["load_object", "object_arch", "open_inputs"]

_ARCH_MODULES = {"x86_64": "relink.arch.objrel_x86_64", "aarch64": "relink.arch.objrel_aarch64",
                 "riscv64": "relink.arch.objrel_riscv", "x86": "relink.arch.objrel_x86"}
_SPAN32 = (1 << 31) - (1 << 24)  # keep a margin inside the ±2 GiB reach


def object_arch(spec: ArchSpec, label: str) -> ObjectArch:
    """The object-relocation recipes for `spec`, or `UnsupportedError`."""
    mod = _ARCH_MODULES.get(spec.name)
    if mod is None:
        raise UnsupportedError(f"relocatable objects for {spec.name} are not supported "
                               "(relink has object recipes for x86_64, aarch64, riscv64, x86)",
                               file=label)
    arch: ObjectArch = importlib.import_module(mod).OBJECT_ARCH
    return arch


def open_inputs(sources: Any, name: str | None = None
                ) -> tuple[list[ObjectFile], list[Archive], list[Any]]:
    """Open every source: objects, archives, and the ElfSources to close afterwards."""
    if isinstance(sources, (str, os.PathLike, bytes, bytearray, memoryview, int)) or \
            hasattr(sources, "read"):
        items: list[Any] = [sources]
    else:
        items = list(sources)
    if not items:
        raise ValueError("load_object needs at least one object or archive")
    objects: list[ObjectFile] = []
    archives: list[Archive] = []
    opened: list[Any] = []
    try:
        for i, item in enumerate(items):
            src = open_source(item, name=name if len(items) == 1 else
                              (f"{name}[{i}]" if name else None))
            opened.append(src)
            if is_archive(src):
                archives.append(Archive(src))
            else:
                objects.append(parse_object(src))
    except BaseException:
        for s in opened:
            s.close()
        raise
    return objects, archives, opened


def load_object(sources: SourceLike | Iterable[SourceLike], *, name: str | None = None,
                scope: Sequence[Any] = (), symbols: Mapping[str, Any] | None = None,
                resolve: Callable[[str], int | None] | None = None,
                host: bool | None = None, mapper: Mapper | None = None,
                address: int | None = None, executor: Executor | None = None,
                init: bool | None = None, whole_archive: bool = False,
                layout: Callable[[SectionInfo], str | None] | None = None,
                groups: Iterable[SectionGroup] = (),
                exports: Callable[[str, int, int, int], bool] | Iterable[str] | None = None,
                libraries: Sequence[str] = (), merge: bool = True,
                undefined: Sequence[str] = (),
                relocation_hook: Callable[[ObjectRelocation], bool] | None = None,
                relax: bool = True,
                ) -> Module:
    """Link relocatable objects (``.o``, ``.ko``) and archives (``.a``) into memory.

    Args:
        sources: one path / bytes / fd / file, or a sequence of them (objects are linked
            together; archive members are pulled in when they define a needed symbol).
        name: the module name (default: the first input's name).
        scope: modules searched for undefined symbols (relink Modules, `SyntheticModule`s,
            host libraries), in order, after the unit's own definitions.
        symbols: explicit definitions, searched first: name -> address, ctypes object or
            ``(callable, restype, *argtypes)`` (as `SyntheticModule` takes).
        resolve: a hook ``resolve(name) -> address | None`` asked last.
        host: search the host process (``dlsym(RTLD_DEFAULT)``) — default: only for a
            native load.
        mapper: the memory backend (default: this process; a `BufferMapper` relocates
            into a virtual address space without running anything).
        address: where to put the image (a hint for native loads; for a buffer, the
            address the image is relocated for).
        executor: runs initializers / IFUNC resolvers (default: native when the mapper is,
            the mapper's own ``executor`` for an emulator, else none).
        init: run initializers now (default: when an executor is available).
        whole_archive: take every member of every archive (``--whole-archive``; the
            default when only archives are given and `undefined` is empty).
        undefined: names to pull in as if referenced (``ld -u``), e.g. the one function
            wanted from an archive.
        relocation_hook: ``hook(ObjectRelocation) -> bool`` for relocation types relink
            has no recipe for: patch ``ctx.buffer[ctx.at:…]`` and return True, or return
            False (the load then fails with UnsupportedRelocationError).
        relax: rewrite x86_64 GOTPCRELX loads/calls into direct ones when the target is
            in reach (ld's relaxation); False leaves every instruction as compiled.
        layout: ``layout(SectionInfo) -> group name | "skip" | None`` to move sections.
        groups: extra `SectionGroup`s the layout hook may use.
        exports: restrict what the Module exports: names, or a predicate
            ``(name, address, size, stt_type) -> bool``.
        libraries: host libraries to search after the process (like ``-l``), e.g.
            ``["libz.so.1"]``; C++ objects get libstdc++, libm and libgcc_s by default.
        merge: pool and deduplicate SHF_MERGE constants and strings (False keeps every
            input section as it is, like ``ld -O0``).

    Raises:
        RelinkError subclasses (UnknownSymbolError with what was searched,
        UnsupportedRelocationError by name, RelocationOverflowError, LinkerError for
        duplicate definitions…); nothing stays mapped after a failure.
    """
    if mapper is None:
        from relink.memory.host import HostMapper

        mapper = HostMapper()
    if executor is None and mapper.native:
        executor = NativeExecutor()
    if executor is None:
        executor = getattr(mapper, "executor", None)  # an emulator runs target code itself
    objects, archives, opened = open_inputs(sources, name)
    keep: list[Any] = []
    region: Region | None = None
    try:
        unit = LinkUnit()
        for obj in objects:
            unit.add(obj)
        for n in undefined:
            unit.undefined[n] = True  # like ld -u: pulls the archive member defining it
        if not objects and not undefined:
            whole_archive = True  # only archives given: load them, as their user means
        if whole_archive:
            for ar in archives:
                for member in ar.objects():
                    unit.add(member)
        unit.pull_archives(archives)
        if not unit.objects:
            raise RelinkError("no object to load (the archives define nothing needed)",
                              file=archives[0].label if archives else None)
        unit.finish()
        first = unit.objects[0]
        label = first.label
        spec = first.spec
        if mapper.native and spec is not host_spec():
            raise ArchMismatchError(
                f"object is {spec.name} but this process runs "
                f"{getattr(host_spec(), 'name', '?')}: load it with mapper=BufferMapper()",
                file=label, expected=getattr(host_spec(), "name", "?"), actual=spec.name)
        arch = object_arch(spec, label)
        unit.claim_linker_symbols(arch.got_symbol)
        explicit = _explicit_symbols(symbols, keep)
        providers = [getattr(p, "_state", p) for p in scope]
        hosts = _host_providers(unit, host if host is not None else mapper.native,
                                libraries, label)
        resolve_external(unit, symbols=explicit, scope=providers, hosts=hosts,
                         resolve=resolve, label=label)
        lay = plan_layout(unit, arch, groups={g.name: g for g in groups}, hook=layout,
                          page=mapper.page_size, merge=merge)
        region = _reserve(mapper, unit, lay, arch, address)
        st = ObjectState(name or first.source.name, first.source.path, spec, region,
                         executor, label)
        st.scope = providers
        st.image.mapper = mapper
        st.modinfo = first.modinfo()
        if "__dso_handle" in lay.linker:
            st.dso_handle = region.start + lay.linker["__dso_handle"]
        buf = _build(unit, lay, arch, region, st, relocation_hook, relax)
        _install(region, lay, buf, st)
        _protect_init(region, st)
        if lay.eh_frame is not None and spec.is_host and mapper.native:
            _register_eh_frame(st, region.start + lay.eh_frame.offset)
        if lay.ifuncs:
            relocator_fill_ifuncs(unit, lay, arch, region, buf, st)
        _collect_exports(unit, lay, st, region.start, exports, arch)
        st.state = "relocated"
        run_init = init if init is not None else executor is not None
        if run_init:
            from relink.runtime.libc import argv_pointers, environ_pointer

            argc, argv = argv_pointers()
            st.initialize(argc, argv, environ_pointer())
    except BaseException:
        if region is not None:
            region.release()
        for s in opened:
            s.close()
        raise
    for s in opened:
        s.close()
    owner = ObjectOwner(st)
    module = Module(st, owner)
    module._keep.extend([keep, scope])
    weakref.finalize(module, owner.close)
    return module


_CXX_RUNTIME = ("libstdc++.so.6", "libgcc_s.so.1", "libm.so.6")


def _host_providers(unit: LinkUnit, use_host: bool, libraries: Sequence[str],
                    label: str) -> list[Any]:
    """The process scope, then host libraries: the given ones, plus the C++ runtime for
    C++ objects (what the g++ driver adds to a link: -lstdc++ -lm -lgcc_s)."""
    if not use_host:
        if libraries:
            raise UnsupportedError("host libraries serve native loads only", file=label)
        return []
    from relink.errors import UnresolvedDependencyError
    from relink.runtime.host import PROCESS, host_library

    names = list(libraries)
    if any(n.startswith(("_Z", "__cxa_", "__gxx_")) for n in unit.undefined):
        names += [n for n in _CXX_RUNTIME if n not in names]
    out: list[Any] = [PROCESS]
    for n in names:
        lib = host_library(n, load=True)
        if lib is None:
            raise UnresolvedDependencyError(n, needed_by=label, searched=["host dlopen"])
        out.append(lib)
    return out


def _explicit_symbols(symbols: Mapping[str, Any] | None, keep: list[Any]
                      ) -> dict[str, int] | None:
    if not symbols:
        return None
    holder = SyntheticModule("<symbols>", symbols)
    keep.append(holder)
    return {n: holder.symbol(n) or 0 for n in holder}


def _constraints(unit: LinkUnit, lay: Layout, arch: ObjectArch) -> tuple[bool, list[int]]:
    """(needs the low 2 GiB, external addresses that 32-bit PC-relative fields reach)."""
    low = False
    near: set[int] = set()
    for oi, obj in enumerate(unit.objects):
        for target, rsecs in obj.relocs.items():
            if (oi, target) not in lay.sections:
                continue
            for rs in rsecs:
                for t, s in zip(rs.types, rs.syms):
                    r = arch.recipes.get(t)
                    if r is None or r.field is None or r.field.size != 4 or not s or \
                            r.field.check.kind == "none":
                        continue
                    nm = obj.sym_names[s]
                    external = obj.sym_infos[s] >> 4 != 0 and nm in unit.external
                    if r.formula == "S+A" and not external:
                        low = True
                    elif r.formula == "S+A-P" and external and unit.external[nm]:
                        near.add(unit.external[nm])
    return low, sorted(near)


def _fits(start: int, size: int, low: bool, near: list[int]) -> bool:
    if low and start + size > _SPAN32:
        return False
    return all(abs(t - start) < _SPAN32 and abs(t - (start + size)) < _SPAN32 for t in near)


def _reserve(mapper: Mapper, unit: LinkUnit, lay: Layout, arch: ObjectArch,
             address: int | None) -> Region:
    if not mapper.native:
        return mapper.reserve(lay.size, address=address)
    low, near = _constraints(unit, lay, arch)
    hints: list[int | None] = [address] if address is not None else []
    page = mapper.page_size
    if low:
        hints += [0x40000000, 0x10000000, 0x60000000]
    if near:
        lo, hi = near[0], near[-1]
        below = (lo - lay.size - (1 << 26)) & ~(page - 1)
        hints += [h for h in (below, (hi + (1 << 26)) & ~(page - 1),
                              (lo - lay.size - (1 << 30)) & ~(page - 1)) if h > 0]
    hints.append(None)
    region = None
    for hint in hints:
        region = mapper.reserve(lay.size, address=hint)
        if _fits(region.start, lay.size, low, near) or hint is None:
            return region
        region.release()
    assert region is not None
    return region


def _build(unit: LinkUnit, lay: Layout, arch: ObjectArch, region: Region,
           st: ObjectState, relocation_hook: Any = None, relax: bool = True) -> bytearray:
    """Copy section bytes into an image buffer and relocate it."""
    base = region.start
    buf = bytearray(lay.size)
    for p in lay.placed:
        if p.data is not None:
            buf[p.offset:p.offset + len(p.data)] = p.data
        elif p.obj >= 0 and not p.nobits:
            data = unit.objects[p.obj].data(p.index)
            buf[p.offset:p.offset + len(data)] = data
        owner = unit.objects[p.obj].label if p.obj >= 0 else "<relink>"
        st.sections.append(PlacedSection(owner, p.name, base + p.offset, p.size, p.group))
    tls = None
    if st.in_process and arch.name == "x86_64":
        tls = ObjectTls(st.label, lay.tls_size, lay.tls_align, st)
        st.tls = tls
    rel = Relocator(unit, lay, arch, base, buf, tls, hook=relocation_hook, relax=relax)
    rel.run()
    if lay.tls and tls is None:
        raise UnsupportedError("the objects define thread-local variables, which need the "
                               "native TLS runtime (a load into this process)",
                               file=st.label)
    st.counts = dict(rel.counts)
    st.unaligned = rel.unaligned
    _lifecycle(unit, lay, buf, st, arch.word_size)
    return buf


def _install(region: Region, lay: Layout, buf: bytearray, st: ObjectState) -> None:
    """Map each group RW, copy its bytes in, then give it its relocation-time protection."""
    base = region.start
    segs = []
    for off, size, gname in lay.segments:
        g = lay.groups[gname]
        region.map_anon(base + off, size, PROT_READ | PROT_WRITE)
        region.write(base + off, memoryview(buf)[off:off + size])
        segs.append((base + off, size, g.init_prot, g.final_prot, gname))
        if g.lifetime == "init":
            st.init_segments.append((base + off, size))
    st.segments = segs
    st.image._segments = [(a, n, fp) for a, n, _ip, fp, _g in segs]


def _register_eh_frame(st: ObjectState, start: int) -> None:
    """Hand the unit's .eh_frame chain to libgcc so C++ exceptions unwind through it."""
    from relink.runtime.unwind import _libgcc

    if struct.unpack("<I", st.region.read(start, 4))[0] == 0:
        return
    reg, dereg = _libgcc()
    reg(start)
    st.extras.append(lambda: dereg(start))


def _protect_init(region: Region, st: ObjectState) -> None:
    for addr, size, init_prot, _final, _g in st.segments:
        if init_prot != PROT_READ | PROT_WRITE:
            region.protect(addr, size, init_prot)


def relocator_fill_ifuncs(unit: LinkUnit, lay: Layout, arch: ObjectArch, region: Region,
                          buf: bytearray, st: ObjectState) -> None:
    """Call local IFUNC resolvers (code is in place) and write their GOT slots."""
    assert lay.got_piece is not None
    rel = Relocator(unit, lay, arch, region.start, buf)
    rel.fill_got_plt(st.resolve_ifunc)
    at = lay.got_piece.offset
    region.write(region.start + at, memoryview(buf)[at:at + lay.got_piece.size])


def _collect_exports(unit: LinkUnit, lay: Layout, st: ObjectState, base: int,
                     exports: Any, arch: ObjectArch) -> None:
    rel = Relocator(unit, lay, arch, base, bytearray())
    init_ranges = st.init_segments
    allow: Callable[[str, int, int, int], bool] | None = None
    if callable(exports):
        allow = exports
    elif exports is not None:
        names = set(exports)

        def allow(n: str, _a: int, _s: int, _t: int) -> bool:
            return n in names

    local_seen: dict[str, int | None] = {}
    for oi, obj in enumerate(unit.objects):
        for si in range(1, len(obj.sym_names)):
            nm = obj.sym_names[si]
            info = obj.sym_infos[si]
            if not nm or info & 0xF in (3, 4) or obj.sym_shndx[si] == 0:
                continue
            if obj.sym_shndx[si] in unit.discarded[oi]:
                continue
            if (oi, obj.sym_shndx[si]) in lay.skipped:
                continue
            try:
                addr = rel.defined_addr(oi, si)
            except RelinkError:
                continue  # defined in a section that is not loaded (debug, skipped)
            in_init = any(a <= addr < a + n for a, n in init_ranges)
            if info >> 4 == 0 or obj.sym_others[si] & 3 in (1, 2):
                local_seen[nm] = addr if nm not in local_seen else None
                continue
            d = unit.defs.get(nm)
            if d is not None and (d.obj, d.sym) != (oi, si):
                continue
            stype = info & 0xF
            if stype == 10:
                stype = 2
                addr = st.resolve_ifunc(addr)
            if allow is not None and not allow(nm, addr, obj.sym_sizes[si], stype):
                continue
            st.exports[nm] = (addr, obj.sym_sizes[si], stype)
            if in_init:
                st.init_exports.append(nm)  # withdrawn when init memory is released
    for nm, p in lay.commons.items():
        if allow is None or allow(nm, base + p.offset, p.size, 1):
            st.exports[nm] = (base + p.offset, p.size, 1)
    st.local_symbols = {n: a for n, a in local_seen.items() if a is not None}


def _lifecycle(unit: LinkUnit, lay: Layout, buf: bytearray, st: ObjectState,
               word: int) -> None:
    """Init order: .preinit_array, .init_array/.ctors by priority; fini the reverse."""
    fmt = "<Q" if word == 8 else "<I"
    inits: list[tuple[int, int, list[int]]] = []
    finis: list[tuple[int, int, list[int]]] = []
    for seq, p in enumerate(lay.placed):
        name = p.name
        kind, prio = _array_kind(name)
        if kind is None:
            continue
        if p.size % word:
            raise RelinkError(f"{name} size {p.size} is not a multiple of the word size",
                              file=unit.objects[p.obj].label if p.obj >= 0 else None)
        words = [w for (w,) in struct.iter_unpack(fmt, bytes(buf[p.offset:p.offset + p.size]))
                 if w not in (0, (1 << (8 * word)) - 1)]
        if kind in ("ctors", "dtors"):
            words.reverse()  # .ctors run last-to-first; ld reverses them into .init_array
        if kind == "preinit":
            inits.append((-1, seq, words))
        elif kind in ("init", "ctors"):
            inits.append((prio, seq, words))
        else:
            finis.append((prio, seq, words))
    st.init_funcs = [f for _p, _s, ws in sorted(inits) for f in ws]
    st.fini_funcs = list(reversed([f for _p, _s, ws in sorted(finis) for f in ws]))


def _array_kind(name: str) -> tuple[str | None, int]:
    for prefix, kind in ((".preinit_array", "preinit"), (".init_array", "init"),
                         (".ctors", "ctors"), (".fini_array", "fini"), (".dtors", "dtors")):
        if name == prefix:
            return kind, 65536
        if name.startswith(prefix + "."):
            try:
                n = int(name[len(prefix) + 1:])
            except ValueError:
                return kind, 65536
            # .ctors.N / .dtors.N run in the reverse priority of .init_array.N.
            return kind, (65535 - n if kind in ("ctors", "dtors") else n)
    return None, 0
