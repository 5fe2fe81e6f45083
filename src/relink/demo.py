"""The built-in example: a leaf -> middle -> base chain of shared objects.

Used by ``relink demo`` and by the benchmarks. `build_chain` compiles three small C
libraries with the system C compiler (cc / gcc, found on PATH) into a directory, each
with a SONAME and an ``$ORIGIN`` runpath, so ``libleaf.so`` pulls in the other two the
way a real plugin pulls in its dependencies. ``leaf_value()`` returns 3.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from relink.errors import RelinkError

__all__ = ["CHAIN_SOURCES", "build_chain", "find_cc", "uniquify"]

CHAIN_SOURCES: dict[str, str] = {
    "base": r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int base_counter = 0;
int base_value(void) { return 1; }
int base_describe(char *out, int n) {
    char *tmp = malloc(64);
    snprintf(tmp, 64, "base:%d", base_counter);
    int len = (int)strlen(tmp);
    strncpy(out, tmp, n);
    free(tmp);
    return len;
}
""",
    "middle": r"""
extern int base_value(void);
extern int base_counter;
static int (*const table[])(void) = { base_value };
int *counter_ref = &base_counter;
int middle_ready;
__attribute__((constructor)) static void middle_init(void) { middle_ready = 1; }
int middle_value(void) { *counter_ref += 1; return table[0]() + middle_ready; }
""",
    "leaf": r"""
extern int middle_value(void);
int leaf_value(void) { return middle_value() + 1; }
""",
}
_DEPS = {"base": [], "middle": ["base"], "leaf": ["middle", "base"]}


def find_cc() -> str:
    """The system C compiler (``$CC``, cc or gcc), or a RelinkError saying how to get one."""
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    raise RelinkError("no C compiler found (install gcc: apt-get install gcc)")


def build_chain(directory: str | os.PathLike[str] | None = None, *, suffix: str = "") -> Path:
    """Compile the chain into `directory` (default: a cache dir) and return it.

    Args:
        suffix: appended to every library name and SONAME (``libleaf{suffix}.so``), so
            several copies can be loaded side by side by dlopen, which matches by SONAME.
    """
    cc = find_cc()
    key = hashlib.sha256(repr((sorted(CHAIN_SOURCES.items()), suffix, cc)).encode()).hexdigest()
    if directory is None:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "relink"
        directory = root / f"demo-{key[:12]}"
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if (out / f"libleaf{suffix}.so").exists() and (out / ".stamp").read_text() == key \
            if (out / ".stamp").exists() else False:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("base", "middle", "leaf"):
            src = Path(tmp) / f"{name}.c"
            src.write_text(CHAIN_SOURCES[name])
            lib = f"lib{name}{suffix}.so"
            cmd = [cc, "-shared", "-fPIC", "-O2", "-o", str(out / lib), str(src),
                   f"-Wl,-soname,{lib}", "-Wl,-rpath,$ORIGIN", f"-L{out}"]
            cmd += [f"-l:lib{d}{suffix}.so" for d in _DEPS[name]]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise RelinkError(f"compiling the demo chain failed: {' '.join(cmd)}\n"
                                  f"{proc.stderr.strip()}")
    (out / ".stamp").write_text(key)
    return out


def uniquify(directory: Path, dest: Path, tag: str) -> Path:
    """Copy a chain built with ``suffix="_0000"`` into `dest`, renamed to ``_<tag>``.

    Every ``_0000.so`` in the files (names, SONAMEs, DT_NEEDED) becomes ``_<tag>.so``
    (same length), so glibc's dlopen sees distinct SONAMEs: it silently reuses a loaded
    object whose SONAME matches. `tag` must be 4 characters. Returns the new leaf.
    """
    if len(tag) != 4:
        raise ValueError("tag must be 4 characters")
    dest.mkdir(parents=True, exist_ok=True)
    new = f"_{tag}.so".encode()
    for name in ("base", "middle", "leaf"):
        data = (directory / f"lib{name}_0000.so").read_bytes().replace(b"_0000.so", new)
        (dest / f"lib{name}_{tag}.so").write_bytes(data)
    return dest / f"libleaf_{tag}.so"
