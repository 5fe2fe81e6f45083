"""Relocatable objects (ET_REL ``.o`` / ``.ko``) and static archives (``.a``).

Pipeline of this package: `parse` (validate one object) -> `archive` (members on
demand) -> `link` (COMDAT, COMMON, strong/weak, archive extraction, external binding)
-> `layout` (permission groups, merged constants, GOT/PLT) -> `relocator` (per-ISA
recipes over the shared field encoders of `relink.relocation.fields`) -> `state`
(the runtime module) ; `loader.load_object` drives it and `kmod` reads kernel-module
metadata. See docs/objects.md.
"""

from __future__ import annotations

from relink.object.loader import load_object

__all__ = ["load_object"]
