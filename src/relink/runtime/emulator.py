"""Foreign-image runtime: TLS policy, executor and runtime symbols for emulated targets.

Runtime layer. A foreign image never runs on the host, but its relocations still need
a TLS layout and its initializers / IFUNC resolvers still need to run somewhere:

* `ForeignTls` is the TLS policy for foreign images (any memory backend): it gives
  every module with PT_TLS a module id and a place in one *static* TLS area laid out
  as the target's ABI says — variant I (block after the TCB: aarch64 16-byte TCB, arm
  8-byte TCB, RISC-V and LoongArch none) or variant II (blocks below the thread pointer,
  which points at a TCB whose first word is itself: x86, x86_64). DTPMOD, DTPOFF, TPOFF
  and TLSDESC (static descriptors: the argument is the offset from the thread pointer)
  all derive from that layout, so GD, LD, IE and TLSDESC code agree.
* `EmulatorTls` materializes that layout in an `Emulator`: a TLS area holding each
  module's initialization image, the thread pointer register, and traps for
  ``__tls_get_addr`` (``___tls_get_addr`` on i386, ``__aeabi_read_tp`` on arm) and the
  TLSDESC resolver.
* `EmulatorExecutor` runs initializers, finalizers and IFUNC resolvers in the emulator.
* `TrapProvider` is the symbol provider for the emulator's runtime functions.
* `run_main` runs ``exit(main(argc, argv, envp))`` of a program linked into an emulator.

One emulated thread: every module gets one static block (no dynamic TLS, no DTV).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relink.arch import ArchSpec
from relink.errors import TlsError, UnsupportedError
from relink.relocation.dynamic import TlsHooks
from relink.state import ModuleState

if TYPE_CHECKING:
    from relink.memory.unicorn import Emulator

__all__ = ["EmulatorExecutor", "EmulatorTls", "ForeignTls", "TlsBlock", "TlsLayout",
           "TrapProvider", "run_main", "tls_layout"]

STT_FUNC = 2
THREAD_PAGE = 0x1000
MAX_MODULES = 62  # DTV slots of the emulated thread


@dataclass(frozen=True)
class TlsLayout:
    """How an ISA places static TLS relative to the thread pointer.

    Attributes:
        variant: 1 (blocks above the thread pointer, after `tcb_size` bytes) or 2
            (blocks below it).
        tcb_size: bytes between the thread pointer and the first block (variant I), or
            the TCB size above the thread pointer (variant II; its first word is tp).
        dtv_offset: the bias of DTPOFF values (0x800 on RISC-V).
    """

    variant: int
    tcb_size: int
    dtv_offset: int


def tls_layout(spec: ArchSpec) -> TlsLayout:
    """The static TLS layout of `spec`'s ABI (glibc's TLS_TCB_SIZE / TLS_DTV_AT_TP)."""
    if spec.tls_variant == 2:
        return TlsLayout(2, spec.word_size, spec.tls_dtv_offset)
    return TlsLayout(1, {"aarch64": 16, "arm": 8}.get(spec.name, 0), spec.tls_dtv_offset)


@dataclass
class TlsBlock:
    """One module's place in the static TLS area."""

    state: ModuleState
    module_id: int
    tpoff: int          # block start - thread pointer
    size: int
    align: int


