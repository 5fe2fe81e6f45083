"""The emulator memory backend: images placed straight into a unicorn instance.

Memory layer, optional extra (``pip install relink[emu]``; unicorn is imported only
when an `Emulator` is created). Each region `Emulator.reserve` hands the loader is a
page-aligned host buffer mapped into the emulator with ``uc.mem_map_ptr``, so the
loader's segment copies and the relocation loop's memoryview writes land directly in
the emulated address space — no copy step, and protections are enforced by unicorn.

The `Emulator` is also the foreign runtime: it provides an `Executor` that runs
initializers and IFUNC resolvers inside the emulator, a TLS runtime with a thread
pointer and a static TLS area in emulated memory, and *traps* — Python functions that
emulated code can call as if they were C functions (``__tls_get_addr``, or anything the
user supplies with `Emulator.provide`). `Emulator.call` calls a target function with
integer / pointer / bytes arguments and returns its integer result.

Example::

    emu = Emulator("aarch64")
    lib = relink.load("libleaf.so", memory=emu)
    print(emu.call(lib.symbol("leaf_value")))
    print(lib.function("leaf_add", ctypes.c_int, ctypes.c_int, ctypes.c_int)(1, 2))

Address-space layout (all below 2 GiB so 32-bit targets fit): images from 0x10000000
upward (ET_EXEC at their link address), a scratch heap at 0x60000000, the TLS area at
0x6FE00000, the runtime page (traps, return sentinel, empty argv/envp) at 0x6FF00000 and
the stack below 0x70100000. One emulated thread; calls are not re-entrant.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

from relink.arch import ArchSpec, spec_named
from relink.errors import EmulationError, MappingError, UnsupportedError
from relink.memory import PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE
from relink.memory.buffer import fill_from_file
from relink.memory.emulator_abi import Abi, abi_for

__all__ = ["Emulator", "EmulatorRegion", "Trap"]

HEAP_BASE, HEAP_SIZE = 0x60000000, 0x01000000
TLS_BASE = 0x6FE00000
RUNTIME_BASE, RUNTIME_SIZE = 0x6FF00000, 0x10000
STACK_TOP = 0x70100000
TRAP_SLOT = 16
Trap = Callable[["Emulator"], "int | None"]


def _import_unicorn() -> Any:
    try:
        import unicorn
    except ImportError as exc:
        raise UnsupportedError("the emulator backend needs the unicorn package: "
                               "pip install 'relink[emu]'") from exc
    return unicorn


class EmulatorRegion:
    """A span of emulated memory backed by a host buffer. See `relink.memory.Region`."""

    def __init__(self, emu: Emulator, start: int, size: int) -> None:
        self.emu = emu
        self.start = start
        self.size = size
        page = emu.page_size
        # A bytearray with room to align: unicorn maps the buffer at page granularity.
        self._raw = bytearray(size + page)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self._raw))
        skew = -addr % page
        self._buf = (ctypes.c_ubyte * size).from_buffer(self._raw, skew)
        self._view: memoryview | None = memoryview(self._buf).cast("B")
        self.released = False
        emu.uc.mem_map_ptr(start, size, PROT_NONE, ctypes.addressof(self._buf))

    def _off(self, addr: int, size: int) -> int:
        off = addr - self.start
        if off < 0 or size < 0 or off + size > self.size or self._view is None:
            raise MappingError(f"{size:#x} bytes at {addr:#x} are outside the emulator "
                               f"region {self.start:#x}-{self.start + self.size:#x}",
                               op="access", address=addr)
        return off

    def map_file(self, addr: int, size: int, fd: int, offset: int, prot: int) -> None:
        off = self._off(addr, size)
        assert self._view is not None
        fill_from_file(self._view, off, addr, size, fd, offset)
        self.protect(addr, size, prot)

    def map_anon(self, addr: int, size: int, prot: int) -> None:
        off = self._off(addr, size)
        assert self._view is not None
        self._view[off:off + size] = bytes(size)
        self.protect(addr, size, prot)

    def protect(self, addr: int, size: int, prot: int) -> None:
        self._off(addr, size)
        self.emu.uc.mem_protect(addr, size, prot & (PROT_READ | PROT_WRITE | PROT_EXEC))
        self.emu.dirty = True

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        off = self._off(addr, len(data))
        assert self._view is not None
        self._view[off:off + len(data)] = data
        self.emu.dirty = True

    def read(self, addr: int, size: int) -> bytes:
        off = self._off(addr, size)
        assert self._view is not None
        return bytes(self._view[off:off + size])

    def view(self) -> memoryview:
        if self._view is None:
            raise MappingError("emulator region was released", op="access",
                               address=self.start)
        return self._view

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.emu._unmap(self)
        self._view = None

    def __repr__(self) -> str:
        return f"<EmulatorRegion {self.emu.spec.name} {self.start:#x}-{self.start + self.size:#x}>"


class Emulator:
    """A unicorn instance as relink's memory backend and foreign runtime.

    Args:
        arch: an ArchSpec name (``"aarch64"``, ``"arm"``, ``"x86"``, ``"x86_64"``,
            ``"riscv64"``, ``"riscv32"``) or an ArchSpec.
        base: where the first image without a fixed address goes.
        stack_size: bytes of emulated stack.
        tls_size: bytes of the static TLS area (all modules' TLS blocks live there).
        max_instructions: default instruction budget of one call (0 = unlimited).
        syscalls: None (a system call is an EmulationError) or ``"linux"``: answer the
            few Linux calls a target libc makes in-process (brk, anonymous mmap,
            getrandom, write to fd 1/2 captured, …; see `emulator_syscalls`).

    Attributes:
        spec: the target ArchSpec; abi: its calling convention; uc: the unicorn engine.
        page_size: 4 KiB. native: False (nothing here runs on the host).
        executor / tls / providers: what `relink.load` uses for this backend.
    """

    native = False
    page_size = 0x1000

    def __init__(self, arch: str | ArchSpec, *, base: int = 0x10000000,
                 stack_size: int = 0x100000, tls_size: int = 0x10000,
                 max_instructions: int = 50_000_000, syscalls: str | None = None) -> None:
        spec = arch if isinstance(arch, ArchSpec) else spec_named(arch)
        if spec is None:
            raise UnsupportedError(f"unknown architecture {arch!r}")
        self.spec: ArchSpec = spec
        self.abi: Abi = abi_for(spec.name)
        uc_mod = _import_unicorn()
        self._uc_mod = uc_mod
        self.uc = uc_mod.Uc(getattr(uc_mod, self.abi.uc_arch), getattr(uc_mod, self.abi.uc_mode))
        if self.abi.cpu is not None:
            self.uc.ctl_set_cpu_model(getattr(self._cpu_consts(), self.abi.cpu))
        self.abi.enable_fpu(self.uc)
        self.max_instructions = max_instructions
        self.dirty = True
        self._next = base
        self._regions: list[EmulatorRegion] = []
        self._traps: dict[int, tuple[str, Trap]] = {}
        self._trap_names: dict[str, int] = {}
        self._error: BaseException | None = None
        self._fault: tuple[int, int] | None = None
        self._running = False
        # The emulator's own areas: runtime page (traps, sentinel, argv), stack, heap.
        self._runtime = self._own(RUNTIME_BASE, RUNTIME_SIZE, PROT_READ | PROT_EXEC)
        self._stack = self._own(STACK_TOP - stack_size, stack_size, PROT_READ | PROT_WRITE)
        self._heap: EmulatorRegion | None = None
        self._heap_next = HEAP_BASE
        self._trap_next = RUNTIME_BASE + 0x100
        self.sentinel = RUNTIME_BASE
        self._runtime.write(self.sentinel, self.abi.trap)
        # argv = {NULL}, envp = {NULL} for initializers (a foreign image never sees
        # the host's argv).
        self.empty_vector = RUNTIME_BASE + 0x40
        self.gdt = RUNTIME_BASE + 0x80  # i386 only: the GDT holding the %gs segment
        self.uc.hook_add(uc_mod.UC_HOOK_INTR, self._on_interrupt)
        self.uc.hook_add(uc_mod.UC_HOOK_MEM_INVALID, self._on_invalid)
        if self.abi.uc_arch == "UC_ARCH_X86":
            # syscall / sysenter are instructions, not interrupts, in unicorn: without a
            # hook they would silently do nothing.
            from unicorn import x86_const

            for insn in (x86_const.UC_X86_INS_SYSCALL, x86_const.UC_X86_INS_SYSENTER):
                self.uc.hook_add(uc_mod.UC_HOOK_INSN, self._on_syscall_insn, None, 1, 0, insn)
        from relink.runtime.emulator import EmulatorExecutor, EmulatorTls, TrapProvider

        self.syscalls: Any = None
        if syscalls == "linux":
            from relink.memory.emulator_syscalls import LinuxSyscalls

            self.syscalls = LinuxSyscalls(self)
        elif syscalls is not None:
            raise UnsupportedError(f"unknown system-call layer {syscalls!r} (use 'linux')")
        self.tls = EmulatorTls(self, TLS_BASE, tls_size)
        self.executor = EmulatorExecutor(self)
        self.runtime = TrapProvider(self)
        self.providers = [self.runtime]

    def _cpu_consts(self) -> Any:
        import importlib

        return importlib.import_module(f"unicorn.{self.abi.const_module}")

    # -- Mapper protocol ----------------------------------------------------------------

    def _own(self, start: int, size: int, prot: int) -> EmulatorRegion:
        region = EmulatorRegion(self, start, size)
        region.protect(start, size, prot)
        self._regions.append(region)
        return region

    def _overlaps(self, start: int, size: int) -> EmulatorRegion | None:
        for r in self._regions:
            if not r.released and start < r.start + r.size and r.start < start + size:
                return r
        return None

    def reserve(self, size: int, *, address: int | None = None,
                fixed: bool = False) -> EmulatorRegion:
        """Reserve `size` bytes of emulated address space (inaccessible until mapped)."""
        page = self.page_size
        size = (size + page - 1) & ~(page - 1)
        start = address if address is not None else self._next
        if start % page:
            raise MappingError(f"address {start:#x} is not page aligned", op="reserve",
                               address=start)
        limit = 1 << (8 * self.abi.word)
        while True:
            clash = self._overlaps(start, size)
            if clash is None:
                break
            if fixed:
                raise MappingError(f"fixed address {start:#x}-{start + size:#x} overlaps "
                                   f"{clash!r} in the emulator", op="reserve", address=start)
            start = (clash.start + clash.size + 0xFFFF) & ~0xFFFF
        if start + size > limit:
            raise MappingError(f"no room for {size:#x} bytes in the {self.spec.name} "
                               "address space", op="reserve", address=start)
        region = EmulatorRegion(self, start, size)
        self._regions.append(region)
        if address is None or not fixed:
            self._next = max(self._next, (start + size + 0xFFFF) & ~0xFFFF)
        return region

    def _unmap(self, region: EmulatorRegion) -> None:
        self.uc.mem_unmap(region.start, region.size)
        self.uc.ctl_remove_cache(region.start, region.start + region.size)
        if region in self._regions:
            self._regions.remove(region)

    def _region_at(self, addr: int, size: int) -> EmulatorRegion:
        for r in self._regions:
            if not r.released and r.start <= addr and addr + size <= r.start + r.size:
                return r
        raise MappingError(f"{size:#x} bytes at {addr:#x} are not mapped in the emulator",
                           op="access", address=addr)

    # -- memory helpers -----------------------------------------------------------------

    def read(self, addr: int, size: int) -> bytes:
        """Read emulated memory (any mapped region)."""
        return self._region_at(addr, size).read(addr, size)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write emulated memory (ignores page protections, like a debugger)."""
        self._region_at(addr, len(data)).write(addr, data)

    def host_view(self, addr: int, size: int) -> memoryview:
        """A writable host memoryview aliasing ``[addr, addr + size)`` of emulated memory."""
        r = self._region_at(addr, size)
        return r.view()[addr - r.start:addr - r.start + size]

    def read_word(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, self.abi.word), "little")

    def read_cstring(self, addr: int, limit: int = 1 << 16) -> bytes:
        """The NUL-terminated byte string at `addr` (without the NUL)."""
        r = self._region_at(addr, 1)
        end = min(r.start + r.size, addr + limit)
        data = r.read(addr, end - addr)
        n = data.find(b"\0")
        return data if n < 0 else data[:n]

    def alloc(self, size: int, align: int = 16) -> int:
        """Bump-allocate `size` bytes of read/write emulated heap; returns the address."""
        if self._heap is None:
            self._heap = self._own(HEAP_BASE, HEAP_SIZE, PROT_READ | PROT_WRITE)
        at = (self._heap_next + align - 1) & ~(align - 1)
        if at + size > HEAP_BASE + HEAP_SIZE:
            raise MappingError(f"emulator heap exhausted ({HEAP_SIZE:#x} bytes)",
                               op="alloc", address=at)
        self._heap_next = at + size
        return at

    def put(self, data: bytes | str) -> int:
        """Copy bytes (a str is UTF-8 encoded and NUL-terminated) to the heap."""
        raw = data.encode() + b"\0" if isinstance(data, str) else bytes(data)
        at = self.alloc(max(len(raw), 1))
        self.write(at, raw)
        return at

    def reg(self, name: str) -> int:
        """Read a register by name (``"x0"``, ``"eax"``, ``"a0"``, ``"pc"`` …)."""
        return self.abi.read(self.uc, name)

    def arg(self, i: int) -> int:
        """Inside a trap: integer argument `i` of the call that entered it."""
        return self.abi.trap_arg(self.uc, self, i)

    # -- traps: Python functions callable from emulated code ----------------------------

    def trap(self, name: str, func: Trap) -> int:
        """Make `func(emulator)` callable from emulated code; returns its address.

        The trap is a tiny stub in the runtime page; when emulated code calls it, `func`
        runs with the emulator (read arguments with `arg`), and its integer result is
        returned to the caller in the ABI's result register (None leaves it unchanged).
        """
        existing = self._trap_names.get(name)
        if existing is not None:
            self._traps[existing] = (name, func)
            return existing
        at = self._trap_next
        if at + TRAP_SLOT > RUNTIME_BASE + RUNTIME_SIZE:
            raise MappingError("no room for more traps in the emulator runtime page",
                               op="trap", address=at)
        self._trap_next += TRAP_SLOT
        self._runtime.write(at, self.abi.trap)
        self._traps[at] = (name, func)
        self._trap_names[name] = at
        return at

    def runtime_code(self, code: bytes) -> int:
        """Place a small piece of machine code in the runtime page; returns its address."""
        at = self._trap_next
        if len(code) > TRAP_SLOT or at + TRAP_SLOT > RUNTIME_BASE + RUNTIME_SIZE:
            raise MappingError("no room for runtime code in the emulator runtime page",
                               op="trap", address=at)
        self._trap_next += TRAP_SLOT
        self._runtime.write(at, code)
        return at

    def provide(self, name: str, func: Callable[..., int | None], nargs: int = 0) -> int:
        """Define symbol `name` for images loaded later as a Python function.

        `func(*args)` receives `nargs` integer arguments (pointers are target
        addresses: read them with `read` / `read_cstring`) and returns an int or None.
        """
        def trap(emu: Emulator) -> int | None:
            return func(*(emu.arg(i) for i in range(nargs)))

        return self.trap(name, trap)

    def _on_interrupt(self, uc: Any, intno: int, _user: Any) -> None:
        pc = self.abi.read(uc, self.abi.pc)
        slot = RUNTIME_BASE + ((pc - RUNTIME_BASE) // TRAP_SLOT) * TRAP_SLOT
        entry = self._traps.get(slot) if RUNTIME_BASE <= pc < RUNTIME_BASE + RUNTIME_SIZE \
            else None
        if entry is None:
            if self.syscalls is not None and intno == self.syscalls.intno:
                self._syscall(uc)
                return
            self._error = EmulationError(
                f"unexpected interrupt {intno} (a system call or trap instruction) in "
                f"emulated {self.spec.name} code" + self._syscall_hint(), arch=self.spec.name,
                pc=pc)
            uc.emu_stop()
            return
        name, func = entry
        try:
            value = func(self)
            via = getattr(func, "return_via", None)
            self.abi.trap_return(uc, self, value, via)
        except BaseException as exc:  # surfaced by call() after emu_stop
            self._error = exc
            uc.emu_stop()

    def _on_syscall_insn(self, uc: Any, _user: Any) -> None:
        if self.syscalls is not None and self.spec.name == "x86_64":
            self._syscall(uc)
            return
        self._error = EmulationError(
            f"emulated {self.spec.name} code made a system call, which the emulator "
            "backend does not implement" + self._syscall_hint(), arch=self.spec.name,
            pc=self.abi.read(uc, self.abi.pc))
        uc.emu_stop()

    def _syscall_hint(self) -> str:
        return "" if self.syscalls is not None else \
            " (Emulator(..., syscalls='linux') answers the few a libc makes)"

    def _syscall(self, uc: Any) -> None:
        try:
            self.syscalls.handle()
        except BaseException as exc:  # surfaced by call() after emu_stop
            self._error = exc
            uc.emu_stop()

    def _on_invalid(self, uc: Any, access: int, address: int, size: int, value: int,
                    _user: Any) -> bool:
        self._fault = (access, address)
        return False

    # -- calling target code --------------------------------------------------------------

    def _prepare(self) -> None:
        if self.dirty:
            # Translated blocks may be stale after the loader wrote code pages.
            for r in self._regions:
                self.uc.ctl_remove_cache(r.start, r.start + r.size)
            self.dirty = False
        self.tls.activate()

    def call(self, func: int, *args: int | bytes | str, max_instructions: int | None = None,
             timeout_us: int = 0, signed: bool = False) -> int:
        """Call the target function at `func` with integer arguments; return its result.

        bytes / str arguments are copied (NUL-terminated) to the emulator heap and passed
        as pointers.
        The result is the ABI result register masked to the word (`signed` converts it).

        Raises:
            EmulationError: the code faulted, hit an unknown interrupt, or did not
                return within the instruction budget / timeout.
        """
        if self._running:
            raise EmulationError("Emulator.call is not re-entrant (called from a trap?)",
                                 arch=self.spec.name)
        # bytes are copied with a trailing NUL (C strings work; buffers do not mind).
        ints = [self.put(a if isinstance(a, str) else bytes(a) + b"\0")
                if isinstance(a, (bytes, bytearray, str)) else int(a) for a in args]
        self._prepare()
        start = self.abi.prepare_call(self.uc, self, func, ints, self.sentinel,
                                      self._stack.start + self._stack.size - 64)
        self._error = None
        self._fault = None
        budget = self.max_instructions if max_instructions is None else max_instructions
        self._running = True
        try:
            self.uc.emu_start(start, self.sentinel, timeout=timeout_us, count=budget)
        except self._uc_mod.UcError as exc:
            if self._error is None:
                self._error = self._fault_error(str(exc))
        finally:
            self._running = False
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        pc = self.abi.read(self.uc, self.abi.pc)
        if pc & ~1 != self.sentinel:
            raise EmulationError(
                f"call to {func:#x} did not return within {budget} instructions"
                + (f" / {timeout_us} us" if timeout_us else ""), arch=self.spec.name, pc=pc)
        value = self.abi.result(self.uc) & self.abi.mask
        if signed and value >> (8 * self.abi.word - 1):
            value -= 1 << (8 * self.abi.word)
        return value

    def _fault_error(self, what: str) -> EmulationError:
        pc = self.abi.read(self.uc, self.abi.pc)
        where = self.describe(pc)
        if self._fault is not None:
            access, address = self._fault
            kind = {19: "read of unmapped", 20: "write to unmapped", 21: "fetch from unmapped",
                    22: "write to protected", 23: "read of protected",
                    24: "fetch from non-executable"}.get(access, "invalid access to")
            return EmulationError(f"{what}: {kind} memory at {address:#x} (pc {pc:#x}"
                                  f"{where})", arch=self.spec.name, pc=pc, address=address)
        return EmulationError(f"{what} (pc {pc:#x}{where})", arch=self.spec.name, pc=pc)

    def describe(self, addr: int) -> str:
        """`` in <trap name>`` / `` in runtime page`` for diagnostics, else ``""``."""
        slot = RUNTIME_BASE + ((addr - RUNTIME_BASE) // TRAP_SLOT) * TRAP_SLOT
        if slot in self._traps:
            return f" in trap {self._traps[slot][0]}"
        return ""

    def function(self, addr: int, name: str, restype: Any,
                 argtypes: Sequence[Any]) -> Callable[..., Any]:
        """A Python callable running ``restype name(*argtypes)`` in the emulator.

        Used by `Module.function` for foreign images. Integer / pointer ctypes types
        only; ``c_char_p`` results are read from emulated memory as bytes.
        """
        return _EmulatedFunction(self, addr, name, restype, tuple(argtypes))

    def close(self) -> None:
        """Unmap everything still mapped: the emulator's own areas and any image whose
        load was not closed first. Close loads before the emulator so their
        finalizers can still run in it."""
        for r in list(self._regions):
            r.release()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<relink.Emulator {self.spec.name} {len(self._regions)} regions>"


class _EmulatedFunction:
    """What `Module.function` returns for a foreign image: a call into the emulator."""

    def __init__(self, emu: Emulator, addr: int, name: str, restype: Any,
                 argtypes: tuple[Any, ...]) -> None:
        for t in (restype, *argtypes):
            if t is not None and t not in _INT_TYPES and t is not ctypes.c_char_p:
                raise UnsupportedError(f"{name}: only integer and pointer types can be "
                                       f"passed to emulated code, not {t.__name__}")
        self.emu, self.addr, self.__name__ = emu, addr, name
        self.restype, self.argtypes = restype, argtypes

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(self.argtypes):
            raise TypeError(f"{self.__name__}() takes {len(self.argtypes)} arguments "
                            f"({len(args)} given)")
        raw = self.emu.call(self.addr, *args)
        t = self.restype
        if t is None:
            return None
        if t is ctypes.c_char_p:
            return self.emu.read_cstring(raw) if raw else None
        # Host and target sizes differ for long / size_t / pointers on 32-bit targets.
        bits = min(8 * ctypes.sizeof(t), 8 * self.emu.abi.word)
        value = raw & ((1 << bits) - 1)
        if t in _SIGNED and value >> (bits - 1):
            value -= 1 << bits
        if t is ctypes.c_bool:
            return bool(value)
        return value

    def __repr__(self) -> str:
        return f"<emulated function {self.__name__} at {self.addr:#x}>"


_SIGNED = (ctypes.c_int, ctypes.c_long, ctypes.c_longlong, ctypes.c_short, ctypes.c_byte,
           ctypes.c_int8, ctypes.c_int16, ctypes.c_int32, ctypes.c_int64, ctypes.c_ssize_t)
_INT_TYPES = (*_SIGNED, ctypes.c_uint, ctypes.c_ulong, ctypes.c_ulonglong, ctypes.c_ushort,
              ctypes.c_ubyte, ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32,
              ctypes.c_uint64, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_bool,
              ctypes.c_char)
