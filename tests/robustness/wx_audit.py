"""W^X audit of relink-loaded modules against the kernel's view (/proc/self/maps).

Test support for issue 9 §6, used by the autouse fixture in tests/conftest.py. After a
module's protections are final, no page of its mapping may be both writable and
executable unless one of its PT_LOAD segments asks for PF_W|PF_X (then a warning is
logged, and the pages are allowed), and the PT_GNU_RELRO pages (less the ones the lazy
binder keeps writable) must be read-only. Only host mappings are audited: a BufferMapper
image has no host pages at all.

The audit hooks `Image.protect_relro` (the last protection step of every load, whatever
layer drives it) and the protection steps of relocatable-object units (relink.object),
and keeps weak sets of what it audited so a test's teardown can re-check what is still
mapped (nothing may loosen protections afterwards).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

__all__ = ["Violation", "audit_image", "install", "maps", "recheck_live"]

log = logging.getLogger("relink.audit")
PF_X, PF_W = 1, 2

Violation = str
_live: weakref.WeakSet[Any] = weakref.WeakSet()
_live_objects: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
violations: list[Violation] = []


def maps() -> list[tuple[int, int, str, str]]:
    """(start, end, perms, path) of every mapping of this process."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return out


def _overlaps(entries: list[tuple[int, int, str, str]], lo: int,
              hi: int) -> Iterator[tuple[int, int, str]]:
    for s, e, perms, _path in entries:
        if s < hi and lo < e:
            yield max(s, lo), min(e, hi), perms


def _is_host(image: Any) -> bool:
    return bool(getattr(image.mapper, "native", False))


def audit_image(image: Any, entries: list[tuple[int, int, str, str]] | None = None
                ) -> list[Violation]:
    """Problems with one mapped host image (empty list: it is W^X clean)."""
    if not _is_host(image) or getattr(image.region, "_released", False):
        return []
    entries = maps() if entries is None else entries
    page = image.page_size
    mask = ~(page - 1)
    region = image.region
    lo, hi = region.start, region.start + region.size
    demanded = [((image.base + ph.p_vaddr) & mask,
                 (image.base + ph.p_vaddr + ph.p_memsz + page - 1) & mask)
                for ph in image.loads if ph.p_flags & (PF_W | PF_X) == PF_W | PF_X]
    out: list[Violation] = []
    for s, e, perms in _overlaps(entries, lo, hi):
        if "w" in perms and "x" in perms:
            if any(ds <= s and e <= de for ds, de in demanded):
                log.warning("%s: pages %#x-%#x are writable and executable because the "
                            "file's segment asks for PF_W|PF_X", image.label, s, e)
                continue
            out.append(f"{image.label}: pages {s:#x}-{e:#x} are {perms} (W and X) but no "
                       "segment of the file asks for that")
    relro = getattr(image, "relro", None)
    if relro is not None and relro.p_memsz:
        r_lo = (image.base + relro.p_vaddr) & mask
        r_hi = (image.base + relro.p_vaddr + relro.p_memsz) & mask
        keep = [(a & mask, (a + n + page - 1) & mask)
                for a, n in getattr(image, "keep_writable", [])]
        for s, e, perms in _overlaps(entries, r_lo, r_hi):
            if "w" not in perms:
                continue
            if any(ks <= s and e <= ke for ks, ke in keep):
                continue
            out.append(f"{image.label}: RELRO pages {s:#x}-{e:#x} are still writable "
                       f"({perms})")
    return out


def audit_object(st: Any, entries: list[tuple[int, int, str, str]] | None = None
                 ) -> list[Violation]:
    """Problems with a relocatable-object unit mapped in this process (relink.object):
    no W+X page unless one of its output segments is both writable and executable."""
    region = st.region
    if type(region).__name__ != "HostRegion" or getattr(region, "_released", False):
        return []
    entries = maps() if entries is None else entries
    demanded = [(addr, addr + size) for addr, size, init, final, _g in st.segments
                if (init | final) & 6 == 6]  # PROT_WRITE | PROT_EXEC
    out: list[Violation] = []
    for s, e, perms in _overlaps(entries, region.start, region.start + region.size):
        if "w" in perms and "x" in perms:
            if any(ds <= s and e <= de for ds, de in demanded):
                log.warning("%s: pages %#x-%#x are writable and executable because a "
                            "section asks for it", st.label, s, e)
                continue
            out.append(f"{st.label}: object pages {s:#x}-{e:#x} are {perms} (W and X)")
    return out


def _record(problems: list[Violation]) -> None:
    if problems:
        with _lock:
            violations.extend(problems)


def install() -> None:
    """Wrap `relink.loader.Image.finish_protection` so every finished load is audited."""
    from relink.loader import Image

    if getattr(Image, "_wx_audited", False):
        return
    name = "finish_protection"
    original = getattr(Image, name)

    def audited(self: Any, *args: Any, **kw: Any) -> Any:
        result = original(self, *args, **kw)
        if _is_host(self):
            _live.add(self)
            _record(audit_image(self))
        return result

    audited.__doc__ = original.__doc__
    setattr(Image, name, audited)
    Image._wx_audited = True  # type: ignore[attr-defined]
    _install_object_hooks()


def _install_object_hooks() -> None:
    """Audit relocatable-object units when their protections are applied: the initial
    ones (`relink.object.loader._protect_init`) and the final, after-init ones."""
    try:
        from relink.object import loader as obj_loader
        from relink.object.state import ObjectState
    except ImportError:
        return
    original_init = obj_loader._protect_init
    original_final = ObjectState.finish_protection

    def protect_init(region: Any, st: Any) -> None:
        original_init(region, st)
        _live_objects.add(st)
        _record(audit_object(st))

    def finish_protection(self: Any) -> None:
        original_final(self)
        _record(audit_object(self))

    obj_loader._protect_init = protect_init
    ObjectState.finish_protection = finish_protection  # type: ignore[method-assign]


def recheck_live() -> None:
    """Audit again every audited image and object unit that is still mapped."""
    images, objects = list(_live), list(_live_objects)
    if images or objects:
        entries = maps()
        for image in images:
            _record(audit_image(image, entries))
        for st in objects:
            _record(audit_object(st, entries))


def take() -> list[Violation]:
    """Return and clear the violations recorded so far."""
    with _lock:
        out = list(violations)
        violations.clear()
    return out