class ForeignTls(TlsHooks):
    """TLS policy for foreign images: module ids and a static layout per ISA variant.

    Args:
        size: bytes of the static TLS area (all blocks must fit).
        thread_pointer: the target address of the thread pointer, when a backend has
            one (needed only for `symbol_address`).
        tlsdesc_function: target address of a static TLSDESC resolver (returns the
            descriptor's second word); without one, TLSDESC relocations fail clearly.
    """

    def __init__(self, size: int = 0x10000, *, thread_pointer: int | None = None,
                 tlsdesc_function: int | None = None) -> None:
        self.size = size
        self.thread_pointer = thread_pointer
        self._tlsdesc_function = tlsdesc_function
        self.layout: TlsLayout | None = None
        self.spec: ArchSpec | None = None
        self.blocks: dict[int, TlsBlock] = {}
        self.by_id: dict[int, TlsBlock] = {}
        self._cursor: int | None = None
        self._next_id = 1

    def block(self, prov: Any) -> TlsBlock:
        """The TLS block of provider `prov`, placing it on first use."""
        found = self.blocks.get(id(prov))
        if found is not None:
            return found
        if not isinstance(prov, ModuleState):
            raise TlsError(f"{getattr(prov, 'name', prov)!r} is not a relink-loaded module, "
                           "so relink cannot give it a TLS block in a foreign address space")
        image = prov.image
        ph = image.tls
        if ph is None:
            raise TlsError("a TLS relocation refers to this module, which has no PT_TLS "
                           "segment", file=image.label)
        spec = image.spec
        if self.spec is None:
            self.spec, self.layout = spec, tls_layout(spec)
        elif spec is not self.spec:
            raise TlsError(f"this TLS runtime serves {self.spec.name}, not {spec.name}",
                           file=image.label)
        layout = self.layout
        assert layout is not None
        align = max(ph.p_align, 1)
        if align & (align - 1) or align > 0x1000:
            raise TlsError(f"unsupported PT_TLS alignment {ph.p_align}", file=image.label)
        if self._cursor is None:
            self._cursor = layout.tcb_size if layout.variant == 1 else 0
        if layout.variant == 1:
            off = (self._cursor + align - 1) & ~(align - 1)
            end = off + ph.p_memsz
            tpoff = off
        else:
            off = (self._cursor + ph.p_memsz + align - 1) & ~(align - 1)
            end = off
            tpoff = -off
        if end > self.size:
            raise TlsError(f"the static TLS area ({self.size:#x} bytes) is full: cannot "
                           f"place {ph.p_memsz:#x} more bytes (raise tls_size)",
                           file=image.label)
        self._cursor = end
        blk = TlsBlock(prov, self._next_id, tpoff, ph.p_memsz, align)
        self._next_id += 1
        self.blocks[id(prov)] = blk
        self.by_id[blk.module_id] = blk
        prov.tls_runtime = self  # ModuleState.symbol reads it
        prov.extras.append(lambda: self._forget(prov))
        self._placed(blk)
        return blk

    def _placed(self, blk: TlsBlock) -> None:
        """Hook for backends that hold the TLS area (copy the initialization image)."""

    def _forget(self, prov: ModuleState) -> None:
        blk = self.blocks.pop(id(prov), None)
        if blk is not None:
            self.by_id.pop(blk.module_id, None)

    # -- TlsHooks ------------------------------------------------------------------------

    def dtpmod(self, provider: Any) -> int:
        return self.block(provider).module_id

    def dtpoff(self, provider: Any, offset: int) -> int:
        self.block(provider)
        return offset

    def tpoff(self, provider: Any, offset: int) -> int:
        return self.block(provider).tpoff + offset

    def tlsdesc(self, module: ModuleState, provider: Any, offset: int) -> tuple[int, int]:
        blk = self.block(provider)
        spec = module.image.spec
        func = self.tlsdesc_function(spec)
        return func, (blk.tpoff + offset) & ((1 << (8 * spec.word_size)) - 1)

    def tlsdesc_function(self, spec: ArchSpec) -> int:
        """Target address of the static TLSDESC resolver."""
        if self._tlsdesc_function is None:
            raise UnsupportedError(
                f"TLSDESC relocations need a resolver function in the {spec.name} address "
                "space: use the emulator backend or pass tlsdesc_function= to ForeignTls")
        return self._tlsdesc_function

    def initial_image(self) -> tuple[int, bytes]:
        """(target address, bytes) of the static TLS area at `thread_pointer`.

        Every placed block holds its module's initialization image (.tdata, zeroed
        .tbss); for variant II the TCB's first word (at the thread pointer) points to
        itself. A backend or an external runner (a qemu snapshot, a remote target)
        writes this to the target before running code that uses TLS.
        """
        tp = self.thread_pointer
        if tp is None or self.spec is None or self.layout is None:
            raise TlsError("no thread pointer (or no TLS block placed yet)")
        word = self.spec.word_size
        used = self._cursor or 0
        if self.layout.variant == 1:
            start, buf = tp, bytearray(max(used, self.layout.tcb_size))
        else:
            start, buf = tp - used, bytearray(used + word)
            buf[used:used + word] = tp.to_bytes(word, "little")
        for blk in self.blocks.values():
            image = blk.state.image
            ph = image.tls
            assert ph is not None
            init = image.region.read(image.base + ph.p_vaddr, ph.p_filesz) \
                if ph.p_filesz else b""
            at = tp + blk.tpoff - start
            buf[at:at + blk.size] = init + bytes(blk.size - len(init))
        return start, bytes(buf)

    def address(self, state: ModuleState, offset: int) -> int:
        """Target address of byte `offset` of `state`'s TLS block (one thread)."""
        if self.thread_pointer is None:
            raise TlsError("this TLS runtime has no thread pointer in the target",
                           file=state.image.label)
        return self.thread_pointer + self.block(state).tpoff + offset

    def symbol_address(self, state: ModuleState, name: str, version: str | None) -> int:
        """Target address of TLS variable `name` of `state` (`ModuleState.symbol` hook)."""
        found = state.lookup(name, version, exact=version is not None)
        if found is None:
            raise TlsError(f"no TLS symbol {name!r}", file=state.image.label)
        return self.address(state, found[0] - state.base)


