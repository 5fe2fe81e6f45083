"""Executables: call ``main`` in-process (`run_main`) or run a program for real (`execute`).

Runtime layer, native x86_64 Linux only (design.md decision 8, feasibility §6).

`run_main(source, argv)` loads a PIE or ET_EXEC program with `relink.load` (ET_EXEC at
its fixed address, MAP_FIXED_NOREPLACE: a clash is a MappingError; COPY relocations
applied), finds ``main`` through ``.dynsym`` or, failing that, ``.symtab``, calls
``main(argc, argv, environ)`` through ctypes, flushes C stdio, unloads the program and
returns what main returned. Its limit: a COPY relocation against data of a host
library (``stdout``, ``optind``, ``environ``…) gives the program a private copy that
the host libc never sees, so state libc updates later (``getopt``'s ``optind``, a
reassigned ``stdout``) is not shared; data of relink-loaded libraries is shared
correctly (their references bind to the program's copy). ``exit()``/``_exit()`` called
by main's thread return to `run_main` with the status (relink's exit hooks, machine
code below); a non-PIE program's ``atexit`` handlers are left registered with libc.

`execute(source, argv, env)` runs the program as the kernel would start it, in a child
process, without writing it anywhere: in the parent, the program and its PT_INTERP
(ld.so) are mapped with relink's loader (not relocated: ld.so does that, or the static
program itself), a stack is mapped and the initial stack image (argc, argv, envp, auxv
with AT_PHDR/PHENT/PHNUM/ENTRY/BASE/PAGESZ/RANDOM/EXECFN/PLATFORM/HWCAP/HWCAP2/
SYSINFO_EHDR/UID/EUID/GID/EGID/SECURE/CLKTCK/MINSIGSTKSZ/FLAGS) is written into it, and
the execve-like resets are planned (relink.runtime.exec_stack). A machine-code stub then
forks with the raw system call; the child runs no Python and no libc — the stub replays
the planned system calls and jumps to the entry point with rsp at argc and rdx = 0. The
parent unmaps its copies, learns through a close-on-exec pipe whether the child got to
the jump (a failed set-up call is reported as ExecutionError) and waits for the exit
status. stdin/stdout/stderr are inherited. Before the jump the child unmaps everything
of the parent except the program, its interpreter, the new stack, the vDSO and the two
pages of the stub and its plan, and tells the kernel the new layout with
``prctl(PR_SET_MM_MAP)``: /proc/self/cmdline and environ show the program's, the brk
heap starts after its bss, and, when the caller may (CAP_CHECKPOINT_RESTORE) and the
program came from a path, /proc/self/exe names it (so ld.so's ``$ORIGIN`` is right);
otherwise /proc/self/exe still names Python.
"""

from __future__ import annotations

import ctypes
import os
import resource
import struct
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from relink.elf import ElfFile
from relink.elf.source import SourceLike, open_source
from relink.errors import ElfParseError, ExecutionError, RelinkError, UnsupportedError
from relink.runtime.exec_stack import (
    AT,
    AUXV_WORDS_MAX,
    MUST,
    SYS_CLOSE,
    ChildPlan,
    MmLayout,
    build_stack,
    plan_child,
    random_bytes,
)

__all__ = ["execute", "find_main", "run_main"]

ET_EXEC, ET_DYN = 2, 3
PT_LOAD, PT_INTERP, PT_PHDR, PT_GNU_STACK = 1, 3, 6, 0x6474E551
PF_X = 1
STT_FUNC, SHT_SYMTAB, SHN_UNDEF = 2, 2, 0
STACK_SIZE = 8 << 20

