"""The initial process stack and the child's set-up plan for `relink.execute`.

Runtime layer, host only (x86_64 Linux). Everything here is computed in the parent,
before the fork, in plain Python: the child runs no Python and no libc, only the
fork-and-enter stub of relink.runtime.exec, which replays the system calls planned here
and jumps to the entry point.

`build_stack` lays out what the kernel's ``create_elf_tables`` would put at the top of
a new stack (System V AMD64 psABI §3.4.1, Linux ``fs/binfmt_elf.c``)::

    rsp ->  argc
            argv[0] ... argv[argc-1], NULL
            envp[0] ... NULL
            auxv pairs (type, value) ..., (AT_NULL, 0)
            padding
            16 random bytes (AT_RANDOM), "x86_64" (AT_PLATFORM), argument and
            environment strings, the file name (AT_EXECFN)
    top of the stack mapping

`ChildPlan` collects the system calls the child makes before the jump, to give the
program what ``execve`` would: default signal dispositions (ignored ones stay ignored,
except SIGPIPE and SIGXFSZ, which subprocess restores too), no alternate signal stack,
no inherited rseq registration, close-on-exec descriptors closed, the thread name,
none of the parent's mappings, and the kernel's record of the program's layout
(``prctl(PR_SET_MM_MAP)``: cmdline, environ, auxv, brk, and /proc/self/exe when
permitted).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["AT", "ChildPlan", "MmLayout", "Ref", "StackImage", "build_stack", "plan_child"]


class AT:
    """Auxiliary vector entry types (<elf.h>, Linux)."""

    NULL, PHDR, PHENT, PHNUM, PAGESZ, BASE, FLAGS, ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
    UID, EUID, GID, EGID, PLATFORM, HWCAP, CLKTCK = 11, 12, 13, 14, 15, 16, 17
    SECURE, RANDOM, HWCAP2, RSEQ_FEATURE_SIZE, RSEQ_ALIGN = 23, 25, 26, 27, 28
    HWCAP3, HWCAP4, EXECFN, SYSINFO_EHDR, MINSIGSTKSZ = 29, 30, 31, 33, 51


@dataclass
class StackImage:
    """The bytes to place at the top of the stack, and where the entry's rsp goes."""

    data: bytes
    start: int   # address of data[0]
    sp: int      # rsp at the entry point (points at argc; 16-byte aligned)
    arg_start: int = 0   # the argument strings (for /proc/self/cmdline)
    arg_end: int = 0
    env_start: int = 0   # the environment strings (for /proc/self/environ)
    env_end: int = 0
    auxv_at: int = 0     # the auxv pairs, AT_NULL included
    auxv_size: int = 0


def build_stack(top: int, argv: list[bytes], envp: list[bytes], execfn: bytes,
                auxv: list[tuple[int, int]], random16: bytes) -> StackImage:
    """Lay out argc/argv/envp/auxv and their strings below address `top`.

    `auxv` holds every entry except AT_RANDOM, AT_PLATFORM and AT_EXECFN (they point
    into the image, so they are added here) and the AT_NULL terminator.
    """
    strings = bytearray()
    offsets: list[int] = []

    def put(raw: bytes) -> int:
        at = len(strings)
        strings.extend(raw + b"\0")
        return at

    random_at = len(strings)
    strings.extend(random16[:16].ljust(16, b"\0"))
    platform_at = put(b"x86_64")
    offsets = [put(a) for a in argv]
    env_offsets = [put(e) for e in envp]
    execfn_at = put(execfn)
    strings_start = (top - 16 - len(strings)) & ~15
    aux = [*auxv, (AT.RANDOM, strings_start + random_at),
           (AT.PLATFORM, strings_start + platform_at),
           (AT.EXECFN, strings_start + execfn_at), (AT.NULL, 0)]
    words: list[int] = [len(argv)]
    words += [strings_start + o for o in offsets] + [0]
    words += [strings_start + o for o in env_offsets] + [0]
    for kind, value in aux:
        words += [kind, value & 0xFFFFFFFFFFFFFFFF]
    table = struct.pack(f"<{len(words)}Q", *words)
    sp = (strings_start - len(table)) & ~15
    gap = strings_start - (sp + len(table))
    data = table + bytes(gap) + bytes(strings)
    arg_start = strings_start + (offsets[0] if offsets else execfn_at)
    env_start = strings_start + (env_offsets[0] if env_offsets else execfn_at)
    return StackImage(data=data, start=sp, sp=sp, arg_start=arg_start,
                      arg_end=env_start, env_start=env_start,
                      env_end=strings_start + execfn_at,
                      auxv_at=sp + 8 * (len(argv) + len(envp) + 3),
                      auxv_size=16 * len(aux))


