"""How PT_LOAD segments become mappings: the per-file segment plan and its recipe.

Loader layer (… -> memory -> loader -> relocation), used by relink.loader. Everything
here is base-independent and computed once per file (kept in the parsed metadata's
facts, keyed by page size): the segment plan (which file pages, zero tails and anonymous
pages make up each segment), ld.so's reservation trick (when the segments tile the span,
mapping the whole span from the first segment's file offset reserves it and maps that
segment in one system call), and the *recipe*: the exact list of mapping calls, zero
tails and protections a file loaded before needs, replayed by `map_recipe` without
going through the plan again.
"""

from __future__ import annotations

from typing import Any

from relink.elf.header import ProgramHeader
from relink.elf.view import AddressView
from relink.errors import ElfParseError
from relink.memory import PROT_EXEC, PROT_READ, PROT_WRITE, Mapper, Region

__all__ = ["ZEROS", "Recipe", "contiguous_first", "map_file_segments", "map_recipe", "prot_of",
           "recipe_for", "segment_plan", "special_headers"]

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


def contiguous_first(parsed: Any, lo: int, page: int) -> tuple[int, int] | None:
    """(file offset, prot) of the first segment when the segments tile the span without
    holes and the first starts it from the file: then mapping the whole span from that
    offset is the reservation and the first segment at once. None otherwise."""
    key = f"first_segment@{page:#x}"
    facts = parsed.facts
    if key in facts:
        return facts[key]
    steps = segment_plan(parsed, lo, page)
    first: tuple[int, int] | None = None
    if steps[0][0] == 0 and steps[0][1] and all(
            b[0] == a[0] + a[8] for a, b in zip(steps, steps[1:])):
        first = (steps[0][2], steps[0][3])
    facts[key] = first
    return first


def map_file_segments(parsed: Any, region: Region, view: memoryview | None,
                       fd: int, lo: int, page: int,
                       protections: list[tuple[int, int, int]], first_mapped: bool) -> None:
    """Map every PT_LOAD of a file-backed image over the reserved span (the first one's
    file pages already are when `first_mapped`)."""
    start = region.start
    for seg, file_len, file_off, prot, tail_at, tail, anon_at, anon_len, total in \
            segment_plan(parsed, lo, page):
        if first_mapped:
            first_mapped = False
        elif file_len:
            region.map_file(start + seg, file_len, fd, file_off, prot)
        if tail:
            # Zero the rest of the last file page (it holds whatever follows the data).
            page_at = start + anon_at - page
            if not prot & PROT_WRITE:
                region.protect(page_at, page, prot | PROT_WRITE)
            if view is not None:
                view[tail_at:tail_at + tail] = ZEROS[:tail]
            else:
                region.write(start + tail_at, bytes(tail))
            if not prot & PROT_WRITE:
                region.protect(page_at, page, prot)
        if anon_len:
            region.map_anon(start + anon_at, anon_len, prot)
        protections.append((start + seg, total, prot))


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
    """The mapping calls of a file loaded before, in offsets from its span's start.

    Attributes:
        span: bytes to reserve; first: (file offset, prot) mapping the whole span (the
            reservation and the first segment at once); maps: (offset, length, file
            offset, prot) of the other segments' file pages; tails: (offset, length,
            page offset, prot) of the zero tails, prot None when the page is writable;
            anons: (offset, length, prot) of anonymous pages; protections: (offset,
            size, prot) per segment as mapped; layout: what `Image` needs besides
            (AddressView ranges, PT_TLS, PT_GNU_RELRO, PT_GNU_EH_FRAME).
    """

    __slots__ = ("span", "lo", "first", "maps", "tails", "anons", "protections", "layout",
                 "page", "mapper_type")

    def __init__(self, page: int, mapper_type: type, span: int, lo: int,
                 first: tuple[int, int],
                 maps: list[tuple[int, int, int, int]],
                 tails: list[tuple[int, int, int, int | None]],
                 anons: list[tuple[int, int, int]],
                 protections: tuple[tuple[int, int, int], ...],
                 layout: tuple[Any, ...]) -> None:
        self.page, self.mapper_type = page, mapper_type
        self.span, self.lo, self.first = span, lo, first
        self.maps, self.tails, self.anons = maps, tails, anons
        self.protections, self.layout = protections, layout


def recipe_for(parsed: Any, lo: int, span: int, page: int, mapper_type: type
               ) -> Recipe | None:
    """The file's recipe for this page size and kind of mapper (built from its plan and
    checked layout, and kept as ``parsed.recipe``), or None when it cannot have one:
    segments with holes or not starting the span from the file, or a layout not recorded
    yet (the first load records it)."""
    facts = parsed.facts
    layout = facts.get("image_layout")
    first = contiguous_first(parsed, lo, page)
    if layout is None or first is None:
        return None  # not yet (no layout) or never (no first-segment reservation)
    maps: list[tuple[int, int, int, int]] = []
    tails: list[tuple[int, int, int, int | None]] = []
    anons: list[tuple[int, int, int]] = []
    prots: list[tuple[int, int, int]] = []
    for i, (seg, file_len, file_off, prot, tail_at, tail, anon_at, anon_len, total) in \
            enumerate(segment_plan(parsed, lo, page)):
        if file_len and i:
            maps.append((seg, file_len, file_off, prot))
        if tail:
            tails.append((tail_at, tail, anon_at - page, None if prot & PROT_WRITE else prot))
        if anon_len:
            anons.append((anon_at, anon_len, prot))
        prots.append((seg, total, prot))
    recipe = Recipe(page, mapper_type, span, lo, first, maps, tails, anons, tuple(prots),
                    layout)
    parsed.recipe = recipe
    return recipe


def map_recipe(recipe: Recipe, mapper: Mapper, fd: int
               ) -> tuple[Region, memoryview, tuple[tuple[int, int, int], ...]]:
    """Map a file by its recipe: (region, its view, protections as mapped, in offsets
    from the region's start). Nothing stays mapped if a call fails."""
    region = mapper.reserve_file(recipe.span, fd, *recipe.first)  # type: ignore[attr-defined]
    try:
        start = region.start
        map_files = getattr(region, "map_files", None)  # HostRegion's: one loop
        if map_files is not None:
            map_files(fd, recipe.maps)
        else:
            for at, length, offset, prot in recipe.maps:
                region.map_file(start + at, length, fd, offset, prot)
        view = region.view()
        for at, length, page_at, keep in recipe.tails:
            if keep is not None:  # a read-only page: writable just for the zeroing
                region.protect(start + page_at, at + length - page_at, keep | PROT_WRITE)
            view[at:at + length] = ZEROS[:length]
            if keep is not None:
                region.protect(start + page_at, at + length - page_at, keep)
        for at, length, prot in recipe.anons:
            region.map_anon(start + at, length, prot)
    except BaseException:
        region.release()
        raise
    return region, view, recipe.protections  # offsets: Image makes them absolute if asked