# Assembled from (GNU as, AT&T) — long fork_enter(const uint64_t *table):
#
#       mov  $57, %eax                # fork()
#       syscall
#       test %rax, %rax
#       jnz  9f                       # parent: pid or -errno
#       mov  %rdi, %r14               # child: table base (rdi survives syscall)
#       lea  64(%rdi), %r15           # first op
#   1:  mov  0(%r15), %rax            # kind; 0 = jump
#       test %rax, %rax
#       jz   3f
#       mov  8(%r15), %rax            # nr, then a0..a5 -> rdi rsi rdx r10 r8 r9
#       mov  16(%r15), %rdi
#       mov  24(%r15), %rsi
#       mov  32(%r15), %rdx
#       mov  40(%r15), %r10
#       mov  48(%r15), %r8
#       mov  56(%r15), %r9
#       syscall
#       cmpq $1, 0(%r15)              # kind 1: must succeed
#       jne  2f
#       cmp  $-4095, %rax
#       jae  4f
#   2:  add  $64, %r15
#       jmp  1b
#   3:  mov  8(%r15), %r11            # entry
#       mov  16(%r15), %rsp           # -> argc
#       mov  24(%r15), %rdx           # rtld_fini for __libc_start_main: 0
#       xor  %eax,%eax; xor %ebx,%ebx; xor %ecx,%ecx; xor %esi,%esi; xor %edi,%edi
#       xor  %ebp,%ebp; xor %r8d,%r8d; ... xor %r15d,%r15d
#       jmp  *%r11
#   4:  mov  %rax, 0(%r15)            # report [-errno, nr, ...] on the error fd
#       mov  $1, %eax
#       mov  0(%r14), %rdi
#       mov  %r15, %rsi
#       mov  $64, %edx
#       syscall
#       mov  $231, %eax               # exit_group(127)
#       mov  $127, %edi
#       syscall
#       hlt
#   9:  ret
_FORK_ENTER = bytes.fromhex(
    "b8390000000f054885c00f85930000004989fe4c8d7f40498b074885c07432498b4708498b7f10"
    "498b7718498b57204d8b57284d8b47304d8b4f380f0549833f017508483d01f0ffff73364983c7"
    "40ebc64d8b5f08498b6710498b571831c031db31c931f631ff31ed4531c04531c94531d24531e4"
    "4531ed4531f64531ff41ffe3498907b801000000498b3e4c89feba400000000f05b8e7000000bf"
    "7f0000000f05f4c3")
_stub: list[Any] = []


def _fork_enter() -> Any:
    if not _stub:
        from relink.runtime import libc
        from relink.runtime.exec_code import code_page

        page = code_page(_FORK_ENTER)
        _stub.extend([page, libc.FORK_ENTER(page.address)])
    return _stub[1]


# -- inputs ---------------------------------------------------------------------------

def _read_input(source: SourceLike, name: str | None) -> tuple[str | None, bytes | None,
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


def _argv(argv: Sequence[str | bytes] | None, default: str) -> list[bytes]:
    args = list(argv) if argv else [default]
    return [a if isinstance(a, bytes) else os.fsencode(a) for a in args]


def _envp(env: Mapping[str, str] | Mapping[bytes, bytes] | None) -> list[bytes]:
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

    path, data, display = _read_input(source, name)
    args = _argv(argv, path or display)
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


# -- execute --------------------------------------------------------------------------

def _phdr_address(image: Any) -> int:
    for ph in image.phdrs:
        if ph.p_type == PT_PHDR:
            return int(image.base + ph.p_vaddr)
    phoff = image.header.e_phoff
    for ph in image.loads:
        if ph.p_offset <= phoff and phoff + image.header.e_phnum * image.header.e_phentsize \
                <= ph.p_offset + ph.p_filesz:
            return int(image.base + ph.p_vaddr + phoff - ph.p_offset)
    raise UnsupportedError("the program headers are not inside a loaded segment (no "
                           "PT_PHDR): AT_PHDR cannot be given", file=image.label)


def _host_aux(kind: int) -> int:
    from relink.runtime import libc

    return int(libc.getauxval(kind))


def _signal_handlers() -> dict[int, int]:
    """signal -> this process's disposition as the kernel has it (0 SIG_DFL, 1 SIG_IGN,
    anything else a handler: Python's, faulthandler's or any C library's)."""
    from relink.runtime import libc

    out = {}
    old = (ctypes.c_uint64 * 4)()  # kernel struct sigaction
    for sig in range(1, 65):
        if libc.syscall(ctypes.c_long(13), ctypes.c_long(sig), None, ctypes.byref(old),
                        ctypes.c_long(8)) != 0:  # rt_sigaction(sig, NULL, &old, 8)
            out[sig] = 2  # unknown: reset it to the default
            continue
        out[sig] = int(old[0]) if old[0] in (0, 1) else 2
    return out


def _cloexec_fds(keep: set[int]) -> list[int]:
    import fcntl

    fds = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(fd) for fd in range(3, 1024)]
    for n in names:
        fd = int(n)
        if fd < 3 or fd in keep:
            continue
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                fds.append(fd)
        except OSError:
            continue
    return fds


def _rseq_area() -> tuple[int, int] | None:
    from relink.runtime import libc

    try:
        offset = ctypes.c_long.in_dll(libc.libc, "__rseq_offset").value
        size = ctypes.c_uint.in_dll(libc.libc, "__rseq_size").value
    except ValueError:
        return None
    if not size:
        return None
    return int(libc.pthread_self() or 0) + offset, max(size, 32)


def _blocked_mask() -> int:
    import signal

    mask = 0
    for sig in signal.pthread_sigmask(signal.SIG_BLOCK, []):
        mask |= 1 << (int(sig) - 1)
    return mask


