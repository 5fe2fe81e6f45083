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
no inherited rseq registration, close-on-exec descriptors closed, the thread name.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AT", "ChildPlan", "StackImage", "build_stack"]


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
    return StackImage(data=data, start=sp, sp=sp)


# System call numbers (x86_64) the child plan uses.
SYS_CLOSE, SYS_RT_SIGACTION, SYS_RT_SIGPROCMASK, SYS_SIGALTSTACK = 3, 13, 14, 131
SYS_PRCTL, SYS_RSEQ = 157, 334
SYSCALL_NAMES = {SYS_CLOSE: "close", SYS_RT_SIGACTION: "rt_sigaction",
                 SYS_RT_SIGPROCMASK: "rt_sigprocmask", SYS_SIGALTSTACK: "sigaltstack",
                 SYS_PRCTL: "prctl", SYS_RSEQ: "rseq"}
MUST, MAY = 1, 2  # op kinds: the call must succeed / its result is ignored
_SIG_IGN = 1
_SIGKILL, _SIGSTOP, _SIGPIPE, _SIGXFSZ = 9, 19, 13, 25
_RSEQ_SIG = 0x53053053


@dataclass
class ChildPlan:
    """The op table the fork-and-enter stub executes (see relink.runtime.exec).

    Layout: a 64-byte header ``[error fd, 0 ...]``, then 64-byte ops
    ``[kind, syscall number, a0 .. a5]`` and a final ``[0, entry, rsp, rdx]``.
    The buffers the ops point at are kept alive by `keep`.
    """

    ops: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)
    keep: list[object] = field(default_factory=list)

    def call(self, kind: int, nr: int, *args: int) -> None:
        self.ops.append((kind, nr, args))

    def pointer(self, obj: Any) -> int:
        self.keep.append(obj)
        return ctypes.addressof(obj)

    def table(self, errfd: int, entry: int, sp: int) -> ctypes.Array[ctypes.c_uint64]:
        words = [errfd] + [0] * 7
        for kind, nr, args in self.ops:
            padded = [*args, 0, 0, 0, 0, 0, 0][:6]
            words += [kind, nr, *padded]
        words += [0, entry, sp, 0, 0, 0, 0, 0]
        arr = (ctypes.c_uint64 * len(words))(*[w & 0xFFFFFFFFFFFFFFFF for w in words])
        self.keep.append(arr)
        return arr

    def describe(self, report: bytes) -> tuple[str, int]:
        """(syscall name, errno) from the 64-byte failure report the child wrote."""
        result, nr = struct.unpack_from("<qQ", report)
        return SYSCALL_NAMES.get(nr, f"syscall {nr}"), -result


def plan_child(plan: ChildPlan, *, handlers: dict[int, int], close_fds: list[int],
               blocked_mask: int, comm: bytes, rseq: tuple[int, int] | None) -> None:
    """Fill `plan` with the execve-like resets (see the module docstring).

    Args:
        handlers: signal -> current handler value (0 SIG_DFL, 1 SIG_IGN, else a handler).
        close_fds: descriptors to close (the close-on-exec ones).
        blocked_mask: the signal mask the program starts with (the caller's, as execve).
        comm: the thread name (at most 15 bytes).
        rseq: (area address, registered length) of the caller's rseq area, or None.
    """
    full = ctypes.c_uint64(0xFFFFFFFFFFFFFFFF)
    final_mask = ctypes.c_uint64(blocked_mask)
    default = (ctypes.c_uint64 * 4)()  # kernel struct sigaction: SIG_DFL, no flags
    plan.call(MUST, SYS_RT_SIGPROCMASK, 2, plan.pointer(full), 0, 8)  # SIG_SETMASK
    for sig in range(1, 65):
        if sig in (_SIGKILL, _SIGSTOP):
            continue
        handler = handlers.get(sig, 2)
        if handler == 0 or (handler == _SIG_IGN and sig not in (_SIGPIPE, _SIGXFSZ)):
            continue
        plan.call(MAY, SYS_RT_SIGACTION, sig, plan.pointer(default), 0, 8)
    disable = (ctypes.c_uint64 * 3)(0, 2, 0)  # stack_t {ss_sp, ss_flags=SS_DISABLE, ss_size}
    plan.call(MAY, SYS_SIGALTSTACK, plan.pointer(disable), 0)
    if rseq is not None:
        area, length = rseq
        plan.call(MAY, SYS_RSEQ, area, length, 1, _RSEQ_SIG)  # RSEQ_FLAG_UNREGISTER
    name = ctypes.create_string_buffer(comm[:15], 16)
    plan.call(MAY, SYS_PRCTL, 15, plan.pointer(name))  # PR_SET_NAME
    for fd in close_fds:
        plan.call(MAY, SYS_CLOSE, fd)
    plan.call(MUST, SYS_RT_SIGPROCMASK, 2, plan.pointer(final_mask), 0, 8)


def random_bytes() -> bytes:
    """The 16 AT_RANDOM bytes (glibc seeds its stack protector and pointer guard)."""
    return os.urandom(16)
