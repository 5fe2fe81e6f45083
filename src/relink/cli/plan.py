"""``relink plan FILE``: the scan-first plan of a library and its dependencies.

CLI layer over `relink.scan` (plan/scan.py): nothing is mapped and no code from the files
runs. Prints every module (capability and why, dependencies), its allocated sections
(size, memory class, alignment, placement) and the arenas the default layout would use
(plus the hot-code packing pass with ``--hot``); ``--json`` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser("plan", help="scan a library's dependency graph and sections "
                       "(nothing is loaded)",
                       description="Resolve the DT_NEEDED graph and every section of FILE "
                                   "without mapping anything: modules, capabilities "
                                   "(opaque / section data / reorderable), sections with "
                                   "size, memory class and alignment, and arenas.")
    p.add_argument("file", help="shared object or executable")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--all-sections", action="store_true",
                   help="also list non-allocated sections")
    p.add_argument("--hot", metavar="NAMES|FILE", default=None,
                   help="comma-separated hot functions, or a profile file: show the arenas "
                        "the hot-code packing pass and default packing would produce")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from relink.plan import hot_pack, scan
    from relink.plan.layout import normalize

    with scan(args.file, missing_ok=True) as plan:
        packer = None
        if args.hot:
            names = args.hot if os.path.exists(args.hot) else \
                [n for n in args.hot.split(",") if n]
            packer = hot_pack(names)
            plan.run(packer)
        # The default layout (pure planning: nothing is mapped) shows the arenas.
        normalize(plan)
        data = plan.describe()
        if packer is not None:
            data["hot"] = packer.describe()
        if not args.all_sections:
            for m in data["modules"]:
                m["sections"] = [s for s in m["sections"] if s["class"] is not None]
        if args.json:
            json.dump(data, sys.stdout, indent=2)
            print()
        else:
            _print(data)
    return 0


def _print(data: dict[str, Any]) -> None:
    out = sys.stdout
    for m in data["modules"]:
        out.write(f"{m['key']}  ({m['path'] or 'memory'})\n")
        out.write(f"  {m['type']} {m['machine']} {m['class']}  capability: {m['capability']}"
                  f" ({m['capability_reason']})\n")
        out.write(f"  materialization: {m['materialization']}\n")
        if m["soname"]:
            out.write(f"  soname: {m['soname']}\n")
        for label in ("rpath", "runpath", "interp"):
            if m[label]:
                out.write(f"  {label}: {m[label]}\n")
        if m["needed"]:
            out.write("  needed: " + ", ".join(
                f"{n} -> {d}" for n, d in zip(m["needed"], m["deps"])) + "\n")
        if m["sections"]:
            out.write(f"  {'section':<24} {'addr':>10} {'size':>9} {'class':<7} align\n")
            for s in m["sections"]:
                extra = ""
                if "arena" in s:
                    extra = f"  -> arena {s['arena']} +{s['offset']:#x}"
                out.write(f"  {s['name'] or '#' + str(s['index']):<24} {s['addr']:>#10x} "
                          f"{s['size']:>9} {s['class'] or '-':<7} {s['align']}{extra}\n")
        out.write("\n")
    if data["host"]:
        out.write("served by the host: " + ", ".join(data["host"]) + "\n")
    if data["missing"]:
        out.write("NOT FOUND: " + ", ".join(data["missing"]) + "\n")
    if not data["arenas"]:
        out.write("arenas: none (every module is mapped whole)\n")
    else:
        out.write("arenas:\n")
        for a in data["arenas"]:
            page = "2M" if a["page_size"] == 2 << 20 else f"{a['page_size'] // 1024}K"
            out.write(f"  [{a['index']}] {a['name']:<32} {a['class']:<7} {a['sharing']:<8}"
                      f" page {page:<4} {a['size']:>9} bytes, {len(a['sections'])} "
                      "sections\n")
    hot = data.get("hot")
    if hot:
        out.write(f"hot functions packed: {len(hot['packed'])}"
                  + (f"; not found: {', '.join(hot['missing'])}" if hot["missing"] else "")
                  + "\n")
