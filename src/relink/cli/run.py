"""``relink run FILE [ARGS...]``: run a program with relink's own loader.

CLI layer over relink.runtime.exec. By default the program runs for real in a child
process (`relink.execute`: relink maps it and its interpreter, builds the initial stack
and auxv and jumps to the entry point) and ``relink run`` exits with the program's exit
status (128 + N when a signal N killed it, as shells report). ``--main`` instead calls
``main`` in this process (`relink.run_main`, with its COPY-relocation limit). ``-``
as FILE reads the program from standard input (it is mapped from memory, never written
to disk); options after FILE belong to the program.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run a program (in a child, as if exec'd) with relink's loader",
        description="Map FILE and its PT_INTERP with relink, build the initial stack and "
                    "auxv, and jump to the entry point in a forked child; exit with the "
                    "program's status. Static and static-pie programs work too.")
    p.add_argument("file", help="the program (a path, or - to read it from stdin)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    p.add_argument("--main", action="store_true",
                   help="call main() in this process instead (relink.run_main)")
    p.add_argument("--argv0", help="argv[0] to pass (default: FILE)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set an environment variable for the program (repeatable)")
    p.add_argument("--clear-env", action="store_true",
                   help="start from an empty environment (then apply --env)")
    p.add_argument("--emulate", action="store_true",
                   help="link FILE (any ISA unicorn runs) into a unicorn emulator and run "
                        "exit(main(argc, argv, envp)) there; the target's libraries come "
                        "from --sysroot-lib, its stdout/stderr are printed (needs "
                        "relink[emu]; environment: only --env values)")
    p.add_argument("--sysroot-lib", metavar="DIR", action="append", default=[],
                   help="with --emulate: a directory of target libraries (repeatable)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from relink.runtime.exec import execute, run_main

    source: Any
    if args.file == "-":
        source = sys.stdin.buffer.read()
        name = "<stdin>"
    else:
        source = args.file
        name = args.file
    argv = [args.argv0 or name, *args.args]
    env: dict[str, str] | None = None
    if args.env or args.clear_env:
        env = {} if args.clear_env else dict(os.environ)
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise SystemExit(f"relink run: --env needs NAME=VALUE, got {item!r}")
            env[key] = value
    if getattr(args, "emulate", False):
        return _run_emulated(source, argv, env if env is not None and args.env else {},
                             args.sysroot_lib, name)
    if args.main:
        if env is not None:
            raise SystemExit("relink run: --env/--clear-env cannot be used with --main "
                             "(main shares this process's environment)")
        return run_main(source, argv, name=None if args.file != "-" else name) & 0xFF
    status = execute(source, argv, env, name=None if args.file != "-" else name)
    return status if status >= 0 else 128 - status


def _run_emulated(source: Any, argv: list[str], env: dict[str, str], libdirs: list[str],
                  name: str) -> int:
    import relink
    from relink.arch import spec_for
    from relink.elf import ElfFile
    from relink.errors import UnsupportedError
    from relink.linker.search import SearchPathResolver
    from relink.memory.unicorn import Emulator
    from relink.runtime.emulator import run_main

    with ElfFile(source, name=name) as elf:
        spec = spec_for(elf.header.e_machine, elf.header.elf_class)
    if spec is None:
        raise UnsupportedError("no architecture spec for this file", file=name)
    emu = Emulator(spec, syscalls="linux")
    resolver = SearchPathResolver(fixed_dirs=tuple(libdirs), use_ld_cache=False)
    try:
        with relink.load(source, name=name if source is not name else None, memory=emu,
                         resolver=resolver) as prog:
            status = run_main(prog, argv, env)
    finally:
        sys.stdout.buffer.write(bytes(emu.syscalls.stdout))
        sys.stdout.flush()
        sys.stderr.buffer.write(bytes(emu.syscalls.stderr))
    return status