def execute(source: SourceLike, argv: Sequence[str | bytes] | None = None,
            env: Mapping[str, str] | Mapping[bytes, bytes] | None = None, *,
            name: str | None = None) -> int:
    """Run a program in a forked child, as if it had been exec'd; return its status.

    Args:
        source: a path, bytes, an fd or a binary file: a dynamically linked program
            (PIE or ET_EXEC), a static or static-pie program, or ld.so itself. Bytes
            are mapped from memory, never written to a file.
        argv: the full argument vector, argv[0] included (default: the file name).
        env: the environment (default: this process's ``os.environ``).
        name: a name for a memory input (AT_EXECFN when there is no path).

    Returns:
        The exit status, or ``-signal`` if the program was killed (as subprocess).

    Raises:
        RelinkError subclasses for a bad file or interpreter (nothing is left mapped),
        ExecutionError when the child failed before reaching the entry point.
    """
    from relink.loader import map_image
    from relink.memory import PROT_EXEC, PROT_READ, PROT_WRITE
    from relink.memory.host import HostMapper

    path, data, display = _read_input(source, name)
    args = _argv(argv, path or display)
    envp = _envp(env)
    mapper = HostMapper()
    owned: list[Any] = []
    try:
        program = map_image(open_source(path if path is not None else data or b"",
                                        name=display), mapper=mapper)
        owned.append(program)
        program.protect_segments()
        interp_base = 0
        entry = program.entry
        with ElfFile(path if path is not None else data or b"", name=display) as elf:
            interp = elf.interp
            if interp is not None:
                interp = interp.split("\0", 1)[0]  # the kernel reads up to the first NUL
            gnu_stack = elf.phdr(PT_GNU_STACK)
        if interp is not None:
            try:
                interp_src = open_source(interp)
            except (RelinkError, OSError, ValueError) as exc:
                why = exc.message if isinstance(exc, RelinkError) else str(exc)
                raise ExecutionError(f"cannot open the program interpreter {interp!r}: "
                                     f"{why}", file=display) from exc
            ld = map_image(interp_src, mapper=mapper)
            owned.append(ld)
            ld.protect_segments()
            if ld.header.e_type != ET_DYN:
                raise UnsupportedError(f"the program interpreter {interp} is not ET_DYN",
                                       file=display)
            interp_base = ld.base
            entry = ld.entry
        exec_stack = gnu_stack is None or bool(gnu_stack.p_flags & PF_X)
        soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
        size = STACK_SIZE if soft == resource.RLIM_INFINITY else min(max(soft, 1 << 20),
                                                                     64 << 20)
        stack = mapper.reserve(size)
        owned.append(stack)
        stack.map_anon(stack.start, size, PROT_READ | PROT_WRITE
                       | (PROT_EXEC if exec_stack else 0))
        eh = program.header
        auxv = [(AT.SYSINFO_EHDR, _host_aux(AT.SYSINFO_EHDR)),
                (AT.MINSIGSTKSZ, _host_aux(AT.MINSIGSTKSZ)),
                (AT.HWCAP, _host_aux(AT.HWCAP)), (AT.PAGESZ, mapper.page_size),
                (AT.CLKTCK, _host_aux(AT.CLKTCK) or os.sysconf("SC_CLK_TCK")),
                (AT.PHDR, _phdr_address(program)), (AT.PHENT, eh.e_phentsize),
                (AT.PHNUM, eh.e_phnum), (AT.BASE, interp_base), (AT.FLAGS, 0),
                (AT.ENTRY, program.entry), (AT.UID, os.getuid()), (AT.EUID, os.geteuid()),
                (AT.GID, os.getgid()), (AT.EGID, os.getegid()),
                (AT.SECURE, _host_aux(AT.SECURE)), (AT.HWCAP2, _host_aux(AT.HWCAP2))]
        for kind in (AT.RSEQ_FEATURE_SIZE, AT.RSEQ_ALIGN, AT.HWCAP3, AT.HWCAP4):
            value = _host_aux(kind)
            if value:
                auxv.append((kind, value))
        auxv = [(k, v) for k, v in auxv if k != AT.SYSINFO_EHDR or v]
        execfn = os.fsencode(path) if path is not None else os.fsencode(display)
        image = build_stack(stack.start + size, args, envp, execfn, auxv, random_bytes())
        stack.write(image.start, image.data)
        keep = [(img.region.start, img.region.start + img.region.size)
                for img in owned if hasattr(img, "region")]
        keep.append((stack.start, stack.start + size))
        return _spawn(mapper, keep, image, _mm_layout(program, image), entry, display,
                      args[0], path)
    finally:
        for item in reversed(owned):
            try:
                item.release()
            finally:
                src = getattr(item, "source", None)
                if src is not None:
                    src.close()


