"""The ``relink`` command line (also ``python -m relink``).

CLI layer. Each subcommand lives in its own module ``relink/cli/<name>.py`` exposing
``register(subparsers) -> None``; the dispatcher imports the ones listed in `COMMANDS`
that exist. Errors from relink print one line (``relink: <file>: <what went wrong>``,
plus a hint when there is an obvious fix) and exit with status 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

COMMANDS = ("info", "deps", "call", "run", "plan", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relink",
        description="Load, link and inspect ELF files (shared objects, executables, "
                    "relocatable objects) from Python.")
    from relink import __version__

    parser.add_argument("--version", action="version", version=f"relink {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"relink.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"relink.cli.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    from relink.errors import RelinkError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RelinkError as exc:
        hint = getattr(exc, "hint", None)
        print(f"relink: {exc}", file=sys.stderr)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