# System call numbers (x86_64) the child plan uses.
SYS_CLOSE, SYS_MUNMAP, SYS_RT_SIGACTION, SYS_RT_SIGPROCMASK = 3, 11, 13, 14
SYS_SIGALTSTACK, SYS_PRCTL, SYS_RSEQ = 131, 157, 334
SYSCALL_NAMES = {SYS_CLOSE: "close", SYS_MUNMAP: "munmap", SYS_RT_SIGACTION: "rt_sigaction",
                 SYS_RT_SIGPROCMASK: "rt_sigprocmask", SYS_SIGALTSTACK: "sigaltstack",
                 SYS_PRCTL: "prctl", SYS_RSEQ: "rseq"}
MUST, MAY = 1, 2  # op kinds: the call must succeed / its result is ignored
_SIG_IGN = 1
_SIGKILL, _SIGSTOP, _SIGPIPE, _SIGXFSZ = 9, 19, 13, 25
_RSEQ_SIG = 0x53053053
PR_SET_NAME, PR_SET_MM, PR_SET_MM_MAP = 15, 35, 14
AUXV_WORDS_MAX = 2 * (3 + 22 + 1)  # the kernel's AT_VECTOR_SIZE (saved_auxv) on x86_64


@dataclass(frozen=True)
class Ref:
    """An argument that is the address of a data blob of the plan (see ChildPlan.blob)."""

    index: int


@dataclass
class ChildPlan:
    """The op table the fork-and-enter stub executes (see relink.runtime.exec).

    Layout, in one dedicated mapping that the child keeps: a 64-byte header
    ``[error fd, 0 ...]``, 64-byte ops ``[kind, syscall number, a0 .. a5]``, a final
    ``[0, entry, rsp, rdx]``, then the data blobs the ops point at (16-byte aligned).
    """

    ops: list[tuple[int, int, tuple[int | Ref, ...]]] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)

    def call(self, kind: int, nr: int, *args: int | Ref) -> None:
        self.ops.append((kind, nr, args))

    def blob(self, data: bytes) -> Ref:
        self.blobs.append(bytes(data))
        return Ref(len(self.blobs) - 1)

    def size(self) -> int:
        return 64 * (len(self.ops) + 2) + sum((len(b) + 15) & ~15 for b in self.blobs)

    def layout(self, at: int, errfd: int, entry: int, sp: int) -> bytes:
        """The bytes of the plan placed at address `at`."""
        data_at = at + 64 * (len(self.ops) + 2)
        addrs = []
        for b in self.blobs:
            addrs.append(data_at)
            data_at += (len(b) + 15) & ~15
        words = [errfd] + [0] * 7
        for kind, nr, args in self.ops:
            vals = [addrs[a.index] if isinstance(a, Ref) else a for a in args]
            words += [kind, nr, *(vals + [0] * 6)[:6]]
        words += [0, entry, sp, 0, 0, 0, 0, 0]
        out = bytearray(struct.pack(f"<{len(words)}Q",
                                    *[w & 0xFFFFFFFFFFFFFFFF for w in words]))
        for b in self.blobs:
            out += b + bytes(((len(b) + 15) & ~15) - len(b))
        return bytes(out)

    def describe(self, report: bytes) -> tuple[str, int]:
        """(syscall name, errno) from the 64-byte failure report the child wrote."""
        result, nr = struct.unpack_from("<qQ", report)
        return SYSCALL_NAMES.get(nr, f"syscall {nr}"), -result


