"""``relink info FILE``: what an ELF file is and what it asks of a loader (like readelf -h -l -d).

CLI layer. Reads the file with `relink.elf.ElfFile` only: nothing is mapped and no code
from the file runs, so it is safe on untrusted input. Prints a readable report, or the
same data as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from relink.elf import ElfFile
from relink.elf.constants import DF, DF_1, ET, PT, name_of
from relink.elf.notes import describe_note

__all__ = ["describe", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="show headers, segments, dependencies, relocations of "
                       "an ELF file (nothing is loaded)",
                       description="Describe an ELF file: type, machine, entry, segments, "
                                   "needed libraries, relocations by type, TLS, init/fini, "
                                   "versions. Nothing is mapped or executed.")
    p.add_argument("file", help="ELF file (shared object, executable or object)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _flags(p_flags: int) -> str:
    return "".join(c if p_flags & bit else "-" for c, bit in (("R", 4), ("W", 2), ("X", 1)))


def describe(path: str) -> dict[str, Any]:
    """The data ``relink info`` prints, as a JSON-able dict."""
    try:
        with open(path, "rb") as f:
            is_archive = f.read(8) == b"!<arch>\n"
    except OSError:
        is_archive = False  # ElfFile reports the error as a RelinkError
    if is_archive:  # a static archive: described by relink.object
        from relink.object.info import describe_archive

        return describe_archive(path)
    with ElfFile(path) as elf:
        return _describe(elf)


def _describe(elf: ElfFile) -> dict[str, Any]:
    eh = elf.header
    out: dict[str, Any] = {
        "file": elf.label,
        "type": name_of(ET, eh.e_type),
        "machine": eh.machine_name,
        "e_machine": eh.e_machine,
        "class": f"ELF{eh.elf_class}",
        "flags": eh.e_flags,
        "entry": eh.e_entry,
        "interp": elf.interp,
        "segments": [
            {"type": name_of(PT, ph.p_type, machine=eh.e_machine), "offset": ph.p_offset,
             "vaddr": ph.p_vaddr, "filesz": ph.p_filesz, "memsz": ph.p_memsz,
             "flags": _flags(ph.p_flags), "align": ph.p_align}
            for ph in elf.phdrs
        ],
    }
    if eh.e_type == ET.ET_REL:
        out["sections"] = [
            {"name": s.name, "type": s.sh_type, "size": s.sh_size, "flags": s.sh_flags}
            for s in elf.sections if s.index
        ]
        hook = _object_details()
        if hook is not None:
            out.update(hook(elf))
        return out
    tls = elf.phdr(7)
    if tls is not None:
        out["tls"] = {"filesz": tls.p_filesz, "memsz": tls.p_memsz, "align": tls.p_align}
    dyn = elf.dynamic
    if dyn is not None:
        out.update({
            "soname": dyn.soname,
            "needed": dyn.needed,
            "rpath": dyn.rpath,
            "runpath": dyn.runpath,
            "flags_dt": name_of(DF, dyn.flags) if dyn.flags else "",
            "flags_1": name_of(DF_1, dyn.flags_1) if dyn.flags_1 else "",
            "bind_now": dyn.bind_now,
            "symbolic": dyn.symbolic,
            "textrel": dyn.textrel,
            "init": dyn.init or None,
            "fini": dyn.fini or None,
            "init_array": dyn.init_arraysz // (eh.elf_class // 8),
            "fini_array": dyn.fini_arraysz // (eh.elf_class // 8),
            "preinit_array": dyn.preinit_arraysz // (eh.elf_class // 8),
        })
        tables, relr = elf.relocation_tables()
        counts: dict[str, int] = {}
        from relink.arch import rtype_name

        for t in tables:
            for r in t.types:
                key = rtype_name(eh.e_machine, r)
                counts[key] = counts.get(key, 0) + 1
        if relr:
            counts["RELR (relative)"] = len(relr)
        out["relocations"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
        syms = elf.symbols
        if syms is not None:
            out["symbols"] = syms.count
            out["exports"] = len(syms.exports)
            v = syms.versions
            out["version_definitions"] = [
                {"index": d.index, "name": d.name, "base": bool(d.flags & 1)}
                for d in v.definitions]
            out["version_needs"] = [
                {"file": n.file, "name": n.name, "index": n.index} for n in v.needs]
    try:
        out["notes"] = [describe_note(n) for n in elf.notes()]
    except Exception as exc:  # notes are informative only; report, don't fail
        out["notes"] = [f"<unreadable: {exc}>"]
    return out


def _object_details() -> Any:
    try:
        from relink.object.info import describe_object
    except ImportError:
        return None
    return describe_object


def _print(d: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"{d['file']}\n")
    w(f"  Type:     {d['type']}  {d['class']}  {d['machine']} (e_machine {d['e_machine']})\n")
    w(f"  Entry:    {d['entry']:#x}\n")
    if d.get("interp"):
        w(f"  Interp:   {d['interp']}\n")
    for key, label in (("soname", "SONAME"), ("rpath", "RPATH"), ("runpath", "RUNPATH")):
        if d.get(key) is not None:
            w(f"  {label + ':':<9} {d[key]}\n")
    if d.get("needed"):
        w(f"  Needed:   {', '.join(d['needed'])}\n")
    flags = [f for f in (d.get("flags_dt"), d.get("flags_1")) if f]
    if flags:
        w(f"  Flags:    {' '.join(flags)}\n")
    if d["segments"]:
        w("\n  Segments:\n")
        w(f"    {'Type':<16} {'Offset':>10} {'VirtAddr':>18} {'FileSiz':>10} "
          f"{'MemSiz':>10} Flg Align\n")
        for s in d["segments"]:
            w(f"    {s['type']:<16} {s['offset']:>#10x} {s['vaddr']:>#18x} "
              f"{s['filesz']:>#10x} {s['memsz']:>#10x} {s['flags']} {s['align']:#x}\n")
    if "tls" in d:
        t = d["tls"]
        w(f"\n  TLS:      {t['filesz']} bytes initialized, {t['memsz']} bytes total, "
          f"align {t['align']}\n")
    if "relocations" in d:
        total = sum(d["relocations"].values())
        w(f"\n  Relocations ({total}):\n")
        for name, n in d["relocations"].items():
            w(f"    {n:>7}  {name}\n")
    if "init" in d:
        init = [f"DT_INIT {d['init']:#x}" if d["init"] else "",
                f"DT_INIT_ARRAY x{d['init_array']}" if d["init_array"] else "",
                f"DT_PREINIT_ARRAY x{d['preinit_array']}" if d["preinit_array"] else ""]
        fini = [f"DT_FINI {d['fini']:#x}" if d["fini"] else "",
                f"DT_FINI_ARRAY x{d['fini_array']}" if d["fini_array"] else ""]
        w(f"\n  Init:     {', '.join(x for x in init if x) or '-'}\n")
        w(f"  Fini:     {', '.join(x for x in fini if x) or '-'}\n")
    if "symbols" in d:
        w(f"  Symbols:  {d['symbols']} dynamic, {d['exports']} exported\n")
    if d.get("version_definitions"):
        w("  Version definitions: " + ", ".join(
            f"{v['name']}{' (base)' if v['base'] else ''}"
            for v in d["version_definitions"]) + "\n")
    if d.get("version_needs"):
        by_file: dict[str, list[str]] = {}
        for v in d["version_needs"]:
            by_file.setdefault(v["file"], []).append(v["name"])
        w("  Version needs:\n")
        for f, names in by_file.items():
            w(f"    {f}: {', '.join(names)}\n")
    if d.get("sections"):
        w(f"\n  Sections: {len(d['sections'])}\n")
    for key in ("modinfo", "undefined", "defined"):
        if d.get(key):
            w(f"  {key.capitalize()}: {d[key]}\n")
    if d.get("notes"):
        w("\n  Notes:\n")
        for n in d["notes"]:
            w(f"    {n}\n")


def run(args: argparse.Namespace) -> int:
    d = describe(args.file)
    if args.json:
        json.dump(d, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif d.get("type") == "archive":
        from relink.object.info import print_archive

        print_archive(d)
    else:
        _print(d)
    return 0
