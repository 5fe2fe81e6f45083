"""Per-ISA calling conventions and CPU state for the unicorn emulator backend.

Memory layer, used by `relink.memory.unicorn.Emulator` only. An `Abi` knows, for one
ISA, which unicorn architecture / mode / CPU model to create, how a C call is set up
(argument registers, stack arguments, return address), where the result comes back, how
a *trap* (a Python function called from emulated code) reads its arguments and returns
to its caller, and how the thread pointer is set (TPIDR_EL0, TPIDRURO, tp, FS base, or a
GDT segment for i386 %gs). Only integer and pointer arguments are supported; values are
masked to the target word.

Sources: SysV psABIs for i386 (cdecl, stack args, 16-byte aligned at the call) and
x86-64 (rdi, rsi, rdx, rcx, r8, r9); AAPCS64 (x0-x7, lr = x30); AAPCS (r0-r3, lr, Thumb
by bit 0 of the address); RISC-V psABI (a0-a7, ra; TLSDESC resolvers return through t0).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from relink.errors import UnsupportedError

__all__ = ["Abi", "abi_for"]


@dataclass(frozen=True)
class Abi:
    """One ISA's emulation recipe (unicorn constant names, resolved lazily).

    Attributes:
        name: the ArchSpec name.
        uc_arch / uc_mode / cpu: unicorn constants (names) to create the engine.
        const_module: the unicorn module holding this ISA's register constants.
        reg_prefix: prefix of register constant names (``UC_ARM64_REG_``).
        args: integer argument registers, in order.
        ret: the result register.
        link: the return-address register, or None when the return address is pushed.
        pc / sp: program counter and stack pointer.
        word: the word size in bytes.
        trap: machine code of the instruction that enters a trap (raises an interrupt).
        tlsdesc_link: the register a TLSDESC resolver returns through, if not `link`.
    """

    name: str
    uc_arch: str
    uc_mode: str
    cpu: str | None
    const_module: str
    reg_prefix: str
    args: tuple[str, ...]
    ret: str
    link: str | None
    pc: str
    sp: str
    word: int
    trap: bytes
    tlsdesc_link: str | None = None

    @property
    def mask(self) -> int:
        return (1 << (8 * self.word)) - 1

    # -- registers ---------------------------------------------------------------------

    def reg_id(self, name: str) -> int:
        """The unicorn register id of `name` (``"x0"``, ``"eax"``, ``"a0"`` …)."""
        import importlib

        mod = importlib.import_module(f"unicorn.{self.const_module}")
        rid = getattr(mod, f"{self.reg_prefix}{name.upper()}", None)
        if rid is None:
            raise UnsupportedError(f"no {self.name} register called {name!r}")
        return int(rid)

    def read(self, uc: Any, name: str) -> int:
        return int(uc.reg_read(self.reg_id(name)))

    def write(self, uc: Any, name: str, value: int) -> None:
        uc.reg_write(self.reg_id(name), value & self.mask)

    # -- calls -------------------------------------------------------------------------

    def prepare_call(self, uc: Any, mem: Any, func: int, args: list[int], sentinel: int,
                     stack_top: int) -> int:
        """Set registers and stack for ``func(*args)`` returning to `sentinel`.

        `mem` writes target memory (``mem.write(addr, bytes)``). Returns the address to
        start emulation at (with bit 0 set for an Arm Thumb function).
        """
        fmt = "<Q" if self.word == 8 else "<I"
        reg_args = args[:len(self.args)]
        stack_args = args[len(self.args):]
        if self.link is None:
            # x86: every argument the registers do not take goes on the stack, then the
            # return address; the stack is 16-byte aligned at the call instruction.
            words = [sentinel, *stack_args]
            sp = (stack_top - self.word * len(stack_args)) & ~0xF
            sp -= self.word
            for i, w in enumerate(words):
                mem.write(sp + i * self.word, struct.pack(fmt, w & self.mask))
        else:
            sp = (stack_top - self.word * len(stack_args)) & ~0xF
            for i, w in enumerate(stack_args):
                mem.write(sp + i * self.word, struct.pack(fmt, w & self.mask))
            self.write(uc, self.link, sentinel)
        for reg, value in zip(self.args, reg_args):
            self.write(uc, reg, value)
        self.write(uc, self.sp, sp)
        # Arm: unicorn starts in Thumb state when bit 0 of the start address is set.
        return func

    def result(self, uc: Any) -> int:
        return self.read(uc, self.ret)

    # -- traps -------------------------------------------------------------------------

    def trap_arg(self, uc: Any, mem: Any, i: int) -> int:
        """Argument `i` of the C call that entered a trap stub."""
        if i < len(self.args):
            return self.read(uc, self.args[i])
        sp = self.read(uc, self.sp)
        first = len(self.args)
        skip = self.word if self.link is None else 0  # the pushed return address
        raw = mem.read(sp + skip + (i - first) * self.word, self.word)
        return int.from_bytes(raw, "little")

    def trap_return(self, uc: Any, mem: Any, value: int | None, via: str | None = None) -> None:
        """Return from a trap stub to its caller with `value` in the result register."""
        if value is not None:
            self.write(uc, self.ret, value)
        if self.link is None:
            sp = self.read(uc, self.sp)
            target = int.from_bytes(mem.read(sp, self.word), "little")
            self.write(uc, self.sp, sp + self.word)
        else:
            target = self.read(uc, via or self.link)
        # Arm: writing PC with bit 0 set selects Thumb state (an interworking return),
        # bit 0 clear selects Arm state.
        self.write(uc, self.pc, target)

    def enable_fpu(self, uc: Any) -> None:
        """Switch on VFP/NEON where a reset CPU has it off (Arm: CPACR + FPEXC.EN).

        A target libc (glibc's memcpy, printf) uses vector registers; on a reset Arm
        core they trap as undefined instructions until enabled, as a kernel would.
        """
        if self.name == "arm":
            self.write(uc, "c1_c0_2", self.read(uc, "c1_c0_2") | (0xF << 20))
            self.write(uc, "fpexc", 0x40000000)

    # -- thread pointer ----------------------------------------------------------------

    def set_thread_pointer(self, uc: Any, mem: Any, tp: int, gdt: int) -> None:
        """Make `tp` the thread pointer; `gdt` is scratch memory for an i386 GDT (32 B)."""
        if self.name == "x86_64":
            self.write(uc, "fs_base", tp)
        elif self.name == "x86":
            # 32-bit mode has no writable segment base: load %gs from a flat GDT entry.
            limit, access, flags = 0xFFFFF, 0x80 | 0x60 | 0x10 | 0x2, 0xC
            entry = ((limit & 0xFFFF) | ((tp & 0xFFFFFF) << 16) | (access << 40)
                     | (((limit >> 16) & 0xF) << 48) | (flags << 52) | (((tp >> 24) & 0xFF) << 56))
            flat = ((limit & 0xFFFF) | ((0x80 | 0x10 | 0x2) << 40)
                    | (((limit >> 16) & 0xF) << 48) | (flags << 52))
            mem.write(gdt + 8, struct.pack("<QQ", entry, flat))
            uc.reg_write(self.reg_id("gdtr"), (0, gdt, 4 * 8 - 1, 0))
            self.write(uc, "gs", (1 << 3) | 3)
            # Once a GDT is loaded, %ss needs a flat 32-bit descriptor too (else unicorn
            # treats the stack as 16-bit and pushes land at sp & 0xffff).
            self.write(uc, "ss", 2 << 3)
        elif self.name == "aarch64":
            self.write(uc, "tpidr_el0", tp)
        elif self.name == "arm":
            self.write(uc, "c13_c0_3", tp)  # TPIDRURO, read by mrc p15, 0, rX, c13, c0, 3
        else:  # RISC-V
            self.write(uc, "tp", tp)


_RV_ARGS = ("a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7")

_ABIS: dict[str, Abi] = {
    "x86_64": Abi("x86_64", "UC_ARCH_X86", "UC_MODE_64", None, "x86_const", "UC_X86_REG_",
                  ("rdi", "rsi", "rdx", "rcx", "r8", "r9"), "rax", None, "rip", "rsp", 8,
                  b"\xcd\x80"),                                     # int 0x80
    "x86": Abi("x86", "UC_ARCH_X86", "UC_MODE_32", None, "x86_const", "UC_X86_REG_",
               (), "eax", None, "eip", "esp", 4, b"\xcd\x80"),      # int 0x80
    "aarch64": Abi("aarch64", "UC_ARCH_ARM64", "UC_MODE_ARM", "UC_CPU_ARM64_MAX",
                   "arm64_const", "UC_ARM64_REG_",
                   ("x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7"), "x0", "x30", "pc",
                   "sp", 8, struct.pack("<I", 0xD4000001)),        # svc #0
    "arm": Abi("arm", "UC_ARCH_ARM", "UC_MODE_ARM", "UC_CPU_ARM_CORTEX_A15", "arm_const",
               "UC_ARM_REG_", ("r0", "r1", "r2", "r3"), "r0", "lr", "pc", "sp", 4,
               struct.pack("<I", 0xEF000000)),                      # svc #0 (Arm state)
    "riscv64": Abi("riscv64", "UC_ARCH_RISCV", "UC_MODE_RISCV64", None, "riscv_const",
                   "UC_RISCV_REG_", _RV_ARGS, "a0", "ra", "pc", "sp", 8,
                   struct.pack("<I", 0x00000073), tlsdesc_link="t0"),  # ecall
    "riscv32": Abi("riscv32", "UC_ARCH_RISCV", "UC_MODE_RISCV32", None, "riscv_const",
                   "UC_RISCV_REG_", _RV_ARGS, "a0", "ra", "pc", "sp", 4,
                   struct.pack("<I", 0x00000073), tlsdesc_link="t0"),  # ecall
}


def abi_for(name: str) -> Abi:
    """The emulation recipe for ArchSpec `name`.

    Raises:
        UnsupportedError: unicorn cannot emulate this ISA (loongarch64 and others).
    """
    abi = _ABIS.get(name)
    if abi is None:
        raise UnsupportedError(
            f"the unicorn emulator backend cannot run {name} code (supported: "
            f"{', '.join(sorted(_ABIS))}); load it into a BufferMapper instead")
    return abi