@dataclass
class MmLayout:
    """What ``prctl(PR_SET_MM, PR_SET_MM_MAP)`` tells the kernel about the new program:
    /proc/self/cmdline, environ and auxv, the brk heap after the program's bss, and
    (when permitted: CAP_CHECKPOINT_RESTORE) /proc/self/exe."""

    start_code: int
    end_code: int
    start_data: int
    end_data: int
    brk: int
    start_stack: int
    arg_start: int
    arg_end: int
    env_start: int
    env_end: int
    auxv_at: int      # the auxv on the new stack (the kernel keeps a copy for
    auxv_size: int    # /proc/self/auxv); size 0 when it does not fit saved_auxv
    exe_fd: int | None

    def pack(self, with_exe: bool) -> bytes:
        """``struct prctl_mm_map`` (include/uapi/linux/prctl.h), 104 + 8 bytes."""
        exe = self.exe_fd if with_exe and self.exe_fd is not None else 0xFFFFFFFF
        return struct.pack("<12QII", self.start_code, self.end_code, self.start_data,
                           self.end_data, self.brk, self.brk, self.start_stack,
                           self.arg_start, self.arg_end, self.env_start, self.env_end,
                           self.auxv_at, self.auxv_size, exe)


def plan_child(plan: ChildPlan, *, handlers: dict[int, int], close_fds: list[int],
               blocked_mask: int, comm: bytes, rseq: tuple[int, int] | None,
               unmap: Sequence[tuple[int, int]] = (), mm: MmLayout | None = None) -> None:
    """Fill `plan` with the execve-like resets (see the module docstring).

    Args:
        handlers: signal -> current handler value (0 SIG_DFL, 1 SIG_IGN, else a handler).
        close_fds: descriptors to close (the close-on-exec ones).
        blocked_mask: the signal mask the program starts with (the caller's, as execve).
        comm: the thread name (at most 15 bytes).
        rseq: (area address, registered length) of the caller's rseq area, or None.
        unmap: address ranges to unmap (everything of the parent the program does not
            need: the child runs no code from them).
        mm: the new program's memory layout for PR_SET_MM_MAP, or None.
    """
    plan.call(MUST, SYS_RT_SIGPROCMASK, 2, plan.blob(struct.pack("<Q", (1 << 64) - 1)),
              0, 8)  # SIG_SETMASK: everything blocked while the process is rebuilt
    default = plan.blob(bytes(32))  # kernel struct sigaction: SIG_DFL, no flags
    for sig in range(1, 65):
        if sig in (_SIGKILL, _SIGSTOP):
            continue
        handler = handlers.get(sig, 2)
        if handler == 0 or (handler == _SIG_IGN and sig not in (_SIGPIPE, _SIGXFSZ)):
            continue
        plan.call(MAY, SYS_RT_SIGACTION, sig, default, 0, 8)
    # stack_t {ss_sp, ss_flags = SS_DISABLE, ss_size}
    plan.call(MAY, SYS_SIGALTSTACK, plan.blob(struct.pack("<QiiQ", 0, 2, 0, 0)), 0)
    if rseq is not None:
        area, length = rseq
        plan.call(MAY, SYS_RSEQ, area, length, 1, _RSEQ_SIG)  # RSEQ_FLAG_UNREGISTER
    plan.call(MAY, SYS_PRCTL, PR_SET_NAME, plan.blob(comm[:15] + b"\0"))
    for fd in close_fds:
        plan.call(MAY, SYS_CLOSE, fd)
    for lo, hi in unmap:
        plan.call(MAY, SYS_MUNMAP, lo, hi - lo)
    if mm is not None:
        for with_exe in (False, True) if mm.exe_fd is not None else (False,):
            # Without the exe first: an unprivileged caller still gets cmdline/environ.
            plan.call(MAY, SYS_PRCTL, PR_SET_MM, PR_SET_MM_MAP,
                      plan.blob(mm.pack(with_exe)), 104, 0)
        if mm.exe_fd is not None:
            plan.call(MAY, SYS_CLOSE, mm.exe_fd)
    plan.call(MUST, SYS_RT_SIGPROCMASK, 2, plan.blob(struct.pack("<Q", blocked_mask)), 0, 8)


def random_bytes() -> bytes:
    """The 16 AT_RANDOM bytes (glibc seeds its stack protector and pointer guard)."""
    return os.urandom(16)
