"""How PT_LOAD segments become mappings: the per-file segment plan and its recipe.

Loader layer (… -> memory -> loader -> relocation), used by relink.loader. Everything
here is base-independent and computed once per file (kept in the parsed metadata's
facts, keyed by page size): the segment plan (which file pages, zero tails and anonymous
pages make up each segment), ld.so's reservation trick (when the segments tile the span,
mapping the whole span from the first segment's file offset reserves it and maps that
segment in one system call), and the *recipe*: the exact list of mapping calls, zero
tails and protections every file-backed load of the file makes, run by `map_recipe`.
Also the `ImageLayout` every mapped load of a file shares, the RELRO page arithmetic
(`subtract_pages`) and the copy of a memory input's segments (`copy_segments`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relink.elf.header import ElfHeader, ProgramHeader
from relink.elf.view import AddressView
from relink.errors import ElfParseError
from relink.memory import PROT_EXEC, PROT_READ, PROT_WRITE, Mapper, Region

__all__ = ["ZEROS", "ImageLayout", "Recipe", "copy_segments", "map_recipe", "prot_of",
           "recipe_for", "segment_plan", "special_headers", "subtract_pages"]

PT_TLS, PT_GNU_RELRO, PT_GNU_EH_FRAME = 7, 0x6474E552, 0x6474E550
PF_X, PF_W, PF_R = 1, 2, 4


def prot_of(p_flags: int) -> int:
    """PROT_* bits for a segment's PF_* flags."""
    return ((PROT_READ if p_flags & PF_R else 0) | (PROT_WRITE if p_flags & PF_W else 0)
            | (PROT_EXEC if p_flags & PF_X else 0))


_SegmentStep = tuple[int, int, int, int, int, int, int, int, int]
# A zero tail is less than a page: slices of this view zero it without an allocation.
ZEROS = memoryview(bytes(1 << 16))


def segment_plan(parsed: Any, lo: int, page: int) -> list[_SegmentStep]:
    """How to map each PT_LOAD from the file, in offsets from the span's first byte.

    Base-independent, so computed once per file (kept in `parsed.facts`): per segment
    (start, file-mapped length, file offset, prot, zero-tail offset, zero-tail length,
    anonymous start, anonymous length, whole length).
    """
    key = f"segment_plan@{page:#x}"
    plan = parsed.facts.get(key)
    if plan is not None:
        return plan
    mask = ~(page - 1)
    steps: list[_SegmentStep] = []
    for ph in parsed.loads:
        # Keep every page readable while loading: tables are read from the image.
        prot = prot_of(ph.p_flags) | PROT_READ
        seg = (ph.p_vaddr & mask) - lo
        seg_end = ((ph.p_vaddr + ph.p_memsz + page - 1) & mask) - lo
        file_end = ph.p_vaddr + ph.p_filesz - lo
        file_map_end = ((file_end + page - 1) & mask) if ph.p_filesz else seg
        tail = file_map_end - file_end if ph.p_memsz > ph.p_filesz and ph.p_filesz else 0
        anon_len = seg_end - file_map_end if ph.p_memsz > ph.p_filesz else 0
        steps.append((seg, file_map_end - seg if ph.p_filesz else 0, ph.p_offset & mask, prot,
                      file_end, tail, file_map_end, max(anon_len, 0), seg_end - seg))
    parsed.facts[key] = steps
    return steps


def special_headers(phdrs: list[ProgramHeader], aview: AddressView, lo: int, span: int,
                     label: str) -> tuple[ProgramHeader | None, ...]:
    """PT_TLS, PT_GNU_RELRO and PT_GNU_EH_FRAME (or None each), checked against the span."""
    tls = relro = ehf = None
    for ph in phdrs:
        if ph.p_type == PT_TLS and tls is None:
            tls = ph
        elif ph.p_type == PT_GNU_RELRO and relro is None:
            relro = ph
        elif ph.p_type == PT_GNU_EH_FRAME and ehf is None:
            ehf = ph
    if tls is not None and tls.p_filesz and not aview.contains(tls.p_vaddr, tls.p_filesz):
        raise ElfParseError("PT_TLS initialization image lies outside the loaded segments",
                            file=label, what="PT_TLS")
    if relro is not None and relro.p_memsz and (
            relro.p_vaddr < lo or relro.p_vaddr + relro.p_memsz > lo + span):
        # It is mprotect()ed: outside the span it would change other mappings of the
        # process (found by the issue 9 native fuzzer: adjacent memory made read-only).
        raise ElfParseError(f"PT_GNU_RELRO {relro.p_vaddr:#x}+{relro.p_memsz:#x} lies "
                            "outside the loaded segments", file=label, what="PT_GNU_RELRO")
    return tls, relro, ehf