class EmulatorTls(ForeignTls):
    """`ForeignTls` materialized inside an `Emulator` (TLS area, tp, traps)."""

    def __init__(self, emu: Emulator, base: int, size: int) -> None:
        super().__init__(size)
        from relink.memory import PROT_READ, PROT_WRITE

        self.emu = emu
        self.spec = emu.spec
        self.layout = tls_layout(emu.spec)
        # One zeroed, writable page beside the blocks for the thread descriptor a libc
        # keeps next to tp (glibc's struct pthread: above tp for variant II, below it
        # for variant I), so a target libc loaded into the emulator finds memory there.
        size = (size + THREAD_PAGE - 1) & ~(THREAD_PAGE - 1)  # self.size stays the limit
        self.area = emu._own(base, size + 2 * THREAD_PAGE, PROT_READ | PROT_WRITE)
        word = emu.abi.word
        if self.layout.variant == 2:
            # tp at the top; its TCB's first word points to itself (%fs:0 / %gs:0), and
            # so does the third (glibc's tcbhead_t.self, read by THREAD_SELF).
            self.thread_pointer = tp = base + size + THREAD_PAGE
            emu.write(tp, tp.to_bytes(word, "little"))
            emu.write(tp + 2 * word, tp.to_bytes(word, "little"))
            if emu.spec.name == "x86":
                # i386 glibc enters the kernel through ``call *%gs:0x10`` (sysinfo).
                entry = emu.runtime_code(b"\xcd\x80\xc3")  # int $0x80; ret
                emu.write(tp + 0x10, entry.to_bytes(4, "little"))
        else:
            self.thread_pointer = base + THREAD_PAGE
        name = emu.spec.name
        # A glibc-shaped DTV (generation 0, one {block, to_free} pair per module id),
        # so a target ld.so's own __tls_get_addr finds the same blocks as relink's.
        # It lives in the area's spare page (above the blocks for variant I, below them
        # for variant II).
        spare = base + size + THREAD_PAGE if self.layout.variant == 1 else base
        self.dtv = spare + 2 * word
        emu.write(self.dtv - 2 * word, (MAX_MODULES).to_bytes(word, "little"))
        slot = {"x86_64": word, "x86": word, "aarch64": 0, "arm": 0}.get(name, -2 * word)
        emu.write(self.thread_pointer + slot, self.dtv.to_bytes(word, "little"))
        self._get_addr_trap("__tls_get_addr", arg_reg=None)
        if name == "x86":
            self._get_addr_trap("___tls_get_addr", arg_reg="eax")  # GNU i386: regparm
        if name == "arm":
            emu.trap("__aeabi_read_tp", lambda e: self.thread_pointer)
        desc_reg = "rax" if name == "x86_64" else emu.abi.ret

        def tlsdesc_return(e: Emulator) -> int:
            return e.read_word(e.reg(desc_reg) + e.abi.word)

        tlsdesc_return.return_via = emu.abi.tlsdesc_link  # type: ignore[attr-defined]
        self._desc_trap = (desc_reg, tlsdesc_return)

    def _get_addr_trap(self, name: str, arg_reg: str | None) -> None:
        def get_addr(e: Emulator) -> int:
            ti = e.reg(arg_reg) if arg_reg else e.arg(0)
            word = e.abi.word
            mod, off = e.read_word(ti), e.read_word(ti + word)
            blk = self.by_id.get(mod)
            if blk is None:
                raise TlsError(f"{name} called with unknown TLS module id {mod}")
            assert self.layout is not None and self.thread_pointer is not None
            return self.thread_pointer + blk.tpoff + off + self.layout.dtv_offset

        self.emu.trap(name, get_addr)

    def tlsdesc_function(self, spec: ArchSpec) -> int:
        return self.emu.trap("_dl_tlsdesc_return", self._desc_trap[1])

    def _placed(self, blk: TlsBlock) -> None:
        image = blk.state.image
        ph = image.tls
        assert ph is not None and self.thread_pointer is not None
        at = self.thread_pointer + blk.tpoff
        init = image.region.read(image.base + ph.p_vaddr, ph.p_filesz) if ph.p_filesz else b""
        self.emu.write(at, init + bytes(blk.size - len(init)))
        if blk.module_id > MAX_MODULES:
            raise TlsError(f"more than {MAX_MODULES} TLS modules in one emulator",
                           file=image.label)
        word = self.emu.abi.word
        self.emu.write(self.dtv + 2 * word * blk.module_id,
                       at.to_bytes(word, "little") + bytes(word))

    def relocated(self, module: ModuleState) -> None:
        # The module's PT_TLS image is final now (its own relocations may patch .tdata).
        blk = self.blocks.get(id(module))
        if blk is not None:
            self._placed(blk)

    def activate(self) -> None:
        """Load the thread pointer register (before every call into the emulator)."""
        assert self.thread_pointer is not None
        self.emu.abi.set_thread_pointer(self.emu.uc, self.emu, self.thread_pointer,
                                        self.emu.gdt)


