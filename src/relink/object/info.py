"""What ``relink info`` shows for relocatable objects and archives (nothing is loaded).

CLI support of `relink.object`: `describe_object` adds object-specific facts to the
ELF description (defined and undefined globals, relocation types used, COMDAT groups,
kernel-module metadata); `describe_archive` describes an ``ar`` archive member by member.
"""

from __future__ import annotations

import sys
from typing import Any

from relink.arch import rtype_name
from relink.elf.source import open_source
from relink.object.archive import Archive
from relink.object.kmod import _info
from relink.object.parse import SHN_UNDEF, ObjectFile, parse_object

__all__ = ["describe_archive", "describe_object", "print_archive"]


def _object_facts(obj: ObjectFile) -> dict[str, Any]:
    undefined = sorted({obj.sym_names[i] for i in range(obj.first_global, len(obj.sym_names))
                        if obj.sym_shndx[i] == SHN_UNDEF and obj.sym_names[i]})
    defined = sorted(obj.defined_globals())
    counts: dict[str, int] = {}
    for rsecs in obj.relocs.values():
        for rs in rsecs:
            for t in rs.types:
                key = rtype_name(obj.header.e_machine, t)
                counts[key] = counts.get(key, 0) + 1
    out: dict[str, Any] = {
        "defined": defined, "undefined": undefined,
        "relocations": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "groups": [g.signature for g in obj.groups if g.comdat],
    }
    kmod = _info(obj)
    if kmod.modinfo or kmod.versions or kmod.has_this_module:
        out["modinfo"] = {k: v for k, v in kmod.modinfo} if kmod.modinfo else {}
        out["kernel_module"] = {
            "modinfo": kmod.modinfo, "versions": len(kmod.versions),
            "this_module": kmod.has_this_module, "init": kmod.init, "exit": kmod.exit}
    return out


def describe_object(elf: Any) -> dict[str, Any]:
    """Object facts for `relink info`'s ET_REL report (from an open `ElfFile`)."""
    return _object_facts(parse_object(elf.source))


def describe_archive(path: str) -> dict[str, Any]:
    """``relink info`` data for an archive: members, their symbols, the index size."""
    src = open_source(path)
    try:
        ar = Archive(src)
        members = []
        for m in ar.members:
            entry: dict[str, Any] = {"name": m.name, "size": m.size}
            if m.size >= 4 and src.read(m.offset, 4) == b"\x7fELF":
                obj = ar.member_at(m.offset)
                entry.update({"machine": obj.header.machine_name,
                              **{k: v for k, v in _object_facts(obj).items()
                                 if k in ("defined", "undefined")}})
            members.append(entry)
        return {"file": ar.label, "type": "archive", "members": members,
                "index_symbols": len(ar.index)}
    finally:
        src.close()


def print_archive(d: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"{d['file']}\n  Type:     ar archive, {len(d['members'])} members, "
      f"{d['index_symbols']} indexed symbols\n")
    for m in d["members"]:
        w(f"\n  {m['name']} ({m['size']} bytes, {m.get('machine', 'not ELF')})\n")
        if m.get("defined"):
            w(f"    defines: {', '.join(m['defined'])}\n")
        if m.get("undefined"):
            w(f"    needs:   {', '.join(m['undefined'])}\n")
