"""Dynamic section plan and program headers of the test ELF writer.

Test-only support code, a helper module of :mod:`tests.support.elfgen_layout` (split out to
keep files small): :func:`dynamic_plan` decides which DT_* entries exist before placement
(their number fixes the size of ``.dynamic``) and :func:`program_headers` describes the
placed segments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import elfgen_defs as d

if TYPE_CHECKING:
    from .elfgen_layout import Builder

__all__ = ["dynamic_plan", "program_headers"]

RELATIVE = 8  # R_X86_64RELATIVE and R_386_RELATIVE


def align_up(value: int, align: int) -> int:
    """``value`` rounded up to a multiple of ``align``."""
    return value + (-value % align) if align > 1 else value


def _ph(
    p_type: int, flags: int, off: int, vaddr: int, filesz: int, memsz: int, align: int
) -> dict[str, int]:
    return {
        "p_type": p_type,
        "p_flags": flags,
        "p_offset": off,
        "p_vaddr": vaddr,
        "p_paddr": vaddr,
        "p_filesz": filesz,
        "p_memsz": memsz,
        "p_align": align,
    }


def dynamic_plan(b: Builder) -> list[tuple[int, Callable[[], int]]]:
    """The dynamic entries in order, each with a function giving its value after placement."""
    w, t, st = b.w, b.t, b.t.dynstr
    plan: list[tuple[int, Callable[[], int]]] = []

    def add(tag: int, fn: Callable[[], int]) -> None:
        plan.append((tag, fn))

    def addr(name: str) -> Callable[[], int]:
        return lambda: b.secs[name].vaddr

    def size(name: str) -> Callable[[], int]:
        return lambda: b.secs[name].size

    def const(value: int) -> Callable[[], int]:
        return lambda: value

    for lib in w.needed:
        add(d.DT_NEEDED, const(st.add(lib)))
    for tag, text in (
        (d.DT_SONAME, w.soname),
        (d.DT_RPATH, w.rpath),
        (d.DT_RUNPATH, w.runpath),
    ):
        if text is not None:
            add(tag, const(st.add(text)))
    if w.init:
        add(d.DT_INIT, lambda: b._ref(w.init or ""))
    if w.fini:
        add(d.DT_FINI, lambda: b._ref(w.fini or ""))
    for arr, tag, sztag in (
        (".init_array", d.DT_INIT_ARRAY, d.DT_INIT_ARRAYSZ),
        (".fini_array", d.DT_FINI_ARRAY, d.DT_FINI_ARRAYSZ),
    ):
        if arr in b.secs:
            add(tag, addr(arr))
            add(sztag, size(arr))
    for name, tag in ((".hash", d.DT_HASH), (".gnu.hash", d.DT_GNU_HASH)):
        if name in b.secs:
            add(tag, addr(name))
    add(d.DT_STRTAB, addr(".dynstr"))
    add(d.DT_SYMTAB, addr(".dynsym"))
    add(d.DT_STRSZ, size(".dynstr"))
    add(d.DT_SYMENT, const(b.sp["Sym"].size))
    rel_tags = (
        (d.DT_RELA, d.DT_RELASZ, d.DT_RELAENT) if w.rela else (d.DT_REL, d.DT_RELSZ, d.DT_RELENT)
    )
    if b.rel_plt:
        add(d.DT_PLTGOT, addr(".got.plt"))
        add(d.DT_PLTRELSZ, size(b.rel_plt.name))
        add(d.DT_PLTREL, const(rel_tags[0]))
        add(d.DT_JMPREL, addr(b.rel_plt.name))
    if b.rel_dyn:
        add(rel_tags[0], addr(b.rel_dyn.name))
        add(rel_tags[1], size(b.rel_dyn.name))
        add(rel_tags[2], const(b.rel_spec.size))
    if w.relr:
        add(d.DT_RELR, addr(".relr.dyn"))
        add(d.DT_RELRSZ, size(".relr.dyn"))
        add(d.DT_RELRENT, const(b.word))
    if w.symbolic:
        add(d.DT_SYMBOLIC, const(0))
    if w.textrel:
        add(d.DT_TEXTREL, const(0))
    flags = w.flags | (d.DF_SYMBOLIC if w.symbolic else 0) | (d.DF_TEXTREL if w.textrel else 0)
    flags |= d.DF_BIND_NOW if w.bind_now else 0
    flags_1 = w.flags_1 | (d.DF_1_NOW if w.bind_now else 0)
    if flags:
        add(d.DT_FLAGS, const(flags))
    if flags_1:
        add(d.DT_FLAGS_1, const(flags_1))
    if t.versym:
        add(d.DT_VERSYM, addr(".gnu.version"))
    if t.verdefs:
        add(d.DT_VERDEF, addr(".gnu.version_d"))
        add(d.DT_VERDEFNUM, const(len(t.verdefs)))
    if t.verneeds:
        add(d.DT_VERNEED, addr(".gnu.version_r"))
        add(d.DT_VERNEEDNUM, const(len(t.verneeds)))
    count = 0
    for r in b.dyn_rels:
        if r.r_type != RELATIVE:
            break
        count += 1
    if count and w.relcount:
        add(d.DT_RELACOUNT if w.rela else d.DT_RELCOUNT, const(count))
    for tag, value in w.extra_dynamic:
        add(tag, const(value))
    add(d.DT_NULL, const(0))
    return plan


def program_headers(b: Builder) -> list[dict[str, int]]:
    """The program headers of the placed image."""
    w, page, base = b.w, b.w.page_size, b.w.base
    flags = {"r": d.PF_R, "x": d.PF_R | d.PF_X, "w": d.PF_R | d.PF_W}
    out = []
    for segment, (start, fend, mend) in b.seg.items():
        start = 0 if segment == "r" else start  # the first segment maps the headers too
        size = fend - start
        out.append(_ph(d.PT_LOAD, flags[segment], start, base + start, size, mend - start, page))
    dyn = b.secs[".dynamic"]
    rw = d.PF_R | d.PF_W
    out.append(_ph(d.PT_DYNAMIC, rw, dyn.offset, dyn.vaddr, dyn.size, dyn.size, b.word))
    if b.tls:
        first = b.secs.get(".tdata") or b.secs.get(".tbss")
        off, vaddr = (first.offset, first.vaddr) if first else (b.seg["w"][0], 0)
        vaddr = vaddr if first else base + off
        tb = b.secs.get(".tbss")
        mem = (tb.vaddr + tb.size - vaddr) if tb else len(w.tls_init)
        tls = len(w.tls_init)
        out.append(_ph(d.PT_TLS, d.PF_R, off, vaddr, tls, mem, w.tls_align))
    if w.gnu_stack:
        out.append(_ph(d.PT_GNU_STACK, rw | (d.PF_X if w.exec_stack else 0), 0, 0, 0, 0, 16))
    if w.relro:
        start = b.seg["w"][0]
        size = align_up(b.relro_end, page) - start
        out.append(_ph(d.PT_GNU_RELRO, d.PF_R, start, base + start, size, size, 1))
    out.extend(dict(ph) for ph in w.extra_phdrs)
    return out
