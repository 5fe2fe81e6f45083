"""``relink deps FILE``: the dependency tree, and where and why each edge was found.

CLI layer over `relink.linker.deps.dependency_graph` (nothing is mapped, no code of the
files runs). Each edge says how the linker found its target - RUNPATH of X, RPATH of Y
(inherited), LD_LIBRARY_PATH, fixed dir, ld.so.cache, default dir, host-provided - or
that it was not found, with every path tried. ``--json`` prints the graph as data,
``--dot`` as graphviz. Exit status 1 when a dependency is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from relink.linker.deps import DepEdge, DepGraph, DepNode, dependency_graph
from relink.linker.search import SearchPathResolver
from relink.runtime.host import HostPolicy

__all__ = ["format_dot", "format_tree", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser("deps", help="show the dependency tree and where each library was "
                       "found and why (nothing is loaded)",
                       description="Resolve the DT_NEEDED graph as relink's linker would "
                                   "(host policy, RPATH/RUNPATH/$ORIGIN, ld.so.cache, default "
                                   "dirs) and show where each edge was found and why. Files "
                                   "are only read; nothing is mapped or executed.")
    p.add_argument("file", help="ELF shared object or executable")
    p.add_argument("--json", action="store_true", help="print the graph as JSON")
    p.add_argument("--dot", action="store_true", help="print the graph for graphviz")
    p.add_argument("--no-host", action="store_true",
                   help="do not let the host serve any library (search files only)")
    p.add_argument("-L", "--fixed-dir", action="append", default=[], metavar="DIR",
                   help="extra directory searched after RUNPATH (repeatable)")
    p.add_argument("--ld-library-path", action="store_true",
                   help="honour LD_LIBRARY_PATH (relink ignores it by default)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also list the candidates tried for found libraries")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    search = SearchPathResolver(fixed_dirs=tuple(args.fixed_dir),
                                use_ld_library_path=args.ld_library_path)
    host = None if args.no_host else HostPolicy()
    graph = dependency_graph(args.file, search=search, host=host)
    if args.json:
        json.dump(graph.to_json(), out, indent=2)
        out.write("\n")
    elif args.dot:
        out.write(format_dot(graph))
    else:
        out.write(format_tree(graph, verbose=args.verbose))
    return 1 if graph.missing else 0


def _label(node: DepNode) -> str:
    if node.kind == "missing":
        return "not found"
    if node.path:
        return node.path
    return "(served by the host's loader)" if node.kind == "host" else "(memory)"


def format_tree(graph: DepGraph, *, verbose: bool = False) -> str:
    """The graph as an indented tree (each module expanded where first reached)."""
    lines = [f"{graph.root.name} ({_label(graph.root)})"]

    def walk(node: DepNode, prefix: str) -> None:
        edges = graph.children(node)
        for i, edge in enumerate(edges):
            last = i == len(edges) - 1
            lines.append(prefix + ("└── " if last else "├── ") + _edge_text(graph, edge))
            more = prefix + ("    " if last else "│   ")
            target = graph.nodes[edge.target]
            if target.kind == "missing" or (verbose and edge.tried):
                for cand in edge.tried:
                    lines.append(more + "  tried " + cand)
            if target.error:
                lines.append(more + "  unreadable: " + target.error)
            if edge.first and target.kind == "file":
                walk(target, more)

    walk(graph.root, "")
    missing = graph.missing
    if missing:
        names = ", ".join(sorted({e.needed for e in missing}))
        lines.append(f"missing: {names}")
    return "\n".join(lines) + "\n"


def _edge_text(graph: DepGraph, edge: DepEdge) -> str:
    target = graph.nodes[edge.target]
    if target.kind == "missing":
        return f"{edge.needed} => not found"
    return f"{edge.needed} => {_label(target)}  [{edge.how}]"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_dot(graph: DepGraph) -> str:
    """The graph in graphviz's dot language (missing libraries in red, host ones grey)."""
    lines = ["digraph deps {", "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
    for node in graph.nodes:
        attrs = {"missing": ', color=red, fontcolor=red, style=dashed',
                 "host": ', color=gray50, fontcolor=gray30'}.get(node.kind, "")
        tip = _q(node.path or "not found")
        lines.append(f"  n{node.id} [label={_q(node.name)}, tooltip={tip}{attrs}];")
    for edge in graph.edges:
        lines.append(f"  n{edge.owner} -> n{edge.target} [label={_q(edge.how)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