def _mm_layout(program: Any, image: Any) -> MmLayout:
    """The new program's memory layout as the kernel's ELF loader would record it."""
    base = program.base
    loads = program.loads
    code = next((ph for ph in loads if ph.p_flags & PF_X), loads[0])
    data = [ph for ph in loads if ph.p_flags & 2]  # PF_W
    start_code, end_code = base + code.p_vaddr, base + code.p_vaddr + code.p_filesz
    if data:
        start_data, end_data = base + data[-1].p_vaddr, base + data[-1].p_vaddr \
            + data[-1].p_filesz
    else:
        start_data = end_data = end_code
    page = program.page_size
    brk = (max(base + ph.p_vaddr + ph.p_memsz for ph in loads) + page - 1) & ~(page - 1)
    size = image.auxv_size if image.auxv_size <= 8 * AUXV_WORDS_MAX else 0
    return MmLayout(start_code=start_code, end_code=max(end_code, start_code + 1),
                    start_data=start_data, end_data=end_data, brk=brk,
                    start_stack=image.sp, arg_start=image.arg_start, arg_end=image.arg_end,
                    env_start=image.env_start, env_end=image.env_end,
                    auxv_at=image.auxv_at, auxv_size=size, exe_fd=None)


def _unmap_ranges(keep: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every address range of this process except `keep` and the kernel's special
    mappings (vDSO, vvar, vsyscall): what the child unmaps before the jump."""
    top = 0
    keep = list(keep)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if hi > 1 << 63:
                continue  # [vsyscall]: above the user address space
            top = max(top, hi)
            if len(fields) > 5 and fields[5].startswith("[v"):
                keep.append((lo, hi))
    out = []
    at = 0
    for lo, hi in sorted(keep):
        if lo > at:
            out.append((at, lo))
        at = max(at, hi)
    if top > at:
        out.append((at, top))
    return out


def _spawn(mapper: Any, keep: list[tuple[int, int]], image: Any, mm: MmLayout,
           entry: int, display: str, argv0: bytes, path: str | None) -> int:
    """Fork through the stub, check the child reached the entry, wait for it."""
    from relink.memory import PROT_READ, PROT_WRITE
    from relink.runtime import libc

    stub = _fork_enter()
    page = _stub[0]
    keep = [*keep, (page.address, page.address + mapper.page_size)]
    exe_fd = None
    if path is not None:
        try:
            exe_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            exe_fd = None  # /proc/self/exe then keeps naming Python
    mm.exe_fd = exe_fd
    region = None
    rfd, wfd = os.pipe()  # both close-on-exec: closed by the child's plan too
    try:
        common = {"handlers": _signal_handlers(), "blocked_mask": _blocked_mask(),
                  "close_fds": _cloexec_fds({wfd} | ({exe_fd} if exe_fd is not None
                                                     else set())),
                  "comm": os.path.basename(argv0), "rseq": _rseq_area(), "mm": mm}
        # Size the plan with room for the unmap ops, map it, then plan for real.
        draft = ChildPlan()
        plan_child(draft, unmap=[(0, 0)] * 64, **common)  # type: ignore[arg-type]
        size = (draft.size() + 64 + mapper.page_size - 1) & ~(mapper.page_size - 1)
        region = mapper.reserve(size)
        region.map_anon(region.start, size, PROT_READ | PROT_WRITE)
        unmap = _unmap_ranges([*keep, (region.start, region.start + size)])[:64]
        plan = ChildPlan()
        plan_child(plan, unmap=unmap, **common)  # type: ignore[arg-type]
        plan.call(MUST, SYS_CLOSE, wfd)  # EOF tells the parent the jump is next
        region.write(region.start, plan.layout(region.start, wfd, entry, image.sp))
        sys.stdout.flush()
        sys.stderr.flush()
        libc.fflush(None)
        pid = int(stub(region.start))
    finally:
        os.close(wfd)
        if exe_fd is not None:
            os.close(exe_fd)
        if region is not None:
            region.release()
    try:
        if pid < 0:
            raise ExecutionError(f"fork failed: {os.strerror(-pid)}", file=display,
                                 syscall="fork", errno=-pid)
        report = b""
        while True:
            chunk = os.read(rfd, 64)
            if not chunk:
                break
            report += chunk
    finally:
        os.close(rfd)
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise
    if report:
        call, err = plan.describe(report.ljust(16, b"\0"))
        raise ExecutionError(f"setting up the child failed: {call}: {os.strerror(err)}",
                             file=display, syscall=call, errno=err)
    return os.waitstatus_to_exitcode(status)
