"""The error hierarchy of relink: every exception relink raises derives from `RelinkError`.

Errors are data: each carries structured attributes (the file, the relocation type by
name, the symbol, what was searched) and a readable one-line message, and OS failures
are chained with ``raise ... from``. Malformed input must surface as one of these, never
as ``KeyError``, ``IndexError``, ``struct.error`` or ``ctypes.ArgumentError``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ArchMismatchError",
    "DependencyError",
    "ElfParseError",
    "ExecutionError",
    "EmulationError",
    "InitializerError",
    "LinkerError",
    "MappingError",
    "PlanError",
    "RelinkError",
    "RelocationError",
    "RelocationOverflowError",
    "SymbolNotFoundError",
    "TlsError",
    "UnknownSymbolError",
    "UnresolvedDependencyError",
    "UnsupportedError",
    "UnsupportedRelocationError",
]


class RelinkError(Exception):
    """Base class of every error relink raises.

    Attributes:
        file: the path or name of the ELF input concerned, when known.
    """

    def __init__(self, message: str, *, file: str | None = None) -> None:
        self.file = file
        self.message = message
        super().__init__(f"{file}: {message}" if file else message)


class ElfParseError(RelinkError):
    """The input is not a well-formed ELF file (or not one relink can read).

    Attributes:
        what: the structure being read (``"ELF header"``, ``"program header 3"``, …).
        offset: the file offset or virtual address concerned, when known.
    """

    def __init__(
        self, message: str, *, file: str | None = None, what: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.what = what
        self.offset = offset
        text = f"{what}: {message}" if what else message
        super().__init__(text, file=file)


class ArchMismatchError(ElfParseError):
    """The file's machine or class is not the one this load targets.

    Attributes:
        expected: description of what was expected (``"x86_64 (EM_X86_64, ELF64)"``).
        actual: description of what the file is.
    """

    def __init__(self, message: str, *, file: str | None = None, expected: str = "",
                 actual: str = "") -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message, file=file, what="ELF header")


class UnsupportedError(RelinkError):
    """A valid ELF feature relink does not implement (it says which, never skips it)."""


class MappingError(RelinkError):
    """A memory operation (mmap, mprotect, munmap, open, read) failed.

    Attributes:
        op: the operation (``"mmap"``, ``"mprotect"`` …).
        errno: the OS error number, when the OS reported one.
        address: the address concerned, when known.
    """

    def __init__(self, message: str, *, file: str | None = None, op: str = "",
                 errno: int | None = None, address: int | None = None) -> None:
        self.op = op
        self.errno = errno
        self.address = address
        super().__init__(message, file=file)


class RelocationError(RelinkError):
    """A relocation could not be applied.

    Attributes:
        r_type: the relocation type number.
        r_type_name: its ABI name (``"R_X86_64_JUMP_SLOT"``).
        symbol: the symbol name referenced, if any.
        offset: the link-time address (r_offset) of the place.
        reason: a short reason (``"unknown symbol"``, ``"unsupported"``, …).
    """

    def __init__(self, reason: str, *, file: str | None = None, r_type: int | None = None,
                 r_type_name: str | None = None, symbol: str | None = None,
                 offset: int | None = None, detail: str | None = None) -> None:
        self.r_type = r_type
        self.r_type_name = r_type_name
        self.symbol = symbol
        self.offset = offset
        self.reason = reason
        parts = [f"relocation {r_type_name or r_type}"]
        if symbol:
            parts.append(f"symbol '{symbol}'")
        if offset is not None:
            parts.append(f"at 0x{offset:x}")
        text = ", ".join(parts) + f": {reason}"
        if detail:
            text += f" ({detail})"
        super().__init__(text, file=file)


class UnknownSymbolError(RelocationError):
    """A relocation references a symbol that no module in scope defines.

    Attributes:
        searched: names of the modules searched, in order.
        version: the symbol version required, if any.
    """

    def __init__(self, *, file: str | None = None, r_type: int | None = None,
                 r_type_name: str | None = None, symbol: str | None = None,
                 offset: int | None = None, searched: Sequence[str] = (),
                 version: str | None = None) -> None:
        self.searched = list(searched)
        self.version = version
        sym = f"{symbol}@{version}" if version else symbol
        where = ", ".join(self.searched) if self.searched else "nothing"
        super().__init__("unknown symbol", file=file, r_type=r_type, r_type_name=r_type_name,
                         symbol=sym, offset=offset, detail=f"searched: {where}")
        self.symbol = symbol


class UnsupportedRelocationError(RelocationError):
    """A relocation type that relink (or this architecture spec) does not handle."""

    def __init__(self, *, file: str | None = None, r_type: int | None = None,
                 r_type_name: str | None = None, symbol: str | None = None,
                 offset: int | None = None, detail: str | None = None) -> None:
        super().__init__("unsupported relocation type", file=file, r_type=r_type,
                         r_type_name=r_type_name, symbol=symbol, offset=offset, detail=detail)


class RelocationOverflowError(RelocationError):
    """A relocated value does not fit its field (never wrapped silently).

    Attributes:
        value: the computed value.
        bits: the field width.
    """

    def __init__(self, *, file: str | None = None, r_type: int | None = None,
                 r_type_name: str | None = None, symbol: str | None = None,
                 offset: int | None = None, value: int = 0, bits: int = 0,
                 signed: bool = True) -> None:
        self.value = value
        self.bits = bits
        kind = "signed" if signed else "unsigned"
        super().__init__("value does not fit", file=file, r_type=r_type,
                         r_type_name=r_type_name, symbol=symbol, offset=offset,
                         detail=f"{value:#x} is not a {kind} {bits}-bit value")


class SymbolNotFoundError(RelinkError, LookupError):
    """``Module.function``/``variable`` asked for a symbol the module does not export.

    Attributes:
        symbol: the name asked for.
        version: the version asked for, if any.
    """

    def __init__(self, symbol: str, *, file: str | None = None,
                 version: str | None = None) -> None:
        self.symbol = symbol
        self.version = version
        sym = f"{symbol}@{version}" if version else symbol
        super().__init__(f"symbol '{sym}' not found", file=file)


class LinkerError(RelinkError):
    """A failure of the linking layer (dependency graph, contexts, scopes)."""


class DependencyError(LinkerError):
    """A dependency could not be loaded for a reason other than not being found."""


class VersionNotFoundError(DependencyError):
    """A dependency lacks a symbol version the module requires (ld.so's "version `V' not
    found (required by M)").

    Attributes:
        version: the version name required (DT_VERNEED).
        needed: the file that must define it (the verneed's file name).
        required_by: the requiring module.
    """

    def __init__(self, version: str, *, needed: str, required_by: str) -> None:
        self.version = version
        self.needed = needed
        self.required_by = required_by
        super().__init__(f"version `{version}' not found in {needed} (required by "
                         f"{required_by})", file=required_by)


class UnresolvedDependencyError(LinkerError):
    """A DT_NEEDED entry could not be found anywhere.

    Attributes:
        needed: the DT_NEEDED name.
        needed_by: the module that needs it.
        searched: every path tried, with the reason it was tried.
    """

    def __init__(self, needed: str, *, needed_by: str | None,
                 searched: Sequence[str] = ()) -> None:
        self.needed = needed
        self.needed_by = needed_by
        self.searched = list(searched)
        tried = "; ".join(self.searched) if self.searched else "no search path applied"
        super().__init__(
            f"cannot find '{needed}' needed by {needed_by or '<root>'} (tried: {tried})",
            file=needed_by,
        )


class InitializerError(RelinkError):
    """An initializer or finalizer could not run (the module is left in FAILED state)."""


class TlsError(RelinkError):
    """Thread-local storage could not be set up for a module.

    Attributes:
        tunable: the glibc tunable that raises the limit, when that is the fix.
    """

    def __init__(self, message: str, *, file: str | None = None,
                 tunable: str | None = None) -> None:
        self.tunable = tunable
        super().__init__(message, file=file)


class PlanError(RelinkError):
    """A scan-first plan cannot be honoured (relink.plan): a pass asked for something the
    module's capability does not allow, a placement does not fit, or a moved section could
    not be repaired. Raised before anything is mapped.

    Attributes:
        module: the module (file name) concerned, when known.
        section: the section name concerned, when known.
    """

    def __init__(self, message: str, *, file: str | None = None, module: str | None = None,
                 section: str | None = None) -> None:
        self.module = module
        self.section = section
        where = f"section {section}: " if section else ""
        super().__init__(where + message, file=file or module)


class EmulationError(RelinkError):
    """Target code run inside an emulator (foreign ISA) faulted or did not return.

    Attributes:
        arch: the emulated ISA.
        pc: the program counter when emulation stopped, when known.
        address: the faulting memory address, when the fault was a memory access.
    """

    def __init__(self, message: str, *, file: str | None = None, arch: str = "",
                 pc: int | None = None, address: int | None = None) -> None:
        self.arch = arch
        self.pc = pc
        self.address = address
        super().__init__(message, file=file)


class ExecutionError(RelinkError):
    """A program could not be started by `relink.execute` (the child never reached the
    program's entry point), or `relink.run_main` could not find ``main``.

    Attributes:
        syscall: the system call that failed in the child (``"rt_sigaction"`` …), if any.
        errno: its error number, if any.
    """

    def __init__(self, message: str, *, file: str | None = None, syscall: str | None = None,
                 errno: int | None = None) -> None:
        self.syscall = syscall
        self.errno = errno
        super().__init__(message, file=file)
