"""``relink call FILE SYMBOL [ARGS...]``: load a file with relink and call one function.

CLI layer. Arguments are typed by their look (``42``, ``0x10`` -> int; ``1.5`` -> double;
anything else -> a C string) or explicitly with a prefix (``int:``, ``long:``, ``uint:``,
``double:``, ``float:``, ``str:``, ``ptr:``). ``--returns`` picks the return type (default
int). The function runs in this process: only call code you trust (like dlopen).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import sys
from typing import Any

__all__ = ["CTYPES", "parse_arg", "register"]

CTYPES: dict[str, Any] = {
    "int": ctypes.c_int, "uint": ctypes.c_uint, "long": ctypes.c_long,
    "ulong": ctypes.c_ulong, "int64": ctypes.c_int64, "uint64": ctypes.c_uint64,
    "double": ctypes.c_double, "float": ctypes.c_float, "str": ctypes.c_char_p,
    "ptr": ctypes.c_void_p, "void": None, "char": ctypes.c_char, "bool": ctypes.c_bool,
}


def register(sub: Any) -> None:
    p = sub.add_parser("call", help="load FILE with relink and call SYMBOL with ARGS",
                       description="Load FILE (and its dependencies) with relink, call SYMBOL "
                                   "with ARGS in this process and print the result.")
    p.add_argument("file", help="shared object (or object / archive)")
    p.add_argument("symbol", help="function to call")
    p.add_argument("args", nargs="*", help="arguments: 42, 0x2a, 1.5, text, or typed as "
                   "int:/long:/uint:/double:/float:/str:/ptr:VALUE")
    p.add_argument("--returns", "-r", default="int", choices=sorted(CTYPES),
                   help="return type (default: int)")
    p.add_argument("--version-of", metavar="VERSION", dest="version",
                   help="call the definition of this symbol version (like dlvsym)")
    p.add_argument("--emulate", action="store_true",
                   help="load FILE (any ISA unicorn runs: x86, x86_64, aarch64, arm, "
                        "riscv32, riscv64) into a unicorn emulator and call SYMBOL there; "
                        "integer, pointer and string arguments only (needs relink[emu])")
    p.add_argument("--sysroot-lib", metavar="DIR", action="append", default=[],
                   help="with --emulate: a directory of target libraries searched for "
                        "DT_NEEDED (e.g. /usr/aarch64-linux-gnu/lib for the target's "
                        "glibc); the emulator then answers libc's system calls and "
                        "prints what the target wrote to stdout (repeatable)")
    p.set_defaults(func=run)


def parse_arg(text: str) -> tuple[Any, Any]:
    """(ctypes type, value) for one command-line argument."""
    kind, sep, value = text.partition(":")
    if sep and kind in CTYPES and kind != "void":
        ctype = CTYPES[kind]
        if kind == "str":
            return ctype, value.encode()
        if kind in ("double", "float"):
            return ctype, float(value)
        return ctype, int(value, 0)
    try:
        return ctypes.c_long, int(text, 0)
    except ValueError:
        pass
    try:
        return ctypes.c_double, float(text)
    except ValueError:
        return ctypes.c_char_p, text.encode()


def _format(value: Any, returns: str) -> str:
    if returns == "void":
        return "(void)"
    if isinstance(value, bytes):
        return repr(value.decode("utf-8", "replace"))
    if returns == "ptr":
        return f"{value or 0:#x}"
    return str(value)


def _load(path: str, symbol: str | None = None) -> Any:
    with open(path, "rb") as f:
        head = f.read(18)
    if head.startswith(b"!<arch>\n") or (head[:4] == b"\x7fELF" and head[16] == 1):
        try:
            load_object = importlib.import_module("relink.object").load_object
        except (ImportError, AttributeError) as exc:
            from relink.errors import UnsupportedError

            raise UnsupportedError("relocatable objects and archives need relink.object, "
                                   "which is not available", file=path) from exc
        # ld -u SYMBOL: from an archive, pull in just the member defining it
        return load_object(path, undefined=[symbol] if symbol else [])
    import relink

    return relink.load(path)


def _load_emulated(path: str, libdirs: list[str] | None = None) -> Any:
    import relink
    from relink.elf import ElfFile
    from relink.memory.unicorn import Emulator

    with ElfFile(path) as elf:
        machine, elf_class = elf.header.e_machine, elf.header.elf_class
        is_object = elf.header.e_type == 1  # ET_REL: linked by relink.object
    from relink.arch import spec_for

    spec = spec_for(machine, elf_class)
    if spec is None:
        from relink.errors import UnsupportedError

        raise UnsupportedError(f"no architecture spec for e_machine {machine}", file=path)
    if is_object:
        return relink.load_object(path, mapper=Emulator(spec))
    if libdirs:
        from relink.linker.search import SearchPathResolver

        emu = Emulator(spec, syscalls="linux")
        return relink.load(path, memory=emu, resolver=SearchPathResolver(
            fixed_dirs=tuple(libdirs), use_ld_cache=False))
    return relink.load(path, memory=Emulator(spec))


def _emulated_output(module: Any) -> None:
    """Flush a target libc's stdio in the emulator and print what the target wrote."""
    state = getattr(module, "_state", None)
    emu: Any = getattr(getattr(state, "image", None), "mapper", None)
    syscalls = getattr(emu, "syscalls", None)
    if syscalls is None:
        return
    for dep in module.dependencies:
        fflush = dep.symbol("fflush") if dep.name.startswith("libc.so") else None
        if fflush:
            emu.call(fflush, 0)
    if syscalls.stdout:
        sys.stdout.write(bytes(syscalls.stdout).decode("utf-8", "replace"))
        syscalls.stdout.clear()


def run(args: argparse.Namespace) -> int:
    parsed = [parse_arg(a) for a in args.args]
    module = _load_emulated(args.file, getattr(args, "sysroot_lib", None)) \
        if getattr(args, "emulate", False) else _load(args.file, args.symbol)
    try:
        fn = module.function(args.symbol, CTYPES[args.returns], *(t for t, _ in parsed),
                             version=args.version)
        result = fn(*(v for _, v in parsed))
        _emulated_output(module)
        sys.stdout.write(_format(result, args.returns) + "\n")
    finally:
        module.close()
    return 0