class Recipe:
    """A file's mapping calls, in offsets from its span's first byte (one per page size,
    built once from the segment plan and kept as ``parsed.recipe``).

    Attributes:
        page: the page size it was made for; span: bytes to reserve; lo: link-time
            address of the span's first byte.
        first: (file offset, prot) when the segments tile the span without holes and the
            first one starts it from the file: then mapping the whole span from there is
            the reservation and the first segment at once (ld.so's trick); else None.
        maps: (offset, length, file offset, prot) of every segment's file pages;
            maps_after_first: the same without the first segment's.
        tails: (offset, length, page offset, prot) of the zeroed rest of a segment's last
            file page, prot None when that page is writable anyway.
        zero_slices: when every tail's page is writable already (the usual case),
            (slice of the span, zero bytes of its length) per tail, so a load with a view
            zeroes each with one slice assignment; None otherwise.
        anons: (offset, length, prot) of anonymous (bss) pages.
        protections: (offset, size, prot) per segment as mapped.
    """

    __slots__ = ("page", "span", "lo", "first", "maps", "maps_after_first", "tails",
                 "zero_slices", "anons", "protections")

    def __init__(self, page: int, span: int, lo: int, first: tuple[int, int] | None,
                 maps: list[tuple[int, int, int, int]],
                 tails: list[tuple[int, int, int, int | None]],
                 anons: list[tuple[int, int, int]],
                 protections: tuple[tuple[int, int, int], ...]) -> None:
        self.page, self.span, self.lo, self.first = page, span, lo, first
        self.maps, self.maps_after_first = maps, maps[1:] if first is not None else maps
        self.tails, self.anons, self.protections = tails, anons, protections
        # A tail is less than a page (segment_plan), so ZEROS always covers it.
        self.zero_slices: tuple[tuple[slice, memoryview], ...] | None = tuple(
            (slice(at, at + length), ZEROS[:length]) for at, length, _, _ in tails) \
            if all(keep is None for _, _, _, keep in tails) else None


def recipe_for(parsed: Any, page: int) -> Recipe:
    """The file's recipe for this page size (made from its segment plan on first use)."""
    recipe: Recipe | None = parsed.recipe
    if recipe is not None and recipe.page == page:
        return recipe
    mask = ~(page - 1)
    loads = parsed.loads
    lo = loads[0].p_vaddr & mask
    span = ((loads[-1].p_vaddr + loads[-1].p_memsz + page - 1) & mask) - lo
    steps = segment_plan(parsed, lo, page)
    first: tuple[int, int] | None = None
    if steps[0][0] == 0 and steps[0][1] and all(
            b[0] == a[0] + a[8] for a, b in zip(steps, steps[1:])):
        first = (steps[0][2], steps[0][3])
    maps: list[tuple[int, int, int, int]] = []
    tails: list[tuple[int, int, int, int | None]] = []
    anons: list[tuple[int, int, int]] = []
    for seg, file_len, file_off, prot, tail_at, tail, anon_at, anon_len, _total in steps:
        if file_len:
            maps.append((seg, file_len, file_off, prot))
        if tail:
            tails.append((tail_at, tail, anon_at - page, None if prot & PROT_WRITE else prot))
        if anon_len:
            anons.append((anon_at, anon_len, prot))
    recipe = Recipe(page, span, lo, first, maps, tails, anons,
                    tuple((step[0], step[8], step[3]) for step in steps))
    parsed.recipe = recipe
    return recipe


def map_recipe(recipe: Recipe, mapper: Mapper, fd: int, address: int | None = None,
               fixed: bool = False) -> tuple[Region, memoryview | None]:
    """Map a file-backed image by its recipe: (region, its view or None); the
    protections as mapped are ``recipe.protections``, in offsets from the region's
    start. `address` / `fixed` are `reserve`'s (a hint, or ET_EXEC's exact place).
    Nothing stays mapped if a call fails."""
    first = recipe.first
    if address is None and not fixed and first is not None:
        # ld.so's trick. HostMapper makes the reservation, every other file mapping and
        # (when no page needs its protection changed for it, the usual case) the zeroed
        # tails in one call: most of a reload's mapping work. Other mappers in steps.
        map_file_span = getattr(mapper, "map_file_span", None)
        if map_file_span is not None and recipe.zero_slices is not None:
            spanned: Region = map_file_span(recipe.span, fd, first[0], first[1],
                                            recipe.maps_after_first, recipe.zero_slices)
            if recipe.anons:
                _map_anons(recipe, spanned)
            return spanned, spanned.view()
    maps = recipe.maps
    region: Region | None = None
    if address is None and not fixed and first is not None:
        reserve_file = getattr(mapper, "reserve_file", None)
        if reserve_file is not None:
            region = reserve_file(recipe.span, fd, *first)
            maps = recipe.maps_after_first
    if region is None:
        region = mapper.reserve(recipe.span, address=address, fixed=fixed)
    try:
        map_files = getattr(region, "map_files", None)  # HostRegion's: one loop
        if map_files is not None:
            map_files(fd, maps)
        else:
            start = region.start
            for at, length, offset, prot in maps:
                region.map_file(start + at, length, fd, offset, prot)
        view = region.view()
        zero_slices = recipe.zero_slices
        if view is not None and zero_slices is not None:
            # Zero the rest of each segment's last file page (it holds whatever follows
            # the data in the file); those pages are writable already.
            for where, zeros in zero_slices:
                view[where] = zeros
        else:
            _zero_tails(recipe, region, view)
        if recipe.anons:
            _map_anons(recipe, region)
    except BaseException:
        region.release()
        raise
    return region, view


