"""The dependency graph of an ELF file as the linker would resolve it, without loading.

Linker layer, read-only (used by ``relink deps``). Walks DT_NEEDED breadth-first exactly
as `Linker` does - same host policy, same `SearchPathResolver` order, DT_RPATH inherited
along the loader chain, DT_RUNPATH of the direct owner only, candidates of another
machine/class skipped - but reads each file with `ElfFile` only: nothing is mapped and no
code of the files runs. Every edge records where its target was found and why, or every
path that was tried when it was not found.

Host-provided names are asked of the `HostPolicy`, which (like a real load) may dlopen
a glibc-family library into this process; ``host=None`` reports file search only, and
so does a root of another machine or class than this process.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from relink.arch import host_spec
from relink.elf import ElfFile
from relink.elf.source import SourceLike
from relink.errors import RelinkError
from relink.linker.resolvers import Acceptor, default_resolve
from relink.linker.search import ModuleSearchInfo, SearchPathResolver
from relink.runtime.host import HostPolicy

__all__ = ["DepEdge", "DepGraph", "DepNode", "dependency_graph"]

_DF_1_NODEFLIB = 0x800


@dataclass
class DepNode:
    """One module of the graph.

    Attributes:
        id: index in `DepGraph.nodes` (0 = root).
        name: file name (or DT_NEEDED name for host / missing nodes).
        path: resolved path (None when missing; the host's file for host nodes).
        soname: DT_SONAME when read.
        kind: "file", "host" or "missing".
        error: why the file could not be read (kind "file" only).
    """

    id: int
    name: str
    path: str | None
    soname: str | None = None
    kind: str = "file"
    error: str | None = None
    search: ModuleSearchInfo | None = None
    parent: DepNode | None = None
    needed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "path": self.path, "soname": self.soname,
                "kind": self.kind, "error": self.error, "needed": self.needed,
                "rpath": list(self.search.rpath) if self.search else [],
                "runpath": list(self.search.runpath) if self.search else []}


@dataclass
class DepEdge:
    """A DT_NEEDED entry and how it was resolved.

    Attributes:
        owner: id of the module whose DT_NEEDED it is.
        needed: the DT_NEEDED name.
        target: id of the providing node.
        how: "RUNPATH of X", "RPATH of Y (inherited)", "ld.so.cache", "default dir",
            "fixed dir", "LD_LIBRARY_PATH", "direct path", "host-provided (…)",
            "already loaded as <key>" or "not found".
        tried: every candidate tried ("path (reason)"), for found and missing edges.
        first: True where the target is first reached (the tree descends there only).
    """

    owner: int
    needed: str
    target: int
    how: str
    tried: list[str] = field(default_factory=list)
    first: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"from": self.owner, "needed": self.needed, "to": self.target,
                "how": self.how, "tried": self.tried}


@dataclass
class DepGraph:
    """Nodes (root first, breadth-first) and edges (per owner, in DT_NEEDED order)."""

    nodes: list[DepNode]
    edges: list[DepEdge]

    @property
    def root(self) -> DepNode:
        return self.nodes[0]

    @property
    def missing(self) -> list[DepEdge]:
        return [e for e in self.edges if self.nodes[e.target].kind == "missing"]

    def children(self, node: DepNode) -> list[DepEdge]:
        return [e for e in self.edges if e.owner == node.id]

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root.id, "nodes": [n.to_json() for n in self.nodes],
                "edges": [e.to_json() for e in self.edges]}


def _host_reason(host: HostPolicy, name: str) -> str:
    if any(fnmatch.fnmatchcase(name, p) for p in host.family):
        return "host-provided (glibc family / host policy)"
    return "host-provided (already loaded in this process)"


def _read(node: DepNode, elf: ElfFile) -> None:
    dyn = elf.dynamic
    if dyn is None:
        return
    node.soname = dyn.soname
    node.needed = list(dyn.needed)
    node.search = ModuleSearchInfo.from_dynamic(
        node.name, node.path, rpath=dyn.rpath, runpath=dyn.runpath,
        nodeflib=bool(dyn.flags_1 & _DF_1_NODEFLIB))


def dependency_graph(source: SourceLike, *, search: SearchPathResolver | None = None,
                     host: HostPolicy | None = None, name: str | None = None) -> DepGraph:
    """Resolve the DT_NEEDED graph of `source` without mapping anything.

    Raises:
        RelinkError: the root itself cannot be read. Unreadable or missing
            dependencies are recorded in the graph instead.
    """
    search = search if search is not None else SearchPathResolver()
    with ElfFile(source, name=name) as elf:
        root = DepNode(0, elf.source.name, elf.source.path)
        _read(root, elf)
        machine, elf_class = elf.header.e_machine, elf.header.elf_class
    spec = host_spec()
    if spec is None or (spec.e_machine, spec.elf_class) != (machine, elf_class):
        host = None  # the host's libraries can never serve a foreign image
    nodes = [root]
    edges: list[DepEdge] = []
    known: dict[str, tuple[DepNode, str]] = {}  # name -> node, key it was known by
    by_identity: dict[Any, DepNode] = {}
    for key in (root.soname, root.name):
        if key:
            known.setdefault(key, (root, key))
    queue = [root]
    while queue:
        owner = queue.pop(0)
        chain: list[ModuleSearchInfo] = []
        p = owner.parent
        while p is not None:
            if p.search is not None:
                chain.append(p.search)
            p = p.parent
        for needed in owner.needed:
            hit = known.get(needed)
            if hit is not None:
                edges.append(DepEdge(owner.id, needed, hit[0].id,
                                     f"already loaded as {hit[1]}", first=False))
                continue
            if host is not None and host.serves(needed):
                # Decided like relink.scan: without dlopening anything, so no system
                # library's initializers run just to print a tree.
                from relink.runtime.host import host_library

                lib = host_library(needed, load=False)  # only if already loaded
                node = DepNode(len(nodes), needed, lib.path if lib is not None else None,
                               soname=needed, kind="host")
                nodes.append(node)
                edges.append(DepEdge(owner.id, needed, node.id, _host_reason(host, needed)))
                known[needed] = (node, needed)
                continue
            acceptor = Acceptor(machine, elf_class)
            found = default_resolve(needed, owner.search, chain, search=search, host=None,
                                    acceptor=acceptor)
            tried = [str(c) for c in found.tried]
            if found.kind == "missing":
                node = DepNode(len(nodes), needed, None, kind="missing")
                nodes.append(node)
                edges.append(DepEdge(owner.id, needed, node.id, "not found", tried))
                known[needed] = (node, needed)
                continue
            if found.kind == "host":
                assert host is not None
                node = DepNode(len(nodes), needed, found.value.path, soname=needed,
                               kind="host")
                nodes.append(node)
                edges.append(DepEdge(owner.id, needed, node.id, _host_reason(host, needed)))
                known[needed] = (node, needed)
                continue
            src = found.source
            assert src is not None
            same = by_identity.get(src.identity)
            if same is not None:
                src.close()
                edges.append(DepEdge(owner.id, needed, same.id,
                                     f"{found.how}; same file as {same.name}", tried,
                                     first=False))
                known[needed] = (same, needed)
                continue
            node = DepNode(len(nodes), src.name, src.path, parent=owner)
            try:
                with ElfFile(src) as dep_elf:
                    _read(node, dep_elf)
            except RelinkError as exc:
                node.error = exc.message
            finally:
                src.close()
                acceptor.close()
            nodes.append(node)
            by_identity[src.identity] = node
            edges.append(DepEdge(owner.id, needed, node.id, found.how, tried))
            known[needed] = (node, needed)
            if node.soname:
                known.setdefault(node.soname, (node, node.soname))
            if node.error is None:
                queue.append(node)
    return DepGraph(nodes, edges)