class EmulatorExecutor:
    """Runs target code (initializers, finalizers, IFUNC resolvers) in an `Emulator`."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def call_ifunc(self, resolver: int) -> int:
        # glibc passes (hwcap, hwcap2 / __ifunc_arg_t*); an emulated CPU has none to offer.
        return self.emu.call(resolver, 0, 0)

    def call_init(self, func: int, argc: int, argv: int, envp: int) -> None:
        if not argv:
            argv = envp = self.emu.empty_vector
        self.emu.call(func, argc, argv, envp)

    def call_fini(self, func: int) -> None:
        self.emu.call(func)


class TrapProvider:
    """Symbol provider for the emulator's runtime functions and `Emulator.provide`."""

    is_host = True
    path: str | None = None
    soname: str | None = None

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.name = f"<{emu.spec.name} emulator runtime>"
        self.identity = ("emulator", id(emu))

    def lookup(self, name: str, version: str | None,
               exact: bool = False) -> tuple[int, int, int] | None:
        addr = self.emu._trap_names.get(name)
        return (addr, 0, STT_FUNC) if addr is not None else None

    def read(self, addr: int, size: int) -> bytes:
        return self.emu.read(addr, size)

    def __repr__(self) -> str:
        return f"<TrapProvider {self.name}>"


def _symtab_value(path: str | None, name: str) -> int | None:
    """st_value of `name` in a file's static .symtab (executables rarely export main)."""
    if path is None:
        return None
    import struct

    from relink.elf import ElfFile

    with ElfFile(path) as elf:
        symtab, strtab = elf.section(".symtab"), elf.section(".strtab")
        if symtab is None or strtab is None:
            return None
        syms, strs = bytes(elf.section_data(symtab)), bytes(elf.section_data(strtab))
        is64 = elf.header.elf_class == 64
    fmt, size = ("<IBBHQQ", 24) if is64 else ("<IIIBBH", 16)
    want = name.encode()
    for off in range(0, len(syms) - size + 1, size):
        fields = struct.unpack_from(fmt, syms, off)
        st_name = fields[0]
        value = fields[4] if is64 else fields[1]
        info = fields[1] if is64 else fields[3]
        if info & 0xF == STT_FUNC and strs[st_name:st_name + len(want) + 1] == want + b"\0":
            return int(value)
    return None


def run_main(module: Any, argv: Sequence[str | bytes] = (),
             env: Mapping[str, str] | None = None) -> int:
    """Run ``exit(main(argc, argv, envp))`` of an executable loaded into an `Emulator`.

    relink has already linked the program and run its and its libraries' initializers
    (a target glibc's included), so this is what ``__libc_start_main`` does after
    that: call main, then the libc's ``exit`` (atexit handlers, stdio flush), whose
    exit_group ends the run. `main` comes from the dynamic symbols or, for a
    non-exported main, the file's .symtab. Returns the exit status (0-255).

    Raises:
        UnsupportedError: the module is not in an emulator, or has no main.
        EmulationError: the program faulted.
    """
    from relink.memory.emulator_syscalls import TargetExit

    state = module._state
    image = state.image
    emu = image.mapper
    if not hasattr(emu, "call"):
        raise UnsupportedError("run_main needs a module loaded into relink.Emulator",
                               file=image.label)
    main = module.symbol("main")
    if main is None:
        value = _symtab_value(module.path, "main")
        if value is None:
            raise UnsupportedError("the program has no 'main' symbol (dynamic or .symtab)",
                                   file=image.label)
        main = value + (image.base if image.header.e_type == 3 else 0)
    word = emu.abi.word
    args = [a.encode() if isinstance(a, str) else bytes(a)
            for a in (argv or [module.name])]
    envs = [f"{k}={v}".encode() for k, v in (env or {}).items()]

    def vector(items: list[bytes]) -> int:
        ptrs = [emu.put(item + b"\0") for item in items] + [0]
        at = emu.alloc(word * len(ptrs))
        emu.write(at, b"".join(p.to_bytes(word, "little") for p in ptrs))
        return int(at)

    argv_at, envp_at = vector(args), vector(envs)
    try:
        status = emu.call(main, len(args), argv_at, envp_at) & 0xFF
        exit_fn = next((dep.symbol("exit") for dep in module.dependencies
                        if dep.symbol("exit")), None)
        if exit_fn:
            emu.call(exit_fn, status)
    except TargetExit as done:
        return done.status
    return status
