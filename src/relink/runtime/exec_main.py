"""In-process executables: `run_main` calls a loaded program's ``main``.

Runtime layer, native x86_64 Linux only (design.md decision 8, feasibility §6); the
public names are re-exported by relink.runtime.exec and ``relink``.

`run_main(source, argv)` loads a PIE or ET_EXEC program with `relink.load` (ET_EXEC at
its fixed address, MAP_FIXED_NOREPLACE: a clash is a MappingError; COPY relocations
applied), finds ``main`` through ``.dynsym`` or, failing that, ``.symtab``, calls
``main(argc, argv, environ)`` through a machine-code stub, flushes C stdio, unloads the
program and returns what main returned. Its limit: a COPY relocation against data of a
host library (``stdout``, ``optind``, ``environ``…) gives the program a private copy
that the host libc never sees, so state libc updates later (``getopt``'s ``optind``, a
reassigned ``stdout``) is not shared; data of relink-loaded libraries is shared
correctly (their references bind to the program's copy). ``exit()``/``_exit()`` called
by main's thread return to `run_main` with the status (relink's exit hooks, machine
code below); a non-PIE program's ``atexit`` handlers are left registered with libc.

The input helpers at the top are shared with `execute` (relink.runtime.exec).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from relink.elf import ElfFile
from relink.elf.source import SourceLike, open_source
from relink.errors import ElfParseError, ExecutionError, UnsupportedError

__all__ = ["find_main", "program_argv", "program_envp", "read_input", "run_main"]

ET_EXEC, ET_DYN = 2, 3
STT_FUNC, SHT_SYMTAB, SHN_UNDEF = 2, 2, 0


# -- inputs ---------------------------------------------------------------------------

def read_input(source: SourceLike, name: str | None) -> tuple[str | None, bytes | None,
                                                              str]:
    """(path, bytes, display name): a path stays a path, anything else becomes bytes."""
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        return path, None, os.path.basename(path)
    if isinstance(source, bytes | bytearray | memoryview):
        return None, bytes(source), name or "<memory>"
    src = open_source(source, name=name)
    try:
        data = bytes(src.data)
    finally:
        src.close()
    return None, data, name or src.name


def program_argv(argv: Sequence[str | bytes] | None, default: str) -> list[bytes]:
    args = list(argv) if argv else [default]
    return [a if isinstance(a, bytes) else os.fsencode(a) for a in args]


def program_envp(env: Mapping[str, str] | Mapping[bytes, bytes] | None) -> list[bytes]:
    items = os.environb.items() if env is None else env.items()
    out = []
    for k, v in items:
        kb = k if isinstance(k, bytes) else os.fsencode(k)
        vb = v if isinstance(v, bytes) else os.fsencode(v)
        if b"=" in kb or b"\0" in kb or b"\0" in vb:
            raise ValueError(f"illegal environment variable name or value: {kb!r}")
        out.append(kb + b"=" + vb)
    return out


# -- main -----------------------------------------------------------------------------

def _symtab_function(elf: ElfFile, wanted: str) -> int | None:
    """Link-time address of defined function `wanted` in ``.symtab``, or None."""
    target = wanted.encode() + b"\0"
    for sh in elf.sections:
        if sh.sh_type != SHT_SYMTAB:
            continue
        if sh.sh_entsize not in (0, 24) or sh.sh_link >= len(elf.sections):
            raise ElfParseError("malformed .symtab header (entry size or string table "
                                "link)", file=elf.label, what=f"section {sh.index}")
        strtab = elf.section_data(elf.sections[sh.sh_link])
        data = elf.section_data(sh)
        for off in range(0, len(data) - len(data) % 24, 24):
            st_name, st_info, _other, shndx, value, _size = struct.unpack_from(
                "<IBBHQQ", data, off)
            if st_info & 0xF != STT_FUNC or shndx == SHN_UNDEF:
                continue
            if bytes(strtab[st_name:st_name + len(target)]) == target:
                return int(value)
    return None


def find_main(module: Any, source: SourceLike | None = None) -> int:
    """The runtime address of ``main`` in a loaded program: its ``.dynsym`` export
    (``-rdynamic``), else its ``.symtab`` (read from `source`, or the module's path).

    Raises:
        ExecutionError: main is in neither table (a stripped program).
    """
    addr = module.symbol("main")
    if addr:
        return int(addr)
    where = source if source is not None else module.path
    if where is None:
        raise ExecutionError("cannot find main: it is not exported and the program's "
                             "bytes are not available to read .symtab", file=module.name)
    with ElfFile(where, name=module.name) as elf:
        value = _symtab_function(elf, "main")
    if value is None:
        raise ExecutionError("cannot find main in .dynsym or .symtab (stripped program? "
                             "link with -rdynamic or keep the symbol table)",
                             file=module.name)
    return int(module.base) + value


# Assembled from (GNU as, AT&T; 0x4444… = the jump buffer [rsp, thread pointer],
# 0x5555… = exit, 0x6666… = _exit; patched at first use):
#
#   call_main:                        # u64 call_main(main, argc, argv, envp)
#       push %rbp; push %rbx; push %r12; push %r13; push %r14; push %r15
#       sub  $8, %rsp                 # 16-byte alignment for the call
#       movabs $0x4444444444444444, %rax
#       mov  %rsp, 0(%rax)            # where exit() comes back to
#       mov  %fs:0, %r8               # ... and on which thread
#       mov  %r8, 8(%rax)
#       mov  %rdi, %rax
#       mov  %esi, %edi
#       mov  %rdx, %rsi
#       mov  %rcx, %rdx
#       call *%rax                    # main(argc, argv, envp)
#       mov  %eax, %eax               # zero-extend main's int: bit 32 clear
#   1:  movabs $0x4444444444444444, %rcx
#       movq $0, 0(%rcx)              # no main running any more
#       movq $0, 8(%rcx)
#       add  $8, %rsp
#       pop %r15; pop %r14; pop %r13; pop %r12; pop %rbx; pop %rbp
#       ret
#   exit_hook:                        # what the program's exit(status) binds to
#       movabs $0x4444444444444444, %rax
#       mov  0(%rax), %rcx
#       test %rcx, %rcx               # no main running: the real exit
#       jz   2f
#       mov  %fs:0, %rdx
#       cmp  8(%rax), %rdx            # another thread: the real exit
#       jne  2f
#       mov  %rcx, %rsp               # unwind main's frames (C only, like longjmp)
#       mov  %edi, %eax
#       bts  $32, %rax                # status with bit 32: "exited"
#       jmp  1b
#   2:  movabs $0x5555555555555555, %rax
#       jmp  *%rax
#   _exit_hook:                       # the same for _exit / _Exit (0x6666…)
_CALL_MAIN = bytes.fromhex(
    "555341544155415641574883ec0848b84444444444444444488920644c8b0425000000004c8940"
    "084889f889f74889d64889caffd089c048b9444444444444444448c7010000000048c741080000"
    "00004883c408415f415e415d415c5b5dc348b84444444444444444488b084885c9741b64488b14"
    "2500000000483b5008750c4889cc89f8480fbae820ebab48b85555555555555555ffe048b84444"
    "444444444444488b084885c9741e64488b142500000000483b5008750f4889cc89f8480fbae820"
    "e96fffffff48b86666666666666666ffe0")
_EXIT_HOOK_AT, _UNDERSCORE_EXIT_HOOK_AT = 0x5F, 0x98
_main_lock = threading.Lock()
_main_owner: list[int] = []
_main_stub: list[Any] = []


def _main_runner() -> tuple[Any, int, int]:
    """(call_main, address of the exit hook, address of the _exit hook)."""
    if not _main_stub:
        from relink.runtime import libc
        from relink.runtime.exec_code import code_page

        jump_buffer = (ctypes.c_uint64 * 2)()
        code = _CALL_MAIN.replace(struct.pack("<Q", 0x4444444444444444),
                                  struct.pack("<Q", ctypes.addressof(jump_buffer)))
        for mark, func in ((0x5555555555555555, "exit"), (0x6666666666666666, "_exit")):
            addr = ctypes.cast(getattr(libc.libc, func), ctypes.c_void_p).value or 0
            code = code.replace(struct.pack("<Q", mark), struct.pack("<Q", addr))
        page = code_page(code)
        _main_stub.extend([libc.CALL_MAIN(page.address), page.address + _EXIT_HOOK_AT,
                           page.address + _UNDERSCORE_EXIT_HOOK_AT, page, jump_buffer])
    return _main_stub[0], _main_stub[1], _main_stub[2]


def run_main(source: SourceLike, argv: Sequence[str | bytes] | None = None, *,
             name: str | None = None, **load_options: Any) -> int:
    """Load a program into this process, call its ``main(argc, argv, environ)``,
    unload it and return main's result — or the status it passed to ``exit()``.

    Args:
        source: a path, bytes, an fd or a binary file (PIE or ET_EXEC, dynamically
            linked; a static program cannot share this process's libc).
        argv: the full argument vector, argv[0] included (default: the file name).
        name: a name for a memory input.
        load_options: passed to `relink.load` (scope, host, resolver, interpose…).

    ``exit``, ``_exit`` and ``_Exit`` of the program (and of the libraries relink loads
    with it) are bound to relink's hooks: called on main's thread while main runs, they
    return to `run_main` with the status instead of ending Python (main's C frames are
    abandoned, as by longjmp; the program's atexit handlers do not run then). One
    `run_main` runs at a time; another thread's call waits.

    Limits: COPY relocations against host library data (``stdout``, ``optind``…) give
    the program private copies libc does not update; initializers receive Python's
    argc/argv. Use `execute` to run a program faithfully.
    """
    from relink.api import load
    from relink.runtime import libc

    path, data, display = read_input(source, name)
    args = program_argv(argv, path or display)
    with ElfFile(path if path is not None else data or b"", name=display) as elf:
        if elf.header.e_type not in (ET_EXEC, ET_DYN):
            raise UnsupportedError(f"not a program (ELF type {elf.header.type_name})",
                                   file=elf.label)
        if elf.header.e_type == ET_DYN and elf.interp is None:
            raise UnsupportedError("a shared object or static-pie program has no main to "
                                   "call in-process: use relink.execute()", file=elf.label)
    if _main_owner and _main_owner[0] == threading.get_ident():
        raise UnsupportedError("run_main cannot be nested (main is already running on "
                               "this thread)", file=display)
    call_main, exit_hook, underscore_exit_hook = _main_runner()
    hooks: dict[str, Any] = {"exit": exit_hook, "_exit": underscore_exit_hook,
                             "_Exit": underscore_exit_hook}
    load_options["interpose"] = {**hooks, **dict(load_options.get("interpose") or {})}
    module = load(path if path is not None else data, name=name or display,
                  **load_options)
    try:
        main = find_main(module, path if path is not None else data)
        c_args = (ctypes.c_char_p * (len(args) + 1))(*args, None)
        sys.stdout.flush()
        sys.stderr.flush()
        with _main_lock:
            _main_owner.append(threading.get_ident())
            try:
                raw = int(call_main(main, len(args), c_args, libc.environ_pointer()))
            finally:
                _main_owner.clear()
        libc.fflush(None)
    finally:
        module.close()
    status = raw & 0xFFFFFFFF
    if raw >> 32:
        return status & 0xFF  # exit(): the status the kernel would report
    return status - (1 << 32) if status >= 1 << 31 else status
