"""Mapping: turn a parsed ET_DYN / ET_EXEC file into a mapped, unrelocated image.

Loader layer of the pipeline (input -> elf -> arch -> memory -> loader -> relocation).
`map_image` follows musl's map_library: reserve one span covering every PT_LOAD, map
each segment over it (file-backed with MAP_FIXED when the input has an fd, by copy for
bytes), zero the bss, then parse PT_DYNAMIC and the symbol table from the mapped image.
The result, an `Image`, is what the relocation loop consumes. Segments get their final
protection except that every loaded page stays readable until `finish_protection`, which
applies exactly ``p_flags`` and PT_GNU_RELRO once relocation is done. Any failure
releases the span before the error propagates.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from relink._log import lazy_logger
from relink.arch import ArchSpec, host_spec, spec_for
from relink.elf import check_segments, dynamic_tables
from relink.elf.dynamic import DynamicInfo, parse_dynamic
from relink.elf.header import ElfHeader, ProgramHeader, parse_header, parse_program_headers
from relink.elf.relocs import RelocTable
from relink.elf.source import ElfSource
from relink.elf.symbols import SymbolTable
from relink.elf.view import AddressView
from relink.errors import ArchMismatchError, ElfParseError, UnsupportedError
from relink.memory import PROT_READ, Mapper, Region
from relink.segments import (
    ImageLayout,
    copy_segments,
    map_recipe,
    prot_of,
    recipe_for,
    special_headers,
    subtract_pages,
)

_subtract_pages = subtract_pages  # its old name (tests/lazy)

__all__ = ["Image", "ImageLayout", "ParsedMetadata", "cached_header", "clear_parse_cache",
           "map_image", "prot_of"]

_log = lazy_logger(__name__)
ET_REL, ET_EXEC, ET_DYN = 1, 2, 3
PT_DYNAMIC, PT_INTERP, PT_TLS, PT_GNU_RELRO, PT_GNU_EH_FRAME = 2, 3, 7, 0x6474E552, 0x6474E550
PF_X, PF_W, PF_R = 1, 2, 4


class ParsedMetadata:
    """Everything the loader reads from a file before relocating it (base-independent).

    Cached per file identity and stamp (dev, inode, size, mtime_ns, ctime_ns) — or per
    content for memory inputs — so loading the same unchanged file again skips parsing.
    A file rewritten in place gets a new stamp and is parsed afresh. The page size is
    part of the key: one ParsedMetadata only ever serves mappers of one page size, so
    what it keeps about the mapped layout needs no page-size key of its own.
    """

    # A plain class, not a @dataclass: importing dataclasses costs a first load ~10 ms.
    def __init__(self, header: ElfHeader, phdrs: list[ProgramHeader],
                 loads: list[ProgramHeader], spec: ArchSpec, dynamic: DynamicInfo | None = None,
                 symbols: SymbolTable | None = None,
                 tables: tuple[list[RelocTable], list[int]] | None = None,
                 complete: bool = False) -> None:
        self.header = header
        self.phdrs = phdrs
        self.loads = loads
        self.spec = spec
        self.dynamic = dynamic
        self.symbols = symbols
        self.tables = tables
        self.complete = complete
        # Binding plans (relocation/scope.py): scope signature -> (recorded resolutions,
        # the scope positions they bind to).
        self.bind_plans: dict[tuple[object, ...], tuple[dict[int, tuple[int, int, int, int]],
                                                        tuple[int, ...]]] = {}
        # Base-independent facts other subsystems derive from the file (runtime/unwind).
        self.facts: dict[str, object] = {}
        # Relocation programs (relocation/replay.py) per binding-plan key; None: unsuitable.
        self.programs: dict[tuple[object, ...], object] = {}
        # How a later load maps it (relink.segments.Recipe), once the first load has.
        self.recipe: Any = None
        # The first load's, once it has checked it (with a view: `ranges` is set).
        self.layout: ImageLayout | None = None
        # (offset from the region's start, size, prot) of the mprotect calls
        # `Image.finish_protection` makes for every load of the file.
        self.protection: list[tuple[int, int, int]] | None = None


_CACHE_LIMIT = 128
_parse_cache: OrderedDict[tuple[object, ...], tuple[ParsedMetadata, object]] = OrderedDict()
_headers: dict[tuple[object, ...], ElfHeader] = {}  # (identity, stamp) -> header
# Taken for the compound updates (_remember, clear). Lookups do without: a get or a
# move_to_end is one C call on keys of str / int tuples, atomic under the GIL.
_cache_lock = threading.Lock()


def clear_parse_cache() -> None:
    """Forget every cached parse result."""
    with _cache_lock:
        _parse_cache.clear()
        _headers.clear()


def _cache_key(src: ElfSource, page: int) -> tuple[object, ...] | None:
    if src.stamp is not None:
        return ("file", src.identity, src.stamp, page)
    data = src._data
    if data is None:
        return None
    # Content key; a hit is confirmed byte for byte below. A bytes object caches its
    # own hash, so loading the same bytes again costs one comparison.
    obj = data.obj
    if isinstance(obj, bytes) and len(obj) == len(data):
        return ("mem", len(data), hash(obj), page)
    return ("mem", len(data), hash(data.tobytes()), page)


def cached_header(src: ElfSource) -> ElfHeader | None:
    """The ELF header of an unchanged file parsed before (any page size), or None."""
    if src.stamp is None:
        return None
    return _headers.get((src.identity, src.stamp))  # one C call: no lock needed


def _cached(key: tuple[object, ...] | None, src: ElfSource) -> ParsedMetadata | None:
    if key is None:
        return None
    hit = _parse_cache.get(key)
    if hit is None:
        return None
    try:
        _parse_cache.move_to_end(key)  # least recently used goes first
    except KeyError:
        pass  # evicted by another thread meanwhile: the hit is still good
    parsed, content = hit
    data = src._data
    if content is not None and (data is None or (content is not data.obj and content != data)):
        return None
    return parsed if parsed.complete else None


def _remember(key: tuple[object, ...] | None, src: ElfSource, parsed: ParsedMetadata) -> None:
    if key is None:
        return
    if parsed.dynamic is not None and parsed.dynamic.strings is not None:
        parsed.dynamic.strings = memoryview(bytes(parsed.dynamic.strings))
    if parsed.symbols is not None:
        parsed.symbols.detach()
    parsed.complete = True
    content = None
    if key[0] == "mem" and src._data is not None:
        obj = src._data.obj
        content = obj if isinstance(obj, bytes) and len(obj) == len(src._data) else \
            bytes(src._data)
    with _cache_lock:
        _parse_cache[key] = (parsed, content)
        if src.stamp is not None:
            _headers[(src.identity, src.stamp)] = parsed.header
        while len(_parse_cache) > _CACHE_LIMIT:
            _parse_cache.popitem(last=False)
        if len(_headers) > 4 * _CACHE_LIMIT:
            _headers.clear()


class Image:
    """A mapped image (Relink's raw image), before and after relocation.

    Addresses: ``vaddr`` is a link-time address from the file; the runtime address is
    ``base + vaddr`` (base = load bias). ``span_vaddr`` is the link-time address of the
    region's first byte.
    """

    # A plain class, not a @dataclass: importing dataclasses costs a first load ~10 ms.
    # Slots: one image per loaded module, kept as long as it is loaded (issue 8, T8).
    # The fields every load of a file shares (header, phdrs, loads, span_vaddr,
    # page_size, relro, eh_frame_hdr) are properties over `_layout`: they are not read on
    # a reload's path, so it does not pay a store per field.
    __slots__ = ("source", "spec", "mapper", "region", "base", "_view", "dynamic",
                 "symbols", "tls", "_layout", "_protections", "_segments_final",
                 "_keep_writable", "parsed", "__weakref__")

    def __init__(self, source: ElfSource, header: ElfHeader, phdrs: list[ProgramHeader],
                 loads: list[ProgramHeader], spec: ArchSpec, mapper: Mapper, region: Region,
                 base: int, span_vaddr: int, view: AddressView | None,
                 dynamic: DynamicInfo | None,
                 symbols: SymbolTable | None, tls: ProgramHeader | None,
                 relro: ProgramHeader | None, eh_frame_hdr: int | None, page_size: int,
                 protections: Sequence[tuple[int, int, int]] | None = None,
                 _segments_final: bool = False,
                 keep_writable: list[tuple[int, int]] | None = None,
                 parsed: ParsedMetadata | None = None) -> None:
        # A reload of a cached file is built by `_reload` instead (same slots).
        self.source = source
        self.spec = spec
        self.mapper = mapper
        self.region = region
        self.base = base
        self._layout = ImageLayout(header, phdrs, loads, span_vaddr, page_size, tls, relro,
                                   None if eh_frame_hdr is None else eh_frame_hdr - base)
        # The AddressView, or (a reload) the region's memoryview to make it from on
        # first use with the cached layout's ranges (`view`).
        self._view: AddressView | memoryview | None = view
        self.dynamic = dynamic
        self.symbols = symbols
        self.tls = tls
        # (address, size, prot) per segment as mapped; a sequence of offsets from the
        # region's start (a mapping recipe's) is made absolute only if someone asks.
        self._protections: Sequence[tuple[int, int, int]] = \
            [] if protections is None else protections
        self._segments_final = _segments_final
        # (runtime address, size) ranges PT_GNU_RELRO must leave writable (lazy PLT
        # slots); None until someone asks for the list (`keep_writable`).
        self._keep_writable = keep_writable
        self.parsed = parsed

    @property
    def view(self) -> AddressView:
        """Bounds-checked reads of the image by link-time address. A reload of a cached
        file gets it on first use: it finds its tables cached and never reads through
        it. The buffer is the region's own view, released with the region."""
        aview = self._view
        if type(aview) is not AddressView:
            ranges = self._layout.ranges
            assert isinstance(aview, memoryview) and ranges is not None
            aview = self._view = AddressView(aview, ranges, self.source.label)
        return aview

    @property
    def header(self) -> ElfHeader:
        return self._layout.header

    @property
    def phdrs(self) -> list[ProgramHeader]:
        return self._layout.phdrs

    @property
    def loads(self) -> list[ProgramHeader]:
        """The PT_LOAD program headers, in address order."""
        return self._layout.loads

    @property
    def span_vaddr(self) -> int:
        """Link-time address of the region's first byte."""
        return self._layout.span_vaddr

    @property
    def page_size(self) -> int:
        return self._layout.page_size

    @property
    def relro(self) -> ProgramHeader | None:
        return self._layout.relro

    @property
    def eh_frame_hdr(self) -> int | None:
        """Runtime address of PT_GNU_EH_FRAME, or None."""
        at = self._layout.eh_frame_at
        return None if at is None else self.base + at

    @property
    def keep_writable(self) -> list[tuple[int, int]]:
        """(runtime address, size) ranges `protect_relro` must leave writable (lazy PLT
        slots); made on first use (most images never have any)."""
        keep = self._keep_writable
        if keep is None:
            keep = self._keep_writable = []
        return keep

    @property
    def protections(self) -> list[tuple[int, int, int]]:
        """(runtime address, size, PROT_* flags) of each segment as the loader mapped it
        (before `finish_protection`)."""
        prots = self._protections
        if not isinstance(prots, list):  # a recipe's offsets (a tuple)
            start = self.region.start
            prots = self._protections = [(start + at, size, prot) for at, size, prot in prots]
        return prots

    def relocation_tables(self) -> tuple[list[RelocTable], list[int]]:
        """The decoded REL/RELA tables and RELR addresses (cached with the metadata)."""
        parsed = self.parsed
        if parsed is not None and parsed.tables is not None:
            return parsed.tables
        if self.dynamic is None:
            tables: tuple[list[RelocTable], list[int]] = ([], [])
        else:
            tables = dynamic_tables(self.view, self.dynamic, self.spec.elf_class,
                                    relr_limit=max(self.region.size // self.spec.word_size,
                                                   16))
        if parsed is not None:
            parsed.tables = tables
        return tables

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def label(self) -> str:
        return self.source.label

    @property
    def entry(self) -> int:
        return self.header.e_entry + (self.base if self.header.e_type == ET_DYN else 0)

    def contains(self, addr: int) -> bool:
        """True if runtime address `addr` lies in one of the image's segments."""
        v = addr - self.base
        return any(ph.p_vaddr <= v < ph.p_vaddr + ph.p_memsz for ph in self.loads)

    def segments(self) -> list[tuple[int, int, int]]:
        """(runtime address, size, PROT_* flags) of each PT_LOAD segment."""
        return [(self.base + ph.p_vaddr, ph.p_memsz, prot_of(ph.p_flags)) for ph in self.loads]

    def protect_segments(self) -> None:
        """Give every segment exactly its p_flags protection (idempotent)."""
        if self._segments_final:
            return
        for addr, size, prot in self._segment_fixes():
            self.region.protect(addr, size, prot)
        self._segments_final = True

    def protect_relro(self) -> None:
        """Make PT_GNU_RELRO read-only (after relocation and IFUNC resolution)."""
        for addr, size, prot in self._relro_pages():
            self.region.protect(addr, size, prot)

    def finish_protection(self) -> None:
        """Apply each segment's exact p_flags, then make PT_GNU_RELRO read-only."""
        parsed = self.parsed
        if self._segments_final or self._keep_writable or parsed is None:
            self.protect_segments()
            self.protect_relro()
            return
        # The same mprotect calls for every load of the file, in offsets from the
        # region's start: computed once, replayed after.
        region = self.region
        start = region.start
        steps = parsed.protection
        if steps is None:
            steps = [(addr - start, size, prot)
                     for addr, size, prot in (*self._segment_fixes(), *self._relro_pages())]
            if parsed.complete:
                parsed.protection = steps
        protect = region.protect
        for off, size, prot in steps:
            protect(start + off, size, prot)
        self._segments_final = True

    def _segment_fixes(self) -> list[tuple[int, int, int]]:
        """(address, size, prot) of each segment mapped with other than its p_flags."""
        return [(addr, size, final)
                for ph, (addr, size, prot) in zip(self.loads, self.protections)
                if size and prot != (final := prot_of(ph.p_flags))]

    def _relro_pages(self) -> list[tuple[int, int, int]]:
        """(address, size, PROT_READ) of PT_GNU_RELRO's whole pages, less the pages
        `keep_writable` holds (lazy PLT slots)."""
        relro = self.relro
        if relro is None or not relro.p_memsz:
            return []
        mask = ~(self.page_size - 1)
        start = (self.base + relro.p_vaddr) & mask
        end = (self.base + relro.p_vaddr + relro.p_memsz) & mask
        region = self.region
        if start < region.start or end > region.start + region.size:
            raise ElfParseError("PT_GNU_RELRO lies outside the module's mapping",
                                file=self.label, what="PT_GNU_RELRO")
        return [(lo, hi - lo, PROT_READ)
                for lo, hi in subtract_pages(start, end, self._keep_writable or [],
                                              self.page_size)]

    def release(self) -> None:
        self.region.release()


def map_image(src: ElfSource, *, mapper: Mapper, expect: ArchSpec | None = None,
              address: int | None = None) -> Image:
    """Parse, validate and map `src` (an ET_DYN or ET_EXEC file).

    Args:
        src: the input (its fd is used for file-backed mapping when present).
        mapper: the memory backend.
        expect: the ISA the caller wants (defaults to the host's when the mapper is
            native); a file of another machine or class raises ArchMismatchError.
        address: where to put an ET_DYN image (a hint); ET_EXEC always loads at its
            link address.

    Raises:
        ElfParseError, ArchMismatchError, UnsupportedError, MappingError.
    """
    page = mapper.page_size
    stamp = src.stamp
    parsed: ParsedMetadata | None = None
    if stamp is not None:
        # A file: keyed by identity and stamp, its content is never compared (the
        # common case, so `_cache_key` and `_cached` inlined).
        file_key = ("file", src.identity, stamp, page)
        key: tuple[object, ...] | None = file_key
        hit = _parse_cache.get(file_key)
        if hit is not None:
            try:
                _parse_cache.move_to_end(file_key)  # least recently used goes first
            except KeyError:
                pass  # evicted by another thread meanwhile: the hit is still good
            parsed = hit[0]  # complete: `_remember` sets that before it caches one
    else:
        key = _cache_key(src, page)
        parsed = _cached(key, src)
    if parsed is not None:
        want = expect if expect is not None else (host_spec() if mapper.native else None)
        if want is None or want is parsed.spec:
            fd = src.fd
            if fd is not None and parsed.layout is not None:
                return _reload(src, parsed, mapper, address, fd)
            return _map_parsed(src, parsed, mapper, address, key)
    eh = parse_header(src)
    if eh.e_type == ET_REL:
        raise UnsupportedError("this is a relocatable object (ET_REL): load it with "
                               "relink.load_object()", file=src.label)
    if eh.e_type not in (ET_DYN, ET_EXEC):
        raise ElfParseError(f"cannot load an ELF file of type {eh.type_name}",
                            file=src.label, what="ELF header")
    spec = spec_for(eh.e_machine, eh.elf_class)
    if spec is None:
        raise UnsupportedError(f"no architecture spec for {eh.machine_name} "
                               f"(e_machine {eh.e_machine}, ELF{eh.elf_class})", file=src.label)
    want = expect if expect is not None else (host_spec() if mapper.native else None)
    if want is not None and want is not spec:
        raise ArchMismatchError(
            f"file is {spec.name} (ELF{eh.elf_class}) but this load targets {want.name}"
            + ("; load it into a BufferMapper or an emulator backend instead"
               if mapper.native else ""),
            file=src.label, expected=want.name, actual=spec.name)
    phdrs = parse_program_headers(src, eh)
    loads = check_segments(phdrs, src.size, src.label, page)
    for i, ph in enumerate(loads):
        if ph.p_flags & (PF_W | PF_X) == PF_W | PF_X and mapper.native:
            # W^X: honoured because the file demands it, but never silently.
            _log.warning("%s: PT_LOAD segment %d is writable and executable (p_flags %#x); "
                         "its pages will be mapped W+X", src.label, i, ph.p_flags)
    parsed = ParsedMetadata(eh, phdrs, loads, spec)
    return _map_parsed(src, parsed, mapper, address, key)


def _map_parsed(src: ElfSource, parsed: ParsedMetadata, mapper: Mapper, address: int | None,
                key: tuple[object, ...] | None) -> Image:
    fixed = parsed.header.e_type == ET_EXEC
    fd = src.fd
    view: memoryview | None
    protections: Sequence[tuple[int, int, int]]
    if fd is not None:  # mapped from the file, by its recipe of mapping calls
        page = mapper.page_size
        recipe = parsed.recipe
        if recipe is None or recipe.page != page:
            recipe = recipe_for(parsed, page)
        lo = recipe.lo
        region, view = map_recipe(recipe, mapper, fd, lo if fixed else address, fixed)
        protections = recipe.protections  # offsets: Image makes them absolute if asked
    else:  # bytes: anonymous memory, copied into
        page = mapper.page_size
        mask = ~(page - 1)
        loads = parsed.loads
        lo = loads[0].p_vaddr & mask
        hi = (loads[-1].p_vaddr + loads[-1].p_memsz + page - 1) & mask
        region = mapper.reserve(hi - lo, address=lo if fixed else address, fixed=fixed)
        try:
            view = region.view()
            protections = copy_segments(src.data, parsed.loads, region, view, lo, page)
        except BaseException:
            region.release()
            raise
    try:
        image = _populate(src, parsed, mapper, region, view, lo, page, protections)
    except BaseException:
        region.release()
        raise
    if not parsed.complete:
        _remember(key, src, parsed)
    return image


_new_image = object.__new__


def _reload(src: ElfSource, parsed: ParsedMetadata, mapper: Mapper, address: int | None,
            fd: int) -> Image:
    """Map a cached file whose first load checked its layout, by its recipe (the path of
    every load after the first). With a view (host memory), every field of the `Image`
    is the cached metadata's or the region's, so its slots are filled here without
    `Image.__init__`'s argument passing and defaults (a test checks they are all set);
    its AddressView is made from the view on first use."""
    page = mapper.page_size
    recipe = parsed.recipe
    if recipe is None or recipe.page != page:
        recipe = recipe_for(parsed, page)
    fixed = parsed.header.e_type == ET_EXEC
    lo = recipe.lo
    region, view = map_recipe(recipe, mapper, fd, lo if fixed else address, fixed)
    if view is None:  # a backend without host memory: its Region reads and writes
        try:
            return _populate(src, parsed, mapper, region, None, lo, page, recipe.protections)
        except BaseException:
            region.release()
            raise
    layout = parsed.layout
    assert layout is not None
    image: Image = _new_image(Image)
    image.source = src
    image.spec = parsed.spec
    image.mapper = mapper
    image.region = region
    image.base = region.start - lo
    image._view = view
    image.dynamic = parsed.dynamic
    image.symbols = parsed.symbols
    image.tls = layout.tls
    image._layout = layout
    image._protections = recipe.protections
    image._segments_final = False
    image._keep_writable = None
    image.parsed = parsed
    return image


def _populate(src: ElfSource, parsed: ParsedMetadata, mapper: Mapper, region: Region,
              view: memoryview | None, lo: int, page: int,
              protections: Sequence[tuple[int, int, int]]) -> Image:
    """The `Image` of a freshly mapped file: its address view, dynamic section and symbol
    table (parsed now unless cached) and special program headers, checked."""
    eh, phdrs, spec = parsed.header, parsed.phdrs, parsed.spec
    base = region.start - lo
    layout = parsed.layout if parsed.complete else None
    eh_frame_at: int | None
    if layout is not None and layout.ranges is not None:
        # A file loaded before: its segment ranges and special headers were checked then.
        aview = AddressView(view, layout.ranges, src.label) if view is not None else \
            AddressView.for_file(src.data, phdrs, src.label)
        dynamic, symbols = parsed.dynamic, parsed.symbols
        tls, relro, eh_frame_at = layout.tls, layout.relro, layout.eh_frame_at
    else:
        layout = None
        if view is not None:
            aview = AddressView.for_image(view, lo, phdrs, src.label)
        else:
            aview = AddressView.for_file(src.data, phdrs, src.label)
        if parsed.complete:
            dynamic, symbols = parsed.dynamic, parsed.symbols
        else:
            dyn_ph = next((ph for ph in phdrs if ph.p_type == PT_DYNAMIC), None)
            dynamic = symbols = None
            if dyn_ph is not None:
                dynamic = parse_dynamic(aview, dyn_ph.p_vaddr, dyn_ph.p_memsz, eh.elf_class)
                if dynamic.symtab:
                    symbols = SymbolTable(aview, dynamic, eh.elf_class)
            parsed.dynamic, parsed.symbols = dynamic, symbols
        tls, relro, ehf = special_headers(phdrs, aview, lo, region.size, src.label)
        eh_frame_at = ehf.p_vaddr if ehf is not None else None
    image = Image(source=src, header=eh, phdrs=phdrs, loads=parsed.loads, spec=spec,
                  mapper=mapper,
                  region=region, base=base, span_vaddr=lo, view=aview, dynamic=dynamic,
                  symbols=symbols, tls=tls, relro=relro,
                  eh_frame_hdr=(base + eh_frame_at) if eh_frame_at is not None else None,
                  page_size=page, protections=protections, parsed=parsed)
    if layout is not None:
        image._layout = layout  # the file's, shared (an equal one was just made)
    elif view is not None:
        # Base-independent: the next load of this file reuses it (once it is cached).
        image._layout.ranges = aview.ranges
        parsed.layout = image._layout
    return image
