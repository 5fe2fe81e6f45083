"""Executables: run a program for real (`execute`); `run_main` lives in exec_main.

Runtime layer, native x86_64 Linux only (design.md decision 8, feasibility §6).
`run_main` and `find_main` (relink.runtime.exec_main) are re-exported here.

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
otherwise /proc/self/exe still names Python."""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from relink.elf import ElfFile
from relink.elf.source import SourceLike, open_source
from relink.errors import ExecutionError, RelinkError, UnsupportedError
from relink.runtime.exec_main import (
    find_main,
    program_argv,
    program_envp,
    read_input,
    run_main,
)
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

ET_DYN = 3
PT_LOAD, PT_INTERP, PT_PHDR, PT_GNU_STACK = 1, 3, 6, 0x6474E551
PF_X = 1
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

    path, data, display = read_input(source, name)
    args = program_argv(argv, path or display)
    envp = program_envp(env)
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
