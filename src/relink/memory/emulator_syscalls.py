"""A minimal Linux system-call layer for the unicorn emulator backend (opt-in).

Memory layer, used by `relink.memory.unicorn.Emulator(..., syscalls="linux")`. Library
code of a target libc (glibc, musl) makes a few system calls even for simple work:
``malloc`` grows the heap with ``brk`` / ``mmap`` and seeds its tcache with
``getrandom``, ``printf`` asks ``fstat`` about stdout and ``write``s it. This layer
answers those from Python, qiling-style, so a target libc loaded into the emulator can
be used; everything else returns ``-ENOSYS`` (and is recorded in `LinuxSyscalls.log`),
as a kernel without that call would. Nothing touches the host: ``write`` to fd 1 / 2
is captured in `stdout` / `stderr`, memory comes from the emulator.

Calling conventions (number; arguments; result): aarch64, riscv: x8/a7; x0-x5/a0-a5;
x0/a0 — arm EABI: r7; r0-r5; r0 — x86_64 (``syscall``): rax; rdi, rsi, rdx, r10, r8,
r9; rax — i386 (``int 0x80``): eax; ebx, ecx, edx, esi, edi, ebp; eax.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from relink.errors import EmulationError, MappingError

if TYPE_CHECKING:
    from relink.memory.unicorn import Emulator

__all__ = ["LinuxSyscalls", "TargetExit"]

log = logging.getLogger(__name__)

ENOSYS, ENOMEM, ENOTTY, EBADF = 38, 12, 25, 9
MMAP_BASE, MMAP_SIZE = 0x40000000, 0x10000000
BRK_SIZE = 0x01000000

# name -> number, per syscall table.
_GENERIC = {"read": 63, "write": 64, "writev": 66, "close": 57, "ioctl": 29, "brk": 214,
            "mmap": 222, "munmap": 215, "mprotect": 226, "madvise": 233, "getrandom": 278,
            "newfstatat": 79, "fstat": 80, "exit": 93, "exit_group": 94, "getpid": 172,
            "gettid": 178, "set_tid_address": 96, "rt_sigprocmask": 135, "futex": 98,
            "clock_gettime": 113, "statx": 291}
_X86_64 = {"read": 0, "write": 1, "writev": 20, "close": 3, "ioctl": 16, "brk": 12,
           "mmap": 9, "munmap": 11, "mprotect": 10, "madvise": 28, "getrandom": 318,
           "newfstatat": 262, "fstat": 5, "exit": 60, "exit_group": 231, "getpid": 39,
           "gettid": 186, "set_tid_address": 218, "rt_sigprocmask": 14, "futex": 202,
           "clock_gettime": 228, "statx": 332}
_I386 = {"read": 3, "write": 4, "writev": 146, "close": 6, "ioctl": 54, "brk": 45,
         "mmap2": 192, "munmap": 91, "mprotect": 125, "madvise": 219, "getrandom": 355,
         "fstatat64": 300, "fstat64": 197, "exit": 1, "exit_group": 252, "getpid": 20,
         "gettid": 224, "set_tid_address": 258, "rt_sigprocmask": 175, "futex": 240,
         "clock_gettime": 265, "clock_gettime64": 403, "statx": 383}
_ARM = {"read": 3, "write": 4, "writev": 146, "close": 6, "ioctl": 54, "brk": 45,
        "mmap2": 192, "munmap": 91, "mprotect": 125, "madvise": 220, "getrandom": 384,
        "fstatat64": 327, "fstat64": 197, "exit": 1, "exit_group": 248, "getpid": 20,
        "gettid": 224, "set_tid_address": 256, "rt_sigprocmask": 175, "futex": 240,
        "clock_gettime": 263, "clock_gettime64": 403, "statx": 397}

# ISA -> (table, number register, argument registers, interrupt number or None)
_CONVENTIONS: dict[str, tuple[dict[str, int], str, tuple[str, ...], int | None]] = {
    "aarch64": (_GENERIC, "x8", ("x0", "x1", "x2", "x3", "x4", "x5"), 2),
    "riscv64": (_GENERIC, "a7", ("a0", "a1", "a2", "a3", "a4", "a5"), 8),
    "riscv32": (_GENERIC, "a7", ("a0", "a1", "a2", "a3", "a4", "a5"), 8),
    "arm": (_ARM, "r7", ("r0", "r1", "r2", "r3", "r4", "r5"), 2),
    "x86_64": (_X86_64, "rax", ("rdi", "rsi", "rdx", "r10", "r8", "r9"), None),
    "x86": (_I386, "eax", ("ebx", "ecx", "edx", "esi", "edi", "ebp"), 0x80),
}


class TargetExit(EmulationError):
    """The emulated code called exit / exit_group (attribute `status`)."""

    def __init__(self, status: int, arch: str) -> None:
        self.status = status
        super().__init__(f"emulated code exited with status {status}", arch=arch)


class LinuxSyscalls:
    """Answers the handful of Linux system calls a libc makes for in-process work.

    Attributes:
        stdout / stderr: what the target wrote to fd 1 / fd 2.
        log: ``(name or number, args, result)`` of every call, in order.
    """

    def __init__(self, emu: Emulator) -> None:
        if emu.spec.name not in _CONVENTIONS:
            raise EmulationError(f"no system-call convention for {emu.spec.name}",
                                 arch=emu.spec.name)
        self.emu = emu
        table, self.nr_reg, self.arg_regs, self.intno = _CONVENTIONS[emu.spec.name]
        self.names = {nr: name for name, nr in table.items()}
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.log: list[tuple[str | int, tuple[int, ...], int]] = []
        self._brk_region: Any = None
        self._brk = 0
        self._mmap_next = MMAP_BASE
        self._handlers: dict[str, Callable[..., int]] = {
            "write": self._write, "writev": self._writev, "brk": self._brkcall,
            "mmap": self._mmap, "mmap2": self._mmap2, "getrandom": self._getrandom,
            "clock_gettime": self._clock_gettime, "clock_gettime64": self._clock_gettime64,
            "exit": self._exit, "exit_group": self._exit,
            "ioctl": lambda *a: -ENOTTY, "munmap": lambda *a: 0, "mprotect": lambda *a: 0,
            "madvise": lambda *a: 0, "rt_sigprocmask": lambda *a: 0, "futex": lambda *a: 0,
            "getpid": lambda *a: 1000, "gettid": lambda *a: 1000,
            "set_tid_address": lambda *a: 1000, "close": lambda *a: 0,
            "read": lambda *a: -EBADF,
        }

    def handle(self) -> None:
        """Serve the system call the emulated code just made (registers in, result out)."""
        emu = self.emu
        nr = emu.reg(self.nr_reg)
        args = tuple(emu.reg(r) for r in self.arg_regs)
        name = self.names.get(nr)
        handler = self._handlers.get(name) if name is not None else None
        try:
            result = handler(*args) if handler is not None else -ENOSYS
        except TargetExit as done:
            self.log.append((name or nr, args, done.status))
            raise
        if handler is None:
            log.debug("%s: unhandled system call %s (%s)", emu.spec.name, name or nr, args)
        self.log.append((name or nr, args, result))
        emu.abi.write(emu.uc, emu.abi.ret, result)

    # -- handlers ----------------------------------------------------------------------

    def _out(self, fd: int) -> bytearray | None:
        return {1: self.stdout, 2: self.stderr}.get(fd)

    def _write(self, fd: int, buf: int, n: int, *_: int) -> int:
        out = self._out(fd)
        if out is None:
            return -EBADF
        out += self.emu.read(buf, n) if n else b""
        return n

    def _writev(self, fd: int, iov: int, count: int, *_: int) -> int:
        out = self._out(fd)
        if out is None:
            return -EBADF
        word = self.emu.abi.word
        total = 0
        for i in range(count):
            base = self.emu.read_word(iov + 2 * word * i)
            length = self.emu.read_word(iov + 2 * word * i + word)
            if length:
                out += self.emu.read(base, length)
            total += length
        return total

    def _brkcall(self, addr: int, *_: int) -> int:
        from relink.memory import PROT_READ, PROT_WRITE

        if self._brk_region is None:
            region = self.emu.reserve(BRK_SIZE)
            region.map_anon(region.start, BRK_SIZE, PROT_READ | PROT_WRITE)
            self._brk_region = region
            self._brk = region.start
        region = self._brk_region
        if region.start <= addr <= region.start + region.size:
            self._brk = addr
        return self._brk

    def _mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, off: int) -> int:
        from relink.memory import PROT_READ, PROT_WRITE

        if not flags & 0x20:  # MAP_ANONYMOUS only: there are no files in here
            return -ENOSYS
        size = (length + 0xFFF) & ~0xFFF
        try:
            region = self.emu.reserve(size, address=self._mmap_next)
        except MappingError:
            return -ENOMEM
        region.map_anon(region.start, size, (prot & 7) | PROT_READ | PROT_WRITE)
        self._mmap_next = region.start + size
        return region.start

    def _mmap2(self, addr: int, length: int, prot: int, flags: int, fd: int,
               pgoff: int) -> int:
        return self._mmap(addr, length, prot, flags, fd, pgoff * 4096)

    def _getrandom(self, buf: int, n: int, *_: int) -> int:
        self.emu.write(buf, os.urandom(n))
        return n

    def _clock_gettime(self, clock: int, ts: int, *_: int) -> int:
        now = time.clock_gettime(clock) if clock in (0, 1) else time.time()
        fmt = "<qq" if self.emu.abi.word == 8 else "<ii"
        self.emu.write(ts, struct.pack(fmt, int(now), int((now % 1) * 1e9)))
        return 0

    def _clock_gettime64(self, clock: int, ts: int, *_: int) -> int:
        now = time.clock_gettime(clock) if clock in (0, 1) else time.time()
        self.emu.write(ts, struct.pack("<qq", int(now), int((now % 1) * 1e9)))
        return 0

    def _exit(self, status: int, *_: int) -> int:
        raise TargetExit(status & 0xFF, self.emu.spec.name)  # what wait() would report
