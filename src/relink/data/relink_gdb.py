"""gdb extension for relink: give gdb the symbols of modules relink mapped.

glibc's debugger interface only lists what ld.so loaded, so code relink mapped shows up
in gdb as ``?? ()``. relink keeps a manifest of its live modules (enable it with
``RELINK_GDB=1`` in the debugged process's environment, or ``relink.runtime.debug.
enable_gdb()``); this file adds two gdb commands that read it:

    (gdb) source /path/to/relink/data/relink_gdb.py    # python -c "import relink.runtime
    (gdb) relink-modules                                #   .debug as d; print(d.gdb_script_path())"
    (gdb) relink-symbols [MANIFEST]

``relink-symbols`` runs ``add-symbol-file FILE -o LOAD_BIAS`` for each shared object or
executable (``-s SECTION ADDRESS`` per section for relocatable objects), for modules
loaded from bytes too (relink writes their bytes beside the manifest). Run it again after
more loads. The manifest of process PID is ``$TMPDIR/relink-gdb-PID/manifest.json``.
"""

from __future__ import annotations

import json
import os
import tempfile

import gdb

_added: set[str] = set()


def _manifest(arg: str) -> dict:
    path = arg.strip()
    if not path:
        pid = gdb.selected_inferior().pid
        if not pid:
            raise gdb.GdbError("relink: no running inferior (give the manifest path)")
        path = os.path.join(tempfile.gettempdir(), f"relink-gdb-{pid}", "manifest.json")
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise gdb.GdbError(f"relink: cannot read {path}: {e.strerror} (start the process "
                           "with RELINK_GDB=1 or call relink.runtime.debug.enable_gdb())"
                           ) from None


class RelinkModules(gdb.Command):
    """List the modules relink mapped: relink-modules [MANIFEST]."""

    def __init__(self) -> None:
        super().__init__("relink-modules", gdb.COMMAND_FILES)

    def invoke(self, arg: str, from_tty: bool) -> None:
        for m in _manifest(arg)["modules"]:
            segs = ", ".join(f"{a:#x}+{n:#x}" for a, n, _p in m["segments"])
            gdb.write(f"{m['name']:<28} {m['kind']:<10} base {m['base']:#x}  "
                      f"{m['path'] or '<memory>'}  [{segs}]\n")


class RelinkSymbols(gdb.Command):
    """Load symbols of every module relink mapped: relink-symbols [MANIFEST]."""

    def __init__(self) -> None:
        super().__init__("relink-symbols", gdb.COMMAND_FILES)

    def invoke(self, arg: str, from_tty: bool) -> None:
        commands = _manifest(arg)["commands"]
        confirm = gdb.parameter("confirm")
        gdb.execute("set confirm off")
        try:
            n = 0
            for cmd in commands:
                if cmd in _added:
                    continue
                gdb.execute(cmd, to_string=True)
                _added.add(cmd)
                n += 1
        finally:
            gdb.execute(f"set confirm {'on' if confirm else 'off'}")
        gdb.write(f"relink: added symbols of {n} module(s)\n")


RelinkModules()
RelinkSymbols()
