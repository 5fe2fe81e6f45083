"""What scripts/fuzz.py runs on every mutant: the parsing and non-executing paths of relink.

Targets (each takes the mutant's bytes; a `RelinkError` is an accepted outcome, any other
exception is a finding):

* ``parse``  — `relink.ElfFile` and every table behind it: headers, sections and their
  data, PT_INTERP, the dynamic section, symbols (export dicts, GNU and SysV hash walks),
  versions, REL/RELA/RELR tables, notes;
* ``info``   — ``relink info`` through `relink.cli.main` (when the CLI module exists);
* ``deps``   — ``relink deps`` through `relink.cli.main` (when the CLI module exists);
* ``scan``   — `relink.scan`, the scan-first dependency/section plan (when it exists);
* ``plan``   — ``relink plan`` (scan plus the section layout report);
* ``load``   — `relink.load` into a `BufferMapper` (virtual memory: maps and relocates, runs
  nothing), from bytes and from an fd (memfd), with ``init=True`` to prove that even a
  request to initialize does not execute anything;
* ``object`` — `relink.load_object` (relocatable objects) into a `BufferMapper`;
* ``native`` — opt-in only: `relink.load` into this process with ``init=False`` under
  `native_guards` (no target code runs): malformed images against the real HostMapper.

Under `guards()`, any attempt to create host-executable memory or to run target code
raises `SafetyViolation` (a BaseException, so no ``except Exception`` can hide it).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

import relink  # noqa: E402
from relink.memory.buffer import BufferMapper  # noqa: E402

__all__ = ["SafetyViolation", "Targets", "guards", "native_guards"]

LOOKUP_NAMES = ("malloc", "answer", "seed_add", "seed_ver", "zlibVersion", "", "\udcff")
ALL = ("parse", "info", "deps", "scan", "plan", "load", "object")
# How often each target is picked: parsing and loading are the widest attack surface.
WEIGHTS = {"parse": 3, "load": 3, "info": 1, "deps": 1, "scan": 1, "plan": 1, "object": 1,
           "native": 1}
BUFFER_LIMIT = 64 << 20  # the fuzzer's virtual images stay small (see BufferMapper)


class SafetyViolation(BaseException):
    """A non-executing path tried to map executable host memory or to run target code."""


@contextlib.contextmanager
def guards() -> Iterator[None]:
    """While active, PROT_EXEC host mappings and native calls into loaded code raise
    `SafetyViolation`. Restores everything on exit (the test suite shares the process)."""
    from relink.runtime import executor as ex
    from relink.runtime import libc as c

    real_mmap, real_mprotect = c.mmap, c.mprotect
    real_calls = {n: getattr(ex.NativeExecutor, n)
                  for n in ("call_ifunc", "call_init", "call_fini")}

    def mmap(addr: Any, size: int, prot: int, *rest: Any) -> Any:
        if prot & c.PROT_EXEC:
            raise SafetyViolation(f"mmap with PROT_EXEC ({prot:#x})")
        return real_mmap(addr, size, prot, *rest)

    def mprotect(addr: Any, size: int, prot: int) -> Any:
        if prot & c.PROT_EXEC:
            raise SafetyViolation(f"mprotect with PROT_EXEC ({prot:#x})")
        return real_mprotect(addr, size, prot)

    def refuse(self: Any, *args: Any) -> Any:
        raise SafetyViolation("NativeExecutor called during a non-executing operation")

    c.mmap, c.mprotect = mmap, mprotect  # type: ignore[assignment]
    for name in real_calls:
        setattr(ex.NativeExecutor, name, refuse)
    try:
        yield
    finally:
        c.mmap, c.mprotect = real_mmap, real_mprotect
        for name, fn in real_calls.items():
            setattr(ex.NativeExecutor, name, fn)


@contextlib.contextmanager
def native_guards() -> Iterator[None]:
    """For the opt-in ``native`` target: mutants are mapped and relocated in this process,
    but no code of theirs may run — the native executor refuses (an UnsupportedError, an
    accepted outcome), so a crash can only be relink writing where it must not."""
    from relink.errors import UnsupportedError
    from relink.runtime import executor as ex

    real_calls = {n: getattr(ex.NativeExecutor, n)
                  for n in ("call_ifunc", "call_init", "call_fini")}

    def refuse(self: Any, *args: Any) -> Any:
        raise UnsupportedError("the native fuzz target runs no target code")

    for name in real_calls:
        setattr(ex.NativeExecutor, name, refuse)
    try:
        yield
    finally:
        for name, fn in real_calls.items():
            setattr(ex.NativeExecutor, name, fn)


def _optional(module: str, attr: str | None = None) -> Any:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, attr, None) if attr else mod


class Targets:
    """The target set, built once per worker (memfd, host policy, resolver)."""

    def __init__(self, names: tuple[str, ...] = ALL) -> None:
        from relink.linker.search import SearchPathResolver
        from relink.runtime.host import HostPolicy

        self.memfd = os.memfd_create("relink-fuzz", os.MFD_CLOEXEC)
        self.path = f"/proc/self/fd/{self.memfd}"
        # Only the already-loaded libc and ld.so are served by the host; nothing is dlopened,
        # and no system directory is searched (a fuzzed RUNPATH still is).
        self.host = HostPolicy(("libc.so.6", "ld-linux*.so*"), serve_loaded=False)
        self.resolver = SearchPathResolver(use_ld_cache=False, use_default_dirs=False)
        # The CLI's parser is built once (building it imports every subcommand); each run
        # then does what `relink.cli.main` does, minus printing a RelinkError.
        build = _optional("relink.cli", "build_parser")
        self.parser = build() if build is not None else None
        self.scan = _optional("relink.plan.scan", "scan")
        self.load_object = _optional("relink.object.loader", "load_object")
        cli = self.parser is not None
        needs = {"info": cli and _optional("relink.cli.info"),
                 "deps": cli and _optional("relink.cli.deps"),
                 "plan": cli and _optional("relink.cli.plan"),
                 "scan": self.scan, "object": self.load_object}
        self.available: dict[str, Callable[[bytes, int], None]] = {}
        table = {"parse": self.parse, "info": self.info, "deps": self.deps,
                 "scan": self.run_scan, "plan": self.plan, "load": self.load,
                 "object": self.run_object,
                 "native": self.native}
        for name in names:
            if name in needs and needs[name] is None:
                continue
            self.available[name] = table[name]

    def close(self) -> None:
        os.close(self.memfd)

    def _to_memfd(self, data: bytes) -> None:
        os.ftruncate(self.memfd, 0)
        os.pwrite(self.memfd, data, 0)

    def run(self, data: bytes, variant: int, which: str | None = None) -> None:
        """Run one target (`which`) or every available target on `data`.

        `variant` bits pick the input form and options: bit 0 fd/path instead of bytes,
        bit 1 JSON output / bytes for scan, bit 2 ``init=True`` / ``missing_ok``.
        """
        names = [which] if which is not None else list(self.available)
        if variant & 1 or {"info", "deps", "scan", "plan"} & set(names):
            self._to_memfd(data)
        for name in names:
            self.available[name](data, variant)

    # -- targets ------------------------------------------------------------------------

    def parse(self, data: bytes, variant: int) -> None:
        with relink.ElfFile(data, name="fuzz.so") as elf:
            _ = elf.header.machine_name, elf.header.type_name, elf.phdrs
            for sh in elf.sections:
                elf.section_data(sh)
            elf.section(".dynsym")
            _ = elf.interp
            dyn = elf.dynamic
            if dyn is not None:
                _ = dyn.static_tls, dyn.nodelete, dyn.needed
            syms = elf.symbols
            if syms is not None:
                exports = syms.exports
                _ = syms.versioned
                names = list(LOOKUP_NAMES) + list(exports)[:16]
                for name in names:
                    syms.find(name)
                    syms.find(name, "SEED_1")
                    syms.gnu_lookup(name)
                    syms.sysv_lookup(name)
                for i in range(min(syms.count, 64)):
                    syms.versions.requirement(i)
            elf.relocation_tables()
            from relink.elf.notes import describe_note

            for note in elf.notes():
                describe_note(note)
            if any(ph.p_type == 1 for ph in elf.phdrs):
                from relink.elf import check_segments

                check_segments(elf.phdrs, elf.source.size, elf.label, 0x1000)

    def info(self, data: bytes, variant: int) -> None:
        self._cli(["info", self.path, *(["--json"] if variant & 2 else [])])

    def deps(self, data: bytes, variant: int) -> None:
        opts = ["--json"] if variant & 2 else ["--dot"] if variant & 4 else []
        # --no-host: the fuzzed names are resolved from files only, never dlopened.
        self._cli(["deps", "--no-host", *opts, self.path])

    def plan(self, data: bytes, variant: int) -> None:
        opts = ["--json"] if variant & 2 else ["--all-sections"] if variant & 4 else []
        self._cli(["plan", *opts, self.path])

    def _cli(self, argv: list[str]) -> None:
        assert self.parser is not None
        args = self.parser.parse_args(argv)
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            args.func(args)

    def run_scan(self, data: bytes, variant: int) -> None:
        assert self.scan is not None
        plan = self.scan(data if variant & 2 else self.path, name="fuzz.so", host=self.host,
                         resolver=self.resolver, missing_ok=bool(variant & 4))
        close = getattr(plan, "close", None)
        if close is not None:
            close()

    def native(self, data: bytes, variant: int) -> None:
        """Opt-in (``--native``): map and relocate the mutant in this process, run nothing."""
        from relink.linker.context import LinkContext

        mod = relink.load(data, name="fuzz.so", host=self.host, resolver=self.resolver,
                          init=False, context=LinkContext("fuzz-native"))
        mod.close()

    def run_object(self, data: bytes, variant: int) -> None:
        assert self.load_object is not None
        # Every undefined name resolves to a fake address: relocation proceeds (nothing
        # runs, so the address is never called).
        mod = self.load_object(data, name="fuzz.o", mapper=BufferMapper(max_size=BUFFER_LIMIT),
                               init=bool(variant & 4), resolve=lambda name: 0x5000_0000)
        try:
            for name in LOOKUP_NAMES[:5]:
                mod.symbol(name)
        finally:
            mod.close()

    def load(self, data: bytes, variant: int) -> None:
        mapper = BufferMapper(max_size=BUFFER_LIMIT)
        source: Any = os.dup(self.memfd) if variant & 1 else data
        try:
            mod = relink.load(source, name="fuzz.so", mapper=mapper, host=self.host,
                              resolver=self.resolver, init=bool(variant & 4))
        finally:
            if variant & 1:
                os.close(source)
        try:
            _ = mod.segments, mod.needed, mod.entry
            for name in LOOKUP_NAMES[:5]:
                mod.symbol(name)
        finally:
            mod.close()
