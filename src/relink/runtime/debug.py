"""Debuggability: what relink has mapped, and how a debugger can see it with symbols.

Runtime layer, stdlib only, imported when asked for (`relink.loaded_modules()`, gdb
support). glibc's debugger interface (``r_debug`` / ``link_map``) only lists what ld.so
loaded, so gdb sees relink's modules as anonymous code. Every `ModuleState` /
`ObjectState` registers itself when it is created (`track`, kept in `relink.runtime` so
a load does not import this module) and leaves when it is released; `loaded_modules()`
lists the live ones with their path, load bias and segments.

For gdb, ``relink/data/relink_gdb.py`` defines the command ``relink-symbols``, which runs
``add-symbol-file`` for each module with the right addresses: ``-o <load bias>`` for
shared objects and executables, ``-s <section> <address>`` for every placed section of
a relocatable object. It reads a JSON manifest this module keeps in
``<tmp>/relink-gdb-<pid>/manifest.json`` while gdb support is enabled (environment
variable ``RELINK_GDB=1`` at import, or `enable_gdb()`). Modules loaded from bytes have
no file, so their bytes are written beside the manifest for gdb to read.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from relink._record import FrozenRecord
from relink.runtime import _gdb, live_states, track

__all__ = ["LoadedModuleInfo", "enable_gdb", "gdb_commands", "gdb_script_path",
           "loaded_modules", "manifest_path", "track"]


class LoadedModuleInfo(FrozenRecord):
    """One module relink mapped.

    Attributes:
        name: file name (or the name given to a memory input).
        path: the file it was loaded from, None for bytes / fd inputs.
        base: load bias (runtime address = base + link-time address); for a relocatable
            object, the start of its region.
        segments: (runtime address, size, PROT_* flags) of each mapped segment.
        kind: "shared", "executable" or "object".
        arch: the ISA name.
        native: True when mapped in this process (False: a buffer / emulator space).
        state: lifecycle state (mapped, relocated, initialized…).
        sections: for relocatable objects, (section name, runtime address) pairs.
    """

    __slots__ = ("name", "path", "base", "segments", "kind", "arch", "native", "state",
                 "sections")
    name: str
    path: str | None
    base: int
    segments: list[tuple[int, int, int]]
    kind: str
    arch: str
    native: bool
    state: str
    sections: list[tuple[str, int]]

    def __init__(self, name: str, path: str | None, base: int,
                 segments: list[tuple[int, int, int]], kind: str, arch: str, native: bool,
                 state: str, sections: list[tuple[str, int]] | None = None) -> None:
        self._set(name, path, base, segments, kind, arch, native, state,
                  [] if sections is None else sections)


def _info(st: Any) -> LoadedModuleInfo:
    image: Any = st.image
    sections: list[tuple[str, int]] = []
    if hasattr(st, "sections") and hasattr(st, "region"):  # relocatable object unit
        kind = "object"
        segs = [(int(a), int(n), int(p)) for a, n, p in st.image.segments()]
        sections = [(str(s.name), int(s.address)) for s in st.sections]
        arch = str(st.spec.name)
        from relink.memory.host import HostRegion

        native = isinstance(st.region, HostRegion)
        path = st.path
    else:
        kind = "executable" if image.header.e_type == 2 else "shared"
        segs = [(int(a), int(n), int(p)) for a, n, p in image.segments()]
        arch = str(image.spec.name)
        native = bool(image.mapper.native)
        path = image.source.path
    return LoadedModuleInfo(name=str(st.name), path=str(path) if path else None,
                            base=int(st.base), segments=segs, kind=kind, arch=arch,
                            native=native, state=str(st.state), sections=sections)


def loaded_modules() -> list[LoadedModuleInfo]:
    """Every module relink has mapped and not released, in load order."""
    return [_info(s) for _, s in _open_states()]


def _open_states() -> list[tuple[int, Any]]:
    """(registration number, state) of the live states not closed, in load order."""
    return [(n, s) for n, s in live_states() if getattr(s, "state", "") != "closed"]


# -- gdb ----------------------------------------------------------------------------------

def gdb_script_path() -> str:
    """Path of the gdb extension (``source`` it in gdb, then run ``relink-symbols``)."""
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "relink_gdb.py")


def manifest_path(pid: int | None = None) -> str:
    """Where the manifest of process `pid` (default: this one) lives."""
    import tempfile  # lazily: keeps importing relink cheap

    return os.path.join(tempfile.gettempdir(), f"relink-gdb-{pid or os.getpid()}",
                        "manifest.json")


def enable_gdb(directory: str | None = None) -> str:
    """Keep the gdb manifest up to date from now on; returns its path."""
    d = directory or os.path.dirname(manifest_path())
    os.makedirs(d, mode=0o700, exist_ok=True)
    _gdb["dir"] = d
    _write_manifest()
    return os.path.join(d, "manifest.json")


def _symbol_file(st: Any, seq: int, directory: str) -> str | None:
    """A file gdb can read for `st`: its path, or its bytes dumped once."""
    path = getattr(st, "path", None)
    if path:
        return str(path)
    source = getattr(getattr(st, "image", None), "source", None)
    data = getattr(source, "data", None) if source is not None else None
    if data is None:
        return None
    out = os.path.join(directory, f"{seq}-{os.path.basename(st.name)}")
    if not os.path.exists(out):
        with open(out + ".tmp", "wb") as f:
            f.write(bytes(data))
        os.replace(out + ".tmp", out)
    return out


def gdb_commands(directory: str | None = None) -> list[str]:
    """The ``add-symbol-file`` commands that give gdb every native relink module."""
    d = directory or _gdb.get("dir") or os.path.dirname(manifest_path())
    cmds = []
    for seq, st in _open_states():
        info = _info(st)
        if not info.native:
            continue
        f = _symbol_file(st, seq, d) if info.kind != "object" else ""
        if f is None:
            continue
        if info.kind == "object":
            cmds.extend(_object_commands(st))
        else:
            cmds.append(f"add-symbol-file {f} -o {info.base:#x}")
    return cmds


def _object_commands(st: Any) -> list[str]:
    """One add-symbol-file per member object of a unit, placing each of its sections."""
    by_object: dict[str, list[tuple[str, int]]] = {}
    for sec in st.sections:
        by_object.setdefault(str(sec.object), []).append((str(sec.name), int(sec.address)))
    cmds = []
    for obj, secs in by_object.items():
        if not os.path.isfile(obj):
            continue  # an object given as bytes: gdb has no file to read
        text = next((a for n, a in secs if n == ".text"), None)
        head = f" {text:#x}" if text is not None else ""
        args = "".join(f" -s {n} {a:#x}" for n, a in secs if n != ".text")
        cmds.append(f"add-symbol-file {obj}{head}{args}")
    return cmds


def _write_manifest() -> None:
    d = _gdb.get("dir")
    if d is None:
        return
    import json

    try:
        modules = [{name: getattr(i, name) for name in i.__slots__}
                   for i in loaded_modules()]
        body = {"pid": os.getpid(), "modules": modules, "commands": gdb_commands(d)}
        tmp = os.path.join(d, f"manifest.json.{threading.get_ident()}")
        with open(tmp, "w") as f:
            json.dump(body, f, indent=1)
        os.replace(tmp, os.path.join(d, "manifest.json"))
    except OSError:
        pass  # debugging aid only: never fail a load because /tmp is unwritable


if os.environ.get("RELINK_GDB", "") not in ("", "0"):
    enable_gdb()
