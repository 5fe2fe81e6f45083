"""Huge pages for plan arenas, for real: MAP_HUGETLB when the kernel has a pool, else
transparent huge pages through ``madvise(MADV_HUGEPAGE)``, and a report of what the
kernel actually granted (``AnonHugePages`` / ``Private_Hugetlb`` from /proc/self/smaps).

Plan layer, host only (used by plan/materialize.py for arenas whose page size is 2 MiB).
Relink only aligns such arenas; here the 2 MiB-aligned range is also backed by huge
pages when the system allows it. The modes:

- ``"auto"`` (default): try MAP_HUGETLB|MAP_HUGE_2MB over the arena (needs
  ``vm.nr_hugepages`` > 0); on failure map normal anonymous memory and advise THP.
- ``"thp"``: normal anonymous memory + MADV_HUGEPAGE only.
- ``"hugetlb"``: MAP_HUGETLB or fail with a MappingError.
- ``"off"``: nothing beyond the alignment.
"""

from __future__ import annotations

import ctypes
from typing import Any

from relink.errors import MappingError
from relink.memory import Region

__all__ = ["HUGE_MODES", "map_arena", "smaps_huge_kb", "thp_mode"]

HUGE_MODES = ("auto", "thp", "hugetlb", "off")
MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x02, 0x10, 0x20
MAP_HUGETLB = 0x40000
MAP_HUGE_2MB = 21 << 26  # log2(2 MiB) << MAP_HUGE_SHIFT
MADV_HUGEPAGE = 14


def thp_mode() -> str:
    """The system's transparent-huge-page mode (``always``/``madvise``/``never``/``?``)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return "?"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "?"


def map_arena(region: Region, addr: int, size: int, prot: int, mode: str,
              native: bool) -> dict[str, Any]:
    """Map the arena ``[addr, addr + size)`` (2 MiB aligned) inside `region`.

    Returns what was done: ``{"mode", "hugetlb": bool, "madvise": bool, "error"?}``.
    """
    if mode not in HUGE_MODES:
        raise ValueError(f"huge page mode must be one of {HUGE_MODES}, not {mode!r}")
    report: dict[str, Any] = {"mode": mode, "hugetlb": False, "madvise": False}
    if not native or mode == "off":
        region.map_anon(addr, size, prot)
        return report
    from relink.runtime import libc as c

    if mode in ("auto", "hugetlb"):
        flags = MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB
        got = c.mmap(addr, size, prot, flags, -1, 0)
        if got == addr:
            report["hugetlb"] = True
            return report
        err = ctypes.get_errno()
        report["hugetlb_error"] = c.errno_message(err)
        if mode == "hugetlb":
            raise MappingError(f"MAP_HUGETLB of {size:#x} bytes failed: "
                               f"{c.errno_message(err)} (is vm.nr_hugepages > 0?)",
                               op="mmap", errno=err, address=addr)
    region.map_anon(addr, size, prot)
    if c.madvise(addr, size, MADV_HUGEPAGE) == 0:
        report["madvise"] = True
    else:
        report["madvise_error"] = c.errno_message(ctypes.get_errno())
    report["thp"] = thp_mode()
    return report


def smaps_huge_kb(addr: int, size: int) -> dict[str, int]:
    """Sum AnonHugePages / Private_Hugetlb / Rss (kB) of the VMAs inside the range."""
    out = {"AnonHugePages": 0, "Private_Hugetlb": 0, "Rss": 0}
    end = addr + size
    inside = False
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split(None, 1)[0] if line.strip() else ""
                if "-" in head and ":" not in head:
                    lo, hi = (int(x, 16) for x in head.split("-"))
                    inside = lo < end and addr < hi
                elif inside and head.rstrip(":") in out:
                    out[head.rstrip(":")] += int(line.split()[1])
    except OSError:
        return {}
    return out
