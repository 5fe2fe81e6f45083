"""Scan-first planning and pre-load layout optimization (``relink.scan``).

Plan layer, the last stage of the pipeline. `scan` resolves a root's whole DT_NEEDED
graph and every section without mapping anything; passes (Python callables over the
`Plan`) override section bytes, resize sections, create arenas and place sections in
them; `Plan.load()` validates every request against each module's `Capability`, lays the
arenas out (2 MiB-aligned, huge-page-backed code arenas on request), copies the sections,
repairs moved x86_64 code and metadata, and relocates through the ordinary pipeline.
See docs/planning.md.
"""

from __future__ import annotations

from relink.plan.hotpack import HotPack, hot_pack, read_profile
from relink.plan.layout import PackingPolicy
from relink.plan.model import (
    HUGE_PAGE,
    PAGE,
    Arena,
    Capability,
    Materialization,
    MemoryClass,
    ModulePlan,
    Placement,
    Plan,
    Section,
    Sharing,
)
from relink.plan.scan import scan

__all__ = [
    "Arena", "Capability", "HotPack", "HUGE_PAGE", "Materialization", "MemoryClass",
    "ModulePlan", "PackingPolicy", "PAGE", "Placement", "Plan", "Section", "Sharing",
    "hot_pack", "read_profile", "scan",
]