def _map_anons(recipe: Recipe, region: Region) -> None:
    """Map the anonymous (bss) pages past the file's; the region is released if one
    fails."""
    try:
        start = region.start
        for at, length, prot in recipe.anons:
            region.map_anon(start + at, length, prot)
    except BaseException:
        region.release()
        raise


def _zero_tails(recipe: Recipe, region: Region, view: memoryview | None) -> None:
    """Zero the rest of each segment's last file page (it holds whatever follows the
    data); a read-only page is made writable just for that."""
    start = region.start
    for at, length, page_at, keep in recipe.tails:
        if keep is not None:
            region.protect(start + page_at, at + length - page_at, keep | PROT_WRITE)
        if view is not None:
            view[at:at + length] = ZEROS[:length]
        else:
            region.write(start + at, bytes(length))
        if keep is not None:
            region.protect(start + page_at, at + length - page_at, keep)


class ImageLayout:
    """What every load of one file (at one page size) shares: its headers, the span's
    link-time start, the special program headers and (once a mapped load has checked
    them) the AddressView ranges. Kept as ``parsed.layout``; an `Image` reads these
    through properties, so a reload stores one reference instead of seven fields.
    Never mutated once shared (the relocation of each load writes only the image)."""

    __slots__ = ("header", "phdrs", "loads", "span_vaddr", "page_size", "tls", "relro",
                 "eh_frame_at", "ranges")

    def __init__(self, header: ElfHeader, phdrs: list[ProgramHeader],
                 loads: list[ProgramHeader], span_vaddr: int, page_size: int,
                 tls: ProgramHeader | None, relro: ProgramHeader | None,
                 eh_frame_at: int | None) -> None:
        self.header = header
        self.phdrs = phdrs
        self.loads = loads
        self.span_vaddr = span_vaddr
        self.page_size = page_size
        self.tls = tls
        self.relro = relro
        self.eh_frame_at = eh_frame_at  # PT_GNU_EH_FRAME's link-time address
        self.ranges: Sequence[tuple[int, int, int]] | None = None


def subtract_pages(start: int, end: int, keep: list[tuple[int, int]],
                   page: int) -> list[tuple[int, int]]:
    """Page ranges of ``[start, end)`` not touching any (address, size) in `keep`."""
    out = [(start, end)] if end > start else []
    for addr, size in keep:
        lo, hi = addr & ~(page - 1), (addr + size + page - 1) & ~(page - 1)
        out = [piece for s, e in out
               for piece in ((s, min(e, lo)), (max(s, hi), e)) if piece[1] > piece[0]]
    return out


def copy_segments(data: memoryview, loads: list[ProgramHeader], region: Region,
                  view: memoryview | None, lo: int, page: int) -> list[tuple[int, int, int]]:
    """Map each PT_LOAD of a memory input as anonymous pages and copy its bytes in;
    returns the protections as mapped (read-write until `Image.finish_protection`)."""
    mask = ~(page - 1)
    base = region.start - lo
    protections: list[tuple[int, int, int]] = []
    for ph in loads:
        seg_start = (base + ph.p_vaddr) & mask
        seg_end = (base + ph.p_vaddr + ph.p_memsz + page - 1) & mask
        region.map_anon(seg_start, seg_end - seg_start, PROT_READ | PROT_WRITE)
        chunk = data[ph.p_offset:ph.p_offset + ph.p_filesz]
        if view is not None:
            at = base + ph.p_vaddr - region.start
            view[at:at + len(chunk)] = chunk
        else:
            region.write(base + ph.p_vaddr, chunk)
        protections.append((seg_start, seg_end - seg_start, PROT_READ | PROT_WRITE))
    return protections
